import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // Builds the peerchat command once for the tests that run it as a process.
    globalSetup: ["test/support/cliBundle.ts"],
    // Property tests and simulations are CPU-bound; two workers match the CI machine.
    pool: "forks",
    poolOptions: { forks: { maxForks: 2, minForks: 1 } },
    testTimeout: 60_000
  }
})
