/**
 * Peer addresses and contacts: what a routing table stores and what FIND_NODE
 * returns. An address is a host (name, IPv4 or IPv6) and a TCP port; it is
 * written `host:port`, with IPv6 hosts in brackets.
 *
 * @since 0.1.0
 */
import { Either, ParseResult, Schema, SchemaAST } from "effect"
import { ID_BYTES, isKeyText, keyFromBytes, NodeId } from "./Id.js"

/** Longest host name accepted (the DNS limit). */
export const HOST_MAX_LENGTH = 253

/** A host name or IP address as a peer may announce it: the characters and the length in one pattern. */
const HOST_PATTERN = new RegExp(`^[A-Za-z0-9.:_%-]{1,${HOST_MAX_LENGTH}}$`)

const isPort = (port: unknown): port is number =>
  typeof port === "number" && Number.isInteger(port) && port >= 0 && port <= 65535

/** A TCP or UDP port: a whole number from 0 to 65535, checked in one step (it is on every contact). */
export const Port = Schema.Number.pipe(
  Schema.filter(isPort, {
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

/**
 * `input` as a `Contact` when it is one, copied with only `Contact`'s
 * fields as `Schema.Struct` would copy it; `undefined` otherwise. The same
 * checks as `Contact`'s refinements (`isKeyText`, `HOST_PATTERN`, `isPort`
 * are theirs), written out: `test/core/Contact.test.ts` holds the two to the
 * same answers on generated and mutated inputs. Arrays are refused as
 * `Schema.Struct` refuses them, even with the right fields.
 */
const contactIfValid = (input: unknown): Contact | undefined => {
  if (typeof input !== "object" || input === null || Array.isArray(input)) return undefined
  const { address, nodeId } = input as { readonly nodeId: unknown; readonly address: unknown }
  if (typeof nodeId !== "string" || !isKeyText(nodeId)) return undefined
  if (typeof address !== "object" || address === null || Array.isArray(address)) return undefined
  const { host, port } = address as { readonly host: unknown; readonly port: unknown }
  if (typeof host !== "string" || !HOST_PATTERN.test(host) || !isPort(port)) return undefined
  return { nodeId: nodeId as NodeId, address: { host, port } }
}

/**
 * Whether the quick check gives what `Contact` would under `options`: only
 * under the default handling of fields (excess ones dropped, inherited ones
 * read, the schema's order), which is how every answer is decoded; other
 * options go to `Contact` itself.
 */
const quickCheckApplies = (options: SchemaAST.ParseOptions | undefined): boolean =>
  options === undefined ||
  (options.exact !== true && (options.onExcessProperty ?? "ignore") === "ignore" && options.propertyOrder !== "original")

/** Checks with `Contact` itself, for the errors of what the quick check refused and for other options. */
const decodeContactSlowly = ParseResult.decodeUnknown(Contact)
const encodeContactSlowly = ParseResult.encodeUnknown(Contact)

/**
 * `Contact` as answers carry it, by the dozen: the same values accepted and,
 * for each contact, the same errors, at about a fourth of the cost.
 * `Schema`'s parser spends about 0.3 µs on each refinement of each contact
 * (the id's pattern and its two brands, the host's pattern, the port's
 * range), so a FindNode answer of 20 contacts took 22 µs to decode, most of
 * what the RPC stack added to it; one plain check per contact takes 5 µs
 * (`docs/decisions.md`, "FindNode answers checked in one step"). A contact the
 * quick check refuses is decoded by `Contact` to say why. JSON Schema follows
 * `Contact` (the surrogate); the generated values and their printing are
 * written here rather than derived, so the bundles do not carry fast-check.
 */
export const ContactOnWire: Schema.Schema<Contact, typeof Contact.Encoded> = Schema.declare(
  [],
  {
    decode: () => (input, options) => {
      const contact = quickCheckApplies(options) ? contactIfValid(input) : undefined
      return contact === undefined ? decodeContactSlowly(input, options) : ParseResult.succeed(contact)
    },
    encode: () => (input, options) => {
      const contact = quickCheckApplies(options) ? contactIfValid(input) : undefined
      return contact === undefined ? encodeContactSlowly(input, options) : ParseResult.succeed(contact)
    }
  },
  {
    identifier: "Contact",
    description: "a node id and the address it listens on",
    [SchemaAST.SurrogateAnnotationId]: Contact.ast,
    arbitrary: () => (fc) =>
      fc.record({
        nodeId: fc.uint8Array({ minLength: ID_BYTES, maxLength: ID_BYTES }).map((bytes) => keyFromBytes(bytes) as NodeId),
        address: fc.record({ host: fc.stringMatching(HOST_PATTERN), port: fc.integer({ min: 0, max: 65535 }) })
      }),
    pretty: () => (contact) => `${contact.nodeId}@${formatAddress(contact.address)}`,
    equivalence: () => Schema.equivalence(Contact)
  }
)
