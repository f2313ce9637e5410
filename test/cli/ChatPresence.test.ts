/**
 * The chat's sense of presence, through the reducer and the screen: the
 * first-run setup says what the node tries and, after 20 s without reaching
 * the network, offers to retry, change the address or start a new network
 * (each restarting the chat's node); the chosen address is saved only once
 * it worked; the status bar counts live peers, not known ones; and a
 * conversation says when its contact was last reached.
 */
import { describe, expect, it } from "@effect/vitest"
import { HISTORY_PAGE, initialState } from "../../src/cli/chat/ChatState.js"
import { joinLines, screenText, view } from "../../src/cli/chat/ChatView.js"
import { DEFAULT_JOIN_TIMEOUT_MS, reachText, RECENT_REACH_MS } from "../../src/cli/chat/Presence.js"
import type { NodeStatus } from "../../src/node/Control.js"
import { at, chatting, entry, feed, STATUS, typed, user } from "./chatFixtures.js"
import { messageIdOf } from "../support/messageIds.js"

const FRIEND = { host: "192.0.2.10", port: 4242 }
const RIGHT = { host: "192.0.2.11", port: 4242 }

const setup = (joinTimeoutMs?: number) =>
  initialState({ size: { columns: 110, rows: 32 }, phase: { _tag: "ChooseNetwork" }, joinTimeoutMs })

/** A node with no name that is still trying `addresses`: `attempts` failed, the last with `lastError`. */
const joining = (attempts: number, lastError: string | null, addresses = ["192.0.2.10:4242"]): NodeStatus => ({
  ...STATUS,
  username: null,
  peers: 0,
  livePeers: 0,
  bootstrap: { _tag: "Joining", attempts, lastError, nextAttemptAt: lastError === null ? null : 14_000, addresses }
})

const text = (state: Parameters<typeof view>[0]) => screenText(view(state)).join("\n")

/** The setup after typing the friend's (wrong) address: the node answered at t = 1 s, not on the network yet. */
const waitingAtFriend = (joinTimeoutMs?: number) =>
  feed(setup(joinTimeoutMs), ...typed("192.0.2.10:4242"), { _tag: "Connected", status: joining(0, null), now: 1000 })

describe("the first-run join", () => {
  it("says what it tries while the node joins: the address, the attempts, the last error", () => {
    const waiting = waitingAtFriend()
    expect(waiting.state.phase).toEqual({ _tag: "ChooseName", checking: null, waitingForNetwork: false })
    expect(waiting.state.joiningSince).toBe(1000)
    expect(text(waiting.state)).toContain("Waiting for your node to reach the network through 192.0.2.10:4242…")
    expect(text(waiting.state)).toContain("Attempt 1 in progress.")

    const failing = feed(waiting.state, { _tag: "StatusLoaded", status: joining(3, "connection refused"), show: false }, {
      _tag: "Refresh",
      now: 9000
    })
    expect(joinLines(failing.state)).toEqual([
      "Waiting for your node to reach the network through 192.0.2.10:4242…",
      "3 attempts so far, the last failed: connection refused; next try in 5 s.",
      "Waiting 8 s; if nothing answers in 12 s more, you can change the address."
    ])
    // Nothing is saved while nothing answered.
    expect([...waiting.cmds, ...failing.cmds].some((cmd) => cmd._tag === "SaveNetwork")).toBe(false)
  })

  it("waits as long as --join-timeout says, and says how long it waited", () => {
    const waiting = waitingAtFriend(5000)
    expect(joinLines(feed(waiting.state, { _tag: "Refresh", now: 3000 }).state)).toContain(
      "Waiting 2 s; if nothing answers in 3 s more, you can change the address."
    )
    expect(feed(waiting.state, { _tag: "Refresh", now: 5999 }).state.phase._tag).toBe("ChooseName")
    const timedOut = feed(waiting.state, { _tag: "Refresh", now: 6000 })
    expect(timedOut.state.phase).toEqual({ _tag: "JoinTimedOut" })
    expect(text(timedOut.state)).toContain("Nothing answered at 192.0.2.10:4242 in 5 s.")
  })

  it("after 20 s without the network it offers retry, another address, or a new network", () => {
    const waiting = feed(waitingAtFriend().state, ...typed("bob", false))
    const early = feed(waiting.state, { _tag: "Refresh", now: 1000 + DEFAULT_JOIN_TIMEOUT_MS - 1 })
    expect(early.state.phase._tag).toBe("ChooseName")
    const timedOut = feed(early.state, { _tag: "StatusLoaded", status: joining(4, "connection refused"), show: false }, {
      _tag: "Refresh",
      now: 1000 + DEFAULT_JOIN_TIMEOUT_MS
    })
    expect(timedOut.state.phase).toEqual({ _tag: "JoinTimedOut" })
    // What was typed for the name question is no answer to this one.
    expect(timedOut.state.input.text).toBe("")
    const screen = text(timedOut.state)
    expect(screen).toContain("Your node cannot reach the network")
    expect(screen).toContain("Nothing answered at 192.0.2.10:4242 in 20 s.")
    expect(screen).toContain("4 attempts, the last failed: connection refused")
    expect(screen).toMatch(/r +try again/)
    expect(screen).toMatch(/c +change the address/)
    expect(screen).toMatch(/new +start a new network/)
    expect(screen).toMatch(/^choice> /m)

    // Retry: the node restarts with the same address.
    const retry = feed(timedOut.state, ...typed("r"))
    expect(retry.cmds).toEqual([{ _tag: "StartNode", bootstrap: [FRIEND] }])
    expect(retry.state.phase).toMatchObject({ _tag: "Starting", message: expect.stringContaining("trying 192.0.2.10:4242 again") })
    expect(retry.state.node.status).toBeNull()

    // Change: back to the network question, then the right address.
    const change = feed(timedOut.state, ...typed("c"))
    expect(change.state.phase).toEqual({ _tag: "ChooseNetwork" })
    expect(feed(change.state, ...typed("192.0.2.11:4242")).cmds).toEqual([{ _tag: "StartNode", bootstrap: [RIGHT] }])
    // An address typed at the choice is a change to it.
    expect(feed(timedOut.state, ...typed("192.0.2.11:4242")).cmds).toEqual([{ _tag: "StartNode", bootstrap: [RIGHT] }])

    // New: a network of one's own.
    expect(feed(timedOut.state, ...typed("new")).cmds).toEqual([{ _tag: "StartNode", bootstrap: [] }])

    const nonsense = feed(timedOut.state, ...typed("maybe"))
    expect(nonsense.cmds).toEqual([])
    expect(nonsense.state.notice?.text).toMatch(/"maybe" is not a choice: type r \(try again\), c \(change the address\)/)
  })

  it("saves the address only once the node reached the network through it; a new network at once", () => {
    const timedOut = feed(waitingAtFriend().state, { _tag: "Refresh", now: 1000 + DEFAULT_JOIN_TIMEOUT_MS })
    const restarted = feed(timedOut.state, ...typed("192.0.2.11:4242"), {
      _tag: "Connected",
      status: joining(0, null, ["192.0.2.11:4242"]),
      now: 30_000
    })
    expect(restarted.state.joiningSince).toBe(30_000)
    expect(restarted.cmds.some((cmd) => cmd._tag === "SaveNetwork")).toBe(false)
    const reached = feed(restarted.state, {
      _tag: "StatusLoaded",
      status: { ...STATUS, username: null, peers: 1, livePeers: 1 },
      show: false
    })
    expect(reached.cmds).toEqual([{ _tag: "SaveNetwork", bootstrap: [RIGHT] }])
    expect(reached.state.joiningSince).toBeNull()
    expect(text(reached.state)).toContain("Your node reached the network: 1 peer.")
    // Saved once.
    expect(feed(reached.state, { _tag: "StatusLoaded", status: { ...STATUS, username: null }, show: false }).cmds).toEqual([])
    // A later silence is no reason to offer another address.
    expect(feed(reached.state, { _tag: "Refresh", now: 10 * DEFAULT_JOIN_TIMEOUT_MS }).state.phase._tag).toBe("ChooseName")

    const standalone: NodeStatus = { ...STATUS, username: null, peers: 0, livePeers: 0, bootstrap: { _tag: "Standalone" } }
    expect(feed(setup(), ...typed("new"), { _tag: "Connected", status: standalone, now: 0 }).cmds).toEqual([
      { _tag: "StartNode", bootstrap: [] },
      { _tag: "SaveNetwork", bootstrap: [] }
    ])
  })

  it("the node getting there while the choice is on screen goes back to the name", () => {
    const timedOut = feed(waitingAtFriend().state, { _tag: "Refresh", now: 1000 + DEFAULT_JOIN_TIMEOUT_MS })
    const reached = feed(timedOut.state, { _tag: "StatusLoaded", status: { ...STATUS, username: null, peers: 2 }, show: false })
    expect(reached.state.phase).toEqual({ _tag: "ChooseName", checking: null, waitingForNetwork: false })
    expect(reached.state.notice).toEqual({ tone: "success", text: "your node reached the network: choose your name" })
    expect(reached.cmds).toEqual([{ _tag: "SaveNetwork", bootstrap: [FRIEND] }])
  })

  it("a node of another process cannot be restarted: the choice is to keep waiting, or how to restart it", () => {
    const elsewhere = initialState({ size: { columns: 110, rows: 32 }, phase: { _tag: "Starting", message: "Connecting to your node…" } })
    const timedOut = feed(elsewhere, { _tag: "Connected", status: joining(2, "timed out"), now: 0 }, { _tag: "Refresh", now: DEFAULT_JOIN_TIMEOUT_MS })
    expect(timedOut.state.phase._tag).toBe("JoinTimedOut")
    expect(text(timedOut.state)).toContain("peerchat start --bootstrap HOST:PORT")
    const change = feed(timedOut.state, ...typed("192.0.2.11:4242"))
    expect(change.cmds).toEqual([])
    expect(change.state.notice?.text).toMatch(/your node runs in another terminal/)
    const wait = feed(timedOut.state, ...typed("r"))
    expect(wait.cmds).toEqual([])
    expect(wait.state.phase._tag).toBe("ChooseName")
    expect(wait.state.joiningSince).toBe(DEFAULT_JOIN_TIMEOUT_MS)
    // A node the chat did not start is never saved as the chat's network.
    expect(feed(wait.state, { _tag: "StatusLoaded", status: { ...STATUS, username: null }, show: false }).cmds).toEqual([])
  })

  it("addresses given on the command line are saved once they work, remembered ones are not saved again", () => {
    const given = initialState({ size: { columns: 110, rows: 32 }, phase: { _tag: "Starting", message: "" }, bootstrap: [RIGHT], unsavedNetwork: true })
    expect(feed(given, { _tag: "Connected", status: STATUS, now: 0 }).cmds).toContainEqual({ _tag: "SaveNetwork", bootstrap: [RIGHT] })
    const remembered = initialState({ size: { columns: 110, rows: 32 }, phase: { _tag: "Starting", message: "" }, bootstrap: [RIGHT] })
    expect(feed(remembered, { _tag: "Connected", status: STATUS, now: 0 }).cmds.some((cmd) => cmd._tag === "SaveNetwork")).toBe(false)
  })
})

describe("live peers and contacts' reach", () => {
  it("the status bar counts live peers; /status shows live and known", () => {
    const stale = { ...chatting(), node: { status: { ...STATUS, peers: 3, livePeers: 0 }, error: null, live: true } }
    expect(text(stale).split("\n")[0]).toMatch(/│ 0 peers │ no peers reachable/)
    const panel = feed(chatting(), { _tag: "StatusLoaded", status: { ...STATUS, peers: 5, livePeers: 2 }, show: true })
    expect(panel.state.panel?.lines).toContain("peers     2 heard from in the last 2 minutes, 5 known")
    // A node that does not count live peers is shown as before.
    expect(text(chatting()).split("\n")[0]).toMatch(/│ 2 peers │ network ok/)
  })

  it("a conversation says when its contact was last reached: a delivery, or a message of theirs", () => {
    const open = feed(
      { ...chatting(), conversations: [{ conversation: user("bob"), unread: 0, lastAt: 0 }] },
      ...typed("/chat bob"),
      { _tag: "HistoryLoaded", name: user("bob"), entries: [], older: false, limit: HISTORY_PAGE },
      { _tag: "Refresh", now: at(0) }
    )
    expect(text(open.state)).toMatch(/ bob · not reached yet/)

    // Their message, sent a minute ago.
    const answered = feed(open.state, { _tag: "Event", event: { _tag: "Received", entry: entry("bob", 1, "hi", { sentAt: at(-1) }) }, at: at(0) })
    expect(text(answered.state)).toMatch(/ bob · reached 1 min ago \(their message\)/)

    // A receipt just now.
    const delivered = feed(answered.state, {
      _tag: "Event",
      event: { _tag: "StatusChanged", id: messageIdOf("x"), conversation: user("bob"), status: "delivered" },
      at: at(0)
    })
    expect(text(delivered.state)).toMatch(/ bob · reached just now \(delivery\)/)

    // Later, it is no longer recent.
    const later = feed(delivered.state, { _tag: "Refresh", now: at(0) + RECENT_REACH_MS })
    expect(text(later.state)).toMatch(/ bob · last reached 14:30 \(delivery\)/)
    // A delivery through a relay (the contact is behind a NAT) says so.
    const relayed = feed(later.state, {
      _tag: "Event",
      event: { _tag: "StatusChanged", id: messageIdOf("y"), conversation: user("bob"), status: "delivered", via: "relay" },
      at: at(0) + RECENT_REACH_MS
    })
    expect(text(relayed.state)).toMatch(/ bob · reached just now \(delivery through a relay\)/)
    // An older page does not move it back.
    const page = feed(later.state, { _tag: "HistoryLoaded", name: user("bob"), entries: [entry("bob", 0, "old", { sentAt: at(-60) })], older: true, limit: HISTORY_PAGE })
    expect(page.state.reach).toEqual(later.state.reach)
  })

  it("history alone tells the last reach: their latest message, or our latest delivered one", () => {
    const history = [
      entry("bob", 1, "hi", { sentAt: at(-30) }),
      entry("bob", 2, "delivered", { direction: "out", status: "delivered", sentAt: at(-20) }),
      entry("bob", 3, "still queued", { direction: "out", status: "queued", sentAt: at(-10) })
    ]
    const open = feed(
      { ...chatting(), conversations: [{ conversation: user("bob"), unread: 0, lastAt: 0 }] },
      ...typed("/chat bob"),
      { _tag: "HistoryLoaded", name: user("bob"), entries: history, older: false, limit: HISTORY_PAGE }
    )
    expect(open.state.reach).toEqual([{ name: "bob", at: at(-20), how: "delivered" }])
  })

  it("reachText: recent, earlier today, another day, never", () => {
    const now = at(0)
    expect(reachText(undefined, now)).toEqual({ text: "not reached yet", recent: false })
    expect(reachText({ name: user("bob"), at: now - 5 * 60_000, how: "answered" }, now)).toEqual({
      text: "reached 5 min ago (their message)",
      recent: true
    })
    expect(reachText({ name: user("bob"), at: at(-120), how: "delivered" }, now).text).toBe("last reached 12:30 (delivery)")
    expect(reachText({ name: user("bob"), at: at(-24 * 60), how: "delivered" }, now).text).toBe("last reached 2025-02-28 14:30 (delivery)")
  })
})
