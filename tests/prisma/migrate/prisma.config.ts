import { PrismaPg } from "@prisma/adapter-pg";
import pg from "pg";
import { defineConfig } from "prisma/config";

const CHAR = 18; // PostgreSQL's one-byte "char" (pg_catalog), which @prisma/adapter-pg cannot map
const TEXT = 25;

function charAsText(result: any) {
  for (const field of result?.fields ?? []) if (field.dataTypeID === CHAR) field.dataTypeID = TEXT;
  return result;
}

class CharAsTextClient extends pg.Client {
  // @ts-ignore
  query(config: any, values?: any, callback?: any): any {
    const query = super.query as any;
    if (typeof values === "function") return query.call(this, config, (e: any, r: any) => values(e, charAsText(r)));
    if (typeof callback === "function") return query.call(this, config, values, (e: any, r: any) => callback(e, charAsText(r)));
    const answer = query.call(this, config, values);
    return answer && typeof answer.then === "function" ? answer.then(charAsText) : answer;
  }
}

export default defineConfig({
  experimental: { adapter: true },
  engine: "js",
  schema: "schema.prisma",
  migrations: { path: "migrations" },
  async adapter() {
    return new PrismaPg(new pg.Pool({ connectionString: process.env.DATABASE_URL, Client: CharAsTextClient as any }));
  },
});
