/**
 * The `peerchat` command as a user runs it: two node processes on loopback
 * (port 0), then `register`, `whois`, `status` and `peers` against them, with
 * their JSON shapes, their one-line errors and exit codes; `id`, `whois
 * name@fingerprint`, `verify` (the same safety number on both sides),
 * `contacts` and `trust`; and a clean shutdown on SIGTERM.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { existsSync } from "node:fs"
import { join } from "node:path"
import { runCli, runJson, startNodeProcess as startNode } from "../support/cliProcess.js"
import { scopedTempDir } from "../support/tempDir.js"

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

      // Names and keys: alice's fingerprint as she shares it is the one bob's lookup finds.
      const fingerprintPattern = /^[0-9a-f]{4}(-[0-9a-f]{4}){7}$/
      const aliceId = yield* runJson(["id", "--data-dir", aliceDir])
      expect(aliceId).toMatchObject({ username: "alice", fingerprint: expect.stringMatching(fingerprintPattern) })
      const aliceFingerprint = (aliceId as { readonly fingerprint: string }).fingerprint
      expect(aliceId).toMatchObject({ nameRef: `alice@${aliceFingerprint}` })
      expect(whois).toMatchObject({ fingerprint: aliceFingerprint })
      expect((yield* runCli(["id", "--data-dir", aliceDir])).stdout).toBe(`alice@${aliceFingerprint}\n`)
      const exact = yield* runCli(["whois", `alice@${aliceFingerprint}`, "--data-dir", bobDir])
      expect(exact.code).toBe(0)
      expect(exact.stdout).toContain(`fingerprint ${aliceFingerprint}  (exactly this key: alice@${aliceFingerprint})`)
      const bobFingerprint = ((yield* runJson(["id", "--data-dir", bobDir])) as { readonly fingerprint: string }).fingerprint

      // Both sides compute the same safety number; showing it pins nothing.
      const fromBob = yield* runJson(["verify", "alice", "--data-dir", bobDir])
      const fromAlice = yield* runJson(["verify", "bob", "--data-dir", aliceDir])
      expect(fromBob).toMatchObject({
        you: { username: "bob", fingerprint: bobFingerprint },
        contact: { username: "alice", fingerprint: aliceFingerprint },
        safetyNumber: expect.stringMatching(/^[0-9]{5}( [0-9]{5}){11}$/),
        confirmed: false
      })
      expect((fromAlice as { readonly safetyNumber: string }).safetyNumber).toBe((fromBob as { readonly safetyNumber: string }).safetyNumber)
      const human = yield* runCli(["verify", "alice", "--data-dir", bobDir])
      expect(human.stdout).toContain("Compare these 60 digits with alice")
      expect(yield* runJson(["contacts", "--data-dir", bobDir])).toEqual([])
      const trusted = yield* runCli(["trust", "alice", "--key", aliceFingerprint, "--data-dir", bobDir])
      expect(trusted.stdout).toContain(`now trusting alice@${aliceFingerprint} (no key was pinned for alice before)`)
      expect(yield* runJson(["contacts", "--data-dir", bobDir])).toEqual([
        expect.objectContaining({ username: "alice", fingerprint: aliceFingerprint, source: "trusted" })
      ])

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
        [["whois", `alice@${bobFingerprint}`, "--data-dir", bobDir], /refused to use it/],
        [["whois", "alice@123", "--data-dir", bobDir], /does not have 32 hex digits/],
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
    }), { timeout: 300_000 })
})
