/**
 * Running the `peerchat` command from tests: one-shot commands (`runCli`,
 * `runJson`) and node processes (`startNodeProcess`), which are started with
 * `--json` on port 0 and stopped with SIGTERM when the test's scope closes.
 */
import { freshLoopbackHost } from "./loopback.js"
import { expect, inject } from "@effect/vitest"
import { Effect } from "effect"
import { type ChildProcess, execFile, spawn } from "node:child_process"
import { createInterface } from "node:readline"

/** How to run the command: this test run's build of it (see cliBundle.ts). */
const CLI = [inject("peerchatCli")]

/** What a one-shot command printed and how it exited. */
export interface CommandOutcome {
  readonly code: number
  readonly stdout: string
  readonly stderr: string
}

/** Runs `peerchat ARGS` to completion (killed after 60 s). */
export const runCli = (args: ReadonlyArray<string>) =>
  Effect.async<CommandOutcome>((resume) => {
    const child = execFile(process.execPath, [...CLI, ...args], { timeout: 60_000 }, (error, stdout, stderr) => {
      const code = error === null ? 0 : typeof error.code === "number" ? error.code : 1
      resume(Effect.succeed({ code, stdout, stderr }))
    })
    return Effect.sync(() => child.kill("SIGKILL"))
  })

/** Runs `peerchat ARGS --json`, expects success and nothing on stderr, and parses stdout. */
export const runJson = (args: ReadonlyArray<string>) =>
  Effect.map(runCli([...args, "--json"]), (outcome) => {
    expect(outcome.stderr, `peerchat ${args.join(" ")}`).toBe("")
    expect(outcome.code).toBe(0)
    return JSON.parse(outcome.stdout) as unknown
  })

/** The ready line of `peerchat start --json`. */
export interface ReadyEvent {
  readonly nodeId: string
  readonly listen: string
  readonly api: string
  /** Peers known from the last run that the node asked as it started. */
  readonly rememberedPeers: number
}

/** A node process and its ready line. */
export interface RunningNode {
  readonly child: ChildProcess
  readonly ready: ReadyEvent
  /** Completes once the node has logged a message matching `pattern` (its log is JSON lines on stderr). */
  readonly logged: (pattern: RegExp) => Effect.Effect<void>
}

/**
 * Test networks agree on a light name-claim proof of work (16 scrypt hashes
 * rather than 1,024), so registering takes milliseconds; the rules are the
 * real ones.
 */
export const TEST_CLAIM_DIFFICULTY: ReadonlyArray<string> = ["--claim-difficulty", "4"]

/** Starts `peerchat start` and waits for its ready line; SIGTERM (then waiting for exit) when the scope closes. */
export const startNodeProcess = (dataDir: string, extra: ReadonlyArray<string>) =>
  Effect.acquireRelease(
    Effect.async<RunningNode, Error>((resume) => {
      const child = spawn(
        process.execPath,
        [...CLI, "start", "--json", "--data-dir", dataDir, "--listen", `${freshLoopbackHost()}:0`, ...TEST_CLAIM_DIFFICULTY, ...extra],
        { stdio: ["ignore", "pipe", "pipe"] }
      )
      const messages: Array<string> = []
      createInterface({ input: child.stderr }).on("line", (line) => {
        messages.push((JSON.parse(line) as { readonly message: string }).message)
      })
      const logged = (pattern: RegExp) =>
        Effect.async<void>((done) => {
          if (messages.some((message) => pattern.test(message))) return done(Effect.void)
          const onLine = () => {
            if (messages.some((message) => pattern.test(message))) {
              child.stderr.off("data", onLine)
              done(Effect.void)
            }
          }
          child.stderr.on("data", onLine)
          return Effect.sync(() => child.stderr.off("data", onLine))
        })
      child.on("exit", (code) =>
        resume(Effect.fail(new Error(`node exited with ${code} before it was ready: ${messages.join("\n")}`))))
      createInterface({ input: child.stdout }).on("line", (line) => {
        const event = JSON.parse(line) as ReadyEvent & { readonly event: string }
        if (event.event === "ready") resume(Effect.succeed({ child, ready: event, logged }))
      })
    }),
    ({ child }) =>
      Effect.async<void>((resume) => {
        if (child.exitCode !== null || child.signalCode !== null) return resume(Effect.void)
        child.once("exit", () => resume(Effect.void))
        child.kill("SIGTERM")
      })
  )
