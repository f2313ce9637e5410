/**
 * Announcing new messages: which events ring the bell or notify the desktop
 * (`alertFor`, a pure decision), the `/bell` and `/notify` commands, and the
 * preferences file they write.
 */
import { NodeContext } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { readFile, stat, writeFile } from "node:fs/promises"
import { join } from "node:path"
import { ALERT_INTERVAL_MS, alertFor, type ChatState, HISTORY_PAGE } from "../../src/cli/chat/ChatState.js"
import { DEFAULT_PREFERENCES, PREFERENCES_FILE, readPreferences, writePreferences } from "../../src/cli/chat/Settings.js"
import type { ChatEvent } from "../../src/chat/Messenger.js"
import { scopedTempDir } from "../support/tempDir.js"
import { at, chatting, entry, feed, typed, user } from "./chatFixtures.js"

const withAlerts = (alerts: Partial<ChatState["alerts"]>): ChatState => {
  const state = chatting()
  return { ...state, alerts: { ...state.alerts, ...alerts } }
}

const received = (peer: string, sequence: number, direction: "in" | "out" = "in"): ChatEvent => ({
  _tag: "Received",
  entry: entry(peer, sequence, "hi", { direction })
})

describe("which events are announced", () => {
  it("a message someone sends, with the bell or notifications on, at most once per interval", () => {
    const bell = withAlerts({ bell: true })
    expect(alertFor(bell, received("bob", 1), at(0))).toEqual({ bell: true, desktop: false, from: user("bob") })
    // Off: nothing; on: both ways, but a desktop notification only with a notifier installed.
    expect(alertFor(chatting(), received("bob", 1), at(0))).toBeNull()
    expect(alertFor(withAlerts({ desktop: true, desktopAvailable: true }), received("bob", 1), at(0)))
      .toEqual({ bell: false, desktop: true, from: user("bob") })
    expect(alertFor(withAlerts({ bell: true, desktop: true, desktopAvailable: false }), received("bob", 1), at(0)))
      .toEqual({ bell: true, desktop: false, from: user("bob") })

    // Not the user's own messages, nor status changes.
    expect(alertFor(bell, received("bob", 1, "out"), at(0))).toBeNull()
    expect(alertFor(bell, { _tag: "StatusChanged", id: entry("bob", 1, "x").id, conversation: user("bob"), status: "delivered" }, at(0)))
      .toBeNull()
    // Not during the first-run setup.
    expect(alertFor({ ...bell, phase: { _tag: "ChooseNetwork" } }, received("bob", 1), at(0))).toBeNull()

    // A burst rings once: the next alert waits for the interval.
    const rang = feed(bell, { _tag: "Event", event: received("bob", 1), at: 1_000 })
    expect(rang.cmds).toContainEqual({ _tag: "Alert", bell: true, desktop: false, from: user("bob") })
    const burst = feed(rang.state, { _tag: "Event", event: received("carol", 1), at: 1_000 + ALERT_INTERVAL_MS - 1 })
    expect(burst.cmds.filter((cmd) => cmd._tag === "Alert")).toEqual([])
    const later = feed(burst.state, { _tag: "Event", event: received("carol", 2), at: 1_000 + ALERT_INTERVAL_MS })
    expect(later.cmds.filter((cmd) => cmd._tag === "Alert")).toHaveLength(1)
  })

  it("a message already on screen (a repeated event) is not announced again", () => {
    const open = feed(
      { ...withAlerts({ bell: true }), conversations: [{ conversation: user("bob"), unread: 0, lastAt: 0 }] },
      ...typed("/chat bob"),
      { _tag: "HistoryLoaded", name: user("bob"), entries: [entry("bob", 1, "hi")], older: false, limit: HISTORY_PAGE }
    ).state
    expect(alertFor(open, received("bob", 1), at(5))).toBeNull()
    expect(alertFor(open, received("bob", 2), at(5))).not.toBeNull()
  })
})

describe("/bell and /notify", () => {
  it("turn announcements on and off, say how they are, and are remembered", () => {
    const on = feed(chatting(), ...typed("/bell on"))
    expect(on.state.alerts.bell).toBe(true)
    expect(on.state.notice).toMatchObject({ text: "the terminal bell: on for new messages", tone: "success" })
    expect(on.cmds).toEqual([{ _tag: "SavePreferences", bell: true, desktop: false }])
    expect(feed(on.state, ...typed("/bell")).state.notice?.text).toBe("the terminal bell: on for new messages (/bell on|off)")
    const off = feed(on.state, ...typed("/bell off"))
    expect(off.state.alerts.bell).toBe(false)
    expect(off.cmds).toEqual([{ _tag: "SavePreferences", bell: false, desktop: false }])
    expect(feed(chatting(), ...typed("/bell loud")).state.notice).toMatchObject({ text: "usage: /bell on|off", tone: "error" })
  })

  it("/notify on needs a notifier, and says so without one", () => {
    const missing = feed(chatting(), ...typed("/notify on"))
    expect(missing.state.alerts.desktop).toBe(false)
    expect(missing.cmds).toEqual([])
    expect(missing.state.notice?.text).toMatch(/need notify-send, which is not installed/)
    const present = feed(withAlerts({ desktopAvailable: true }), ...typed("/notify on"))
    expect(present.state.alerts.desktop).toBe(true)
    expect(present.cmds).toEqual([{ _tag: "SavePreferences", bell: false, desktop: true }])
  })
})

describe("chat-settings.json", () => {
  it.scoped("holds the preferences owner-only; none saved means off; a damaged file is reported", () =>
    Effect.gen(function*() {
      const dir = yield* scopedTempDir("preferences")
      expect(yield* readPreferences(dir)).toEqual(DEFAULT_PREFERENCES)
      yield* writePreferences(dir, { version: 1, bell: true, desktop: false })
      expect(yield* readPreferences(dir)).toEqual({ version: 1, bell: true, desktop: false })
      const path = join(dir, PREFERENCES_FILE)
      expect((yield* Effect.promise(() => stat(path))).mode & 0o777).toBe(0o600)
      expect(JSON.parse(yield* Effect.promise(() => readFile(path, "utf8")))).toEqual({ version: 1, bell: true, desktop: false })
      yield* Effect.promise(() => writeFile(path, "{\"version\": 1, \"bell\": \"yes\"}"))
      const damaged = yield* Effect.flip(readPreferences(dir))
      expect(damaged.message).toMatch(/chat-settings\.json is damaged .*: new messages are not announced until \/bell or \/notify/)
    }).pipe(Effect.provide(NodeContext.layer)))
})
