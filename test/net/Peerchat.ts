/**
 * The `peerchat` command on the hosts of a test network: node processes
 * (`startPeerchat`, like `startNodeProcess` of test/support/cliProcess.ts but
 * inside a host's namespace, listening on the host's address) and one-shot
 * commands (`peerchat`, `peerchatJson`). A node's control API listens on
 * 127.0.0.1 of its own namespace, so the commands that talk to it must run in
 * the same host as the node.
 */
import { expect, inject } from "@effect/vitest"
import { Duration, Effect, type Scope } from "effect"
import { createInterface } from "node:readline"
import { type CommandOutcome, type ReadyEvent, TEST_CLAIM_DIFFICULTY } from "../support/cliProcess.js"
import { exec, type NetError, spawnIn, stopChild } from "./Netns.js"
import type { Host } from "./Topology.js"

/** How to run the command: this test run's build of it (as test/support/cliProcess.ts does; see cliBundle.ts). */
const CLI = [inject("peerchatCli")]

/** A node process in a host. */
export interface HostNode {
  readonly host: Host
  readonly dataDir: string
  readonly ready: ReadyEvent
  /** The port it listens on (from its ready line). */
  readonly port: number
  /** Every log message so far (its log is JSON lines on stderr). */
  readonly messages: ReadonlyArray<string>
  /** Stops the node now (SIGTERM, SIGKILL 10 s later), as its user would; completes once it exited. */
  readonly stop: Effect.Effect<void>
  /** Kills the node now (SIGKILL: no goodbye, like a crash or a pulled plug); completes once it exited. */
  readonly kill: Effect.Effect<void>
  /** Completes once the node has logged a message matching `pattern`, or fails after `within` (default 20 s). */
  readonly logged: (pattern: RegExp, within?: Duration.DurationInput) => Effect.Effect<string, Error>
}

/**
 * Starts `peerchat start --json` in `host`, listening on the host's address
 * (port 0: the node picks one and says which in its ready line), and waits
 * for its ready line. When the scope closes: SIGTERM, and SIGKILL if it has
 * not exited 10 s later.
 */
export const startPeerchat = (
  host: Host,
  dataDir: string,
  extra: ReadonlyArray<string> = []
): Effect.Effect<HostNode, Error | NetError, Scope.Scope> =>
  Effect.gen(function*() {
    const child = yield* spawnIn(host, process.execPath, [
      ...CLI,
      "start",
      "--json",
      "--data-dir",
      dataDir,
      "--listen",
      `${host.address}:0`,
      ...TEST_CLAIM_DIFFICULTY,
      ...extra
    ])
    const messages: Array<string> = []
    const waiters = new Set<() => void>()
    createInterface({ input: child.stderr }).on("line", (line) => {
      try {
        messages.push((JSON.parse(line) as { readonly message: string }).message)
      } catch {
        messages.push(line)
      }
      for (const waiter of waiters) waiter()
    })
    const logged = (pattern: RegExp, within: Duration.DurationInput = Duration.seconds(20)) =>
      Effect.async<string>((resume) => {
        const check = () => {
          const found = messages.find((message) => pattern.test(message))
          if (found === undefined) return false
          waiters.delete(check)
          resume(Effect.succeed(found))
          return true
        }
        if (!check()) waiters.add(check)
        return Effect.sync(() => void waiters.delete(check))
      }).pipe(
        Effect.timeoutFail({
          duration: within,
          onTimeout: () => new Error(`${host.label}: no log message matched ${pattern} within ${Duration.format(within)}:\n${messages.join("\n")}`)
        })
      )
    const ready = yield* Effect.async<ReadyEvent, Error>((resume) => {
      child.once("exit", (code) =>
        resume(Effect.fail(new Error(`node in ${host.label} exited with ${code} before it was ready: ${messages.join("\n")}`))))
      createInterface({ input: child.stdout }).on("line", (line) => {
        const event = JSON.parse(line) as ReadyEvent & { readonly event: string }
        if (event.event === "ready") resume(Effect.succeed(event))
      })
    }).pipe(
      Effect.timeoutFail({ duration: Duration.seconds(60), onTimeout: () => new Error(`node in ${host.label} was not ready within 60 s`) })
    )
    const port = Number(ready.listen.slice(ready.listen.lastIndexOf(":") + 1))
    const kill = Effect.async<void>((resume) => {
      if (child.exitCode !== null || child.signalCode !== null) return resume(Effect.void)
      child.once("exit", () => resume(Effect.void))
      child.kill("SIGKILL")
    })
    return { host, dataDir, ready, port, messages, logged, stop: stopChild(child, Duration.seconds(10)), kill }
  })

/** Runs `peerchat ARGS` in `host` to completion (killed after 60 s). */
export const peerchat = (host: Host, args: ReadonlyArray<string>): Effect.Effect<CommandOutcome, NetError> =>
  Effect.map(exec(host, process.execPath, [...CLI, ...args], { timeout: Duration.seconds(60) }), ({ code, stderr, stdout }) => ({
    code,
    stdout,
    stderr
  }))

/** Runs `peerchat ARGS --json` in `host`, expects success and nothing on stderr, and parses stdout. */
export const peerchatJson = (host: Host, args: ReadonlyArray<string>): Effect.Effect<unknown, NetError> =>
  Effect.map(peerchat(host, [...args, "--json"]), (outcome) => {
    expect(outcome.stderr, `peerchat ${args.join(" ")} in ${host.label}`).toBe("")
    expect(outcome.code).toBe(0)
    return JSON.parse(outcome.stdout) as unknown
  })
