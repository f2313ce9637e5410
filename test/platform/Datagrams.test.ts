/**
 * Ping and FindNode by datagram, over real UDP and TCP sockets on loopback:
 * the honest path (no TCP connection for them), the fallback to TCP for a
 * peer that does not answer datagrams, and hostile clients and servers
 * speaking the datagram format by hand (core `Datagram`).
 */
import { describe, expect, it } from "@effect/vitest"
import * as dgram from "node:dgram"
import { randomBytes } from "node:crypto"
import { Deferred, Effect, Either, Fiber, Schedule } from "effect"
import { utf8 } from "../../src/core/Bytes.js"
import type { Address } from "../../src/core/Contact.js"
import {
  HELLO_BYTES,
  helloPacket,
  parseDatagram,
  queryAssociated,
  sealedPacket,
  WELCOME_BYTES,
  welcomePacket
} from "../../src/core/Datagram.js"
import type { NodeId } from "../../src/core/Id.js"
import { DialBack, FindNode, Ping } from "../../src/node/Protocol.js"
import type { InstalledHandlers } from "../../src/node/Transport.js"
import type { IdentityService } from "../../src/node/Identity.js"
import { type DatagramStats, enlargeReceiveBuffer, open, pairKeys, RECEIVE_BUFFER_BYTES, seal } from "../../src/platform/Datagrams.js"
import { generateX25519KeyPair, staticDh } from "../../src/platform/Noise.js"
import { callCodecs } from "../../src/platform/RpcEnvelopes.js"
import { staticKeyStatement } from "../../src/platform/SecureChannel.js"
import { startNode, testIdentity } from "../support/relay.js"
import { freshLoopbackHost } from "../support/loopback.js"
import { sha256Native, sign, signingKeyFromSeed } from "../../src/platform/NodeCrypto.js"
import { nodeIdFromPublicKey } from "../../src/core/Id.js"

/** Ping answers with the host it saw; FindNode with one contact: the caller as it was seen. */
const handlers: InstalledHandlers = {
  Ping: (caller) => Effect.succeed({ observedHost: caller.observedHost ?? "" }),
  FindNode: (caller) => Effect.succeed({ contacts: [{ nodeId: caller.nodeId, address: caller.address }] })
}

/** A UDP socket speaking the datagram format by hand: what it received, in order. */
interface RawPeer {
  readonly address: Address
  readonly send: (packet: Uint8Array, to: Address) => void
  /** The next packet received (waits for it). */
  readonly next: Effect.Effect<Uint8Array>
  /** Packets received and not yet taken. */
  readonly unread: () => number
}

const rawPeer = (host: string = freshLoopbackHost()) =>
  Effect.acquireRelease(
    Effect.async<dgram.Socket>((resume) => {
      const socket = dgram.createSocket("udp4")
      socket.bind({ address: host, port: 0 }, () => resume(Effect.succeed(socket)))
    }),
    (socket) => Effect.sync(() => socket.close())
  ).pipe(Effect.map((socket): RawPeer => {
    const inbox: Array<Uint8Array> = []
    let waiter: ((packet: Uint8Array) => void) | undefined
    socket.on("message", (packet) => {
      const take = waiter
      waiter = undefined
      if (take !== undefined) take(new Uint8Array(packet))
      else inbox.push(new Uint8Array(packet))
    })
    return {
      address: { host, port: socket.address().port },
      send: (packet, to) => socket.send(packet, to.port, to.host),
      next: Effect.async<Uint8Array>((resume) => {
        const first = inbox.shift()
        if (first !== undefined) return resume(Effect.succeed(first))
        waiter = (packet) => resume(Effect.succeed(packet))
      }),
      unread: () => inbox.length
    }
  }))

/** A client identity with a static key, as a hostile client builds it by hand. */
const clientSelf = (identity: IdentityService) => {
  const staticKeys = generateX25519KeyPair()
  return {
    staticKeys,
    self: {
      signingKey: identity.signingPublicKey,
      staticKey: staticKeys.publicKey,
      staticSignature: identity.sign(staticKeyStatement(staticKeys.publicKey))
    }
  }
}

/** A fresh identity (not one of the seeded test ones). */
const freshIdentity = (): IdentityService => {
  const signing = signingKeyFromSeed(randomBytes(32))
  return {
    nodeId: nodeIdFromPublicKey(signing.publicKey, sha256Native),
    signingPublicKey: signing.publicKey,
    encryptionPublicKey: new Uint8Array(32),
    sign: (message) => sign(signing.privateKey, message)
  }
}

/** The Welcome a `Hello` from `peer` draws from `server`. */
const welcomeFrom = (peer: RawPeer, server: Address) =>
  Effect.gen(function*() {
    peer.send(helloPacket(randomBytes(16)), server)
    const welcome = parseDatagram(yield* peer.next)
    if (welcome?.kind !== "Welcome") throw new Error("expected a Welcome")
    return welcome
  })

/** A sealed query carrying the client message `message` from `client` to the server of `welcome`. */
const sealedQuery = (
  client: ReturnType<typeof clientSelf>,
  welcome: { readonly cookie: Uint8Array; readonly staticKey: Uint8Array },
  message: unknown
) => {
  const secret = staticDh(client.staticKeys, welcome.staticKey)
  if (Either.isLeft(secret)) throw new Error("DH failed")
  const { clientSends: sendKey, serverSends: receiveKey } = pairKeys(secret.right, client.self.staticKey, welcome.staticKey)
  const associated = queryAssociated(welcome.cookie, client.self)
  const { nonce, sealed } = seal(sendKey, associated, utf8(JSON.stringify({ port: 0, message })))
  return { packet: sealedPacket(associated, nonce, sealed), receiveKey }
}

/** A sealed Ping query from `client` to the server of `welcome`, with request id `id`. */
const pingQuery = (
  client: ReturnType<typeof clientSelf>,
  welcome: { readonly cookie: Uint8Array; readonly staticKey: Uint8Array },
  id: string
) => {
  const payload = callCodecs.get("Ping")?.encodePayload(new Ping({}))
  if (payload === undefined || Either.isLeft(payload)) throw new Error("Ping does not encode")
  return sealedQuery(client, welcome, { _tag: "Request", id, tag: "Ping", payload: payload.right, headers: [] })
}

/** The JSON in an Answer sealed under `key`. */
const answerOf = (packet: Uint8Array, key: Buffer): unknown => {
  const answer = parseDatagram(packet)
  if (answer?.kind !== "Answer") throw new Error("expected an Answer")
  const plaintext = open(key, answer.nonce, answer.associated, answer.sealed)
  if (plaintext === undefined) throw new Error("the Answer does not authenticate")
  return JSON.parse(new TextDecoder().decode(plaintext))
}

/** What Linux gives a UDP socket that asks for no receive buffer (net.core.rmem_default on a stock kernel). */
const STOCK_RECEIVE_BUFFER_BYTES = 212_992

/** A packet of the busy-node burst: the size of a large query. */
const BURST_PACKET_BYTES = 1_200

const statsOf = (node: { readonly stats: Effect.Effect<{ readonly datagrams?: DatagramStats | undefined }> }) =>
  Effect.map(node.stats, (stats) => {
    if (stats.datagrams === undefined) throw new Error("datagrams are off")
    return stats.datagrams
  })

/**
 * A node (seed 2) serving `handlers`, and a client speaking datagrams by hand
 * from a raw socket (identity seed 5), with the Welcome it got.
 */
const servedToRawClient = (config: Parameters<typeof startNode>[1] = {}) =>
  Effect.gen(function*() {
    const server = yield* startNode(2, config)
    yield* server.serve(handlers)
    const socket = yield* rawPeer()
    const client = clientSelf(testIdentity(5))
    const welcome = yield* welcomeFrom(socket, server.localAddress)
    return { server, socket, client, welcome }
  })

/** Client identity 5 holding a session at `server`: its socket, and the Welcome and Ping ("1") that made it. */
const clientWithSession = (server: { readonly localAddress: Address }) =>
  Effect.gen(function*() {
    const client = clientSelf(testIdentity(5))
    const socket = yield* rawPeer()
    const welcome = yield* welcomeFrom(socket, server.localAddress)
    const ping = pingQuery(client, welcome, "1")
    socket.send(ping.packet, server.localAddress)
    expect(answerOf(yield* socket.next, ping.receiveKey)).toMatchObject({ _tag: "Exit", requestId: "1" })
    return { client, socket, ping }
  })

describe("datagrams", () => {
  it.scopedLive("Ping and FindNode go by datagram: answered with no TCP connection, the caller seen at its host and advertised port", () =>
    Effect.gen(function*() {
      const a = yield* startNode(1, { advertise: { host: "127.0.0.1", port: 0 } })
      const b = yield* startNode(2)
      yield* b.serve(handlers)
      const target = { address: b.localAddress, nodeId: testIdentity(2).nodeId }
      const ping = yield* a.send(target, new Ping({}))
      expect(ping.peer.nodeId).toBe(testIdentity(2).nodeId)
      expect(ping.value.observedHost).not.toBe("")
      const found = yield* a.send(target, new FindNode({ target: "0".repeat(64) as NodeId }))
      expect(found.value.contacts).toEqual([{ nodeId: testIdentity(1).nodeId, address: { host: ping.value.observedHost, port: a.localAddress.port } }])
      const [aStats, bStats] = [yield* a.stats, yield* b.stats]
      expect(aStats.dialled).toBe(0)
      expect(bStats.accepted).toBe(0)
      expect((yield* statsOf(a)).queriesSent).toBe(2)
      expect((yield* statsOf(b)).queriesServed).toBe(2)
    }))

  it.scopedLive("a node that takes no datagrams is called over TCP within the call's time, and then over TCP only", () =>
    Effect.gen(function*() {
      const a = yield* startNode(1)
      const b = yield* startNode(2, { datagrams: false })
      yield* b.serve(handlers)
      const target = { address: b.localAddress, nodeId: testIdentity(2).nodeId }
      const first = yield* a.send(target, new Ping({}), { timeout: "1 second" })
      expect(first.peer.nodeId).toBe(testIdentity(2).nodeId)
      expect((yield* statsOf(a)).fellBack).toBe(1)
      expect((yield* a.stats).dialled).toBe(1)
      // The address is remembered as taking no datagrams, so no Hello delays the next call.
      yield* a.send(target, new FindNode({ target: "0".repeat(64) as NodeId }))
      expect((yield* statsOf(a)).fellBack).toBe(1)
    }))

  it.scopedLive("a closed port: the first call fails as Unreachable once its Hello gives up (half its time), the next at once", () =>
    Effect.gen(function*() {
      const a = yield* startNode(1)
      // Port 1 is privileged: nothing of a test listens there, by TCP or by UDP.
      const target = { address: { host: "127.0.0.1", port: 1 }, nodeId: testIdentity(2).nodeId }
      const first = yield* Effect.flip(a.send(target, new Ping({}), { timeout: "400 millis" }))
      expect(first).toMatchObject({ _tag: "TransportError", reason: "Unreachable" })
      expect((yield* statsOf(a)).fellBack).toBe(1)
      const second = yield* Effect.flip(a.send(target, new Ping({}), { timeout: "400 millis" }))
      expect(second).toMatchObject({ _tag: "TransportError", reason: "Unreachable" })
      // No second Hello: the address is called over TCP only for a while.
      expect((yield* statsOf(a)).fellBack).toBe(1)
    }))

  it.scopedLive("a server that restarted at its address (new keys, new cookie secret) is called again at once: its Welcome answers the stale query", () =>
    Effect.gen(function*() {
      const a = yield* startNode(1)
      const host = freshLoopbackHost()
      const target = { address: { host, port: 0 }, nodeId: testIdentity(2).nodeId }
      const port = yield* Effect.scoped(Effect.gen(function*() {
        const before = yield* startNode(2, { listen: { host, port: 0 } })
        yield* before.serve(handlers)
        yield* a.send({ ...target, address: before.localAddress }, new Ping({}))
        return before.localAddress.port
      }))
      const after = yield* startNode(2, { listen: { host, port } })
      yield* after.serve(handlers)
      // a's link still holds the old keys and cookie, well within the cookie's life.
      const again = yield* a.send({ ...target, address: after.localAddress }, new Ping({}))
      expect(again.peer.nodeId).toBe(testIdentity(2).nodeId)
      expect((yield* statsOf(after)).dropped["BadCookie"]).toBe(1)
      expect((yield* a.stats).dialled).toBe(0)
    }))

  it.scopedLive("ATTACK: a Welcome of another node fails with IdentityMismatch; the right node is then called", () =>
    Effect.gen(function*() {
      const a = yield* startNode(1)
      const b = yield* startNode(2)
      yield* b.serve(handlers)
      const mismatch = yield* Effect.flip(a.send({ address: b.localAddress, nodeId: testIdentity(3).nodeId }, new Ping({})))
      expect(mismatch).toMatchObject({ _tag: "TransportError", reason: "IdentityMismatch" })
      const ok = yield* a.send({ address: b.localAddress, nodeId: testIdentity(2).nodeId }, new Ping({}))
      expect(ok.peer.nodeId).toBe(testIdentity(2).nodeId)
      expect((yield* a.stats).dialled).toBe(0)
    }))

  it.scopedLive("ATTACK: a Welcome whose static key the identity key did not sign is dropped, never believed", () =>
    Effect.gen(function*() {
      const a = yield* startNode(1)
      const impostor = yield* rawPeer()
      const victim = testIdentity(2)
      // The impostor answers every Hello with the victim's identity key and a static key of its own,
      // which the victim never signed.
      const forged = clientSelf(testIdentity(4))
      const answering = Effect.gen(function*() {
        for (;;) {
          const hello = parseDatagram(yield* impostor.next)
          if (hello?.kind !== "Hello") continue
          impostor.send(
            welcomePacket(hello.token, { ...forged.self, signingKey: victim.signingPublicKey }, randomBytes(16)),
            a.localAddress
          )
        }
      })
      yield* Effect.forkScoped(answering)
      const failed = yield* Effect.flip(a.send({ address: impostor.address, nodeId: victim.nodeId }, new Ping({}), { timeout: "400 millis" }))
      // No Welcome was believed: the call went over TCP, where nobody listens.
      expect(failed).toMatchObject({ _tag: "TransportError", reason: "Unreachable" })
      expect((yield* statsOf(a)).dropped["BadSignature"]).toBeGreaterThanOrEqual(1)
    }))

  it.scopedLive("ATTACK: a query whose cookie was given to another address is dropped, so no answer can be aimed at a victim", () =>
    Effect.gen(function*() {
      const { client, server: b, socket: attacker, welcome } = yield* servedToRawClient()
      const victim = yield* rawPeer()
      // The attacker cannot forge the victim's source address here, so it sends from a second socket:
      // to the server that is what a forged source looks like (another address than the cookie's).
      const query = pingQuery(client, welcome, "1")
      victim.send(query.packet, b.localAddress)
      // The victim gets a Welcome (a client with a stale cookie needs one), smaller than the query: no answer.
      const reflected = yield* victim.next
      expect(parseDatagram(reflected)?.kind).toBe("Welcome")
      expect(reflected.length).toBeLessThan(query.packet.length)
      // From the cookie's own address the same query is answered: the cookie, not the query, was wrong.
      attacker.send(query.packet, b.localAddress)
      const answer = answerOf(yield* attacker.next, query.receiveKey)
      expect(answer).toMatchObject({ _tag: "Exit", requestId: "1", exit: { _tag: "Success" } })
      expect(victim.unread()).toBe(0)
      expect((yield* statsOf(b)).dropped["BadCookie"]).toBe(1)
    }))

  it.scopedLive("ATTACK: a captured query re-bound to the attacker's own cookie does not open: the seal covers the cookie", () =>
    Effect.gen(function*() {
      const { client, server: b, socket: honest, welcome } = yield* servedToRawClient()
      const attacker = yield* rawPeer()
      const query = pingQuery(client, welcome, "1")
      honest.send(query.packet, b.localAddress)
      yield* honest.next
      const attackerCookie = (yield* welcomeFrom(attacker, b.localAddress)).cookie
      const rebound = Uint8Array.from(query.packet)
      rebound.set(attackerCookie, 4)
      attacker.send(rebound, b.localAddress)
      // Handled in order: once the honest client's next query is answered, the rebound one was dropped.
      honest.send(pingQuery(client, yield* welcomeFrom(honest, b.localAddress), "2").packet, b.localAddress)
      yield* honest.next
      expect(attacker.unread()).toBe(0)
      expect((yield* statsOf(b)).dropped["Unauthentic"]).toBe(1)
    }))

  it.scopedLive("ATTACK: tampered queries and garbage are dropped unanswered; the node goes on serving", () =>
    Effect.gen(function*() {
      const { client, server: b, socket: attacker, welcome } = yield* servedToRawClient()
      const query = pingQuery(client, welcome, "7")
      const tampered = Uint8Array.from(query.packet)
      tampered[tampered.length - 20] = (tampered[tampered.length - 20] as number) ^ 1
      attacker.send(tampered, b.localAddress)
      // The client's keys in the header are authenticated too: another static key breaks the seal.
      const otherKey = Uint8Array.from(query.packet)
      otherKey[4 + 16 + 32] = (otherKey[4 + 16 + 32] as number) ^ 1
      attacker.send(otherKey, b.localAddress)
      attacker.send(randomBytes(300), b.localAddress)
      attacker.send(new Uint8Array(HELLO_BYTES - 1), b.localAddress)
      attacker.send(query.packet, b.localAddress)
      expect(answerOf(yield* attacker.next, query.receiveKey)).toMatchObject({ _tag: "Exit", requestId: "7" })
      expect(attacker.unread()).toBe(0)
      const dropped = (yield* statsOf(b)).dropped
      expect(dropped["Unauthentic"]).toBe(1)
      // A flipped static key is a new client whose signature no longer holds.
      expect(dropped["BadSignature"]).toBe(1)
      expect(dropped["NotADatagram"]).toBe(2)
    }))

  it.scopedLive("a burst that arrives while the node is busy waits in the socket's receive buffer: none is dropped by the kernel", () =>
    Effect.gen(function*() {
      const { client, server: b, socket: sender, welcome } = yield* servedToRawClient()
      const granted = (yield* statsOf(b)).receiveBufferBytes
      // Linux grants twice what it allows, and allows at least its stock net.core.rmem_max (208 KiB):
      // more than the 208 KiB a socket gets when it asks for nothing.
      expect(granted).toBeGreaterThan(STOCK_RECEIVE_BUFFER_BYTES)
      // A datagram takes about twice its size of the buffer (Linux, loopback: 2,304 bytes for 1,200).
      // The burst fills at most 60 % of what was granted, more than the stock buffer holds, and is sent
      // before the node reads any of it (all within this turn of the event loop), as a node busy with
      // other work would meet it.
      // At most 200: more than the stock buffer holds, and fewer than the kernel's backlog of packets
      // waiting for its network softirq (net.core.netdev_max_backlog, 1,000), which a larger burst could overflow.
      const count = Math.min(200, Math.floor((0.6 * granted) / (2 * BURST_PACKET_BYTES)))
      expect(count * 2 * BURST_PACKET_BYTES).toBeGreaterThan(STOCK_RECEIVE_BUFFER_BYTES)
      const junk = new Uint8Array(BURST_PACKET_BYTES).fill(0x58)
      for (let i = 0; i < count; i++) sender.send(junk, b.localAddress)
      // The socket's queue is read in order, so once the query sent last is answered every packet of
      // the burst was read, or dropped by the kernel before.
      const query = pingQuery(client, welcome, "1")
      sender.send(query.packet, b.localAddress)
      const answer = yield* Effect.timeoutFail(sender.next, {
        duration: "10 seconds",
        onTimeout: () => new Error("the query after the burst was lost: the receive buffer overflowed")
      })
      expect(answerOf(answer, query.receiveKey)).toMatchObject({ _tag: "Exit", requestId: "1" })
      expect((yield* statsOf(b)).dropped["NotADatagram"]).toBe(count)
    }))

  it("a kernel that refuses the receive buffer asked for (as a BSD does above its limit) gets a smaller one, or keeps its default; nothing throws", () => {
    // A socket whose kernel accepts at most `limit` bytes and throws above it, as Node's setter does on ENOBUFS.
    const socketWithLimit = (limit: number) => {
      let size = STOCK_RECEIVE_BUFFER_BYTES
      return {
        setRecvBufferSize: (bytes: number) => {
          if (bytes > limit) throw new Error("ERR_SOCKET_BUFFER_SIZE: ENOBUFS")
          size = bytes
        },
        getRecvBufferSize: () => size
      }
    }
    expect(enlargeReceiveBuffer(socketWithLimit(Infinity))).toBe(RECEIVE_BUFFER_BYTES)
    expect(enlargeReceiveBuffer(socketWithLimit(1_900_000))).toBe(1024 * 1024)
    expect(enlargeReceiveBuffer(socketWithLimit(1024))).toBe(STOCK_RECEIVE_BUFFER_BYTES)
    const unreadable = {
      setRecvBufferSize: () => {},
      getRecvBufferSize: (): number => {
        throw new Error("ERR_SOCKET_DGRAM_NOT_RUNNING")
      }
    }
    expect(enlargeReceiveBuffer(unreadable)).toBe(0)
  })

  it.scopedLive("ATTACK: a Hello flood from one host draws at most its burst of Welcomes, each smaller than its Hello", () =>
    Effect.gen(function*() {
      expect(WELCOME_BYTES).toBeLessThan(HELLO_BYTES)
      // No refill, so the count does not depend on how fast the machine is.
      const b = yield* startNode(2, { datagramLimits: { hellosPerSecond: 0, helloBurst: 40 } })
      const flooder = yield* rawPeer()
      const other = yield* rawPeer()
      // In rounds of 20, each closed by another host's Hello: packets are handled in the order they
      // arrived, and a round fits the sockets' buffers.
      for (let round = 0; round < 3; round++) {
        for (let i = 0; i < 20; i++) flooder.send(helloPacket(randomBytes(16)), b.localAddress)
        yield* welcomeFrom(other, b.localAddress)
      }
      expect((yield* statsOf(b)).dropped["HelloBudget"]).toBe(20)
      for (let i = 0; i < 40; i++) expect((yield* flooder.next).length).toBe(WELCOME_BYTES)
    }))

  it.scopedLive("ATTACK: fresh identities from one host: only its burst get a signature check, the rest are dropped before it", () =>
    Effect.gen(function*() {
      const { client: known, server: b, socket: attacker, welcome } = yield* servedToRawClient({
        datagramLimits: { newClientsPerSecond: 0, newClientBurst: 10 }
      })
      const first = pingQuery(known, welcome, "1")
      attacker.send(first.packet, b.localAddress)
      yield* attacker.next
      for (let i = 0; i < 30; i++) attacker.send(pingQuery(clientSelf(freshIdentity()), welcome, "1").packet, b.localAddress)
      // A client met before costs no new check and is still answered.
      const again = pingQuery(known, welcome, "2")
      attacker.send(again.packet, b.localAddress)
      let answers = 0
      let busy = 0
      for (;;) {
        const packet = parseDatagram(yield* attacker.next)
        if (packet?.kind === "Busy") {
          busy++
          continue
        }
        answers++
        if (packet?.kind === "Answer" && open(again.receiveKey, packet.nonce, packet.associated, packet.sealed) !== undefined) break
      }
      // 9 new clients within the host's burst of 10 (the known one was the first), and the known one's answer;
      // the other 21 are told Busy (20 bytes each), unread.
      expect(answers).toBe(10)
      expect(busy).toBe(21)
      expect((yield* statsOf(b)).dropped["NewClientBudget"]).toBe(21)
    }))

  it.scopedLive("ATTACK: one host holds at most 32 sessions: its 33rd new identity is told Busy, and another host is still met", () =>
    Effect.gen(function*() {
      const { client: first, server: b, socket: attacker, welcome } = yield* servedToRawClient()
      const queries = Array.from({ length: 33 }, (_, i) => pingQuery(i === 0 ? first : clientSelf(freshIdentity()), welcome, "1"))
      for (const query of queries) attacker.send(query.packet, b.localAddress)
      let answers = 0
      let busy = 0
      while (answers + busy < 33) {
        if (parseDatagram(yield* attacker.next)?.kind === "Busy") busy++
        else answers++
      }
      expect([answers, busy]).toEqual([32, 1])
      expect((yield* b.stats).datagrams?.sessions).toBe(32)
      const other = yield* rawPeer()
      const otherQuery = pingQuery(clientSelf(testIdentity(6)), yield* welcomeFrom(other, b.localAddress), "1")
      other.send(otherQuery.packet, b.localAddress)
      expect(answerOf(yield* other.next, otherQuery.receiveKey)).toMatchObject({ _tag: "Exit", requestId: "1" })
    }))

  it.scopedLive("ATTACK: one client has at most 64 requests in their handlers; the rest are dropped unserved", () =>
    Effect.gen(function*() {
      const { client, server: b, socket, welcome } = yield* servedToRawClient()
      let started = 0
      yield* b.serve({ FindNode: () => Effect.zipRight(Effect.sync(() => started++), Effect.never) })
      const payload = callCodecs.get("FindNode")?.encodePayload(new FindNode({ target: "0".repeat(64) as NodeId }))
      if (payload === undefined || Either.isLeft(payload)) throw new Error("FindNode does not encode")
      for (let id = 1; id <= 70; id++) {
        const message = { _tag: "Request", id: String(id), tag: "FindNode", payload: payload.right, headers: [] }
        socket.send(sealedQuery(client, welcome, message).packet, b.localAddress)
      }
      // Handled in order: once another client's Ping is answered, all 70 were.
      const other = yield* rawPeer()
      const ping = pingQuery(clientSelf(testIdentity(6)), yield* welcomeFrom(other, b.localAddress), "1")
      other.send(ping.packet, b.localAddress)
      yield* other.next
      expect(started).toBe(64)
      expect((yield* statsOf(b)).dropped["InFlightCap"]).toBe(6)
    }))

  it.scopedLive("ATTACK: Hellos from many hosts draw no more Welcomes than the node's total budget", () =>
    Effect.gen(function*() {
      // The raw client's own Hello takes the first of 6.
      const { client, server: b, socket, welcome } = yield* servedToRawClient({ datagramLimits: { hellosPerSecondTotal: 0, helloBurstTotal: 6 } })
      const hosts = yield* Effect.forEach([0, 1, 2], () => rawPeer())
      for (const host of hosts) for (let i = 0; i < 2; i++) host.send(helloPacket(randomBytes(16)), b.localAddress)
      // Handled in order: once the client's Ping (its cookie is good) is answered, all six Hellos were.
      const ping = pingQuery(client, welcome, "1")
      socket.send(ping.packet, b.localAddress)
      expect(answerOf(yield* socket.next, ping.receiveKey)).toMatchObject({ _tag: "Exit", requestId: "1" })
      expect((yield* statsOf(b)).dropped["HelloBudget"]).toBe(1)
    }))

  it.scopedLive("ATTACK: a query replayed by an observer is served at most 3 times in all (a lost answer's resends), never for the cookie's life", () =>
    Effect.gen(function*() {
      const { client: self, server: b, socket: client, welcome } = yield* servedToRawClient()
      const query = pingQuery(self, welcome, "1000")
      for (let i = 0; i < 5; i++) client.send(query.packet, b.localAddress)
      const next = pingQuery(self, welcome, "1001")
      client.send(next.packet, b.localAddress)
      let answers = 0
      for (;;) {
        const answer = answerOf(yield* client.next, next.receiveKey) as { readonly requestId: string }
        answers++
        if (answer.requestId === "1001") break
      }
      expect(answers).toBe(4)
      expect((yield* statsOf(b)).dropped["Replayed"]).toBe(2)
    }))

  it.scopedLive("ATTACK: a DialBack replayed by an observer draws at most 3 dial-backs in all, each to the host its cookie proved", () =>
    Effect.gen(function*() {
      const { client: self, server: b, socket: client, welcome } = yield* servedToRawClient()
      const dialledTo: Array<string> = []
      yield* b.serve({ DialBack: (caller) => Effect.sync(() => dialledTo.push(caller.address.host)).pipe(Effect.as({ reachable: false })) })
      const dialBack = { _tag: "Request", id: "2000", tag: "DialBack", payload: { _tag: "DialBack" }, headers: [] }
      const query = sealedQuery(self, welcome, dialBack)
      // Sent one after another, each once the last was answered, so none is dropped as a resend in its handler.
      for (let i = 0; i < 3; i++) {
        client.send(query.packet, b.localAddress)
        expect(answerOf(yield* client.next, query.receiveKey)).toMatchObject({ _tag: "Exit", requestId: "2000" })
      }
      for (let i = 0; i < 3; i++) client.send(query.packet, b.localAddress)
      const ping = pingQuery(self, welcome, "2001")
      client.send(ping.packet, b.localAddress)
      expect(answerOf(yield* client.next, ping.receiveKey)).toMatchObject({ _tag: "Exit", requestId: "2001" })
      expect(dialledTo).toEqual([client.address.host, client.address.host, client.address.host])
      expect((yield* statsOf(b)).dropped["Replayed"]).toBe(3)
    }))

  it.scopedLive("ATTACK: a replayed query does not move a session's answers back to the address the client left", () =>
    Effect.gen(function*() {
      // The client's Ping from its first address is captured; then its NAT mapping changes and it calls
      // from a new one, with a FindNode its handler holds. Before: replaying the old Ping (served once,
      // so not yet a replay to drop) moved the session back, and the FindNode's answer went there.
      const server = yield* startNode(2)
      const release = yield* Deferred.make<void>()
      yield* server.serve({
        ...handlers,
        FindNode: (caller) => Effect.as(Deferred.await(release), { contacts: [{ nodeId: caller.nodeId, address: caller.address }] })
      })
      const { client, ping: captured, socket: before } = yield* clientWithSession(server)
      const after = yield* rawPeer()
      const welcome = yield* welcomeFrom(after, server.localAddress)
      const payload = callCodecs.get("FindNode")?.encodePayload(new FindNode({ target: "0".repeat(64) as NodeId }))
      if (payload === undefined || Either.isLeft(payload)) throw new Error("FindNode does not encode")
      const held = sealedQuery(client, welcome, { _tag: "Request", id: "2", tag: "FindNode", payload: payload.right, headers: [] })
      after.send(held.packet, server.localAddress)
      yield* server.stats.pipe(Effect.repeat({
        until: (stats) => (stats.datagrams?.queriesServed ?? 0) >= 2,
        schedule: Schedule.spaced("5 millis")
      }))
      // The observer replays the captured Ping from the old address: served again (a resend of a lost
      // answer looks the same), but answered at the client's current address, and the session stays there.
      before.send(captured.packet, server.localAddress)
      expect(answerOf(yield* after.next, captured.receiveKey)).toMatchObject({ _tag: "Exit", requestId: "1" })
      yield* Deferred.succeed(release, undefined)
      expect(answerOf(yield* after.next, held.receiveKey)).toMatchObject({ _tag: "Exit", requestId: "2" })
    }))

  it.scopedLive("ATTACK: Hellos from everywhere that spend the node's Hello budget leave clients holding sessions their cookie renewals", () =>
    Effect.gen(function*() {
      // The node answers 3 Hellos in all here (4,000 at once, then 2,000/s by default). Before: once
      // spoofed Hellos spent them, a client with a session whose cookie went stale got no Welcome, and
      // every such client fell back to TCP for 10 minutes.
      const server = yield* startNode(2, { datagramLimits: { hellosPerSecondTotal: 0.001, helloBurstTotal: 3 } })
      yield* server.serve(handlers)
      const { socket } = yield* clientWithSession(server)
      for (let i = 0; i < 2; i++) yield* welcomeFrom(yield* rawPeer(), server.localAddress)
      // The budget is spent: a newcomer's Hello is dropped (it calls over TCP)...
      const newcomer = yield* rawPeer()
      newcomer.send(helloPacket(randomBytes(16)), server.localAddress)
      yield* server.stats.pipe(Effect.repeat({
        until: (stats) => (stats.datagrams?.dropped["HelloBudget"] ?? 0) >= 1,
        schedule: Schedule.spaced("5 millis")
      }))
      // ...but the client holding a session still gets its Welcome.
      expect((yield* welcomeFrom(socket, server.localAddress)).kind).toBe("Welcome")
    }))

  it.scopedLive("ATTACK: another identity signing a victim's static key cannot take over the victim's session", () =>
    Effect.gen(function*() {
      const { client: victim, server: b, socket: victimSocket, welcome } = yield* servedToRawClient()
      const attackerSocket = yield* rawPeer()
      victimSocket.send(pingQuery(victim, welcome, "1").packet, b.localAddress)
      yield* victimSocket.next
      // The victim's static key is public (it travels in every query); the attacker signs it with its own
      // identity and sends garbage sealed under nothing it knows.
      const attacker = testIdentity(6)
      const forgedSelf = { ...victim.self, signingKey: attacker.signingPublicKey, staticSignature: attacker.sign(staticKeyStatement(victim.self.staticKey)) }
      const attackerCookie = (yield* welcomeFrom(attackerSocket, b.localAddress)).cookie
      const associated = queryAssociated(attackerCookie, forgedSelf)
      attackerSocket.send(sealedPacket(associated, randomBytes(12), randomBytes(64)), b.localAddress)
      // The victim's session stands: its next query is answered with no new signature check.
      const next = pingQuery(victim, welcome, "2")
      victimSocket.send(next.packet, b.localAddress)
      expect(answerOf(yield* victimSocket.next, next.receiveKey)).toMatchObject({ _tag: "Exit", requestId: "2" })
      const stats = yield* statsOf(b)
      expect(stats.dropped["Unauthentic"]).toBe(1)
      expect((yield* b.stats).datagrams?.sessions).toBe(1)
    }))

  it.scopedLive("one call's timeout leaves the other calls to the same peer running: the late one is still answered", () =>
    Effect.gen(function*() {
      const a = yield* startNode(1)
      const b = yield* startNode(2)
      const release = yield* Deferred.make<void>()
      yield* b.serve({
        Ping: () => Effect.never,
        FindNode: (caller) => Effect.as(Deferred.await(release), { contacts: [{ nodeId: caller.nodeId, address: caller.address }] })
      })
      const target = { address: b.localAddress, nodeId: testIdentity(2).nodeId }
      // A link first (a FindNode answered at once would need no link: the Ping times out on it below).
      yield* Deferred.succeed(release, undefined).pipe(Effect.zipRight(a.send(target, new FindNode({ target: "0".repeat(64) as NodeId }))))
      const slow = yield* Deferred.make<void>()
      yield* b.serve({ FindNode: (caller) => Effect.as(Deferred.await(slow), { contacts: [{ nodeId: caller.nodeId, address: caller.address }] }) })
      const pending = yield* Effect.fork(a.send(target, new FindNode({ target: "1".repeat(64) as NodeId })))
      const timedOut = yield* Effect.flip(a.send(target, new Ping({}), { timeout: "150 millis" }))
      expect(timedOut).toMatchObject({ _tag: "TransportError", reason: "Timeout" })
      yield* Deferred.succeed(slow, undefined)
      const answered = yield* Fiber.join(pending)
      expect(answered.peer.nodeId).toBe(testIdentity(2).nodeId)
    }))

  it.scopedLive("ATTACK: a server that answers every query with a Welcome gets a renewal a second at most, never a loop of checks", () =>
    Effect.gen(function*() {
      const a = yield* startNode(1)
      const hostile = yield* rawPeer()
      const identity = testIdentity(4)
      const server = clientSelf(identity)
      let queries = 0
      const answering = Effect.gen(function*() {
        for (;;) {
          const packet = parseDatagram(yield* hostile.next)
          if (packet?.kind === "Hello") hostile.send(welcomePacket(packet.token, server.self, randomBytes(16)), a.localAddress)
          if (packet?.kind === "Query") {
            queries++
            hostile.send(welcomePacket(packet.sealed.subarray(0, 16), server.self, randomBytes(16)), a.localAddress)
          }
        }
      })
      yield* Effect.forkScoped(answering)
      const failed = yield* Effect.flip(a.send({ address: hostile.address, nodeId: identity.nodeId }, new Ping({}), { timeout: "1 second" }))
      expect(failed).toMatchObject({ _tag: "TransportError", reason: "Timeout" })
      // The first query, the renewal's resend, two timed resends: nothing like a loop.
      expect(queries).toBeLessThanOrEqual(5)
      expect((yield* statsOf(a)).dropped["RenewalTooSoon"]).toBeGreaterThanOrEqual(1)
    }))

  it.scopedLive("a server with no budget left for new clients says Busy, and the call goes over TCP at once", () =>
    Effect.gen(function*() {
      const a = yield* startNode(1)
      const b = yield* startNode(2, { datagramLimits: { newClientsPerSecond: 0, newClientBurst: 0 } })
      yield* b.serve(handlers)
      const answered = yield* a.send({ address: b.localAddress, nodeId: testIdentity(2).nodeId }, new Ping({}))
      expect(answered.peer.nodeId).toBe(testIdentity(2).nodeId)
      expect((yield* statsOf(a)).fellBack).toBe(1)
      expect((yield* a.stats).dialled).toBe(1)
      expect((yield* statsOf(b)).dropped["NewClientBudget"]).toBe(1)
    }))

  it.scopedLive("ATTACK: only Ping, FindNode and DialBack are served by datagram: any other request in a query is dropped unserved", () =>
    Effect.gen(function*() {
      const { client: self, server: b, socket: client, welcome } = yield* servedToRawClient()
      let served = 0
      yield* b.serve({
        FindValue: () => Effect.sync(() => ++served).pipe(Effect.as({ _tag: "Closer" as const, contacts: [] })),
        Store: () => Effect.sync(() => ++served).pipe(Effect.as({ stored: true }))
      })
      for (const [id, tag] of [["8", "FindValue"], ["9", "Store"]] as const) {
        const request = { _tag: "Request", id, tag, payload: { _tag: tag }, headers: [] }
        client.send(sealedQuery(self, welcome, request).packet, b.localAddress)
      }
      // Handled in order: once a Ping after them is answered, both were dropped.
      const ping = pingQuery(self, welcome, "10")
      client.send(ping.packet, b.localAddress)
      expect(answerOf(yield* client.next, ping.receiveKey)).toMatchObject({ _tag: "Exit", requestId: "10" })
      expect(served).toBe(0)
      expect((yield* statsOf(b)).dropped["NotByDatagram"]).toBe(2)
    }))

  it.scopedLive("a DialBack goes by datagram: the server probes the caller's advertised port over TCP, and nobody opens a secure channel", () =>
    Effect.gen(function*() {
      const a = yield* startNode(1)
      const b = yield* startNode(2)
      yield* b.serve({
        DialBack: (caller) =>
          b.proveListening({ address: caller.address, nodeId: caller.nodeId }).pipe(
            Effect.as({ reachable: true }),
            Effect.orElseSucceed(() => ({ reachable: false }))
          )
      })
      const answer = yield* a.send({ address: b.localAddress, nodeId: testIdentity(2).nodeId }, new DialBack({}))
      expect(answer.value.reachable).toBe(true)
      expect((yield* statsOf(a)).queriesSent).toBe(1)
      expect((yield* statsOf(b)).queriesServed).toBe(1)
      // The probe was one connection from b to a, answered without a handshake; a dialled nobody.
      expect((yield* a.stats).dialled).toBe(0)
      expect((yield* b.stats).dialled).toBe(0)
    }))

  it.scopedLive("ATTACK: a contact at port 0 (a hostile FindNode answer) fails as a TransportError, and leaves nothing behind", () =>
    Effect.gen(function*() {
      const a = yield* startNode(1)
      const failed = yield* Effect.flip(a.send({ address: { host: "127.0.0.1", port: 0 }, nodeId: testIdentity(2).nodeId }, new Ping({})))
      expect(failed).toMatchObject({ _tag: "TransportError" })
      const stats = yield* statsOf(a)
      expect(stats.fellBack).toBe(0)
    }))

  it.scopedLive("requests by datagram count against the caller's budget, as over TCP", () =>
    Effect.gen(function*() {
      const a = yield* startNode(1)
      const b = yield* startNode(2, { requestLimits: { perPeerRate: 0.001, perPeerBurst: 2 } })
      yield* b.serve(handlers)
      const target = { address: b.localAddress, nodeId: testIdentity(2).nodeId }
      yield* a.send(target, new Ping({}))
      yield* a.send(target, new Ping({}))
      const refused = yield* Effect.flip(a.send(target, new Ping({})))
      expect(refused).toMatchObject({ _tag: "RequestRefused", reason: "Overloaded" })
      expect((yield* a.stats).dialled).toBe(0)
    }))
})
