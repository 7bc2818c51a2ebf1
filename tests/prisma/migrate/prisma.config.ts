// Prisma 6.19's CLI on its wasm schema engine (`engine: "js"`), talking to PostgreSQL through the pg driver
// adapter: no native engine binary is needed (PRISMA_SCHEMA_ENGINE_BINARY points at a stub that fails).
// @prisma/adapter-pg is 7.x: 6.19's adapter cannot read columns of PostgreSQL's `name` type (prisma/prisma#27403).
import { PrismaPg } from "@prisma/adapter-pg";
import pg from "pg";
import { defineConfig } from "prisma/config";

// Introspection (`prisma db pull`, which the drift check uses) reads pg_catalog columns of the one-byte
// "char" type, which @prisma/adapter-pg 7.9/7.10 does not map ("Column type 'char' could not be
// deserialized"). Its value is a one-character string, so the client below reports it as text.
const CHAR = 18;
const TEXT = 25;

function charAsText(result: any) {
  for (const field of result?.fields ?? []) if (field.dataTypeID === CHAR) field.dataTypeID = TEXT;
  return result;
}

class CharAsTextClient extends pg.Client {
  // @ts-ignore: pg's overloads (promise, callback with or without values) in one
  query(config: any, values?: any, callback?: any): any {
    const query = super.query as any;
    if (typeof values === "function") return query.call(this, config, (e: any, r: any) => values(e, charAsText(r)));
    if (typeof callback === "function") {
      return query.call(this, config, values, (e: any, r: any) => callback(e, charAsText(r)));
    }
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
    const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, Client: CharAsTextClient as any });
    return new PrismaPg(pool);
  },
});
