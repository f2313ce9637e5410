import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    // Builds the peerchat command once for the tests that run it as a process.
    globalSetup: ["test/support/cliBundle.ts"],
    testTimeout: 60_000,
    // Property tests and simulations are CPU-bound; two workers match the CI machine.
    poolOptions: {
      // The pure core's files share a thread per worker: it keeps no state between calls, and starting a
      // process and importing Effect anew for each of its 45 files was half of their time.
      threads: { maxThreads: 2, minThreads: 1, isolate: false },
      // Everything with effects keeps a process of its own per file: services, fibers, caches and process
      // state never cross files.
      forks: { maxForks: 2, minForks: 1, isolate: true }
    },
    projects: [
      {
        extends: true,
        test: { name: "core", include: ["test/core/**/*.test.ts"], pool: "threads", sequence: { groupOrder: 0 } }
      },
      {
        extends: true,
        test: {
          name: "effects",
          include: ["test/**/*.test.ts"],
          exclude: ["test/core/**"],
          pool: "forks",
          sequence: { groupOrder: 1 }
        }
      }
    ]
  }
})
