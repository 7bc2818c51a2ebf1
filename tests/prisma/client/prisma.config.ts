// Prisma 7: `prisma generate` needs no engine; the client talks to PostgreSQL through @prisma/adapter-pg.
import { defineConfig } from "prisma/config";

export default defineConfig({
  schema: "schema.prisma",
});
