/**
 * The contract every ChatStore implementation passes: one suite, run against
 * the in-memory layer (test/chat/ChatStore.test.ts) and the SQLite layer
 * (test/platform/SqliteChatStore.test.ts). Each test builds a fresh store from
 * the given layer with the bounds it needs; expectations are written out by
 * hand (or sorted independently), never computed with the store's own helpers.
 */
import { describe, expect, it } from "@effect/vitest"
import { Cause, Deferred, Effect, Exit, Fiber, Layer, Option, Schema } from "effect"
import type { Key, NodeId } from "../../src/core/Id.js"
import { type ContactPin, fingerprintOf, makePin, type PinSource } from "../../src/core/Pinning.js"
import type { PublicKeyHex } from "../../src/core/UserRecord.js"
import type { Username } from "../../src/core/Username.js"
import {
  ChatStore,
  ChatStoreConfig,
  type ChatStoreConfigShape,
  type IncomingMessage,
  type NewMail,
  type OutgoingDraft,
  type SnapshotContact
} from "../../src/chat/ChatStore.js"
import { labelOf, messageIdOf as mid } from "../support/messageIds.js"

const user = (name: string) => name as Username
const key = (n: number) => n.toString(16).padStart(64, "0") as Key
const nodeId = (n: number) => n.toString(16).padStart(64, "a") as NodeId

const incoming = (id: string, fields: Partial<IncomingMessage> = {}): IncomingMessage => ({
  id: mid(id),
  from: user("bob"),
  to: user("alice"),
  sequence: 1,
  sentAt: 100,
  text: `text of ${id}`,
  receivedAt: 100,
  ...fields
})

/** A draft whose text names `label` (the id it will be sent under in the tests). */
const outgoing = (label: string, fields: Partial<OutgoingDraft> = {}): OutgoingDraft => ({
  from: user("alice"),
  to: user("bob"),
  sentAt: 100,
  text: `text of ${label}`,
  ...fields
})

/** A `send` builder that names the message `id` and seals the sequence into its envelope. */
const sealedAs = (id: string) => (sequence: number) => Effect.succeed({ id: mid(id), envelope: JSON.stringify({ sequence }) })

const newMail = (id: string, fields: Partial<NewMail> = {}): NewMail => ({
  id: mid(id),
  recipientKey: key(1),
  envelopeJson: `{"mail":"${id}"}`,
  size: 10,
  storedAt: 0,
  expiresAt: 1000,
  ...fields
})

const contact = (n: number, lastSeen: number): SnapshotContact => ({
  nodeId: nodeId(n),
  host: `127.0.0.${n}`,
  port: 4000 + n,
  lastSeen
})

const signingKey = (n: number) => n.toString(16).padStart(64, "5") as PublicKeyHex

const pinFor = (name: string, keyNumber: number, pinnedAt: number, source: PinSource = "first-use"): ContactPin =>
  makePin({ username: user(name), signingKey: signingKey(keyNumber), pinnedAt, source })

/** A failure the tests inject into `send`'s builder. */
class EnvelopeFailed extends Schema.TaggedError<EnvelopeFailed>()("EnvelopeFailed", {}) {}

/**
 * Runs the contract against `layer`, which must build a fresh, empty store
 * each time it is provided (the suite provides it once per test).
 */
export const chatStoreContract = (name: string, layer: Layer.Layer<ChatStore, unknown, ChatStoreConfig>) => {
  const withStore = (overrides: Partial<ChatStoreConfigShape> = {}) =>
  <A, E>(effect: Effect.Effect<A, E, ChatStore>) =>
    Effect.provide(effect, Layer.provide(layer, ChatStoreConfig.layer(overrides)))

  describe(`ChatStore contract (${name})`, () => {
    describe("history", () => {
      it.effect("ATTACK: one sender's unread messages are capped per conversation; read ones make room, duplicates stay duplicates", () =>
        Effect.gen(function*() {
          // Before: any sender a user accepted could add messages without end (about 1.6 MB/s at its
          // request rate), filling the disk while the user was away.
          const store = yield* ChatStore
          expect(yield* store.recordReceived(incoming("u1"))).toBe("new")
          expect(yield* store.recordReceived(incoming("u2"))).toBe("new")
          expect(yield* store.recordReceived(incoming("u3"))).toBe("full")
          expect(yield* store.recordReceived(incoming("u1"))).toBe("duplicate")
          // Another sender's conversation has its own room.
          expect(yield* store.recordReceived(incoming("c1", { from: user("carol") }))).toBe("new")
          expect((yield* store.history(user("bob"), { limit: 10 })).map((entry) => entry.id)).toEqual([mid("u1"), mid("u2")])
          yield* store.markRead(user("bob"))
          expect(yield* store.recordReceived(incoming("u3"))).toBe("new")
        }).pipe(withStore({ maxUnreadPerConversation: 2 })))

      it.effect("recordReceived stores a message once and marks its id seen", () =>
        Effect.gen(function*() {
          const store = yield* ChatStore
          const message = incoming("m1", { sequence: 7, sentAt: 50, receivedAt: 60 })
          expect(yield* store.recordReceived(message)).toBe("new")
          expect(yield* store.recordReceived({ ...message, text: "changed", receivedAt: 99 })).toBe("duplicate")
          expect(yield* store.history(user("bob"), { limit: 10 })).toEqual([{
            id: mid("m1"),
            conversation: "bob",
            direction: "in",
            from: "bob",
            to: "alice",
            sequence: 7,
            sentAt: 50,
            text: "text of m1",
            status: "received",
            receivedAt: 60,
            read: false
          }])
          expect(yield* store.isSeen(mid("m1"))).toBe(true)
          expect(yield* store.markSeen(mid("m1"), 70)).toBe(true)
          expect(yield* store.conversations()).toEqual([{ conversation: "bob", lastAt: 60, unread: 1 }])
          const stats = yield* store.stats
          expect([stats.messages, stats.seen, stats.conversations]).toEqual([1, 1, 1])
        }).pipe(withStore()))

      it.effect("history is ordered by (sentAt, sequence, id) whatever the insertion order", () =>
        Effect.gen(function*() {
          const store = yield* ChatStore
          // Ties on sentAt and on (sentAt, sequence); ids are lower-case hex (a hash), so the
          // last tie is broken by the id alone, the same in JavaScript and in SQLite.
          const entries = [
            incoming("c", { sentAt: 20, sequence: 1 }),
            incoming("a", { sentAt: 30, sequence: 2 }),
            incoming("b", { sentAt: 20, sequence: 1 }),
            incoming("d", { sentAt: 10, sequence: 9 }),
            incoming("e", { sentAt: 20, sequence: 0 }),
            incoming("x2", { sentAt: 40, sequence: 1 }),
            incoming("x1", { sentAt: 40, sequence: 1 })
          ]
          for (const entry of entries) yield* store.recordReceived(entry)
          yield* store.send(outgoing("o", { sentAt: 20 }), sealedAs("o"), 0) // sequence 1, id "o" sorts after "c"
          const ids = (yield* store.history(user("bob"), { limit: 100 })).map((entry) => labelOf(entry.id))
          expect(ids).toEqual(["d", "e", "b", "c", "o", "a", "x1", "x2"])
        }).pipe(withStore()))

      it.effect("history pages backwards with a cursor and clamps the limit to maxPageSize", () =>
        Effect.gen(function*() {
          const store = yield* ChatStore
          for (let i = 1; i <= 7; i++) yield* store.recordReceived(incoming(`m${i}`, { sentAt: i * 10, sequence: i }))
          yield* store.recordReceived(incoming("other", { from: user("carol"), sentAt: 35 }))
          const ids = (entries: ReadonlyArray<{ readonly id: string }>) => entries.map((entry) => labelOf(entry.id))

          expect(ids(yield* store.history(user("bob"), { limit: 100 }))).toEqual(["m3", "m4", "m5", "m6", "m7"])
          const latest = yield* store.history(user("bob"), { limit: 3 })
          expect(ids(latest)).toEqual(["m5", "m6", "m7"])
          const [first] = latest
          if (first === undefined) return expect.unreachable("a page of three has a first entry")
          const previous = yield* store.history(user("bob"), { limit: 3, before: first })
          expect(ids(previous)).toEqual(["m2", "m3", "m4"])
          const [oldest] = previous
          if (oldest === undefined) return expect.unreachable("a page of three has a first entry")
          expect(ids(yield* store.history(user("bob"), { limit: 3, before: oldest }))).toEqual(["m1"])
          expect(yield* store.history(user("bob"), { limit: 0 })).toEqual([])
          expect(yield* store.history(user("bob"), { limit: -5 })).toEqual([])
          expect(yield* store.history(user("nobody"), { limit: 5 })).toEqual([])
        }).pipe(withStore({ maxPageSize: 5 })))

      it.effect("conversations list the latest activity first with unread counts; markRead clears them", () =>
        Effect.gen(function*() {
          const store = yield* ChatStore
          // Activity is the local time: receivedAt for incoming (bob's skewed sentAt 999 does not count).
          yield* store.recordReceived(incoming("b1", { sentAt: 999, receivedAt: 10 }))
          yield* store.recordReceived(incoming("b2", { sentAt: 5, receivedAt: 20, sequence: 2 }))
          yield* store.recordReceived(incoming("c1", { from: user("carol"), receivedAt: 30 }))
          yield* store.send(outgoing("d1", { to: user("dave"), sentAt: 25 }), sealedAs("d1"), 0)
          yield* store.send(outgoing("e1", { to: user("erin"), sentAt: 25 }), sealedAs("e1"), 0)
          expect(yield* store.conversations()).toEqual([
            { conversation: "carol", lastAt: 30, unread: 1 },
            { conversation: "dave", lastAt: 25, unread: 0 },
            { conversation: "erin", lastAt: 25, unread: 0 },
            { conversation: "bob", lastAt: 20, unread: 2 }
          ])
          expect(yield* store.conversations({ limit: 1 })).toEqual([{ conversation: "carol", lastAt: 30, unread: 1 }])

          expect(yield* store.markRead(user("bob"))).toBe(2)
          expect(yield* store.markRead(user("bob"))).toBe(0)
          expect(yield* store.markRead(user("nobody"))).toBe(0)
          expect((yield* store.history(user("bob"), { limit: 10 })).map((entry) => entry.read)).toEqual([true, true])
          expect((yield* store.conversations()).map((summary) => [summary.conversation, summary.unread])).toEqual([
            ["carol", 1],
            ["dave", 0],
            ["erin", 0],
            ["bob", 0]
          ])
          // A message arriving after markRead is unread again.
          yield* store.recordReceived(incoming("b3", { receivedAt: 40, sequence: 3 }))
          expect((yield* store.conversations())[0]).toEqual({ conversation: "bob", lastAt: 40, unread: 1 })
        }).pipe(withStore()))
    })

    describe("outbox", () => {
      it.effect("send assigns per-conversation sequences from 1 and queues the message", () =>
        Effect.gen(function*() {
          const store = yield* ChatStore
          const built: Array<number> = []
          // The id depends on the sequence, as a real id (the hash of the sealed envelope) does.
          const sealing = (prefix: string) => (sequence: number) =>
            Effect.sync(() => {
              built.push(sequence)
              return { id: mid(`${prefix}${sequence}`), envelope: JSON.stringify({ sequence }) }
            })
          expect(yield* store.send(outgoing("b1", { sentAt: 1 }), sealing("b"), 10)).toEqual({ id: mid("b1"), sequence: 1 })
          expect(yield* store.send(outgoing("b2", { sentAt: 2 }), sealing("b"), 10)).toEqual({ id: mid("b2"), sequence: 2 })
          expect(yield* store.send(outgoing("c1", { to: user("carol"), sentAt: 3 }), sealing("c"), 10))
            .toEqual({ id: mid("c1"), sequence: 1 })
          // Incoming sequences are the peer's counter and do not move ours.
          yield* store.recordReceived(incoming("in", { sequence: 50, sentAt: 4 }))
          expect(yield* store.send(outgoing("b3", { sentAt: 5 }), sealing("b"), 10)).toEqual({ id: mid("b3"), sequence: 3 })
          expect(built).toEqual([1, 2, 1, 3])

          const [first] = yield* store.history(user("bob"), { limit: 1, before: { sentAt: 2, sequence: 0, id: mid("") } })
          expect(first).toEqual({
            id: mid("b1"),
            conversation: "bob",
            direction: "out",
            from: "alice",
            to: "bob",
            sequence: 1,
            sentAt: 1,
            text: "text of b1",
            status: "queued",
            read: true
          })
          expect(yield* store.due(10, 10)).toEqual([
            { id: mid("b1"), recipient: "bob", sequence: 1, envelopeJson: "{\"sequence\":1}", enqueuedAt: 1, nextAttemptAt: 10, attempts: 0 },
            { id: mid("b2"), recipient: "bob", sequence: 2, envelopeJson: "{\"sequence\":2}", enqueuedAt: 2, nextAttemptAt: 10, attempts: 0 },
            { id: mid("c1"), recipient: "carol", sequence: 1, envelopeJson: "{\"sequence\":1}", enqueuedAt: 3, nextAttemptAt: 10, attempts: 0 },
            { id: mid("b3"), recipient: "bob", sequence: 3, envelopeJson: "{\"sequence\":3}", enqueuedAt: 5, nextAttemptAt: 10, attempts: 0 }
          ])
        }).pipe(withStore()))

      it.effect("send refuses a built id the history holds, in either direction, and changes nothing", () =>
        Effect.gen(function*() {
          const store = yield* ChatStore
          yield* store.send(outgoing("m1"), sealedAs("m1"), 0)
          yield* store.recordReceived(incoming("in1"))
          const before = yield* store.stats
          const again = yield* Effect.flip(store.send(outgoing("m1", { text: "other" }), sealedAs("m1"), 0))
          expect(again).toMatchObject({ _tag: "DuplicateMessage", id: mid("m1") })
          const clash = yield* Effect.flip(store.send(outgoing("in1"), sealedAs("in1"), 0))
          expect(clash).toMatchObject({ _tag: "DuplicateMessage", id: mid("in1") })
          expect(yield* store.recordReceived(incoming("m1"))).toBe("duplicate")
          expect(yield* store.stats).toEqual(before)
          expect((yield* store.history(user("bob"), { limit: 10 })).map((entry) => [labelOf(entry.id), entry.text])).toEqual([
            ["in1", "text of in1"],
            ["m1", "text of m1"]
          ])
          expect((yield* store.due(1000, 10)).map((entry) => [labelOf(entry.id), entry.sequence])).toEqual([["m1", 1]])
          // The refused sends consumed no sequence.
          expect(yield* store.send(outgoing("m2"), sealedAs("m2"), 0)).toEqual({ id: mid("m2"), sequence: 2 })
        }).pipe(withStore()))

      it.effect("send is atomic: a failing or dying builder leaves nothing behind and consumes no sequence", () =>
        Effect.gen(function*() {
          const store = yield* ChatStore
          yield* store.send(outgoing("m1"), sealedAs("m1"), 0)
          const before = yield* store.stats
          const failed = yield* Effect.flip(store.send(outgoing("m2", { sentAt: 500 }), () => new EnvelopeFailed(), 0))
          expect(failed._tag).toBe("EnvelopeFailed")
          const died = yield* Effect.exit(store.send(outgoing("m3", { to: user("carol") }), () => Effect.die("boom"), 0))
          expect(Exit.isFailure(died)).toBe(true)
          expect(yield* store.stats).toEqual(before)
          expect((yield* store.history(user("bob"), { limit: 10 })).map((entry) => labelOf(entry.id))).toEqual(["m1"])
          expect(yield* store.conversations()).toEqual([{ conversation: "bob", lastAt: 100, unread: 0 }])
          expect(yield* store.due(1000, 10)).toHaveLength(1)
          expect(yield* store.send(outgoing("m2"), sealedAs("m2"), 0)).toEqual({ id: mid("m2"), sequence: 2 })
          expect(yield* store.send(outgoing("m3", { to: user("carol") }), sealedAs("m3"), 0)).toEqual({ id: mid("m3"), sequence: 1 })
        }).pipe(withStore()))

      it.effect("send is atomic under interruption, and the store stays usable", () =>
        Effect.gen(function*() {
          const store = yield* ChatStore
          const started = yield* Deferred.make<number>()
          const fiber = yield* Effect.fork(
            store.send(outgoing("m1"), (sequence) => Deferred.succeed(started, sequence).pipe(Effect.zipRight(Effect.never)), 0)
          )
          expect(yield* Deferred.await(started)).toBe(1)
          yield* Fiber.interrupt(fiber)
          const stats = yield* store.stats
          expect([stats.messages, stats.outbox, stats.conversations]).toEqual([0, 0, 0])
          expect(yield* store.send(outgoing("m1"), sealedAs("m1"), 0)).toEqual({ id: mid("m1"), sequence: 1 })
        }).pipe(withStore()))

      it.effect("the outbox refuses beyond its per-recipient and total quotas and drops nothing", () =>
        Effect.gen(function*() {
          const store = yield* ChatStore
          yield* store.send(outgoing("b1"), sealedAs("b1"), 0)
          yield* store.send(outgoing("b2"), sealedAs("b2"), 0)
          // A full outbox refuses before the builder runs: nothing is sealed for a message that cannot be queued.
          const unbuilt = () => Effect.die("the builder ran although the outbox was full")
          const perRecipient = yield* Effect.flip(store.send(outgoing("b3"), unbuilt, 0))
          expect(perRecipient).toMatchObject({ _tag: "OutboxFull", recipient: "bob", reason: "RecipientQuota", limit: 2 })
          yield* store.send(outgoing("c1", { to: user("carol") }), sealedAs("c1"), 0)
          const total = yield* Effect.flip(store.send(outgoing("d1", { to: user("dave") }), unbuilt, 0))
          expect(total).toMatchObject({ _tag: "OutboxFull", recipient: "dave", reason: "TotalQuota", limit: 3 })
          const stats = yield* store.stats
          expect([stats.messages, stats.outbox]).toEqual([3, 3])
          expect((yield* store.due(1000, 10)).map((entry) => labelOf(entry.id))).toEqual(["b1", "b2", "c1"])

          expect(yield* store.complete(mid("b1"), "delivered")).toBe("completed")
          // Refused sends consumed no sequence: bob's next is 3.
          expect(yield* store.send(outgoing("b3"), sealedAs("b3"), 0)).toEqual({ id: mid("b3"), sequence: 3 })
        }).pipe(withStore({ outboxMaxPerRecipient: 2, outboxMaxTotal: 3 })))

      it.effect("due returns what is due in send order, bounded; reschedule keeps the entry's place", () =>
        Effect.gen(function*() {
          const store = yield* ChatStore
          yield* store.send(outgoing("a"), sealedAs("a"), 10)
          yield* store.send(outgoing("b", { to: user("carol") }), sealedAs("b"), 5)
          yield* store.send(outgoing("c"), sealedAs("c"), 20)
          const ids = (entries: ReadonlyArray<{ readonly id: string }>) => entries.map((entry) => labelOf(entry.id))
          expect(yield* store.due(4, 10)).toEqual([])
          expect(ids(yield* store.due(10, 10))).toEqual(["a", "b"])
          expect(ids(yield* store.due(10, 1))).toEqual(["a"])
          expect(ids(yield* store.due(100, 0))).toEqual([])
          expect(ids(yield* store.due(100, 500))).toEqual(["a", "b"]) // clamped to maxPageSize = 2

          yield* store.reschedule(mid("a"), 30, 1)
          expect(ids(yield* store.due(20, 10))).toEqual(["b", "c"])
          const [first] = yield* store.due(30, 1)
          expect(first).toMatchObject({ id: mid("a"), nextAttemptAt: 30, attempts: 1 })
          const missing = yield* Effect.flip(store.reschedule(mid("nope"), 1, 1))
          expect(missing).toMatchObject({ _tag: "NotFound", kind: "OutboxEntry", id: mid("nope") })
        }).pipe(withStore({ maxPageSize: 2 })))

      it.effect("nextDueAt is the earliest due time in the outbox, none when it is empty", () =>
        Effect.gen(function*() {
          const store = yield* ChatStore
          expect(yield* store.nextDueAt).toEqual(Option.none())
          yield* store.send(outgoing("m1"), sealedAs("m1"), 500)
          yield* store.send(outgoing("m2"), sealedAs("m2"), 300)
          expect(yield* store.nextDueAt).toEqual(Option.some(300))
          yield* store.reschedule(mid("m2"), 900, 1)
          expect(yield* store.nextDueAt).toEqual(Option.some(500))
          yield* store.complete(mid("m1"), "delivered")
          yield* store.complete(mid("m2"), "delivered")
          expect(yield* store.nextDueAt).toEqual(Option.none())
        }).pipe(withStore()))

      it.effect("complete removes the outbox entry and moves the status forward; repeating it is harmless", () =>
        Effect.gen(function*() {
          const store = yield* ChatStore
          yield* store.send(outgoing("m1"), sealedAs("m1"), 0)
          yield* store.recordReceived(incoming("in1"))
          const status = Effect.map(store.history(user("bob"), { limit: 10 }), (entries) =>
            entries.find((entry) => entry.id === mid("m1"))?.status)

          expect(yield* store.complete(mid("m1"), "stored-offline")).toBe("completed")
          expect(yield* store.due(1000, 10)).toEqual([])
          expect(yield* status).toBe("stored-offline")
          expect(yield* store.complete(mid("m1"), "delivered")).toBe("not-pending")
          expect(yield* status).toBe("delivered")
          expect(yield* store.complete(mid("m1"), "stored-offline")).toBe("not-pending")
          expect(yield* status).toBe("delivered")
          expect((yield* store.stats).outbox).toBe(0)

          expect(yield* Effect.flip(store.complete(mid("nope"), "delivered"))).toMatchObject({ _tag: "NotFound", kind: "OutgoingMessage" })
          expect(yield* Effect.flip(store.complete(mid("in1"), "delivered"))).toMatchObject({ _tag: "NotFound", id: mid("in1") })
        }).pipe(withStore()))

      it.effect("keepAsStoredOffline marks the message stored offline and keeps it in the outbox, due later", () =>
        Effect.gen(function*() {
          const store = yield* ChatStore
          yield* store.send(outgoing("m1"), sealedAs("m1"), 0)
          yield* store.recordReceived(incoming("in1"))
          const status = Effect.map(store.history(user("bob"), { limit: 10 }), (entries) =>
            entries.find((entry) => entry.id === mid("m1"))?.status)

          yield* store.keepAsStoredOffline(mid("m1"), 600_000, 1)
          expect(yield* status).toBe("stored-offline")
          expect(yield* store.due(1000, 10)).toEqual([])
          expect((yield* store.due(600_000, 10)).map((entry) => [labelOf(entry.id), entry.attempts])).toEqual([["m1", 1]])
          expect(yield* store.nextDueAt).toEqual(Option.some(600_000))
          // A receipt later ends it for good.
          expect(yield* store.complete(mid("m1"), "delivered")).toBe("completed")
          expect(yield* status).toBe("delivered")
          expect((yield* store.stats).outbox).toBe(0)
          expect(yield* Effect.flip(store.keepAsStoredOffline(mid("m1"), 0, 2))).toMatchObject({ _tag: "NotFound" })
          expect(yield* Effect.flip(store.keepAsStoredOffline(mid("in1"), 0, 2))).toMatchObject({ _tag: "NotFound" })
        }).pipe(withStore()))

      it.effect("setStatus only moves forward and leaves the outbox alone", () =>
        Effect.gen(function*() {
          const store = yield* ChatStore
          yield* store.send(outgoing("m1"), sealedAs("m1"), 0)
          yield* store.send(outgoing("m2"), sealedAs("m2"), 0)
          yield* store.recordReceived(incoming("in1"))
          const statusOf = (id: string) =>
            Effect.map(store.history(user("bob"), { limit: 10 }), (entries) => entries.find((entry) => entry.id === mid(id))?.status)

          expect(yield* store.setStatus(mid("m1"), "queued")).toBe("unchanged")
          expect(yield* store.setStatus(mid("m1"), "stored-offline")).toBe("advanced")
          expect(yield* store.setStatus(mid("m1"), "queued")).toBe("unchanged")
          expect(yield* statusOf("m1")).toBe("stored-offline")
          expect(yield* store.setStatus(mid("m2"), "delivered")).toBe("advanced")
          expect(yield* store.setStatus(mid("m2"), "stored-offline")).toBe("unchanged")
          expect(yield* statusOf("m2")).toBe("delivered")
          expect((yield* store.due(1000, 10)).map((entry) => labelOf(entry.id))).toEqual(["m1", "m2"])

          expect(yield* Effect.flip(store.setStatus(mid("in1"), "delivered"))).toMatchObject({ _tag: "NotFound", kind: "OutgoingMessage" })
          expect(yield* statusOf("in1")).toBe("received")
          expect(yield* Effect.flip(store.setStatus(mid("nope"), "delivered"))).toMatchObject({ _tag: "NotFound", id: mid("nope") })
        }).pipe(withStore()))

      it.effect("message finds an entry by id in either direction, with its current status", () =>
        Effect.gen(function*() {
          const store = yield* ChatStore
          yield* store.send(outgoing("m1"), sealedAs("m1"), 0)
          yield* store.recordReceived(incoming("in1"))
          yield* store.complete(mid("m1"), "delivered")
          const sent = yield* store.message(mid("m1"))
          expect(Option.map(sent, (entry) => [entry.direction, entry.to, entry.status])).toEqual(Option.some(["out", "bob", "delivered"]))
          const received = yield* store.message(mid("in1"))
          expect(Option.map(received, (entry) => [entry.direction, entry.status])).toEqual(Option.some(["in", "received"]))
          expect(yield* store.message(mid("nope"))).toEqual(Option.none())
        }).pipe(withStore()))
    })

    describe("relay mailboxes", () => {
      it.effect("storeMail holds mail once; mailFor gives one recipient's mail oldest first", () =>
        Effect.gen(function*() {
          const store = yield* ChatStore
          expect(yield* store.storeMail(newMail("a", { storedAt: 3 }))).toBe("new")
          expect(yield* store.storeMail(newMail("b", { storedAt: 1 }))).toBe("new")
          expect(yield* store.storeMail(newMail("c", { storedAt: 2 }))).toBe("new")
          expect(yield* store.storeMail(newMail("0", { storedAt: 2 }))).toBe("new")
          expect(yield* store.storeMail(newMail("other", { recipientKey: key(2) }))).toBe("new")
          expect(yield* store.storeMail(newMail("a", { envelopeJson: "changed", storedAt: 9 }))).toBe("duplicate")

          const mail = yield* store.mailFor(key(1), 10)
          expect(mail.map((item) => labelOf(item.id))).toEqual(["b", "0", "c", "a"])
          expect(mail[3]).toEqual({
            id: mid("a"),
            recipientKey: key(1),
            envelopeJson: "{\"mail\":\"a\"}",
            size: 10,
            storedAt: 3,
            expiresAt: 1000,
            forwarded: false,
            senderKey: "",
            source: "",
            postageJson: "",
            fullExpiresAt: 1000
          })
          expect((yield* store.mailFor(key(1), 2)).map((item) => labelOf(item.id))).toEqual(["b", "0"])
          expect((yield* store.mailFor(key(2), 10)).map((item) => labelOf(item.id))).toEqual(["other"])
          expect(yield* store.mailFor(key(3), 10)).toEqual([])
          const stats = yield* store.stats
          expect([stats.mail, stats.mailBytes]).toEqual([5, 50])
        }).pipe(withStore()))

      it.effect("storeMail refuses ids seen here before, so removed mail is not accepted again", () =>
        Effect.gen(function*() {
          const store = yield* ChatStore
          yield* store.markSeen(mid("x"), 0)
          expect(yield* store.storeMail(newMail("x"))).toBe("duplicate")
          yield* store.recordReceived(incoming("received-here"))
          expect(yield* store.storeMail(newMail("received-here"))).toBe("duplicate")
          expect(yield* store.storeMail(newMail("y"))).toBe("new")
          expect(yield* store.isSeen(mid("y"))).toBe(true)
          expect(yield* store.removeMail(key(1), [mid("y")])).toBe(1)
          expect(yield* store.storeMail(newMail("y"))).toBe("duplicate")
          expect((yield* store.stats).mail).toBe(0)
        }).pipe(withStore()))

      it.effect("removeMail removes only the listed mail of that recipient", () =>
        Effect.gen(function*() {
          const store = yield* ChatStore
          for (const id of ["a", "b", "c"]) yield* store.storeMail(newMail(id))
          yield* store.storeMail(newMail("z", { recipientKey: key(2) }))
          expect(yield* store.removeMail(key(2), [mid("a"), mid("b")])).toBe(0)
          expect(yield* store.removeMail(key(1), [])).toBe(0)
          expect(yield* store.removeMail(key(1), [mid("a"), mid("c"), mid("unknown"), mid("z")])).toBe(2)
          expect((yield* store.mailFor(key(1), 10)).map((item) => labelOf(item.id))).toEqual(["b"])
          expect((yield* store.mailFor(key(2), 10)).map((item) => labelOf(item.id))).toEqual(["z"])
          const stats = yield* store.stats
          expect([stats.mail, stats.mailBytes]).toEqual([2, 20])
        }).pipe(withStore()))

      it.effect("expireMail removes mail whose expiry has come", () =>
        Effect.gen(function*() {
          const store = yield* ChatStore
          yield* store.storeMail(newMail("a", { expiresAt: 10 }))
          yield* store.storeMail(newMail("b", { expiresAt: 20, recipientKey: key(2) }))
          expect(yield* store.expireMail(9)).toBe(0)
          expect(yield* store.expireMail(10)).toBe(1)
          expect(yield* store.mailFor(key(1), 10)).toEqual([])
          expect(yield* store.expireMail(25)).toBe(1)
          expect((yield* store.stats).mail).toBe(0)
        }).pipe(withStore()))

      it.effect("markForwarded sets the flag once: relays never forward twice", () =>
        Effect.gen(function*() {
          const store = yield* ChatStore
          yield* store.storeMail(newMail("a"))
          expect(yield* store.markForwarded(mid("a"))).toBe(true)
          expect(yield* store.markForwarded(mid("a"))).toBe(false)
          expect((yield* store.mailFor(key(1), 10))[0]?.forwarded).toBe(true)
          expect((yield* store.allMail(10))[0]?.forwarded).toBe(true)
          expect(yield* Effect.flip(store.markForwarded(mid("nope")))).toMatchObject({ _tag: "NotFound", kind: "Mail", id: mid("nope") })
        }).pipe(withStore()))

      it.effect("allMail pages through every mailbox by id", () =>
        Effect.gen(function*() {
          const store = yield* ChatStore
          for (const [id, recipient] of [["m4", 1], ["m2", 2], ["m5", 1], ["m1", 3], ["m3", 2]] as const) {
            yield* store.storeMail(newMail(id, { recipientKey: key(recipient) }))
          }
          const ids = (items: ReadonlyArray<{ readonly id: string }>) => items.map((item) => labelOf(item.id))
          expect(ids(yield* store.allMail(2))).toEqual(["m1", "m2"])
          expect(ids(yield* store.allMail(2, mid("m2")))).toEqual(["m3", "m4"])
          expect(ids(yield* store.allMail(10, mid("m4")))).toEqual(["m5"])
          expect(yield* store.allMail(10, mid("m5"))).toEqual([])
          expect(yield* store.allMail(0)).toEqual([])
          expect(ids(yield* store.allMail(100))).toEqual(["m1", "m2", "m3"]) // clamped to maxPageSize
        }).pipe(withStore({ maxPageSize: 3 })))

      it.effect("mailbox quotas on messages refuse with the right scope and store nothing", () =>
        Effect.gen(function*() {
          const store = yield* ChatStore
          yield* store.storeMail(newMail("a1", { size: 40 }))
          yield* store.storeMail(newMail("a2", { size: 40 }))
          const recipient = yield* Effect.flip(store.storeMail(newMail("a3", { size: 1 })))
          expect(recipient).toMatchObject({ _tag: "MailboxFull", recipientKey: key(1), scope: "recipient", measure: "messages", limit: 2 })
          yield* store.storeMail(newMail("b1", { recipientKey: key(2), size: 60 }))
          const total = yield* Effect.flip(store.storeMail(newMail("c1", { recipientKey: key(3), size: 1 })))
          expect(total).toMatchObject({ _tag: "MailboxFull", recipientKey: key(3), scope: "total", measure: "messages", limit: 3 })
          expect(yield* store.isSeen(mid("a3"))).toBe(false)
          expect(yield* store.isSeen(mid("c1"))).toBe(false)
          const stats = yield* store.stats
          expect([stats.mail, stats.mailBytes]).toEqual([3, 140])
        }).pipe(withStore({
          mailboxMaxMessagesPerRecipient: 2,
          mailboxMaxBytesPerRecipient: 100,
          mailboxMaxMessagesTotal: 3,
          mailboxMaxBytesTotal: 150
        })))

      it.effect("mailbox quotas on bytes refuse with the right scope and store nothing", () =>
        Effect.gen(function*() {
          const store = yield* ChatStore
          const tooBig = yield* Effect.flip(store.storeMail(newMail("big", { size: 101 })))
          expect(tooBig).toMatchObject({ _tag: "MailboxFull", scope: "recipient", measure: "bytes", limit: 100 })
          yield* store.storeMail(newMail("a1", { size: 60 }))
          const recipient = yield* Effect.flip(store.storeMail(newMail("a2", { size: 41 })))
          expect(recipient).toMatchObject({ scope: "recipient", measure: "bytes", limit: 100 })
          yield* store.storeMail(newMail("a2", { size: 40 })) // exactly the recipient's limit
          yield* store.storeMail(newMail("b1", { recipientKey: key(2), size: 50 }))
          const total = yield* Effect.flip(store.storeMail(newMail("c1", { recipientKey: key(3), size: 1 })))
          expect(total).toMatchObject({ _tag: "MailboxFull", scope: "total", measure: "bytes", limit: 150 })
          const stats = yield* store.stats
          expect([stats.mail, stats.mailBytes]).toEqual([3, 150])
        }).pipe(withStore({
          mailboxMaxMessagesPerRecipient: 10,
          mailboxMaxBytesPerRecipient: 100,
          mailboxMaxMessagesTotal: 10,
          mailboxMaxBytesTotal: 150
        })))

      it.effect("ATTACK: a full mailbox gives a sender holding less the place of the largest holder's oldest mail; the largest cannot push others out", () =>
        Effect.gen(function*() {
          const store = yield* ChatStore
          const held = Effect.map(store.mailFor(key(1), 10), (items) => items.map((item) => labelOf(item.id)))
          // A flood fills the mailbox (one key here; any number of keys and networks fill it the same way).
          for (const n of [1, 2, 3, 4]) yield* store.storeMail(newMail(`f${n}`, { senderKey: "flooder", storedAt: n }))
          const more = yield* Effect.flip(store.storeMail(newMail("f5", { senderKey: "flooder", storedAt: 5 })))
          expect(more).toMatchObject({ _tag: "MailboxFull", scope: "recipient", measure: "messages" })
          // Before: honest mail was refused the same way. Now it takes the place of the flood's oldest.
          expect(yield* store.checkMail(newMail("h1", { senderKey: "honest", storedAt: 6 }))).toBe("new")
          expect(yield* held).toEqual(["f1", "f2", "f3", "f4"])
          expect(yield* store.storeMail(newMail("h1", { senderKey: "honest", storedAt: 6 }))).toBe("new")
          expect(yield* store.storeMail(newMail("h2", { senderKey: "honest", storedAt: 7 }))).toBe("new")
          expect(yield* held).toEqual(["f3", "f4", "h1", "h2"])
          // An evicted mail is no longer seen: its sender may store it again (here refused by the full mailbox, not as a duplicate).
          expect(yield* store.isSeen(mid("f1"))).toBe(false)
          expect(yield* Effect.flip(store.storeMail(newMail("f1", { senderKey: "flooder", storedAt: 8 })))).toMatchObject({ scope: "recipient" })
          // Even now: neither holds more than the other would after a swap, so nobody is pushed out.
          const honestMore = yield* Effect.flip(store.storeMail(newMail("h3", { senderKey: "honest", storedAt: 8 })))
          expect(honestMore).toMatchObject({ scope: "recipient" })
          const floodMore = yield* Effect.flip(store.storeMail(newMail("f6", { senderKey: "flooder", storedAt: 9 })))
          expect(floodMore).toMatchObject({ scope: "recipient" })
          // By network too: a source holding less takes a place from the source holding most.
          expect(yield* store.storeMail(newMail("s1", { source: "net:10.0.0.0/24", storedAt: 10 }))).toBe("new")
          expect(yield* held).toEqual(["f4", "h1", "h2", "s1"])
          // Mail with neither a sender key nor a source never takes a place.
          expect(yield* Effect.flip(store.storeMail(newMail("anon", { storedAt: 11 })))).toMatchObject({ scope: "recipient" })
          expect(yield* store.isSeen(mid("anon"))).toBe(false)
        }).pipe(withStore({ mailboxMaxMessagesPerRecipient: 4 })))

      it.effect("a newcomer refused after all keeps nothing it evicted on the way (the mailbox is as it was)", () =>
        Effect.gen(function*() {
          const store = yield* ChatStore
          for (const n of [1, 2, 3]) yield* store.storeMail(newMail(`f${n}`, { senderKey: "flooder", size: 30, storedAt: n }))
          // 90 of 100 bytes held; 95 more need all three gone, but after two the flood would hold no more than the newcomer.
          const big = yield* Effect.flip(store.storeMail(newMail("big", { senderKey: "honest", size: 95, storedAt: 4 })))
          expect(big).toMatchObject({ scope: "recipient", measure: "bytes" })
          expect((yield* store.mailFor(key(1), 10)).map((item) => labelOf(item.id))).toEqual(["f1", "f2", "f3"])
          expect(yield* store.isSeen(mid("f1"))).toBe(true)
          const stats = yield* store.stats
          expect([stats.mail, stats.mailBytes]).toEqual([3, 90])
        }).pipe(withStore({ mailboxMaxMessagesPerRecipient: 10, mailboxMaxBytesPerRecipient: 100 })))

      it.effect("expired mail makes room before a quota refuses", () =>
        Effect.gen(function*() {
          const store = yield* ChatStore
          yield* store.storeMail(newMail("a", { storedAt: 0, expiresAt: 10 }))
          const refused = yield* Effect.flip(store.storeMail(newMail("b", { storedAt: 9 })))
          expect(refused).toMatchObject({ _tag: "MailboxFull", scope: "recipient", measure: "messages", limit: 1 })
          expect(yield* store.storeMail(newMail("b", { storedAt: 10 }))).toBe("new")
          expect((yield* store.mailFor(key(1), 10)).map((item) => labelOf(item.id))).toEqual(["b"])
        }).pipe(withStore({ mailboxMaxMessagesPerRecipient: 1 })))

      it.effect("the sender, source and postage a mail was stored with are read back", () =>
        Effect.gen(function*() {
          const store = yield* ChatStore
          yield* store.storeMail(newMail("p", {
            senderKey: "key-a",
            source: "host:10.0.0.1",
            postageJson: "{\"postage\":1}",
            expiresAt: 100,
            fullExpiresAt: 900
          }))
          expect(yield* store.mailFor(key(1), 10)).toEqual([{
            id: mid("p"),
            recipientKey: key(1),
            envelopeJson: "{\"mail\":\"p\"}",
            size: 10,
            storedAt: 0,
            expiresAt: 100,
            forwarded: false,
            senderKey: "key-a",
            source: "host:10.0.0.1",
            postageJson: "{\"postage\":1}",
            fullExpiresAt: 900
          }])
        }).pipe(withStore()))

      it.effect("one sender key takes at most its share of a mailbox; others still fit, and so does the sender elsewhere", () =>
        Effect.gen(function*() {
          const store = yield* ChatStore
          // Shares of a mailbox of 16: 16 / 8 = 2 mails and 1600 / 8 = 200 bytes (the floors are lower).
          yield* store.storeMail(newMail("a1", { senderKey: "flooder" }))
          yield* store.storeMail(newMail("a2", { senderKey: "flooder" }))
          const third = yield* Effect.flip(store.storeMail(newMail("a3", { senderKey: "flooder" })))
          expect(third).toMatchObject({ _tag: "MailboxFull", recipientKey: key(1), scope: "sender", measure: "messages", limit: 2 })
          expect(third.message).toContain("the limit of 2 messages for one sender in this mailbox is reached")
          expect(yield* store.isSeen(mid("a3"))).toBe(false)
          expect(yield* store.storeMail(newMail("h1", { senderKey: "honest" }))).toBe("new")
          expect(yield* store.storeMail(newMail("b1", { senderKey: "flooder", recipientKey: key(2) }))).toBe("new")
          // Mail with no sender key is counted for nobody's share.
          for (const id of ["n1", "n2", "n3"]) expect(yield* store.storeMail(newMail(id))).toBe("new")
          const bytes = yield* Effect.flip(store.storeMail(newMail("big", { senderKey: "heavy", size: 201 })))
          expect(bytes).toMatchObject({ scope: "sender", measure: "bytes", limit: 200 })
        }).pipe(withStore({
          mailboxMaxMessagesPerRecipient: 16,
          mailboxMaxBytesPerRecipient: 1600,
          mailboxMinSenderMessages: 1,
          mailboxMinSenderBytes: 1
        })))

      it.effect("one source takes at most its share of a mailbox, whatever sender keys it uses", () =>
        Effect.gen(function*() {
          const store = yield* ChatStore
          yield* store.storeMail(newMail("a1", { senderKey: "k1", source: "host:6.6.6.6" }))
          yield* store.storeMail(newMail("a2", { senderKey: "k2", source: "host:6.6.6.6" }))
          const third = yield* Effect.flip(store.storeMail(newMail("a3", { senderKey: "k3", source: "host:6.6.6.6" })))
          expect(third).toMatchObject({ _tag: "MailboxFull", scope: "source", measure: "messages", limit: 2 })
          expect(third.message).toContain("for one address in this mailbox")
          expect(yield* store.storeMail(newMail("h1", { senderKey: "k3", source: "host:1.2.3.4" }))).toBe("new")
          // A source of "" (a fellow relay's copy) is counted for no address.
          for (const id of ["r1", "r2", "r3"]) expect(yield* store.storeMail(newMail(id, { senderKey: `s-${id}` }))).toBe("new")
        }).pipe(withStore({ mailboxMaxMessagesPerRecipient: 16, mailboxMinSenderMessages: 1 })))

      it.effect("one sender or source takes at most its share of the total, over every mailbox", () =>
        Effect.gen(function*() {
          const store = yield* ChatStore
          // Total 64: one sender's share is 64 / 16 = 4 (a mailbox's share, 16 / 8 = 2, is smaller).
          for (let n = 1; n <= 4; n++) {
            expect(yield* store.storeMail(newMail(`s${n}`, { senderKey: "spread", recipientKey: key(n) }))).toBe("new")
          }
          const fifth = yield* Effect.flip(store.storeMail(newMail("s5", { senderKey: "spread", recipientKey: key(5) })))
          expect(fifth).toMatchObject({ scope: "senderTotal", measure: "messages", limit: 4 })
          expect(fifth.message).toContain("for one sender in total")
          for (let n = 1; n <= 4; n++) {
            yield* store.storeMail(newMail(`h${n}`, { senderKey: `key${n}`, source: "host:9.9.9.9", recipientKey: key(10 + n) }))
          }
          const fromSource = yield* Effect.flip(store.storeMail(newMail("h5", { senderKey: "key5", source: "host:9.9.9.9", recipientKey: key(20) })))
          expect(fromSource).toMatchObject({ scope: "sourceTotal", measure: "messages", limit: 4 })
          // Removing mail gives the share back.
          expect(yield* store.removeMail(key(1), [mid("s1")])).toBe(1)
          expect(yield* store.storeMail(newMail("s5", { senderKey: "spread", recipientKey: key(5) }))).toBe("new")
        }).pipe(withStore({
          mailboxMaxMessagesPerRecipient: 16,
          mailboxMaxMessagesTotal: 64,
          mailboxMinSenderMessages: 1
        })))

      it.effect("checkMail predicts storeMail without storing anything", () =>
        Effect.gen(function*() {
          const store = yield* ChatStore
          expect(yield* store.checkMail(newMail("a", { senderKey: "s" }))).toBe("new")
          expect(yield* store.mailFor(key(1), 10)).toEqual([])
          expect(yield* store.isSeen(mid("a"))).toBe(false)
          yield* store.storeMail(newMail("a", { senderKey: "s" }))
          expect(yield* store.checkMail(newMail("a", { senderKey: "s" }))).toBe("duplicate")
          expect(yield* Effect.flip(store.checkMail(newMail("b", { senderKey: "s" })))).toMatchObject({ scope: "sender", limit: 1 })
          expect(yield* store.checkMail(newMail("b", { senderKey: "t" }))).toBe("new")
          expect((yield* store.stats).mail).toBe(1)
        }).pipe(withStore({ mailboxMaxMessagesPerRecipient: 8, mailboxMinSenderMessages: 1 })))

      it.effect("extendMail gives a recipient's mail its full expiry back, and only that recipient's", () =>
        Effect.gen(function*() {
          const store = yield* ChatStore
          yield* store.storeMail(newMail("junk", { expiresAt: 60, fullExpiresAt: 1000 }))
          yield* store.storeMail(newMail("full", { expiresAt: 1000 }))
          yield* store.storeMail(newMail("other", { recipientKey: key(2), expiresAt: 60, fullExpiresAt: 1000 }))
          expect(yield* store.extendMail(key(1))).toBe(1)
          expect(yield* store.extendMail(key(1))).toBe(0)
          expect((yield* store.mailFor(key(1), 10)).map((item) => [labelOf(item.id), item.expiresAt])).toEqual([["full", 1000], ["junk", 1000]])
          expect(yield* store.expireMail(60)).toBe(1)
          expect(yield* store.mailFor(key(2), 10)).toEqual([])
          expect(yield* store.extendMail(key(3))).toBe(0)
        }).pipe(withStore()))
    })

    describe("seen ids", () => {
      it.effect("markSeen reports duplicates without refreshing them; pruneSeen forgets old ids", () =>
        Effect.gen(function*() {
          const store = yield* ChatStore
          expect(yield* store.markSeen(mid("a"), 1)).toBe(false)
          expect(yield* store.markSeen(mid("a"), 8)).toBe(true)
          expect(yield* store.markSeen(mid("b"), 5)).toBe(false)
          expect(yield* store.markSeen(mid("c"), 10)).toBe(false)
          expect(yield* store.isSeen(mid("nope"))).toBe(false)
          expect(yield* store.pruneSeen(5)).toBe(1)
          expect([yield* store.isSeen(mid("a")), yield* store.isSeen(mid("b")), yield* store.isSeen(mid("c"))]).toEqual([false, true, true])
          expect(yield* store.pruneSeen(5)).toBe(0)
          expect(yield* store.markSeen(mid("a"), 11)).toBe(false)
        }).pipe(withStore()))

      it.effect("beyond its capacity the seen set forgets the earliest-marked ids", () =>
        Effect.gen(function*() {
          const store = yield* ChatStore
          // Marking order, not the timestamps, decides what goes first.
          yield* store.markSeen(mid("a"), 30)
          yield* store.markSeen(mid("b"), 10)
          yield* store.markSeen(mid("c"), 20)
          yield* store.markSeen(mid("d"), 5)
          expect((yield* store.stats).seen).toBe(3)
          const seen = (id: string) => store.isSeen(mid(id))
          expect([yield* seen("a"), yield* seen("b"), yield* seen("c"), yield* seen("d")]).toEqual([false, true, true, true])
          // Messages and mail count against the same capacity.
          yield* store.recordReceived(incoming("m"))
          yield* store.storeMail(newMail("n"))
          expect([yield* seen("b"), yield* seen("c"), yield* seen("d"), yield* seen("m"), yield* seen("n")])
            .toEqual([false, false, true, true, true])
          expect((yield* store.stats).seen).toBe(3)
        }).pipe(withStore({ seenCapacity: 3 })))
    })

    describe("DHT records", () => {
      it.effect("records are served while live, replaced by key and expired", () =>
        Effect.gen(function*() {
          const store = yield* ChatStore
          yield* store.putRecord(key(9), "{\"v\":1}", 100, "k9")
          yield* store.putRecord(key(3), "{\"other\":1}", 50, "k3")
          expect(yield* store.getRecord(key(9), 99)).toEqual(Option.some({ key: key(9), recordJson: "{\"v\":1}", expiresAt: 100 }))
          expect(yield* store.getRecord(key(9), 100)).toEqual(Option.none())
          expect(yield* store.getRecord(key(4), 0)).toEqual(Option.none())
          yield* store.putRecord(key(9), "{\"v\":2}", 200, "k9")
          expect(Option.map(yield* store.getRecord(key(9), 150), (record) => record.recordJson)).toEqual(Option.some("{\"v\":2}"))
          expect((yield* store.allRecords).map((record) => record.key)).toEqual([key(3), key(9)])
          expect(yield* store.expireRecords(100)).toBe(1)
          expect(yield* store.allRecords).toEqual([{ key: key(9), recordJson: "{\"v\":2}", expiresAt: 200 }])
          expect(yield* store.expireRecords(100)).toBe(0)
        }).pipe(withStore()))

      it.effect("a new key beyond maxRecords is refused; existing keys still update", () =>
        Effect.gen(function*() {
          const store = yield* ChatStore
          yield* store.putRecord(key(1), "1", 10, "k")
          yield* store.putRecord(key(2), "2", 100, "k")
          expect(yield* Effect.flip(store.putRecord(key(3), "3", 100, "k"))).toMatchObject({ _tag: "RecordsFull", limit: 2 })
          yield* store.putRecord(key(1), "1b", 20, "k")
          expect(yield* store.expireRecords(20)).toBe(1)
          yield* store.putRecord(key(3), "3", 100, "k")
          expect((yield* store.allRecords).map((record) => record.recordJson)).toEqual(["2", "3"])
        }).pipe(withStore({ maxRecords: 2 })))

      it.effect("countRecordsOf counts the live records of one signing key, one key left out; removeRecord drops one", () =>
        Effect.gen(function*() {
          const store = yield* ChatStore
          yield* store.putRecord(key(1), "1", 100, "alice")
          yield* store.putRecord(key(2), "2", 100, "alice")
          yield* store.putRecord(key(3), "3", 10, "alice")
          yield* store.putRecord(key(4), "4", 100, "bob")
          expect(yield* store.countRecordsOf("alice", 50, key(9))).toBe(2)
          expect(yield* store.countRecordsOf("alice", 5, key(9))).toBe(3)
          expect(yield* store.countRecordsOf("alice", 50, key(1))).toBe(1)
          expect(yield* store.countRecordsOf("carol", 0, key(9))).toBe(0)
          // A replaced record counts for its new key.
          yield* store.putRecord(key(2), "2b", 100, "bob")
          expect([yield* store.countRecordsOf("alice", 50, key(9)), yield* store.countRecordsOf("bob", 50, key(9))]).toEqual([1, 2])
          expect(yield* store.removeRecord(key(1))).toBe(true)
          expect(yield* store.removeRecord(key(1))).toBe(false)
          expect(yield* store.countRecordsOf("alice", 50, key(9))).toBe(0)
          expect((yield* store.allRecords).map((record) => record.key)).toEqual([key(2), key(3), key(4)])
        }).pipe(withStore()))
    })

    describe("routing-table snapshot", () => {
      it.effect("a snapshot replaces the previous one as a whole, most recently seen first", () =>
        Effect.gen(function*() {
          const store = yield* ChatStore
          expect(yield* store.loadRoutingSnapshot).toEqual([])
          yield* store.saveRoutingSnapshot([contact(1, 10), contact(2, 30), contact(3, 20), contact(4, 20)])
          expect(yield* store.loadRoutingSnapshot).toEqual([contact(2, 30), contact(3, 20), contact(4, 20), contact(1, 10)])
          yield* store.saveRoutingSnapshot([contact(5, 1)])
          expect(yield* store.loadRoutingSnapshot).toEqual([contact(5, 1)])
          yield* store.saveRoutingSnapshot([])
          expect(yield* store.loadRoutingSnapshot).toEqual([])
        }).pipe(withStore()))

      it.effect("a snapshot keeps one entry per node and only the most recently seen within its bound", () =>
        Effect.gen(function*() {
          const store = yield* ChatStore
          yield* store.saveRoutingSnapshot([contact(1, 10), contact(2, 30), { ...contact(1, 40), port: 9 }, contact(3, 20)])
          expect(yield* store.loadRoutingSnapshot).toEqual([{ ...contact(1, 40), port: 9 }, contact(2, 30)])
          expect((yield* store.stats).snapshotContacts).toBe(2)
        }).pipe(withStore({ maxSnapshotContacts: 2 })))
    })

    describe("pinned keys", () => {
      it.effect("a name has no pin until one is stored; a new pin replaces the name's old one", () =>
        Effect.gen(function*() {
          const store = yield* ChatStore
          expect(yield* store.pinOf(user("bob"))).toEqual(Option.none())
          const first = pinFor("bob", 1, 100)
          yield* store.pin(first)
          expect(yield* store.pinOf(user("bob"))).toEqual(Option.some({
            username: "bob",
            signingKey: signingKey(1),
            fingerprint: first.fingerprint,
            pinnedAt: 100,
            source: "first-use"
          }))
          expect(yield* store.pinOf(user("carol"))).toEqual(Option.none())
          const accepted = pinFor("bob", 2, 200, "trusted")
          yield* store.pin(accepted)
          expect(yield* store.pinOf(user("bob"))).toEqual(Option.some(accepted))
          yield* store.pin(pinFor("bob", 2, 300, "verified"))
          expect(Option.map(yield* store.pinOf(user("bob")), (pin) => [pin.pinnedAt, pin.source])).toEqual(Option.some([300, "verified"]))
          expect(yield* store.pins).toHaveLength(1)
          expect((yield* store.stats).pins).toBe(1)
        }).pipe(withStore()))

      it.effect("pins lists every pin by username", () =>
        Effect.gen(function*() {
          const store = yield* ChatStore
          expect(yield* store.pins).toEqual([])
          for (const [name, keyNumber] of [["dave", 4], ["bob", 2], ["carol.b", 3], ["carol", 5], ["alice_2", 1]] as const) {
            yield* store.pin(pinFor(name, keyNumber, keyNumber))
          }
          expect((yield* store.pins).map((pin) => [pin.username, pin.signingKey])).toEqual([
            ["alice_2", signingKey(1)],
            ["bob", signingKey(2)],
            ["carol", signingKey(5)],
            ["carol.b", signingKey(3)],
            ["dave", signingKey(4)]
          ])
          expect((yield* store.stats).pins).toBe(5)
        }).pipe(withStore()))

      it.effect("a new name beyond maxPins is refused; pinned names can still be re-pinned", () =>
        Effect.gen(function*() {
          const store = yield* ChatStore
          yield* store.pin(pinFor("alice", 1, 1))
          yield* store.pin(pinFor("bob", 2, 2))
          const refused = yield* Effect.flip(store.pin(pinFor("carol", 3, 3)))
          expect(refused).toMatchObject({ _tag: "PinsFull", username: "carol", limit: 2 })
          expect(refused.message).toContain("carol")
          expect(yield* store.pinOf(user("carol"))).toEqual(Option.none())
          yield* store.pin(pinFor("alice", 9, 10, "trusted"))
          expect((yield* store.pins).map((pin) => [pin.username, pin.signingKey, pin.source])).toEqual([
            ["alice", signingKey(9), "trusted"],
            ["bob", signingKey(2), "first-use"]
          ])
        }).pipe(withStore({ maxPins: 2 })))

      it.effect("a pin whose fingerprint is not its key's is a defect and is not stored", () =>
        Effect.gen(function*() {
          const store = yield* ChatStore
          yield* store.pin(pinFor("bob", 1, 1))
          const forged: ContactPin = { ...pinFor("bob", 2, 2), fingerprint: fingerprintOf(signingKey(3)) }
          const exit = yield* Effect.exit(store.pin(forged))
          expect(Exit.isFailure(exit) && Cause.isDie(exit.cause)).toBe(true)
          expect(Option.map(yield* store.pinOf(user("bob")), (pin) => pin.signingKey)).toEqual(Option.some(signingKey(1)))
          expect((yield* store.stats).pins).toBe(1)
        }).pipe(withStore()))
    })
  })
}
