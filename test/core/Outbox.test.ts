import { describe, expect, it } from "@effect/vitest"
import { Either, FastCheck as fc, HashMap, Option } from "effect"
import {
  enqueue,
  makeOutbox,
  type Outbox,
  OutboxFull,
  type OutboxConfig,
  peek,
  pendingCount,
  pendingFor,
  recipients,
  removeById,
  size
} from "../../src/core/Outbox.js"
import { PROPERTY_SEED } from "../support/arbitraries.js"

interface Message {
  readonly id: string
  readonly text: string
}

const message = (id: string): Message => ({ id, text: `text of ${id}` })

const enqueueOk = (outbox: Outbox<Message>, recipient: string, id: string): Outbox<Message> => {
  const result = enqueue(outbox, recipient, id, message(id))
  if (Either.isLeft(result)) throw new Error(`unexpected refusal: ${result.left.message}`)
  return result.right
}

const ids = (items: ReadonlyArray<Message>): ReadonlyArray<string> => items.map((item) => item.id)

describe("Outbox", () => {
  it("keeps per-recipient FIFO order", () => {
    let outbox = makeOutbox<Message>()
    for (const id of ["m1", "m2", "m3"]) outbox = enqueueOk(outbox, "bob", id)
    outbox = enqueueOk(outbox, "carol", "c1")
    expect(ids(pendingFor(outbox, "bob"))).toEqual(["m1", "m2", "m3"])
    expect(peek(outbox, "bob")?.id).toBe("m1")
    outbox = removeById(outbox, "bob", "m1")
    expect(peek(outbox, "bob")?.id).toBe("m2")
    expect(ids(pendingFor(outbox, "carol"))).toEqual(["c1"])
    expect(peek(outbox, "dave")).toBeUndefined()
    expect(pendingFor(outbox, "dave")).toEqual([])
    expect(size(outbox)).toBe(3)
  })

  it("refuses with RecipientQuota when one recipient's queue is full, and drops nothing", () => {
    let outbox = makeOutbox<Message>({ maxPerRecipient: 2, maxTotal: 10 })
    outbox = enqueueOk(outbox, "bob", "m1")
    outbox = enqueueOk(outbox, "bob", "m2")
    const refused = enqueue(outbox, "bob", "m3", message("m3"))
    expect(Either.isLeft(refused)).toBe(true)
    if (Either.isLeft(refused)) {
      expect(refused.left).toBeInstanceOf(OutboxFull)
      expect(refused.left.reason).toBe("RecipientQuota")
      expect(refused.left.limit).toBe(2)
      expect(refused.left.recipient).toBe("bob")
      expect(refused.left.message).toContain("2 messages are already pending for this recipient")
    }
    expect(ids(pendingFor(outbox, "bob"))).toEqual(["m1", "m2"])
    // Another recipient still has room.
    expect(Either.isRight(enqueue(outbox, "carol", "c1", message("c1")))).toBe(true)
  })

  it("refuses with TotalQuota when the outbox is full", () => {
    let outbox = makeOutbox<Message>({ maxPerRecipient: 5, maxTotal: 3 })
    outbox = enqueueOk(outbox, "a", "1")
    outbox = enqueueOk(outbox, "b", "2")
    outbox = enqueueOk(outbox, "c", "3")
    const refused = enqueue(outbox, "d", "4", message("4"))
    expect(Either.isLeft(refused) && refused.left.reason === "TotalQuota" && refused.left.limit === 3).toBe(true)
    if (Either.isLeft(refused)) expect(refused.left.message).toContain("3 messages are already pending in total")
    expect(size(outbox)).toBe(3)
  })

  it("treats a second enqueue of a pending id as a no-op, even when full", () => {
    let outbox = makeOutbox<Message>({ maxPerRecipient: 1, maxTotal: 1 })
    outbox = enqueueOk(outbox, "bob", "m1")
    const again = enqueue(outbox, "bob", "m1", message("m1"))
    expect(Either.isRight(again) && again.right === outbox).toBe(true)
    // The same id for another recipient is a different item.
    const other = enqueue(outbox, "carol", "m1", message("m1"))
    expect(Either.isLeft(other)).toBe(true)
  })

  it("removes an item from anywhere in the queue, and ignores unknown ids", () => {
    let outbox = makeOutbox<Message>()
    for (const id of ["m1", "m2", "m3", "m4"]) outbox = enqueueOk(outbox, "bob", id)
    outbox = removeById(outbox, "bob", "m3")
    expect(ids(pendingFor(outbox, "bob"))).toEqual(["m1", "m2", "m4"])
    outbox = removeById(outbox, "bob", "m1")
    outbox = removeById(outbox, "bob", "m2")
    expect(peek(outbox, "bob")?.id).toBe("m4")
    expect(removeById(outbox, "bob", "nope")).toBe(outbox)
    expect(removeById(outbox, "nobody", "m4")).toBe(outbox)
    outbox = removeById(outbox, "bob", "m4")
    expect(size(outbox)).toBe(0)
    expect(recipients(outbox)).toEqual([])
    // A removed id can be queued again, and goes to the back.
    outbox = enqueueOk(outbox, "bob", "m5")
    outbox = enqueueOk(outbox, "bob", "m1")
    expect(ids(pendingFor(outbox, "bob"))).toEqual(["m5", "m1"])
  })

  it("orders recipients by how long their head has waited", () => {
    let outbox = makeOutbox<Message>()
    outbox = enqueueOk(outbox, "bob", "b1")
    outbox = enqueueOk(outbox, "carol", "c1")
    outbox = enqueueOk(outbox, "bob", "b2")
    outbox = enqueueOk(outbox, "dave", "d1")
    expect(recipients(outbox)).toEqual(["bob", "carol", "dave"])
    // Bob's head is delivered; his next item (b2) is newer than carol's but older than dave's.
    outbox = removeById(outbox, "bob", "b1")
    expect(recipients(outbox)).toEqual(["carol", "bob", "dave"])
  })

  it("leaves earlier versions untouched", () => {
    const empty = makeOutbox<Message>()
    const one = enqueueOk(empty, "bob", "m1")
    const two = enqueueOk(one, "bob", "m2")
    const removed = removeById(two, "bob", "m1")
    expect(size(empty)).toBe(0)
    expect(ids(pendingFor(one, "bob"))).toEqual(["m1"])
    expect(ids(pendingFor(two, "bob"))).toEqual(["m1", "m2"])
    expect(ids(pendingFor(removed, "bob"))).toEqual(["m2"])
  })

  it("compacts after many removals in the middle without losing order", () => {
    let outbox = makeOutbox<Message>()
    for (let i = 0; i < 200; i++) outbox = enqueueOk(outbox, "bob", `m${i}`)
    for (let i = 1; i < 200; i += 2) outbox = removeById(outbox, "bob", `m${i}`)
    for (let i = 2; i < 200; i += 4) outbox = removeById(outbox, "bob", `m${i}`)
    const expected: Array<string> = []
    for (let i = 0; i < 200; i += 4) expected.push(`m${i}`)
    expect(ids(pendingFor(outbox, "bob"))).toEqual(expected)
    expect(pendingCount(outbox, "bob")).toBe(expected.length)
    const queue = HashMap.get(outbox.queues, "bob")
    // The tombstone bound: at most twice the live items plus a small slack.
    expect(Option.isSome(queue)).toBe(true)
    if (Option.isSome(queue)) expect(queue.value.entries.length).toBeLessThanOrEqual(2 * expected.length + 8)
  })

  it("rejects nonsensical limits", () => {
    expect(() => makeOutbox({ maxPerRecipient: 0 })).toThrow(RangeError)
    expect(() => makeOutbox({ maxTotal: 1.5 })).toThrow(RangeError)
  })

  // Model-based check: an array of (recipient, id, payload) in enqueue order is the oracle.
  type Op =
    | { readonly kind: "enqueue"; readonly recipient: string; readonly id: string }
    | { readonly kind: "remove"; readonly recipient: string; readonly id: string }
    | { readonly kind: "deliverHead"; readonly recipient: string }

  const arbOp = (recipientCount: number, idCount: number): fc.Arbitrary<Op> => {
    const recipient = fc.integer({ min: 0, max: recipientCount - 1 }).map((n) => `r${n}`)
    const id = fc.integer({ min: 0, max: idCount - 1 }).map((n) => `id${n}`)
    return fc.oneof(
      { weight: 5, arbitrary: fc.record({ kind: fc.constant("enqueue" as const), recipient, id }) },
      { weight: 2, arbitrary: fc.record({ kind: fc.constant("remove" as const), recipient, id }) },
      { weight: 2, arbitrary: fc.record({ kind: fc.constant("deliverHead" as const), recipient }) }
    )
  }

  interface ModelEntry {
    readonly recipient: string
    readonly id: string
  }

  const checkAgainstModel = (config: OutboxConfig, ops: ReadonlyArray<Op>, recipientNames: ReadonlyArray<string>) => {
    let outbox = makeOutbox<Message>(config)
    let model: ReadonlyArray<ModelEntry> = []
    for (const op of ops) {
      const before = outbox
      const beforeSnapshot = recipientNames.map((r) => ids(pendingFor(before, r)))
      const forRecipient = model.filter((entry) => entry.recipient === op.recipient)
      switch (op.kind) {
        case "enqueue": {
          const result = enqueue(outbox, op.recipient, op.id, message(op.id))
          if (forRecipient.some((entry) => entry.id === op.id)) {
            expect(Either.isRight(result) && result.right === outbox).toBe(true)
          } else if (forRecipient.length >= config.maxPerRecipient) {
            expect(Either.isLeft(result) && result.left.reason === "RecipientQuota").toBe(true)
          } else if (model.length >= config.maxTotal) {
            expect(Either.isLeft(result) && result.left.reason === "TotalQuota").toBe(true)
          } else {
            expect(Either.isRight(result)).toBe(true)
            model = [...model, { recipient: op.recipient, id: op.id }]
          }
          if (Either.isRight(result)) outbox = result.right
          break
        }
        case "remove": {
          outbox = removeById(outbox, op.recipient, op.id)
          model = model.filter((entry) => !(entry.recipient === op.recipient && entry.id === op.id))
          break
        }
        case "deliverHead": {
          const head = peek(outbox, op.recipient)
          expect(head?.id).toBe(forRecipient[0]?.id)
          if (head !== undefined) {
            outbox = removeById(outbox, op.recipient, head.id)
            const headId = head.id
            model = model.filter((entry) => !(entry.recipient === op.recipient && entry.id === headId))
          }
          break
        }
      }
      // The previous version is unchanged (persistence).
      expect(recipientNames.map((r) => ids(pendingFor(before, r)))).toEqual(beforeSnapshot)
      expect(size(outbox)).toBe(model.length)
      expect(size(outbox)).toBeLessThanOrEqual(config.maxTotal)
      for (const r of recipientNames) {
        const expected = model.filter((entry) => entry.recipient === r).map((entry) => entry.id)
        expect(ids(pendingFor(outbox, r))).toEqual(expected)
        expect(pendingCount(outbox, r)).toBe(expected.length)
        expect(expected.length).toBeLessThanOrEqual(config.maxPerRecipient)
        expect(peek(outbox, r)?.id).toBe(expected[0])
      }
      // The model is in enqueue order, so first appearance is the order of oldest heads.
      const fairOrder: Array<string> = []
      for (const entry of model) if (!fairOrder.includes(entry.recipient)) fairOrder.push(entry.recipient)
      expect(recipients(outbox)).toEqual(fairOrder)
    }
  }

  it.prop(
    "matches an array model under arbitrary operations (tight quotas)",
    [fc.array(arbOp(4, 8), { maxLength: 80 })],
    ([ops]) => checkAgainstModel({ maxPerRecipient: 4, maxTotal: 10 }, ops, ["r0", "r1", "r2", "r3"]),
    { fastCheck: { seed: PROPERTY_SEED, numRuns: 100 } }
  )

  it.prop(
    "matches an array model under arbitrary operations (long queues, tombstones)",
    [fc.array(arbOp(2, 60), { maxLength: 200 })],
    ([ops]) => checkAgainstModel({ maxPerRecipient: 40, maxTotal: 60 }, ops, ["r0", "r1"]),
    { fastCheck: { seed: PROPERTY_SEED, numRuns: 60 } }
  )
})
