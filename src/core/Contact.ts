/**
 * Peer addresses and contacts: what a routing table stores and what FIND_NODE
 * returns. An address is a host (name, IPv4 or IPv6) and a TCP port; it is
 * written `host:port`, with IPv6 hosts in brackets.
 *
 * @since 0.1.0
 */
import { Either, ParseResult, Schema } from "effect"
import { NodeId } from "./Id.js"

/** Longest host name accepted (the DNS limit). */
export const HOST_MAX_LENGTH = 253

/** A host name or IP address as a peer may announce it: the characters and the length in one pattern. */
const HOST_PATTERN = new RegExp(`^[A-Za-z0-9.:_%-]{1,${HOST_MAX_LENGTH}}$`)

/** A TCP or UDP port: a whole number from 0 to 65535, checked in one step (it is on every contact). */
export const Port = Schema.Number.pipe(
  Schema.filter((port) => Number.isInteger(port) && port >= 0 && port <= 65535, {
    identifier: "Port",
    message: (issue) => `a port is a whole number from 0 to 65535, not ${String(issue.actual)}`,
    arbitrary: () => (fc) => fc.integer({ min: 0, max: 65535 }),
    jsonSchema: { type: "integer", minimum: 0, maximum: 65535 }
  })
)

/**
 * Where a node listens. A plain struct rather than a class: contacts are
 * created by the thousand in lookups and simulations, and plain values cost
 * no validation on construction.
 */
export const Address = Schema.Struct({
  // One pattern with the length in it rather than three checks: every contact of every FIND_NODE
  // answer passes here, and each check is a step of its own in `Schema`'s parser.
  host: Schema.String.pipe(
    Schema.pattern(HOST_PATTERN, {
      identifier: "Host",
      message: () => `a host is a DNS name, an IPv4 or an IPv6 address, of 1 to ${HOST_MAX_LENGTH} characters`,
      jsonSchema: { pattern: HOST_PATTERN.source, minLength: 1, maxLength: HOST_MAX_LENGTH }
    })
  ),
  port: Port
})
/** @see Address */
export type Address = typeof Address.Type

/** True when both addresses name the same host and port. */
export const addressEquals = (a: Address, b: Address): boolean => a.host === b.host && a.port === b.port

/** `host:port`, with brackets around an IPv6 host. */
export const formatAddress = (address: { readonly host: string; readonly port: number }): string =>
  address.host.includes(":") ? `[${address.host}]:${address.port}` : `${address.host}:${address.port}`

/** Why a `host:port` string could not be read. */
export class InvalidAddress extends Schema.TaggedError<InvalidAddress>()("InvalidAddress", {
  input: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `invalid address ${JSON.stringify(this.input)}: ${this.reason}`
  }
}

const decodeAddress = Schema.decodeUnknownEither(Address)

/** Reads `host:port` or `[ipv6]:port`. */
export const parseAddress = (input: string): Either.Either<Address, InvalidAddress> => {
  const bracketed = /^\[([^\]]+)\]:(\d{1,5})$/.exec(input)
  const plain = /^([^:[\]]+):(\d{1,5})$/.exec(input)
  const match = bracketed ?? plain
  if (match === null) {
    return Either.left(new InvalidAddress({ input, reason: "expected host:port (IPv6 as [host]:port)" }))
  }
  const [, host = "", portText = ""] = match
  return decodeAddress({ host, port: Number(portText) }).pipe(
    Either.mapLeft(() => new InvalidAddress({ input, reason: "host or port out of range" }))
  )
}

/** An address written `host:port` (IPv6 as `[host]:port`): for command lines and config files. */
export const AddressFromString = Schema.transformOrFail(Schema.String, Address, {
  strict: true,
  decode: (input, _options, ast) =>
    Either.match(parseAddress(input), {
      onLeft: (error) => ParseResult.fail(new ParseResult.Type(ast, input, error.message)),
      onRight: (address) => ParseResult.succeed(address)
    }),
  encode: (address) => ParseResult.succeed(formatAddress(address))
})

/** A node and where to reach it. */
export const Contact = Schema.Struct({
  nodeId: NodeId,
  address: Address
})
/** @see Contact */
export type Contact = typeof Contact.Type
