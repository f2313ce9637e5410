/**
 * The `peerchat` command as a user runs it: two node processes on loopback
 * (port 0), then `register`, `whois`, `status` and `peers` against them, with
 * their JSON shapes, their one-line errors (plain and `--json`) and the exit
 * code of each kind; `id`, `whois name@fingerprint`, `verify` (the same
 * safety number on both sides), `contacts` and `trust`; a clean shutdown on
 * SIGTERM; `send -` with text piped in, `history` saying who wrote what, and
 * `stop`; and the help, version and shell completions, which need no node.
 */
import { describe, expect, inject, it } from "@effect/vitest"
import { Effect } from "effect"
import { type ChildProcess, execFile } from "node:child_process"
import { existsSync } from "node:fs"
import { join } from "node:path"
import { type CommandOutcome, runCli, runJson, startNodeProcess as startNode } from "../support/cliProcess.js"
import { scopedTempDir } from "../support/tempDir.js"

/** Runs `peerchat ARGS` with `input` on its standard input (then closed), as `printf … | peerchat …` does. */
const runWithInput = (args: ReadonlyArray<string>, input: string) =>
  Effect.async<CommandOutcome>((resume) => {
    const child = execFile(process.execPath, [inject("peerchatCli"), ...args], { timeout: 60_000 }, (error, stdout, stderr) => {
      const code = error === null ? 0 : typeof error.code === "number" ? error.code : 1
      resume(Effect.succeed({ code, stdout, stderr }))
    })
    // A command that refuses the input stops reading it; the rest of the write then fails, which is expected.
    child.stdin?.on("error", () => undefined)
    child.stdin?.end(input)
    return Effect.sync(() => child.kill("SIGKILL"))
  })

/** The process of `child` exits (its exit code), or has already. */
const exitOf = (child: ChildProcess) =>
  Effect.async<number | null>((resume) => {
    if (child.exitCode !== null || child.signalCode !== null) return resume(Effect.succeed(child.exitCode))
    child.once("exit", (code) => resume(Effect.succeed(code)))
  })

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

      // status --json: the documented shape, with the join state as network.state and no internal tags.
      expect(status).toMatchObject({ network: { state: "Joined", joinedAt: expect.any(Number) }, nameWarning: null })
      expect(Object.keys(status as object)).toEqual(expect.arrayContaining(["reachability", "connections", "network"]))
      expect(JSON.stringify(status)).not.toContain("_tag")
      // Where the node's memory goes: the parts of what is resident add up to it.
      const memory = (status as { readonly memory: Record<"rss" | "code" | "heapUsed" | "heapCommitted" | "buffers" | "native", number> })
        .memory
      expect(memory.rss).toBeGreaterThan(10 * 2 ** 20)
      expect(memory.heapUsed).toBeGreaterThan(0)
      expect(memory.heapCommitted).toBeGreaterThanOrEqual(memory.heapUsed)
      expect(memory.code + memory.heapUsed + memory.buffers + memory.native).toBe(memory.rss)
      expect((yield* runCli(["status", "--data-dir", bobDir])).stdout).toMatch(/^memory {4}\d+\.\d MB resident: code /m)

      // Errors: one line on stderr (`peerchat: …`), nothing on stdout, and the exit code of their kind.
      for (const [args, expected, code] of [
        [["register", "alice", "--data-dir", bobDir], /already registered as "bob"/, 6],
        [["whois", "nobody", "--data-dir", aliceDir], /no user named "nobody"/, 5],
        [["whois", "x", "--data-dir", aliceDir], /shorter than 3/, 3],
        [["whois", `alice@${bobFingerprint}`, "--data-dir", bobDir], /refused to use it/, 6],
        [["whois", "alice@123", "--data-dir", bobDir], /does not have 32 hex digits/, 3],
        [["status", "--data-dir", join(root, "nowhere")], /no node is running for data directory/, 4],
        [["start", "--data-dir", aliceDir, "--listen", "127.0.0.1:0"], /a node is already running for data directory/, 6],
        [["start", "--data-dir", join(root, "x"), "--bootstrap", "nowhere"], /--bootstrap: invalid address "nowhere"/, 3],
        [["start", "--data-dir", join(root, "x"), "--k", "0"], /--k must be an integer between 1 and 64, got "0" \(see peerchat start --help\)/, 3],
        [["history", "bob", "--limit", "x", "--data-dir", aliceDir], /--limit must be an integer between 1 and 1000/, 3],
        [["trust", "bob", "--data-dir", aliceDir], /--key/, 3]
      ] as const) {
        const outcome = yield* runCli(args)
        expect(outcome.code, args.join(" ")).toBe(code)
        expect(outcome.stdout).toBe("")
        expect(outcome.stderr.split("\n")).toEqual([expect.stringMatching(/^peerchat: /), ""])
        expect(outcome.stderr).toMatch(expected)
      }
      // With --json, a failure is a JSON document on stderr.
      const notFound = yield* runCli(["whois", "nobody", "--data-dir", aliceDir, "--json"])
      expect(notFound.code).toBe(5)
      expect(notFound.stdout).toBe("")
      expect(JSON.parse(notFound.stderr)).toEqual({ error: { tag: "UserNotFound", message: expect.stringContaining("nobody") } })
      const badOption = yield* runCli(["start", "--k", "x", "--json"])
      expect(badOption.code).toBe(3)
      expect(JSON.parse(badOption.stderr)).toEqual({ error: { tag: "UsageError", message: expect.stringContaining("--k") } })

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

  it.scopedLive("sends piped text, says who wrote each message, and stops the node", () =>
    Effect.gen(function*() {
      const root = yield* scopedTempDir("cli-pipe")
      const aliceDir = join(root, "alice")
      const bobDir = join(root, "bob")
      const alice = yield* startNode(aliceDir, [])
      yield* startNode(bobDir, ["--bootstrap", alice.ready.listen])
      yield* runJson(["register", "alice", "--data-dir", aliceDir])
      yield* runJson(["register", "bob", "--data-dir", bobDir])

      // `send NAME -` reads the message from stdin (one trailing line break dropped); with stderr not a
      // terminal, --wait prints the id and the outcome and nothing more.
      const piped = yield* runWithInput(["send", "bob", "-", "--wait", "--data-dir", aliceDir], "hello\nfrom a pipe\n")
      expect(piped.stderr).toBe("")
      expect(piped.code).toBe(0)
      expect(piped.stdout).toMatch(/^[0-9a-f]{64}\ndelivered to bob\n$/)
      // Exactly one message's worth (16 KiB of UTF-8, here with a character of 3 bytes) and its line break fit.
      const full = `${"x".repeat(16_381)}€`
      const fits = yield* runWithInput(["send", "bob", "-", "--json", "--data-dir", aliceDir], `${full}\r\n`)
      expect(fits.code, fits.stderr).toBe(0)
      // Empty, blank, too long or not UTF-8: refused as a usage error, nothing sent.
      for (const [input, expected] of [
        ["", /the message is empty/],
        [" \n\t\n", /only white space/],
        [`${full}x\n`, /more than the limit of 16384 bytes/],
        ["y".repeat(100_000), /standard input is longer than 16384 bytes of UTF-8/]
      ] as const) {
        const refused = yield* runWithInput(["send", "bob", "-", "--data-dir", aliceDir], input)
        expect([refused.code, refused.stdout], JSON.stringify(input.slice(0, 20))).toEqual([3, ""])
        expect(refused.stderr).toMatch(expected)
      }
      const notText = yield* Effect.async<CommandOutcome>((resume) => {
        const child = execFile(process.execPath, [inject("peerchatCli"), "send", "bob", "-", "--json", "--data-dir", aliceDir], (error, stdout, stderr) =>
          resume(Effect.succeed({ code: typeof error?.code === "number" ? error.code : 0, stdout, stderr })))
        child.stdin?.end(Buffer.from([0x68, 0x69, 0xff, 0xfe]))
      })
      expect(notText.code).toBe(3)
      expect(JSON.parse(notText.stderr)).toEqual({ error: { tag: "StdinTextRejected", message: expect.stringContaining("not valid UTF-8") } })

      // bob answers; both sides' history says who wrote each message, and never shows the user's own name alone.
      expect((yield* runCli(["send", "alice", "got it", "--wait", "--data-dir", bobDir])).code).toBe(0)
      const aliceHistory = yield* runCli(["history", "bob", "--data-dir", aliceDir])
      const lines = aliceHistory.stdout.trimEnd().split("\n")
      expect(lines).toHaveLength(3)
      expect(lines[0]).toMatch(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d you → bob \[delivered\] hello\\nfrom a pipe$/)
      expect(lines[1]).toMatch(/ you → bob \[(queued|stored-offline|delivered)\] x{16381}€$/)
      expect(lines[2]).toMatch(/ bob → you \[received\] got it$/)
      expect(aliceHistory.stdout).not.toContain("alice")
      expect((yield* runCli(["history", "alice", "--data-dir", bobDir])).stdout).toMatch(/ alice → you \[received\] hello\\nfrom a pipe\n/)
      const json = (yield* runJson(["history", "bob", "--data-dir", aliceDir])) as ReadonlyArray<Record<string, unknown>>
      expect(json.map(({ direction, from, to, text }) => ({ direction, from, to, text }))).toEqual([
        { direction: "sent", from: "alice", to: "bob", text: "hello\nfrom a pipe" },
        { direction: "sent", from: "alice", to: "bob", text: full },
        { direction: "received", from: "bob", to: "alice", text: "got it" }
      ])
      expect(Object.keys(json[0] ?? {}).sort()).toEqual(["direction", "from", "id", "sentAt", "status", "text", "to"])

      // stop: the node accepts, and the command returns once its process is gone and node.json removed.
      const stopped = yield* runJson(["stop", "--data-dir", aliceDir])
      expect(stopped).toEqual({ stopped: true, nodeId: alice.ready.nodeId, pid: alice.child.pid, dataDir: aliceDir })
      expect(existsSync(join(aliceDir, "node.json"))).toBe(false)
      // It exited as on SIGTERM: cleanly.
      expect(yield* exitOf(alice.child)).toBe(0)
      // No node any more: a clear line and exit code 4, or the JSON error.
      // Started again without --bootstrap, the node goes back to its network through the peer it knew (bob), and
      // its ready line says so rather than "new network".
      expect(alice.ready.rememberedPeers).toBe(0)
      const back = yield* startNode(aliceDir, [])
      expect(back.ready.rememberedPeers).toBe(1)
      yield* back.logged(/^reconnected to 1 peer known from the last run$/)
      expect((yield* runJson(["status", "--data-dir", aliceDir])) as Record<string, unknown>).toMatchObject({ network: { state: "Joined" } })
      yield* runJson(["stop", "--data-dir", aliceDir])
      expect(yield* exitOf(back.child)).toBe(0)
      const again = yield* runCli(["stop", "--data-dir", aliceDir])
      expect(again.code).toBe(4)
      expect(again.stderr).toMatch(/^peerchat: no node is running for data directory /)
      const againJson = yield* runCli(["stop", "--json", "--data-dir", aliceDir])
      expect(againJson.code).toBe(4)
      expect(JSON.parse(againJson.stderr)).toMatchObject({ error: { tag: "NodeNotRunning" } })
      // The human form, on bob's node.
      const bobStop = yield* runCli(["stop", "--data-dir", bobDir])
      expect(bobStop.code).toBe(0)
      expect(bobStop.stdout).toMatch(/^stopped the node [0-9a-f]{16}… \(pid \d+\) of data directory /)
      expect(existsSync(join(bobDir, "node.json"))).toBe(false)
    }), { timeout: 300_000 })

  it.effect("documents every option and command in --help, without colour when piped", () =>
    Effect.gen(function*() {
      const root = yield* runCli(["--help"])
      expect(root.code).toBe(0)
      expect(root.stdout).toContain("peerchat COMMAND [ARGUMENTS] [OPTIONS]")
      expect(root.stdout).toMatch(/^ {2}send NAME TEXT +send a message/m)
      expect(root.stdout).toMatch(/^ {2}--bootstrap HOST:PORT +join the network/m)
      expect(root.stdout).toMatch(/^ {2}stop +stop the running node/m)
      expect(root.stdout).toMatch(/^ {2}--completions SHELL +print a completion script for bash, zsh or fish/m)
      const send = yield* runCli(["send", "--help"])
      expect(send.stdout).toMatch(/^Usage: peerchat send NAME TEXT \[OPTIONS\]$/m)
      expect(send.stdout).toMatch(/^ {2}--timeout DURATION +how long --wait waits/m)
      for (const help of [root.stdout, send.stdout]) {
        expect(help).not.toMatch(/A user-defined piece of text|A true or false value|This setting is optional/)
        expect(help).not.toContain("\u001b[")
        // Every option line has a description beside it (or wrapped below it).
        expect(help.split("\n").filter((line) => /^ {2}-/.test(line) && !/^ {2}\S+( \S+)? {2,}\S/.test(line))).toEqual([])
      }
      const version = yield* runCli(["-v"])
      expect(version).toEqual({ code: 0, stdout: "0.1.0\n", stderr: "" })
      // Shell completions for bash, zsh and fish name the commands, stop and send among them.
      for (const shell of ["bash", "zsh", "fish"]) {
        const completions = yield* runCli(["--completions", shell])
        expect([completions.code, completions.stderr], shell).toEqual([0, ""])
        expect(completions.stdout).toContain("peerchat")
        expect(completions.stdout).toMatch(/\bstop\b/)
        expect(completions.stdout).toMatch(/\bhistory\b/)
      }
      expect((yield* runCli(["--completions", "bash"])).stdout).toMatch(/complete .*peerchat/)
    }), { timeout: 120_000 })
})

