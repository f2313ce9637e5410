/**
 * Fair shares of a relay's mailboxes and a storer's records: the default
 * shares, the order quotas are checked in, and floods from one key and from
 * one address with many keys (an independent model of a mailbox store
 * driven by the pure decision) that never leave honest senders without room.
 */
import { describe, expect, it } from "@effect/vitest"
import { FastCheck as fc, Option } from "effect"
import { ChatStoreConfig } from "../../src/chat/ChatStore.js"
import {
  compareHolders,
  largestHolder,
  describeMailQuota,
  fairShares,
  type MailboxHolder,
  mailboxPlaceFor,
  type MailboxLimits,
  type MailHeld,
  mailboxQuotaBroken,
  type MailUsage,
  recordQuotaBroken
} from "../../src/core/StorageQuota.js"
import { PROPERTY_SEED } from "../support/arbitraries.js"

const propOptions = (numRuns: number) => ({ fastCheck: { seed: PROPERTY_SEED, numRuns } })

const KiB = 1024
const MiB = 1024 * KiB

const usage = (count: number, bytes = count * 100): MailUsage => ({ count, bytes })

const limits = (overrides: Partial<MailboxLimits> = {}): MailboxLimits => ({
  mailboxMaxMessagesPerRecipient: 1000,
  mailboxMaxBytesPerRecipient: 4 * MiB,
  mailboxMaxMessagesTotal: 10_000,
  mailboxMaxBytesTotal: 64 * MiB,
  mailboxSenderShare: 8,
  mailboxTotalSenderShare: 16,
  mailboxMinSenderMessages: 16,
  mailboxMinSenderBytes: 64 * KiB,
  ...overrides
})

const empty: MailHeld = { recipient: usage(0), total: usage(0) }

/** A mailbox store as a plain model: what each (mailbox, sender, source) holds. */
interface Held {
  readonly mailbox: string
  readonly sender: string
  readonly source: string
  readonly size: number
}

const heldFor = (all: ReadonlyArray<Held>, mail: Held): MailHeld => {
  const sum = (items: ReadonlyArray<Held>): MailUsage => ({
    count: items.length,
    bytes: items.reduce((total, item) => total + item.size, 0)
  })
  const inMailbox = all.filter((item) => item.mailbox === mail.mailbox)
  return {
    recipient: sum(inMailbox),
    total: sum(all),
    sender: {
      inMailbox: sum(inMailbox.filter((item) => item.sender === mail.sender)),
      total: sum(all.filter((item) => item.sender === mail.sender))
    },
    source: {
      inMailbox: sum(inMailbox.filter((item) => item.source === mail.source)),
      total: sum(all.filter((item) => item.source === mail.source))
    }
  }
}

/** Offers `mail` to the model store; true if it was kept. */
const offer = (config: MailboxLimits, all: Array<Held>, mail: Held): boolean => {
  if (Option.isSome(mailboxQuotaBroken(config, heldFor(all, mail), mail.size))) return false
  all.push(mail)
  return true
}

describe("StorageQuota", () => {
  it("the default shares: 1/8 of a mailbox (125 mails, 512 KiB), 1/16 of the total (625 mails, 4 MiB)", () => {
    expect(fairShares(ChatStoreConfig.defaults)).toEqual({
      mailbox: { messages: 125, bytes: 512 * KiB },
      total: { messages: 625, bytes: 4 * MiB }
    })
  })

  it("the floor holds for small mailboxes, and a share never exceeds what it divides", () => {
    expect(fairShares(limits({ mailboxMaxMessagesPerRecipient: 40 })).mailbox.messages).toBe(16)
    expect(fairShares(limits({ mailboxMaxMessagesPerRecipient: 2 })).mailbox.messages).toBe(2)
    expect(fairShares(limits({ mailboxMaxMessagesTotal: 3 })).total.messages).toBe(3)
  })

  it("quotas are checked in order: the sender's and the source's share of the mailbox, the mailbox, the shares of the total, the total", () => {
    const config = limits()
    const at = (held: Partial<MailHeld>) => Option.getOrUndefined(mailboxQuotaBroken(config, { ...empty, ...held }, 100))
    expect(at({})).toBeUndefined()
    expect(at({ sender: { inMailbox: usage(125), total: usage(125) }, recipient: usage(1000) })).toEqual({
      scope: "sender",
      measure: "messages",
      limit: 125
    })
    expect(at({ source: { inMailbox: usage(125), total: usage(125) } })?.scope).toBe("source")
    expect(at({ recipient: usage(1000) })).toEqual({ scope: "recipient", measure: "messages", limit: 1000 })
    expect(at({ sender: { inMailbox: usage(1), total: usage(625) }, total: usage(10_000) })?.scope).toBe("senderTotal")
    expect(at({ source: { inMailbox: usage(1), total: usage(625) } })?.scope).toBe("sourceTotal")
    expect(at({ total: usage(10_000) })).toEqual({ scope: "total", measure: "messages", limit: 10_000 })
    expect(at({ sender: { inMailbox: usage(1, 512 * KiB), total: usage(1, 512 * KiB) } })).toEqual({
      scope: "sender",
      measure: "bytes",
      limit: 512 * KiB
    })
    // Without a sender key or a source, no share applies.
    expect(at({ recipient: usage(999) })).toBeUndefined()
  })

  it("refusals read as the limit they name", () => {
    expect(describeMailQuota({ scope: "sender", measure: "messages", limit: 125 })).toBe(
      "the limit of 125 messages for one sender in this mailbox is reached"
    )
    expect(describeMailQuota({ scope: "sourceTotal", measure: "bytes", limit: 4 * MiB })).toBe(
      `the limit of ${4 * MiB} bytes for one address in total is reached`
    )
    expect(describeMailQuota({ scope: "recipient", measure: "messages", limit: 1000 })).toBe(
      "the limit of 1000 messages for this recipient is reached"
    )
  })

  it.prop(
    "ATTACK: one address flooding a mailbox with any number of keys leaves room for honest senders, in it and in every other mailbox",
    [fc.integer({ min: 1, max: 400 }), fc.integer({ min: 1, max: 5 }), fc.integer({ min: 1, max: 3000 })],
    ([keys, perKey, size]) => {
      const config = limits({ mailboxMaxMessagesPerRecipient: 100, mailboxMaxMessagesTotal: 400, mailboxMinSenderMessages: 4 })
      const all: Array<Held> = []
      for (let key = 0; key < keys; key++) {
        for (let n = 0; n < perKey; n++) {
          offer(config, all, { mailbox: `victim${key % 20}`, sender: `flood${key}`, source: "host:6.6.6.6", size })
        }
      }
      const shares = fairShares(config)
      expect(all.length).toBeLessThanOrEqual(shares.total.messages)
      for (let box = 0; box < 20; box++) {
        expect(all.filter((item) => item.mailbox === `victim${box}`).length).toBeLessThanOrEqual(shares.mailbox.messages)
      }
      expect(offer(config, all, { mailbox: "victim0", sender: "alice", source: "host:1.1.1.1", size: 500 })).toBe(true)
      expect(offer(config, all, { mailbox: "other", sender: "bob", source: "host:2.2.2.2", size: 500 })).toBe(true)
    },
    propOptions(200)
  )

  it.prop(
    "ATTACK: one key flooding from many addresses takes at most its share; honest mail still fits",
    [fc.integer({ min: 1, max: 300 }), fc.integer({ min: 1, max: 20 })],
    ([mails, addresses]) => {
      const config = limits({ mailboxMaxMessagesPerRecipient: 64, mailboxMaxMessagesTotal: 256, mailboxMinSenderMessages: 2 })
      const all: Array<Held> = []
      for (let n = 0; n < mails; n++) {
        offer(config, all, { mailbox: "victim", sender: "flooder", source: `host:10.0.0.${n % addresses}`, size: 100 })
      }
      expect(all.length).toBeLessThanOrEqual(fairShares(config).mailbox.messages)
      expect(offer(config, all, { mailbox: "victim", sender: "alice", source: "host:1.1.1.1", size: 100 })).toBe(true)
    },
    propOptions(200)
  )

  it("LIMIT: as many keys on as many addresses as shares fill a mailbox (8 of each by default)", () => {
    const config = limits()
    const all: Array<Held> = []
    for (let n = 0; n < 1000; n++) {
      expect(offer(config, all, { mailbox: "victim", sender: `k${n % 8}`, source: `host:10.0.0.${n % 8}`, size: 100 })).toBe(true)
    }
    expect(offer(config, all, { mailbox: "victim", sender: "alice", source: "host:1.1.1.1", size: 100 })).toBe(false)
  })

  describe("records", () => {
    const recordLimits = { maxStoredRecords: 10_000, maxNamesPerKey: 8 }

    it("a key holding its names is refused a new one before the store's bound is looked at", () => {
      expect(recordQuotaBroken(recordLimits, { keyNames: 7, held: 0, newSlot: true })).toEqual(Option.none())
      expect(recordQuotaBroken(recordLimits, { keyNames: 8, held: 0, newSlot: true })).toEqual(Option.some({ scope: "key", limit: 8 }))
      expect(recordQuotaBroken(recordLimits, { keyNames: 8, held: 10_000, newSlot: true })).toEqual(
        Option.some({ scope: "key", limit: 8 })
      )
      expect(recordQuotaBroken(recordLimits, { keyNames: 0, held: 10_000, newSlot: true })).toEqual(
        Option.some({ scope: "total", limit: 10_000 })
      )
      // Updating a held name never meets the store's bound.
      expect(recordQuotaBroken(recordLimits, { keyNames: 0, held: 10_000, newSlot: false })).toEqual(Option.none())
    })

    it.prop(
      "ATTACK: 200 fresh keys fill at most 200 × 8 = 1,600 of a storer's 10,000 records",
      [fc.integer({ min: 1, max: 200 }), fc.integer({ min: 1, max: 40 })],
      ([keys, namesEach]) => {
        const perKey = new Map<number, number>()
        let held = 0
        for (let key = 0; key < keys; key++) {
          for (let name = 0; name < namesEach; name++) {
            const keyNames = perKey.get(key) ?? 0
            if (Option.isNone(recordQuotaBroken(recordLimits, { keyNames, held, newSlot: true }))) {
              perKey.set(key, keyNames + 1)
              held++
            }
          }
        }
        expect(held).toBeLessThanOrEqual(keys * 8)
        expect(Option.isNone(recordQuotaBroken(recordLimits, { keyNames: 0, held, newSlot: true }))).toBe(true)
      },
      propOptions(100)
    )
  })

  it("a full mailbox gives a newcomer the place of the largest holder only while that holder would still hold more", () => {
    const full = { scope: "recipient" as const, measure: "messages" as const, limit: 40 }
    const usage = (count: number): MailUsage => ({ count, bytes: count * 100 })
    // What a newcomer's sender key holds in the full mailbox (its source, elsewhere, holds one mail).
    const holding = (count: number): MailHeld => ({
      recipient: usage(40),
      total: usage(40),
      sender: { inMailbox: usage(count), total: usage(count) },
      source: { inMailbox: usage(Math.min(count, 1)), total: usage(1) }
    })
    const flooder: MailboxHolder = { by: "source", key: "10.70.0.0/24", count: 5 }
    expect(mailboxPlaceFor(full, holding(0), flooder)).toEqual(flooder)
    expect(mailboxPlaceFor(full, holding(3), flooder)).toEqual(flooder)
    // After a swap the two would hold 4 and 4: no swap, so no two senders take turns evicting each other.
    expect(mailboxPlaceFor(full, holding(4), flooder)).toBeUndefined()
    expect(mailboxPlaceFor(full, holding(5), flooder)).toBeUndefined()
    // A mail with neither a sender key nor a source claims no share; an empty mailbox has no holder.
    expect(mailboxPlaceFor(full, { recipient: usage(40), total: usage(40) }, flooder)).toBeUndefined()
    expect(mailboxPlaceFor(full, holding(0), undefined)).toBeUndefined()
    // Only the mailbox's own quota makes room: a share or the relay's total refuse as before.
    for (const scope of ["sender", "source", "total", "senderTotal", "sourceTotal"] as const) {
      expect(mailboxPlaceFor({ ...full, scope }, holding(0), flooder)).toBeUndefined()
    }
  })

  it("holders are ordered largest first, then senders before sources, then by key, so every store picks the same", () => {
    const holders: Array<MailboxHolder> = [
      { by: "source", key: "a", count: 5 },
      { by: "sender", key: "b", count: 5 },
      { by: "sender", key: "a", count: 5 },
      { by: "sender", key: "z", count: 7 },
      { by: "source", key: "b", count: 1 }
    ]
    expect(holders.slice().sort(compareHolders).map(({ by, key }) => `${by}:${key}`)).toEqual([
      "sender:z",
      "sender:a",
      "sender:b",
      "source:a",
      "source:b"
    ])
    // The one both stores take: the first in that order, whatever order the holders come in.
    for (const order of [holders, holders.slice().reverse(), holders.slice(2).concat(holders.slice(0, 2))]) {
      expect(largestHolder(order)).toEqual({ by: "sender", key: "z", count: 7 })
    }
    const tied = holders.filter((holder) => holder.count === 5)
    expect(largestHolder(tied.slice().reverse())).toEqual({ by: "sender", key: "a", count: 5 })
    expect(largestHolder([])).toBeUndefined()
  })
})
