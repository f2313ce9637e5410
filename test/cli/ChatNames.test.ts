/**
 * Names and keys in the terminal chat, without a terminal: `/chat` and
 * `/whois` with `name@fingerprint` (a conversation opened for one key sends
 * to exactly that key), `/id` and `/verify`, the distinct notices for a user
 * not found, a node without peers, a name several keys claim and a contact
 * whose key changed (with the panels that explain the last two), warnings
 * about the user's own name, and how the control client's errors become the
 * chat's failures (`failureOf`).
 */
import { describe, expect, it } from "@effect/vitest"
import type { VerifyAnswer } from "../../src/chat/ChatControl.js"
import { ChatFailure, failureOf } from "../../src/cli/chat/ChatIO.js"
import { type ChatState, HISTORY_PAGE, initialState, NOT_CONNECTED_TEXT } from "../../src/cli/chat/ChatState.js"
import { screenText, view } from "../../src/cli/chat/ChatView.js"
import { displayWidth } from "../../src/cli/chat/Text.js"
import { fingerprintOf, formatFingerprint, KeyChanged } from "../../src/core/Pinning.js"
import type { PublicKeyHex } from "../../src/core/UserRecord.js"
import { NameConflict, NotConnected, UserNotFound, type WhoisAnswer } from "../../src/node/Control.js"
import { chatting, feed, key, STATUS, typed, user } from "./chatFixtures.js"

const BOB_KEY = "b0".repeat(32) as PublicKeyHex
const BOB_NEW_KEY = "b1".repeat(32) as PublicKeyHex
const BOB = formatFingerprint(fingerprintOf(BOB_KEY))
const BOB_NEW = formatFingerprint(fingerprintOf(BOB_NEW_KEY))
const ALICE = "1a2b-3c4d-5e6f-7a8b-9c0d-1e2f-3a4b-5c6d"

const bobAnswer: WhoisAnswer = {
  username: user("bob"),
  fingerprint: BOB,
  nodeId: STATUS.nodeId.replace(/1/g, "2") as typeof STATUS.nodeId,
  address: "192.0.2.7:4242",
  addresses: ["192.0.2.7:4242"],
  sequence: 3,
  expiresAt: 0
}

const conflict = {
  _tag: "NameConflict" as const,
  username: "bob",
  choices: [
    { ref: `bob@${BOB}`, address: "192.0.2.7:4242", holders: 12 },
    { ref: `bob@${BOB_NEW}`, address: "192.0.2.8:4242", holders: 8 }
  ]
}

const keyChanged = { _tag: "KeyChanged" as const, username: "bob", pinned: BOB, found: BOB_NEW }

/** The chat with the conversation with bob open (by name) and loaded. */
const withBob = (): ChatState =>
  feed(
    { ...chatting(), conversations: [{ conversation: user("bob"), unread: 0, lastAt: 0 }] },
    ...typed("/chat bob"),
    { _tag: "HistoryLoaded", name: user("bob"), entries: [], older: false, limit: HISTORY_PAGE }
  ).state

const screen = (state: ChatState) => screenText(view(state)).join("\n")

describe("name@fingerprint", () => {
  it("/chat name@fingerprint looks the key up and sends to exactly that key", () => {
    const asked = feed(withBob(), ...typed(`/chat BOB@${BOB.replace(/-/g, "").toUpperCase()}`))
    // Even a listed conversation is looked up when a key is named, in the normal form.
    expect(asked.cmds).toEqual([{ _tag: "Whois", name: `bob@${BOB}`, open: true }])
    expect(asked.state.notice?.text).toBe(`looking up bob@${BOB}…`)

    const opened = feed(asked.state, { _tag: "WhoisAnswered", answer: bobAnswer, open: true, exact: true })
    expect(opened.state.open).toMatchObject({ name: "bob", ref: `bob@${BOB}` })
    expect(feed(opened.state, ...typed("only you")).cmds).toEqual([{ _tag: "Send", localId: 1, to: `bob@${BOB}`, text: "only you" }])
    // The title says which key the conversation is for; the sent message still lands in bob's conversation.
    expect(screen(opened.state)).toContain(`│ bob@${BOB}`)
    // Opening it again by name keeps the key.
    expect(feed(opened.state, ...typed("/chat bob")).state.open?.ref).toBe(`bob@${BOB}`)
  })

  it("a conversation opened by name sends to the name, and a bad fingerprint is refused before asking", () => {
    expect(feed(withBob(), ...typed("hi")).cmds).toEqual([{ _tag: "Send", localId: 1, to: "bob", text: "hi" }])
    const bad = feed(withBob(), ...typed("/chat bob@12"))
    expect(bad.cmds).toEqual([])
    expect(bad.state.notice).toMatchObject({ tone: "error", text: expect.stringContaining("does not have 32 hex digits") })
  })

  it("/whois name@fingerprint shows the key, and the whois panel shows the fingerprint and any warning", () => {
    expect(feed(chatting(), ...typed(`/whois bob@${BOB}`)).cmds).toEqual([{ _tag: "Whois", name: `bob@${BOB}`, open: false }])
    const panel = feed(chatting(), {
      _tag: "WhoisAnswered",
      answer: { ...bobAnswer, warning: "another key claims bob too" },
      open: false
    }).state.panel
    expect(panel?.lines).toEqual(expect.arrayContaining([
      `key       ${BOB}   (exactly this key: bob@${BOB})`,
      "warning   another key claims bob too"
    ]))
  })

  it("peerchat chat name@fingerprint opens the conversation for that key", () => {
    const state = initialState({ size: { columns: 100, rows: 30 }, phase: { _tag: "Starting", message: "" }, openOnStart: `bob@${BOB}` })
    const up = feed(state, { _tag: "Connected", status: STATUS, now: 0 })
    expect(up.state.open).toMatchObject({ name: "bob", ref: `bob@${BOB}` })
  })
})

describe("failures the chat explains", () => {
  it("not found, not connected, a conflict and a changed key each get their own notice", () => {
    const sending = feed(withBob(), ...typed("hello?"))
    const fail = (failure: { readonly message: string; readonly kind?: ChatFailure["kind"]; readonly detail?: ChatFailure["detail"] }) =>
      feed(sending.state, { _tag: "SendFailed", localId: 1, text: "hello?", ...failure }).state

    const notFound = fail({ kind: "UserNotFound", message: 'no user named "bob" was found in the network' })
    expect(notFound.notice).toEqual({ tone: "error", text: 'not sent: no user named "bob" was found in the network' })

    const lonely = fail({ kind: "NotConnected", message: new NotConnected({ detail: "no peer answered" }).message })
    expect(lonely.notice).toEqual({ tone: "error", text: `not sent: ${NOT_CONNECTED_TEXT}` })
    expect(lonely.notice?.text).toMatch(/^not sent: your node has no peers yet/)

    const contested = fail({ kind: "NameConflict", message: "conflict", detail: conflict })
    expect(contested.notice).toEqual({
      tone: "error",
      text: `not sent: "bob" is claimed by 2 different keys: bob@${BOB} or bob@${BOB_NEW}`
    })
    expect(contested.panel?.title).toBe('"bob" is claimed by 2 keys')
    expect(contested.panel?.lines.join("\n")).toMatch(new RegExp(`bob@${BOB} +at 192\\.0\\.2\\.7:4242, held by 12`))
    expect(contested.panel?.lines.join("\n")).toContain("/chat bob@FINGERPRINT")

    const changed = fail({ kind: "KeyChanged", message: "changed", detail: keyChanged })
    expect(changed.notice?.tone).toBe("warning")
    expect(changed.notice?.text).toContain("not sent: bob's key has changed")
    expect(changed.panel?.lines).toEqual(expect.arrayContaining([
      `pinned  bob@${BOB}`,
      `now     bob@${BOB_NEW}`,
      `only if they match, accept the new key: peerchat trust bob --key ${BOB_NEW}`
    ]))
    expect(changed.panel?.lines.join("\n")).toContain("/verify bob")

    // The four notices are all different, and every one gives the text back.
    const texts = [notFound, lonely, contested, changed].map((state) => state.notice?.text)
    expect(new Set(texts).size).toBe(4)
    for (const state of [notFound, lonely, contested, changed]) expect(state.input.text).toBe("hello?")
  })

  it("a conflict found by /chat lists the choices; a wrong key says which key the name has", () => {
    const chosen = feed(chatting(), ...typed("/chat bob"), { _tag: "Failed", action: "whois", kind: "NameConflict", message: "x", detail: conflict })
    expect(chosen.state.open).toBeNull()
    expect(chosen.state.panel?.lines.slice(0, 2)).toEqual([
      expect.stringMatching(new RegExp(`^bob@${BOB} `)),
      expect.stringMatching(new RegExp(`^bob@${BOB_NEW} `))
    ])
    const mismatch = feed(chatting(), {
      _tag: "Failed",
      action: "whois",
      kind: "FingerprintMismatch",
      message: "x",
      detail: { _tag: "FingerprintMismatch", username: "bob", requested: BOB_NEW, actual: BOB }
    })
    expect(mismatch.state.notice?.text).toBe(`bob@${BOB_NEW} is not the key bob has now (bob@${BOB}): check the fingerprint with bob`)
  })

  it("a node without peers cannot check a name during the setup, and says so", () => {
    const start = feed(
      initialState({ size: { columns: 100, rows: 30 }, phase: { _tag: "ChooseNetwork" } }),
      ...typed("new"),
      { _tag: "Connected", status: { ...STATUS, username: null, bootstrap: { _tag: "Standalone" } }, now: 0 },
      ...typed("alice")
    )
    const failed = feed(start.state, { _tag: "Failed", action: "check", kind: "NotConnected", message: "x" })
    expect(failed.state.phase).toEqual({ _tag: "ChooseName", checking: null, waitingForNetwork: false })
    expect(failed.state.notice?.text).toBe(NOT_CONNECTED_TEXT)
  })

  it("the panels that explain fit the screen: long lines wrap, nothing runs off", () => {
    const changed = feed(withBob(), ...typed("hello?"), {
      _tag: "SendFailed",
      localId: 1,
      text: "hello?",
      kind: "KeyChanged",
      message: "changed",
      detail: keyChanged
    }).state
    for (const columns of [40, 80, 120]) {
      const state = { ...changed, size: { columns, rows: 30 } }
      const rows = screenText(view(state))
      expect(rows).toHaveLength(30)
      for (const row of rows) expect(displayWidth(row)).toBe(columns)
      // On a usual terminal the whole explanation shows, the command to accept the key included (wrapped, not cut).
      if (columns >= 80) {
        expect(rows.join("\n")).not.toMatch(/… \d+ more/)
        expect(rows.map((row) => row.trim()).join(" ")).toContain(`--key ${BOB_NEW}`)
      }
    }
  })
})

describe("/id and /verify", () => {
  const verification: VerifyAnswer = {
    you: { username: user("alice"), fingerprint: ALICE },
    contact: { username: user("bob"), fingerprint: BOB },
    safetyNumber: "12345 67890 11111 22222 33333 44444 55555 66666 77777 88888 99999 00000",
    pin: { username: user("bob"), fingerprint: BOB, signingKey: BOB_KEY, pinnedAt: new Date(2025, 2, 1, 14, 30).getTime(), source: "first-use" },
    confirmed: false
  }

  it("are commands with help, usage and their own panels", () => {
    const help = feed(chatting(), ...typed("/help")).state.panel?.lines.join("\n")
    expect(help).toContain("/verify NAME")
    expect(help).toContain("/id")
    expect(feed(chatting(), ...typed("/id")).cmds).toEqual([{ _tag: "LoadId" }])
    expect(feed(chatting(), ...typed("/verify Bob")).cmds).toEqual([{ _tag: "Verify", name: "bob", confirm: false }])
    expect(feed(chatting(), ...typed(`/verify bob@${BOB} --confirm`)).cmds).toEqual([{ _tag: "Verify", name: `bob@${BOB}`, confirm: true }])
    for (const [line, text] of [
      ["/verify", "usage: /verify NAME [--confirm]"],
      ["/verify bob carol", "usage: /verify NAME [--confirm]"],
      ["/verify alice", '"alice" is you: verify someone else\'s key']
    ] as const) {
      const outcome = feed(chatting(), ...typed(line))
      expect(outcome.cmds, line).toEqual([])
      expect(outcome.state.notice, line).toEqual({ tone: "error", text })
    }
    // Tab completes the new commands too.
    expect(feed(chatting(), ...typed("/ve", false), key({ _tag: "Tab" })).state.input.text).toBe("/verify ")
  })

  it("/id shows name@fingerprint", () => {
    const shown = feed(chatting(), { _tag: "IdLoaded", id: { username: user("alice"), fingerprint: ALICE, nameRef: `alice@${ALICE}` } })
    expect(shown.state.panel?.title).toBe("You")
    expect(shown.state.panel?.lines[0]).toBe(`you are  alice@${ALICE}`)
  })

  it("/verify shows both parties and the safety number, and says what to do with it", () => {
    const shown = feed(chatting(), { _tag: "Verified", answer: verification }).state
    expect(shown.panel?.title).toBe("Safety number with bob")
    expect(shown.panel?.lines).toEqual([
      `you    alice@${ALICE}`,
      `bob    bob@${BOB}  (pinned on first use, since 2025-03-01 14:30:00)`,
      "safety number  12345 67890 11111 22222 33333 44444",
      "               55555 66666 77777 88888 99999 00000",
      "Compare these 60 digits with bob in person or over a channel you trust (bob sees the same number).",
      "If they match: /verify bob --confirm. If they differ, do not trust this key."
    ])
    expect(shown.notice).toBeNull()
    const confirmed = feed(chatting(), {
      _tag: "Verified",
      answer: { ...verification, confirmed: true, pin: verification.pin === null ? null : { ...verification.pin, source: "verified" } }
    }).state
    expect(confirmed.notice).toEqual({ tone: "success", text: `bob@${BOB} is verified` })
    expect(confirmed.panel?.lines).toContain(`Recorded: bob@${BOB} is verified.`)
  })
})

describe("warnings about the user's own name", () => {
  it("register, status and the status bar show them", () => {
    const registered = feed(
      { ...chatting(), phase: { _tag: "ChooseName", checking: user("alice"), waitingForNetwork: false } },
      { _tag: "Registered", answer: { ...bobAnswer, username: user("alice"), fingerprint: ALICE, warning: "this node is the first of a new network" } }
    ).state
    expect(registered.panel?.lines).toEqual(expect.arrayContaining([
      `Others can name exactly you as alice@${ALICE} (/id shows it again).`,
      "⚠ this node is the first of a new network"
    ]))
    const contested = { ...STATUS, nameWarning: "another key claims alice" }
    const status = feed(chatting(), { _tag: "StatusLoaded", status: contested, show: true }).state
    expect(status.panel?.lines).toContain("warning   another key claims alice")
    expect(screenText(view(status))[0]).toContain("name contested: /status")
    expect(screenText(view(chatting()))[0]).not.toContain("name contested")
  })
})

describe("failureOf", () => {
  it("keeps the kinds the chat explains, with the details to choose and check with", () => {
    const notFound = failureOf(new UserNotFound({ username: user("bob") }))
    expect(notFound).toBeInstanceOf(ChatFailure)
    expect(notFound).toMatchObject({ kind: "UserNotFound", message: 'no user named "bob" was found in the network' })
    expect(notFound.detail).toBeUndefined()
    expect(failureOf(new NotConnected({ detail: "no peer answered" })).kind).toBe("NotConnected")

    const contested = failureOf(new NameConflict({
      username: user("bob"),
      claimants: [{ fingerprint: BOB, signingKey: BOB_KEY, nodeId: STATUS.nodeId, address: "192.0.2.7:4242", holders: 12 }]
    }))
    expect(contested.kind).toBe("NameConflict")
    expect(contested.detail).toEqual({
      _tag: "NameConflict",
      username: "bob",
      choices: [{ ref: `bob@${BOB}`, address: "192.0.2.7:4242", holders: 12 }]
    })

    const changed = failureOf(new KeyChanged({ username: user("bob"), pinnedFingerprint: fingerprintOf(BOB_KEY), newFingerprint: fingerprintOf(BOB_NEW_KEY) }))
    expect(changed.kind).toBe("KeyChanged")
    expect(changed.detail).toEqual(keyChanged)

    expect(failureOf({ _tag: "NodeNotRunning", message: "gone" }).message).toMatch(/^your node is not running any more/)
    expect(failureOf({ _tag: "StorageError", message: "one\ntwo" })).toMatchObject({ kind: "Other", message: "one" })
  })
})
