/**
 * Port mapping on the home router with NAT-PMP (RFC 6886, which PCP servers
 * such as miniupnpd also answer): the wire format of its requests and
 * answers (answers decoded with Schema: they come from the network), and the
 * pure decisions around it — whether a node should ask at all, which address
 * it tells peers once a mapping exists, when to renew, how to retransmit.
 * The UDP exchange itself lives in `src/platform/PortMapping.ts`.
 *
 * @since 0.2.0
 */
import { ParseResult, Schema } from "effect"
import { parseIp } from "./AddressGroup.js"
import { type Address, Port } from "./Contact.js"

/** The UDP port a NAT-PMP gateway listens on. */
export const NAT_PMP_PORT = 5351

/** The lifetime asked for a mapping, in seconds: RFC 6886's recommended two hours. */
export const REQUESTED_LIFETIME_SECONDS = 7200

/** The first retransmission interval (RFC 6886 3.1: 250 ms, doubling each time). */
export const FIRST_RETRANSMIT_MS = 250

/** Opcodes of requests; an answer carries the request's opcode plus 128. */
const OP_EXTERNAL_ADDRESS = 0
const OP_MAP_TCP = 2
const ANSWER_BIT = 128

/** What a gateway's result code means (RFC 6886 3.5); any other code is reported by number. */
export const RESULT_CODES: Readonly<Record<number, string>> = {
  1: "unsupported version",
  2: "not authorized or refused (port mapping disabled on the router, or denied for this address or port)",
  3: "network failure (the router has no usable outside address)",
  4: "out of resources (no ports left)",
  5: "unsupported opcode"
}

/** The request for the router's outside address. */
export const externalAddressRequest = (): Uint8Array => Uint8Array.of(0, OP_EXTERNAL_ADDRESS)

/**
 * The request to map TCP port `internalPort` of the sender for
 * `lifetimeSeconds` (0 removes the mapping, and then `suggestedExternalPort`
 * must be 0 too), suggesting `suggestedExternalPort` outside.
 */
export const mapTcpRequest = (internalPort: number, suggestedExternalPort: number, lifetimeSeconds: number): Uint8Array => {
  const bytes = new Uint8Array(12)
  const view = new DataView(bytes.buffer)
  view.setUint8(0, 0)
  view.setUint8(1, OP_MAP_TCP)
  view.setUint16(4, internalPort)
  view.setUint16(6, suggestedExternalPort)
  view.setUint32(8, lifetimeSeconds)
  return bytes
}

/** The router's outside address, and its epoch (seconds since its mapping table started). */
export const ExternalAddressAnswer = Schema.TaggedStruct("ExternalAddress", {
  epoch: Schema.NonNegativeInt,
  address: Schema.String
})

/** A TCP mapping granted (or, with lifetime 0, removed). */
export const MappedAnswer = Schema.TaggedStruct("Mapped", {
  epoch: Schema.NonNegativeInt,
  internalPort: Port,
  externalPort: Port,
  lifetimeSeconds: Schema.NonNegativeInt
})

/** The router refused a request (`resultCode`: see `RESULT_CODES`). */
export const RefusedAnswer = Schema.TaggedStruct("Refused", {
  /** The opcode of the request refused (0: outside address, 2: TCP mapping). */
  opcode: Schema.Literal(OP_EXTERNAL_ADDRESS, OP_MAP_TCP),
  resultCode: Schema.Int.pipe(Schema.between(1, 65535)),
  epoch: Schema.NonNegativeInt
})

/** A NAT-PMP answer this node asks for. */
export const NatPmpAnswer = Schema.Union(ExternalAddressAnswer, MappedAnswer, RefusedAnswer)
/** @see NatPmpAnswer */
export type NatPmpAnswer = typeof NatPmpAnswer.Type

const failure = (bytes: Uint8Array, message: string) =>
  ParseResult.fail(new ParseResult.Type(Schema.Uint8ArrayFromSelf.ast, bytes, message))

/**
 * A NAT-PMP answer from its bytes: version 0, the answer to an
 * outside-address or TCP-mapping request, long enough for its fields
 * (trailing bytes are ignored, as RFC 6886 allows for later versions).
 * Anything else (a UDP mapping answer, another version, a short or empty
 * datagram) fails to decode.
 */
export const NatPmpAnswerFromBytes = Schema.transformOrFail(Schema.Uint8ArrayFromSelf, NatPmpAnswer, {
  strict: true,
  decode: (bytes) => {
    if (bytes.length < 8) return failure(bytes, `a NAT-PMP answer has at least 8 bytes, got ${bytes.length}`)
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
    const version = view.getUint8(0)
    if (version !== 0) return failure(bytes, `NAT-PMP version 0 expected, got ${version}`)
    const opcode = view.getUint8(1) - ANSWER_BIT
    if (opcode !== OP_EXTERNAL_ADDRESS && opcode !== OP_MAP_TCP) {
      return failure(bytes, `not an answer to an outside-address or TCP-mapping request (opcode ${view.getUint8(1)})`)
    }
    const resultCode = view.getUint16(2)
    const epoch = view.getUint32(4)
    if (resultCode !== 0) return ParseResult.succeed({ _tag: "Refused" as const, opcode, resultCode, epoch })
    if (opcode === OP_EXTERNAL_ADDRESS) {
      if (bytes.length < 12) return failure(bytes, `an outside-address answer has 12 bytes, got ${bytes.length}`)
      return ParseResult.succeed({ _tag: "ExternalAddress" as const, epoch, address: Array.from(bytes.subarray(8, 12)).join(".") })
    }
    if (bytes.length < 16) return failure(bytes, `a mapping answer has 16 bytes, got ${bytes.length}`)
    return ParseResult.succeed({
      _tag: "Mapped" as const,
      epoch,
      internalPort: view.getUint16(8),
      externalPort: view.getUint16(10),
      lifetimeSeconds: view.getUint32(12)
    })
  },
  encode: (answer, _, ast) => {
    const bytes = new Uint8Array(answer._tag === "Mapped" ? 16 : answer._tag === "ExternalAddress" ? 12 : 8)
    const view = new DataView(bytes.buffer)
    view.setUint32(4, answer.epoch)
    switch (answer._tag) {
      case "Refused":
        view.setUint8(1, ANSWER_BIT + answer.opcode)
        view.setUint16(2, answer.resultCode)
        return ParseResult.succeed(bytes)
      case "ExternalAddress": {
        const ip = parseIp(answer.address)
        if (ip?.family !== 4) return ParseResult.fail(new ParseResult.Type(ast, answer, `${answer.address} is not an IPv4 address`))
        view.setUint8(1, ANSWER_BIT + OP_EXTERNAL_ADDRESS)
        bytes.set(ip.bytes, 8)
        return ParseResult.succeed(bytes)
      }
      case "Mapped":
        view.setUint8(1, ANSWER_BIT + OP_MAP_TCP)
        view.setUint16(8, answer.internalPort)
        view.setUint16(10, answer.externalPort)
        view.setUint32(12, answer.lifetimeSeconds)
        return ParseResult.succeed(bytes)
    }
  }
})

/** The opcode of the request `answer` answers. */
export const opcodeAnswered = (answer: NatPmpAnswer): number =>
  answer._tag === "Refused" ? answer.opcode : answer._tag === "ExternalAddress" ? OP_EXTERNAL_ADDRESS : OP_MAP_TCP

/** The opcode of a request's bytes. */
export const opcodeOf = (request: Uint8Array): number => request[1] ?? -1

// -- Decisions ---------------------------------------------------------------

const inRange = (bytes: Uint8Array, prefix: ReadonlyArray<number>, bits: number): boolean => {
  for (let bit = 0; bit < bits; bit++) {
    const byte = Math.floor(bit / 8)
    const mask = 0x80 >> (bit % 8)
    if (((bytes[byte] as number) & mask) !== ((prefix[byte] ?? 0) & mask)) return false
  }
  return true
}

/** IPv4 ranges no router's outside address can usefully be in: behind them sits another NAT, or nothing. */
const NOT_PUBLIC: ReadonlyArray<readonly [ReadonlyArray<number>, number]> = [
  [[0], 8], // "this network"
  [[10], 8], // RFC 1918
  [[100, 64], 10], // RFC 6598 carrier-grade NAT
  [[127], 8], // loopback
  [[169, 254], 16], // link-local
  [[172, 16], 12], // RFC 1918
  [[192, 168], 16], // RFC 1918
  [[224], 4], // multicast
  [[240], 4] // reserved, broadcast
]

/** Private ranges a node behind a home router listens in (RFC 1918 and carrier-grade NAT's shared space). */
const PRIVATE: ReadonlyArray<readonly [ReadonlyArray<number>, number]> = [
  [[10], 8],
  [[100, 64], 10],
  [[172, 16], 12],
  [[192, 168], 16]
]

const matchesAny = (host: string, ranges: ReadonlyArray<readonly [ReadonlyArray<number>, number]>): boolean => {
  const ip = parseIp(host)
  return ip?.family === 4 && ranges.some(([prefix, bits]) => inRange(ip.bytes, prefix, bits))
}

/**
 * Whether an outside address a router reports is worth telling peers: an
 * IPv4 address outside the private, shared (carrier-grade NAT), loopback,
 * link-local and multicast ranges. A router whose outside address is private
 * sits behind another NAT, where its mapping reaches nobody on the internet.
 */
export const isPublicIpv4 = (host: string): boolean => parseIp(host)?.family === 4 && !matchesAny(host, NOT_PUBLIC)

/**
 * Whether a node listening on `host` should ask its router for a mapping: it
 * listens on a private IPv4 address or on all addresses (`0.0.0.0`). A node
 * on a public address needs none, and one on loopback (tests, one machine)
 * must not send anything to a router.
 */
export const shouldAskRouter = (host: string): boolean => host === "0.0.0.0" || matchesAny(host, PRIVATE)

/**
 * Whether `host` is an IPv4 address a home router's own services may sit
 * on: a private (RFC 1918 or shared) address, or loopback (a router on this
 * machine, as in tests). A UPnP device pointing elsewhere (the internet, a
 * name to resolve) is refused before anything is fetched.
 */
export const isLanIpv4 = (host: string): boolean => matchesAny(host, [...PRIVATE, [[127], 8]])

/** A mapping the router granted: where peers reach this node, and until when (ms since the epoch). */
export interface GrantedMapping {
  readonly external: Address
  readonly internalPort: number
  readonly expiresAt: number
}

/**
 * The address to tell peers: the router's outside address and mapped port
 * while a mapping with a public outside address lives, else `own` (the
 * listen or configured address).
 */
export const advertisedAddress = (own: Address, mapping: GrantedMapping | undefined, now: number): Address =>
  mapping !== undefined && mapping.expiresAt > now && isPublicIpv4(mapping.external.host) && mapping.external.port > 0
    ? mapping.external
    : own

/** Renewals are never closer together than this (a router granting seconds would otherwise be asked in a loop). */
export const MIN_RENEWAL_MS = 30_000

/**
 * How long after a grant of `lifetimeSeconds` to renew it: at half the
 * lifetime (RFC 6886 3.3), but no sooner than `MIN_RENEWAL_MS`, nor later
 * than a minute before it lapses when the lifetime allows.
 */
export const renewalDelayMs = (lifetimeSeconds: number): number => {
  const lifetimeMs = lifetimeSeconds * 1000
  return Math.max(MIN_RENEWAL_MS, Math.min(lifetimeMs / 2, lifetimeMs - 60_000))
}

/**
 * The wait before renewal attempt `failures + 1` after `failures` failed
 * ones, with `remainingMs` left of the mapping: a minute, doubling, at most
 * half of what is left (so a few tries fit before it lapses) and at least
 * `MIN_RENEWAL_MS`. Once it has lapsed, every 10 minutes.
 */
export const retryDelayMs = (failures: number, remainingMs: number): number => {
  if (remainingMs <= 0) return 600_000
  return Math.max(MIN_RENEWAL_MS, Math.min(60_000 * 2 ** Math.max(0, failures - 1), remainingMs / 2))
}

/**
 * How long to wait for an answer after each send within `budgetMs`: 250 ms,
 * then doubling (RFC 6886 3.1), the last wait cut to what is left of the
 * budget. Sums to `budgetMs`.
 */
export const retransmitWaits = (budgetMs: number): ReadonlyArray<number> => {
  const waits: Array<number> = []
  let wait = FIRST_RETRANSMIT_MS
  let left = budgetMs
  while (left > 0) {
    const next = Math.min(wait, left)
    waits.push(next)
    left -= next
    wait *= 2
  }
  return waits
}

/** The state of port mapping, for `peerchat status` (absent when the node does not ask a router). */
export const PortMappingState = Schema.Union(
  /** The router forwards `external` to this node's listen port. */
  Schema.TaggedStruct("Mapped", {
    /** The protocol the router answered: NAT-PMP (PCP routers too), or UPnP IGD when NAT-PMP got no answer. */
    protocol: Schema.Literal("NAT-PMP", "UPnP-IGD"),
    /** Where peers reach this node: the router's outside address and port, `host:port`. */
    external: Schema.String,
    /** The router asked, `host:port` (UPnP IGD: where its control URL is). */
    gateway: Schema.String,
    /** When the mapping lapses unless renewed (ms since the epoch); renewed at half its lifetime. */
    expiresAt: Schema.Number
  }),
  /** No mapping: the router did not answer, refused, or its outside address is not public. */
  Schema.TaggedStruct("Unavailable", { reason: Schema.String })
)
/** @see PortMappingState */
export type PortMappingState = typeof PortMappingState.Type
