import { describe, expect, it } from "@effect/vitest"
import { Chunk, Duration, Effect, Fiber, Option, Stream, TestClock } from "effect"
import type { ChatConfigShape } from "../../src/chat/ChatConfig.js"
import { MessageCrypto } from "../../src/chat/MessageCrypto.js"
import { fromBase64, makeChatMessage, toBase64 } from "../../src/core/Message.js"
import type { PublicKeyHex, UserRecord } from "../../src/core/UserRecord.js"
import { toHex } from "../../src/core/Bytes.js"
import { MemoryNetwork } from "../../src/platform/MemoryTransport.js"
import * as NodeMessageCrypto from "../../src/platform/NodeMessageCrypto.js"
import { SendMessage } from "../../src/chat/ChatProtocol.js"
import {
  type ChatNode,
  freshChatState,
  historyTexts as texts,
  makeChatNetwork,
  startChatNode,
  stopNode,
  username as name
} from "../support/chatNetwork.js"
import { at, nodeSeeds, signedRecord } from "../support/memoryNetwork.js"
import { deterministic as seededDeterministic, runSeconds as run } from "../support/deterministic.js"

const K = 4
const config = { k: K, alpha: 3, maintenanceInterval: Duration.minutes(10) }
/** Loops wake rarely, so tests that move the clock by days stay fast. */
const chat: Partial<ChatConfigShape> = {
  senderPollInterval: Duration.seconds(10),
  relayPushInterval: Duration.minutes(1),
  mailboxFetchInterval: Duration.minutes(5)
}

const deterministic = <A, E, R>(self: Effect.Effect<A, E, R>, seed = 11) =>
  seededDeterministic(self, seed)

const statusOf = (node: ChatNode, peer: string, id: string) =>
  Effect.map(node.messenger.history(peer), (entries) => entries.find((entry) => entry.id === id)?.status)

/** A network of `count` chat nodes where node 1 is alice and node 2 is bob. */
const aliceAndBob = (count: number, options: { readonly chat?: Partial<ChatConfigShape> } = {}) =>
  Effect.gen(function*() {
    const network = yield* MemoryNetwork.make
    const nodes = yield* makeChatNetwork(network, count, { config, chat: { ...chat, ...options.chat } })
    const alice = at(nodes, 1)
    const bob = at(nodes, 2)
    yield* alice.directory.register("alice")
    yield* bob.directory.register("bob")
    return { network, nodes, alice, bob }
  })

describe("Delivery", () => {
  it.scoped("direct: the message is durable before send returns, then delivered with a verified receipt", () =>
    deterministic(Effect.gen(function*() {
      const { alice, bob } = yield* aliceAndBob(8)
      const received = yield* bob.messenger.events.pipe(Stream.take(1), Stream.runCollect, Effect.fork)
      const sent = yield* alice.messenger.send("Bob", "hello bob")
      expect(sent).toMatchObject({ from: "alice", to: "bob", sequence: 1, status: "queued" })
      expect(yield* statusOf(alice, "bob", sent.id)).toBe("queued")
      const waiting = yield* Effect.fork(alice.messenger.awaitDelivery(sent.id, Duration.seconds(30)))
      yield* run(2)
      expect(yield* Fiber.join(waiting)).toBe("delivered")
      expect(yield* texts(alice, "bob")).toEqual(["alice:hello bob:delivered"])
      expect(yield* texts(bob, "alice")).toEqual(["alice:hello bob:received"])
      const [event] = Chunk.toReadonlyArray(yield* Fiber.join(received))
      expect(event).toMatchObject({ _tag: "Received", entry: { id: sent.id, from: "alice", text: "hello bob" } })
      expect((yield* bob.messenger.inbox)[0]).toMatchObject({ conversation: "alice", unread: 1 })
      expect((yield* alice.chatStore.stats).outbox).toBe(0)
    })))

  it.scoped("a conversation keeps (sentAt, sequence) order on both sides", () =>
    deterministic(Effect.gen(function*() {
      const { alice, bob } = yield* aliceAndBob(6)
      // Five messages in one millisecond (ordered by sequence), then a reply a millisecond later.
      for (let i = 1; i <= 5; i++) yield* alice.messenger.send("bob", `m${i}`)
      yield* TestClock.adjust(Duration.millis(1))
      yield* bob.messenger.send("alice", "reply")
      yield* run(3)
      const bobSide = yield* bob.messenger.history("alice")
      expect(bobSide.map((entry) => entry.text)).toEqual(["m1", "m2", "m3", "m4", "m5", "reply"])
      expect(bobSide.slice(0, 5).map((entry) => entry.sequence)).toEqual([1, 2, 3, 4, 5])
      expect((yield* alice.messenger.history("bob")).map((entry) => entry.status)).toEqual([
        "delivered", "delivered", "delivered", "delivered", "delivered", "received"
      ])
    })))

  it.scoped("clear errors: unknown user, oversized or blank text, self, unregistered sender", () =>
    deterministic(Effect.gen(function*() {
      const { alice, nodes } = yield* aliceAndBob(5)
      expect((yield* Effect.flip(alice.messenger.send("nobody", "hi")))._tag).toBe("UserNotFound")
      expect((yield* Effect.flip(alice.messenger.send("bob", "x".repeat(16_385))))._tag).toBe("MessageTooLong")
      // Nothing to read is not a message: refused before any lookup, as the control API reports it.
      expect((yield* Effect.flip(alice.messenger.send("bob", ""))).message).toBe("the message is empty: type some text to send")
      expect((yield* Effect.flip(alice.messenger.send("bob", " \n\t\u200b")))._tag).toBe("MessageEmpty")
      expect((yield* Effect.flip(alice.messenger.send("alice", "hi")))._tag).toBe("SelfMessage")
      expect((yield* Effect.flip(alice.messenger.send("no", "hi")))._tag).toBe("InvalidUsername")
      expect((yield* Effect.flip(at(nodes, 3).messenger.send("bob", "hi")))._tag).toBe("NotRegistered")
      expect(yield* alice.messenger.history("bob")).toEqual([])
    })))

  it.scoped("recipient offline then back: relays hold it, the recipient pulls it, the sender learns it was delivered", () =>
    deterministic(Effect.gen(function*() {
      const { alice, bob, network } = yield* aliceAndBob(10)
      yield* network.setOnline(bob.address, false)
      const sent = yield* alice.messenger.send("bob", "while you were away")
      yield* run(3)
      expect(yield* statusOf(alice, "bob", sent.id)).toBe("stored-offline")
      yield* network.setOnline(bob.address, true)
      const pulled = yield* bob.delivery.pullMailbox
      expect(pulled.messages).toBeGreaterThanOrEqual(1)
      expect(yield* texts(bob, "alice")).toEqual(["alice:while you were away:received"])
      yield* run(3)
      expect(yield* statusOf(alice, "bob", sent.id)).toBe("delivered")
      // Every relay was told to delete it: nothing is pushed or pulled again.
      yield* run(120)
      expect(yield* texts(bob, "alice")).toEqual(["alice:while you were away:received"])
    })))

  it.scoped("sender and recipient never online together: relays carry the message one way and the receipt back", () =>
    deterministic(Effect.gen(function*() {
      const { alice, bob, network } = yield* aliceAndBob(12)
      yield* network.setOnline(bob.address, false)
      const sent = yield* alice.messenger.send("bob", "see you never")
      yield* run(3)
      expect(yield* statusOf(alice, "bob", sent.id)).toBe("stored-offline")
      yield* network.setOnline(alice.address, false)
      yield* network.setOnline(bob.address, true)
      yield* run(5 * 60) // bob's periodic mailbox pull
      expect(yield* texts(bob, "alice")).toEqual(["alice:see you never:received"])
      yield* network.setOnline(bob.address, false)
      yield* network.setOnline(alice.address, true)
      yield* run(5 * 60)
      expect(yield* statusOf(alice, "bob", sent.id)).toBe("delivered")
    })))

  it.scoped("mail survives relays churning while it waits (hourly re-replication)", () =>
    deterministic(Effect.gen(function*() {
      // Every virtual wake-up costs real milliseconds under TestClock: the loops that play no part here wake rarely.
      const { alice, bob, network, nodes } = yield* aliceAndBob(16, {
        chat: { senderPollInterval: Duration.minutes(10), relayPushInterval: Duration.minutes(30) }
      })
      yield* network.setOnline(bob.address, false)
      const sent = yield* alice.messenger.send("bob", "still here?")
      yield* run(3)
      expect(yield* statusOf(alice, "bob", sent.id)).toBe("stored-offline")
      const holders = []
      for (const node of nodes) {
        if ((yield* node.chatStore.stats).mail > 0) holders.push(node)
      }
      expect(holders.length).toBeGreaterThan(0)
      // Half of the holders leave; the rest copy the mail to the new k closest within the hour.
      for (const holder of holders.slice(0, Math.ceil(holders.length / 2))) yield* stopNode(holder)
      for (let minute = 0; minute < 75; minute++) yield* TestClock.adjust(Duration.minutes(1))
      // Now every original holder is gone.
      for (const holder of holders.slice(Math.ceil(holders.length / 2))) yield* stopNode(holder)
      yield* network.setOnline(bob.address, true)
      // Bob was away long enough to lose every contact, and his bootstrap node is gone: he rejoins
      // through the peers he saw last, and his periodic pull finds the mail at its new holders.
      expect(yield* bob.routing.contactCount).toBe(0)
      for (let minute = 0; minute < 15; minute++) yield* TestClock.adjust(Duration.minutes(1))
      expect(yield* bob.routing.contactCount).toBeGreaterThan(0)
      expect(yield* texts(bob, "alice")).toEqual(["alice:still here?:received"])
    })))

  it.scoped("moving: the same state on a new address keeps history and outbox, and peers reach the new address", () =>
    deterministic(Effect.gen(function*() {
      const { alice, bob, network, nodes } = yield* aliceAndBob(8)
      yield* alice.messenger.send("bob", "before the move")
      yield* run(2)
      // Alice queues a message while cut off, then moves before it could leave.
      yield* network.setOnline(alice.address, false)
      const pending = yield* alice.messenger.send("bob", "written offline")
      yield* stopNode(alice)
      const moved = yield* startChatNode(network, alice.index, {
        config: { ...config, bootstrap: [at(nodes, 0).address] },
        chat,
        state: { storeConfig: alice.storeConfig, chatStore: alice.chatStore, profiles: alice.profiles },
        address: { host: "127.1.0.1", port: 7001 }
      })
      yield* moved.dht.awaitJoined
      yield* run(3)
      expect(yield* texts(moved, "bob")).toEqual(["alice:before the move:delivered", "alice:written offline:delivered"])
      expect(yield* statusOf(bob, "alice", pending.id)).toBe("received")
      // Bob finds alice at her new address.
      const record = yield* bob.directory.whois("alice")
      expect(record.addresses).toEqual([{ host: "127.1.0.1", port: 7001 }])
      yield* bob.messenger.send("alice", "found you")
      yield* run(3)
      expect(yield* texts(moved, "bob")).toContain("bob:found you:received")
    })))

  it.scoped("a relay quota refuses loudly: the message stays queued, nothing is dropped", () =>
    deterministic(Effect.gen(function*() {
      const network = yield* MemoryNetwork.make
      const nodes: Array<ChatNode> = []
      for (let index = 0; index < 7; index++) {
        const state = yield* freshChatState({ mailboxMaxMessagesPerRecipient: 1 })
        const node = yield* startChatNode(network, index, {
          config: { ...config, bootstrap: index === 0 ? [] : [at(nodes, 0).address] },
          chat,
          state
        })
        yield* node.dht.awaitJoined
        nodes.push(node)
      }
      const alice = at(nodes, 1)
      const bob = at(nodes, 2)
      yield* alice.directory.register("alice")
      yield* bob.directory.register("bob")
      yield* network.setOnline(bob.address, false)
      const first = yield* alice.messenger.send("bob", "first")
      const second = yield* alice.messenger.send("bob", "second")
      yield* run(5)
      expect(yield* statusOf(alice, "bob", first.id)).toBe("stored-offline")
      expect(yield* statusOf(alice, "bob", second.id)).toBe("queued")
      // Stored offline is not the end: both wait in the outbox for their receipts.
      expect((yield* alice.chatStore.stats).outbox).toBe(2)
      // Once bob is back and has emptied his mailbox, the second goes through too.
      yield* network.setOnline(bob.address, true)
      yield* bob.delivery.pullMailbox
      yield* run(10 * 60)
      expect(yield* texts(bob, "alice")).toEqual(["alice:first:received", "alice:second:received"])
      expect(yield* texts(alice, "bob")).toEqual(["alice:first:delivered", "alice:second:delivered"])
      expect((yield* alice.chatStore.stats).outbox).toBe(0)
    })))

  it.scoped("relays that say 'stored' and drop the mail cannot swallow it: the sender retries until a receipt arrives", () =>
    deterministic(Effect.gen(function*() {
      const { alice, bob, network, nodes } = yield* aliceAndBob(9)
      // Every other node lies: it answers StoreMail with "Stored" and keeps nothing.
      for (const liar of nodes.filter((node) => node !== alice && node !== bob)) {
        yield* liar.transport.serve({ StoreMail: () => Effect.succeed({ outcome: "Stored" as const }) })
      }
      yield* network.setOnline(bob.address, false)
      const sent = yield* alice.messenger.send("bob", "do not lose me")
      yield* run(5)
      expect(yield* statusOf(alice, "bob", sent.id)).toBe("stored-offline")
      // Bob returns; his mailbox is empty (the relays lied), but alice's sender tries him again.
      yield* network.setOnline(bob.address, true)
      yield* bob.delivery.pullMailbox
      expect(yield* texts(bob, "alice")).toEqual([])
      yield* run(11 * 60)
      expect(yield* texts(bob, "alice")).toEqual(["alice:do not lose me:received"])
      expect(yield* statusOf(alice, "bob", sent.id)).toBe("delivered")
      expect((yield* alice.chatStore.stats).outbox).toBe(0)
    })), { timeout: 60_000 })

  it.scoped("mail expires at relays after its TTL", () =>
    deterministic(Effect.gen(function*() {
      const { alice, bob, network, nodes } = yield* aliceAndBob(8, {
        chat: {
          mailTtl: Duration.hours(6),
          senderPollInterval: Duration.minutes(10),
          relayPushInterval: Duration.hours(1),
          mailboxFetchInterval: Duration.hours(6)
        }
      })
      yield* network.setOnline(bob.address, false)
      yield* alice.messenger.send("bob", "too late")
      yield* run(3)
      let held = 0
      for (const node of nodes) held += (yield* node.chatStore.stats).mail
      expect(held).toBeGreaterThan(0)
      yield* TestClock.adjust(Duration.hours(7))
      held = 0
      for (const node of nodes) held += (yield* node.chatStore.stats).mail
      expect(held).toBe(0)
    })))

  describe("the acceptor", () => {
    /** A message "from" `from`, signed by `node` and carrying `record`, sealed to `to`. */
    const sealedBy = (node: ChatNode, from: string, to: ChatNode, text: string, record: UserRecord) =>
      Effect.gen(function*() {
        const message = makeChatMessage({
          from: name(from),
          to: name("bob"),
          senderSigningKey: toHex(node.identity.signingPublicKey) as PublicKeyHex,
          senderRecord: record,
          sequence: 1,
          sentAt: 1000,
          text
        })
        if (message._tag === "Left") return yield* Effect.die(message.left)
        const seeds = nodeSeeds(node.index)
        const crypto = yield* MessageCrypto.pipe(Effect.provide(NodeMessageCrypto.layerFromSeeds(seeds.signing, seeds.encryption)))
        return yield* crypto.seal(message.right, toHex(to.identity.encryptionPublicKey) as PublicKeyHex)
      })

    it.scoped("refuses a forged sender and a tampered ciphertext; stores a duplicate once and answers it with a receipt", () =>
      deterministic(Effect.gen(function*() {
        const { alice, bob, nodes } = yield* aliceAndBob(6)
        const mallory = at(nodes, 3)
        yield* mallory.directory.register("mallory")
        // Mallory signs with her own key but claims to be alice: with her own record, with alice's
        // (stolen from the directory), or with a claim of "alice" she signed herself, which the network contradicts.
        const aliceRecord = yield* alice.directory.whois("alice")
        const mallorys = yield* mallory.directory.whois("mallory")
        const squat = signedRecord(mallory, name("alice"), { issuedAt: 0, expiresAt: Duration.toMillis(Duration.days(7)) })
        for (const carried of [mallorys, aliceRecord, squat]) {
          const forged = yield* sealedBy(mallory, "alice", bob, "it is me, alice", carried)
          const refused = yield* Effect.flip(mallory.transport.send(bob, new SendMessage({ envelope: forged.envelope })))
          expect(refused).toMatchObject({ _tag: "MessageRefused", reason: "Invalid" })
        }
        // Nothing was pinned for alice on the way.
        expect(Option.isNone(yield* bob.chatStore.pinOf(name("alice")))).toBe(true)

        const genuine = yield* sealedBy(alice, "alice", bob, "genuine", aliceRecord)
        const bytes = fromBase64(genuine.envelope.ciphertext)
        if (bytes === undefined) return yield* Effect.die("bad base64")
        bytes[10] = (bytes[10] ?? 0) ^ 1
        const tampered = { ...genuine.envelope, ciphertext: toBase64(bytes) as typeof genuine.envelope.ciphertext }
        const broken = yield* Effect.flip(alice.transport.send(bob, new SendMessage({ envelope: tampered })))
        expect(broken).toMatchObject({ _tag: "MessageRefused", reason: "Invalid" })

        // The same envelope twice (a retry, or a relay replaying it): stored once, acknowledged twice.
        const first = yield* alice.transport.send(bob, new SendMessage({ envelope: genuine.envelope }))
        const again = yield* mallory.transport.send(bob, new SendMessage({ envelope: genuine.envelope }))
        expect(first.value.receipt.messageId).toBe(genuine.id)
        expect(again.value.receipt.messageId).toBe(genuine.id)
        expect(yield* texts(bob, "alice")).toEqual(["alice:genuine:received"])
        expect(yield* texts(bob, "mallory")).toEqual([])
      })))

    it.scoped("refuses an envelope for another user", () =>
      deterministic(Effect.gen(function*() {
        const { alice, bob, nodes } = yield* aliceAndBob(5)
        const carol = at(nodes, 3)
        yield* carol.directory.register("carol")
        const forBob = yield* sealedBy(alice, "alice", bob, "for bob", yield* alice.directory.whois("alice"))
        const refused = yield* Effect.flip(alice.transport.send(carol, new SendMessage({ envelope: forBob.envelope })))
        expect(refused).toMatchObject({ _tag: "MessageRefused", reason: "WrongRecipient" })
        expect(Option.isNone(yield* carol.chatStore.message(forBob.id))).toBe(true)
      })))
  })
})
