/**
 * What the terminal chat draws, as text, without a terminal: the screen is
 * always exactly the terminal's size whatever it holds; the status bar, the
 * conversation list with unread counts, messages with times, senders and
 * statuses; text from other users cannot carry control sequences; long
 * messages wrap; and the text helpers measure and wrap by terminal columns.
 */
import { describe, expect, it } from "@effect/vitest"
import { HISTORY_PAGE, initialState } from "../../src/cli/chat/ChatState.js"
import { networkHealth, screenText, view } from "../../src/cli/chat/ChatView.js"
import { formatLocalTime, printableText } from "../../src/cli/chat/PlainText.js"
import { displayLines, displayWidth, fixWidth, wrapLine } from "../../src/cli/chat/Text.js"
import { at, chatting, entry, feed, key, STATUS, typed, user } from "./chatFixtures.js"

const bobConversation = (entries: ReadonlyArray<ReturnType<typeof entry>>, size = { columns: 100, rows: 30 }) =>
  feed(
    { ...chatting(), size, conversations: [{ conversation: user("bob"), unread: 0, lastAt: 0 }, { conversation: user("carol"), unread: 3, lastAt: 0 }] },
    ...typed("/chat bob"),
    { _tag: "HistoryLoaded", name: user("bob"), entries, older: false, limit: HISTORY_PAGE }
  ).state

const text = (state: Parameters<typeof view>[0]) => screenText(view(state))

describe("the screen", () => {
  it("is exactly the terminal's size in every phase and size", () => {
    const states = [
      initialState({ size: { columns: 80, rows: 24 }, phase: { _tag: "ChooseNetwork" } }),
      initialState({ size: { columns: 80, rows: 24 }, phase: { _tag: "Fatal", message: "x".repeat(500) } }),
      chatting(),
      bobConversation([entry("bob", 1, "🎉 宴会 ".repeat(40)), entry("bob", 2, "hi", { direction: "out", status: "delivered" })]),
      bobConversation([entry("bob", 1, "hi")], { columns: 40, rows: 10 }),
      feed(chatting(), ...typed("/help")).state,
      feed(chatting(), ...typed(`${"x".repeat(300)}宴end`, false)).state,
      { ...chatting(), size: { columns: 20, rows: 5 } }
    ]
    for (const state of states) {
      const screen = text(state)
      expect(screen).toHaveLength(state.size.rows)
      for (const row of screen) expect(displayWidth(row)).toBe(state.size.columns)
    }
    expect(text({ ...chatting(), size: { columns: 30, rows: 5 } }).join(" ")).toMatch(/Please enlarge the terminal +to at least 40×10/)
    // The cursor covers a whole cluster: 👍🏽 is drawn whole under it, not its first code point.
    const thumbs = feed(chatting(), ...typed("ok 👍🏽 go", false), key({ _tag: "Home" }), key({ _tag: "Right" }), key({ _tag: "Right" }), key({ _tag: "Right" })).state
    expect(thumbs.input.cursor).toBe(3)
    const inputRow = view(thumbs).at(-1) ?? []
    expect(inputRow.find((part) => part.style === "cursor")?.text).toBe("👍🏽")
    // Long input scrolls sideways so the end, where the cursor is, stays visible.
    const long = text(feed(chatting(), ...typed(`${"x".repeat(300)}宴end`, false)).state)
    expect(long[long.length - 1]).toMatch(/^> x+宴end +$/)
  })

  it("shows the user, the address to share, the peers and the network's health", () => {
    expect(text(chatting())[0]).toMatch(/peerchat +│ alice │ 127\.0\.0\.1:4242 │ 2 peers │ network ok/)
    const lonely = { ...chatting(), node: { status: { ...STATUS, peers: 0 }, error: null, live: true } }
    expect(text(lonely)[0]).toMatch(/0 peers │ no peers reachable/)
    const down = { ...chatting(), node: { status: STATUS, error: "refused", live: false } }
    expect(text(down)[0]).toMatch(/node unreachable/)
    expect(text({ ...chatting(), node: { status: STATUS, error: null, live: false } })[0]).toMatch(/reconnecting…/)
    expect(networkHealth({ _tag: "Standalone" }, 0).text).toBe("new network, waiting for friends")
    expect(networkHealth({ _tag: "Joining", attempts: 3, lastError: "refused", nextAttemptAt: null }, 0)).toEqual({
      text: "no peers reachable (attempt 3)",
      level: "bad"
    })
  })

  it("lists conversations with unread counts beside the open one, whose messages show time, sender and status", () => {
    const state = bobConversation([
      entry("bob", 1, "hi alice"),
      entry("bob", 2, "hello bob", { direction: "out", status: "delivered" }),
      entry("bob", 3, "are you there?", { direction: "out", status: "stored-offline" }),
      entry("bob", 4, "later", { direction: "out", status: "queued" })
    ])
    const screen = text(state).join("\n")
    expect(screen).toMatch(/Conversations +│ bob/)
    expect(screen).toMatch(/^ bob +│/m)
    expect(screen).toMatch(/ carol \(3\)/)
    expect(screen).toContain("── 2025-03-01 ──")
    expect(screen).toContain("14:31 bob: hi alice")
    expect(screen).toContain("14:32 alice: hello bob [delivered]")
    expect(screen).toContain("14:33 alice: are you there? [stored offline]")
    expect(screen).toContain("14:34 alice: later [queued]")
    expect(text(state)[state.size.rows - 1]).toMatch(/^bob> /)
    // A message on its way to the node.
    expect(text(feed(state, ...typed("on my way")).state).join("\n")).toContain("--:-- alice: on my way [sending…]")
  })

  it("a new day gets a separator", () => {
    const screen = text(bobConversation([entry("bob", 1, "late"), entry("bob", 2, "early", { sentAt: at(24 * 60) })])).join("\n")
    expect(screen).toContain("── 2025-03-01 ──")
    expect(screen).toContain("── 2025-03-02 ──")
  })

  it("never lets a peer's text reach the terminal as control sequences", () => {
    const hostile = "hi\u001b[2J\u001b]0;owned\u0007 \u009b31m \u202eevil\u202c\nsecond line"
    const rows = text(bobConversation([entry("bob", 1, hostile)]))
    for (const row of rows) expect(row).not.toMatch(/\p{Cc}|[\u202a-\u202e]/u)
    const screen = rows.join("\n")
    expect(screen).toContain("14:31 bob: hi\\u001b[2J\\u001b]0;owned\\u0007 \\u009b31m \\u202eevil\\u202c")
    expect(screen).toMatch(/\n +│ {6}second line/)
    // A hostile name (from the list) is escaped too.
    const named = { ...chatting(), conversations: [{ conversation: user("x\u001by"), unread: 1, lastAt: 0 }] }
    expect(text(named).join("\n")).toContain("x\\u001by (1)")
  })

  it("wraps long messages under the time column and scrolls by rows", () => {
    const long = "word ".repeat(60).trim()
    const state = bobConversation([entry("bob", 1, long), ...Array.from({ length: 40 }, (_, i) => entry("bob", i + 2, `line ${i + 2}`))])
    const mainOf = (row: string) => row.slice(row.indexOf("│") + 1)
    expect(text(state).map(mainOf).join("\n")).toContain("15:11 bob: line 41")
    const scrolled = feed(state, ...Array.from({ length: 10 }, () => ({ _tag: "Key", key: { _tag: "PageUp" } }) as const)).state
    const rows = text(scrolled).map(mainOf)
    const first = rows.findIndex((row) => row.includes("bob: word"))
    expect(first).toBeGreaterThan(0)
    expect(rows[first + 1]).toMatch(/^ {6}word word/)
    expect(rows[1]).toContain("PgDn for newer")
    for (const row of rows) expect(displayWidth(row)).toBeLessThanOrEqual(scrolled.size.columns)
    expect(text(scrolled)[2]).not.toContain("line 41")
  })

  it("walks a first-time user through the setup", () => {
    const network = text(initialState({ size: { columns: 100, rows: 30 }, phase: { _tag: "ChooseNetwork" } })).join("\n")
    expect(network).toContain("To join a friend's network, type the address of their node (host:port)")
    expect(network).toContain("type  new  and press Enter")
    expect(network).toMatch(/^network> +$/m)
    const name = {
      ...initialState({ size: { columns: 100, rows: 30 }, phase: { _tag: "ChooseName", checking: user("bob"), waitingForNetwork: false } }),
      node: { status: { ...STATUS, username: null }, error: null, live: false }
    }
    const screen = text(name).join("\n")
    expect(screen).toContain("Your node is at 127.0.0.1:4242: a friend joins your network through this address.")
    expect(screen).toContain('Checking whether "bob" is free…')
  })
})

describe("terminal text", () => {
  it("measures, cuts and wraps by columns", () => {
    expect(displayWidth("abc")).toBe(3)
    expect(displayWidth("宴会")).toBe(4)
    expect(displayWidth("e\u0301")).toBe(1)
    expect(fixWidth("hello world", 8)).toBe("hello w…")
    expect(fixWidth("hi", 4)).toBe("hi  ")
    expect(fixWidth("宴会宴会", 5)).toBe("宴会…")
    expect(wrapLine("the quick brown fox jumps", 10)).toEqual(["the quick", "brown fox", "jumps"])
    expect(wrapLine("abcdefghijkl", 5)).toEqual(["abcde", "fghij", "kl"])
    expect(wrapLine("宴会宴会", 3)).toEqual(["宴", "会", "宴", "会"])
    expect(wrapLine("宴", 1)).toEqual(["宴"])
    expect(wrapLine("", 5)).toEqual([""])
  })

  it("escapes control characters and splits lines", () => {
    expect(printableText("a\u001b[31mb\r\nc\u0000")).toBe("a\\u001b[31mb\\r\\nc\\u0000")
    expect(displayLines("one\ntwo\r\nthree\tfour")).toEqual(["one", "two", "three    four"])
    expect(formatLocalTime(new Date(2025, 0, 2, 3, 4, 5).getTime())).toBe("2025-01-02 03:04:05")
  })
})
