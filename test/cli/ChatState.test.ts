/**
 * The terminal chat's reducer without a terminal: the first-run setup, the
 * conversation list and unread counts, sending with its optimistic line and
 * its failures, events as they arrive, the slash commands and their errors,
 * Tab completion, paging back through a long history, and the mapping of
 * raw key reports (several keys in one read) to key presses.
 */
import { describe, expect, it } from "@effect/vitest"
import { HISTORY_PAGE, initialState, keyPressesOf, MAX_INPUT, mergeEntries, type RawKey } from "../../src/cli/chat/ChatState.js"
import { MAX_MESSAGE_TEXT_BYTES } from "../../src/core/Message.js"
import { chatting, entry, feed, key, STATUS, typed, user } from "./chatFixtures.js"
import { messageIdOf } from "../support/messageIds.js"

const NO_KEY: RawKey = {
  upArrow: false,
  downArrow: false,
  leftArrow: false,
  rightArrow: false,
  pageUp: false,
  pageDown: false,
  home: false,
  end: false,
  return: false,
  escape: false,
  ctrl: false,
  meta: false,
  tab: false,
  backspace: false,
  delete: false
}

const setup = () => initialState({ size: { columns: 100, rows: 30 }, phase: { _tag: "ChooseNetwork" } })

const unregistered = { ...STATUS, username: null }

describe("first run", () => {
  it("joins through an address, or starts a new network, and refuses anything else", () => {
    const joined = feed(setup(), ...typed("192.0.2.10:4242"))
    expect(joined.cmds).toEqual([{ _tag: "StartNode", bootstrap: [{ host: "192.0.2.10", port: 4242 }] }])
    expect(joined.state.phase).toMatchObject({ _tag: "Starting", message: expect.stringContaining("192.0.2.10:4242") })

    expect(feed(setup(), ...typed("NEW")).cmds).toEqual([{ _tag: "StartNode", bootstrap: [] }])

    const wrong = feed(setup(), ...typed("my friend"))
    expect(wrong.cmds).toEqual([])
    expect(wrong.state.phase._tag).toBe("ChooseNetwork")
    expect(wrong.state.notice).toMatchObject({ tone: "error", text: expect.stringMatching(/"my friend" is not an address: expected host:port/) })
    // The text stays, to be corrected.
    expect(wrong.state.input.text).toBe("my friend")
  })

  it("checks the name on the network, then claims it, then shows the address to share", () => {
    const start = feed(setup(), ...typed("new"), { _tag: "Connected", status: unregistered, now: 0 })
    expect(start.state.phase).toEqual({ _tag: "ChooseName", checking: null, waitingForNetwork: false })

    const invalid = feed(start.state, ...typed("Al!ce"))
    expect(invalid.cmds).toEqual([])
    expect(invalid.state.notice?.text).toMatch(/may only contain a-z/)

    const checking = feed(start.state, ...typed("Alice"))
    expect(checking.cmds).toEqual([{ _tag: "CheckName", name: "alice" }])
    // While checking, typing is ignored rather than lost in a prompt that is not listening.
    expect(feed(checking.state, ...typed("x")).state.input.text).toBe("")

    const taken = feed(checking.state, { _tag: "NameChecked", name: user("alice"), free: false })
    expect(taken.cmds).toEqual([])
    expect(taken.state.phase).toEqual({ _tag: "ChooseName", checking: null, waitingForNetwork: false })
    expect(taken.state.notice).toEqual({ tone: "error", text: '"alice" is already taken by someone else: choose another name' })

    const free = feed(checking.state, { _tag: "NameChecked", name: user("alice"), free: true })
    expect(free.cmds).toEqual([{ _tag: "Register", name: "alice" }])
    const answer = { username: user("alice"), fingerprint: "0000-1111-2222-3333-4444-5555-6666-7777", nodeId: STATUS.nodeId, address: "127.0.0.1:4242", addresses: ["127.0.0.1:4242"], sequence: 1, expiresAt: 0 }
    const registered = feed(free.state, { _tag: "Registered", answer })
    expect(registered.state.phase._tag).toBe("Chat")
    expect(registered.state.node.status?.username).toBe("alice")
    expect(registered.state.panel?.lines.join("\n")).toContain("Your address is 127.0.0.1:4242")
    expect(registered.cmds).toEqual([{ _tag: "LoadInbox" }, { _tag: "LoadStatus", show: false }])
  })

  it("a failed claim (no peers reachable, name taken meanwhile) says why and lets the user try again", () => {
    const checking = feed(setup(), ...typed("new"), { _tag: "Connected", status: unregistered, now: 0 }, ...typed("alice"))
    const failed = feed(checking.state, {
      _tag: "Failed",
      action: "register",
      message: 'could not publish "alice" to the network: no peers reachable'
    })
    expect(failed.state.phase).toEqual({ _tag: "ChooseName", checking: null, waitingForNetwork: false })
    expect(failed.state.notice).toEqual({ tone: "error", text: 'could not publish "alice" to the network: no peers reachable' })
    expect(feed(failed.state, ...typed("alice")).cmds).toEqual([{ _tag: "CheckName", name: "alice" }])
  })

  it("waits for the network before checking a name, so a name is never judged free by a lonely node", () => {
    const joining = { ...unregistered, peers: 0, bootstrap: { _tag: "Joining" as const, attempts: 1, lastError: null, nextAttemptAt: null } }
    const waiting = feed(setup(), ...typed("192.0.2.10:4242"), { _tag: "Connected", status: joining, now: 0 }, ...typed("bob"))
    expect(waiting.cmds).toEqual([{ _tag: "StartNode", bootstrap: [{ host: "192.0.2.10", port: 4242 }] }])
    expect(waiting.state.phase).toEqual({ _tag: "ChooseName", checking: "bob", waitingForNetwork: true })
    expect(feed(waiting.state, { _tag: "StatusLoaded", status: joining, show: false }).cmds).toEqual([])
    const reached = feed(waiting.state, { _tag: "StatusLoaded", status: { ...joining, peers: 1 }, show: false })
    expect(reached.cmds).toEqual([
      { _tag: "CheckName", name: "bob" },
      // The address worked: only now is it remembered.
      { _tag: "SaveNetwork", bootstrap: [{ host: "192.0.2.10", port: 4242 }] }
    ])
  })

  it("a node that cannot start ends in a message and Enter quits", () => {
    const failed = feed(setup(), ...typed("new"), { _tag: "StartFailed", message: "cannot listen on 0.0.0.0:4242: the port is already in use" })
    expect(failed.state.phase).toEqual({ _tag: "Fatal", message: "cannot listen on 0.0.0.0:4242: the port is already in use" })
    expect(feed(failed.state, key({ _tag: "Enter" })).cmds).toEqual([{ _tag: "Quit" }])
  })

  it("a registered node goes straight to the chat and opens the conversation named on the command line", () => {
    const state = initialState({ size: { columns: 100, rows: 30 }, phase: { _tag: "Starting", message: "" }, openOnStart: "bob" })
    const up = feed(state, { _tag: "Connected", status: STATUS, now: 0 })
    expect(up.state.phase._tag).toBe("Chat")
    expect(up.state.open?.name).toBe("bob")
    expect(up.cmds).toEqual([
      { _tag: "LoadInbox" },
      { _tag: "LoadHistory", name: "bob", before: null, limit: HISTORY_PAGE },
      { _tag: "MarkRead", name: "bob" }
    ])
  })
})

describe("conversations", () => {
  it("counts unread messages per conversation, and opening one loads its history and marks it read", () => {
    const inbox = feed(chatting(), {
      _tag: "InboxLoaded",
      conversations: [{ conversation: user("carol"), unread: 0, lastAt: 1 }]
    })
    const bob = entry("bob", 1, "hi alice")
    const arrived = feed(inbox.state, { _tag: "Event", event: { _tag: "Received", entry: bob }, at: 0 })
    expect(arrived.state.conversations).toEqual([
      { conversation: "bob", unread: 1, lastAt: bob.sentAt },
      { conversation: "carol", unread: 0, lastAt: 1 }
    ])
    expect(arrived.state.notice?.text).toBe("new message from bob (Ctrl-N, or /chat bob)")
    expect(arrived.cmds).toEqual([])

    const opened = feed(arrived.state, key({ _tag: "Ctrl", letter: "n" }))
    expect(opened.state.open?.name).toBe("bob")
    expect(opened.state.conversations[0]).toMatchObject({ conversation: "bob", unread: 0 })
    expect(opened.cmds).toEqual([
      { _tag: "LoadHistory", name: "bob", before: null, limit: HISTORY_PAGE },
      { _tag: "MarkRead", name: "bob" }
    ])
    const loaded = feed(opened.state, { _tag: "HistoryLoaded", name: user("bob"), entries: [bob], older: false, limit: HISTORY_PAGE })
    expect(loaded.state.open).toMatchObject({ loaded: true, hasOlder: false, messages: [bob] })

    // A message in the open conversation is shown at once and read at once.
    const next = entry("bob", 2, "still there?")
    const live = feed(loaded.state, { _tag: "Event", event: { _tag: "Received", entry: next }, at: 0 })
    expect(live.state.open?.messages).toEqual([bob, next])
    expect(live.state.conversations[0]).toMatchObject({ conversation: "bob", unread: 0 })
    expect(live.cmds).toEqual([{ _tag: "MarkRead", name: "bob" }])
    // The same event twice (a reconnect, a refresh) shows the message once.
    expect(feed(live.state, { _tag: "Event", event: { _tag: "Received", entry: next }, at: 0 }).state.open?.messages).toHaveLength(2)

    // Ctrl-N and Ctrl-P walk the list and wrap around.
    expect(feed(live.state, key({ _tag: "Ctrl", letter: "n" })).state.open?.name).toBe("carol")
    expect(feed(live.state, key({ _tag: "Ctrl", letter: "p" })).state.open?.name).toBe("carol")
  })

  it("a refresh re-reads status, inbox and the open conversation; the inbox never shows the open one unread", () => {
    const open = feed(chatting(), ...typed("/chat bob"), {
      _tag: "WhoisAnswered",
      answer: { username: user("bob"), fingerprint: "0000-1111-2222-3333-4444-5555-6666-7777", nodeId: STATUS.nodeId.replace(/1/g, "2") as typeof STATUS.nodeId, address: "", addresses: [], sequence: 1, expiresAt: 0 },
      open: true
    }, { _tag: "HistoryLoaded", name: user("bob"), entries: [], older: false, limit: HISTORY_PAGE })
    expect(feed(open.state, { _tag: "Refresh", now: 0 }).cmds).toEqual([
      { _tag: "LoadStatus", show: false },
      { _tag: "LoadInbox" },
      { _tag: "LoadHistory", name: "bob", before: null, limit: HISTORY_PAGE }
    ])
    const inbox = feed(open.state, {
      _tag: "InboxLoaded",
      conversations: [{ conversation: user("bob"), unread: 2, lastAt: 5 }, { conversation: user("carol"), unread: 1, lastAt: 4 }]
    })
    expect(inbox.state.conversations.map((summary) => summary.unread)).toEqual([0, 1])
    expect(inbox.cmds).toEqual([{ _tag: "MarkRead", name: "bob" }])
  })

  it("statuses only move forward, however late an event or a page arrives", () => {
    const sent = entry("bob", 1, "hi", { direction: "out", status: "queued" })
    const bobOpen = feed(
      { ...chatting(), conversations: [{ conversation: user("bob"), unread: 0, lastAt: 0 }] },
      ...typed("/chat bob"),
      { _tag: "HistoryLoaded", name: user("bob"), entries: [sent], older: false, limit: HISTORY_PAGE }
    )
    const delivered = feed(bobOpen.state, { _tag: "Event", event: { _tag: "StatusChanged", id: sent.id, conversation: user("bob"), status: "delivered" }, at: 0 })
    expect(delivered.state.open?.messages[0]?.status).toBe("delivered")
    const late = feed(
      delivered.state,
      { _tag: "Event", event: { _tag: "StatusChanged", id: sent.id, conversation: user("bob"), status: "stored-offline" }, at: 0 },
      { _tag: "HistoryLoaded", name: user("bob"), entries: [sent], older: false, limit: HISTORY_PAGE }
    )
    expect(late.state.open?.messages[0]?.status).toBe("delivered")
  })

  it("mergeEntries keeps each id once, in history order", () => {
    const a = entry("bob", 1, "a")
    const b = entry("bob", 2, "b")
    const c = entry("bob", 3, "c", { sentAt: entry("bob", 2, "").sentAt })
    expect(mergeEntries([b, a], [c, a]).map((e) => e.text)).toEqual(["a", "b", "c"])
  })
})

describe("sending", () => {
  const withBob = () =>
    feed(
      { ...chatting(), conversations: [{ conversation: user("bob"), unread: 0, lastAt: 0 }] },
      ...typed("/chat bob"),
      { _tag: "HistoryLoaded", name: user("bob"), entries: [], older: false, limit: HISTORY_PAGE }
    ).state

  it("shows the message at once, then as the node stored it", () => {
    const sending = feed(withBob(), ...typed("see you at 8"))
    expect(sending.cmds).toEqual([{ _tag: "Send", localId: 1, to: "bob", text: "see you at 8" }])
    expect(sending.state.open?.pending).toEqual([{ localId: 1, text: "see you at 8" }])
    expect(sending.state.input).toEqual({ text: "", cursor: 0 })
    const sent = feed(sending.state, {
      _tag: "Sent",
      localId: 1,
      message: { id: messageIdOf("m1"), from: user("alice"), to: user("bob"), sequence: 1, sentAt: 5, status: "queued" }
    })
    expect(sent.state.open?.pending).toEqual([])
    expect(sent.state.open?.messages).toMatchObject([{ id: messageIdOf("m1"), text: "see you at 8", status: "queued", direction: "out" }])
  })

  it("a failed send says why and gives the text back", () => {
    const sending = feed(withBob(), ...typed("hello?"))
    const failed = feed(sending.state, { _tag: "SendFailed", localId: 1, text: "hello?", message: 'no user named "bob" was found in the network' })
    expect(failed.state.open?.pending).toEqual([])
    expect(failed.state.input.text).toBe("hello?")
    expect(failed.state.notice).toEqual({ tone: "error", text: 'not sent: no user named "bob" was found in the network' })
  })

  it("text without an open conversation, // and blank lines", () => {
    const nowhere = feed(chatting(), ...typed("hi"))
    expect(nowhere.cmds).toEqual([])
    expect(nowhere.state.notice?.text).toBe("no conversation is open: /chat NAME opens one")
    expect(feed(withBob(), ...typed("//help is a command")).cmds).toEqual([{ _tag: "Send", localId: 1, to: "bob", text: "/help is a command" }])
    // Enter on an empty line does nothing; a line of spaces is refused, with the reason, and kept.
    const empty = feed(withBob(), ...typed(""))
    expect(empty.cmds).toEqual([])
    expect(empty.state.notice).toBeNull()
    const blank = feed(withBob(), ...typed("   \u200b "))
    expect(blank.cmds).toEqual([])
    expect(blank.state.notice).toEqual({ tone: "error", text: "not sent: the message has no text" })
    expect(blank.state.open?.pending).toEqual([])
  })

  it("a line longer than one message holds is sent as several, in order, and the chat says so", () => {
    const words = Array.from({ length: 5000 }, (_, i) => `word${i}`).join(" ")
    expect(words.length).toBeGreaterThan(MAX_MESSAGE_TEXT_BYTES * 2)
    const split = feed(withBob(), ...typed(words))
    const sends = split.cmds.filter((cmd) => cmd._tag === "Send")
    expect(sends).toHaveLength(3)
    expect(sends.map((cmd) => cmd.localId)).toEqual([1, 2, 3])
    for (const cmd of sends) expect(new TextEncoder().encode(cmd.text).length).toBeLessThanOrEqual(MAX_MESSAGE_TEXT_BYTES)
    // Cut between words: nothing is lost but the spaces at the cuts.
    expect(sends.map((cmd) => cmd.text).join(" ")).toBe(words)
    expect(split.state.open?.pending.map((pending) => pending.localId)).toEqual([1, 2, 3])
    expect(split.state.notice).toEqual({ tone: "info", text: "sent as 3 messages: one message holds at most 16 KiB" })
    expect(split.state.nextLocalId).toBe(4)
  })

  it("a paste longer than the input holds is cut, and the chat says how much was left out", () => {
    const paste = "y".repeat(MAX_INPUT + 10)
    const cut = feed(withBob(), ...typed(paste, false))
    expect(cut.state.input.text).toHaveLength(MAX_INPUT)
    expect(cut.state.notice).toEqual({
      tone: "error",
      text: "the input holds at most 65,536 characters (4 messages): 10 more were not taken; send this first, then paste the rest"
    })
    // A character is never cut in half at the limit.
    const emoji = feed(withBob(), ...typed(`${"y".repeat(MAX_INPUT - 1)}😀`, false))
    expect(emoji.state.input.text).toBe("y".repeat(MAX_INPUT - 1))
    expect(emoji.state.notice?.text).toContain("2 more were not taken")
    // Sending it goes as four messages.
    expect(feed(cut.state, key({ _tag: "Enter" })).cmds.filter((cmd) => cmd._tag === "Send")).toHaveLength(4)
  })
})

describe("commands", () => {
  it("each command asks for what it shows, and mistakes get a one-line answer", () => {
    expect(feed(chatting(), ...typed("/whois Bob")).cmds).toEqual([{ _tag: "Whois", name: "bob", open: false }])
    expect(feed(chatting(), ...typed("/peers")).cmds).toEqual([{ _tag: "LoadPeers" }])
    expect(feed(chatting(), ...typed("/status")).cmds).toEqual([{ _tag: "LoadStatus", show: true }])
    expect(feed(chatting(), ...typed("/quit")).cmds).toEqual([{ _tag: "Quit" }])
    expect(feed(chatting(), key({ _tag: "Ctrl", letter: "c" })).cmds).toEqual([{ _tag: "Quit" }])
    expect(feed(chatting(), ...typed("/help")).state.panel?.lines.join("\n")).toMatch(/\/chat NAME[\s\S]*\/whois NAME[\s\S]*\/quit/)
    expect(feed(chatting(), ...typed("/chat carol")).cmds).toEqual([{ _tag: "Whois", name: "carol", open: true }])

    for (const [line, message] of [
      ["/dance", "unknown command /dance: /help lists the commands"],
      ["/chat", "usage: /chat NAME"],
      ["/whois", "usage: /whois NAME"],
      ["/chat x", 'username "x" is shorter than 3 characters'],
      ["/chat alice", '"alice" is you: pick someone else to talk to']
    ] as const) {
      const outcome = feed(chatting(), ...typed(line))
      expect(outcome.cmds, line).toEqual([])
      expect(outcome.state.notice, line).toEqual({ tone: "error", text: message })
    }
  })

  it("answers become panels, failures notices; Esc closes the panel", () => {
    const answer = { username: user("bob"), fingerprint: "0000-1111-2222-3333-4444-5555-6666-7777", nodeId: STATUS.nodeId, address: "192.0.2.7:4242", addresses: ["192.0.2.7:4242"], sequence: 3, expiresAt: 0 }
    const whois = feed(chatting(), ...typed("/whois bob"), { _tag: "WhoisAnswered", answer, open: false })
    expect(whois.state.panel).toMatchObject({ title: "whois bob", lines: expect.arrayContaining(["address   192.0.2.7:4242"]) })
    expect(feed(whois.state, key({ _tag: "Escape" })).state.panel).toBeNull()

    const unknown = feed(chatting(), ...typed("/chat nobody"), {
      _tag: "Failed",
      action: "whois",
      message: 'no user named "nobody" was found in the network'
    })
    expect(unknown.state.open).toBeNull()
    expect(unknown.state.notice).toEqual({ tone: "error", text: 'no user named "nobody" was found in the network' })

    const peers = feed(chatting(), { _tag: "PeersLoaded", peers: [{ nodeId: STATUS.nodeId, address: "192.0.2.7:4242" }] })
    expect(peers.state.panel).toMatchObject({ title: "Peers (1)", lines: [expect.stringMatching(/^192\.0\.2\.7:4242 +node 1111111111111111…$/)] })
    const status = feed(chatting(), { _tag: "StatusLoaded", status: { ...STATUS, peers: 0 }, show: true })
    expect(status.state.panel?.lines).toContain("network   no peers reachable; joined")
  })
})

describe("typing", () => {
  it("Tab completes commands and the names of people talked to, never the user's own", () => {
    const state = {
      ...chatting(),
      conversations: ["bob", "bobby", "carol", "alice"].map((name) => ({ conversation: user(name), unread: 0, lastAt: 0 }))
    }
    const tab = key({ _tag: "Tab" })
    expect(feed(state, ...typed("/ch", false), tab).state.input).toEqual({ text: "/chat ", cursor: 6 })
    expect(feed(state, ...typed("/chat C", false), tab).state.input.text).toBe("/chat carol ")
    const ambiguous = feed(state, ...typed("/chat b", false), tab)
    expect(ambiguous.state.input.text).toBe("/chat bob")
    expect(ambiguous.state.notice?.text).toBe("bob  bobby")
    expect(feed(state, ...typed("/chat al", false), tab).state.notice?.text).toBe('no name or command starts with "al"')
    expect(feed(state, ...typed("/whois x", false), tab).state.input.text).toBe("/whois x")
  })

  it("edits like a line editor, by whole characters", () => {
    const left = key({ _tag: "Left" })
    const back = key({ _tag: "Backspace" })
    const edited = feed(chatting(), ...typed("hi 👋 there", false), left, left, left, left, left, left, back, ...typed("!", false))
    expect(edited.state.input).toEqual({ text: "hi ! there", cursor: 4 })
    expect(feed(edited.state, key({ _tag: "Ctrl", letter: "w" })).state.input).toEqual({ text: "hi  there", cursor: 3 })
    expect(feed(edited.state, key({ _tag: "Ctrl", letter: "u" })).state.input).toEqual({ text: "", cursor: 0 })
    expect(feed(edited.state, key({ _tag: "End" })).state.input.cursor).toBe(10)
    // Pasted line breaks and control characters do not reach the message.
    expect(feed(chatting(), ...typed("a\u0007b", false)).state.input.text).toBe("ab")
  })

  it("steps over and deletes whole grapheme clusters, never a code point of an emoji or an accented letter", () => {
    const left = key({ _tag: "Left" })
    const right = key({ _tag: "Right" })
    const back = key({ _tag: "Backspace" })
    // 👍🏽 is two code points (four UTF-16 units), 👨‍👩‍👧 five code points joined by ZWJs (eight units),
    // "é" written as e + a combining accent two code points: each is one character on screen.
    const text = "a👍🏽b👨‍👩‍👧e\u0301"
    const typedIn = feed(chatting(), ...typed(text, false)).state
    const positions = [typedIn.input.cursor]
    let state = typedIn
    for (let i = 0; i < 6; i++) {
      state = feed(state, left).state
      positions.push(state.input.cursor)
    }
    expect(positions).toEqual([text.length, text.length - 2, text.length - 10, 5, 1, 0, 0])
    expect(feed(state, right, right).state.input.cursor).toBe(5)
    // Backspace removes the family whole, then the accented letter's pair whole.
    expect(feed(typedIn, left, back).state.input.text).toBe("a👍🏽be\u0301")
    expect(feed(typedIn, back).state.input.text).toBe("a👍🏽b👨‍👩‍👧")
    // A paste cut at the input's limit leaves a cluster out whole, not its first code points.
    const full = feed(chatting(), ...typed(`${"y".repeat(MAX_INPUT - 3)}👍🏽`, false)).state
    expect(full.input.text).toBe("y".repeat(MAX_INPUT - 3))
    expect(full.notice?.text).toContain("4 more were not taken")
  })

  it("several keys read at once are each key in turn", () => {
    expect(keyPressesOf("new\r", NO_KEY)).toEqual([{ _tag: "Text", text: "new" }, { _tag: "Enter" }])
    expect(keyPressesOf("\u0015/chat bob\r\nhi", NO_KEY)).toEqual([
      { _tag: "Ctrl", letter: "u" },
      { _tag: "Text", text: "/chat bob" },
      { _tag: "Enter" },
      { _tag: "Text", text: "hi" }
    ])
    expect(keyPressesOf("ab\u007f\t", NO_KEY)).toEqual([{ _tag: "Text", text: "ab" }, { _tag: "Backspace" }, { _tag: "Tab" }])
    expect(keyPressesOf("", { ...NO_KEY, delete: true })).toEqual([{ _tag: "Backspace" }])
    expect(keyPressesOf("n", { ...NO_KEY, ctrl: true })).toEqual([{ _tag: "Ctrl", letter: "n" }])
    expect(keyPressesOf("", { ...NO_KEY, pageUp: true })).toEqual([{ _tag: "PageUp" }])
    expect(keyPressesOf("x", { ...NO_KEY, meta: true })).toEqual([])
  })
})

describe("scrolling", () => {
  const page = (from: number, count: number) => Array.from({ length: count }, (_, i) => entry("bob", from + i, `message ${from + i}`))

  it("PageUp scrolls back, asks for the page before the oldest message at the top, and stops when there is none", () => {
    const latest = page(101, HISTORY_PAGE)
    const open = feed(
      { ...chatting(), conversations: [{ conversation: user("bob"), unread: 0, lastAt: 0 }] },
      ...typed("/chat bob"),
      { _tag: "HistoryLoaded", name: user("bob"), entries: latest, older: false, limit: HISTORY_PAGE }
    ).state
    expect(open.open?.hasOlder).toBe(true)
    const up = key({ _tag: "PageUp" })
    const first = feed(open, up)
    expect(first.cmds).toEqual([])
    expect(first.state.open?.scroll).toBeGreaterThan(0)

    let scrolled = first
    for (let i = 0; i < 20 && scrolled.cmds.length === 0; i++) scrolled = feed(scrolled.state, up)
    const oldest = latest[0]
    expect(scrolled.cmds).toEqual([{
      _tag: "LoadHistory",
      name: "bob",
      before: { sentAt: oldest?.sentAt, sequence: 101, id: messageIdOf("bob-in-101") },
      limit: HISTORY_PAGE
    }])
    expect(scrolled.state.open?.loadingOlder).toBe(true)
    // Only one request at a time.
    expect(feed(scrolled.state, up).cmds).toEqual([])

    const older = feed(scrolled.state, { _tag: "HistoryLoaded", name: user("bob"), entries: page(51, 50), older: true, limit: HISTORY_PAGE })
    expect(older.state.open?.messages).toHaveLength(150)
    expect(older.state.open).toMatchObject({ hasOlder: false, loadingOlder: false })
    // The view stays where it was: the scroll offset counts from the newest message.
    expect(older.state.open?.scroll).toBe(scrolled.state.open?.scroll)
    let top = older
    for (let i = 0; i < 40; i++) top = feed(top.state, up)
    expect(top.cmds).toEqual([])

    const down = feed(top.state, ...Array.from({ length: 100 }, () => key({ _tag: "PageDown" })))
    expect(down.state.open?.scroll).toBe(0)
  })

  it("a reader scrolled up keeps their place when a message arrives", () => {
    const open = feed(
      { ...chatting(), conversations: [{ conversation: user("bob"), unread: 0, lastAt: 0 }] },
      ...typed("/chat bob"),
      { _tag: "HistoryLoaded", name: user("bob"), entries: page(1, 60), older: false, limit: HISTORY_PAGE },
      key({ _tag: "PageUp" })
    ).state
    const before = open.open?.scroll ?? 0
    const after = feed(open, { _tag: "Event", event: { _tag: "Received", entry: entry("bob", 61, "new") }, at: 0 })
    expect(after.state.open?.scroll).toBe(before + 1)
  })
})
