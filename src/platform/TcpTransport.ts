/**
 * The `Transport` over TCP, as a stack: a socket is a `ByteStream`, the
 * Noise handshake of `SecureChannel.ts` upgrades it to an encrypted stream
 * bound to the peer's node id, length-prefixed JSON frames (`Framing.ts`)
 * ride on that, and then both sides speak `@effect/rpc`'s message protocol for the
 * `NodeRpcs` group with its schemas: the server side is `ServedCalls`
 * (`RpcServing.ts`) per authenticated inbound connection, which runs each
 * request's handler with the peer that connection authenticated (headers
 * are dropped: nothing the peer sends names the caller); the client side is
 * `PendingCalls` (`RpcCalls.ts`) per pooled outbound connection. The pool of outbound connections is `OutboundPool.ts`:
 * this module tells it how to dial, upgrade and serve one. Two kinds of
 * connection skip the handshake, told apart by their first byte: a relay's
 * circuit legs (`CircuitSplicer.ts`) and listening probes (core
 * `ListeningProbe`: a dial-back's check that a node listens at an address,
 * answered with one signature and closed).
 *
 * Connections are the unit of failure: anything a peer sends that does not
 * decode (a frame over the limit, bytes that are not JSON, a message or
 * payload that does not match the schemas, a reused request id) closes that
 * one connection at once and nothing else. Outbound connections are pooled,
 * one per peer address, shared by all calls (multiplexed by request id),
 * dropped when idle, on any error and on close, and never re-dialled in the
 * background: the next call dials again. Every call is bounded by the call
 * timeout, connection set-up included.
 *
 * Bounds (the resource manager; decisions in core `ConnectionLimits` and
 * `RequestLimits`): connections still in their handshake, inbound and
 * outbound connections (separate budgets), inbound connections per IP and
 * per network; when the inbound budget is full, the least recently active
 * authenticated idle inbound connection is closed for a newcomer, and when
 * the outbound budget is full, the least recently used idle outbound one
 * (else the call fails as `Overloaded`). Requests pass per-peer, per-IP and
 * global token buckets before any handler work, or are answered
 * `RequestRefused` Overloaded. Per inbound connection at most
 * `maxInFlightPerConnection` requests in handlers (the connection is not
 * read further until one finishes) and no further reading while more than
 * 256 KiB of answers wait to be sent; per connection at most one frame plus
 * 64 KiB of unread input, the rest of a frame within its deadline, and over
 * all connections `maxBufferedBytes`, the largest holder closed past it
 * (core `UnreadInput`); per
 * outbound connection at most 4 MiB (or two frames) of requests waiting to
 * be sent before new calls fail as `Overloaded`.
 *
 * @since 0.1.0
 */
import * as net from "node:net"
import {
  Cause,
  type Context,
  Data,
  Deferred,
  Duration,
  Effect,
  Either,
  FiberId,
  FiberSet,
  Layer,
  ParseResult,
  PubSub,
  type Request,
  Schema,
  type Scope,
  Stream
} from "effect"
import { type Address, formatAddress } from "../core/Contact.js"
import { Identity, Signatures } from "../node/Identity.js"
import type { AuthenticatedPeer } from "../node/Protocol.js"
import type { WireRequest as NodeRequest } from "./WireProtocol.js"
import { answerTooLarge, callCodecs, decodeFromClient, decodeFromServer, PONG, rateLimited, serveCodecs } from "./RpcEnvelopes.js"
import {
  type AnyRequest,
  type CallResult,
  type CircuitGate,
  makeHandlerRegistry,
  type PeerTarget,
  type PunchPlan,
  type RelayedConnection,
  refusedNotServed,
  Transport,
  TransportError,
  type TransportHealth
} from "../node/Transport.js"
import { BurstWriter } from "./BurstWriter.js"
import { encodeFrame, FrameReader } from "./Framing.js"
import {
  type ConnectionLimits,
  ConnectionLedger,
  type ConnectionTicket,
  type InboundDecision,
  type InboundTicket,
  leastRecentlyActive,
  type RefusalReason
} from "../core/ConnectionLimits.js"
import { normalizeHost } from "../core/AddressGroup.js"
import { countDown, countOf, countUp } from "../core/KeyCounts.js"
import { requestCost, RequestLimiter, type RequestLimitsConfig, type RequestRefusal } from "../core/RequestLimits.js"
import { DEFAULT_FRAME_DEADLINE, type FrameDeadlineConfig, largestHolder, unfinishedFrameDeadlineMs } from "../core/UnreadInput.js"
import { type ByteStream, observedHostOf, readOpening, socketStream, withUnread } from "./ByteStream.js"
import { HandshakeError, initiate, makeSecureSelf, respond } from "./SecureChannel.js"
import { makeOutboundPool, type PooledConnection, type PooledLink, type ServedDialled } from "./OutboundPool.js"
import { type CallDeadline, PendingCalls } from "./RpcCalls.js"
import { type ServeCodec, ServedCalls } from "./RpcServing.js"
import { circuitOpening, makeCircuitSplicer, opensCircuitLeg, type SplicerStats } from "./CircuitSplicer.js"
import { CIRCUIT_OPENING_BYTES, CIRCUIT_TOKEN_BYTES, OpenCircuit } from "../node/CircuitProtocol.js"
import type { NodeId } from "../core/Id.js"
import type { RelayHint } from "../core/PeerAddress.js"
import { fromHex } from "../core/Bytes.js"
import {
  challengeOf,
  judgeProbeAnswer,
  opensListeningProbe,
  opensPairProbe,
  PAIR_PROBE_ANSWER_BYTES,
  PAIR_PROBE_OPENING_BYTES,
  type PairProbeCheck,
  pairProbeAnswer,
  pairProbeOf,
  pairProbeOpening,
  PROBE_ANSWER_BYTES,
  PROBE_CHALLENGE_BYTES,
  PROBE_OPENING_BYTES,
  probeAnswer,
  probeOpening
} from "../core/ListeningProbe.js"
import { hmacSha256, sha256Native } from "./NodeCrypto.js"
import { type DatagramLimits, helloGiveUpMillis, travelsByDatagram } from "../core/Datagram.js"
import { type Datagrams, type DatagramStats, DatagramsUnanswered, makeDatagrams, type RequestEnvelope, type StartOutcome } from "./Datagrams.js"
import type { PortMapper } from "./PortMapping.js"
import { pooledRandomBytes } from "./RandomPool.js"

/** Why the transport could not start listening. */
export class TransportStartError extends Schema.TaggedError<TransportStartError>()("TransportStartError", {
  /** The listen address, `host:port`. */
  address: Schema.String,
  reason: Schema.Literal(
    /** Another process listens on that port. */
    "AddressInUse",
    /** The port is privileged or the host forbids listening. */
    "PermissionDenied",
    /** The host is not an address of this machine, or does not resolve. */
    "AddressNotAvailable",
    /** Anything else the operating system reported. */
    "Failed"
  ),
  detail: Schema.String
}) {
  override get message(): string {
    switch (this.reason) {
      case "AddressInUse":
        return `cannot listen on ${this.address}: the port is already in use (${this.detail}); choose another port or stop the other process`
      case "PermissionDenied":
        return `cannot listen on ${this.address}: permission denied (${this.detail}); ports below 1024 need privileges`
      case "AddressNotAvailable":
        return `cannot listen on ${this.address}: the host is not an address of this machine (${this.detail})`
      case "Failed":
        return `cannot listen on ${this.address}: ${this.detail}`
    }
  }
}

/** Settings of the TCP transport; everything but `listen` has a default. */
export interface TcpTransportConfig {
  /** Where to listen; port 0 picks a free port. */
  readonly listen: Address
  /**
   * The address to tell peers (signed in every handshake); defaults to `listen`
   * with the bound port. A port of 0 here also stands for the bound port.
   */
  readonly advertise?: Address | undefined
  /**
   * Asks the home router to forward the bound port (see `PortMapping.ts`):
   * while a mapping lives, peers are told the router's outside address and
   * port instead of `advertise`/`listen`. Asked once listening, before any
   * connection is dialled; the mapping is removed when the transport closes.
   */
  readonly portMapping?: PortMapper | undefined
  /** Bound on every call, connection set-up included, unless the caller gives its own (default 2 s). */
  readonly callTimeout?: Duration.DurationInput | undefined
  /** Bound on connecting plus the handshake, in both directions (default 2 s). */
  readonly handshakeTimeout?: Duration.DurationInput | undefined
  /**
   * Bound on opening a circuit through a relay, in both directions: the
   * request to the relay, the second connection, the peer taking the offer,
   * the handshake through it (default 8 s). A call that must open one gets
   * this on top of its own timeout.
   */
  readonly circuitSetupTimeout?: Duration.DurationInput | undefined
  /** Largest frame body accepted or sent, in bytes (default 1 MiB). */
  readonly maxFrameBytes?: number | undefined
  /**
   * Connection budgets (core `ConnectionLimits`): inbound and outbound apart,
   * connections still in their handshake, per IP and per network.
   */
  readonly limits?: Partial<ConnectionLimits> | undefined
  /** Request budgets per peer, per IP and in total (core `RequestLimits`). */
  readonly requestLimits?: Partial<RequestLimitsConfig> | undefined
  /** Longest a connection is left unread after a rate limit refused one of its requests (default 1 s). */
  readonly maxRefusalPause?: Duration.DurationInput | undefined
  /** A connection with no traffic and no call in flight for this long is closed (default 60 s). */
  readonly idleTimeout?: Duration.DurationInput | undefined
  /** Most requests of one inbound connection handled at once (default 64). */
  readonly maxInFlightPerConnection?: number | undefined
  /**
   * Most bytes of unread input held over all connections (default 64 MiB).
   * When input pushes the total over it, the connection holding the most is
   * closed, so many peers each sending most of a large frame cannot add up to
   * exhaust memory, nor have the honest newcomer closed (core `UnreadInput`).
   */
  readonly maxBufferedBytes?: number | undefined
  /**
   * How long the rest of a frame may take once the reader waits for it
   * (default 10 s plus its size at 16 KiB/s, core `UnreadInput`); a
   * connection past it is closed.
   */
  readonly frameDeadline?: Partial<FrameDeadlineConfig> | undefined
  /**
   * Whether `Ping`, `FindNode` and `DialBack` go by datagram (`Datagrams.ts`) to peers that
   * answer them, and this node answers them on the UDP port of the same
   * number (default true). Off, or when that UDP port cannot be bound, every
   * call goes over TCP.
   */
  readonly datagrams?: boolean | undefined
  /** What the datagram side spends on hosts it has not met (core `DatagramLimits`). */
  readonly datagramLimits?: Partial<DatagramLimits> | undefined
}

/** Default cap on unread input over all connections: 64 MiB. */
export const DEFAULT_MAX_BUFFERED_BYTES = 64 * 1024 * 1024

/** Unread input held over all connections, against its cap, and the connections holding it. */
interface InputBudget {
  held: number
  readonly cap: number
  /** Every open connection, so the one holding the most can be closed when the total is over the cap. */
  readonly holders: Set<Connection>
  /** How long the rest of an unfinished frame may take (core `UnreadInput`). */
  readonly frameDeadline: FrameDeadlineConfig
}

/**
 * Circuits one caller may have this node set up at once through one relay
 * (each dialled leg holds an outbound place until its handshake, up to
 * `circuitSetupTimeout`): a caller whose leg never comes holds at most this
 * many. A relay may have half of the circuits' share set up at once, so one
 * that offers circuits and never speaks on them cannot take it all.
 */
export const MAX_CIRCUIT_SETUPS_PER_CALLER = 2

/** Default largest frame body: 1 MiB. */
export const DEFAULT_MAX_FRAME_BYTES = 1_048_576

/** Default cap on requests of one connection handled at once. */
export const DEFAULT_MAX_IN_FLIGHT = 64

/** Unread input beyond which a connection whose reader is busy stops reading from the socket. */
const READ_PAUSE_BYTES = 64 * 1024

/** Answers waiting to be sent beyond which a connection's requests are not read further. */
const WRITE_HIGH_WATER_BYTES = 256 * 1024

/** Requests waiting to be sent to one peer beyond which new calls to it fail as Overloaded (the peer is not reading). */
const OUTBOUND_BACKLOG_BYTES = 4 * 1024 * 1024

/** Counters of the transport's connections, for tests and monitoring. */
export interface TcpTransportStats {
  /** Open inbound connections, including those still in their handshake. */
  readonly inbound: number
  /** Inbound connections still in their handshake. */
  readonly pending: number
  /** Open or opening outbound connections (one per peer address). */
  readonly outbound: number
  /** Inbound connections accepted since start. */
  readonly accepted: number
  /** Inbound connections refused at once (any connection limit). */
  readonly refused: number
  /** Connections refused since start, by the limit that refused them (outbound: calls failed as Overloaded). */
  readonly refusedBy: Readonly<Record<RefusalReason, number>>
  /** Requests refused since start by a rate limit, by the limit. */
  readonly rateLimited: Readonly<Record<RequestRefusal, number>>
  /** Outbound connections dialled since start. */
  readonly dialled: number
  /** Unread input held now over all connections, in bytes. */
  readonly bufferedBytes: number
  /** Circuits this node relays: legs waiting, circuits spliced, bytes copied. */
  readonly circuits: SplicerStats
  /** The datagram side (`Ping`, `FindNode` and `DialBack` over UDP); absent when it is off. */
  readonly datagrams?: DatagramStats | undefined
}

/** The `Transport` service plus the TCP transport's own counters. */
export type TcpTransportService = Context.Tag.Service<Transport> & {
  readonly stats: Effect.Effect<TcpTransportStats>
}

// ---------------------------------------------------------------------------
// Connections

/**
 * How a connection ended, as its reader sees it. A plain tagged value, not an
 * `Error`: every connection ends with one, and a profile of short
 * connections put 3.5 % of a client's CPU in capturing their stack traces.
 */
class ConnectionEnded extends Data.TaggedClass("ConnectionEnded")<{
  readonly reason: "Closed" | "ProtocolViolation"
  readonly detail: string
}> {}

/** The system error code of a Node error (`ECONNREFUSED`, `EADDRINUSE`, …), if it has one. */
const errorCode = (error: unknown): string | undefined =>
  error instanceof Error && "code" in error && typeof error.code === "string" ? error.code : undefined

const describeError = (error: unknown): string => {
  if (!(error instanceof Error)) return String(error)
  const code = errorCode(error)
  return code === undefined ? error.message : `${code}: ${error.message}`
}

const ignore = (): void => {}

/**
 * One framed connection over a (secure) byte stream, either direction.
 * Reading is pull-based: the connection's fiber asks for the next frame, and
 * the stream is paused while unread input piles up, so a fast or hostile peer
 * cannot make the node buffer more than one frame plus `READ_PAUSE_BYTES`.
 */
class Connection {
  closed = false
  private endedAs: ConnectionEnded | undefined = undefined
  private readonly reader: FrameReader
  private readonly frames: BurstWriter
  /** The reader fiber's pending wait and what it waits for. */
  private waiter: (() => void) | undefined = undefined
  private waitingFor: "data" | "capacity" | undefined = undefined
  /** Milliseconds since the epoch of the last traffic, for least-recently-used eviction. */
  lastActivity = Date.now()
  /** Whether calls are in flight; an idle timeout then waits for another period. */
  busy: () => boolean = () => false

  /** The bytes of `reader` counted in `budget`. */
  private accounted = 0

  constructor(
    readonly stream: ByteStream,
    private readonly maxFrameBytes: number,
    idleTimeoutMs: number,
    private readonly budget: InputBudget
  ) {
    this.reader = new FrameReader(maxFrameBytes)
    this.frames = new BurstWriter(stream)
    budget.holders.add(this)
    stream.listen({
      data: (chunk) => this.onData(chunk),
      drain: () => this.wake("capacity"),
      end: (end) => this.close(end.reason, end.detail)
    })
    if (idleTimeoutMs > 0) {
      const onIdle = (): void => {
        if (this.busy()) stream.setIdleTimeout(idleTimeoutMs, onIdle)
        else this.close("Closed", "idle")
      }
      stream.setIdleTimeout(idleTimeoutMs, onIdle)
    }
  }

  /** Bytes of unread input this connection holds (counted in the shared budget). */
  get heldBytes(): number {
    return this.accounted
  }

  /** Brings the shared input budget up to date with what this connection holds. */
  private account(): void {
    const held = this.reader.bufferedBytes
    this.budget.held += held - this.accounted
    this.accounted = held
  }

  private onData(chunk: Uint8Array): void {
    this.lastActivity = Date.now()
    this.reader.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength))
    this.account()
    // Over the cap, whoever holds the most gives way (core `UnreadInput`): closing the connection whose
    // bytes came last would let peers that sit just under the cap have every newcomer closed.
    while (this.budget.held > this.budget.cap) {
      const largest = largestHolder(this.budget.holders, (connection) => connection.heldBytes)
      if (largest === undefined) break
      largest.close(
        "ProtocolViolation",
        `the node holds over ${this.budget.cap} bytes of unread input from all peers, ${largest.heldBytes} of them from this connection`
      )
    }
    if (this.closed) return
    if (this.waitingFor === "data") this.wake("data")
    else if (this.reader.bufferedBytes > READ_PAUSE_BYTES) this.stream.pause()
  }

  /** Resumes the reader fiber if it waits for `what`. */
  wake(what: "data" | "capacity"): void {
    if (this.waitingFor !== what) return
    const waiter = this.waiter
    this.waiter = undefined
    this.waitingFor = undefined
    waiter?.()
  }

  private wait(what: "data" | "capacity"): Effect.Effect<void, ConnectionEnded> {
    return Effect.async<void, ConnectionEnded>((resume) => {
      if (this.endedAs !== undefined) return resume(Effect.fail(this.endedAs))
      this.waitingFor = what
      this.waiter = () => resume(this.endedAs === undefined ? Effect.void : Effect.fail(this.endedAs))
      return Effect.sync(() => {
        this.waiter = undefined
        this.waitingFor = undefined
      })
    })
  }

  /** Waits until an answer finished or the stream drained (or the connection ended). */
  readonly waitForCapacity: Effect.Effect<void, ConnectionEnded> = Effect.suspend(() => this.wait("capacity"))

  /** The next frame's JSON value; fails once the connection ends or the peer sends something unreadable. */
  readonly nextFrame: Effect.Effect<unknown, ConnectionEnded> = Effect.suspend(() => this.poll())

  private poll(): Effect.Effect<unknown, ConnectionEnded> {
    if (this.endedAs !== undefined) return Effect.fail(this.endedAs)
    const read = this.reader.next()
    this.account()
    switch (read._tag) {
      case "Frame":
        this.clearFrameDeadline()
        return Effect.succeed(read.value)
      case "NeedMore":
        if (this.stream.isPaused()) this.stream.resume()
        if (this.reader.bufferedBytes > 0) this.armFrameDeadline()
        return Effect.flatMap(this.wait("data"), () => this.poll())
      case "Oversized":
        return this.violation(`a frame announces ${read.announced} bytes, over the limit of ${this.maxFrameBytes}`)
      case "Malformed":
        return this.violation(`a frame is not JSON (${read.detail})`)
    }
  }

  /** Fires when the rest of the frame being read is overdue; undefined while no frame is unfinished. */
  private frameTimer: ReturnType<typeof setTimeout> | undefined = undefined
  /** When the reader started waiting for the frame the timer is for (ms since the epoch). */
  private frameWaitedSince = 0
  /** The size the timer was set for: undefined while the frame's header had not fully arrived. */
  private frameTimedFor: number | undefined = undefined

  /**
   * Starts the clock on the frame the reader waits for, unless it runs already
   * (core `unfinishedFrameDeadlineMs`): a peer that never finishes a frame,
   * or trickles it a byte at a time, is closed rather than held forever. A
   * clock started before the frame's header was in is set again, from the
   * same start, once the header says the frame's size.
   */
  private armFrameDeadline(): void {
    if (this.closed) return
    const announced = this.reader.announcedBytes
    if (this.frameTimer !== undefined) {
      if (this.frameTimedFor !== undefined || announced === undefined) return
      clearTimeout(this.frameTimer)
    } else {
      this.frameWaitedSince = Date.now()
    }
    this.frameTimedFor = announced
    const deadlineMs = unfinishedFrameDeadlineMs(announced, this.budget.frameDeadline)
    this.frameTimer = setTimeout(() => {
      this.frameTimer = undefined
      this.close(
        "ProtocolViolation",
        `a frame${announced === undefined ? "" : ` of ${announced} bytes`} did not arrive within ${deadlineMs} ms ` +
          `(${this.reader.bufferedBytes} bytes came)`
      )
    }, Math.max(0, this.frameWaitedSince + deadlineMs - Date.now()))
    this.frameTimer.unref()
  }

  private clearFrameDeadline(): void {
    if (this.frameTimer === undefined) return
    clearTimeout(this.frameTimer)
    this.frameTimer = undefined
  }

  /** Closes the connection for a protocol violation and fails with it. */
  violation(detail: string): Effect.Effect<never, ConnectionEnded> {
    this.close("ProtocolViolation", detail)
    // `close` always sets `endedAs` (or it was set before).
    return Effect.fail(this.endedAs as ConnectionEnded)
  }

  /** Sends one frame, unless the connection is closed or the value's JSON exceeds the frame limit. */
  write(value: unknown): "Written" | "Closed" | "TooLarge" {
    if (this.closed) return "Closed"
    const frame = encodeFrame(value, this.maxFrameBytes)
    if (!(frame instanceof Uint8Array)) return "TooLarge"
    this.lastActivity = Date.now()
    this.frames.write(frame)
    return "Written"
  }

  /** Bytes written and not yet handed to the operating system. */
  get unsentBytes(): number {
    return this.stream.writableLength()
  }

  /** Ends the connection (idempotent): destroys the stream and wakes the reader. */
  close(reason: ConnectionEnded["reason"], detail: string): void {
    if (this.closed) return
    this.closed = true
    this.endedAs = new ConnectionEnded({ reason, detail })
    this.clearFrameDeadline()
    this.reader.clear()
    this.account()
    this.budget.holders.delete(this)
    this.frames.flush()
    this.stream.destroy({ reason, detail })
    const waiter = this.waiter
    this.waiter = undefined
    this.waitingFor = undefined
    waiter?.()
  }

  /** Why the connection ended, once it has. */
  get ended(): ConnectionEnded | undefined {
    return this.endedAs
  }
}

// ---------------------------------------------------------------------------
// The transport

/** An inbound connection: before its handshake completes `connection` and `peer` are undefined. */
interface Inbound {
  /**
   * Its place in the connection budgets, released when it closes: inbound,
   * or outbound for a circuit this node dialled to take a relayed caller.
   */
  readonly ticket: ConnectionTicket
  /** The peer's IP as its connection shows it (normalized): the key of its per-IP budgets. */
  readonly ip: string
  /** The raw stream, from accept to close. */
  readonly raw: ByteStream
  /** Milliseconds since the epoch when it was accepted (or dialled): a handshake's age. */
  readonly acceptedAt: number
  connection: Connection | undefined
  peer: AuthenticatedPeer | undefined
  /** Its requests in their handlers, once authenticated. Bound: maxInFlightPerConnection. */
  served: ServedCalls | undefined
}

/** An established outbound connection: the peer it authenticated and the calls in flight on it. */
interface Link extends PooledLink {
  /** Its place in the outbound pool: its key, and the count of calls in flight on it. */
  readonly pooled: PooledConnection
  readonly connection: Connection
  readonly peer: AuthenticatedPeer
  readonly calls: PendingCalls
}

/** What one pooled outbound connection dials: a peer's address directly, through a relay's circuit, or to punch. */
interface OutboundDial {
  /** The address dialled: the peer's, or the relay's for a circuit. */
  readonly address: Address
  /** The peer's node id and the relay to reach it through, for a circuit. */
  readonly circuit: { readonly target: NodeId; readonly via: RelayHint } | undefined
  /** For the initiator of a hole punch: the local port it dials from, and for how long it keeps trying. */
  readonly punch: { readonly peer: NodeId; readonly localPort: number; readonly withinMillis: number } | undefined
}

/**
 * `self`, failing with `onTimeout()` (and interrupting `self`) when it takes
 * longer than `millis`. Semantically `Effect.timeoutFail`, at a third of its
 * cost per call (one fork and one timer instead of a race of two fibers and a
 * `Clock` sleep), which matters on the path of every call. The timer is real
 * time, not the `Clock` service: transports run on real sockets anyway.
 */
const withDeadline = <A, E>(self: Effect.Effect<A, E>, millis: number, onTimeout: () => E): Effect.Effect<A, E> =>
  Effect.uninterruptibleMask((restore) =>
    Effect.flatMap(Effect.forkDaemon(restore(self)), (fiber) =>
      restore(Effect.async<A, E>((resume) => {
        const timer = setTimeout(() => {
          fiber.unsafeInterruptAsFork(FiberId.none)
          resume(Effect.fail(onTimeout()))
        }, millis)
        fiber.addObserver((exit) => {
          clearTimeout(timer)
          resume(exit)
        })
        return Effect.sync(() => clearTimeout(timer))
      })).pipe(Effect.onInterrupt(() => Effect.sync(() => fiber.unsafeInterruptAsFork(FiberId.none))))
    )
  )

/** Whether `host` is an IPv4 or IPv6 loopback address. */
const isLoopback = (host: string): boolean => host === "::1" || /^127\./.test(host)

/**
 * The source address to dial `target` from: the listening host when it is one
 * specific address of the same family and scope as the target, so peers see
 * connections come from the host this node listens on (several nodes on one
 * machine, each on its own 127.x.y.z, keep distinct addresses); otherwise the
 * operating system chooses.
 */
const sourceHostFor = (listenHost: string, target: string): string | undefined => {
  const family = net.isIP(listenHost)
  if (family === 0 || listenHost === "0.0.0.0" || listenHost === "::") return undefined
  if (net.isIP(target) !== family || isLoopback(listenHost) !== isLoopback(target)) return undefined
  return listenHost
}

/** The pool key of the direct connection a hole punch opened to `nodeId` (one per peer). */
const punchedKey = (nodeId: NodeId): string => `${nodeId} punched`

/**
 * A hole punch dials again after the other end's host refused (it was not
 * dialling yet): after 100 ms, then twice as long each time up to 1 s, so a
 * punch sends about ten SYNs in its 6 s, not sixty.
 */
/**
 * A handshake still unfinished after this long may give its place to a
 * newcomer when floods from many addresses hold the whole handshake budget
 * (core `pendingVictimFor`, rule 2). An honest Noise XX handshake takes 1.5
 * round trips and about 2 ms of CPU per side; 500 ms leaves room for slow
 * links while making half-open floods reconnect four times as often as the
 * 2 s handshake timeout alone would.
 */
const STALE_HANDSHAKE_MS = 500

const PUNCH_REDIAL_FIRST_MS = 100
const PUNCH_REDIAL_MAX_MS = 1000

/**
 * Punched connections this node serves (it answered the punch) at once, one
 * per peer: each holds a place in the outbound budget, so a peer asking again
 * and again, or many peers, must not fill it.
 */
const MAX_SERVED_PUNCHES = 32

/**
 * Listening probes a node runs at once: dial-backs are bounded by their
 * callers (32 by the routing table, `DialBack` requests by their rate), so
 * this only stops a bug from opening sockets without end.
 */
const MAX_PROBES_IN_FLIGHT = 64

/** The pool key of a circuit to `nodeId` through `relay` (one per peer and relay, apart from direct ones). */
const circuitKey = (nodeId: NodeId | undefined, relay: RelayHint): string =>
  `${nodeId ?? "?"} via ${formatAddress(relay.address)}`

const startError = (address: string, error: unknown): TransportStartError => {
  const code = errorCode(error)
  const reason: TransportStartError["reason"] = code === "EADDRINUSE"
    ? "AddressInUse"
    : code === "EACCES" || code === "EPERM"
    ? "PermissionDenied"
    : code === "EADDRNOTAVAIL" || code === "ENOTFOUND" || code === "EAI_AGAIN"
    ? "AddressNotAvailable"
    : "Failed"
  return new TransportStartError({ address, reason, detail: describeError(error) })
}

/**
 * Starts the transport in the current scope: listens, serves the RPC group
 * and keeps the outbound pool. Closing the scope closes the listener and every
 * connection and interrupts every fiber the transport started.
 */
export const make = (
  config: TcpTransportConfig
): Effect.Effect<TcpTransportService, TransportStartError, Identity | Signatures | Scope.Scope> =>
  Effect.gen(function*() {
    const identity = yield* Identity
    const { verify } = yield* Signatures
    const callTimeout = Duration.decode(config.callTimeout ?? Duration.seconds(2))
    const handshakeTimeout = Duration.decode(config.handshakeTimeout ?? Duration.seconds(2))
    const handshakeMillis = Duration.toMillis(handshakeTimeout)
    const circuitSetupTimeout = Duration.decode(config.circuitSetupTimeout ?? Duration.seconds(8))
    const idleTimeoutMs = Duration.toMillis(Duration.decode(config.idleTimeout ?? Duration.seconds(60)))
    const maxFrameBytes = config.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES
    const ledger = new ConnectionLedger(config.limits)
    const requestLimiter = new RequestLimiter(Date.now(), config.requestLimits)
    const maxRefusalPauseMs = Duration.toMillis(Duration.decode(config.maxRefusalPause ?? Duration.seconds(1)))
    const maxInFlight = config.maxInFlightPerConnection ?? DEFAULT_MAX_IN_FLIGHT
    const inputBudget: InputBudget = {
      held: 0,
      cap: config.maxBufferedBytes ?? DEFAULT_MAX_BUFFERED_BYTES,
      holders: new Set(),
      frameDeadline: { ...DEFAULT_FRAME_DEADLINE, ...config.frameDeadline }
    }

    const runFork = yield* FiberSet.makeRuntime<never>()
    const inbound = new Set<Inbound>()
    let accepted = 0
    let refused = 0
    let closing = false
    const registry = makeHandlerRegistry()

    /**
     * The least recently active authenticated inbound connection with nothing
     * in flight (of the inbound budget: a circuit this node dialled holds an
     * outbound place, so closing it would free nothing here).
     */
    const idlestInbound = (): { readonly record: Inbound; readonly ticket: InboundTicket } | undefined => {
      const record = leastRecentlyActive(inbound, (record) => record.ticket.direction === "inbound" ? idleSince(record) : undefined)
      return record === undefined || record.ticket.direction !== "inbound" ? undefined : { record, ticket: record.ticket }
    }

    /** This node's outbound connections, one per key; each is made and served by the client side below. */
    const pool = makeOutboundPool<OutboundDial, Link>({
      ledger,
      runFork,
      connect: (dial, pooled) => connectOutbound(dial, pooled),
      serve: (dial, link) => serveOutbound(dial, link),
      servedDialled: () => servedDialled(),
      // Only direct connections close to keep idle ones few: a call dials them again in one round trip.
      closesWhenIdle: (dial) => dial.circuit === undefined && dial.punch === undefined
    })

    /** An idle connection's last activity; undefined while it is in its handshake or serving a request. */
    const idleSince = ({ connection, served }: Inbound): number | undefined =>
      connection === undefined || (served?.size ?? 0) > 0 ? undefined : connection.lastActivity

    /** Connections this node dialled and serves as accepted (circuits, answered punches), for the pool's eviction. */
    function* servedDialled(): Generator<ServedDialled> {
      for (const record of inbound) {
        const ticket = record.ticket
        if (ticket.direction !== "outbound") continue
        yield {
          ticket,
          lastActive: () => idleSince(record),
          evict: (detail) => {
            inbound.delete(record)
            record.connection?.close("Closed", detail)
          }
        }
      }
    }

    // -- Server side: requests of authenticated connections, in their handlers ----

    /** Runs the handler installed for `request`'s tag, or refuses it; a handler that dies fails only its call. */
    const dispatch = (request: NodeRequest, caller: AuthenticatedPeer): Effect.Effect<unknown, unknown> => {
      const handler = registry.handlerFor(request)
      if (handler === undefined) return Effect.fail(refusedNotServed(request._tag, registry.current().any))
      return Effect.catchAllDefect(
        Effect.suspend(() => handler(caller, request)),
        (defect) =>
          // The peer learns only that the handler failed; the details stay in this node's log.
          Effect.zipRight(
            Effect.logWarning("a request handler died", Cause.pretty(Cause.die(defect))),
            Effect.dieMessage("the handler failed")
          )
      )
    }

    /**
     * Starts a request of an authenticated caller (over a connection or by
     * datagram): the caller's budgets first, so a request over them is
     * refused before its payload is decoded (a `StoreMail` payload can be
     * most of a MiB of base64) and before any handler work; then its payload;
     * then its handler in `served`. The peer's own headers are dropped: who
     * calls is the transport's business.
     */
    const startRequest = (served: ServedCalls, caller: AuthenticatedPeer, ip: string, message: RequestEnvelope): StartOutcome => {
      // The tag is one of the protocol's (the envelope's schema checked it).
      const admission = requestLimiter.admit(caller.nodeId, ip, Date.now(), requestCost(message.tag))
      if (admission._tag === "Refuse") {
        return {
          _tag: "Refused",
          answer: rateLimited(message.id, admission.reason, admission.retryAfterMillis),
          retryAfterMillis: admission.retryAfterMillis
        }
      }
      const codec = serveCodecs.get(message.tag) as ServeCodec
      const request = codec.decodeRequest(message.payload)
      if (request._tag === "Left") {
        return { _tag: "Violation", detail: `a ${message.tag} payload does not decode: ${ParseResult.TreeFormatter.formatErrorSync(request.left)}` }
      }
      served.start(message.id, codec, dispatch(request.right as NodeRequest, caller))
      return { _tag: "Started" }
    }

    /**
     * The address a caller's requests count under (the per-IP budget): its
     * connection's host, except for a caller reached through a relay, whose
     * connections all come from the relay's host: the host that relay
     * reported for it, apart from every direct caller's and from what other
     * relays report (a relay's word must not spend a real host's budget, nor
     * the budget of that host's callers through another relay), else the
     * relay itself.
     */
    const requestAddressOf = (record: Inbound, peer: AuthenticatedPeer): string =>
      peer.relayedBy === undefined
        ? record.ip
        : peer.observedHost === undefined
        ? `relayed:${peer.relayedBy}`
        : `relayed:${peer.relayedBy}:${normalizeHost(peer.observedHost)}`

    const handleInbound = (
      record: Inbound,
      served: ServedCalls,
      peer: AuthenticatedPeer,
      connection: Connection,
      value: unknown
    ): Effect.Effect<void, ConnectionEnded> => {
      const decoded = decodeFromClient(value)
      if (decoded._tag === "Left") {
        return connection.violation(`a message does not decode: ${ParseResult.TreeFormatter.formatErrorSync(decoded.left)}`)
      }
      const message = decoded.right
      switch (message._tag) {
        case "Request": {
          if (served.has(message.id)) return connection.violation(`request id ${message.id} reused`)
          const outcome = startRequest(served, peer, requestAddressOf(record, peer), message)
          if (outcome._tag === "Started") return Effect.void
          if (outcome._tag === "Violation") return connection.violation(outcome.detail)
          connection.write(outcome.answer)
          // And this connection is not read again until a token is due (at most a second): a flood
          // then waits in the peer's own socket buffers (TCP pushes back) instead of costing this
          // node a decryption and a refusal per request.
          return refusalPause(outcome.retryAfterMillis)
        }
        case "Interrupt":
          // Interrupting a request in flight is free; any other frame costs a request's token below.
          if (served.has(message.requestId)) {
            served.interrupt(message.requestId)
            return Effect.void
          }
          return chargeFrame(record, peer)
        case "Ping":
          // Peerchat nodes never send one (a connection's life is its calls), but a peer may: each costs
          // a token like a request, else a flood of them would be answered without end.
          return Effect.flatMap(chargeFrame(record, peer), () =>
            Effect.sync(() => {
              connection.write(PONG)
            }))
        case "Ack":
        case "Eof":
          // Acks are for streams, which the protocol has none of; the end of input is the connection's.
          return chargeFrame(record, peer)
      }
    }

    /** Not reading a connection until a token is due, at most `maxRefusalPauseMs`. */
    const refusalPause = (retryAfterMillis: number): Effect.Effect<void> =>
      Effect.sleep(Duration.millis(Math.min(Math.max(retryAfterMillis, 1), maxRefusalPauseMs)))

    /**
     * Charges a frame that is no request (a `Ping`, an `Ack`, an interrupt of
     * nothing) one token of the caller's request budgets: each still costs a
     * decryption and a parse, and must not be free to send without end. Over
     * the budget, the connection is not read until a token is due.
     */
    const chargeFrame = (record: Inbound, peer: AuthenticatedPeer): Effect.Effect<void> => {
      const admission = requestLimiter.admit(peer.nodeId, requestAddressOf(record, peer), Date.now())
      return admission._tag === "Admit" ? Effect.void : refusalPause(admission.retryAfterMillis)
    }

    const serveConnection = (
      record: Inbound,
      served: ServedCalls,
      peer: AuthenticatedPeer,
      connection: Connection
    ): Effect.Effect<never, ConnectionEnded> => {
      return Effect.forever(Effect.suspend(() =>
        served.size >= maxInFlight || connection.unsentBytes > WRITE_HIGH_WATER_BYTES
          ? connection.waitForCapacity
          : Effect.flatMap(connection.nextFrame, (value) => handleInbound(record, served, peer, connection, value))
      ))
    }

    /** A connection to serve, not yet authenticated: counted among the inbound ones from now on. */
    const addInbound = (ticket: ConnectionTicket, ip: string, raw: ByteStream): Inbound => {
      const record: Inbound = {
        ticket,
        ip,
        raw,
        acceptedAt: Date.now(),
        connection: undefined,
        peer: undefined,
        served: undefined
      }
      inbound.add(record)
      return record
    }

    /** An inbound connection, authenticated as `peer`: served until it closes. */
    const serveAuthenticated = (
      record: Inbound,
      stream: ByteStream,
      peer: AuthenticatedPeer
    ): Effect.Effect<never, ConnectionEnded> =>
      Effect.suspend(() => {
        const connection = new Connection(stream, maxFrameBytes, idleTimeoutMs, inputBudget)
        const served = new ServedCalls(runFork, (answer) => {
          if (connection.write(answer) === "TooLarge") connection.write(answerTooLarge(answer))
          connection.wake("capacity")
        })
        connection.busy = () => served.size > 0
        record.connection = connection
        record.peer = peer
        record.served = served
        return serveConnection(record, served, peer, connection)
      })

    /** Ends a connection's life: closes it and gives back its place in the budgets. */
    const releaseInbound = (record: Inbound): Effect.Effect<void> =>
      Effect.sync(() => {
        record.connection?.close("Closed", "the transport is closing")
        record.raw.destroy({ reason: "Closed", detail: "the transport is closing" })
        ledger.release(record.ticket)
        inbound.delete(record)
        // Nobody waits for these answers any more.
        record.served?.interruptAll()
      })

    /** How many opening bytes a connection whose first byte is `first` sends (core `ListeningProbe`, `CircuitRelay`). */
    const openingBytes = (first: number): number =>
      opensCircuitLeg(first)
        ? CIRCUIT_OPENING_BYTES
        : opensListeningProbe(first)
        ? PROBE_OPENING_BYTES
        : opensPairProbe(first)
        ? PAIR_PROBE_OPENING_BYTES
        : 1

    /** The datagram side once it runs (set below): its pairs answer pair probes. None before, or without datagrams. */
    let datagramPairs: Datagrams | undefined = undefined

    /**
     * What a probe's `opening` draws: for a pair probe from the other end of a
     * pair this node holds (its MAC checks out), the pair's MAC answer;
     * otherwise (a plain probe, a pair this node does not hold, a bad MAC)
     * its identity key and signature. Undefined for a malformed opening.
     */
    const probeAnswerTo = (opening: Uint8Array): Uint8Array | undefined => {
      const pairProbe = pairProbeOf(opening)
      if (pairProbe === undefined) {
        const challenge = challengeOf(opening)
        return challenge === undefined ? undefined : probeAnswer(identity.signingPublicKey, identity.sign, challenge)
      }
      const pair = datagramPairs?.pairWith(pairProbe.proberStaticKey)
      // With no such pair the MAC is checked all the same, under a key nobody holds (it fails): a stranger
      // cannot time the answer to learn whether this node holds a pair with a given static key.
      const macAnswer = pairProbeAnswer(
        pairProbe,
        { staticKey: datagramPairs?.staticKey ?? decoyProbeKey, nodeId: identity.nodeId },
        pair?.peerNodeId ?? identity.nodeId,
        (statement) => hmacSha256(pair?.probeKey ?? decoyProbeKey, statement)
      )
      return (pair === undefined ? undefined : macAnswer) ?? probeAnswer(identity.signingPublicKey, identity.sign, pairProbe.challenge)
    }

    /** A random key of this process's that no pair has: `probeAnswerTo`'s MAC check for a static key it holds no pair with. */
    const decoyProbeKey = pooledRandomBytes(32)

    /**
     * Answers a listening probe (core `ListeningProbe`) with callbacks on the
     * socket, no fiber: this node's identity key and its signature over the
     * challenge, then this end closes first (a FIN after the answer), so the
     * closed connection's TIME_WAIT stays on the listening port here rather
     * than holding one of the prober's ephemeral ports for a minute: a node
     * probes many peers in a join, and each peer that takes a newcomer into
     * its table probes it. Waits for the prober to hang up (the accept's
     * deadline destroys the stream of one that does not); anything more from
     * it ends the connection, a prober sends nothing else. `done` is told
     * once, with why the probe failed if it did.
     */
    const answerProbe = (socket: net.Socket, raw: ByteStream, opening: Uint8Array, done: (failure?: string) => void): void => {
      const answer = probeAnswerTo(opening)
      if (answer === undefined) return done("a malformed listening probe")
      raw.listen({
        data: () => raw.destroy({ reason: "ProtocolViolation", detail: "bytes after a listening probe" }),
        drain: () => {},
        end: (end) => done(end.reason === "ProtocolViolation" ? end.detail : undefined)
      })
      raw.resume()
      socket.end(answer)
    }

    /** Each circuit this node opened, once up, for whoever tries to replace it with a direct connection. */
    const relayedUp = yield* PubSub.sliding<RelayedConnection>(64)

    /** A relay's circuit legs: spliced when the node installed its gate (`relayCircuits`). */
    const splicer = makeCircuitSplicer()

    /** Set once listening (with the bound port); no connection is accepted or dialled before. */
    let localAddress: Address = config.advertise ?? config.listen
    const secureSelf = makeSecureSelf(identity)

    /** The connection holding `ticket`: a scan, without copying the set, since a flood asks once per refused connect. */
    const inboundOf = (ticket: ConnectionTicket): Inbound | undefined => {
      for (const record of inbound) if (record.ticket === ticket) return record
      return undefined
    }

    const onInbound = (socket: net.Socket): void => {
      socket.on("error", ignore)
      if (closing) {
        socket.destroy()
        return
      }
      // Cheap checks before any work: the budgets of connections in their handshake, of inbound
      // connections, of this IP and this network. Only a full inbound budget may evict an idle peer.
      // Room is made before the decision, so a connection admitted after an eviction is not counted
      // as refused (the ledger counts each refusal it answers).
      const host = observedHostOf(socket)
      let wouldRefuse = ledger.inboundRefusalFor(host)
      if (wouldRefuse === "PendingHandshakes") {
        // A half-open flood fills the handshake budget: the address holding the most gives one up, or
        // else the oldest handshake if it is stale (core pendingVictimFor).
        const staleBefore = Date.now() - STALE_HANDSHAKE_MS
        const victimTicket = ledger.pendingVictimFor(host, (ticket) => (inboundOf(ticket)?.acceptedAt ?? Infinity) <= staleBefore)
        const victim = victimTicket === undefined ? undefined : inboundOf(victimTicket)
        if (victim !== undefined) {
          inbound.delete(victim)
          ledger.release(victim.ticket)
          victim.raw.destroy({ reason: "Closed", detail: "evicted: a newcomer took the place of an unfinished handshake" })
          wouldRefuse = ledger.inboundRefusalFor(host)
        }
      }
      const idlest = wouldRefuse === "InboundFull" ? idlestInbound() : undefined
      let decision: InboundDecision
      if (idlest === undefined) {
        decision = ledger.admitInbound(host)
      } else {
        const evicting = ledger.admitInboundEvicting(host, idlest.ticket)
        if (evicting._tag === "Admit" && evicting.evicted !== undefined) {
          inbound.delete(idlest.record)
          idlest.record.connection?.close("Closed", "evicted to make room for another connection")
        }
        decision = evicting
      }
      if (decision._tag === "Refuse") {
        refused++
        socket.destroy()
        return
      }
      accepted++
      const ticket = decision.ticket
      const raw = socketStream(socket)
      const record = addInbound(ticket, ticket.ip, raw)
      // One deadline from the accept to the end of the handshake: a peer that sends its opening byte
      // just in time does not earn a second period for the handshake.
      const deadline = setTimeout(
        () => raw.destroy({ reason: "Closed", detail: "no handshake within the handshake timeout" }),
        handshakeMillis
      )
      const closed = (detail: string | undefined): void => {
        clearTimeout(deadline)
        if (detail !== undefined) runFork(logInboundClosed(record, detail))
        Effect.runSync(releaseInbound(record))
      }
      // The first bytes tell a handshake from a circuit leg (which a relay splices, unread) and from a
      // listening probe. A probe is answered here, within the handshake's deadline and budget, with no
      // fiber: it is all the handshake it gets, and a join draws one from each peer that takes it in.
      readOpening(raw, openingBytes, (opening) => {
        if (opensListeningProbe(opening[0] as number) || opensPairProbe(opening[0] as number)) {
          return answerProbe(socket, raw, opening, (failure) => {
            if (failure === undefined) ledger.handshakeDone(ticket)
            closed(failure)
          })
        }
        clearTimeout(deadline)
        const left = Duration.millis(Math.max(0, handshakeMillis - (Date.now() - record.acceptedAt)))
        runFork(inboundLife(record, raw, opening, left))
      }, (end) => closed(end.detail))
    }

    /** Why an inbound connection ended, for whoever debugs it (a peer may end one at any time: not a warning). */
    const logInboundClosed = (record: Inbound, detail: string): Effect.Effect<void> =>
      Effect.logDebug("inbound connection closed", `${record.raw.remoteHost}: ${detail}`).pipe(
        Effect.annotateLogs({ peer: record.peer?.nodeId ?? "unauthenticated" })
      )

    /** An inbound connection past its opening bytes: a circuit leg spliced, or a handshake and then its service. */
    const inboundLife = (
      record: Inbound,
      raw: ByteStream,
      opening: Uint8Array,
      handshakeLeft: Duration.Duration
    ): Effect.Effect<void> => {
      const observedHost = raw.remoteHost
      const life = Effect.gen(function*() {
        if (opensCircuitLeg(opening[0] as number)) {
          ledger.handshakeDone(record.ticket)
          return yield* splicer.serveLeg(raw, opening)
        }
        const session = yield* Effect.timeoutFail(respond({ stream: withUnread(raw, opening), self: secureSelf, verify }), {
          duration: handshakeLeft,
          onTimeout: () => new HandshakeError({ detail: "no handshake within the handshake timeout" })
        })
        ledger.handshakeDone(record.ticket)
        // The caller's address pairs the host its connection comes from with the port it says it
        // listens on: a node can name only its own host, never point others at a third party.
        return yield* serveAuthenticated(record, session.stream, {
          nodeId: session.nodeId,
          address: { host: observedHost, port: session.listenPort },
          // The host the connection comes from, as the socket shows it: per-address budgets and shares.
          observedHost
        })
      })
      return life.pipe(
        Effect.catchAll((error) => logInboundClosed(record, error.detail)),
        Effect.ensuring(releaseInbound(record))
      )
    }

    // -- Listening -----------------------------------------------------------

    const listenKey = formatAddress(config.listen)
    const server = net.createServer({ noDelay: true })
    server.on("connection", onInbound)
    yield* Effect.acquireRelease(
      Effect.async<void, TransportStartError>((resume) => {
        const onError = (error: Error) => resume(Effect.fail(startError(listenKey, error)))
        server.once("error", onError)
        server.listen({ host: config.listen.host, port: config.listen.port }, () => {
          server.off("error", onError)
          const bound = server.address()
          const boundPort = typeof bound === "object" && bound !== null ? bound.port : config.listen.port
          // An advertised port of 0 means "the port we bound", like a listen port of 0.
          localAddress = config.advertise === undefined
            ? { host: config.listen.host, port: boundPort }
            : config.advertise.port === 0
            ? { host: config.advertise.host, port: boundPort }
            : config.advertise
          server.on("error", (error) => runFork(Effect.logWarning("listener error", describeError(error))))
          resume(Effect.void)
        })
      }),
      () =>
        Effect.async<void>((resume) => {
          closing = true
          for (const record of inbound) {
            record.connection?.close("Closed", "the transport is closing")
            record.raw.destroy({ reason: "Closed", detail: "the transport is closing" })
          }
          pool.closeAll({ reason: "Closed", detail: "the transport is closing" })
          server.close(() => resume(Effect.void))
        })
    )

    // Port mapping: the router's outside address replaces the own one while the mapping lives
    // (`localAddress` is what handshakes announce and what the node publishes).
    const ownAddress = localAddress
    const boundAddress = server.address()
    const portMapping = config.portMapping === undefined ? undefined : yield* config.portMapping({
      bound: { host: config.listen.host, port: typeof boundAddress === "object" && boundAddress !== null ? boundAddress.port : ownAddress.port },
      onExternal: (external) => {
        localAddress = external ?? ownAddress
      }
    })

    // -- Datagrams: Ping, FindNode and DialBack over UDP, on the listening port's number

    const datagrams: Datagrams | undefined = config.datagrams === false ? undefined : yield* Effect.acquireRelease(
      makeDatagrams({
        host: config.listen.host,
        port: typeof boundAddress === "object" && boundAddress !== null ? boundAddress.port : ownAddress.port,
        self: secureSelf,
        verify,
        listenPort: () => localAddress.port,
        run: runFork,
        startRequest,
        now: Date.now,
        limits: config.datagramLimits,
        onDefect: (defect) => runFork(Effect.logError("a datagram could not be handled", Cause.pretty(Cause.die(defect))))
      }).pipe(
        Effect.map((datagrams): Datagrams | undefined => datagrams),
        Effect.catchAll((error) =>
          Effect.as(
            Effect.logWarning(`Ping, FindNode and DialBack go over TCP only: the UDP port cannot be bound (${describeError(error)})`),
            undefined
          )
        )
      ),
      (datagrams) => Effect.sync(() => datagrams?.close())
    )
    datagramPairs = datagrams

    // -- Client side: how a pooled outbound connection is made and served ------

    const transportError = (key: string, reason: TransportError["reason"], detail: string) =>
      new TransportError({ peer: key, reason, detail })

    /** Starts a TCP connection to `address` from the listening host (see `sourceHostFor`). */
    const dial = (address: Address): net.Socket => {
      const localHost = sourceHostFor(config.listen.host, address.host)
      return net.connect({
        host: address.host,
        port: address.port,
        noDelay: true,
        ...(localHost === undefined ? {} : { localAddress: localHost })
      })
    }

    const connectTo = (address: Address, key: string): Effect.Effect<ByteStream, TransportError> =>
      Effect.async<ByteStream, TransportError>((resume) => {
        const socket = dial(address)
        socket.on("error", ignore)
        const onError = (error: Error) => {
          socket.destroy()
          resume(Effect.fail(transportError(key, "Unreachable", describeError(error))))
        }
        socket.once("error", onError)
        socket.once("connect", () => {
          socket.off("error", onError)
          resume(Effect.succeed(socketStream(socket)))
        })
        return Effect.sync(() => socket.destroy())
      })

    /**
     * One side of a simultaneous TCP open (a hole punch): dials `address`
     * from `localPort` while the other side dials this node's public address
     * and that port. Until the other side's own dial opens its NAT, our SYNs
     * are dropped there (the kernel retries them) or, at a host without a
     * NAT, refused: a refusal is dialled again from the same port, after
     * `PUNCH_REDIAL_FIRST_MS` and then twice as long each time up to
     * `PUNCH_REDIAL_MAX_MS`, until `withinMillis` pass.
     */
    const connectSimultaneously = (
      address: Address,
      localPort: number,
      withinMillis: number,
      key: string
    ): Effect.Effect<ByteStream, TransportError> =>
      Effect.async<ByteStream, TransportError>((resume) => {
        const localHost = sourceHostFor(config.listen.host, address.host)
        const giveUpAt = Date.now() + withinMillis
        let socket: net.Socket | undefined
        let redial: ReturnType<typeof setTimeout> | undefined
        let redialMs = PUNCH_REDIAL_FIRST_MS
        let lastError = "no answer"
        const giveUp = setTimeout(() => {
          socket?.destroy()
          if (redial !== undefined) clearTimeout(redial)
          resume(Effect.fail(transportError(key, "Unreachable", `no direct connection within ${withinMillis} ms (${lastError})`)))
        }, withinMillis)
        const dial = (): void => {
          const attempt = net.connect({
            host: address.host,
            port: address.port,
            noDelay: true,
            localPort,
            ...(localHost === undefined ? {} : { localAddress: localHost })
          })
          socket = attempt
          attempt.on("error", ignore)
          const onError = (error: Error) => {
            attempt.destroy()
            lastError = describeError(error)
            const code = errorCode(error)
            // The other end's host refused: it was not dialling yet. Anything else (the port is taken
            // here, no route) will not get better by dialling again.
            if ((code === "ECONNREFUSED" || code === "ECONNRESET") && Date.now() + redialMs < giveUpAt) {
              redial = setTimeout(dial, redialMs)
              redialMs = Math.min(PUNCH_REDIAL_MAX_MS, redialMs * 2)
              return
            }
            clearTimeout(giveUp)
            resume(Effect.fail(transportError(key, "Unreachable", lastError)))
          }
          attempt.once("error", onError)
          attempt.once("connect", () => {
            attempt.off("error", onError)
            clearTimeout(giveUp)
            resume(Effect.succeed(socketStream(attempt)))
          })
        }
        dial()
        return Effect.sync(() => {
          clearTimeout(giveUp)
          if (redial !== undefined) clearTimeout(redial)
          socket?.destroy()
        })
      })

    /** The RPC adapter over an authenticated outbound connection: its calls, matched to answers by id (`RpcCalls.ts`). */
    const makeLink = (pooled: PooledConnection, connection: Connection, peer: AuthenticatedPeer): Link => {
      const key = pooled.key
      const backlogLimit = Math.max(OUTBOUND_BACKLOG_BYTES, 2 * maxFrameBytes)
      const calls = new PendingCalls(key, callCodecs, (message) => {
        if (message._tag === "Request" && connection.unsentBytes > backlogLimit) {
          return transportError(key, "Overloaded", "the peer does not read what this node already sent")
        }
        const written = connection.write(message)
        if (written === "Written") return undefined
        return written === "TooLarge"
          ? transportError(key, "ProtocolViolation", `the request exceeds the frame limit of ${maxFrameBytes} bytes`)
          : transportError(key, "Closed", connection.ended?.detail ?? "the connection is closed")
      })
      return {
        pooled,
        connection,
        peer,
        calls,
        failCalls: (error) => Effect.sync(() => calls.failAll(error))
      }
    }

    const readAnswers = (connection: Connection, link: Link): Effect.Effect<never, ConnectionEnded> =>
      Effect.forever(Effect.flatMap(connection.nextFrame, (value) => {
        const decoded = decodeFromServer(value)
        if (decoded._tag === "Left") {
          return connection.violation(`an answer does not decode: ${ParseResult.TreeFormatter.formatErrorSync(decoded.left)}`)
        }
        const message = decoded.right
        switch (message._tag) {
          case "Exit": {
            // Decoded with the request's exit schema; one that does not decode fails its call and the connection.
            const outcome = link.calls.answer(message.requestId, message.exit)
            return outcome._tag === "Malformed" ? connection.violation(outcome.detail) : Effect.void
          }
          case "Pong":
            return Effect.void
          case "Defect":
            return connection.violation(`the peer reported a defect: ${String(message.defect).slice(0, 200)}`)
        }
      }))

    const endedError = (key: string, ended: ConnectionEnded): TransportError =>
      transportError(key, ended.reason, ended.detail)

    /**
     * Sets up one pooled connection: through a relay, a circuit first; then the
     * dial (or the punch), the handshake as initiator and the calls' table.
     * The stream and the connection are handed to the pool as they come up,
     * so closing ends them at any step.
     */
    const connectOutbound = (dial: OutboundDial, pooled: PooledConnection): Effect.Effect<Link, TransportError> =>
      Effect.gen(function*() {
        const key = pooled.key
        const { circuit, punch } = dial
        const setupTimeout = punch !== undefined
          ? Duration.sum(Duration.millis(punch.withinMillis), handshakeTimeout)
          : circuit === undefined
          ? handshakeTimeout
          : circuitSetupTimeout
        const { connection, peer } = yield* Effect.gen(function*() {
          // Through a relay: it gives a token for a circuit to the peer, which opens the leg we dial.
          const opened = circuit === undefined ? undefined : yield* openCircuitAt(circuit, key)
          const raw = punch === undefined
            ? yield* connectTo(dial.address, key)
            : yield* connectSimultaneously(dial.address, punch.localPort, punch.withinMillis, key)
          pooled.holdStream(raw)
          if (opened !== undefined) raw.write(circuitOpening(opened.token))
          const session = yield* initiate({ stream: raw, self: secureSelf, verify, listenPort: localAddress.port }).pipe(
            Effect.mapError((error) => transportError(key, "HandshakeFailed", error.detail))
          )
          // A punched connection is pooled as the peer's own: whoever answered must be that peer
          // before any call can take it.
          if (punch !== undefined && session.nodeId !== punch.peer) {
            return yield* transportError(key, "IdentityMismatch", `expected ${punch.peer}, the peer proved ${session.nodeId}`)
          }
          const connection = new Connection(session.stream, maxFrameBytes, idleTimeoutMs, inputBudget)
          connection.busy = pooled.inUse
          pooled.holdConnection(connection)
          // The address we dialled and authenticated: a verified address for this node id (or, through
          // a circuit, the relay's, marked as such: no routing table takes it as the peer's own, with the
          // host the relay saw the peer at). A hole-punched connection's far end is a NAT mapping, not a
          // listening port: port 0 keeps it out of routing tables (nobody else could dial it).
          const peer: AuthenticatedPeer = punch !== undefined
            ? { nodeId: session.nodeId, address: { host: dial.address.host, port: 0 }, observedHost: dial.address.host }
            : circuit === undefined
            ? { nodeId: session.nodeId, address: dial.address }
            : {
              nodeId: session.nodeId,
              address: dial.address,
              relayedBy: circuit.via.relayId,
              ...(opened?.targetHost === undefined ? {} : { observedHost: opened.targetHost })
            }
          return { connection, peer }
        }).pipe(
          Effect.timeoutFail({
            duration: setupTimeout,
            onTimeout: () => transportError(key, "Timeout", `no connection and handshake within ${Duration.format(setupTimeout)}`)
          })
        )
        return makeLink(pooled, connection, peer)
      })

    /** Serves an established pooled connection: announces a circuit once it is up, then reads answers until it ends. */
    const serveOutbound = (dial: OutboundDial, link: Link): Effect.Effect<never, TransportError> =>
      Effect.gen(function*() {
        if (dial.circuit !== undefined) {
          yield* PubSub.publish(relayedUp, { nodeId: link.peer.nodeId, via: dial.circuit.via, peerHost: link.peer.observedHost })
        }
        return yield* Effect.mapError(readAnswers(link.connection, link), (ended) => endedError(link.pooled.key, ended))
      })

    /**
     * Asks the relay of `circuit` for a circuit to its target: the token's
     * bytes and the host the target reserved from, or why there is none.
     */
    const openCircuitAt = (
      circuit: { readonly target: NodeId; readonly via: RelayHint },
      key: string
    ): Effect.Effect<{ readonly token: Uint8Array; readonly targetHost: string | undefined }, TransportError> =>
      send({ address: circuit.via.address, nodeId: circuit.via.relayId }, new OpenCircuit({ target: circuit.target })).pipe(
        Effect.mapError((error) =>
          transportError(
            key,
            error._tag === "TransportError" && error.reason === "IdentityMismatch" ? "IdentityMismatch" : "Unreachable",
            `the relay at ${formatAddress(circuit.via.address)} opened no circuit: ${error.message}`
          )
        ),
        // The schema checked 32 hex characters.
        Effect.map(({ value }) => ({ token: fromHex(value.token) as Uint8Array, targetHost: value.targetHost }))
      )

    /** The pooled connection to `target` under `key`, dialling it when there is none (or only one that just closed). */
    const acquire = (target: PeerTarget, key: string): Effect.Effect<Link, TransportError> =>
      Effect.suspend(() => {
        if (target.via === undefined || target.nodeId === undefined) {
          return pool.acquire(key, { address: target.address, circuit: undefined, punch: undefined })
        }
        // A peer behind a relay that a hole punch reached directly: its direct connection, while it lasts.
        const punched = pool.established(punchedKey(target.nodeId))
        if (punched !== undefined) return Effect.succeed(punched)
        const circuit = { target: target.nodeId, via: target.via }
        return pool.acquire(key, { address: target.address, circuit, punch: undefined })
      })

    /** The caller's bound on a call or a probe, else the call timeout. */
    const timeoutOf = (options: { readonly timeout?: Duration.DurationInput } | undefined): Duration.Duration =>
      options?.timeout === undefined ? callTimeout : Duration.decode(options.timeout)

    const send = <R extends AnyRequest>(
      peer: PeerTarget,
      request: R,
      options?: { readonly timeout?: Duration.DurationInput }
    ): Effect.Effect<CallResult<Request.Request.Success<R>>, Request.Request.Error<R> | TransportError> => {
      const key = peer.via === undefined ? formatAddress(peer.address) : circuitKey(peer.nodeId, peer.via)
      if (peer.via !== undefined && peer.nodeId === undefined) {
        return Effect.fail(transportError(key, "IdentityMismatch", "a peer behind a relay is called only by its node id"))
      }
      // Opening a circuit (a request to the relay, a second connection, the peer's own leg) takes
      // longer than a dial: a call that must open one gets that time on top of its own.
      const baseTimeout = timeoutOf(options)
      const timeout = peer.via !== undefined && !pool.has(key) ? Duration.sum(baseTimeout, circuitSetupTimeout) : baseTimeout
      const deadline: CallDeadline = {
        millis: Duration.toMillis(timeout),
        onTimeout: () => transportError(key, "Timeout", `no answer within ${Duration.format(timeout)}`)
      }
      const callOn = (link: Link, callDeadline: CallDeadline | undefined) => {
        if (peer.nodeId !== undefined && peer.nodeId !== link.peer.nodeId) {
          return Effect.fail(
            transportError(key, "IdentityMismatch", `expected ${peer.nodeId}, the peer proved ${link.peer.nodeId}`)
          )
        }
        return link.pooled.track(
          Effect.map(link.calls.call(request._tag, request, callDeadline), (value) => ({ value, peer: link.peer }))
        )
      }
      // The cast narrows `unknown` to the request's own success and error types: the call decoded the
      // answer with exactly that request's exit schema.
      type Result = Effect.Effect<CallResult<Request.Request.Success<R>>, Request.Request.Error<R> | TransportError>
      // Most calls find their connection established: the call's own timer is its deadline. Otherwise the
      // deadline covers the dial and the handshake too. Looked up when the call runs, not when it is built.
      const overTcp = (millis: number) =>
        withDeadline(Effect.flatMap(acquire(peer, key), (link) => callOn(link, undefined)), millis, deadline.onTimeout)
      return Effect.suspend(() => {
        const established = peer.via === undefined ? pool.established(key) : undefined
        if (established !== undefined) return callOn(established, deadline)
        // No connection to the peer yet: a Ping, a FindNode or a DialBack goes by datagram, when the peer takes them.
        if (
          datagrams !== undefined && peer.via === undefined && travelsByDatagram(request._tag) && datagrams.usable(peer.address)
        ) {
          const started = Date.now()
          return Effect.catchIf(
            datagrams.call(peer, request._tag, request, deadline, helloGiveUpMillis(deadline.millis)),
            (error): error is DatagramsUnanswered => error instanceof DatagramsUnanswered,
            () => {
              datagrams.noteFallback()
              return overTcp(Math.max(1, deadline.millis - (Date.now() - started)))
            }
          )
        }
        return overTcp(deadline.millis)
      }) as Result
    }

    /** Listening probes this node has under way (each holds a socket until answered or timed out). */
    let probesInFlight = 0

    /**
     * Dials `address`, sends a probe's `opening` and collects what the
     * listener sends before it closes the connection (it closes first, see
     * `answerProbe`); more than an answer's bytes end it at once. Fails
     * `Timeout` after `timeout`, the dial included: the socket is
     * destroyed then, so a port that drops SYNs does not keep it for the
     * kernel's two minutes of retries. One callback-driven step on a raw
     * socket, no `ByteStream` or fiber per stage: a probe is a few packets,
     * and a join draws about 80 (`docs/decisions.md`, "The floor under a join").
     */
    const probeExchange = (
      address: Address,
      opening: Uint8Array,
      key: string,
      timeout: Duration.Duration
    ): Effect.Effect<Uint8Array, TransportError> => {
      const pairProbe = opensPairProbe(opening[0] as number)
      return Effect.async<Uint8Array, TransportError>((resume) => {
        const socket = dial(address)
        const answer = new Uint8Array(PROBE_ANSWER_BYTES)
        let received = 0
        let connected = false
        let settled = false
        const settle = (outcome: Effect.Effect<Uint8Array, TransportError>): void => {
          if (settled) return
          settled = true
          clearTimeout(deadline)
          socket.destroy()
          resume(outcome)
        }
        const deadline = setTimeout(
          () => settle(Effect.fail(transportError(key, "Timeout", `no answer to the listening probe within ${Duration.format(timeout)}`))),
          Duration.toMillis(timeout)
        )
        // A pair probe's MAC answer is shorter than a signed one, which its listener may still send.
        const complete = (length: number) => length === PROBE_ANSWER_BYTES || (pairProbe && length === PAIR_PROBE_ANSWER_BYTES)
        const ended = () =>
          settle(
            complete(received)
              ? Effect.succeed(answer.subarray(0, received))
              : Effect.fail(transportError(key, "Closed", `the listener closed after ${received} of ${PROBE_ANSWER_BYTES} bytes`))
          )
        socket.on("error", (error) =>
          settle(Effect.fail(
            connected
              ? transportError(key, "Closed", `the listening probe's connection: ${describeError(error)}`)
              : transportError(key, "Unreachable", describeError(error))
          )))
        socket.once("connect", () => {
          connected = true
          socket.write(opening)
        })
        socket.on("data", (chunk: Buffer) => {
          if (received + chunk.length > PROBE_ANSWER_BYTES) {
            return settle(Effect.fail(
              transportError(key, "ProtocolViolation", `the listening probe's answer: more than ${PROBE_ANSWER_BYTES} bytes`)
            ))
          }
          answer.set(chunk, received)
          received += chunk.length
        })
        socket.once("end", ended)
        socket.once("close", ended)
        return Effect.sync(() => {
          settled = true
          clearTimeout(deadline)
          socket.destroy()
        })
      })
    }

    /** What the answer to `challenge` proves about `target`, as the call's outcome (`pair`: a pair probe's). */
    const probeVerdict = (
      target: { readonly address: Address; readonly nodeId: NodeId },
      challenge: Uint8Array,
      answer: Uint8Array,
      key: string,
      pair: PairProbeCheck | undefined
    ): Effect.Effect<AuthenticatedPeer, TransportError> => {
      const verdict = judgeProbeAnswer({ expected: target.nodeId, challenge, answer, verify, hash: sha256Native, pair })
      switch (verdict._tag) {
        case "Proven":
          return Effect.succeed({ nodeId: verdict.nodeId, address: target.address })
        case "OtherNode":
          return Effect.fail(transportError(key, "IdentityMismatch", `expected ${target.nodeId}, the listener there is ${verdict.nodeId}`))
        case "Invalid":
          return Effect.fail(transportError(key, "ProtocolViolation", `the listening probe's answer: ${verdict.detail}`))
      }
    }

    /**
     * Dials `target.address` and has the node listening there prove
     * `target.nodeId` by signing a fresh challenge (core `ListeningProbe`):
     * no secure channel, no call, one signature at each end; a node met by
     * datagram, with a MAC under the pair's probe key instead. A probe holds
     * its place among the 64 until its socket is gone: the dial itself is
     * cancelled at the deadline (a port that drops SYNs would otherwise keep
     * the socket for the kernel's two minutes of retries), and the timeout
     * waits for that.
     */
    const proveListening: Transport["Type"]["proveListening"] = (target, options) => {
      const key = formatAddress(target.address)
      const timeout = timeoutOf(options)
      return Effect.uninterruptibleMask((restore) =>
        Effect.suspend(() => {
          if (closing) return Effect.fail(transportError(key, "Closed", "the transport is closing"))
          if (probesInFlight >= MAX_PROBES_IN_FLIGHT) {
            return Effect.fail(transportError(key, "Overloaded", `${MAX_PROBES_IN_FLIGHT} listening probes are under way`))
          }
          // Taken and its release attached with nothing interruptible between them.
          probesInFlight++
          const challenge = pooledRandomBytes(PROBE_CHALLENGE_BYTES)
          // A node met by datagram proves itself with a MAC under the pair's key (core `ListeningProbe`).
          const found = datagrams?.pairFor(target)
          const pair = found === undefined || datagrams === undefined ? undefined : {
            probe: {
              challenge,
              prober: { staticKey: datagrams.staticKey, nodeId: identity.nodeId },
              listener: { staticKey: found.peerStaticKey, nodeId: target.nodeId }
            },
            mac: (statement: Uint8Array) => hmacSha256(found.probeKey, statement)
          }
          const opening = pair === undefined ? probeOpening(challenge) : pairProbeOpening(pair.probe, pair.mac)
          const probe = Effect.flatMap(
            probeExchange(target.address, opening, key, timeout),
            (answer) => probeVerdict(target, challenge, answer, key, pair)
          )
          return restore(probe).pipe(Effect.ensuring(Effect.sync(() => {
            probesInFlight--
          })))
        })
      )
    }

    const serve = registry.install

    const relayCircuits = (gate: CircuitGate): Effect.Effect<void, never, Scope.Scope> =>
      Effect.acquireRelease(Effect.sync(() => splicer.setGate(gate)), () => Effect.sync(() => splicer.setGate(undefined)))

    /**
     * A connection this node dials but serves as if it had accepted it (a
     * circuit offered through a relay, or the answering end of a hole
     * punch): `connect` opens it, the peer runs the handshake as the caller
     * and must prove `caller`'s id, and `callerAs` is the peer its requests
     * come from; `lifecycle` hears when it is established and when it ended.
     * It takes a place in the outbound budget (this node dialled).
     * Completes once the secure channel is up; the connection then lives on its own.
     */
    const serveDialled = (
      key: string,
      connect: Effect.Effect<ByteStream, TransportError>,
      caller: NodeId,
      callerAs: (nodeId: NodeId) => AuthenticatedPeer,
      lifecycle?: { readonly established: (record: Inbound) => void; readonly ended: (record: Inbound) => void }
    ): Effect.Effect<void, TransportError> =>
      Effect.suspend(() => {
        if (closing) return Effect.fail(transportError(key, "Closed", "the transport is closing"))
        // Taken and handed to the connection's life with no step between them where a timeout could
        // interrupt this fiber and leave the place taken for good.
        const reserved = pool.reserve(key)
        if (Either.isLeft(reserved)) return Effect.fail(reserved.left)
        const ticket = reserved.right
        const established = Deferred.unsafeMake<void, TransportError>(FiberId.none)
        const life = Effect.gen(function*() {
          const raw = yield* connect
          const record = addInbound(ticket, raw.remoteHost, raw)
          return yield* Effect.gen(function*() {
            // This node answers the handshake: the peer asked for this connection and speaks first.
            const session = yield* respond({ stream: raw, self: secureSelf, verify }).pipe(
              Effect.timeoutFail({
                duration: circuitSetupTimeout,
                onTimeout: () => new HandshakeError({ detail: "no handshake in time" })
              }),
              Effect.mapError((error) => transportError(key, "HandshakeFailed", error.detail))
            )
            if (session.nodeId !== caller) {
              return yield* transportError(key, "IdentityMismatch", `expected ${caller}, ${session.nodeId} came`)
            }
            yield* Deferred.succeed(established, undefined)
            lifecycle?.established(record)
            return yield* serveAuthenticated(record, session.stream, callerAs(session.nodeId))
          }).pipe(Effect.ensuring(Effect.zipRight(Effect.sync(() => lifecycle?.ended(record)), releaseInbound(record))))
        })
        runFork(life.pipe(
          // Every ending completes `established` (a defect too), so whoever awaits it is never left waiting.
          Effect.catchAllCause((cause) => {
            const error = Cause.failureOption(cause)
            const failure = error._tag === "None"
              ? transportError(key, "Closed", Cause.isInterruptedOnly(cause) ? "the transport is closing" : "the connection failed")
              : error.value instanceof TransportError
              ? error.value
              : transportError(key, error.value.reason, error.value.detail)
            return Effect.zipRight(
              Deferred.fail(established, failure),
              Effect.logDebug("dialled connection served as inbound closed", failure.message, Cause.isFailType(cause) ? "" : cause)
            )
          }),
          Effect.ensuring(Effect.sync(() => ledger.release(ticket)))
        ))
        return Deferred.await(established)
      })

    const acceptCircuit = (
      relay: RelayHint,
      token: string,
      caller: NodeId,
      callerHost?: string
    ): Effect.Effect<void, TransportError> => {
      const key = `circuit from ${caller.slice(0, 12)} via ${formatAddress(relay.address)}`
      const tokenBytes = fromHex(token)
      if (tokenBytes === undefined || tokenBytes.length !== CIRCUIT_TOKEN_BYTES) {
        return Effect.fail(transportError(key, "ProtocolViolation", "a circuit token is 16 bytes of hex"))
      }
      // Circuits still being set up count as served: each holds an outbound place already, for up to
      // the setup timeout. A relay that offers many and never speaks on their legs may take the circuits'
      // share of one relay, never more; a caller whose leg never comes (through an honest relay) holds
      // two, so it cannot stop other callers reaching this node through that relay.
      const pair = `${relay.relayId} ${caller}`
      const admit = (): string | undefined => {
        if (countOf(setupsByCaller, pair) >= MAX_CIRCUIT_SETUPS_PER_CALLER) {
          return `${MAX_CIRCUIT_SETUPS_PER_CALLER} circuits of this caller through this relay are being set up already`
        }
        if (countOf(setupsByRelay, relay.relayId) >= maxSetupsPerRelay) {
          return `${maxSetupsPerRelay} circuits through this relay are being set up already`
        }
        if (servedCircuits.size + setupsTotal >= maxServedCircuits) {
          const idlest = leastRecentlyActive(servedCircuits, idleSince)
          if (idlest === undefined) return `${maxServedCircuits} circuits are served or being set up already, all busy`
          servedCircuits.delete(idlest)
          idlest.connection?.close("Closed", "evicted to make room for another circuit")
        }
        countUp(setupsByCaller, pair)
        countUp(setupsByRelay, relay.relayId)
        setupsTotal++
        return undefined
      }
      const connect = Effect.tap(connectTo(relay.address, key), (raw) => raw.write(circuitOpening(tokenBytes)))
      // The caller is reached only through the relay: port 0 keeps it out of routing tables. Its host,
      // as the relay saw it, is where a hole punch may reach it.
      const setUp = serveDialled(key, connect, caller, (nodeId) => ({
        nodeId,
        address: { host: relay.address.host, port: 0 },
        relayedBy: relay.relayId,
        ...(callerHost === undefined ? {} : { observedHost: callerHost })
      }), {
        established: (record) => servedCircuits.add(record),
        ended: (record) => servedCircuits.delete(record)
      })
      // Counted and given back around the setup, whatever ends it.
      return Effect.acquireUseRelease(
        Effect.sync(admit),
        (refusal) => refusal === undefined ? setUp : Effect.fail(transportError(key, "Overloaded", refusal)),
        (refusal) =>
          refusal === undefined
            ? Effect.sync(() => {
              countDown(setupsByCaller, pair)
              countDown(setupsByRelay, relay.relayId)
              setupsTotal--
            })
            : Effect.void
      )
    }

    /**
     * The circuits this node accepted through its relays and serves. Each
     * holds a place in the outbound budget (this node dialled the relay), so
     * callers asking through relays may take at most half of it (64 of 128):
     * the rest stays for the node's own calls. When all are taken, the idlest
     * gives way to a new caller; when all are busy, the new one is refused.
     */
    const servedCircuits = new Set<Inbound>()
    const maxServedCircuits = Math.max(1, Math.floor(ledger.limits.maxOutbound / 2))
    /**
     * Circuits being set up (dialled, handshake not done), by relay and
     * caller, by relay, and in total: they count towards `maxServedCircuits`.
     * Bound: at most `maxServedCircuits` in total, half of it per relay,
     * `MAX_CIRCUIT_SETUPS_PER_CALLER` per caller through one relay.
     */
    const setupsByCaller = new Map<string, number>()
    const setupsByRelay = new Map<NodeId, number>()
    const maxSetupsPerRelay = Math.max(1, Math.floor(maxServedCircuits / 2))
    let setupsTotal = 0

    /** The punched connections this node serves, by peer (one each; see `MAX_SERVED_PUNCHES`). */
    const servedPunches = new Map<NodeId, Inbound>()

    const punch = (plan: PunchPlan): Effect.Effect<void, TransportError> =>
      Effect.suspend(() => {
        const address = { host: plan.host, port: plan.port }
        const key = `${plan.peer.slice(0, 12)} punched at ${formatAddress(address)}`
        // Never a name to resolve: only an IP address is dialled.
        if (net.isIP(plan.host) === 0) return Effect.fail(transportError(key, "Unreachable", "a punch dials IP addresses only"))
        if (plan.role === "Responder") {
          if (servedPunches.size >= MAX_SERVED_PUNCHES && !servedPunches.has(plan.peer)) {
            return Effect.fail(transportError(key, "Overloaded", `${MAX_SERVED_PUNCHES} punched connections are served already`))
          }
          // The peer reached through its NAT's mapping, never dialled again: port 0, as for a relayed one.
          // A newer punched connection from the same peer replaces the older.
          return serveDialled(
            key,
            connectSimultaneously(address, plan.localPort, plan.withinMillis, key),
            plan.peer,
            (nodeId) => ({ nodeId, address: { host: plan.host, port: 0 }, observedHost: plan.host }),
            {
              established: (record) => {
                const previous = servedPunches.get(plan.peer)
                servedPunches.set(plan.peer, record)
                previous?.connection?.close("Closed", "replaced by a newer punched connection from the same peer")
              },
              ended: (record) => {
                if (servedPunches.get(plan.peer) === record) servedPunches.delete(plan.peer)
              }
            }
          )
        }
        if (closing) return Effect.fail(transportError(key, "Closed", "the transport is closing"))
        if (pool.has(punchedKey(plan.peer))) {
          return Effect.fail(transportError(key, "Overloaded", "a direct connection to this peer is open or opening"))
        }
        // `connectOutbound` checks the peer's id before the connection is handed out.
        return Effect.asVoid(pool.dial(punchedKey(plan.peer), {
          address,
          circuit: undefined,
          punch: { peer: plan.peer, localPort: plan.localPort, withinMillis: plan.withinMillis }
        }))
      })

    const stats = Effect.sync((): TcpTransportStats => {
      const snapshot = ledger.snapshot()
      return {
        inbound: inbound.size,
        pending: snapshot.pending,
        outbound: pool.stats().open,
        accepted,
        refused,
        refusedBy: snapshot.byReason,
        rateLimited: requestLimiter.refusals(),
        dialled: pool.stats().dialled,
        bufferedBytes: inputBudget.held,
        circuits: splicer.stats(),
        datagrams: datagrams?.stats()
      }
    })

    /** Only the limits that refused something, so `status` stays short on a quiet node. */
    const nonZero = (counts: Readonly<Record<string, number>>): Record<string, number> =>
      Object.fromEntries(Object.entries(counts).filter(([, count]) => count > 0))

    const health = Effect.zipWith(stats, portMapping === undefined ? Effect.succeed(undefined) : portMapping.state, (current, mapping): TransportHealth => ({
      inbound: current.inbound,
      pending: current.pending,
      outbound: current.outbound,
      refusedConnections: nonZero(current.refusedBy),
      rateLimited: nonZero(current.rateLimited),
      ...(current.circuits.bytesRelayed === 0 ? {} : { bytesRelayed: current.circuits.bytesRelayed }),
      ...(mapping === undefined ? {} : { portMapping: mapping })
    }))

    return {
      // Read at each use: a port mapping made, renewed elsewhere or lapsed changes it.
      get localAddress() {
        return localAddress
      },
      send,
      proveListening,
      serve,
      stats,
      health,
      relayCircuits,
      acceptCircuit,
      relayedConnections: Stream.fromPubSub(relayedUp),
      punch
    }
  })

/** The TCP `Transport` for the lifetime of the layer. */
export const layer = (config: TcpTransportConfig): Layer.Layer<Transport, TransportStartError, Identity | Signatures> =>
  Layer.scoped(Transport, make(config))

/** The TCP transport's constructors. */
export const TcpTransport = { make, layer }
