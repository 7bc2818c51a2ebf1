// Prisma 7's own client against the shared `experiments` table (driven by tests/integration/test_prisma.py).
//   node check.cjs read <name>            -> JSON array of the rows named <name>, as Prisma reads them
//   node check.cjs write <rows.json>      -> creates the rows in the file (metadata "DbNull" = SQL NULL), prints them
// DATABASE_URL names the database. Decimals are printed as strings and dates as ISO 8601, so nothing is rounded.
const fs = require("node:fs");
const { PrismaClient, Prisma } = require("@prisma/client");
const { PrismaPg } = require("@prisma/adapter-pg");

function plain(row) {
  return { ...row, value: row.value.toString(), createdAt: row.createdAt.toISOString() };
}

function metadataOf(value) {
  if (value === "DbNull") return Prisma.DbNull;
  if (value === null) return Prisma.JsonNull;
  return value;
}

async function main() {
  const [command, argument] = process.argv.slice(2);
  const prisma = new PrismaClient({ adapter: new PrismaPg({ connectionString: process.env.DATABASE_URL }) });
  try {
    if (command === "read") {
      const rows = await prisma.experiment.findMany({ where: { name: argument }, orderBy: [{ metric: "asc" }] });
      console.log(JSON.stringify(rows.map(plain)));
    } else if (command === "write") {
      const wanted = JSON.parse(fs.readFileSync(argument, "utf8"));
      const created = [];
      for (const row of wanted) {
        const data = { ...row, value: new Prisma.Decimal(row.value), metadata: metadataOf(row.metadata) };
        if (row.createdAt) data.createdAt = new Date(row.createdAt);
        created.push(plain(await prisma.experiment.create({ data })));
      }
      console.log(JSON.stringify(created));
    } else {
      throw new Error(`unknown command ${command}: read <name> | write <rows.json>`);
    }
  } finally {
    await prisma.$disconnect();
  }
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
