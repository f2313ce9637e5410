/**
 * Mail a recipient cannot accept yet stays at its relays: a pull
 * acknowledges only what it took and what can never be taken. Before, any
 * refusal but "sender unknown" was acknowledged as junk, so mail dated a
 * few minutes into the recipient's future (a sender whose clock runs fast)
 * was deleted at every relay, and the relays then answered the sender's
 * next copy `Duplicate`, which counted as stored: lost for good.
 */
import { describe, expect, it } from "@effect/vitest"
import { Clock, Duration, Effect, TestClock } from "effect"
import { SendMessage, StoreMail } from "../../src/chat/ChatProtocol.js"
import { MessageCrypto } from "../../src/chat/MessageCrypto.js"
import { toHex } from "../../src/core/Bytes.js"
import { signPostage } from "../../src/core/Mail.js"
import { makeChatMessage } from "../../src/core/Message.js"
import type { PublicKeyHex } from "../../src/core/UserRecord.js"
import { userKey } from "../../src/core/Username.js"
import { MemoryNetwork } from "../../src/platform/MemoryTransport.js"
import * as NodeMessageCrypto from "../../src/platform/NodeMessageCrypto.js"
import { type ChatNode, historyTexts, makeChatNetwork, username as name } from "../support/chatNetwork.js"
import { at, nodeSeeds } from "../support/memoryNetwork.js"
import { deterministic } from "../support/deterministic.js"

const config = { k: 4, alpha: 3, maintenanceInterval: Duration.minutes(10) }
const chat = { senderPollInterval: Duration.seconds(10), relayPushInterval: Duration.minutes(1), mailboxFetchInterval: Duration.minutes(5) }

/** Alice's message to bob, dated `sentAt` by her (fast) clock, sealed to bob's key. */
const dated = (alice: ChatNode, bob: ChatNode, text: string, sentAt: number) =>
  Effect.gen(function*() {
    const record = yield* alice.directory.whois("alice")
    const message = makeChatMessage({
      from: name("alice"),
      to: name("bob"),
      senderSigningKey: toHex(alice.identity.signingPublicKey) as PublicKeyHex,
      senderRecord: record,
      sequence: 1,
      sentAt,
      text
    })
    if (message._tag === "Left") return yield* Effect.die(message.left)
    const seeds = nodeSeeds(alice.index)
    const crypto = yield* MessageCrypto.pipe(Effect.provide(NodeMessageCrypto.layerFromSeeds(seeds.signing, seeds.encryption)))
    const sealed = yield* crypto.seal(message.right, toHex(bob.identity.encryptionPublicKey) as PublicKeyHex)
    return { envelope: sealed.envelope, record }
  })

const mailHeld = (nodes: ReadonlyArray<ChatNode>) =>
  Effect.reduce(nodes, 0, (held, node) => Effect.map(node.chatStore.stats, (stats) => held + stats.mail))

describe("mail a recipient cannot accept yet", () => {
  it.scoped("mail dated in the recipient's future stays at the relays until it is due, then is taken", () =>
    deterministic(Effect.gen(function*() {
      const network = yield* MemoryNetwork.make
      const nodes = yield* makeChatNetwork(network, 9, { config, chat })
      const alice = at(nodes, 1)
      const bob = at(nodes, 2)
      yield* alice.directory.register("alice")
      yield* bob.directory.register("bob")
      yield* network.setOnline(bob.address, false)
      const now = yield* Clock.currentTimeMillis
      const { envelope, record } = yield* dated(alice, bob, "from a fast clock", now + 10 * 60_000)
      const mail = { _tag: "Message" as const, envelope }
      const postage = signPostage({ mail, sender: record, expiresAt: now + Duration.toMillis(Duration.days(14)), sign: alice.identity.sign })
      const relays = (yield* alice.dht.findNode(userKey(name("bob")))).closest.filter((contact) => contact.nodeId !== bob.nodeId)
      for (const relay of relays) yield* Effect.either(alice.transport.send(relay, new StoreMail({ mail, postage })))
      const stored = yield* mailHeld(nodes)
      expect(stored).toBeGreaterThan(0)
      // Sent directly, it is refused for now (the sender keeps it and tries again), not as invalid.
      yield* network.setOnline(bob.address, true)
      expect(yield* Effect.flip(alice.transport.send(bob, new SendMessage({ envelope })))).toMatchObject({
        _tag: "MessageRefused",
        reason: "SenderUnknown"
      })
      // Bob pulls now: nothing taken, and every relay still holds it.
      yield* bob.delivery.pullMailbox
      expect(yield* mailHeld(nodes)).toBe(stored)
      expect(yield* historyTexts(bob, "alice")).toEqual([])
      // Ten minutes on, the same pull takes it, once, and the relays let it go.
      yield* TestClock.adjust(Duration.minutes(10))
      yield* bob.delivery.pullMailbox
      expect(yield* historyTexts(bob, "alice")).toEqual(["alice:from a fast clock:received"])
      expect(yield* mailHeld(nodes)).toBeLessThan(stored)
    }), 31))

  it.scoped("a message pulled from several relays is answered to each, and its receipt carried back once", () =>
    deterministic(Effect.gen(function*() {
      // Before: each relay's copy sent a receipt on its way back to the sender, k carries a message (each
      // a lookup and k StoreMails when the sender is away), which crowded other senders' receipts out
      // of the 1,000-place queue (a review's run: 5 messages, 20 carries at k = 4).
      const network = yield* MemoryNetwork.make
      const nodes = yield* makeChatNetwork(network, 12, { config, chat })
      const alice = at(nodes, 1)
      const bob = at(nodes, 2)
      yield* alice.directory.register("alice")
      yield* bob.directory.register("bob")
      yield* network.setOnline(bob.address, false)
      for (let index = 0; index < 5; index++) yield* alice.messenger.send("bob", `m${index}`)
      yield* Effect.repeatN(TestClock.adjust(Duration.seconds(1)), 3)
      yield* network.setOnline(alice.address, false)
      yield* network.setOnline(bob.address, true)
      yield* bob.delivery.pullMailbox
      expect(yield* historyTexts(bob, "alice")).toEqual(["m0", "m1", "m2", "m3", "m4"].map((text) => `alice:${text}:received`))
      // The receipts go back in the background, to alice's relays (she is away).
      yield* Effect.repeatN(TestClock.adjust(Duration.seconds(1)), 60)
      expect((yield* bob.delivery.stats).receiptsForwarded).toBe(5)
    }), 37))
})
