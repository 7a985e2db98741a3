import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // Pulumi's mocks are process-wide: one file at a time, in one process.
    fileParallelism: false,
    pool: "forks",
    // Loading the providers' SDKs takes seconds on a busy machine.
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});
