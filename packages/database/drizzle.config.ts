import { defineConfig } from "drizzle-kit";

// `zeitwork migrate` (Go) applies the same files and records them in the same
// journal table, so the migrations table/schema must stay drizzle's defaults
// (drizzle.__drizzle_migrations).
export default defineConfig({
  dialect: "postgresql",
  schema: "./schema.ts",
  out: "./migrations",
  dbCredentials: {
    url: process.env.DATABASE_URL ?? "",
  },
  strict: true,
  verbose: true,
});
