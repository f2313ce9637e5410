/**
 * Self-certifying envelopes over the in-memory network: every message
 * carries its sender's signed user record, so the recipient checks the sender
 * without a lookup when it has pinned the name, accepts (without pinning)
 * a sender the network cannot vouch for because it is slow, partitioned or
 * has lost the record, and still refuses anyone else's key for a pinned name
 * or for a name whose owner the network knows. Tampering with the carried
 * record breaks the message; the receipt of a message that came through a
 * relay goes back to the address in the carried record.
 */
import type { DhtHandlers } from "../../src/node/Transport.js"
import { describe, expect, it } from "@effect/vitest"
import { Clock, Duration, Effect, Option, TestClock } from "effect"
import type { ChatConfigShape } from "../../src/chat/ChatConfig.js"
import { MessageCrypto } from "../../src/chat/MessageCrypto.js"
import { toHex } from "../../src/core/Bytes.js"
import { makeChatMessage } from "../../src/core/Message.js"
import type { NodeId } from "../../src/core/Id.js"
import type { PublicKeyHex, UserRecord } from "../../src/core/UserRecord.js"
import { userKey } from "../../src/core/Username.js"
import { RequestRefused } from "../../src/node/Protocol.js"
import { SendMessage } from "../../src/chat/ChatProtocol.js"
import { MemoryNetwork } from "../../src/platform/MemoryTransport.js"
import * as NodeMessageCrypto from "../../src/platform/NodeMessageCrypto.js"
import { type ChatNode, historyTexts as texts, makeChatNetwork, username as name } from "../support/chatNetwork.js"
import { at, nodeSeeds, signedRecord, trueClosest } from "../support/memoryNetwork.js"
import { deterministic as seededDeterministic, runSeconds as run } from "../support/deterministic.js"

const K = 4
const config = { k: K, alpha: 3, maintenanceInterval: Duration.minutes(10) }
const chat: Partial<ChatConfigShape> = {
  senderPollInterval: Duration.seconds(10),
  relayPushInterval: Duration.minutes(1),
  mailboxFetchInterval: Duration.minutes(5)
}
const WEEK = Duration.toMillis(Duration.days(7))

const deterministic = <A, E, R>(self: Effect.Effect<A, E, R>, seed = 31) =>
  seededDeterministic(self, seed)

const keyOf = (node: ChatNode) => toHex(node.identity.signingPublicKey) as PublicKeyHex

/** A claim of `username` by `owner`'s key, issued now and valid for a week. */
const claimNow = (owner: ChatNode, username: string) =>
  Effect.map(Clock.currentTimeMillis, (now) => signedRecord(owner, name(username), { issuedAt: now, expiresAt: now + WEEK }))

/** A message "from" `from` to `to`'s user, signed by `signer` and carrying `record`, sealed to `to`'s key. */
const sealed = (signer: ChatNode, from: string, to: { readonly node: ChatNode; readonly name: string }, text: string, record: UserRecord) =>
  Effect.gen(function*() {
    const message = makeChatMessage({
      from: name(from),
      to: name(to.name),
      senderSigningKey: keyOf(signer),
      senderRecord: record,
      sequence: 1,
      sentAt: yield* Clock.currentTimeMillis,
      text
    })
    if (message._tag === "Left") return yield* Effect.die(message.left)
    const seeds = nodeSeeds(signer.index)
    const crypto = yield* MessageCrypto.pipe(Effect.provide(NodeMessageCrypto.layerFromSeeds(seeds.signing, seeds.encryption)))
    return yield* crypto.seal(message.right, toHex(to.node.identity.encryptionPublicKey) as PublicKeyHex)
  })

/**
 * Makes every node refuse every `FindValue` (name lookups), as a network that
 * answers nothing about names would; node lookups (`FindNode`) and delivery
 * keep working. Returns the ids of the nodes that tried a name lookup since.
 */
const silenceNameLookups = (nodes: ReadonlyArray<ChatNode>) =>
  Effect.gen(function*() {
    const askers = new Set<NodeId>()
    for (const node of nodes) {
      yield* node.transport.serve({
        FindValue: (caller) => {
          askers.add(caller.nodeId)
          return Effect.fail(new RequestRefused({ reason: "Overloaded", detail: "this test answers no name lookups" }))
        }
      })
    }
    return askers
  })

/**
 * A network where node 1 is alice, bob is a node outside the k closest of alice's user key (so his
 * own store never answers for her name) and mallory another one, each registered unless said otherwise.
 */
const setup = (count: number, options: { readonly registerAlice?: boolean } = {}) =>
  Effect.gen(function*() {
    const network = yield* MemoryNetwork.make
    const nodes = yield* makeChatNetwork(network, count, { config, chat })
    const alice = at(nodes, 1)
    const aliceClosest = trueClosest(userKey(name("alice")), nodes.map((node) => node.nodeId), K)
    const others = nodes.filter((node) => node.index > 1 && !aliceClosest.includes(node.nodeId))
    const bob = at(others, 0)
    const mallory = at(others, 1)
    if (options.registerAlice !== false) yield* alice.directory.register("alice")
    yield* bob.directory.register("bob")
    yield* mallory.directory.register("mallory")
    return { network, nodes, alice, bob, mallory }
  })

describe("self-certifying envelopes", () => {
  it.scoped("a pinned sender is checked from the carried record alone, without any name lookup", () =>
    deterministic(Effect.gen(function*() {
      const { alice, bob, nodes } = yield* setup(8)
      yield* alice.messenger.send("bob", "first")
      yield* run(3)
      expect(Option.getOrUndefined(yield* bob.chatStore.pinOf(name("alice")))?.signingKey).toBe(keyOf(alice))
      const record = yield* alice.directory.whois("alice").pipe(Effect.orDie)
      const askers = yield* silenceNameLookups(nodes)
      const second = yield* sealed(alice, "alice", { node: bob, name: "bob" }, "second", record)
      const answer = yield* alice.transport.send(bob, new SendMessage({ envelope: second.envelope }))
      expect(answer.value.receipt.messageId).toBe(second.id)
      expect(yield* texts(bob, "alice")).toEqual(["alice:first:received", "alice:second:received"])
      expect(askers.has(bob.nodeId)).toBe(false)
    })))

  it.scoped("the DHT answers nothing at the recipient: the message is accepted, not pinned, and its receipt goes back to the carried address", () =>
    deterministic(Effect.gen(function*() {
      const { alice, bob, network, nodes } = yield* setup(10)
      yield* network.setOnline(bob.address, false)
      const sent = yield* alice.messenger.send("bob", "while you were away")
      yield* run(3)
      expect((yield* texts(alice, "bob"))).toEqual(["alice:while you were away:stored-offline"])
      // Now no node answers a name lookup: before, bob would have refused the message as SenderUnknown.
      const askers = yield* silenceNameLookups(nodes)
      yield* network.setOnline(bob.address, true)
      const pulled = yield* bob.delivery.pullMailbox
      expect(pulled.messages).toBeGreaterThanOrEqual(1)
      expect(yield* texts(bob, "alice")).toEqual(["alice:while you were away:received"])
      // Bob did try to ask the network (alice was not pinned), and got no answer.
      expect(askers.has(bob.nodeId)).toBe(true)
      // Unconfirmed by the network, so not pinned: the first message the network vouches for will pin.
      expect(Option.isNone(yield* bob.chatStore.pinOf(name("alice")))).toBe(true)
      // The message came from a relay: the receipt went straight to the node and address alice's record names.
      yield* run(3)
      expect((yield* bob.delivery.stats).receiptsForwarded).toBeGreaterThanOrEqual(1)
      expect(yield* texts(alice, "bob")).toEqual(["alice:while you were away:delivered"])
      expect((yield* alice.chatStore.message(sent.id)).pipe(Option.map((entry) => entry.status))).toEqual(Option.some("delivered"))
    })))

  it.scoped("a sender whose record no node holds (the network says nobody has the name) is accepted, not pinned", () =>
    deterministic(Effect.gen(function*() {
      const { alice, bob } = yield* setup(8, { registerAlice: false })
      // Alice's claim exists only in her own hands (as for the first user of a network whose record has not spread).
      const record = yield* claimNow(alice, "alice")
      expect((yield* Effect.flip(bob.directory.whois("alice")))._tag).toBe("UserNotFound")
      const message = yield* sealed(alice, "alice", { node: bob, name: "bob" }, "hello from nowhere", record)
      const answer = yield* alice.transport.send(bob, new SendMessage({ envelope: message.envelope }))
      expect(answer.value.receipt.messageId).toBe(message.id)
      expect(yield* texts(bob, "alice")).toEqual(["alice:hello from nowhere:received"])
      expect(Option.isNone(yield* bob.chatStore.pinOf(name("alice")))).toBe(true)
    })))

  it.scoped("a forged 'from alice' carrying mallory's record is refused when bob pinned alice", () =>
    deterministic(Effect.gen(function*() {
      const { alice, bob, mallory } = yield* setup(8)
      yield* alice.messenger.send("bob", "genuine")
      yield* run(3)
      const pin = Option.getOrUndefined(yield* bob.chatStore.pinOf(name("alice")))
      expect(pin?.signingKey).toBe(keyOf(alice))
      // A valid claim of "alice" by mallory's key (she paid its work), on a message she signed.
      const squat = yield* claimNow(mallory, "alice")
      const forged = yield* sealed(mallory, "alice", { node: bob, name: "bob" }, "new number, send money", squat)
      const refused = yield* Effect.flip(mallory.transport.send(bob, new SendMessage({ envelope: forged.envelope })))
      expect(refused).toMatchObject({ _tag: "MessageRefused", reason: "Invalid" })
      expect(refused.message).toContain("pinned")
      expect(yield* texts(bob, "alice")).toEqual(["alice:genuine:received"])
      expect(Option.getOrUndefined(yield* bob.chatStore.pinOf(name("alice")))).toEqual(pin)
    })))

  it.scoped("a forged 'from alice' is refused when bob did not pin alice but the network names alice's key", () =>
    deterministic(Effect.gen(function*() {
      const { bob, mallory } = yield* setup(8)
      const squat = yield* claimNow(mallory, "alice")
      const forged = yield* sealed(mallory, "alice", { node: bob, name: "bob" }, "hi bob, it's alice", squat)
      const refused = yield* Effect.flip(mallory.transport.send(bob, new SendMessage({ envelope: forged.envelope })))
      expect(refused).toMatchObject({ _tag: "MessageRefused", reason: "Invalid" })
      expect(refused.message).toContain("network names another key")
      expect(yield* texts(bob, "alice")).toEqual([])
      // The squatter did not become alice's pinned key, and nothing else was pinned on the way.
      expect(Option.isNone(yield* bob.chatStore.pinOf(name("alice")))).toBe(true)
    })))

  it.scoped("a squatter heard while nobody held the name is never pinned: once the owner is known, the squatter is refused", () =>
    deterministic(Effect.gen(function*() {
      const { alice, bob, mallory } = yield* setup(8, { registerAlice: false })
      // Nobody holds "alice" yet: mallory's claim is not contradicted, so her message is accepted, unpinned.
      const early = yield* sealed(mallory, "alice", { node: bob, name: "bob" }, "early bird", yield* claimNow(mallory, "alice"))
      yield* mallory.transport.send(bob, new SendMessage({ envelope: early.envelope }))
      expect(Option.isNone(yield* bob.chatStore.pinOf(name("alice")))).toBe(true)
      // The real alice registers and writes: the network names her key, so it is pinned.
      yield* TestClock.adjust(Duration.seconds(1))
      yield* alice.directory.register("alice")
      yield* alice.messenger.send("bob", "it's really me")
      yield* run(3)
      expect(Option.getOrUndefined(yield* bob.chatStore.pinOf(name("alice")))?.signingKey).toBe(keyOf(alice))
      // From now on the squatter's key is refused, network or not.
      yield* TestClock.adjust(Duration.seconds(1))
      const late = yield* sealed(mallory, "alice", { node: bob, name: "bob" }, "late bird", yield* claimNow(mallory, "alice"))
      const refused = yield* Effect.flip(mallory.transport.send(bob, new SendMessage({ envelope: late.envelope })))
      expect(refused).toMatchObject({ _tag: "MessageRefused", reason: "Invalid" })
      expect(yield* texts(bob, "alice")).toEqual(["alice:early bird:received", "alice:it's really me:received"])
    })))

  it.scoped("a sender whose own record the network has lost publishes it again before sealing", () =>
    deterministic(Effect.gen(function*() {
      const network = yield* MemoryNetwork.make
      const nodes = yield* makeChatNetwork(network, 8, { config, chat })
      // Alice runs on a node outside the k closest of her own name, so only the network can answer for it.
      const aliceClosest = trueClosest(userKey(name("alice")), nodes.map((node) => node.nodeId), K)
      const [alice, bob] = nodes.filter((node) => node.index > 0 && !aliceClosest.includes(node.nodeId))
      if (alice === undefined || bob === undefined) return yield* Effect.die("too few nodes outside alice's closest")
      yield* alice.directory.register("alice")
      const bobs = (yield* bob.directory.register("bob")).record
      expect((yield* alice.profiles.load).sequence).toBe(1)
      // Every node forgets alice's record (it answers as if it held none); bob's is still found.
      for (const node of nodes) {
        yield* node.transport.serve({
          FindValue: (_caller, request) =>
            Effect.succeed(
              request.key === userKey(bobs.username)
                ? { _tag: "Found" as const, record: bobs, contacts: [] }
                : { _tag: "Closer" as const, contacts: [] }
            )
        } satisfies Partial<DhtHandlers>)
      }
      expect((yield* Effect.flip(bob.directory.whois("alice")))._tag).toBe("UserNotFound")
      const sent = yield* alice.messenger.send("bob", "still here")
      // Sealing needed alice's own record: she signed and published a fresh one (the next sequence).
      expect((yield* alice.profiles.load).sequence).toBe(2)
      yield* run(3)
      expect(yield* texts(bob, "alice")).toEqual(["alice:still here:received"])
      expect((yield* alice.chatStore.message(sent.id)).pipe(Option.map((entry) => entry.status))).toEqual(Option.some("delivered"))
    })))

  it.scoped("tampering with the carried record breaks the message; a stolen record does not fit another signer", () =>
    deterministic(Effect.gen(function*() {
      const { alice, bob, mallory } = yield* setup(8)
      const record = yield* alice.directory.whois("alice").pipe(Effect.orDie)
      // Alice's own record with another address, its signature no longer matching: refused.
      const tampered = { ...record, addresses: [{ host: "203.0.113.66", port: 6666 }] }
      const altered = yield* sealed(alice, "alice", { node: bob, name: "bob" }, "receipts to 203.0.113.66, please", tampered)
      const refusedAltered = yield* Effect.flip(alice.transport.send(bob, new SendMessage({ envelope: altered.envelope })))
      expect(refusedAltered).toMatchObject({ _tag: "MessageRefused", reason: "Invalid" })
      expect(refusedAltered.message).toContain("BadSignature")
      // Alice's genuine record, carried by mallory on a message she signs: the record's key did not sign it.
      const stolen = yield* sealed(mallory, "alice", { node: bob, name: "bob" }, "trust me", record)
      const refusedStolen = yield* Effect.flip(mallory.transport.send(bob, new SendMessage({ envelope: stolen.envelope })))
      expect(refusedStolen).toMatchObject({ _tag: "MessageRefused", reason: "Invalid" })
      expect(refusedStolen.message).toContain("another key")
      expect(yield* texts(bob, "alice")).toEqual([])
      // The genuine record on a genuine message goes through.
      const genuine = yield* sealed(alice, "alice", { node: bob, name: "bob" }, "the real one", record)
      yield* alice.transport.send(bob, new SendMessage({ envelope: genuine.envelope }))
      expect(yield* texts(bob, "alice")).toEqual(["alice:the real one:received"])
    })))
})
