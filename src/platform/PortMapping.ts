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
 * Why our own client and not a package: see docs/decisions.md.
 *
 * @since 0.2.0
 */
import { Clock, Duration, Effect, Either, Option, Queue, Ref, Schema, type Scope } from "effect"
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
  reason: Schema.Literal(
    /** No default route, so no router to ask. */
    "NoGateway",
    /** Nothing answered within the time allowed, or the router said nothing listens there (ICMP). */
    "NoAnswer",
    /** The router answered with an error result code (port mapping off, or denied). */
    "Refused",
    /** The router's outside address is private or shared: another NAT sits upstream. */
    "NotPublic",
    /** The UDP socket failed. */
    "SocketError"
  ),
  detail: Schema.String
}) {
  override get message(): string {
    const at = this.gateway === "" ? "" : ` at ${this.gateway}`
    switch (this.reason) {
      case "NoGateway":
        return `port mapping: no router to ask (${this.detail})`
      case "NoAnswer":
        return `port mapping: the router${at} does not offer NAT-PMP/PCP (${this.detail})`
      case "Refused":
        return `port mapping: the router${at} refused (${this.detail})`
      case "NotPublic":
        return `port mapping: the router${at} is itself behind a NAT (${this.detail}); a mapping there reaches nobody`
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

/**
 * A NAT-PMP port mapper (see the module comment). Its handle's state is
 * `Mapped` while a mapping lives, `Unavailable` with the reason otherwise.
 */
export const natPmp = (config: NatPmpConfig = {}): PortMapper => (request) =>
  Effect.gen(function*() {
    const startBudget = Duration.decode(config.startBudget ?? Duration.millis(1500))
    const lifetime = config.lifetimeSeconds ?? REQUESTED_LIFETIME_SECONDS
    const state = yield* Ref.make<PortMappingState>({ _tag: "Unavailable", reason: "asking the router" })
    const granted = yield* Ref.make<GrantedMapping | undefined>(undefined)
    const handle: PortMappingHandle = { state: Ref.get(state) }
    const unavailable = (error: PortMappingError) =>
      Effect.zipRight(Ref.set(state, { _tag: "Unavailable", reason: error.message }), Effect.logInfo(error.message))

    const opened = yield* Effect.either(Effect.gen(function*() {
      const gateway = config.gateway ?? (yield* defaultGateway)
      return yield* openExchange(gateway, config.gatewayPort ?? NAT_PMP_PORT, request.bound.host)
    }))
    if (Either.isLeft(opened)) {
      yield* unavailable(opened.left)
      return handle
    }
    const { key, exchange } = opened.right

    /** Asks for the outside address, then the mapping (suggesting `suggestedPort` outside). */
    const map = (suggestedPort: number, budget: Duration.Duration) =>
      Effect.gen(function*() {
        const askedAt = yield* Clock.currentTimeMillis
        const outside = yield* exchange(externalAddressRequest(), budget)
        if (outside._tag === "Refused") return yield* refusal(key, outside)
        if (outside._tag !== "ExternalAddress") {
          return yield* new PortMappingError({ gateway: key, reason: "NoAnswer", detail: "no outside address in the answer" })
        }
        if (!isPublicIpv4(outside.address)) {
          return yield* new PortMappingError({ gateway: key, reason: "NotPublic", detail: `its outside address is ${outside.address}` })
        }
        const mapped = yield* exchange(mapTcpRequest(request.bound.port, suggestedPort, lifetime), budget)
        if (mapped._tag === "Refused") return yield* refusal(key, mapped)
        if (mapped._tag !== "Mapped" || mapped.lifetimeSeconds === 0 || mapped.externalPort === 0) {
          return yield* new PortMappingError({ gateway: key, reason: "Refused", detail: "the answer grants no mapping" })
        }
        const now = yield* Clock.currentTimeMillis
        const mapping: GrantedMapping = {
          external: { host: outside.address, port: mapped.externalPort },
          internalPort: request.bound.port,
          expiresAt: now + mapped.lifetimeSeconds * 1000
        }
        const before = yield* Ref.getAndSet(granted, mapping)
        yield* Ref.set(state, { _tag: "Mapped", protocol: "NAT-PMP", external: formatAddress(mapping.external), gateway: key, expiresAt: mapping.expiresAt })
        // The core decides what peers are told (a live mapping with a public outside address, else the own address).
        const told = advertisedAddress(request.bound, mapping, now)
        request.onExternal(told === request.bound ? undefined : told)
        if (before === undefined || formatAddress(before.external) !== formatAddress(mapping.external)) {
          yield* Effect.logInfo(
            `port mapping: the router at ${key} forwards ${formatAddress(mapping.external)} to this node's port ` +
              `${request.bound.port} (NAT-PMP, for ${Duration.format(Duration.seconds(mapped.lifetimeSeconds))}, answered in ${now - askedAt} ms); ` +
              "peers are told that address"
          )
        }
        return mapped.lifetimeSeconds
      })

    // Removed when the node stops (registered before the first request, so an interrupted start removes it too).
    yield* Effect.addFinalizer(() =>
      Effect.gen(function*() {
        if ((yield* Ref.get(granted)) === undefined) return
        request.onExternal(undefined)
        const removed = yield* Effect.either(exchange(mapTcpRequest(request.bound.port, 0, 0), Duration.millis(750)))
        yield* Either.isRight(removed) && removed.right._tag === "Mapped"
          ? Effect.logInfo(`port mapping: removed the mapping at ${key}`)
          : Effect.logWarning(`port mapping: could not remove the mapping at ${key}; it lapses by itself within its lifetime`)
      })
    )

    const first = yield* Effect.either(map(request.bound.port, startBudget))
    if (Either.isLeft(first)) {
      yield* unavailable(first.left)
      return handle
    }

    // Renewed at half its lifetime; failed renewals are retried until the mapping lapses, then
    // (the router may be back) every 10 minutes.
    const renewals = Effect.gen(function*() {
      let delay = renewalDelayMs(first.right)
      let failures = 0
      for (;;) {
        yield* Effect.sleep(Duration.millis(delay))
        const current = yield* Ref.get(granted)
        const suggested = current?.external.port ?? request.bound.port
        const renewed = yield* Effect.either(map(suggested, Duration.seconds(4)))
        if (Either.isRight(renewed)) {
          failures = 0
          delay = renewalDelayMs(renewed.right)
          continue
        }
        failures++
        const now = yield* Clock.currentTimeMillis
        const remaining = current === undefined ? 0 : current.expiresAt - now
        if (remaining <= 0 && current !== undefined) {
          yield* Ref.set(granted, undefined)
          request.onExternal(undefined)
          yield* Effect.logWarning(`${renewed.left.message}; the mapping lapsed, peers are told the node's own address again`)
        }
        const next: PortMappingState = remaining > 0 && current !== undefined
          ? { _tag: "Mapped", protocol: "NAT-PMP", external: formatAddress(current.external), gateway: key, expiresAt: current.expiresAt }
          : { _tag: "Unavailable", reason: renewed.left.message }
        yield* Ref.set(state, next)
        delay = retryDelayMs(failures, remaining)
      }
    })
    yield* Effect.forkScoped(renewals)
    return handle
  })
