import { describe, expect, it } from "@effect/vitest"
import { Clock, Context, Duration, Effect, Either, Exit, Layer, Schema, Scope, TestClock } from "effect"
import { toHex } from "../../src/core/Bytes.js"
import type { Key, NodeId } from "../../src/core/Id.js"
import type { Address } from "../../src/core/Contact.js"
import type { RequestLimitsConfig } from "../../src/core/RequestLimits.js"
import { type Mail, mailId, type Postage, type ReceiptMail, signMailboxRequest, signPostage } from "../../src/core/Mail.js"
import { envelopeId, makeChatMessage, type MessageId, type SignedReceipt, signReceipt } from "../../src/core/Message.js"
import { type PublicKeyHex, signUserRecord, type UserRecord } from "../../src/core/UserRecord.js"
import { userKey, Username } from "../../src/core/Username.js"
import { ChatConfig, type ChatConfigShape } from "../../src/chat/ChatConfig.js"
import { ChatStore, ChatStoreConfig, type ChatStoreConfigShape, type ChatStoreService } from "../../src/chat/ChatStore.js"
import type { MessageCryptoService } from "../../src/chat/MessageCrypto.js"
import { mailSource, Relay, type RelayService } from "../../src/chat/Relay.js"
import { DhtNode } from "../../src/node/DhtNode.js"
import { Identity, type IdentityService } from "../../src/node/Identity.js"
import { NodeConfig, type NodeConfigShape } from "../../src/node/NodeConfig.js"
import { Store } from "../../src/node/Protocol.js"
import { AckMail, FetchMail, StoreMail } from "../../src/chat/ChatProtocol.js"
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
  startNode,
  type TestNode,
  testSignatures,
  trueClosest
} from "../support/memoryNetwork.js"
import { unlimitedRequests } from "../support/requestLimits.js"
import { deterministic as seededDeterministic } from "../support/deterministic.js"

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
  seededDeterministic(self, seed)

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
  /** The nodes' request budgets (core `RequestLimits`); a TCP node's defaults when unset. */
  readonly requestLimits?: Partial<RequestLimitsConfig>
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
    const network = yield* makeTestNetwork(
      count,
      { ...nodeConfig, ...options.node },
      options.requestLimits === undefined ? {} : { requestLimits: options.requestLimits }
    )
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

/** Who stamps a test mail's postage (its sender, or the user who signed a receipt), by mail id. */
interface Stamper {
  readonly identity: IdentityService
  readonly address: Address
  readonly username: string
}
const stampers = new Map<string, Stamper>()

/** A postage for `mail` as its sender stamps it (a record issued now, the mail expiring in 14 days unless told). */
const postageOf = (mail: Mail, options: { readonly expiresAt?: number; readonly stamper?: Stamper } = {}) =>
  Effect.gen(function*() {
    const now = yield* Clock.currentTimeMillis
    const stamper = options.stamper ?? stampers.get(mailId(mail))
    if (stamper === undefined) return yield* Effect.dieMessage(`no stamper for mail ${mailId(mail)}`)
    const sender = signedRecord(stamper, name(stamper.username), {
      issuedAt: now,
      expiresAt: now + Duration.toMillis(Duration.days(7))
    })
    const postage: Postage = signPostage({
      mail,
      sender,
      expiresAt: options.expiresAt ?? now + Duration.toMillis(Duration.days(14)),
      sign: stamper.identity.sign
    })
    return postage
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
    stampers.set(mailId(mail), { identity: nodeIdentity(senderIndex), address: nodeAddress(senderIndex), username: from })
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
    stampers.set(mailId(mail), { identity: signer, address: { host: "192.0.2.1", port: 7000 }, username: recipient })
    return mail
  })

const targetOf = (node: TestNode) => ({ address: node.address, nodeId: node.nodeId })

/** `from` leaves `mail` at `relay` with its sender's postage (or the one given). */
const storeMail = (from: TestNode, relay: TestNode, mail: Mail, postage?: Postage) =>
  Effect.gen(function*() {
    const stamped = postage ?? (yield* postageOf(mail))
    const result = yield* from.transport.send(targetOf(relay), new StoreMail({ mail, postage: stamped }))
    return result.value.outcome
  })

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

/** A relay among olive's k closest that is neither node 6 (her senders') nor node 7 (hers). */
const oliveRelay = (relays: ReadonlyArray<RelayNode>) =>
  at(closestRelays(relays, userKey(name("olive")), K).filter((relay) => relay.node.index < 6), 0)

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
        // A StoreMail costs 20 of the 100 requests a second a peer may send (core `RequestLimits`):
        // an honest sender at that pace is never refused.
        yield* TestClock.adjust(Duration.millis(200))
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
      const { network, relays } = yield* makeRelayNetwork(6)
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
      // A mailbox with nothing in it is answered empty at once, whoever asks: nothing to protect, and
      // no DHT resolution on behalf of a caller nobody checked.
      const lookups = () => {
        const sent = network.network.stats().sentByTag
        return sent.FindNode + sent.FindValue
      }
      const lookupsBefore = lookups()
      expect(yield* fetchMail(stranger, relay, "nobody", { signer: stranger.identity })).toEqual({ mail: [], more: false })
      expect(yield* ackMail(stranger, relay, "nobody", [mailId(mail)], { signer: stranger.identity })).toBe(0)
      expect(lookups()).toBe(lookupsBefore)

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

  it.scoped("ATTACK: forged fetches of many held mailboxes set off 4 owner reads per caller, then one per 5 s; asks for one mailbox share its read", () =>
    deterministic(Effect.gen(function*() {
      // Junk mail for names nobody holds: the relay must ask the network who owns each mailbox before it
      // can check a fetch's signature. Before: every forged FetchMail for another junk mailbox set off
      // a lookup over three paths (a review's run: 2,000 junk mailboxes, 1,982 reads, and as many again
      // when repeated at once), and asks for one mailbox at once each set off their own.
      const { network, relays } = yield* makeRelayNetwork(6)
      const relay = at(relays, 1).node
      const attacker = at(relays, 4).node
      const sender = at(relays, 2).node
      const olive = yield* register(at(relays, 3).node, "olive")
      const now = yield* Clock.currentTimeMillis
      const junk = Array.from({ length: 7 }, (_, index) => `junk${index}`)
      for (const [index, username] of junk.entries()) {
        const nobody = signedRecord(at(relays, 3).node, name(username), { issuedAt: now, expiresAt: now + Duration.toMillis(Duration.days(7)) })
        yield* storeMail(sender, relay, yield* messageMail(2, "sam", nobody, "junk", index + 1))
      }
      const lookups = () => network.network.stats().sentByTag.FindValue
      const outcome = (call: Effect.Effect<unknown, { readonly _tag: string }>) =>
        Effect.map(Effect.flip(call), (error) => ("reason" in error ? `${error._tag}:${String(error.reason)}` : error._tag))
      const forged = (username: string) => outcome(fetchMail(attacker, relay, username, { signer: attacker.identity }))

      // Four asks at once about one mailbox share one read, and take one of the caller's four.
      const together = yield* Effect.all(Array.from({ length: 4 }, () => forged("junk0")), { concurrency: "unbounded" })
      expect(together).toEqual(Array.from({ length: 4 }, () => "MailboxAccessDenied:UnknownOwner"))
      for (const username of ["junk1", "junk2", "junk3"]) expect(yield* forged(username)).toBe("MailboxAccessDenied:UnknownOwner")
      // Its allowance spent, the next mailbox costs the relay nothing.
      const before = lookups()
      expect(yield* forged("junk4")).toBe("RequestRefused:Overloaded")
      expect(lookups()).toBe(before)
      // An answer is remembered for a minute: asking again about junk0 is refused as before, with no read.
      expect(yield* forged("junk0")).toBe("MailboxAccessDenied:UnknownOwner")
      expect(lookups()).toBe(before)
      // Another caller has its own allowance, and the owner of a real mailbox fetches as ever.
      expect(yield* outcome(fetchMail(sender, relay, "junk5", { signer: sender.identity }))).toBe("MailboxAccessDenied:UnknownOwner")
      yield* storeMail(sender, relay, yield* messageMail(2, "sam", olive, "for olive"))
      expect((yield* fetchMail(at(relays, 3).node, relay, "olive")).mail).toHaveLength(1)
      // Five seconds on, the attacker has one more read.
      yield* TestClock.adjust(Duration.seconds(5))
      expect(yield* forged("junk4")).toBe("MailboxAccessDenied:UnknownOwner")
      expect(yield* forged("junk6")).toBe("RequestRefused:Overloaded")
    })))

  it.scoped("ATTACK: callers who spend the relay's owner reads in all leave the owner's own pulls free", () =>
    deterministic(Effect.gen(function*() {
      // Five callers ask about 20 mailboxes of junk with forged signatures: the relay's 20 reads at once
      // are spent. Before: the owner of a real mailbox whose answer was no longer remembered was refused
      // Overloaded too. The relay holds her name's record (it is among its k closest), so her pull
      // reads nothing over the network and needs no allowance.
      const { relays } = yield* makeRelayNetwork(10, { requestLimits: unlimitedRequests })
      const owner = at(relays, 3).node
      const sender = at(relays, 2).node
      const relay = at(closestRelays(relays, userKey(name("olive")), K).filter((held) => held.node !== owner && held.node !== sender), 0).node
      const callers = relays.map((held) => held.node).filter((node) => node !== relay && node !== owner && node !== sender)
      const olive = yield* register(owner, "olive")
      yield* storeMail(sender, relay, yield* messageMail(2, "sam", olive, "for olive"))
      const now = yield* Clock.currentTimeMillis
      const junk: Array<string> = []
      for (let index = 0; junk.length < 20 && index < 200; index++) {
        const username = `junk${index}`
        const nobody = signedRecord(owner, name(username), { issuedAt: now, expiresAt: now + Duration.toMillis(Duration.days(7)) })
        const stored = yield* Effect.either(storeMail(sender, relay, yield* messageMail(2, "sam", nobody, "junk", index + 1)))
        if (stored._tag === "Right") junk.push(username)
      }
      expect(junk).toHaveLength(20)
      const outcome = (call: Effect.Effect<unknown, { readonly _tag: string }>) =>
        Effect.map(Effect.flip(call), (error) => ("reason" in error ? `${error._tag}:${String(error.reason)}` : error._tag))
      for (const [index, username] of junk.entries()) {
        const caller = at(callers, Math.floor(index / 4))
        expect(yield* outcome(fetchMail(caller, relay, username, { signer: caller.identity }))).toBe("MailboxAccessDenied:UnknownOwner")
      }
      // Spent: a sixth caller, within its own allowance, is refused by the relay's (its mailbox: junk0's, now
      // remembered, would cost nothing; a mailbox of mail nobody asked about yet).
      const sixth = at(callers, 5)
      const nobody = signedRecord(owner, name("unasked"), { issuedAt: now, expiresAt: now + Duration.toMillis(Duration.days(7)) })
      const unasked = yield* Effect.either(storeMail(sender, relay, yield* messageMail(2, "sam", nobody, "junk", 999)))
      expect(unasked._tag).toBe("Right")
      expect(yield* outcome(fetchMail(sixth, relay, "unasked", { signer: sixth.identity }))).toBe("RequestRefused:Overloaded")
      expect((yield* fetchMail(owner, relay, "olive")).mail).toHaveLength(1)
    })))

  it.scoped("quotas: mail beyond the per-recipient or the total limit is refused loudly", () =>
    deterministic(Effect.gen(function*() {
      const { relays } = yield* makeRelayNetwork(3, {
        store: { mailboxMaxMessagesPerRecipient: 2, mailboxMaxMessagesTotal: 3 }
      })
      const relay = at(relays, 0)
      const sender = at(relays, 1).node
      // A signer per receipt: one signer's share of the total (3 / 16, at least a mailbox's share) is not what this test is about.
      const receipt = (n: number, forUser: string) =>
        receiptMail(nodeIdentity(20 + n), `signer${n}`, toHex(seededRandomBytes(100 + n)(32)), forUser)

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
      // Olive's record names a node that takes no messages, so nobody can take the mail away before it
      // expires. The relay holds it when the mail arrives, so the mail is not junk: it gets 14 days.
      const olive = signedRecord(sender, name("olive"), { issuedAt: 0, expiresAt: Duration.toMillis(Duration.days(1)) })
      yield* sender.transport.send(targetOf(relay.node), new Store({ record: olive }))
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
      // One of olive's k closest (a relay farther away refuses her mail: NotResponsible).
      const relay = oliveRelay(relays)
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
      const relay = oliveRelay(relays)
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
      // Olive's relays hold her record (mail for a name nobody holds is junk, and is not spread).
      yield* register(sender, "olive")
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
      yield* register(sender, "olive")
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
        id: "f".repeat(64) as MessageId,
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


// ---------------------------------------------------------------------------
// Storage anyone could fill (issue 12)

/** A refusal as "Tag:reason", or the outcome. */
const outcomeOf = (call: Effect.Effect<string, { readonly _tag: string }>) =>
  Effect.map(Effect.either(call), (outcome) =>
    Either.isRight(outcome)
      ? outcome.right
      : "reason" in outcome.left
      ? `${outcome.left._tag}:${String(outcome.left.reason)}`
      : outcome.left._tag)

/** The detail of a RequestRefused, or "" for anything else. */
const refusalDetail = (call: Effect.Effect<unknown, { readonly _tag: string }>) =>
  Effect.map(Effect.flip(call), (error) => ("detail" in error ? String(error.detail) : ""))

const relaysByRank = (relays: ReadonlyArray<RelayNode>, key: Key) =>
  trueClosest(key, relays.map((relay) => relay.node.nodeId), relays.length).map((id) =>
    relays.find((relay) => relay.node.nodeId === id) as RelayNode
  )

/** Small mailboxes: a sender's share of one is 5 mails (40 / 8), of the total 12 (200 / 16). */
/**
 * `count` attacker nodes (indices from `firstIndex` on) whose ids are farther
 * from `key` than every relay's, so none is a fellow relay of its mailbox and
 * the relay counts their mail against their address (`addressOf(i)`).
 */
const farAttackers = (
  network: { readonly network: Parameters<typeof startNode>[0] },
  relays: ReadonlyArray<RelayNode>,
  key: Key,
  count: number,
  firstIndex: number,
  addressOf: (i: number) => { readonly host: string; readonly port: number }
) =>
  Effect.gen(function*() {
    const ids = relays.map((r) => r.node.nodeId)
    const farIndices: Array<number> = []
    for (let index = firstIndex; farIndices.length < count; index++) {
      if (trueClosest(key, [...ids, nodeIdentity(index).nodeId], 7)[6] === nodeIdentity(index).nodeId) farIndices.push(index)
    }
    const attackers: Array<TestNode> = []
    for (const [i, index] of farIndices.entries()) {
      attackers.push(yield* startNode(network.network, index, nodeConfig, { address: addressOf(i) }))
    }
    return { attackers, farIndices }
  })

const smallMailboxes: Partial<ChatStoreConfigShape> = {
  mailboxMaxMessagesPerRecipient: 40,
  mailboxMaxMessagesTotal: 200,
  mailboxMinSenderMessages: 2
}

/** A record nobody published, to seal mail to a name nobody holds. */
const unpublished = (index: number, username: string) =>
  signedRecord({ identity: nodeIdentity(index), address: nodeAddress(index) }, name(username), {
    issuedAt: 0,
    expiresAt: Duration.toMillis(Duration.days(7))
  })

describe("Relay: storage anyone could fill", () => {
  it("mail is counted per network of the observed host; without one, per node id (an advertised host could be anyone's)", () => {
    const caller = (observedHost?: string) => ({
      nodeId: nodeIdentity(1).nodeId,
      address: { host: "198.51.100.7", port: 4242 },
      ...(observedHost === undefined ? {} : { observedHost })
    })
    expect(mailSource(caller("203.0.113.5"))).toBe("net:203.0.113.0/24")
    expect(mailSource(caller("203.0.113.200"))).toBe(mailSource(caller("203.0.113.5")))
    expect(mailSource(caller("::ffff:203.0.113.9"))).toBe(mailSource(caller("203.0.113.5")))
    expect(mailSource(caller("2001:db8:1:2::1"))).toBe(mailSource(caller("2001:db8:1:ffff::2")))
    expect(mailSource(caller())).toBe(`node:${nodeIdentity(1).nodeId}`)
    expect(mailSource(caller(""))).toBe(`node:${nodeIdentity(1).nodeId}`)
  })

  it.scoped("ATTACK: a hostile node leaving mail at relays far from the mailbox is refused; its k closest accept", () =>
    deterministic(Effect.gen(function*() {
      const { relays } = yield* makeRelayNetwork(24)
      const key = userKey(name("olive"))
      const ranked = relaysByRank(relays, key)
      const attacker = at(ranked, 10).node
      const mail = yield* receiptMail(nodeIdentity(3), "sam", toHex(seededRandomBytes(40)(32)), "olive")
      for (const relay of ranked.slice(0, K)) expect(yield* outcomeOf(storeMail(attacker, relay.node, mail))).toBe("Stored")
      for (const relay of ranked.slice(12)) {
        expect(yield* outcomeOf(storeMail(attacker, relay.node, mail))).toBe("RequestRefused:NotResponsible")
        expect(yield* heldFor(relay, "olive")).toEqual([])
      }
    })), { timeout: 60_000 })

  it.scoped("ATTACK: forged postage is refused: a bad signature, a record of another key, an unpaid claim, another user's record", () =>
    deterministic(Effect.gen(function*() {
      const { relays } = yield* makeRelayNetwork(6)
      const relay = at(relays, 1)
      const sender = at(relays, 2).node
      const olive = yield* register(at(relays, 3).node, "olive")
      const mail = yield* messageMail(2, "sam", olive, "hi")
      const genuine = yield* postageOf(mail)
      const refusal = (postage: Postage, forMail: Mail = mail) =>
        Effect.map(Effect.flip(storeMail(sender, relay.node, forMail, postage)), (error) =>
          error._tag === "RequestRefused" ? `${error.reason}: ${error.detail}` : error._tag)

      // Another valid postage's signature, pasted on.
      const other = yield* postageOf(yield* messageMail(2, "sam", olive, "other"))
      expect(yield* refusal({ ...genuine, signature: other.signature })).toContain("NotAccepted: postage refused (BadSignature)")
      // Sam's postage carrying the record of another key (which claims "sam" too).
      const stolen = yield* postageOf(mail, {
        stamper: { identity: nodeIdentity(4), address: nodeAddress(4), username: "sam" }
      })
      expect(yield* refusal({ ...genuine, sender: stolen.sender })).toContain("(BadSignature)")
      // A record whose claim was never paid for (a wrong nonce, re-signed by its own key).
      const unpaid = signUserRecord(
        { ...genuine.sender, claim: { ...genuine.sender.claim, nonce: genuine.sender.claim.nonce + 1 } },
        nodeIdentity(2).sign
      )
      const forged = signPostage({ mail, sender: unpaid, expiresAt: genuine.expiresAt, sign: nodeIdentity(2).sign })
      expect(yield* refusal(forged)).toContain("(SenderRecordInvalid): ClaimWorkInvalid")
      // A receipt signed as olive, stamped with a record of another user of the same key.
      const receipt = yield* receiptMail(nodeIdentity(3), "olive", toHex(seededRandomBytes(41)(32)), "sam")
      const otherUser = yield* postageOf(receipt, {
        stamper: { identity: nodeIdentity(3), address: nodeAddress(3), username: "oscar" }
      })
      expect(yield* refusal(otherUser, receipt)).toContain("(SenderMismatch)")

      expect(yield* heldFor(relay, "olive")).toEqual([])
      expect(yield* heldFor(relay, "sam")).toEqual([])
      expect((yield* relay.relay.stats).refused).toBe(4)
      // The genuine postage still goes through.
      expect(yield* storeMail(sender, relay.node, mail, genuine)).toBe("Stored")
    })))

  it.scoped("ATTACK: one sender flooding StoreMail cannot stop honest offline mail to that mailbox or another at the same relay", () =>
    deterministic(Effect.gen(function*() {
      // Mallory's 51 StoreMails from two peers in frozen time would meet the request limits first (20 a
      // peer); they are lifted so that the mailbox shares, which a paced flood reaches, are what is tested.
      const { relays } = yield* makeRelayNetwork(6, { store: smallMailboxes, requestLimits: unlimitedRequests })
      const relay = at(relays, 1)
      const olive = yield* register(at(relays, 3).node, "olive")
      const pat = yield* register(at(relays, 4).node, "pat")
      // Mallory's key, sent through two nodes (two addresses).
      const callers = [at(relays, 2).node, at(relays, 5).node]
      const outcomes: Array<string> = []
      for (let n = 0; n < 20; n++) {
        const flood = yield* messageMail(50, "mallory", olive, `flood ${n}`)
        outcomes.push(yield* outcomeOf(storeMail(at(callers, n % 2), relay.node, flood)))
      }
      expect(outcomes.filter((outcome) => outcome === "Stored").length).toBe(5)
      expect(outcomes.slice(5)).toEqual(Array(15).fill("RequestRefused:QuotaExceeded"))
      const full = yield* messageMail(50, "mallory", olive, "one more")
      expect(yield* refusalDetail(storeMail(at(callers, 0), relay.node, full))).toContain("for one sender in this mailbox")
      // Honest mail to the flooded mailbox.
      const honest = yield* messageMail(2, "sam", olive, "are you there?")
      expect(yield* storeMail(at(relays, 2).node, relay.node, honest)).toBe("Stored")

      // Mallory spreads the flood over other mailboxes: at most a sender's share of the total (12).
      let spread = 0
      for (let n = 0; n < 30; n++) {
        const flood = yield* messageMail(50, "mallory", unpublished(60 + n, `box${n}`), "spread")
        if ((yield* outcomeOf(storeMail(at(callers, n % 2), relay.node, flood))) === "Stored") spread++
      }
      expect(spread).toBe(12 - 5)
      const toPat = yield* messageMail(2, "sam", pat, "hello pat")
      expect(yield* storeMail(at(relays, 2).node, relay.node, toPat)).toBe("Stored")
      expect((yield* heldFor(relay, "olive")).length).toBe(6)
    })), { timeout: 60_000 })

  it.scoped("ATTACK: many keys on many networks fill a mailbox, and honest offline mail still takes a place in it", () =>
    deterministic(Effect.gen(function*() {
      const { network, relays } = yield* makeRelayNetwork(6, { store: smallMailboxes })
      const relay = at(relays, 1)
      const key = userKey(name("olive"))
      const olive = yield* register(at(relays, 3).node, "olive")
      // Eight attacker nodes, each its own key on its own network (/24), none a fellow relay of olive's mailbox.
      const { attackers, farIndices } = yield* farAttackers(network, relays, key, 8, 200, (i) => ({ host: `10.${70 + i}.0.1`, port: 7001 }))
      // Each takes its share (5 of 40): the mailbox is full.
      for (const [i, attacker] of attackers.entries()) {
        for (let n = 0; n < 5; n++) {
          const flood = yield* messageMail(at(farIndices, i), `mal${i}`, olive, `flood ${i}.${n}`)
          expect(yield* storeMail(attacker, relay.node, flood)).toBe("Stored")
        }
      }
      const more = yield* messageMail(at(farIndices, 0), "mal0", olive, "one more")
      expect(yield* refusalDetail(storeMail(at(attackers, 0), relay.node, more))).toContain("for one sender in this mailbox")
      expect((yield* heldFor(relay, "olive")).length).toBe(40)
      // Before: "the limit of 40 messages for this recipient is reached". Now the honest sender, who holds
      // nothing here, takes the place of the oldest mail of the largest holder.
      const honest = yield* messageMail(2, "sam", olive, "still here?")
      expect(yield* storeMail(at(relays, 2).node, relay.node, honest)).toBe("Stored")
      const held = yield* heldFor(relay, "olive")
      expect(held.length).toBe(40)
      expect(held).toContain(mailId(honest))
    })), { timeout: 60_000 })

  it.scoped("ATTACK: one address with many keys (and many nodes) cannot stop honest offline mail either", () =>
    deterministic(Effect.gen(function*() {
      const { network, relays } = yield* makeRelayNetwork(6, { store: smallMailboxes })
      const relay = at(relays, 1)
      const key = userKey(name("olive"))
      const olive = yield* register(at(relays, 3).node, "olive")
      const pat = yield* register(at(relays, 4).node, "pat")
      // Attacker nodes on one host, with ids farther from olive's key than every relay: not fellow
      // relays of her mailbox, so the relay counts their mail against their address.
      const { attackers, farIndices } = yield* farAttackers(network, relays, key, 10, 100, (i) => ({ host: "10.66.0.1", port: 7001 + i }))
      const ids = relays.map((r) => r.node.nodeId)
      let stored = 0
      for (const [i, attacker] of attackers.entries()) {
        for (let n = 0; n < 3; n++) {
          const flood = yield* messageMail(at(farIndices, i), `mal${i}`, olive, `flood ${n}`)
          const outcome = yield* outcomeOf(storeMail(attacker, relay.node, flood))
          if (outcome === "Stored") stored++
          else expect(outcome).toBe("RequestRefused:QuotaExceeded")
        }
      }
      expect(stored).toBe(5)
      const last = yield* messageMail(at(farIndices, 9), "mal9", olive, "again")
      expect(yield* refusalDetail(storeMail(at(attackers, 9), relay.node, last))).toContain("for one address in this mailbox")
      const honest = yield* messageMail(2, "sam", olive, "still here?")
      expect(yield* storeMail(at(relays, 2).node, relay.node, honest)).toBe("Stored")

      // The same host spreading over other mailboxes (with ten keys, through one node that is no fellow
      // relay of them either) is held to one address's share of the total.
      const spreader = at(attackers, 0)
      const boxes: Array<string> = []
      for (let n = 0; boxes.length < 30; n++) {
        if (trueClosest(userKey(name(`box${n}`)), [...ids, spreader.nodeId], 7)[6] === spreader.nodeId) boxes.push(`box${n}`)
      }
      let spread = 0
      for (const [n, box] of boxes.entries()) {
        const flood = yield* messageMail(at(farIndices, n % 10), `mal${n % 10}`, unpublished(60 + n, box), "spread")
        if ((yield* outcomeOf(storeMail(spreader, relay.node, flood))) === "Stored") spread++
      }
      expect(spread).toBe(12 - 5)
      const toPat = yield* messageMail(2, "sam", pat, "hello pat")
      expect(yield* storeMail(at(relays, 2).node, relay.node, toPat)).toBe("Stored")
    })), { timeout: 60_000 })

  it.scoped("mail for a name nobody holds expires within the junk lifetime, honest mail keeps 14 days, and a record arriving later gives it back", () =>
    deterministic(Effect.gen(function*() {
      const { relays } = yield* makeRelayNetwork(6, {
        chat: { relayPushInterval: Duration.days(1), mailReplicationInterval: Duration.days(7) },
        node: { maintenanceInterval: Duration.days(1) }
      })
      const now = yield* Clock.currentTimeMillis
      const olive = yield* register(at(relays, 3).node, "olive")
      // One of olive's k closest: it holds her record (a relay in the slack beyond them would not).
      const relay = at(closestRelays(relays, userKey(name("olive")), K).filter((r) => r.node.index !== 2), 0)
      const sender = at(relays, 2).node
      const honest = yield* messageMail(2, "sam", olive, "for olive")
      const junk = yield* messageMail(2, "sam", unpublished(70, "ghost"), "for nobody")
      const late = unpublished(71, "late")
      const early = yield* messageMail(2, "sam", late, "before your record")
      for (const mail of [honest, junk, early]) expect(yield* storeMail(sender, relay.node, mail)).toBe("Stored")
      const expiryOf = (owner: string) => Effect.map(relay.store.mailFor(userKey(name(owner)), 10), (items) => items[0]?.expiresAt)
      const fourteenDays = now + Duration.toMillis(Duration.days(14))
      expect(yield* expiryOf("olive")).toBe(fourteenDays)
      expect(yield* expiryOf("ghost")).toBe(now + Duration.toMillis(Duration.hours(6)))
      expect(yield* expiryOf("late")).toBe(now + Duration.toMillis(Duration.hours(6)))

      // Late's record reaches the relay: its mail gets the full lifetime back.
      yield* sender.transport.send(targetOf(relay.node), new Store({ record: late }))
      expect(yield* expiryOf("late")).toBe(fourteenDays)

      yield* TestClock.adjust(Duration.hours(6))
      yield* relay.relay.pushRound
      expect(yield* heldFor(relay, "ghost")).toEqual([])
      expect(yield* heldFor(relay, "olive")).toEqual([mailId(honest)])
      expect(yield* heldFor(relay, "late")).toEqual([mailId(early)])
      // The junk's id is remembered: resending it is a duplicate, not a new 6 hours.
      expect(yield* storeMail(sender, relay.node, junk)).toBe("Duplicate")
    })), { timeout: 60_000 })

  it.scoped("re-replication does not spread junk, nor mail without postage", () =>
    deterministic(Effect.gen(function*() {
      const { relays } = yield* makeRelayNetwork(12, { chat: rarePushes })
      const ghostKey = userKey(name("ghost"))
      const holders = closestRelays(relays, ghostKey, K)
      const sender = at(relays.filter((relay) => !holders.includes(relay)), 0).node
      const junk = yield* messageMail(2, "sam", unpublished(70, "ghost"), "for nobody")
      for (const relay of holders) expect(yield* storeMail(sender, relay.node, junk)).toBe("Stored")
      // Olive's mailbox holds a row from before postage existed.
      const olive = yield* register(sender, "olive")
      const oliveKey = userKey(name("olive"))
      const oliveHolders = closestRelays(relays, oliveKey, K)
      const old = yield* messageMail(2, "sam", olive, "from an old version")
      yield* at(oliveHolders, 0).store.storeMail({
        id: mailId(old),
        recipientKey: oliveKey,
        envelopeJson: JSON.stringify(old),
        size: 100,
        storedAt: 0,
        expiresAt: Duration.toMillis(Duration.days(14))
      })

      yield* TestClock.adjust(Duration.sum(HOUR, Duration.minutes(10)))
      const copies = yield* Effect.forEach(relays, (relay) => Effect.map(relay.relay.stats, (stats) => stats.replicated))
      expect(copies.reduce((sum, count) => sum + count, 0)).toBe(0)
      for (const relay of relays) {
        expect(yield* heldFor(relay, "ghost")).toEqual(holders.includes(relay) ? [mailId(junk)] : [])
        expect(yield* heldFor(relay, "olive")).toEqual(relay === at(oliveHolders, 0) ? [mailId(old)] : [])
      }
    })), { timeout: 60_000 })

  it.scoped("a relay that no longer belongs to a mailbox hands its mail to the k closest and drops it", () =>
    deterministic(Effect.gen(function*() {
      const { network, relays } = yield* makeRelayNetwork(3, { chat: rarePushes })
      const owner = at(relays, 1).node
      yield* register(owner, "olive")
      const key = userKey(name("olive"))
      const mail = yield* receiptMail(nodeIdentity(2), "sam", toHex(seededRandomBytes(42)(32)), "olive")
      for (const relay of relays) expect(yield* storeMail(at(relays, 2).node, relay.node, mail)).toBe("Stored")
      const all = [...relays]
      for (let index = 3; index < 30; index++) {
        const node = yield* startNode(network.network, index, { ...nodeConfig, bootstrap: [nodeAddress(0)] })
        yield* node.dht.awaitJoined
        all.push(yield* startRelay(node, { chat: rarePushes }))
      }
      yield* TestClock.adjust(Duration.sum(HOUR, Duration.minutes(10)))
      for (const relay of closestRelays(all, key, K)) expect(yield* heldFor(relay, "olive")).toEqual([mailId(mail)])
      let handedOff = 0
      for (const relay of relays) {
        const belongs = yield* relay.node.dht.belongsHere(key)
        expect(yield* heldFor(relay, "olive")).toEqual(belongs ? [mailId(mail)] : [])
        handedOff += (yield* relay.relay.stats).handedOff
      }
      expect(handedOff).toBeGreaterThan(0)
    })), { timeout: 120_000 })
})
