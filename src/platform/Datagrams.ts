/**
 * The UDP side of the TCP transport: `Ping`, `FindNode` and `DialBack` in
 * sealed datagrams (core `Datagram` has the packets and why), both as a client
 * (calls this node makes) and as a server (the handlers the transport
 * serves, with the same budgets as over TCP). The transport decides which
 * calls come here and goes over TCP when a peer does not answer a `Hello`.
 *
 * A client keeps a link per server address: the server's proven node id,
 * the pair's keys, the cookie, and the calls in flight (`PendingCalls`, as
 * on a connection). A server keeps a session per client static key: the
 * client's proven node id, the pair's keys, the requests in their handlers
 * (`ServedCalls`), and the address to answer. Both are bounded and forgotten
 * least recently used first; nothing here holds a timer once its call ends.
 *
 * Cheap checks before expensive work, on every packet: its layout, then (a
 * query) the cookie's MAC, then, only for a client not met before and
 * within that host's budget, the signature and the DH; then the seal; then
 * the request's own budgets, as over TCP.
 *
 * @since 0.7.0
 */
import * as dgram from "node:dgram"
import { createCipheriv, createDecipheriv, createHmac, hkdfSync, randomBytes, timingSafeEqual } from "node:crypto"
import * as net from "node:net"
import type { RpcMessage } from "@effect/rpc"
import { Effect, Either, Schema } from "effect"
import { concatBytes, toHex, utf8 } from "../core/Bytes.js"
import type { Address } from "../core/Contact.js"
import { formatAddress } from "../core/Contact.js"
import { hostKeyOf, normalizeHost } from "../core/AddressGroup.js"
import { countDown } from "../core/KeyCounts.js"
import {
  acceptedCookieEpochs,
  busyPacket,
  ANSWER_ASSOCIATED,
  COOKIE_BYTES,
  COOKIE_EPOCH_MILLIS,
  cookieEpochOf,
  cookieInput,
  cookieStillGood,
  type Datagram,
  DatagramRoutes,
  type DatagramLimits,
  type DatagramSelf,
  defaultDatagramLimits,
  HELLO_RESENDS_MILLIS,
  helloPacket,
  KEY_SALT,
  keyInfo,
  probeKeyInput,
  MAX_ANSWER_BYTES,
  NONCE_BYTES,
  parseDatagram,
  QUERY_RESENDS_MILLIS,
  RequestReplays,
  travelsByDatagram,
  queryAssociated,
  sealedPacket,
  TAG_BYTES,
  TOKEN_BYTES,
  welcomePacket
} from "../core/Datagram.js"
import { type NodeId, nodeIdFromPublicKey } from "../core/Id.js"
import { TokenBuckets } from "../core/TokenBucket.js"
import type { VerifySignature } from "../core/UserRecord.js"
import type { AuthenticatedPeer } from "../node/Protocol.js"
import { TransportError } from "../node/Transport.js"
import { hmacSha256, sha256Native } from "./NodeCrypto.js"
import { staticDh } from "./Noise.js"
import { pooledRandomBytes } from "./RandomPool.js"
import { type CallDeadline, type CallMessage, PendingCalls } from "./RpcCalls.js"
import { answerTooLarge, callCodecs, decodeFromClient, decodeFromServer, type FromClientMessage } from "./RpcEnvelopes.js"
import { type RunHandler, ServedCalls } from "./RpcServing.js"
import { type SecureSelf, staticKeyStatement } from "./SecureChannel.js"

/** Most links (servers this node calls by datagram) and sessions (clients it serves) remembered. */
export const MAX_DATAGRAM_PEERS = 4096

/** Most clients one host (an IPv6 /64) may hold sessions for: a host running a few nodes stays far inside it. */
const MAX_SESSIONS_PER_HOST = 32

/** Most requests of one client in their handlers at once (as for one connection). */
const MAX_IN_FLIGHT_PER_SESSION = 64

/** Least time between two renewals of a link prompted by refused queries. */
const RENEWAL_INTERVAL_MILLIS = 1000

/** How often links and sessions past their use are forgotten. */
const SWEEP_INTERVAL_MILLIS = 30_000

/** A request in a `Query`, with the port the client listens on (0: none), as the TCP handshake gives it. */
const QueryBody = Schema.Struct({
  port: Schema.Int.pipe(Schema.between(0, 65535)),
  message: Schema.Unknown
})
const decodeQueryBody = Schema.decodeUnknownEither(QueryBody)

/** The request envelope of a query, as the transport starts it. */
export type RequestEnvelope = Extract<FromClientMessage, { readonly _tag: "Request" }>

/** What the transport made of a request: started, refused by a budget (with the answer to send), or a violation. */
export type StartOutcome =
  | { readonly _tag: "Started" }
  | { readonly _tag: "Refused"; readonly answer: RpcMessage.FromServerEncoded; readonly retryAfterMillis: number }
  | { readonly _tag: "Violation"; readonly detail: string }

/** What the transport gives its datagram side. */
export interface DatagramsOptions {
  /** Host to bind (the TCP listener's). */
  readonly host: string
  /** Port to bind: the TCP listener's bound port. */
  readonly port: number
  readonly self: SecureSelf
  readonly verify: VerifySignature
  /** The port this node announces it listens on (its callees dial back there). */
  readonly listenPort: () => number
  /** Runs a handler as one of the transport's fibers. */
  readonly run: RunHandler
  /** Checks a request against the caller's budgets, decodes it and starts its handler in `served` (as over TCP). */
  readonly startRequest: (served: ServedCalls, caller: AuthenticatedPeer, ip: string, message: RequestEnvelope) => StartOutcome
  /** The clock (ms since the epoch). */
  readonly now: () => number
  /** A bug met while handling a packet (logged by the transport; the packet is dropped). */
  readonly onDefect: (defect: unknown) => void
  readonly limits?: Partial<DatagramLimits> | undefined
}

/** Counters of the datagram side (`TcpTransport`'s `stats`), for tests and benchmarks. */
export interface DatagramStats {
  /** Queries this node sent (a resend counts once). */
  readonly queriesSent: number
  /** Queries this node served (started, or refused by a budget). */
  readonly queriesServed: number
  /** Packets dropped, by why. */
  readonly dropped: Readonly<Record<string, number>>
  /** Calls that went over TCP because the peer did not answer a `Hello`, or said `Busy`. */
  readonly fellBack: number
  readonly links: number
  readonly sessions: number
  /** The socket's receive buffer as the kernel reports it (Linux: twice what it granted of `RECEIVE_BUFFER_BYTES`); 0 if unknown. */
  readonly receiveBufferBytes: number
}

/** A call found no datagram route (no `Welcome` in time, or a `Busy`): the transport calls over TCP. */
export class DatagramsUnanswered {
  readonly _tag = "DatagramsUnanswered"
}

/** The datagram side of a transport. */
export interface Datagrams {
  /** Whether a call to `address` may go by datagram now (an IP address of this socket's family, not marked unanswered). */
  readonly usable: (address: Address) => boolean
  /**
   * Calls `target` by datagram (the node id it must prove, or, without one,
   * whichever it proves). Fails with `DatagramsUnanswered` when no `Welcome`
   * came within `helloMillis` (the caller then uses TCP).
   */
  readonly call: (
    target: { readonly address: Address; readonly nodeId?: NodeId | undefined },
    tag: string,
    request: unknown,
    deadline: CallDeadline,
    helloMillis: number
  ) => Effect.Effect<{ readonly value: unknown; readonly peer: AuthenticatedPeer }, unknown>
  /**
   * The pair this node shares with `target.nodeId`: its probe key (core
   * `Datagram`'s `probeKeyInput`) and the other end's static key. A link to
   * it at `target.address` that an answer proved, else a session it opened
   * here from `target.address`'s host; undefined when none. A listening
   * probe of `target` then asks for the pair's MAC (core `ListeningProbe`,
   * "A pair probe").
   */
  readonly pairFor: (target: { readonly address: Address; readonly nodeId: NodeId }) => PairProbeKey | undefined
  /**
   * The pair this node shares with the node whose static key is
   * `peerStaticKey` (a session it opened, or a link an answer proved): its
   * probe key and that node's id, to answer its pair probe.
   */
  readonly pairWith: (peerStaticKey: Uint8Array) => { readonly probeKey: Uint8Array; readonly peerNodeId: NodeId } | undefined
  /** This process's static key, which a pair probe names its prober by. */
  readonly staticKey: Uint8Array
  /** A call went over TCP after `DatagramsUnanswered`. */
  readonly noteFallback: () => void
  readonly stats: () => DatagramStats
  /** Closes the socket; calls in flight fail as `Closed`, handlers are interrupted. */
  readonly close: () => void
}

/** A pair's probe key and the static key of its other end. */
export interface PairProbeKey {
  readonly probeKey: Uint8Array
  readonly peerStaticKey: Uint8Array
}

/** A server this node calls: its proven id, the pair's keys, its cookie for us, the calls in flight. */
interface Link {
  readonly key: string
  readonly address: Address
  readonly nodeId: NodeId
  /** The server's static key and the pair's keys: replaced when a `Welcome` shows the server restarted. */
  staticKey: Uint8Array
  /** The server's identity key, static key and signature as last believed: a `Welcome` repeating them needs no new check. */
  believed: Uint8Array
  /** When a refused query last renewed the link (ms since the epoch): at most once a second. */
  renewedAt: number
  sendKey: Buffer
  receiveKey: Buffer
  /** The pair's key for listening probes (`pairKeys`). */
  probeKey: Buffer
  /**
   * Whether an answer under these keys opened: only then has the server
   * shown it holds the static key it signed (a `Welcome` alone can be
   * replayed from anywhere), and only then do pair probes use the link.
   */
  answered: boolean
  cookie: Uint8Array
  cookieAt: number
  /** What a query of this link authenticates besides its body (the cookie is in it). */
  associated: Uint8Array
  readonly calls: PendingCalls
  /** Requests sent and not yet answered, by request id: sent again on a timer, or at once after a `Welcome`. */
  readonly outstanding: Map<string, Outstanding>
}

/** A request in flight by datagram. */
interface Outstanding {
  readonly message: CallMessage
  /** Resends made so far (see `QUERY_RESENDS_MILLIS`). */
  resends: number
  timer: ReturnType<typeof setTimeout> | undefined
  /**
   * The first 16 bytes of the sealed body of each of its packets (at most
   * three): a server that cannot take one answers a `Welcome` or a `Busy`
   * with them as token.
   */
  readonly tokens: Array<Uint8Array>
}

/** A client this node serves: its proven id, the pair's keys, the requests in their handlers, where to answer. */
interface Session {
  readonly nodeId: NodeId
  readonly signingKey: Uint8Array
  /** The client's static key (its query opened under it: it holds the private half). */
  readonly staticKey: Uint8Array
  readonly staticSignature: Uint8Array
  readonly sendKey: Buffer
  readonly receiveKey: Buffer
  /** The pair's key for listening probes (`pairKeys`). */
  readonly probeKey: Buffer
  readonly served: ServedCalls
  host: string
  port: number
  /** When its last query authenticated (ms since the epoch). */
  lastQueryAt: number
  /** Request ids seen lately (see core `RequestReplays`). */
  readonly replays: RequestReplays
  /** The host (an IPv6 /64) it first came from, whose share of sessions it takes. */
  readonly budgetKey: string
}

/** A `Hello` under way to one address, and the calls waiting for its `Welcome`. */
interface Opening {
  readonly token: Uint8Array
  readonly waiters: Set<Waiter>
  readonly resends: Array<ReturnType<typeof setTimeout>>
}

interface Waiter {
  /** The node id the caller expects at the address; undefined: whoever proves one (a bootstrap address). */
  readonly expected: NodeId | undefined
  readonly done: (outcome: Either.Either<Link, TransportError | DatagramsUnanswered>) => void
}

/**
 * The key of an address among links and routes: its host in canonical form
 * (`normalizeHost`: an IPv4-mapped address as IPv4, IPv6 per RFC 5952), so
 * a target written one way and the source of its answers another match.
 */
const addressKey = (address: Address): string => formatAddress({ host: normalizeHost(address.host), port: address.port })

/** Seals `plaintext` under `key` with a fresh random nonce, authenticating `associated` too. */
export const seal = (key: Buffer, associated: Uint8Array, plaintext: Uint8Array): { readonly nonce: Uint8Array; readonly sealed: Uint8Array } => {
  const nonce = pooledRandomBytes(NONCE_BYTES)
  const cipher = createCipheriv("chacha20-poly1305", key, nonce, { authTagLength: TAG_BYTES })
  cipher.setAAD(associated, { plaintextLength: plaintext.length })
  const body = cipher.update(plaintext)
  cipher.final()
  return { nonce, sealed: Buffer.concat([body, cipher.getAuthTag()]) }
}

/** The plaintext of a sealed body, or undefined when it does not authenticate. */
export const open = (key: Buffer, nonce: Uint8Array, associated: Uint8Array, sealed: Uint8Array): Uint8Array | undefined => {
  const bodyLength = sealed.length - TAG_BYTES
  const decipher = createDecipheriv("chacha20-poly1305", key, nonce, { authTagLength: TAG_BYTES })
  decipher.setAAD(associated, { plaintextLength: bodyLength })
  decipher.setAuthTag(sealed.subarray(bodyLength))
  const body = decipher.update(sealed.subarray(0, bodyLength))
  try {
    decipher.final()
    return body
  } catch {
    return undefined
  }
}

/** The keys of a pair: the client's sending key, the server's sending key, and the probe key. */
export interface PairKeys {
  readonly clientSends: Buffer
  readonly serverSends: Buffer
  readonly probe: Buffer
}

/** The pair's keys from its DH `secret`. */
export const pairKeys = (secret: Uint8Array, clientStatic: Uint8Array, serverStatic: Uint8Array): PairKeys => {
  const material = Buffer.from(hkdfSync("sha256", secret, KEY_SALT, keyInfo(clientStatic, serverStatic), 64))
  return {
    clientSends: material.subarray(0, 32),
    serverSends: material.subarray(32, 64),
    // The same for both of a pair's sessions (see `probeKeyInput`): a prober need not know which end was the client.
    probe: hmacSha256(secret, probeKeyInput(clientStatic, serverStatic))
  }
}

const sameBytes = (a: Uint8Array, b: Uint8Array): boolean => a.length === b.length && timingSafeEqual(a, b)

/** A `Welcome`'s identity key, static key and signature, as one value to compare. */
const welcomeIdentity = (welcome: Extract<Datagram, { readonly kind: "Welcome" }>): Uint8Array =>
  concatBytes(welcome.signingKey, welcome.staticKey, welcome.staticSignature)

/** Strict UTF-8 (a bad byte throws): one for all packets, since a decode without `stream` keeps no state. */
const strictUtf8 = new TextDecoder("utf-8", { fatal: true })

/** JSON of a packet's plaintext, or undefined. */
const parseJson = (bytes: Uint8Array): unknown => {
  try {
    return JSON.parse(strictUtf8.decode(bytes))
  } catch {
    return undefined
  }
}

/**
 * The UDP socket's receive buffer asked of the kernel: 2 MiB. The kernel
 * queues datagrams there while the event loop is busy, and drops what does
 * not fit: each costs its sender a resend 250-400 ms later. The default of
 * 208 KiB held about 50 of a busy node's 2 KB answers; in 1,000 joins in one
 * process (`bench/manyNodes.ts`), 1,899 datagrams were dropped so, and
 * bootstrap `Ping`s timed out. Memory is used only while datagrams wait.
 * Linux caps the size at `net.core.rmem_max` silently; BSDs refuse a size
 * above their limit (stock FreeBSD's is just under 2 MiB), so smaller sizes
 * are tried after it (`RECEIVE_BUFFER_FALLBACKS`).
 */
export const RECEIVE_BUFFER_BYTES = 2 * 1024 * 1024

/** Sizes tried, largest first, until the kernel accepts one; none accepted leaves its default. */
const RECEIVE_BUFFER_FALLBACKS = [RECEIVE_BUFFER_BYTES, 1024 * 1024, 512 * 1024] as const

/**
 * Enlarges a bound socket's receive buffer as far as the kernel allows
 * (`RECEIVE_BUFFER_FALLBACKS`) and returns the size it reports (Linux
 * reports twice what it granted), or 0 when it reports none. Never throws:
 * a refused size only leaves the default, a node that loses more datagrams
 * under bursts. Node's own `recvBufferSize` option throws from inside the
 * bind, where no handler of ours can catch it, and would take the process down.
 */
export const enlargeReceiveBuffer = (socket: Pick<dgram.Socket, "setRecvBufferSize" | "getRecvBufferSize">): number => {
  for (const size of RECEIVE_BUFFER_FALLBACKS) {
    try {
      socket.setRecvBufferSize(size)
      break
    } catch {
      // Refused (ENOBUFS above a BSD's limit): try the next size.
    }
  }
  try {
    return socket.getRecvBufferSize()
  } catch {
    return 0
  }
}

/** A bound UDP socket and the receive buffer it got (`enlargeReceiveBuffer`). */
interface BoundSocket {
  readonly socket: dgram.Socket
  readonly receiveBufferBytes: number
}

/** Binds the UDP socket at `host:port`; fails with the socket's error (the transport then runs without datagrams). */
const bindSocket = (host: string, port: number): Effect.Effect<BoundSocket, Error> =>
  Effect.async<BoundSocket, Error>((resume) => {
    const socket = dgram.createSocket({ type: net.isIPv6(host) ? "udp6" : "udp4" })
    const onError = (error: Error) => {
      socket.close()
      resume(Effect.fail(error))
    }
    socket.once("error", onError)
    socket.bind({ address: host, port, exclusive: true }, () => {
      socket.off("error", onError)
      resume(Effect.succeed({ socket, receiveBufferBytes: enlargeReceiveBuffer(socket) }))
    })
  })

/** Starts the datagram side at `options.host:options.port`; fails when the port cannot be bound for UDP. */
export const makeDatagrams = (options: DatagramsOptions): Effect.Effect<Datagrams, Error> =>
  Effect.map(bindSocket(options.host, options.port), (bound) => datagramsOn(bound, options))

const datagramsOn = ({ receiveBufferBytes, socket }: BoundSocket, options: DatagramsOptions): Datagrams => {
  const { self, verify, now } = options
  const family = net.isIPv6(options.host) ? 6 : 4
  const ownSelf: DatagramSelf = {
    signingKey: self.identity.signingPublicKey,
    staticKey: self.staticKeys.publicKey,
    staticSignature: self.staticSignature
  }
  const ownNodeId = nodeIdFromPublicKey(self.identity.signingPublicKey, sha256Native)
  const routes = new DatagramRoutes()
  const links = new Map<string, Link>()
  const openings = new Map<string, Opening>()
  const sessions = new Map<string, Session>()
  /** The newest session of each node id (a pair probe's prober looks its pair up by the node it probes). */
  const sessionsByNode = new Map<NodeId, Session>()
  /** Answered links by their server's static key, hex (a pair probe's listener looks its pair up by the prober's static key). */
  const linksByStatic = new Map<string, Link>()
  /** Sessions by the host (IPv6: /64) they came from: one host cannot take every place. */
  const sessionsPerHost = new Map<string, number>()
  const limits = { ...defaultDatagramLimits, ...options.limits }
  const helloBudget = new TokenBuckets({ ratePerSecond: limits.hellosPerSecond, capacity: limits.helloBurst, maxKeys: MAX_DATAGRAM_PEERS })
  const newSessionBudget = new TokenBuckets({
    ratePerSecond: limits.newClientsPerSecond,
    capacity: limits.newClientBurst,
    maxKeys: MAX_DATAGRAM_PEERS
  })
  // Two totals: hosts none of whose clients holds a session here (spoofed Hellos from everywhere count
  // there), and hosts whose clients do (their cookie renewals, bounded apart).
  const hellosTotal = new TokenBuckets({ ratePerSecond: limits.hellosPerSecondTotal, capacity: limits.helloBurstTotal, maxKeys: 2 })
  const newSessionsTotal = new TokenBuckets({
    ratePerSecond: limits.newClientsPerSecondTotal,
    capacity: limits.newClientBurstTotal,
    maxKeys: 1
  })
  const cookieSecrets = new Map<number, Buffer>()
  const dropped: Record<string, number> = {}
  let queriesSent = 0
  let queriesServed = 0
  let fellBack = 0
  let closed = false

  const drop = (why: string): void => {
    dropped[why] = (dropped[why] ?? 0) + 1
  }

  const send = (packet: Uint8Array, host: string, port: number): boolean => {
    if (closed) return false
    // A send that fails (no route, a closed socket) is a lost datagram: the caller's deadline covers it.
    // An IPv6 socket (one bound to "::" takes IPv4 too) reaches an IPv4 host only at its mapped address.
    try {
      socket.send(packet, port, family === 6 && net.isIPv4(host) ? `::ffff:${host}` : host, () => {})
      return true
    } catch {
      // A port or host Node refuses outright: lost, like any datagram.
      drop("Unsendable")
      return false
    }
  }

  // -- Cookies ------------------------------------------------------------------------

  const secretOf = (epoch: number): Buffer => {
    let secret = cookieSecrets.get(epoch)
    if (secret === undefined) {
      secret = randomBytes(32)
      cookieSecrets.set(epoch, secret)
      // Only this epoch's and the last one's are ever asked for.
      for (const old of cookieSecrets.keys()) if (old < epoch - 1) cookieSecrets.delete(old)
    }
    return secret
  }

  const cookieFor = (epoch: number, host: string, port: number): Uint8Array =>
    createHmac("sha256", secretOf(epoch)).update(cookieInput(epoch, host, port)).digest().subarray(0, COOKIE_BYTES)

  const cookieIsGood = (cookie: Uint8Array, host: string, port: number): boolean =>
    acceptedCookieEpochs(now()).some((epoch) => sameBytes(cookie, cookieFor(epoch, host, port)))

  // -- Server side ------------------------------------------------------------------

  const answerTo = (session: Session, message: RpcMessage.FromServerEncoded): void => {
    const { nonce, sealed } = seal(session.sendKey, ANSWER_ASSOCIATED, utf8(JSON.stringify(message)))
    const packet = sealedPacket(ANSWER_ASSOCIATED, nonce, sealed)
    if (packet.length <= MAX_ANSWER_BYTES) send(packet, session.host, session.port)
    else if (message._tag === "Exit") answerTo(session, answerTooLarge(message))
  }

  /**
   * The session of the client whose query this is, with its keys: a known
   * one, or a candidate made (within the host's and the node's budgets, and
   * only if the signature holds) for a client not met before, kept only once
   * its query opens. Undefined to drop the query.
   */
  const sessionOf = (
    query: Extract<Datagram, { readonly kind: "Query" }>,
    staticHex: string,
    host: string,
    port: number
  ): { readonly session: Session; readonly known: boolean } | undefined => {
    const known = sessions.get(staticHex)
    if (known !== undefined && sameBytes(known.signingKey, query.signingKey) && sameBytes(known.staticSignature, query.staticSignature)) {
      return { session: known, known: true }
    }
    const at = now()
    const budgetKey = hostKeyOf(host)
    if (
      (sessionsPerHost.get(budgetKey) ?? 0) >= MAX_SESSIONS_PER_HOST || !newSessionBudget.take(budgetKey, at).allowed ||
      !newSessionsTotal.take("", at).allowed
    ) {
      drop("NewClientBudget")
      // The client learns it at once and calls over TCP (a Busy is smaller than any query), within its
      // host's Hello budget, so one host cannot spend everyone's.
      if (helloAllowed(host, at)) send(busyPacket(query.sealed.subarray(0, TOKEN_BYTES)), host, port)
      return undefined
    }
    // This process's own static key, signed by someone: a query relayed back to this node, which would
    // make a pair with itself (a pair probe would then have it answer its own probe).
    if (sameBytes(query.staticKey, self.staticKeys.publicKey)) return void drop("OwnStaticKey")
    if (!verify(query.signingKey, staticKeyStatement(query.staticKey), query.staticSignature)) return void drop("BadSignature")
    const secret = staticDh(self.staticKeys, query.staticKey)
    if (secret._tag === "Left") return void drop("BadKey")
    const keys = pairKeys(secret.right, query.staticKey, self.staticKeys.publicKey)
    const session: Session = {
      nodeId: nodeIdFromPublicKey(Uint8Array.from(query.signingKey), sha256Native),
      signingKey: Uint8Array.from(query.signingKey),
      staticKey: Uint8Array.from(query.staticKey),
      staticSignature: Uint8Array.from(query.staticSignature),
      sendKey: keys.serverSends,
      receiveKey: keys.clientSends,
      probeKey: keys.probe,
      served: new ServedCalls(options.run, (answer) => answerTo(session, answer)),
      host,
      port: 0,
      lastQueryAt: at,
      replays: new RequestReplays(),
      budgetKey
    }
    return { session, known: false }
  }

  /**
   * Keeps a new session, whose query opened: it replaces any other under the
   * same static key (someone else signed that key with their identity: only
   * the holder of the static key's private half can seal a query that opens).
   */
  const keepSession = (staticHex: string, session: Session): void => {
    const replaced = sessions.get(staticHex)
    if (replaced !== undefined) forgetSession(staticHex, replaced)
    if (sessions.size >= MAX_DATAGRAM_PEERS) evictSession()
    sessions.set(staticHex, session)
    sessionsByNode.set(session.nodeId, session)
    sessionsPerHost.set(session.budgetKey, (sessionsPerHost.get(session.budgetKey) ?? 0) + 1)
  }

  /** Forgets a session: its requests in their handlers are interrupted, its host's share given back. */
  const forgetSession = (staticHex: string, session: Session): void => {
    sessions.delete(staticHex)
    if (sessionsByNode.get(session.nodeId) === session) sessionsByNode.delete(session.nodeId)
    session.served.interruptAll()
    countDown(sessionsPerHost, session.budgetKey)
  }

  /** Forgets the least recently used session, preferring one with no request in its handlers. */
  const evictSession = (): void => {
    let victim: string | undefined
    for (const [key, session] of sessions) {
      victim ??= key
      if (session.served.size === 0) {
        victim = key
        break
      }
    }
    const session = victim === undefined ? undefined : sessions.get(victim)
    if (victim !== undefined && session !== undefined) forgetSession(victim, session)
  }

  const onQuery = (query: Extract<Datagram, { readonly kind: "Query" }>, host: string, port: number): void => {
    if (!cookieIsGood(query.cookie, host, port)) {
      drop("BadCookie")
      // A client whose cookie is stale (or made by this node before a restart) learns the fresh one and
      // this process's keys at once; the Welcome is smaller than any query, and counts as a Hello.
      return welcome(query.sealed.subarray(0, TOKEN_BYTES), host, port)
    }
    // The client's static key names its session.
    const staticHex = toHex(query.staticKey)
    const found = sessionOf(query, staticHex, host, port)
    if (found === undefined) return
    const { session } = found
    const plaintext = open(session.receiveKey, query.nonce, query.associated, query.sealed)
    if (plaintext === undefined) return drop("Unauthentic")
    const body = decodeQueryBody(parseJson(plaintext))
    if (body._tag === "Left") return drop("Malformed")
    const message = decodeFromClient(body.right.message)
    if (message._tag === "Left") return drop("Malformed")
    if (found.known) {
      // Most recently used last: the map's order is the eviction order.
      sessions.delete(staticHex)
      sessions.set(staticHex, session)
    } else {
      keepSession(staticHex, session)
    }
    const envelope = message.right
    if (envelope._tag === "Interrupt") return session.served.interrupt(envelope.requestId)
    if (envelope._tag !== "Request") return
    // Only the reads that travel this way: a write or a long poll in a replayable datagram is refused.
    if (!travelsByDatagram(envelope.tag)) return drop("NotByDatagram")
    // A resend of a request still in its handler: the answer is on its way.
    if (session.served.has(envelope.id)) return drop("Duplicate")
    // A request served as often as a lost answer needs: a replay.
    if (!session.replays.mayServe(envelope.id)) return drop("Replayed")
    // Only now, for a request never served before: the client's current address (a client that moved,
    // a new NAT mapping, is answered at the new one). A resend, or an observer's replay from the address
    // the client left (its cookie lives 4 minutes), moves nothing: it is answered at the current address.
    if (session.replays.isNew(envelope.id)) {
      session.host = host
      session.port = port
    }
    session.lastQueryAt = now()
    if (session.served.size >= MAX_IN_FLIGHT_PER_SESSION) return drop("InFlightCap")
    const caller: AuthenticatedPeer = { nodeId: session.nodeId, address: { host, port: body.right.port }, observedHost: host }
    const outcome = options.startRequest(session.served, caller, host, envelope)
    switch (outcome._tag) {
      case "Started":
        // Counted only once the budgets let it in: refused requests take no room here.
        session.replays.served(envelope.id)
        queriesServed++
        return
      case "Refused":
        queriesServed++
        return answerTo(session, outcome.answer)
      case "Violation":
        return drop("Malformed")
    }
  }

  /**
   * Whether a packet answering an unproven address (a Welcome, a Busy) fits
   * its host's Hello budget and the node's: one for hosts none of whose
   * clients holds a session here, another as large for hosts whose clients
   * do. Hellos with spoofed sources from everywhere can empty the first; a
   * host whose clients hold sessions showed it receives at its address, and
   * renewing their cookies (every 2 minutes) must not wait on that budget,
   * or they would all fall back to TCP.
   */
  const helloAllowed = (host: string, at: number): boolean => {
    const hostKey = hostKeyOf(host)
    return helloBudget.take(hostKey, at).allowed && hellosTotal.take(sessionsPerHost.has(hostKey) ? "sessions" : "", at).allowed
  }

  /** Answers a `Hello` (or a query with a bad cookie) with this node's keys and a cookie for the address, within its host's budget. */
  const welcome = (token: Uint8Array, host: string, port: number): void => {
    if (!helloAllowed(host, now())) return drop("HelloBudget")
    const at = now()
    send(welcomePacket(token, ownSelf, cookieFor(cookieEpochOf(at), host, port)), host, port)
  }

  // -- Client side ------------------------------------------------------------------

  const transportError = (key: string, reason: TransportError["reason"], detail: string) => new TransportError({ peer: key, reason, detail })

  /** Forgets request `requestId` of `link`: answered, or abandoned. */
  const settle = (link: Link, requestId: string): void => {
    const outstanding = link.outstanding.get(requestId)
    if (outstanding === undefined) return
    clearTimeout(outstanding.timer)
    link.outstanding.delete(requestId)
  }

  /** Seals `message` with `link`'s current keys and cookie and sends it; the first bytes of its sealed body. */
  const transmit = (link: Link, message: CallMessage): Uint8Array => {
    const body = utf8(JSON.stringify({ port: options.listenPort(), message }))
    const { nonce, sealed } = seal(link.sendKey, link.associated, body)
    send(sealedPacket(link.associated, nonce, sealed), link.address.host, link.address.port)
    return sealed.subarray(0, TOKEN_BYTES)
  }

  /** Adds a packet's token to those of its request, keeping the last three. */
  const remember = (outstanding: Outstanding, token: Uint8Array): void => {
    outstanding.tokens.push(token)
    if (outstanding.tokens.length > 1 + QUERY_RESENDS_MILLIS.length) outstanding.tokens.shift()
  }

  /** Whether `token` names one of the packets of `outstanding`. */
  const sentAs = (outstanding: Outstanding, token: Uint8Array): boolean => outstanding.tokens.some((sent) => sameBytes(sent, token))

  /** Sends `outstanding` again after its next resend delay, while it is not answered. */
  const scheduleResend = (link: Link, outstanding: Outstanding): void => {
    const at = QUERY_RESENDS_MILLIS[outstanding.resends]
    if (at === undefined) return
    const after = outstanding.resends === 0 ? at : at - (QUERY_RESENDS_MILLIS[outstanding.resends - 1] as number)
    outstanding.timer = setTimeout(() => {
      if (closed) return
      outstanding.resends++
      remember(outstanding, transmit(link, outstanding.message))
      scheduleResend(link, outstanding)
    }, after)
  }

  /** Puts a call's message on the wire for `link`'s server; a request is sent again on `QUERY_RESENDS_MILLIS` until answered. */
  const writeTo = (link: Link) => (message: CallMessage): TransportError | undefined => {
    if (message._tag === "Interrupt") settle(link, message.requestId)
    if (closed) return transportError(link.key, "Closed", "the transport is closing")
    if (message._tag === "Interrupt") {
      transmit(link, message)
      return undefined
    }
    queriesSent++
    const outstanding: Outstanding = { message, resends: 0, timer: undefined, tokens: [transmit(link, message)] }
    link.outstanding.set(message.id, outstanding)
    scheduleResend(link, outstanding)
    return undefined
  }

  const makeLink = (
    key: string,
    address: Address,
    nodeId: NodeId,
    welcome: Extract<Datagram, { readonly kind: "Welcome" }>,
    keys: PairKeys
  ): Link => {
    const cookie = Uint8Array.from(welcome.cookie)
    const link: Link = {
      key,
      address,
      nodeId,
      staticKey: Uint8Array.from(welcome.staticKey),
      believed: welcomeIdentity(welcome),
      renewedAt: -Infinity,
      sendKey: keys.clientSends,
      receiveKey: keys.serverSends,
      probeKey: keys.probe,
      answered: false,
      cookie,
      cookieAt: now(),
      associated: queryAssociated(cookie, ownSelf),
      // Ids from a random start: see `PendingCalls`.
      calls: new PendingCalls(key, callCodecs, (message) => writeTo(link)(message), Buffer.from(pooledRandomBytes(5)).readUIntBE(0, 5)),
      outstanding: new Map()
    }
    return link
  }

  const keepLink = (link: Link): void => {
    links.delete(link.key)
    if (links.size >= MAX_DATAGRAM_PEERS) {
      // The least recently used link with no call in flight goes; one with calls stays until they end.
      for (const [key, old] of links) {
        if (old.calls.size > 0) continue
        links.delete(key)
        unindexLink(old)
        break
      }
    }
    links.set(link.key, link)
    if (link.answered) indexLink(link)
  }

  /** Puts `link`, answered and kept, in `linksByStatic`. */
  const indexLink = (link: Link): void => {
    linksByStatic.set(toHex(link.staticKey), link)
  }

  /** Takes `link` out of `linksByStatic` (if the entry is still its own). */
  const unindexLink = (link: Link): void => {
    const staticHex = toHex(link.staticKey)
    if (linksByStatic.get(staticHex) === link) linksByStatic.delete(staticHex)
  }

  /** Ends a link: its calls fail with `error`. */
  const dropLink = (link: Link, error: TransportError): void => {
    if (links.get(link.key) === link) links.delete(link.key)
    unindexLink(link)
    for (const outstanding of link.outstanding.values()) clearTimeout(outstanding.timer)
    link.outstanding.clear()
    link.calls.failAll(error)
  }

  /** The server's keys in `welcome`, if its identity key signed its static key; undefined (and counted) otherwise. */
  const believe = (welcome: Extract<Datagram, { readonly kind: "Welcome" }>) => {
    // This process's own static key in someone's Welcome: the pair would be with itself (see `sessionOf`).
    if (sameBytes(welcome.staticKey, self.staticKeys.publicKey)) return void drop("OwnStaticKey")
    if (!verify(welcome.signingKey, staticKeyStatement(welcome.staticKey), welcome.staticSignature)) return void drop("BadSignature")
    const secret = staticDh(self.staticKeys, welcome.staticKey)
    if (secret._tag === "Left") return void drop("BadKey")
    return {
      nodeId: nodeIdFromPublicKey(Uint8Array.from(welcome.signingKey), sha256Native),
      keys: pairKeys(secret.right, self.staticKeys.publicKey, welcome.staticKey)
    }
  }

  /** `link`'s server, same node, as `welcome` shows it now: its cookie, and its keys if it restarted. */
  const renew = (link: Link, welcome: Extract<Datagram, { readonly kind: "Welcome" }>, keys: PairKeys): void => {
    unindexLink(link)
    link.staticKey = Uint8Array.from(welcome.staticKey)
    link.believed = welcomeIdentity(welcome)
    link.sendKey = keys.clientSends
    link.receiveKey = keys.serverSends
    link.probeKey = keys.probe
    // New keys: unproven until an answer under them opens.
    link.answered = false
    link.cookie = Uint8Array.from(welcome.cookie)
    link.cookieAt = now()
    link.associated = queryAssociated(link.cookie, ownSelf)
  }

  /**
   * A `Welcome` a server sent instead of an answer: our query's cookie or
   * keys were stale (it restarted, or the cookie's epoch passed). Its token
   * is the start of that query's sealed body, so only a node on the path
   * could forge the occasion. Same node: the link takes the new cookie and
   * keys and every request in flight is sent again at once.
   */
  const onRefusedQuery = (link: Link, welcome: Extract<Datagram, { readonly kind: "Welcome" }>): void => {
    const matched = Array.from(link.outstanding.values()).some((outstanding) => sentAs(outstanding, welcome.token))
    if (!matched) return drop("UnexpectedWelcome")
    // At most one renewal a second: a hostile server answering every query with a Welcome cannot keep
    // this node resending (or checking signatures) at its pace.
    const at = now()
    if (at - link.renewedAt < RENEWAL_INTERVAL_MILLIS) return drop("RenewalTooSoon")
    // Attempts count, not successes: a stream of badly signed Welcomes costs at most a check a second.
    link.renewedAt = at
    if (sameBytes(link.believed, welcomeIdentity(welcome))) {
      // The same process: only the cookie is new, and the keys need no new check.
      link.cookie = Uint8Array.from(welcome.cookie)
      link.cookieAt = at
      link.associated = queryAssociated(link.cookie, ownSelf)
    } else {
      const believed = believe(welcome)
      if (believed === undefined) return
      // Another node there is for a Hello to find out (the next call's); this one proves nothing about our calls.
      if (believed.nodeId !== link.nodeId) return drop("UnexpectedWelcome")
      renew(link, welcome, believed.keys)
    }
    // Sent again at once under the new cookie (and keys); the resends left keep their times.
    for (const outstanding of link.outstanding.values()) remember(outstanding, transmit(link, outstanding.message))
  }

  const onWelcome = (welcome: Extract<Datagram, { readonly kind: "Welcome" }>, host: string, port: number): void => {
    const address = { host, port }
    const key = addressKey(address)
    const opening = openings.get(key)
    if (opening === undefined || !sameBytes(opening.token, welcome.token)) {
      const link = links.get(key)
      return link === undefined ? drop("UnexpectedWelcome") : onRefusedQuery(link, welcome)
    }
    // Believed only if the identity key signed the static key; a forgery is dropped and the Hello waits on.
    const believed = believe(welcome)
    if (believed === undefined) return
    openings.delete(key)
    for (const timer of opening.resends) clearTimeout(timer)
    const { keys, nodeId } = believed
    const existing = links.get(key)
    let link: Link
    if (existing !== undefined && existing.nodeId === nodeId) {
      // The same node: a fresh cookie (and keys, if it restarted) for the link, whose calls in flight go on.
      renew(existing, welcome, keys)
      link = existing
    } else {
      if (existing !== undefined) dropLink(existing, transportError(key, "Closed", "the node at this address changed"))
      link = makeLink(key, address, nodeId, welcome, keys)
    }
    keepLink(link)
    for (const waiter of opening.waiters) {
      waiter.done(
        waiter.expected === undefined || waiter.expected === nodeId
          ? Either.right(link)
          : Either.left(transportError(key, "IdentityMismatch", `expected ${waiter.expected}, the node there is ${nodeId}`))
      )
    }
  }

  /** `Hello` to `address`, sent again on `HELLO_RESENDS_MILLIS` while some call waits for its `Welcome`. */
  const startOpening = (key: string, address: Address): Opening => {
    const token = pooledRandomBytes(TOKEN_BYTES)
    const packet = helloPacket(token)
    const opening: Opening = { token, waiters: new Set(), resends: [] }
    // An address Node cannot send to gets no opening (nothing would ever answer it): the call's Hello just gives up.
    if (!send(packet, address.host, address.port)) return opening
    openings.set(key, opening)
    for (const delay of HELLO_RESENDS_MILLIS) opening.resends.push(setTimeout(() => send(packet, address.host, address.port), delay))
    return opening
  }

  /** The link to `target`, after a `Hello` when there is none with a fresh cookie; `DatagramsUnanswered` after `helloMillis`. */
  const linkTo = (
    target: { readonly address: Address; readonly nodeId?: NodeId | undefined },
    key: string,
    helloMillis: number
  ): Effect.Effect<Link, TransportError | DatagramsUnanswered> =>
    Effect.async<Link, TransportError | DatagramsUnanswered>((resume) => {
      const link = links.get(key)
      if (
        link !== undefined && (target.nodeId === undefined || link.nodeId === target.nodeId) && cookieStillGood(link.cookieAt, now())
      ) {
        links.delete(key)
        links.set(key, link)
        return resume(Effect.succeed(link))
      }
      const opening = openings.get(key) ?? startOpening(key, target.address)
      let giveUp: ReturnType<typeof setTimeout> | undefined = undefined
      const leave = (): void => {
        clearTimeout(giveUp)
        opening.waiters.delete(waiter)
        if (opening.waiters.size > 0 || openings.get(key) !== opening) return
        // Nobody waits any more: the Hello is abandoned.
        openings.delete(key)
        for (const timer of opening.resends) clearTimeout(timer)
      }
      const waiter: Waiter = {
        expected: target.nodeId,
        done: (outcome) => {
          clearTimeout(giveUp)
          opening.waiters.delete(waiter)
          resume(Either.isRight(outcome) ? Effect.succeed(outcome.right) : Effect.fail(outcome.left))
        }
      }
      opening.waiters.add(waiter)
      giveUp = setTimeout(() => {
        if (openings.get(key) === opening && opening.waiters.size === 1) routes.markUnanswered(key, now())
        leave()
        resume(Effect.fail(new DatagramsUnanswered()))
      }, helloMillis)
      return Effect.sync(leave)
    })

  /** A server too busy for a new client: the call whose query it names goes over TCP (`DatagramsUnanswered`). */
  const onBusy = (token: Uint8Array, host: string, port: number): void => {
    const link = links.get(addressKey({ host, port }))
    const refused = link === undefined
      ? undefined
      : Array.from(link.outstanding).find(([, outstanding]) => sentAs(outstanding, token))
    if (link === undefined || refused === undefined) return drop("UnexpectedBusy")
    const [requestId] = refused
    settle(link, requestId)
    link.calls.fail(requestId, new DatagramsUnanswered())
  }

  const onAnswer = (answer: Extract<Datagram, { readonly kind: "Answer" }>, host: string, port: number): void => {
    const link = links.get(addressKey({ host, port }))
    if (link === undefined) return drop("UnexpectedAnswer")
    const plaintext = open(link.receiveKey, answer.nonce, answer.associated, answer.sealed)
    if (plaintext === undefined) return drop("Unauthentic")
    const message = decodeFromServer(parseJson(plaintext))
    if (message._tag === "Left" || message.right._tag !== "Exit") return drop("Malformed")
    settle(link, message.right.requestId)
    if (!link.answered) {
      link.answered = true
      if (links.get(link.key) === link) indexLink(link)
    }
    const outcome = link.calls.answer(message.right.requestId, message.right.exit)
    if (outcome._tag === "Unmatched") drop("Unmatched")
  }

  // -- Forgetting --------------------------------------------------------------------

  /**
   * Forgets what can no longer be used as it is: a link whose cookie is stale
   * (its next call says Hello again anyway) and a session with no query for
   * two cookie epochs (its client must say Hello again first too), unless
   * they have calls or requests under way. Either costs only a signature
   * check and a DH when the peer comes back.
   */
  const sweep = (): void => {
    const at = now()
    for (const link of Array.from(links.values())) {
      if (link.calls.size === 0 && !cookieStillGood(link.cookieAt, at)) dropLink(link, transportError(link.key, "Closed", "forgotten"))
    }
    for (const [key, session] of Array.from(sessions)) {
      if (session.served.size === 0 && at - session.lastQueryAt >= 2 * COOKIE_EPOCH_MILLIS) forgetSession(key, session)
    }
  }
  const sweeper = setInterval(sweep, SWEEP_INTERVAL_MILLIS)
  sweeper.unref()

  // -- The socket -------------------------------------------------------------------

  socket.on("message", (packet: Buffer, from: dgram.RemoteInfo) => {
    if (closed) return
    // Nothing can be sent back to port 0 (a forged source): dropped before any work.
    if (from.port === 0) return drop("SourcePortZero")
    try {
      onPacket(packet, from)
    } catch (error) {
      // A bug here must not end the process: the packet is lost, and the log says why.
      drop("Failed")
      options.onDefect(error)
    }
  })

  const onPacket = (packet: Buffer, from: dgram.RemoteInfo): void => {
    const datagram = parseDatagram(packet)
    if (datagram === undefined) return drop("NotADatagram")
    const host = normalizeHost(from.address)
    switch (datagram.kind) {
      case "Hello":
        return welcome(datagram.token, host, from.port)
      case "Welcome":
        return onWelcome(datagram, host, from.port)
      case "Query":
        return onQuery(datagram, host, from.port)
      case "Answer":
        return onAnswer(datagram, host, from.port)
      case "Busy":
        return onBusy(datagram.token, host, from.port)
    }
  }
  // A socket error (an ICMP report on some systems) loses a datagram at most; the deadlines cover it.
  socket.on("error", () => {})

  const usable = (address: Address): boolean =>
    !closed && address.port > 0 && address.port <= 65535 && (family === 6 ? net.isIP(address.host) !== 0 : net.isIPv4(address.host)) &&
    routes.usable(addressKey(address), now())

  const call: Datagrams["call"] = (target, tag, request, deadline, helloMillis) => {
    const key = addressKey(target.address)
    if (target.nodeId === ownNodeId) {
      return Effect.fail(transportError(key, "IdentityMismatch", "a node does not call itself"))
    }
    return Effect.suspend(() => {
      const started = now()
      return Effect.flatMap(linkTo(target, key, helloMillis), (link) => {
        const left = Math.max(1, deadline.millis - (now() - started))
        return Effect.map(
          link.calls.call(tag, request, {
            millis: left,
            onTimeout: () => {
              // No answer at all, resends included: the next call says Hello again (the link and its other
              // calls stay), and the address is called over TCP for a while (a path that drops the
              // fragments of large answers, or a peer that lost our keys and its Welcome, still works there).
              link.cookieAt = -Infinity
              routes.markUnanswered(key, now())
              return deadline.onTimeout()
            }
          }),
          (value) => ({ value, peer: { nodeId: link.nodeId, address: target.address } })
        )
      })
    })
  }

  const pairFor: Datagrams["pairFor"] = (target) => {
    const link = links.get(addressKey(target.address))
    if (link !== undefined && link.nodeId === target.nodeId && link.answered) {
      return { probeKey: link.probeKey, peerStaticKey: link.staticKey }
    }
    // A session from another host is likely another process of that node (one that moved, or restarted
    // elsewhere): its pair would only draw a signature there, or go unread by a process that predates it.
    const session = sessionsByNode.get(target.nodeId)
    return session === undefined || session.host !== normalizeHost(target.address.host)
      ? undefined
      : { probeKey: session.probeKey, peerStaticKey: session.staticKey }
  }

  const pairWith: Datagrams["pairWith"] = (peerStaticKey) => {
    const staticHex = toHex(peerStaticKey)
    const pair = sessions.get(staticHex) ?? linksByStatic.get(staticHex)
    return pair === undefined ? undefined : { probeKey: pair.probeKey, peerNodeId: pair.nodeId }
  }

  return {
    usable,
    call,
    pairFor,
    pairWith,
    staticKey: self.staticKeys.publicKey,
    noteFallback: () => {
      fellBack++
    },
    stats: () => ({
      queriesSent,
      queriesServed,
      dropped: { ...dropped },
      fellBack,
      links: links.size,
      sessions: sessions.size,
      receiveBufferBytes
    }),
    close: () => {
      if (closed) return
      closed = true
      clearInterval(sweeper)
      const error = transportError("datagrams", "Closed", "the transport is closing")
      for (const link of Array.from(links.values())) dropLink(link, error)
      for (const opening of openings.values()) {
        for (const timer of opening.resends) clearTimeout(timer)
        for (const waiter of Array.from(opening.waiters)) waiter.done(Either.left(error))
      }
      openings.clear()
      for (const session of sessions.values()) session.served.interruptAll()
      sessions.clear()
      sessionsByNode.clear()
      linksByStatic.clear()
      sessionsPerHost.clear()
      socket.close()
    }
  }
}
