/**
 * Asks the home router to forward a port to this node, with NAT-PMP over UDP
 * (RFC 6886; PCP routers such as miniupnpd answer it too), so a node behind
 * a router that allows it is reachable directly: once mapped, the node tells
 * peers the router's outside address and port (core `advertisedAddress`),
 * their dial-backs pass the router, and the node is a public DHT server.
 *
 * The router is asked once at start, within a short bound (`startBudget`,
 * 1.5 s by default: a node without such a router starts at most that much
 * later, and usually at once, since a router that does not listen answers
 * with an ICMP error). The mapping is renewed at half its lifetime, removed
 * when the scope closes, and every failure is a `PortMappingError` that is
 * logged and shown in `status`, never fatal. Answers are decoded with core
 * `NatPmpAnswerFromBytes`; the socket is connected to the gateway, so the
 * kernel drops datagrams from anyone else, and what does not decode is
 * ignored.
 *
 * The parts shared with UPnP IGD (`src/platform/UpnpIgd.ts`) are here too:
 * `PortMappingError`, a protocol's `MappingSession`, and `runPortMapping`,
 * which keeps a mapping (state, renewal, removal) whichever protocol made
 * it. A node uses `routerPortMapper` (`src/platform/RouterPortMapping.ts`):
 * NAT-PMP, else UPnP IGD.
 *
 * Why our own client and not a package: see docs/decisions.md.
 *
 * @since 0.2.0
 */
import { Clock, Duration, Effect, Either, ExecutionStrategy, Option, Queue, Ref, Schema, Scope } from "effect"
import { createSocket, type Socket } from "node:dgram"
import { readFile } from "node:fs/promises"
import { type Address, formatAddress } from "../core/Contact.js"
import {
  advertisedAddress,
  externalAddressRequest,
  type GrantedMapping,
  isPublicIpv4,
  mapTcpRequest,
  NAT_PMP_PORT,
  type NatPmpAnswer,
  NatPmpAnswerFromBytes,
  opcodeAnswered,
  opcodeOf,
  type PortMappingState,
  renewalDelayMs,
  REQUESTED_LIFETIME_SECONDS,
  RESULT_CODES,
  retransmitWaits,
  retryDelayMs
} from "../core/PortMapping.js"

/** Why no mapping was made, renewed or removed. */
export class PortMappingError extends Schema.TaggedError<PortMappingError>()("PortMappingError", {
  /** The router asked, `host:port` (empty when none is known). */
  gateway: Schema.String,
  /** The protocol that failed (absent: NAT-PMP, or before any was asked; "both": NAT-PMP, then UPnP IGD). */
  protocol: Schema.optional(Schema.Literal("NAT-PMP", "UPnP-IGD", "both")),
  reason: Schema.Literal(
    /** No default route, so no router to ask. */
    "NoGateway",
    /** Nothing answered within the time allowed, or the router said nothing listens there (ICMP). */
    "NoAnswer",
    /** The router answered with an error result code (port mapping off, or denied). */
    "Refused",
    /** The router's outside address is private or shared: another NAT sits upstream. */
    "NotPublic",
    /** The router (or a host pretending to be it) answered something unreadable or too large. */
    "BadAnswer",
    /** The UDP socket failed. */
    "SocketError"
  ),
  detail: Schema.String,
  /** The UPnP error code of a SOAP fault (e.g. 718: the port is mapped for another host). */
  upnpErrorCode: Schema.optional(Schema.Int)
}) {
  override get message(): string {
    const at = this.gateway === "" ? "" : ` at ${this.gateway}`
    const protocol = this.protocol === "UPnP-IGD" ? "UPnP IGD" : this.protocol === "both" ? "NAT-PMP/PCP or UPnP IGD" : "NAT-PMP/PCP"
    switch (this.reason) {
      case "NoGateway":
        return `port mapping: no router to ask (${this.detail})`
      case "NoAnswer":
        return `port mapping: the router${at} does not offer ${protocol} (${this.detail})`
      case "Refused":
        return `port mapping: the router${at} refused (${this.detail})`
      case "NotPublic":
        return `port mapping: the router${at} is itself behind a NAT (${this.detail}); a mapping there reaches nobody`
      case "BadAnswer":
        return `port mapping: the ${protocol} answer${at} is unusable (${this.detail})`
      case "SocketError":
        return `port mapping: ${this.detail}`
    }
  }
}

/** What the transport gives the mapper: the address it listens on, and where to report the outside address. */
export interface PortMappingRequest {
  /** The bound listen address (its port is the one mapped). */
  readonly bound: Address
  /** Called with the outside address once mapped (and when it changes), and with `undefined` when it lapses. */
  readonly onExternal: (external: Address | undefined) => void
}

/** A running port mapping: its state for `status`. Removed when the scope it was made in closes. */
export interface PortMappingHandle {
  readonly state: Effect.Effect<PortMappingState>
}

/** Starts port mapping for a bound listen address, in a scope; never fails (failures are its state). */
export type PortMapper = (request: PortMappingRequest) => Effect.Effect<PortMappingHandle, never, Scope.Scope>

/** The longest a node's start waits for its router, all protocols together. */
export const DEFAULT_START_BUDGET = Duration.millis(1500)

/** Settings of the NAT-PMP client; all have defaults. */
export interface NatPmpConfig {
  /** The router to ask; default: the gateway of the default route (`/proc/net/route`). */
  readonly gateway?: string | undefined
  /** Its NAT-PMP port (default 5351). */
  readonly gatewayPort?: number | undefined
  /** The longest the start waits for the router (default 1.5 s). */
  readonly startBudget?: Duration.DurationInput | undefined
  /** The lifetime asked for (default two hours). */
  readonly lifetimeSeconds?: number | undefined
}

/**
 * The gateway of the IPv4 default route in the text of Linux's
 * `/proc/net/route` (addresses in hex, least significant byte first), or
 * `undefined` when there is none (a host on the internet with only on-link
 * routes, or a malformed table).
 */
export const defaultGatewayFromRouteTable = (table: string): string | undefined => {
  for (const line of table.split("\n").slice(1)) {
    const [, destination, gateway, flags, , , , mask] = line.trim().split(/\s+/)
    if (destination !== "00000000" || mask !== "00000000" || gateway === undefined || !/^[0-9A-Fa-f]{8}$/.test(gateway)) continue
    // RTF_UP (1) and RTF_GATEWAY (2).
    if (flags === undefined || (Number.parseInt(flags, 16) & 3) !== 3) continue
    const value = Number.parseInt(gateway, 16)
    return [value & 255, (value >>> 8) & 255, (value >>> 16) & 255, value >>> 24].join(".")
  }
  return undefined
}

const defaultGateway: Effect.Effect<string, PortMappingError> = Effect.tryPromise({
  try: () => readFile("/proc/net/route", "utf8"),
  catch: () => new PortMappingError({ gateway: "", reason: "NoGateway", detail: "no /proc/net/route to find the default gateway in" })
}).pipe(
  Effect.flatMap((table) => {
    const gateway = defaultGatewayFromRouteTable(table)
    return gateway === undefined
      ? Effect.fail(new PortMappingError({ gateway: "", reason: "NoGateway", detail: "no default route" }))
      : Effect.succeed(gateway)
  })
)

/** What arrives from the gateway: an answer that decoded, or ICMP's "port unreachable" (nothing listens there). */
type Arrival = NatPmpAnswer | "PortUnreachable"

/** A UDP socket connected to the gateway, and what arrived on it (newest kept when it piles up). */
const openExchange = (gateway: string, port: number, localHost: string) =>
  Effect.gen(function*() {
    const key = `${gateway}:${port}`
    const arrivals = yield* Effect.acquireRelease(Queue.sliding<Arrival>(16), Queue.shutdown)
    const socket = yield* Effect.acquireRelease(
      Effect.async<Socket, PortMappingError>((resume) => {
        const socket = createSocket("udp4")
        const onError = (error: Error) => {
          socket.close()
          resume(Effect.fail(new PortMappingError({ gateway: key, reason: "SocketError", detail: error.message })))
        }
        socket.once("error", onError)
        socket.bind({ address: localHost, port: 0 }, () => {
          socket.connect(port, gateway, () => {
            socket.off("error", onError)
            // ICMP "port unreachable" reaches a connected socket as ECONNREFUSED: the waiting request gives up at once.
            socket.on("error", (error: NodeJS.ErrnoException) => {
              if (error.code === "ECONNREFUSED") Queue.unsafeOffer(arrivals, "PortUnreachable")
            })
            socket.on("message", (message) => {
              const decoded = Schema.decodeUnknownEither(NatPmpAnswerFromBytes)(new Uint8Array(message))
              // Garbage is dropped here: only answers that decode are ever looked at.
              if (Either.isRight(decoded)) Queue.unsafeOffer(arrivals, decoded.right)
            })
            resume(Effect.succeed(socket))
          })
        })
      }),
      (socket) => Effect.sync(() => socket.close())
    )

    /**
     * Sends `request` and waits for the answer to it, retransmitting at 250
     * ms, 500 ms, … within `budget` (RFC 6886 3.1). Stale answers (to an
     * earlier request) are skipped.
     */
    const exchange = (request: Uint8Array, budget: Duration.Duration): Effect.Effect<NatPmpAnswer, PortMappingError> =>
      Effect.gen(function*() {
        yield* Queue.takeAll(arrivals)
        const opcode = opcodeOf(request)
        const matching: Effect.Effect<NatPmpAnswer, PortMappingError> = Effect.flatMap(
          Queue.take(arrivals),
          (arrival): Effect.Effect<NatPmpAnswer, PortMappingError> =>
            arrival === "PortUnreachable"
              ? Effect.fail(new PortMappingError({ gateway: key, reason: "NoAnswer", detail: "nothing listens on its NAT-PMP port" }))
              : opcodeAnswered(arrival) === opcode
              ? Effect.succeed(arrival)
              : matching
        )
        for (const wait of retransmitWaits(Duration.toMillis(budget))) {
          yield* Effect.async<void>((resume) => {
            socket.send(request, () => resume(Effect.void))
          })
          const answer = yield* Effect.timeoutOption(matching, Duration.millis(wait))
          if (Option.isSome(answer)) return answer.value
        }
        return yield* new PortMappingError({ gateway: key, reason: "NoAnswer", detail: `no answer within ${Duration.format(budget)}` })
      })
    return { key, exchange }
  })

const refusal = (gateway: string, answer: NatPmpAnswer & { readonly _tag: "Refused" }) =>
  new PortMappingError({
    gateway,
    reason: "Refused",
    detail: `result ${answer.resultCode}: ${RESULT_CODES[answer.resultCode] ?? "unknown result code"}`
  })

/** What a router granted: where peers reach the node, and for how long (0: permanent, until removed). */
export interface Grant {
  readonly external: Address
  readonly lifetimeSeconds: number
}

/**
 * One protocol's conversation with one router, for the mapping of one port:
 * `map` asks for (or renews) it, suggesting `suggestedPort` outside, within
 * `budget`; `remove` takes it away again.
 */
export interface MappingSession {
  readonly protocol: "NAT-PMP" | "UPnP-IGD"
  /** The router asked, `host:port` (UPnP IGD: its control URL's). */
  readonly key: string
  readonly map: (suggestedPort: number, budget: Duration.Duration) => Effect.Effect<Grant, PortMappingError>
  readonly remove: (budget: Duration.Duration) => Effect.Effect<void, PortMappingError>
}

/** A NAT-PMP session with `gateway`, for TCP port `internalPort`, asking `lifetime` seconds. */
export const openNatPmpSession = (gateway: string, port: number, localHost: string, internalPort: number, lifetime: number) =>
  Effect.map(openExchange(gateway, port, localHost), ({ exchange, key }): MappingSession => ({
    protocol: "NAT-PMP",
    key,
    map: (suggestedPort, budget) =>
      Effect.gen(function*() {
        const outside = yield* exchange(externalAddressRequest(), budget)
        if (outside._tag === "Refused") return yield* refusal(key, outside)
        if (outside._tag !== "ExternalAddress") {
          return yield* new PortMappingError({ gateway: key, reason: "NoAnswer", detail: "no outside address in the answer" })
        }
        if (!isPublicIpv4(outside.address)) {
          return yield* new PortMappingError({ gateway: key, reason: "NotPublic", detail: `its outside address is ${outside.address}` })
        }
        const mapped = yield* exchange(mapTcpRequest(internalPort, suggestedPort, lifetime), budget)
        if (mapped._tag === "Refused") return yield* refusal(key, mapped)
        if (mapped._tag !== "Mapped" || mapped.lifetimeSeconds === 0 || mapped.externalPort === 0) {
          return yield* new PortMappingError({ gateway: key, reason: "Refused", detail: "the answer grants no mapping" })
        }
        return { external: { host: outside.address, port: mapped.externalPort }, lifetimeSeconds: mapped.lifetimeSeconds }
      }),
    remove: (budget) =>
      Effect.flatMap(exchange(mapTcpRequest(internalPort, 0, 0), budget), (answer) =>
        answer._tag === "Mapped"
          ? Effect.void
          : Effect.fail(new PortMappingError({ gateway: key, reason: "Refused", detail: "the removal was not confirmed" })))
  }))

/**
 * How long a permanent mapping (lifetime 0, a UPnP router that takes no
 * other) counts as granted before it is asked for again: it is re-asked at
 * half this, in case the router restarted and forgot it.
 */
export const PERMANENT_RECHECK_SECONDS = 3600

/**
 * Runs a port mapping once `first` made one: its state for `status`, the
 * address told to the transport, renewal at half its lifetime (failed
 * renewals retried until it lapses, then every 10 minutes, as the router
 * may be back), and its removal when the scope closes. A failed `first` is
 * the state (`Unavailable` with the reason), never a failure.
 */
export const runPortMapping = (
  request: PortMappingRequest,
  first: Effect.Effect<{ readonly session: MappingSession; readonly grant: Grant; readonly askedAt: number }, PortMappingError, Scope.Scope>
): Effect.Effect<PortMappingHandle, never, Scope.Scope> =>
  Effect.gen(function*() {
    const state = yield* Ref.make<PortMappingState>({ _tag: "Unavailable", reason: "asking the router" })
    const granted = yield* Ref.make<{ readonly session: MappingSession; readonly mapping: GrantedMapping } | undefined>(undefined)
    const handle: PortMappingHandle = { state: Ref.get(state) }
    const mappedState = (session: MappingSession, mapping: GrantedMapping): PortMappingState => ({
      _tag: "Mapped",
      protocol: session.protocol,
      external: formatAddress(mapping.external),
      gateway: session.key,
      expiresAt: mapping.expiresAt
    })

    /** Records a grant: state, what peers are told, a log line when the outside address is new. Returns the renewal's lifetime. */
    const record = (session: MappingSession, grant: Grant, askedAt: number) =>
      Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        const lifetime = grant.lifetimeSeconds === 0 ? PERMANENT_RECHECK_SECONDS : grant.lifetimeSeconds
        const mapping: GrantedMapping = { external: grant.external, internalPort: request.bound.port, expiresAt: now + lifetime * 1000 }
        const before = yield* Ref.getAndSet(granted, { session, mapping })
        yield* Ref.set(state, mappedState(session, mapping))
        // The core decides what peers are told (a live mapping with a public outside address, else the own address).
        const told = advertisedAddress(request.bound, mapping, now)
        request.onExternal(told === request.bound ? undefined : told)
        if (before === undefined || formatAddress(before.mapping.external) !== formatAddress(mapping.external)) {
          const duration = grant.lifetimeSeconds === 0 ? "permanently, removed when the node stops" : `for ${Duration.format(Duration.seconds(grant.lifetimeSeconds))}`
          yield* Effect.logInfo(
            `port mapping: the router at ${session.key} forwards ${formatAddress(mapping.external)} to this node's port ` +
              `${request.bound.port} (${session.protocol}, ${duration}, answered in ${now - askedAt} ms); ` +
              "peers are told that address"
          )
        }
        return lifetime
      })

    // The sessions' sockets live in a scope of their own, closed after the removal below has used them.
    const sessionScope = yield* Scope.fork(yield* Effect.scope, ExecutionStrategy.sequential)
    // Removed when the node stops (registered before the first request, so an interrupted start removes it too).
    yield* Effect.addFinalizer(() =>
      Effect.gen(function*() {
        const current = yield* Ref.get(granted)
        if (current === undefined) return
        request.onExternal(undefined)
        const removed = yield* Effect.either(current.session.remove(Duration.millis(750)))
        yield* Either.isRight(removed)
          ? Effect.logInfo(`port mapping: removed the mapping at ${current.session.key}`)
          : Effect.logWarning(
            `port mapping: could not remove the mapping at ${current.session.key} (${removed.left.detail}); ` +
              "it lapses by itself within its lifetime"
          )
      })
    )

    const started = yield* Effect.either(Scope.extend(first, sessionScope))
    if (Either.isLeft(started)) {
      yield* Ref.set(state, { _tag: "Unavailable", reason: started.left.message })
      yield* Effect.logInfo(started.left.message)
      return handle
    }
    const { session } = started.right
    const firstLifetime = yield* record(session, started.right.grant, started.right.askedAt)

    const renewals = Effect.gen(function*() {
      let delay = renewalDelayMs(firstLifetime)
      let failures = 0
      for (;;) {
        yield* Effect.sleep(Duration.millis(delay))
        const current = yield* Ref.get(granted)
        const suggested = current?.mapping.external.port ?? request.bound.port
        const askedAt = yield* Clock.currentTimeMillis
        const renewed = yield* Effect.either(session.map(suggested, Duration.seconds(4)))
        if (Either.isRight(renewed)) {
          failures = 0
          delay = renewalDelayMs(yield* record(session, renewed.right, askedAt))
          continue
        }
        failures++
        const now = yield* Clock.currentTimeMillis
        const remaining = current === undefined ? 0 : current.mapping.expiresAt - now
        if (remaining <= 0 && current !== undefined) {
          yield* Ref.set(granted, undefined)
          request.onExternal(undefined)
          yield* Effect.logWarning(`${renewed.left.message}; the mapping lapsed, peers are told the node's own address again`)
        }
        const next: PortMappingState = remaining > 0 && current !== undefined
          ? mappedState(session, current.mapping)
          : { _tag: "Unavailable", reason: renewed.left.message }
        yield* Ref.set(state, next)
        delay = retryDelayMs(failures, remaining)
      }
    })
    yield* Effect.forkScoped(renewals)
    return handle
  })

/** The gateway `config` names, else the default route's. */
export const gatewayToAsk = (configured: string | undefined): Effect.Effect<string, PortMappingError> =>
  configured === undefined ? defaultGateway : Effect.succeed(configured)

/**
 * A NAT-PMP port mapper (see the module comment). Its handle's state is
 * `Mapped` while a mapping lives, `Unavailable` with the reason otherwise.
 */
export const natPmp = (config: NatPmpConfig = {}): PortMapper => (request) =>
  runPortMapping(
    request,
    Effect.gen(function*() {
      const gateway = yield* gatewayToAsk(config.gateway)
      const askedAt = yield* Clock.currentTimeMillis
      const mapped = yield* mapOverNatPmp(config, gateway, request, Duration.decode(config.startBudget ?? DEFAULT_START_BUDGET))
      return { ...mapped, askedAt }
    })
  )

/**
 * Opens a NAT-PMP session with `gateway` (the port and lifetime `config`
 * names, else the defaults) and asks it to map the request's bound port
 * within `budget`: the NAT-PMP step of `natPmp` and of the router mapper.
 */
export const mapOverNatPmp = (config: NatPmpConfig, gateway: string, request: PortMappingRequest, budget: Duration.Duration) =>
  Effect.gen(function*() {
    const session = yield* openNatPmpSession(
      gateway,
      config.gatewayPort ?? NAT_PMP_PORT,
      request.bound.host,
      request.bound.port,
      config.lifetimeSeconds ?? REQUESTED_LIFETIME_SECONDS
    )
    return { session, grant: yield* session.map(request.bound.port, budget) }
  })
