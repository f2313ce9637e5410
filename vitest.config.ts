import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
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
          // The chat's driver runs on the test clock, and failed once in a process shared with the node's tests
          // (decisions, "The test suite's time"): it keeps a process of its own.
          exclude: ["test/cli/ChatDriver.test.ts"],
          pool: "threads",
          sequence: { groupOrder: 0 }
        }
      },
      {
        extends: true,
        test: {
          name: "effects",
          include: ["test/**/*.test.ts"],
          exclude: ["test/core/**", "test/cli/!(ChatDriver).test.ts"],
          // Builds the peerchat command once (for the tests that run it as a process), only for this project:
          // set on the root, each project would build it again.
          globalSetup: ["test/support/cliBundle.ts"],
          pool: "forks",
          sequence: { groupOrder: 1 }
        }
      }
    ]
  }
})
