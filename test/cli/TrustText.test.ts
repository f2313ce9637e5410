/**
 * What `peerchat id`, `verify`, `trust`, `contacts`, `whois` and `status`
 * print for people: `name@fingerprint` to share, both parties and the safety
 * number with what to do about it, what a trust changed (old pin to new),
 * the pinned contacts, and the fingerprint and warnings of a whois answer.
 */
import { describe, expect, it } from "@effect/vitest"
import type { PinnedContact, VerifyAnswer } from "../../src/chat/ChatControl.js"
import { contactsLines, identityLines, safetyNumberRows, trustSummary, verificationLines } from "../../src/cli/chat/TrustText.js"
import { describeStatus, describeUser } from "../../src/cli/Commands.js"
import type { PublicKeyHex } from "../../src/core/UserRecord.js"
import { STATUS, user } from "./chatFixtures.js"

const ALICE = "1a2b-3c4d-5e6f-7a8b-9c0d-1e2f-3a4b-5c6d"
const BOB = "0000-1111-2222-3333-4444-5555-6666-7777"
const BOB_NEW = "8888-9999-aaaa-bbbb-cccc-dddd-eeee-ffff"
const NUMBER = "12345 67890 11111 22222 33333 44444 55555 66666 77777 88888 99999 00000"
const MARCH_FIRST = new Date(2025, 2, 1, 14, 30).getTime()

const pin = (fingerprint: string, source: PinnedContact["source"], signingKey = "b0".repeat(32)): PinnedContact => ({
  username: user("bob"),
  fingerprint,
  signingKey: signingKey as PublicKeyHex,
  pinnedAt: MARCH_FIRST,
  source
})

describe("peerchat id", () => {
  it("prints name@fingerprint, or the fingerprint and how to get a name", () => {
    expect(identityLines({ username: user("alice"), fingerprint: ALICE, nameRef: `alice@${ALICE}` })).toEqual([`alice@${ALICE}`])
    const unregistered = identityLines({ username: null, fingerprint: ALICE, nameRef: null })
    expect(unregistered[0]).toBe(`fingerprint ${ALICE}`)
    expect(unregistered[1]).toContain("peerchat register NAME")
    expect(unregistered[1]).toContain(`NAME@${ALICE}`)
  })
})

describe("peerchat verify", () => {
  const answer: VerifyAnswer = {
    you: { username: user("alice"), fingerprint: ALICE },
    contact: { username: user("bob"), fingerprint: BOB },
    safetyNumber: NUMBER,
    pin: pin(BOB, "first-use"),
    confirmed: false
  }

  it("shows both parties, the safety number in two rows, and what to compare and how to record it", () => {
    expect(safetyNumberRows(NUMBER)).toEqual(["12345 67890 11111 22222 33333 44444", "55555 66666 77777 88888 99999 00000"])
    const lines = verificationLines(answer, "peerchat verify bob --confirm")
    expect(lines.slice(0, 6)).toEqual([
      `you    alice@${ALICE}`,
      `bob    bob@${BOB}  (pinned on first use, since 2025-03-01 14:30:00)`,
      "",
      "safety number:",
      "    12345 67890 11111 22222 33333 44444",
      "    55555 66666 77777 88888 99999 00000"
    ])
    const advice = lines.join("\n")
    expect(advice).toContain("Compare these 60 digits with bob in person or over a channel you trust")
    expect(advice).toContain("If they match, record it: peerchat verify bob --confirm")
    expect(advice).toContain("do not trust this key")
  })

  it("with --confirm, says the key is recorded as verified", () => {
    const lines = verificationLines({ ...answer, confirmed: true, pin: pin(BOB, "verified") }, "peerchat verify bob --confirm")
    expect(lines[1]).toContain("(verified, since 2025-03-01 14:30:00)")
    expect(lines[lines.length - 1]).toBe(`Recorded: bob@${BOB} is verified (you confirmed these 60 digits match bob's).`)
  })
})

describe("peerchat trust", () => {
  it("says what changed: old pin to new", () => {
    expect(trustSummary({ pin: pin(BOB_NEW, "trusted", "b1".repeat(32)), previous: pin(BOB, "verified") })).toBe(
      `now trusting bob@${BOB_NEW}, in place of bob@${BOB} (verified, since 2025-03-01 14:30:00); messages go to the new key from now on`
    )
    expect(trustSummary({ pin: pin(BOB, "trusted"), previous: null })).toBe(`now trusting bob@${BOB} (no key was pinned for bob before)`)
    expect(trustSummary({ pin: pin(BOB, "trusted"), previous: pin(BOB, "first-use") })).toContain(
      "it was already the pinned key (pinned on first use, since 2025-03-01 14:30:00)"
    )
  })
})

describe("peerchat contacts", () => {
  it("lists name, fingerprint, how and since when, or explains pins when there are none", () => {
    const carol: PinnedContact = { ...pin(BOB_NEW, "trusted"), username: user("carolyn") }
    expect(contactsLines([pin(BOB, "verified"), carol])).toEqual([
      `bob      ${BOB}  verified            since 2025-03-01 14:30:00`,
      `carolyn  ${BOB_NEW}  trusted on purpose  since 2025-03-01 14:30:00`
    ])
    expect(contactsLines([])[0]).toMatch(/^no contacts pinned yet/)
  })
})

describe("whois, register and status", () => {
  const answer = {
    username: user("bob"),
    fingerprint: BOB,
    nodeId: STATUS.nodeId,
    address: "192.0.2.7:4242",
    addresses: ["192.0.2.7:4242"],
    sequence: 3,
    expiresAt: 0
  }

  it("whois shows the fingerprint line with name@fingerprint, and any warning", () => {
    expect(describeUser(answer).split("\n")).toEqual([
      `bob is at 192.0.2.7:4242 (node ${STATUS.nodeId})`,
      `fingerprint ${BOB}  (exactly this key: bob@${BOB})`
    ])
    expect(describeUser({ ...answer, warning: "only claimed here so far" }).split("\n")[2]).toBe("warning: only claimed here so far")
  })

  it("status shows the warning about the user's own name when there is one", () => {
    expect(describeStatus(STATUS)).not.toContain("warning")
    expect(describeStatus({ ...STATUS, nameWarning: "another key claims alice" }).split("\n").pop()).toBe(
      "warning   another key claims alice"
    )
  })
})
