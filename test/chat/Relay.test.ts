import { describe, expect, it } from "@effect/vitest"
import { Clock, Context, Duration, Effect, Either, Exit, Layer, Logger, LogLevel, Random, Schema, Scope, TestClock } from "effect"
import { toHex } from "../../src/core/Bytes.js"
import type { Key, NodeId } from "../../src/core/Id.js"
import { type Mail, mailId, type ReceiptMail, signMailboxRequest } from "../../src/core/Mail.js"
import { envelopeId, makeChatMessage, type SignedReceipt, signReceipt } from "../../src/core/Message.js"
import type { PublicKeyHex, UserRecord } from "../../src/core/UserRecord.js"
import { userKey, Username } from "../../src/core/Username.js"
import { ChatConfig, type ChatConfigShape } from "../../src/chat/ChatConfig.js"
import { ChatStore, ChatStoreConfig, type ChatStoreConfigShape, type ChatStoreService } from "../../src/chat/ChatStore.js"
import type { MessageCryptoService } from "../../src/chat/MessageCrypto.js"
import { Relay, type RelayService } from "../../src/chat/Relay.js"
import { DhtNode } from "../../src/node/DhtNode.js"
import { Identity, type IdentityService } from "../../src/node/Identity.js"
import { NodeConfig, type NodeConfigShape } from "../../src/node/NodeConfig.js"
import { AckMail, FetchMail, Store, StoreMail } from "../../src/node/Protocol.js"
import { Transport } from "../../src/node/Transport.js"
import { keyAgreementFromSeed, make as makeMessageCrypto } from "../../src/platform/NodeMessageCrypto.js"
import { seededRandomBytes } from "../support/arbitraries.js"
import {
  at,
  makeTestNetwork,
  nodeAddress,
  nodeIdentity,
  nodeSeeds,
  signedRecord,
  type TestNode,
  testSignatures,
  trueClosest
} from "../support/memoryNetwork.js"

const K = 4
const HOUR = Duration.hours(1)
/**
 * Every timer wake-up under TestClock costs a few milliseconds, so tests that
 * move the clock by hours wake nodes and relays up rarely: DHT maintenance
 * every 30 minutes, and pushes as seldom as each test allows.
 */
const nodeConfig: Partial<NodeConfigShape> = { k: K, alpha: 3, maintenanceInterval: Duration.minutes(30) }
/** For tests about re-replication, where pushing does not matter. */
const rarePushes: Partial<ChatConfigShape> = { relayPushInterval: Duration.minutes(30) }

/** Deterministic randomness, and only errors in the logs (the relay warns about forged receipts on purpose). */
const deterministic = <A, E, R>(self: Effect.Effect<A, E, R>, seed = 11) =>
  self.pipe(Effect.withRandom(Random.make(seed)), Logger.withMinimumLogLevel(LogLevel.Error))

const name = (text: string): Username => Schema.decodeSync(Username)(text)

/** A test node with a relay and its chat store. */
interface RelayNode {
  readonly node: TestNode
  readonly relay: RelayService
  readonly store: ChatStoreService
}

interface RelayOptions {
  readonly chat?: Partial<ChatConfigShape>
  readonly store?: Partial<ChatStoreConfigShape>
  readonly node?: Partial<NodeConfigShape>
}

/** Starts a relay on `node`, in the node's scope (stopping the node stops the relay). */
const startRelay = (node: TestNode, options: RelayOptions = {}) =>
  Effect.gen(function*() {
    const layer = Relay.layer.pipe(
      Layer.provideMerge(ChatStore.layerMemory),
      Layer.provideMerge(Layer.mergeAll(
        ChatStoreConfig.layer(options.store),
        ChatConfig.layer(options.chat),
        Layer.succeed(NodeConfig, NodeConfig.make({ ...nodeConfig, ...options.node })),
        Layer.succeed(DhtNode, node.dht),
        Layer.succeed(Transport, node.transport),
        Layer.succeed(Identity, node.identity),
        testSignatures
      ))
    )
    const context = yield* Layer.buildWithScope(layer, node.scope)
    const relayNode: RelayNode = { node, relay: Context.get(context, Relay), store: Context.get(context, ChatStore) }
    return relayNode
  })

/** `count` nodes, every one of them a relay. */
const makeRelayNetwork = (count: number, options: RelayOptions = {}) =>
  Effect.gen(function*() {
    const network = yield* makeTestNetwork(count, { ...nodeConfig, ...options.node })
    const relays: Array<RelayNode> = []
    for (const node of network.nodes) relays.push(yield* startRelay(node, options))
    return { network, relays }
  })

/** The message cryptography of test node `index` (the seeds `nodeIdentity` derives its keys from). */
const cryptoOf = (index: number): MessageCryptoService =>
  makeMessageCrypto({
    identity: nodeIdentity(index),
    keyAgreement: keyAgreementFromSeed(nodeSeeds(index).encryption),
    randomBytes: seededRandomBytes(0xc0de + index)
  })

/** A user record for `username` on `node`, published to the DHT. */
const register = (node: TestNode, username: string) =>
  Effect.gen(function*() {
    const now = yield* Clock.currentTimeMillis
    const record = signedRecord(node, name(username), { issuedAt: now, expiresAt: now + Duration.toMillis(Duration.days(7)) })
    yield* node.dht.publish(record)
    return record
  })

/** A message from `from` (on test node `senderIndex`) sealed to `to`'s record, as mail. */
const messageMail = (senderIndex: number, from: string, to: UserRecord, text: string, sequence = 1) =>
  Effect.gen(function*() {
    const sentAt = yield* Clock.currentTimeMillis
    const message = Either.getOrThrow(makeChatMessage({
      from: name(from),
      to: to.username,
      senderSigningKey: toHex(nodeIdentity(senderIndex).signingPublicKey) as PublicKeyHex,
      senderRecord: signedRecord({ identity: nodeIdentity(senderIndex), address: nodeAddress(senderIndex) }, name(from), {
        issuedAt: sentAt,
        expiresAt: sentAt + Duration.toMillis(Duration.days(7))
      }),
      sequence,
      sentAt,
      text
    }))
    const sealed = yield* cryptoOf(senderIndex).seal(message, to.encryptionKey)
    const mail: Mail = { _tag: "Message", envelope: sealed.envelope }
    return mail
  })

/** A receipt for `messageId`, signed by `signer` as `recipient`, as mail for `forUser`. */
const receiptMail = (
  signer: IdentityService,
  recipient: string,
  messageId: string,
  forUser: string,
  options: { readonly receivedAt?: number } = {}
) =>
  Effect.gen(function*() {
    const receivedAt = options.receivedAt ?? (yield* Clock.currentTimeMillis)
    const receipt = signReceipt(
      { version: 1, messageId: messageId as SignedReceipt["messageId"], recipient: name(recipient), receivedAt },
      signer.sign
    )
    const mail: ReceiptMail = { _tag: "Receipt", recipientKey: userKey(name(forUser)), receipt }
    return mail
  })

const targetOf = (node: TestNode) => ({ address: node.address, nodeId: node.nodeId })

const storeMail = (from: TestNode, relay: TestNode, mail: Mail) =>
  Effect.map(from.transport.send(targetOf(relay), new StoreMail({ mail })), (result) => result.value.outcome)

interface MailboxCall {
  /** Who signs the request (the owner, unless a test forges it). */
  readonly signer?: IdentityService
  /** The relay the signature names (the relay called, unless a test says otherwise). */
  readonly signedFor?: NodeId
  readonly requestedAt?: number
}

const fetchMail = (caller: TestNode, relay: TestNode, owner: string, options: MailboxCall = {}) =>
  Effect.gen(function*() {
    const recipientKey = userKey(name(owner))
    const now = yield* Clock.currentTimeMillis
    const authorization = signMailboxRequest({
      operation: "FetchMail",
      recipientKey,
      relay: options.signedFor ?? relay.nodeId,
      requestedAt: options.requestedAt ?? now,
      ids: []
    }, (options.signer ?? caller.identity).sign)
    const result = yield* caller.transport.send(targetOf(relay), new FetchMail({ recipientKey, authorization }))
    return result.value
  })

const ackMail = (caller: TestNode, relay: TestNode, owner: string, ids: ReadonlyArray<string>, options: MailboxCall = {}) =>
  Effect.gen(function*() {
    const recipientKey = userKey(name(owner))
    const now = yield* Clock.currentTimeMillis
    const messageIds = ids as ReadonlyArray<SignedReceipt["messageId"]>
    const authorization = signMailboxRequest({
      operation: "AckMail",
      recipientKey,
      relay: options.signedFor ?? relay.nodeId,
      requestedAt: options.requestedAt ?? now,
      ids: messageIds
    }, (options.signer ?? caller.identity).sign)
    const result = yield* caller.transport.send(targetOf(relay), new AckMail({ recipientKey, ids: messageIds, authorization }))
    return result.value.removed
  })

/** Serves SendMessage on `recipient` as olive's node, answering valid receipts; returns the ids received. */
const acceptAsOlive = (recipient: TestNode) =>
  Effect.gen(function*() {
    const received: Array<string> = []
    yield* Scope.extend(
      recipient.transport.serve({
        SendMessage: (_caller, { envelope }) =>
          Effect.gen(function*() {
            const messageId = envelopeId(envelope)
            received.push(messageId)
            const receivedAt = yield* Clock.currentTimeMillis
            return { receipt: signReceipt({ version: 1, messageId, recipient: name("olive"), receivedAt }, recipient.identity.sign) }
          })
      }),
      recipient.scope
    )
    return received
  })

const heldFor = (relay: RelayNode, owner: string) =>
  Effect.map(relay.store.mailFor(userKey(name(owner)), 1000), (items) => items.map((item) => item.id))

/** The relays among `relays` that are the `n` closest live ones to `key`. */
const closestRelays = (relays: ReadonlyArray<RelayNode>, key: Key, n: number) => {
  const ids = trueClosest(key, relays.map((relay) => relay.node.nodeId), n)
  return relays.filter((relay) => ids.includes(relay.node.nodeId))
}

describe("Relay", () => {
  it.scoped("the owner fetches its mail oldest first, acknowledges it, and the mailbox is empty", () =>
    deterministic(Effect.gen(function*() {
      const { relays } = yield* makeRelayNetwork(6)
      const relay = at(relays, 1).node
      const sender = at(relays, 2).node
      const owner = at(relays, 3).node
      const olive = yield* register(owner, "olive")
      const mails: Array<Mail> = []
      // 33 mails: one more than a fetch carries.
      for (let sequence = 1; sequence <= 33; sequence++) {
        const mail = yield* messageMail(2, "sam", olive, `hello ${sequence}`, sequence)
        mails.push(mail)
        expect(yield* storeMail(sender, relay, mail)).toBe("Stored")
        yield* TestClock.adjust(Duration.millis(1))
      }
      expect(yield* storeMail(sender, relay, at(mails, 0))).toBe("Duplicate")

      const first = yield* fetchMail(owner, relay, "olive")
      expect(first.more).toBe(true)
      expect(first.mail.map((mail) => mailId(mail))).toEqual(mails.slice(0, 32).map((mail) => mailId(mail)))
      expect(yield* ackMail(owner, relay, "olive", first.mail.map((mail) => mailId(mail)))).toBe(32)

      const second = yield* fetchMail(owner, relay, "olive")
      expect(second.more).toBe(false)
      expect(second.mail).toEqual([at(mails, 32)])
      expect(yield* ackMail(owner, relay, "olive", [mailId(at(mails, 32))])).toBe(1)

      expect(yield* fetchMail(owner, relay, "olive")).toEqual({ mail: [], more: false })
      const stats = yield* at(relays, 1).relay.stats
      expect(stats).toMatchObject({ held: 0, stored: 33, duplicates: 1, fetched: 33, acknowledged: 33 })
    })))

  it.scoped("fetch and ack are denied to anyone but the owner, for another relay, when stale or unsigned", () =>
    deterministic(Effect.gen(function*() {
      const { relays } = yield* makeRelayNetwork(6)
      const relay = at(relays, 1).node
      const owner = at(relays, 3).node
      const stranger = at(relays, 4).node
      const olive = yield* register(owner, "olive")
      const mail = yield* messageMail(2, "sam", olive, "secret")
      yield* storeMail(at(relays, 2).node, relay, mail)
      const now = yield* Clock.currentTimeMillis

      const denied = (call: Effect.Effect<unknown, { readonly _tag: string }>) =>
        Effect.map(Effect.flip(call), (error) => ("reason" in error ? `${error._tag}:${String(error.reason)}` : error._tag))

      // A stranger replaying a request the owner signed: the caller is not the owner's node.
      expect(yield* denied(fetchMail(stranger, relay, "olive", { signer: owner.identity }))).toBe("MailboxAccessDenied:NotOwner")
      // The owner's node, but signed with another key.
      expect(yield* denied(fetchMail(owner, relay, "olive", { signer: stranger.identity }))).toBe(
        "MailboxAccessDenied:BadSignature"
      )
      // Signed for another relay: the relay checks the signature over its own id.
      expect(yield* denied(fetchMail(owner, relay, "olive", { signedFor: stranger.nodeId }))).toBe(
        "MailboxAccessDenied:BadSignature"
      )
      expect(yield* denied(fetchMail(owner, relay, "olive", { requestedAt: now + Duration.toMillis(Duration.minutes(6)) })))
        .toBe("MailboxAccessDenied:Stale")
      // Nobody has registered this name, so nobody can open its mailbox.
      expect(yield* denied(fetchMail(owner, relay, "nobody"))).toBe("MailboxAccessDenied:UnknownOwner")

      const id = mailId(mail)
      expect(yield* denied(ackMail(stranger, relay, "olive", [id], { signer: owner.identity }))).toBe(
        "MailboxAccessDenied:NotOwner"
      )
      expect(yield* denied(ackMail(owner, relay, "olive", [id], { signer: stranger.identity }))).toBe(
        "MailboxAccessDenied:BadSignature"
      )
      expect(yield* denied(ackMail(owner, relay, "olive", [id], { signedFor: stranger.nodeId }))).toBe(
        "MailboxAccessDenied:BadSignature"
      )
      expect(yield* denied(ackMail(owner, relay, "olive", [id], { requestedAt: now + Duration.toMillis(Duration.minutes(6)) })))
        .toBe("MailboxAccessDenied:Stale")
      expect(yield* heldFor(at(relays, 1), "olive")).toEqual([id])

      // A request made four minutes ago is still within the allowed skew.
      yield* TestClock.adjust(Duration.minutes(4))
      expect((yield* fetchMail(owner, relay, "olive", { requestedAt: now })).mail).toEqual([mail])
    })))

  it.scoped("quotas: mail beyond the per-recipient or the total limit is refused loudly", () =>
    deterministic(Effect.gen(function*() {
      const { relays } = yield* makeRelayNetwork(3, {
        store: { mailboxMaxMessagesPerRecipient: 2, mailboxMaxMessagesTotal: 3 }
      })
      const relay = at(relays, 0)
      const sender = at(relays, 1).node
      const signer = nodeIdentity(2)
      const receipt = (n: number, forUser: string) =>
        receiptMail(signer, "olive", toHex(seededRandomBytes(100 + n)(32)), forUser)

      expect(yield* storeMail(sender, relay.node, yield* receipt(1, "sam"))).toBe("Stored")
      expect(yield* storeMail(sender, relay.node, yield* receipt(2, "sam"))).toBe("Stored")
      const perRecipient = yield* Effect.flip(storeMail(sender, relay.node, yield* receipt(3, "sam")))
      expect(perRecipient._tag).toBe("RequestRefused")
      if (perRecipient._tag !== "RequestRefused") return
      expect(perRecipient.reason).toBe("QuotaExceeded")
      expect(perRecipient.detail).toContain("the limit of 2 messages for this recipient is reached")

      expect(yield* storeMail(sender, relay.node, yield* receipt(4, "pat"))).toBe("Stored")
      const total = yield* Effect.flip(storeMail(sender, relay.node, yield* receipt(5, "quinn")))
      expect(total._tag).toBe("RequestRefused")
      if (total._tag !== "RequestRefused") return
      expect(total.reason).toBe("QuotaExceeded")
      expect(total.detail).toContain("the limit of 3 messages in total is reached")

      expect(yield* relay.relay.stats).toMatchObject({ held: 3, stored: 3, refused: 2 })
    })))

  it.scoped("mail is dropped after its 14-day lifetime, and the relay refuses it again afterwards", () =>
    deterministic(Effect.gen(function*() {
      // Nobody to push to, and daily rounds: 14 virtual days stay quick.
      const { relays } = yield* makeRelayNetwork(2, {
        chat: { relayPushInterval: Duration.days(1), mailReplicationInterval: Duration.days(7) },
        node: { maintenanceInterval: Duration.days(1) }
      })
      const relay = at(relays, 0)
      const sender = at(relays, 1).node
      // Olive never publishes her record here, so nobody can take the mail away before it expires.
      const olive = signedRecord(sender, name("olive"), { issuedAt: 0, expiresAt: Duration.toMillis(Duration.days(1)) })
      const mail = yield* messageMail(1, "sam", olive, "see you in two weeks")
      expect(yield* storeMail(sender, relay.node, mail)).toBe("Stored")

      yield* TestClock.adjust(Duration.days(13))
      expect((yield* relay.relay.stats).held).toBe(1)
      // The daily push round drops it.
      yield* TestClock.adjust(Duration.days(1))
      expect(yield* relay.relay.stats).toMatchObject({ held: 0, expired: 1 })
      // Its id is remembered beyond its lifetime: a lagging relay cannot bring it back.
      expect(yield* storeMail(sender, relay.node, mail)).toBe("Duplicate")
      yield* TestClock.adjust(Duration.days(2))
      expect(yield* storeMail(sender, relay.node, mail)).toBe("Duplicate")
      expect((yield* relay.relay.stats).held).toBe(0)
    })), { timeout: 60_000 })

  it.scoped("a receipt older than the mail lifetime is refused", () =>
    deterministic(Effect.gen(function*() {
      yield* TestClock.setTime(Duration.toMillis(Duration.days(15)))
      const { relays } = yield* makeRelayNetwork(2)
      const mail = yield* receiptMail(nodeIdentity(1), "olive", toHex(seededRandomBytes(8)(32)), "sam", { receivedAt: 0 })
      const refusal = yield* Effect.flip(storeMail(at(relays, 1).node, at(relays, 0).node, mail))
      expect(refusal._tag === "RequestRefused" && refusal.reason).toBe("NotAccepted")
    })))

  it.scoped("mail is pushed once the recipient comes online, and removed on a valid receipt", () =>
    deterministic(Effect.gen(function*() {
      const { network, relays } = yield* makeRelayNetwork(8, { chat: { relayPushInterval: Duration.minutes(5) } })
      const relay = at(relays, 1)
      const recipient = at(relays, 7).node
      const olive = yield* register(recipient, "olive")
      const received = yield* acceptAsOlive(recipient)
      yield* network.network.setOnline(recipient.address, false)
      const mail = yield* messageMail(6, "sam", olive, "are you there?")
      yield* storeMail(at(relays, 6).node, relay.node, mail)

      const offline = yield* relay.relay.pushRound
      expect(offline).toMatchObject({ recipients: 1, pushed: 0 })
      // Backed off: the next round does not even look the recipient up.
      expect(yield* relay.relay.pushRound).toMatchObject({ recipients: 0, backedOff: 1, pushed: 0 })
      expect(yield* heldFor(relay, "olive")).toEqual([mailId(mail)])

      yield* network.network.setOnline(recipient.address, true)
      // The push loop (every 5 minutes here) comes back to the recipient once its back-off is over.
      yield* TestClock.adjust(Duration.minutes(11))
      expect(received).toEqual([mailId(mail)])
      expect(yield* heldFor(relay, "olive")).toEqual([])
      expect((yield* relay.relay.stats).pushed).toBe(1)
    })))

  it.scoped("a recipient storing its own record at the relay gets its mail at once, back-off or not", () =>
    deterministic(Effect.gen(function*() {
      const { network, relays } = yield* makeRelayNetwork(8, { chat: rarePushes })
      const relay = at(relays, 1)
      const recipient = at(relays, 7).node
      const olive = yield* register(recipient, "olive")
      const received = yield* acceptAsOlive(recipient)
      yield* network.network.setOnline(recipient.address, false)
      const mail = yield* messageMail(6, "sam", olive, "are you there?")
      yield* storeMail(at(relays, 6).node, relay.node, mail)
      expect(yield* relay.relay.pushRound).toMatchObject({ recipients: 1, pushed: 0 })
      yield* network.network.setOnline(recipient.address, true)

      // Another node passing the record on (replication) says nothing about its owner being online.
      yield* at(relays, 3).node.transport.send(targetOf(relay.node), new Store({ record: olive }))
      yield* TestClock.adjust(Duration.seconds(1))
      expect(received).toEqual([])

      // The owner's own Store does: the mail goes out within the second, half an hour before the next round.
      yield* recipient.transport.send(targetOf(relay.node), new Store({ record: olive }))
      yield* TestClock.adjust(Duration.seconds(1))
      expect(received).toEqual([mailId(mail)])
      expect(yield* heldFor(relay, "olive")).toEqual([])
      expect((yield* relay.relay.stats).pushed).toBe(1)
    })))

  it.scoped("a receipt that does not check out keeps the mail", () =>
    deterministic(Effect.gen(function*() {
      const { relays } = yield* makeRelayNetwork(6, { chat: { relayPushInterval: Duration.minutes(5) } })
      const relay = at(relays, 1)
      const recipient = at(relays, 4).node
      const olive = yield* register(recipient, "olive")
      let forgery: "wrong key" | "wrong message" = "wrong key"
      yield* Scope.extend(
        recipient.transport.serve({
          SendMessage: (_caller, { envelope }) =>
            Effect.sync(() => {
              const messageId = forgery === "wrong key"
                ? envelopeId(envelope)
                : toHex(seededRandomBytes(12)(32)) as SignedReceipt["messageId"]
              const signer = forgery === "wrong key" ? nodeIdentity(5) : recipient.identity
              return { receipt: signReceipt({ version: 1, messageId, recipient: name("olive"), receivedAt: 0 }, signer.sign) }
            })
        }),
        recipient.scope
      )
      const mail = yield* messageMail(2, "sam", olive, "hi")
      yield* storeMail(at(relays, 2).node, relay.node, mail)

      expect((yield* relay.relay.pushRound).pushed).toBe(0)
      expect(yield* heldFor(relay, "olive")).toEqual([mailId(mail)])
      forgery = "wrong message"
      yield* TestClock.adjust(Duration.minutes(11))
      expect((yield* relay.relay.pushRound).pushed).toBe(0)
      expect(yield* heldFor(relay, "olive")).toEqual([mailId(mail)])
      expect((yield* relay.relay.stats).pushed).toBe(0)
    })))

  it.scoped("a receipt held for an offline sender is pushed with DeliverReceipt", () =>
    deterministic(Effect.gen(function*() {
      const { relays } = yield* makeRelayNetwork(6)
      const relay = at(relays, 1)
      const sender = at(relays, 5).node
      yield* register(sender, "sam")
      const delivered: Array<SignedReceipt> = []
      yield* Scope.extend(
        sender.transport.serve({
          DeliverReceipt: (_caller, { receipt }) =>
            Effect.sync(() => {
              delivered.push(receipt)
              return { outcome: "Unknown" as const }
            })
        }),
        sender.scope
      )
      const mail = yield* receiptMail(nodeIdentity(3), "olive", toHex(seededRandomBytes(9)(32)), "sam")
      yield* storeMail(at(relays, 3).node, relay.node, mail)
      expect((yield* relay.relay.pushRound).pushed).toBe(1)
      expect(delivered).toEqual([mail.receipt])
      expect(yield* heldFor(relay, "sam")).toEqual([])
    })))

  it.scoped("after churn the mail reaches the new k closest within one interval", () =>
    deterministic(Effect.gen(function*() {
      const { relays } = yield* makeRelayNetwork(14, { chat: rarePushes })
      const key = userKey(name("olive"))
      const original = closestRelays(relays, key, K)
      const sender = at(relays.filter((relay) => !original.includes(relay)), 0).node
      const mail = yield* receiptMail(nodeIdentity(0), "sam", toHex(seededRandomBytes(10)(32)), "olive")
      for (const relay of original) expect(yield* storeMail(sender, relay.node, mail)).toBe("Stored")

      // The two closest relays leave; two others become part of the k closest.
      const [gone1, gone2] = original
      for (const gone of [gone1, gone2]) if (gone !== undefined) yield* Scope.close(gone.node.scope, Exit.void)
      const live = relays.filter((relay) => relay !== gone1 && relay !== gone2)
      const current = closestRelays(live, key, K)
      const newcomers = current.filter((relay) => !original.includes(relay))
      expect(newcomers.length).toBe(2)
      for (const relay of newcomers) expect(yield* heldFor(relay, "olive")).toEqual([])

      // Mail is due an interval after it was stored; relays check six times an interval.
      yield* TestClock.adjust(Duration.sum(HOUR, Duration.minutes(10)))
      for (const relay of current) expect(yield* heldFor(relay, "olive")).toEqual([mailId(mail)])
      // Copies keep the first copy's expiry: re-replication never extends a mail's life.
      const expiries = new Set<number>()
      for (const relay of current) {
        for (const item of yield* relay.store.mailFor(key, 10)) expiries.add(item.expiresAt)
      }
      expect(expiries.size).toBe(1)
    })), { timeout: 60_000 })

  it.scoped("a relay whose copy was refreshed within the interval does not re-replicate it", () =>
    deterministic(Effect.gen(function*() {
      const { relays } = yield* makeRelayNetwork(12, { chat: rarePushes })
      const key = userKey(name("olive"))
      const holders = closestRelays(relays, key, K)
      const sender = at(relays.filter((relay) => !holders.includes(relay)), 0).node
      const mail = yield* receiptMail(nodeIdentity(0), "sam", toHex(seededRandomBytes(11)(32)), "olive")
      for (const relay of holders) yield* storeMail(sender, relay.node, mail)

      const replicated = Effect.forEach(relays, (relay) => Effect.map(relay.relay.stats, (stats) => stats.replicated))
      // Stored within the interval: nobody copies it yet.
      for (const relay of holders) expect((yield* relay.relay.replicationRound).copies).toBe(0)

      yield* TestClock.adjust(Duration.sum(HOUR, Duration.minutes(10)))
      // One relay copied it to the k - 1 others, which counts as their own re-replication.
      const once = yield* replicated
      expect(once.filter((count) => count > 0)).toEqual([K - 1])
      for (const relay of holders) expect((yield* relay.relay.replicationRound).copies).toBe(0)

      // And so on every interval: k - 1 copies an hour, not k · (k - 1).
      yield* TestClock.adjust(HOUR)
      const total = (yield* replicated).reduce((sum, count) => sum + count, 0)
      expect(total).toBe(2 * (K - 1))
      for (const relay of relays) {
        expect(yield* heldFor(relay, "olive")).toEqual(holders.includes(relay) ? [mailId(mail)] : [])
      }
    })), { timeout: 60_000 })

  it.scoped("a relay refuses mail it held and removed after an ack, even when another relay re-replicates it", () =>
    deterministic(Effect.gen(function*() {
      const { relays } = yield* makeRelayNetwork(8, { chat: rarePushes })
      const key = userKey(name("olive"))
      const holders = closestRelays(relays, key, K)
      const ownerRelay = at(relays.filter((relay) => !holders.includes(relay)), 0)
      const owner = ownerRelay.node
      yield* register(owner, "olive")
      const olive = yield* owner.dht.findRecord(key)
      if (olive._tag === "None") return expect.unreachable("olive's record was just published")
      const mail = yield* messageMail(1, "sam", olive.value, "read me once")
      const sender = at(relays.filter((relay) => !holders.includes(relay) && relay !== ownerRelay), 0).node
      for (const relay of holders) yield* storeMail(sender, relay.node, mail)

      const acked = at(holders, 0)
      expect((yield* fetchMail(owner, acked.node, "olive")).mail).toEqual([mail])
      expect(yield* ackMail(owner, acked.node, "olive", [mailId(mail)])).toBe(1)
      expect(yield* heldFor(acked, "olive")).toEqual([])

      expect(yield* storeMail(sender, acked.node, mail)).toBe("Duplicate")
      // The other holders re-replicate every interval; the acknowledged copy stays gone.
      yield* TestClock.adjust(Duration.sum(HOUR, Duration.minutes(10)))
      expect(yield* heldFor(acked, "olive")).toEqual([])
      expect((yield* acked.relay.stats).duplicates).toBeGreaterThan(1)
      for (const relay of holders.slice(1)) expect(yield* heldFor(relay, "olive")).toEqual([mailId(mail)])
    })), { timeout: 60_000 })

  it.scoped("a held row that does not decode is dropped when fetched", () =>
    deterministic(Effect.gen(function*() {
      const { relays } = yield* makeRelayNetwork(6)
      const relay = at(relays, 1)
      const owner = at(relays, 3).node
      const olive = yield* register(owner, "olive")
      const mail = yield* messageMail(2, "sam", olive, "fine")
      yield* storeMail(at(relays, 2).node, relay.node, mail)
      yield* relay.store.storeMail({
        id: "f".repeat(64),
        recipientKey: userKey(name("olive")),
        envelopeJson: "{\"_tag\":\"Message\"}",
        size: 10,
        storedAt: 0,
        expiresAt: Duration.toMillis(Duration.days(1))
      })
      expect((yield* fetchMail(owner, relay.node, "olive")).mail).toEqual([mail])
      expect(yield* heldFor(relay, "olive")).toEqual([mailId(mail)])
    })))
})

