/**
 * The words for keys, pins and safety numbers, shared by the `peerchat`
 * commands (`id`, `verify`, `trust`, `contacts`) and the terminal chat
 * (`/id`, `/verify`, and the notices of a name conflict or a changed key),
 * so both say the same thing the same way. Pure functions of the control
 * API's answers; `howToConfirm` and the like are arguments because the
 * command line and the chat spell their commands differently.
 */
import type { IdentityAnswer, PinnedContact, TrustAnswer, VerifyAnswer } from "../../chat/ChatControl.js"
import type { PinSource } from "../../core/Pinning.js"
import { formatLocalTime } from "./PlainText.js"

/** How a pin came to be, in words. */
export const describePinSource = (source: PinSource): string => {
  switch (source) {
    case "first-use":
      return "pinned on first use"
    case "verified":
      return "verified"
    case "trusted":
      return "trusted on purpose"
  }
}

/** `name@fingerprint` of a pin or a party. */
export const nameRefOf = (party: { readonly username: string; readonly fingerprint: string }): string =>
  `${party.username}@${party.fingerprint}`

/** A grouped safety number as two rows of 6 groups, easier to read aloud. */
export const safetyNumberRows = (safetyNumber: string): readonly [string, string] => {
  const groups = safetyNumber.split(" ")
  return [groups.slice(0, 6).join(" "), groups.slice(6).join(" ")]
}

/** `peerchat id`: the line to share, or the fingerprint and how to get a name. */
export const identityLines = (id: IdentityAnswer): ReadonlyArray<string> =>
  id.nameRef === null
    ? [
      `fingerprint ${id.fingerprint}`,
      "no name registered yet: claim one with `peerchat register NAME`; others can then name exactly you as " +
      `NAME@${id.fingerprint}`
    ]
    : [id.nameRef]

/** What a pin says about the contact: its source and since when (local time). */
const pinNote = (pin: PinnedContact | null): string =>
  pin === null ? "not pinned yet" : `${describePinSource(pin.source)}, since ${formatLocalTime(pin.pinnedAt)}`

/**
 * `verify`: both parties, the safety number, and what to do with it.
 * `confirmCommand` is how to record a match (`peerchat verify bob --confirm`
 * on the command line, `/verify bob --confirm` in the chat).
 */
export const verificationLines = (answer: VerifyAnswer, confirmCommand: string): ReadonlyArray<string> => {
  const contact = answer.contact.username
  const width = Math.max(3, answer.you.username.length, contact.length)
  const [first, second] = safetyNumberRows(answer.safetyNumber)
  return [
    `${"you".padEnd(width)}  ${nameRefOf(answer.you)}`,
    `${contact.padEnd(width)}  ${nameRefOf(answer.contact)}  (${pinNote(answer.pin)})`,
    "",
    "safety number:",
    `    ${first}`,
    `    ${second}`,
    "",
    ...(answer.confirmed
      ? [`Recorded: ${nameRefOf(answer.contact)} is verified (you confirmed these 60 digits match ${contact}'s).`]
      : [
        `Compare these 60 digits with ${contact} in person or over a channel you trust (a call, not a message here);`,
        `${contact} sees the same number with your name. If they match, record it: ${confirmCommand}`,
        `If they differ, someone may be impersonating one of you: do not trust this key.`
      ])
  ]
}

/** `/verify` in the terminal chat: the same as `verificationLines`, compact enough for a panel. */
export const verificationPanelLines = (answer: VerifyAnswer, confirmCommand: string): ReadonlyArray<string> => {
  const contact = answer.contact.username
  const width = Math.max(3, answer.you.username.length, contact.length)
  const [first, second] = safetyNumberRows(answer.safetyNumber)
  return [
    `${"you".padEnd(width)}  ${nameRefOf(answer.you)}`,
    `${contact.padEnd(width)}  ${nameRefOf(answer.contact)}  (${pinNote(answer.pin)})`,
    `safety number  ${first}`,
    `               ${second}`,
    answer.confirmed
      ? `Recorded: ${nameRefOf(answer.contact)} is verified.`
      : `Compare these 60 digits with ${contact} in person or over a channel you trust (${contact} sees the same number).`,
    ...(answer.confirmed ? [] : [`If they match: ${confirmCommand}. If they differ, do not trust this key.`])
  ]
}

/** `trust`: what changed, old pin to new. */
export const trustSummary = (answer: TrustAnswer): string => {
  const { pin, previous } = answer
  const now = `now trusting ${nameRefOf(pin)}`
  if (previous === null) return `${now} (no key was pinned for ${pin.username} before)`
  if (previous.signingKey === pin.signingKey) {
    return `${now}: it was already the pinned key (${pinNote(previous)}); it is now marked trusted on purpose`
  }
  return `${now}, in place of ${nameRefOf(previous)} (${pinNote(previous)}); messages go to the new key from now on`
}

/** One line of `contacts`: the name, the key, how it was pinned and when. */
export const contactLine = (pin: PinnedContact, nameWidth: number): string =>
  `${pin.username.padEnd(nameWidth)}  ${pin.fingerprint}  ${describePinSource(pin.source).padEnd(18)}  since ${formatLocalTime(pin.pinnedAt)}`

/** `contacts`: every pinned contact, or what pins are when there are none. */
export const contactsLines = (pins: ReadonlyArray<PinnedContact>): ReadonlyArray<string> => {
  if (pins.length === 0) {
    return ["no contacts pinned yet: Peerchat pins a contact's key the first time you exchange messages"]
  }
  const width = Math.max(...pins.map((pin) => pin.username.length))
  return pins.map((pin) => contactLine(pin, width))
}
