/**
 * The terminal chat as a person uses it, in a real terminal: tmux runs
 * `peerchat chat` (keys go in with send-keys, the screen comes back with
 * capture-pane), against a second user whose node is a `peerchat start`
 * process driven through its control API (as the one-shot commands do). One conversation end to end:
 * first-run setup (joining through the other node, a taken name refused),
 * messages both ways with their delivery status, a message arriving without
 * a key press, a peer's escape sequences shown harmlessly, an unknown user,
 * Tab completion, a resize, quitting (the chat's own node stops cleanly),
 * and a second start that remembers the network and pages back through a
 * history longer than one page. A second person mistypes the address at the
 * first run: the chat says what it tries, offers a choice after --join-timeout, and
 * remembers only the address that worked. Two windows on one data
 * directory: the node the first one started keeps running for the second
 * when the first quits, stops when the second quits, and stops too when its
 * only window crashes; a node started by hand keeps running. Every wait is a bounded poll of the screen.
 */
import { NodeContext, NodeHttpClient } from "@effect/platform-node"
import { describe, expect, inject, it } from "@effect/vitest"
import { Duration, Effect, Layer, Schedule } from "effect"
import { execFile, execFileSync } from "node:child_process"
import { randomUUID } from "node:crypto"
import { existsSync, readFileSync, rmSync } from "node:fs"
import { join } from "node:path"
import { makeControlClient } from "../../src/platform/ControlClient.js"
import { startNodeProcess, TEST_CLAIM_DIFFICULTY } from "../support/cliProcess.js"
import { freshLoopbackHost } from "../support/loopback.js"
import { scopedTempDir } from "../support/tempDir.js"

/** Fails the test with a clear message when tmux is not installed. */
const requireTmux = () => {
  try {
    execFileSync("tmux", ["-V"], { stdio: "ignore" })
  } catch {
    throw new Error(
      "tmux is not installed: this test drives the terminal chat in tmux (install it with apt-get install tmux; .ci/run does)"
    )
  }
}

const shellQuote = (word: string): string => `'${word.replaceAll("'", `'\\''`)}'`

/** Longest wait for one thing to appear on screen. */
const SCREEN_WAIT = Duration.seconds(30)

/** A terminal running one command under its own tmux server, killed when the scope closes. */
const openTerminal = (socket: string, command: ReadonlyArray<string>, size = { columns: 120, rows: 40 }) =>
  Effect.gen(function*() {
    const tmux = (...args: ReadonlyArray<string>) =>
      Effect.async<string, Error>((resume) => {
        execFile("tmux", ["-L", socket, ...args], (error, stdout, stderr) =>
          resume(error === null ? Effect.succeed(stdout) : Effect.fail(new Error(`tmux ${args[0]}: ${stderr || error.message}`))))
      })
    // The pane outlives the command (its exit status is printed), so the screen can still be read after /quit.
    const shell = `${command.map(shellQuote).join(" ")}; echo "[exit $?]"; sleep 600`
    yield* Effect.acquireRelease(
      Effect.zipRight(
        tmux("new-session", "-d", "-s", "chat", "-x", String(size.columns), "-y", String(size.rows), "-c", process.cwd(), shell),
        Effect.map(tmux("display-message", "-p", "#{socket_path}"), (path) => path.trim())
      ),
      // The server goes, and so does its socket file.
      (socketPath) => Effect.ignore(tmux("kill-server")).pipe(Effect.zipRight(Effect.sync(() => rmSync(socketPath, { force: true }))))
    )
    const screen = Effect.map(tmux("capture-pane", "-p", "-t", "chat"), (text) => text)
    /** The process the pane runs (`env` execs the chat, so it is the shell's child). */
    const commandPid = Effect.flatMap(tmux("display-message", "-p", "-t", "chat", "#{pane_pid}"), (shellPid) =>
      Effect.try(() => Number(execFileSync("pgrep", ["-P", shellPid.trim()], { encoding: "utf8" }).split("\n")[0])))
    /** Polls the screen until `pattern` appears (at most `SCREEN_WAIT`); fails with the last screen. */
    const waitFor = (pattern: RegExp, what: string) =>
      screen.pipe(
        Effect.filterOrFail((text) => pattern.test(text), (text) => new Error(`${what}: not on screen:\n${text}`)),
        Effect.retry(Schedule.spaced("100 millis").pipe(Schedule.upTo(SCREEN_WAIT)))
      )
    /** Presses `key` until `pattern` appears (a page at a time, say), within `SCREEN_WAIT`. */
    const pressUntil = (key: string, pattern: RegExp, what: string) =>
      tmux("send-keys", "-t", "chat", key).pipe(
        Effect.zipRight(screen),
        Effect.filterOrFail((text) => pattern.test(text), (text) => new Error(`${what}: not on screen:\n${text}`)),
        Effect.retry(Schedule.spaced("200 millis").pipe(Schedule.upTo(SCREEN_WAIT)))
      )
    return {
      screen,
      commandPid,
      waitFor,
      pressUntil,
      /** Types `text` literally (no key names). */
      type: (text: string) => tmux("send-keys", "-t", "chat", "-l", text),
      /** Presses keys by tmux name (Enter, Tab, PPage, C-u, …). */
      press: (...keys: ReadonlyArray<string>) => tmux("send-keys", "-t", "chat", ...keys),
      resize: (columns: number, rows: number) => tmux("resize-window", "-t", "chat", "-x", String(columns), "-y", String(rows))
    }
  })

/** `peerchat chat ARGS` as a user starts it, in a terminal (CI=0: Ink draws nothing but the last frame under CI). */
const chatCommand = (args: ReadonlyArray<string>) => [
  "env",
  "CI=0",
  process.execPath,
  inject("peerchatCli"),
  "chat",
  ...TEST_CLAIM_DIFFICULTY,
  ...args
]

const isAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

/** Polls until process `pid` has exited (at most `SCREEN_WAIT`). */
const awaitGone = (pid: number, what: string) =>
  Effect.sync(() => isAlive(pid)).pipe(
    Effect.filterOrFail((alive) => !alive, () => new Error(`${what}: process ${pid} still runs`)),
    Effect.retry(Schedule.spaced("100 millis").pipe(Schedule.upTo(SCREEN_WAIT)))
  )

/** The environment process `pid` was started with (Linux's `/proc`). */
const environmentOf = (pid: number): ReadonlyMap<string, string> =>
  new Map(
    readFileSync(`/proc/${pid}/environ`, "utf8").split("\0").filter((entry) => entry.includes("=")).map((entry) => {
      const at = entry.indexOf("=")
      return [entry.slice(0, at), entry.slice(at + 1)] as const
    })
  )

/** The pid in `node.json` of `dataDir`. */
const nodePid = (dataDir: string): number =>
  (JSON.parse(readFileSync(join(dataDir, "node.json"), "utf8")) as { readonly pid: number }).pid

/** The control API of the node on `dataDir`, as the one-shot commands use it (they are tested in Cli.test.ts). */
const controlOf = (dataDir: string) => makeControlClient(dataDir)

describe("the terminal chat", () => {
  it.scopedLive("two people talk: setup, live messages, statuses, errors, quitting, and paging back", () =>
    Effect.gen(function*() {
      requireTmux()
      const root = yield* scopedTempDir("tui")
      const aliceDir = join(root, "alice")
      const bobDir = join(root, "bob")
      const aliceNode = yield* startNodeProcess(aliceDir, [])
      const alice = yield* controlOf(aliceDir)
      yield* alice.register("alice")
      const socket = `peerchat-test-${process.pid}-${randomUUID().slice(0, 8)}`

      yield* Effect.scoped(Effect.gen(function*() {
        const term = yield* openTerminal(socket, chatCommand(["--data-dir", bobDir, "--listen", "127.0.0.1:0"]))

        // First run: join alice's network, try a taken name, then claim a free one.
        yield* term.waitFor(/^network>/m, "the network question")
        yield* term.type(aliceNode.ready.listen)
        yield* term.press("Enter")
        yield* term.waitFor(/^username>/m, "the name question")
        yield* term.type("alice")
        yield* term.press("Enter")
        yield* term.waitFor(/"alice" is already taken by someone else: choose another name/, "a taken name refused")
        yield* term.type("bob")
        yield* term.press("Enter")
        const welcome = yield* term.waitFor(/Welcome, bob!/, "the welcome")
        expect(welcome).toMatch(/peerchat +│ bob │ 127\.0\.0\.1:\d+ │ \d+ peers? │/)
        expect(welcome).toMatch(/Your address is 127\.0\.0\.1:\d+: a friend joins your network/)

        // The chat's node is a node like any other: node.json is there and the control API answers.
        expect(existsSync(join(bobDir, "node.json"))).toBe(true)
        const bob = yield* controlOf(bobDir)
        expect(yield* bob.status).toMatchObject({ username: "bob" })

        // An unknown user is a friendly line, not a crash.
        yield* term.type("/chat nobody")
        yield* term.press("Enter")
        yield* term.waitFor(/no user named "nobody" was found in the network/, "the unknown user")

        yield* term.type("/chat alice")
        yield* term.press("Enter")
        yield* term.waitFor(/No messages with alice yet/, "the empty conversation")
        yield* term.type("hello alice")
        yield* term.press("Enter")
        yield* term.waitFor(/\d\d:\d\d bob: hello alice \[delivered\]/, "bob's message delivered")
        expect(yield* alice.history("bob")).toMatchObject([{ from: "bob", to: "alice", text: "hello alice" }])

        // Alice answers; it appears without a key press, and her escape sequences are shown, not obeyed.
        yield* alice.send("bob", "hi bob \u001b[2J\u001b]0;pwned\u0007 welcome")
        const answered = yield* term.waitFor(/alice: hi bob/, "alice's answer")
        expect(answered).toContain("alice: hi bob \\u001b[2J\\u001b]0;pwned\\u0007 welcome")
        // Shown, so read.
        expect(yield* bob.inbox).toEqual([expect.objectContaining({ conversation: "alice", unread: 0 })])

        // Tab completes the name of someone talked to.
        yield* term.type("/chat al")
        yield* term.press("Tab")
        yield* term.waitFor(/^alice> \/chat alice\s*$/m, "the completed name")
        yield* term.press("C-u")

        // A smaller window is laid out again.
        yield* term.resize(80, 24)
        const small = yield* term.waitFor(/^ peerchat +│ bob .{0,60}$/m, "the conversation after the resize")
        expect(small).toContain("alice: hi bob")
        expect(small.split("\n").every((row) => row.length <= 80)).toBe(true)
        yield* term.resize(120, 40)

        // Lines typed in one go are sent one by one, in the order typed.
        const burst = Array.from({ length: 12 }, (_, i) => `burst-${String(i + 1).padStart(2, "0")}`)
        yield* term.type(`${burst.join("\r")}\r`)
        const typed = yield* term.waitFor(/bob: burst-12 \[/, "the last line of the burst")
        const order = [...typed.matchAll(/bob: burst-(\d\d)/g)].map((match) => Number(match[1]))
        expect(order).toEqual(Array.from({ length: 12 }, (_, i) => i + 1))

        // Alice sends a hundred more: the conversation is now longer than one page of history.
        for (let i = 1; i <= 100; i++) yield* alice.send("bob", `bulk-${String(i).padStart(3, "0")}`)
        yield* term.waitFor(/alice: bulk-100/, "alice's last message")

        // Quitting stops the chat's node cleanly.
        yield* term.type("/quit")
        yield* term.press("Enter")
        yield* term.waitFor(/Bye! Your node has stopped[\s\S]*\[exit 0\]/, "the goodbye")
        expect(existsSync(join(bobDir, "node.json"))).toBe(false)
      }))

      // The second start remembers the network and the name, and opens the conversation named on the command line.
      yield* Effect.scoped(Effect.gen(function*() {
        const term = yield* openTerminal(`${socket}-2`, chatCommand(["alice", "--data-dir", bobDir, "--listen", "127.0.0.1:0"]))
        const reopened = yield* term.waitFor(/alice: bulk-100/, "the conversation, reopened")
        expect(reopened).not.toContain("hello alice")
        // The first page holds the latest 100 messages; paging up past it fetches the older ones.
        const top = yield* term.pressUntil("PPage", /bob: hello alice \[delivered\]/, "the oldest message, paged back")
        expect(top).toMatch(/│── \d{4}-\d\d-\d\d ─+$/m)
        yield* term.pressUntil("NPage", /alice: bulk-100/, "back at the newest message")
        yield* term.press("C-c")
        yield* term.waitFor(/Bye! Your node has stopped[\s\S]*\[exit 0\]/, "the goodbye after Ctrl-C")
      }))
    }).pipe(Effect.provide(Layer.mergeAll(NodeContext.layer, NodeHttpClient.layerUndici))), { timeout: 120_000 })

  it.scopedLive("a mistyped address: the chat says what it tries, offers a choice after --join-timeout, and remembers only what worked", () =>
    Effect.gen(function*() {
      requireTmux()
      const root = yield* scopedTempDir("tui-join")
      const aliceNode = yield* startNodeProcess(join(root, "alice"), [])
      const carolDir = join(root, "carol")
      const settingsFile = join(carolDir, "network.json")
      // A valid address where nothing listens: connections are refused at once.
      const typo = `${freshLoopbackHost()}:1`
      const term = yield* openTerminal(
        `peerchat-join-${process.pid}-${randomUUID().slice(0, 8)}`,
        // The choice comes after 8 s instead of the default 20 (a unit test checks the default); the
        // screen before it must still be caught on a loaded machine.
        chatCommand(["--data-dir", carolDir, "--listen", "127.0.0.1:0", "--join-timeout", "8s"])
      )

      yield* term.waitFor(/^network>/m, "the network question")
      yield* term.type(typo)
      yield* term.press("Enter")
      const trying = yield* term.waitFor(/attempts? so far, the last failed/, "what the node tries")
      expect(trying).toContain(`Waiting for your node to reach the network through ${typo}…`)
      expect(trying).toMatch(/^username>/m)

      const choice = yield* term.waitFor(/Your node cannot reach the network/, "the choice after the timeout")
      expect(choice).toContain(`Nothing answered at ${typo} in 8 s.`)
      expect(choice).toMatch(/^choice>/m)
      // The typo was never saved: a restart now would ask again.
      expect(existsSync(settingsFile)).toBe(false)

      // The right address, typed at the choice: the chat restarts its node with it.
      yield* term.type(aliceNode.ready.listen)
      yield* term.press("Enter")
      yield* term.waitFor(/Your node reached the network: \d+ peers?\./, "the network reached")
      const saved = yield* Effect.sync(() => existsSync(settingsFile) ? readFileSync(settingsFile, "utf8") : "").pipe(
        Effect.filterOrFail((text) => text.includes(aliceNode.ready.listen), () => new Error("network.json not written")),
        Effect.retry(Schedule.spaced("100 millis").pipe(Schedule.upTo(SCREEN_WAIT)))
      )
      expect(JSON.parse(saved)).toEqual({ version: 1, bootstrap: [aliceNode.ready.listen] })

      yield* term.type("carol")
      yield* term.press("Enter")
      yield* term.waitFor(/Welcome, carol!/, "the welcome")
      yield* term.press("C-c")
      yield* term.waitFor(/Bye! Your node has stopped[\s\S]*\[exit 0\]/, "the goodbye")
    }).pipe(Effect.provide(Layer.mergeAll(NodeContext.layer, NodeHttpClient.layerUndici))), { timeout: 120_000 })

  it.scopedLive("two windows on one data directory: the node runs until the last one goes, quit or crashed", () =>
    Effect.gen(function*() {
      requireTmux()
      const root = yield* scopedTempDir("tui-windows")
      const aliceNode = yield* startNodeProcess(join(root, "alice"), [])
      const alice = yield* controlOf(join(root, "alice"))
      yield* alice.register("alice")
      const bobDir = join(root, "bob")
      const socket = `peerchat-windows-${process.pid}-${randomUUID().slice(0, 8)}`
      const bobArgs = ["--data-dir", bobDir, "--listen", "127.0.0.1:0", "--bootstrap", aliceNode.ready.listen]

      const first = yield* openTerminal(`${socket}-1`, chatCommand(bobArgs))
      yield* first.waitFor(/^username>/m, "the name question")
      yield* first.type("bob")
      yield* first.press("Enter")
      yield* first.waitFor(/Welcome, bob!/, "the welcome")
      // The node runs in a process of its own, not in the chat's.
      const pid = nodePid(bobDir)
      expect(pid).not.toBe(yield* first.commandPid)
      // With one malloc arena (NODE_PROCESS_ENVIRONMENT), unless the user's environment says otherwise.
      expect(environmentOf(pid).get("MALLOC_ARENA_MAX")).toBe(process.env.MALLOC_ARENA_MAX ?? "1")

      const second = yield* openTerminal(`${socket}-2`, chatCommand(["--data-dir", bobDir]))
      yield* second.waitFor(/^ peerchat +│ bob │/m, "the second window on the same node")

      // The first window leaves: the node stays for the second, which says so.
      yield* first.press("C-c")
      yield* first.waitFor(/Bye! Your node keeps running for the other chat window\.[\s\S]*\[exit 0\]/, "the first goodbye")
      expect(isAlive(pid)).toBe(true)

      // The second window still works.
      yield* second.type("/chat alice")
      yield* second.press("Enter")
      yield* second.waitFor(/No messages with alice yet/, "the conversation in the second window")
      yield* second.type("still here")
      yield* second.press("Enter")
      yield* second.waitFor(/\d\d:\d\d bob: still here \[delivered\]/, "a message sent from the second window")
      expect(yield* second.screen).not.toMatch(/not running any more/)

      // The last window leaves: the node stops, and the window says so only once it has.
      yield* second.type("/quit")
      yield* second.press("Enter")
      yield* second.waitFor(/Bye! Your node has stopped[\s\S]*\[exit 0\]/, "the last goodbye")
      expect(isAlive(pid)).toBe(false)
      expect(existsSync(join(bobDir, "node.json"))).toBe(false)
      // Its log (one timestamp a line) says why it stopped.
      const log = readFileSync(join(bobDir, "logs", "node.log"), "utf8")
      expect(log).toMatch(/^\d{4}-\d\d-\d\dT[\d:.]+Z INFO {2}the last chat window has gone: stopping$/m)

      // A window that crashes is gone all the same: its node stops.
      const third = yield* openTerminal(`${socket}-3`, chatCommand(["--data-dir", bobDir, "--listen", "127.0.0.1:0"]))
      yield* third.waitFor(/^ peerchat +│ bob │/m, "the chat on the remembered network")
      const restarted = nodePid(bobDir)
      process.kill(yield* third.commandPid, "SIGKILL")
      yield* awaitGone(restarted, "the node of a crashed window")
      expect(existsSync(join(bobDir, "node.json"))).toBe(false)

      // A node the user started with peerchat start is never stopped by the chat.
      const byHand = yield* startNodeProcess(bobDir, ["--bootstrap", aliceNode.ready.listen])
      const fourth = yield* openTerminal(`${socket}-4`, chatCommand(["--data-dir", bobDir]))
      yield* fourth.waitFor(/^ peerchat +│ bob │/m, "the chat on the node started by hand")
      yield* fourth.press("C-c")
      yield* fourth.waitFor(/Bye! Your node keeps running \(started with peerchat start\)\.[\s\S]*\[exit 0\]/, "the goodbye")
      expect(byHand.child.exitCode).toBeNull()
      expect((yield* (yield* controlOf(bobDir)).status).username).toBe("bob")
    }).pipe(Effect.provide(Layer.mergeAll(NodeContext.layer, NodeHttpClient.layerUndici))), { timeout: 120_000 })
})
