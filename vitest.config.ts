import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    // Builds the peerchat command once for the tests that run it as a process.
    globalSetup: ["test/support/cliBundle.ts"],
    testTimeout: 60_000,
    // Property tests and simulations are CPU-bound; two workers match the CI machine.
    poolOptions: {
      // The pure core's files and the chat screen's (its reducer, views and text) share a thread per worker:
      // they keep no state between files, and starting a process and importing Effect anew for each of their
      // 59 files was most of their time (94 s to 28 s alone).
      threads: { maxThreads: 2, minThreads: 1, isolate: false },
      // Everything with effects keeps a process of its own per file: services, fibers, caches and process
      // state never cross files.
      forks: { maxForks: 2, minForks: 1, isolate: true }
    },
    projects: [
      {
        extends: true,
        test: {
          name: "pure",
          include: ["test/core/**/*.test.ts", "test/cli/**/*.test.ts"],
          pool: "threads",
          sequence: { groupOrder: 0 }
        }
      },
      {
        extends: true,
        test: {
          name: "effects",
          include: ["test/**/*.test.ts"],
          exclude: ["test/core/**", "test/cli/**"],
          pool: "forks",
          sequence: { groupOrder: 1 }
        }
      }
    ]
  }
})
