/**
 * The `peerchat` command as a user runs it: two node processes on loopback
 * (port 0), then `register`, `whois`, `status` and `peers` against them, with
 * their JSON shapes, their one-line errors and exit codes, and a clean
 * shutdown on SIGTERM.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { type ChildProcess, execFile, spawn } from "node:child_process"
import { existsSync } from "node:fs"
import { join } from "node:path"
import { createInterface } from "node:readline"
import { scopedTempDir } from "../support/tempDir.js"

const CLI = ["--import", "tsx", join(process.cwd(), "src/cli/main.ts")]

interface CommandOutcome {
  readonly code: number
  readonly stdout: string
  readonly stderr: string
}

const runCli = (args: ReadonlyArray<string>) =>
  Effect.async<CommandOutcome>((resume) => {
    const child = execFile(process.execPath, [...CLI, ...args], { timeout: 60_000 }, (error, stdout, stderr) => {
      const code = error === null ? 0 : typeof error.code === "number" ? error.code : 1
      resume(Effect.succeed({ code, stdout, stderr }))
    })
    return Effect.sync(() => child.kill("SIGKILL"))
  })

const runJson = (args: ReadonlyArray<string>) =>
  Effect.map(runCli([...args, "--json"]), (outcome) => {
    expect(outcome.stderr, `peerchat ${args.join(" ")}`).toBe("")
    expect(outcome.code).toBe(0)
    return JSON.parse(outcome.stdout) as unknown
  })

interface ReadyEvent {
  readonly nodeId: string
  readonly listen: string
  readonly api: string
}

interface RunningNode {
  readonly child: ChildProcess
  readonly ready: ReadyEvent
  /** Completes once the node has logged a message matching `pattern` (its log is JSON lines on stderr). */
  readonly logged: (pattern: RegExp) => Effect.Effect<void>
}

/** Starts `peerchat start` and waits for its ready line; SIGTERM (then waiting for exit) when the scope closes. */
const startNode = (dataDir: string, extra: ReadonlyArray<string>) =>
  Effect.acquireRelease(
    Effect.async<RunningNode, Error>((resume) => {
      const child = spawn(
        process.execPath,
        [...CLI, "start", "--json", "--data-dir", dataDir, "--listen", "127.0.0.1:0", ...extra],
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
        if (child.exitCode !== null) return resume(Effect.void)
        child.once("exit", () => resume(Effect.void))
        child.kill("SIGTERM")
      })
  )

describe("the peerchat command", () => {
  it.scopedLive("runs nodes that register and resolve users, with stable JSON and clear errors", () =>
    Effect.gen(function*() {
      const root = yield* scopedTempDir("cli")
      const aliceDir = join(root, "alice")
      const bobDir = join(root, "bob")
      const alice = yield* startNode(aliceDir, [])
      const bob = yield* startNode(bobDir, ["--bootstrap", alice.ready.listen])

      expect(existsSync(join(aliceDir, "node.json"))).toBe(true)
      const registered = yield* runJson(["register", "Alice", "--data-dir", aliceDir])
      expect(registered).toMatchObject({ username: "alice", nodeId: alice.ready.nodeId, address: alice.ready.listen })
      yield* runJson(["register", "bob", "--data-dir", bobDir])

      const whois = yield* runJson(["whois", "alice", "--data-dir", bobDir])
      expect(whois).toMatchObject({ username: "alice", nodeId: alice.ready.nodeId, address: alice.ready.listen })

      const status = yield* runJson(["status", "--data-dir", bobDir])
      expect(status).toMatchObject({ username: "bob", peers: 1 })
      expect(Object.keys(status as object)).toEqual(expect.arrayContaining(["nodeId", "listen", "username", "peers"]))

      const peers = yield* runJson(["peers", "--data-dir", aliceDir])
      expect(peers).toHaveLength(1)
      expect(peers).toEqual([expect.objectContaining({ nodeId: expect.any(String), address: expect.any(String) })])

      // Errors: one line on stderr and a non-zero exit code.
      for (const [args, expected] of [
        [["register", "alice", "--data-dir", bobDir], /already registered as "bob"/],
        [["whois", "nobody", "--data-dir", aliceDir], /no user named "nobody"/],
        [["whois", "x", "--data-dir", aliceDir], /shorter than 3/],
        [["status", "--data-dir", join(root, "nowhere")], /no node is running for data directory/],
        [["start", "--data-dir", aliceDir, "--listen", "127.0.0.1:0"], /a node is already running for data directory/],
        [["start", "--data-dir", join(root, "x"), "--bootstrap", "nowhere"], /--bootstrap: invalid address "nowhere"/],
        [["start", "--data-dir", join(root, "x"), "--k", "0"], /--k must be between 1 and 64/]
      ] as const) {
        const outcome = yield* runCli(args)
        expect(outcome.code, args.join(" ")).not.toBe(0)
        expect(outcome.stdout).toBe("")
        expect(outcome.stderr.trim().split("\n")).toHaveLength(1)
        expect(outcome.stderr).toMatch(expected)
      }

      // SIGTERM shuts the node down cleanly: it exits 0 and removes node.json.
      const exitCode = yield* Effect.async<number | null>((resume) => {
        alice.child.once("exit", (code) => resume(Effect.succeed(code)))
        alice.child.kill("SIGTERM")
      })
      expect(exitCode).toBe(0)
      expect(existsSync(join(aliceDir, "node.json"))).toBe(false)

      // Login: the same data directory on a new port keeps its id and name, and peers find the new address.
      const moved = yield* startNode(aliceDir, ["--bootstrap", bob.ready.listen])
      expect(moved.ready.nodeId).toBe(alice.ready.nodeId)
      expect(moved.ready.listen).not.toBe(alice.ready.listen)
      const movedStatus = yield* runJson(["status", "--data-dir", aliceDir])
      expect(movedStatus).toMatchObject({ username: "alice", listen: moved.ready.listen })
      // The login republish runs once the node has joined, and the node logs it.
      yield* moved.logged(/^published alice \(sequence \d+\)$/)
      const found = yield* runJson(["whois", "alice", "--data-dir", bobDir])
      expect(found).toMatchObject({ username: "alice", nodeId: alice.ready.nodeId, address: moved.ready.listen })
    }), { timeout: 180_000 })
})
