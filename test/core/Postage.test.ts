/**
 * Postage: the sender's record and its signature over (mail id, mailbox,
 * expiry). A round trip, then one test per forgery a hostile sender or relay
 * might try, each refused with its reason.
 */
import { describe, expect, it } from "@effect/vitest"
import { Either } from "effect"
import { toHex } from "../../src/core/Bytes.js"
import type { Key } from "../../src/core/Id.js"
import {
  checkPostage,
  type Mail,
  mailId,
  mailRecipientKey,
  type Postage,
  POSTAGE_SIGNING_PREFIX,
  postageSigningBytes,
  signPostage
} from "../../src/core/Mail.js"
import { type MessageId, signReceipt } from "../../src/core/Message.js"
import { signUserRecord, type UserRecord, withoutSignature } from "../../src/core/UserRecord.js"
import { userKey, type Username } from "../../src/core/Username.js"
import { verifyEd25519 } from "../../src/platform/NodeCrypto.js"
import { seededRandomBytes } from "../support/arbitraries.js"
import { testClaimRules } from "../support/claims.js"
import { nodeAddress, nodeIdentity, signedRecord } from "../support/memoryNetwork.js"

const HOUR = 3_600_000
const DAY = 24 * HOUR
const TTL = 14 * DAY
const NOW = 100 * DAY

const user = (name: string) => name as Username
const owner = (index: number) => ({ identity: nodeIdentity(index), address: nodeAddress(index) })

/** A record of `name` for test node `index`, issued at `issuedAt` for 7 days. */
const recordOf = (index: number, name: string, issuedAt = NOW): UserRecord =>
  signedRecord(owner(index), user(name), { issuedAt, expiresAt: issuedAt + 7 * DAY })

/** A message mail: any envelope will do, the relay cannot look inside. */
const messageMail = (seed: number, to = "olive"): Mail => {
  const bytes = seededRandomBytes(seed)
  return {
    _tag: "Message",
    envelope: {
      version: 2,
      recipientKey: userKey(user(to)),
      ephemeralKey: toHex(bytes(32)) as never,
      nonce: toHex(bytes(12)) as never,
      ciphertext: Buffer.from(bytes(400)).toString("base64") as never
    }
  }
}

/** A receipt signed by test node `signer` as `recipient`, for the mailbox of `forUser`. */
const receiptMail = (signer: number, recipient: string, forUser: string): Mail => ({
  _tag: "Receipt",
  recipientKey: userKey(user(forUser)),
  receipt: signReceipt(
    { version: 1, messageId: toHex(seededRandomBytes(signer)(32)) as MessageId, recipient: user(recipient), receivedAt: NOW },
    nodeIdentity(signer).sign
  )
})

const stamp = (mail: Mail, sender: UserRecord, signer: number, expiresAt = NOW + TTL): Postage =>
  signPostage({ mail, sender, expiresAt, sign: nodeIdentity(signer).sign })

const check = (mail: Mail, postage: Postage, now = NOW) =>
  checkPostage({ mail, postage, now, mailTtlMs: TTL, verify: verifyEd25519, claim: testClaimRules })

const reasonOf = (outcome: ReturnType<typeof check>) => (Either.isLeft(outcome) ? outcome.left.reason : "accepted")

describe("Postage", () => {
  it("the signed bytes are the prefix, the mail id, the mailbox and the expiry", () => {
    const mail = messageMail(1)
    const bytes = postageSigningBytes({ mailId: mailId(mail), recipientKey: mailRecipientKey(mail), expiresAt: 258 })
    expect(bytes.length).toBe(POSTAGE_SIGNING_PREFIX.length + 32 + 32 + 8)
    expect(Buffer.from(bytes.slice(0, 20)).toString()).toBe("peerchat/postage/v1\n")
    expect(toHex(bytes.slice(20, 52))).toBe(mailId(mail))
    expect(toHex(bytes.slice(52, 84))).toBe(userKey(user("olive")))
    expect(Array.from(bytes.slice(84))).toEqual([0, 0, 0, 0, 0, 0, 1, 2])
  })

  it("a message and a receipt stamped by their sender are accepted", () => {
    const mail = messageMail(2)
    expect(check(mail, stamp(mail, recordOf(1, "sam"), 1))).toEqual(Either.right(stamp(mail, recordOf(1, "sam"), 1)))
    const receipt = receiptMail(3, "olive", "sam")
    expect(reasonOf(check(receipt, stamp(receipt, recordOf(3, "olive"), 3)))).toBe("accepted")
  })

  it("ATTACK: a postage signed by another key than its record's is refused (BadSignature)", () => {
    const mail = messageMail(4)
    expect(reasonOf(check(mail, stamp(mail, recordOf(1, "sam"), 2)))).toBe("BadSignature")
  })

  it("ATTACK: someone else's record (the victim's, taken from the directory) with the attacker's signature is refused", () => {
    const mail = messageMail(5)
    const victims = recordOf(7, "alice")
    expect(reasonOf(check(mail, stamp(mail, victims, 6)))).toBe("BadSignature")
  })

  it("ATTACK: postage moved to other mail, another mailbox or a later expiry is refused (BadSignature)", () => {
    const mail = messageMail(8)
    const postage = stamp(mail, recordOf(1, "sam"), 1)
    expect(reasonOf(check(messageMail(9), postage))).toBe("BadSignature")
    expect(reasonOf(check(messageMail(8, "pat"), postage))).toBe("BadSignature")
    expect(reasonOf(check(mail, { ...postage, expiresAt: postage.expiresAt + DAY }))).toBe("BadSignature")
  })

  it("ATTACK: a record whose claim's proof of work does not check out is refused (SenderRecordInvalid, last)", () => {
    const mail = messageMail(10)
    const good = recordOf(1, "sam")
    // Re-signed by its own key with a wrong nonce: everything but the work is right.
    const unsolved = signUserRecord({ ...withoutSignature(good), claim: { ...good.claim, nonce: good.claim.nonce + 1 } }, nodeIdentity(1).sign)
    const outcome = check(mail, stamp(mail, unsolved, 1))
    expect(reasonOf(outcome)).toBe("SenderRecordInvalid")
    expect(Either.isLeft(outcome) && outcome.left.detail).toContain("ClaimWorkInvalid")
    // Too easy a claim is refused before any hashing.
    const easy = signUserRecord({ ...withoutSignature(good), claim: { difficulty: 0, nonce: 0 } }, nodeIdentity(1).sign)
    const tooEasy = check(mail, stamp(mail, easy, 1))
    expect(Either.isLeft(tooEasy) && tooEasy.left.detail).toContain("ClaimTooEasy")
  })

  it("ATTACK: a record whose own signature was broken is refused", () => {
    const mail = messageMail(11)
    const good = recordOf(1, "sam")
    const altered: UserRecord = { ...good, sequence: good.sequence + 1 }
    const outcome = check(mail, stamp(mail, altered, 1))
    expect(reasonOf(outcome)).toBe("SenderRecordInvalid")
    expect(Either.isLeft(outcome) && outcome.left.detail).toContain("BadSignature")
  })

  it("ATTACK: a receipt stamped with a record of another user, even of the same key, is refused (SenderMismatch)", () => {
    const receipt = receiptMail(3, "olive", "sam")
    // The signer's key, another name it claims.
    expect(reasonOf(check(receipt, stamp(receipt, recordOf(3, "oscar"), 3)))).toBe("SenderMismatch")
    // The receipt's name, claimed by another key: its postage verifies, the receipt does not.
    expect(reasonOf(check(receipt, stamp(receipt, recordOf(4, "olive"), 4)))).toBe("SenderMismatch")
  })

  it("a copy re-replicated ten days later still carries the record its sender had then", () => {
    const mail = messageMail(12)
    const postage = stamp(mail, recordOf(1, "sam", NOW), 1)
    expect(reasonOf(check(mail, postage, NOW + 10 * DAY))).toBe("accepted")
  })

  it("ATTACK: a record that expired before the mail can have been posted is refused", () => {
    const mail = messageMail(13)
    const stale = recordOf(1, "sam", NOW - 30 * DAY)
    const outcome = check(mail, stamp(mail, stale, 1))
    expect(reasonOf(outcome)).toBe("SenderRecordInvalid")
    expect(Either.isLeft(outcome) && outcome.left.detail).toContain("Expired")
  })

  it("ATTACK: a record issued in the future is refused", () => {
    const mail = messageMail(14)
    const outcome = check(mail, stamp(mail, recordOf(1, "sam", NOW + HOUR), 1))
    expect(Either.isLeft(outcome) && outcome.left.detail).toContain("IssuedInFuture")
  })

  it("the postage's mailbox is the mail's: a receipt's recipient key, an envelope's", () => {
    const receipt = receiptMail(3, "olive", "sam")
    expect(mailRecipientKey(receipt)).toBe(userKey(user("sam")) as Key)
  })
})
