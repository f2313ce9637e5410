/**
 * A panel longer than its rows (the help on a small terminal) scrolls: every
 * line can be read with ↑/↓ and PageUp/PageDown, the title says which lines
 * are shown, and the conversation keeps those keys when the panel fits.
 */
import { describe, expect, it } from "@effect/vitest"
import { COMMANDS, HISTORY_PAGE } from "../../src/cli/chat/ChatState.js"
import { panelWindow, screenText, view } from "../../src/cli/chat/ChatView.js"
import { chatting, entry, feed, key, STATUS, typed, user } from "./chatFixtures.js"

const SMALL = { columns: 40, rows: 10 }

const helpOn = (size: { readonly columns: number; readonly rows: number }) => feed({ ...chatting(), size }, ...typed("/help")).state

/** The panel's rows on screen: the lines after its title, up to the notice line. */
const panelText = (state: Parameters<typeof view>[0]): ReadonlyArray<string> => {
  const rows = screenText(view(state))
  const title = rows.findIndex((row) => row.startsWith("── Help"))
  return rows.slice(title + 1, rows.length - 2).map((row) => row.trim())
}

describe("a long panel", () => {
  it("shows every line of /help on a 40×10 terminal, a page or a line at a time", () => {
    const help = helpOn(SMALL)
    const { maxFirst, room, total } = panelWindow(help)
    expect(maxFirst).toBeGreaterThan(0)
    const rows = screenText(view(help))
    expect(rows).toHaveLength(SMALL.rows)
    expect(rows.join("\n")).not.toMatch(/… \d+ more/)
    expect(rows.find((row) => row.startsWith("── Help"))).toMatch(new RegExp(`^── Help \\(lines 1–${room} of ${total}`))

    // Paging down to the end and reading what each page shows covers every line of the help.
    const seen = new Set<string>()
    let state = help
    for (let page = 0; page < total; page++) {
      for (const line of panelText(state)) seen.add(line)
      state = feed(state, key({ _tag: "PageDown" })).state
    }
    expect(panelWindow(state).first).toBe(maxFirst)
    const everyWord = COMMANDS.map(([, usage]) => usage.split(" ")[0] ?? "")
    const shown = [...seen].join(" ")
    for (const command of everyWord) expect(shown).toContain(command)
    expect(shown).toContain("Ctrl-C quits")

    // ↑ goes back a line, PageUp a page, and neither goes past the top.
    const up = feed(state, key({ _tag: "Up" })).state
    expect(panelWindow(up).first).toBe(maxFirst - 1)
    const top = feed(up, ...Array.from({ length: total }, () => key({ _tag: "PageUp" }))).state
    expect(panelWindow(top).first).toBe(0)
    expect(panelText(top)[0]).toMatch(/^\/chat NAME/)
    // Esc still closes it.
    expect(feed(top, key({ _tag: "Escape" })).state.panel).toBeNull()
  })

  it("a panel that fits leaves the scrolling keys to the conversation", () => {
    const state = feed(
      { ...chatting(), conversations: [{ conversation: user("bob"), unread: 0, lastAt: 0 }] },
      ...typed("/chat bob"),
      {
        _tag: "HistoryLoaded",
        name: user("bob"),
        entries: Array.from({ length: 60 }, (_, i) => entry("bob", i + 1, `message ${i + 1}`)),
        older: false,
        limit: HISTORY_PAGE
      },
      { _tag: "StatusLoaded", status: STATUS, show: true }
    ).state
    expect(panelWindow(state).maxFirst).toBe(0)
    expect(screenText(view(state)).find((row) => row.startsWith("── Status"))).toMatch(/^── Status \(Esc closes\) ─+$/)
    const scrolled = feed(state, key({ _tag: "PageUp" })).state
    expect(scrolled.open?.scroll).toBeGreaterThan(0)
    expect(scrolled.panel).toEqual(state.panel)
  })

  it("a resize keeps the shown lines within the panel", () => {
    const bottom = feed(helpOn(SMALL), ...Array.from({ length: 30 }, () => key({ _tag: "Down" }))).state
    const larger = feed(bottom, { _tag: "Resize", size: { columns: 200, rows: 50 } }).state
    expect(panelWindow(larger)).toMatchObject({ first: 0, maxFirst: 0 })
    expect(screenText(view(larger))).toHaveLength(50)
  })
})
