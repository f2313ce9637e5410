import { describe, expect, it } from "@effect/vitest"
import { Arbitrary, Either, FastCheck as fc, JSONSchema, ParseResult, Schema } from "effect"
import { AddressFromString, Contact, ContactOnWire, formatAddress, HOST_MAX_LENGTH, parseAddress } from "../../src/core/Contact.js"
import { PROPERTY_SEED } from "../support/arbitraries.js"

describe("addresses", () => {
  it("parse host:port and [ipv6]:port", () => {
    expect(parseAddress("127.0.0.1:4242")).toEqual(Either.right({ host: "127.0.0.1", port: 4242 }))
    expect(parseAddress("peer.example.org:0")).toEqual(Either.right({ host: "peer.example.org", port: 0 }))
    expect(parseAddress("[::1]:65535")).toEqual(Either.right({ host: "::1", port: 65535 }))
  })

  it("refuse anything else with a typed error", () => {
    for (const bad of ["", "127.0.0.1", ":4242", "host:", "host:65536", "host:-1", "::1:4242", "host:12ab", "a b:1"]) {
      const result = parseAddress(bad)
      expect(Either.isLeft(result), bad).toBe(true)
      if (Either.isLeft(result)) {
        expect(result.left._tag).toBe("InvalidAddress")
        expect(result.left.message).toContain(JSON.stringify(bad))
      }
    }
  })

  it.prop(
    "format and parse round-trip",
    [
      fc.oneof(fc.ipV4(), fc.ipV6(), fc.domain()),
      fc.integer({ min: 0, max: 65535 })
    ],
    ([host, port]) => {
      expect(parseAddress(formatAddress({ host, port }))).toEqual(Either.right({ host, port }))
    },
    { fastCheck: { seed: PROPERTY_SEED, numRuns: 300 } }
  )
})

describe("AddressFromString", () => {
  it("decodes host:port and explains a bad one", () => {
    const decode = Schema.decodeUnknownEither(AddressFromString)
    expect(decode("[::1]:80")).toEqual(Either.right({ host: "::1", port: 80 }))
    const bad = decode("nowhere")
    expect(Either.isLeft(bad) && bad.left.message).toContain("expected host:port")
    expect(Schema.encodeSync(AddressFromString)({ host: "::1", port: 80 })).toBe("[::1]:80")
  })
})

describe("ContactOnWire", () => {
  const decodeBoth = (input: unknown) => {
    const slow = Schema.decodeUnknownEither(Contact)(input)
    const quick = Schema.decodeUnknownEither(ContactOnWire)(input)
    return { slow, quick }
  }
  /** Same value, or the same error message, from `Contact` and from its quick form. */
  const expectSameAnswer = (input: unknown) => {
    const { quick, slow } = decodeBoth(input)
    expect(quick._tag).toBe(slow._tag)
    if (Either.isRight(slow) && Either.isRight(quick)) expect(quick.right).toStrictEqual(slow.right)
    if (Either.isLeft(slow) && Either.isLeft(quick)) {
      expect(ParseResult.TreeFormatter.formatErrorSync(quick.left)).toBe(ParseResult.TreeFormatter.formatErrorSync(slow.left))
    }
  }
  const validContact = Arbitrary.make(Contact)
  /** A contact's fields on an array: JSON cannot make one, but `Contact` refuses it and so must the quick check. */
  const arrayLike = fc.tuple(validContact, fc.boolean()).map(([contact, outer]): unknown =>
    outer ? Object.assign([], contact) : { ...contact, address: Object.assign([], contact.address) }
  )
  /** Values near a contact's edges: each field replaced by something close to valid or plainly wrong. */
  const oddValue = fc.oneof(
    fc.constantFrom<unknown>(
      undefined, null, "", 0, -1, 65535, 65536, 1.5, Number.NaN, Infinity, "1234", [], {}, true,
      "a".repeat(64), "A".repeat(64), "0".repeat(63), "0".repeat(65), "h".repeat(253), "h".repeat(254), "::1", "host name", "é"
    ),
    fc.string(),
    fc.integer(),
    fc.double()
  )
  const mutated = fc.tuple(validContact, fc.constantFrom("nodeId", "address", "host", "port", "extra", "drop-nodeId", "drop-port"), oddValue)
    .map(([contact, field, value]): unknown => {
      const address: Record<string, unknown> = { ...contact.address }
      const outer: Record<string, unknown> = { ...contact, address }
      if (field === "nodeId" || field === "address") outer[field] = value
      else if (field === "host" || field === "port") address[field] = value
      else if (field === "extra") { outer.extra = value; address.extra = value }
      else if (field === "drop-nodeId") delete outer.nodeId
      else delete address.port
      return outer
    })

  it("accepts and refuses exactly what Contact does, with the same errors and the same values", () => {
    fc.assert(fc.property(fc.oneof(validContact, mutated, arrayLike, fc.anything()), (input) => expectSameAnswer(input)), {
      seed: PROPERTY_SEED,
      numRuns: 3000
    })
  })

  it("copies only a contact's fields, as Contact does, and never returns its input", () => {
    const input = { nodeId: "ab".repeat(32), address: { host: "127.0.0.1", port: 4000, junk: "x".repeat(1000) }, junk: [1, 2, 3] }
    const decoded = Schema.decodeUnknownSync(ContactOnWire)(input)
    expect(decoded).toStrictEqual({ nodeId: input.nodeId, address: { host: "127.0.0.1", port: 4000 } })
    expect(decoded).not.toBe(input)
    expect(decoded.address).not.toBe(input.address)
  })

  it("refuses arrays with a contact's fields, as Contact does", () => {
    const contact = { nodeId: "ab".repeat(32), address: { host: "127.0.0.1", port: 4000 } }
    expectSameAnswer(Object.assign([], contact))
    expectSameAnswer({ ...contact, address: Object.assign([], contact.address) })
    expect(Either.isLeft(Schema.decodeUnknownEither(ContactOnWire)(Object.assign([], contact)))).toBe(true)
    expect(Either.isLeft(Schema.encodeEither(ContactOnWire)({ ...contact, address: Object.assign([], contact.address) } as unknown as Contact)))
      .toBe(true)
  })

  it("leaves parse options other than the defaults to Contact", () => {
    const contact = { nodeId: "ab".repeat(32), address: { host: "127.0.0.1", port: 4000 }, extra: 1 }
    for (
      const options of [
        { onExcessProperty: "error" },
        { onExcessProperty: "preserve" },
        { propertyOrder: "original" },
        { exact: true }
      ] as const
    ) {
      const slow = Schema.decodeUnknownEither(Contact)(contact, options)
      const quick = Schema.decodeUnknownEither(ContactOnWire)(contact, options)
      expect(quick._tag).toBe(slow._tag)
      if (Either.isRight(slow) && Either.isRight(quick)) expect(quick.right).toStrictEqual(slow.right)
    }
    expect(Either.isLeft(Schema.decodeUnknownEither(ContactOnWire)(contact, { onExcessProperty: "error" }))).toBe(true)
  })

  it("has Contact's JSON Schema, and generates contacts Contact accepts", () => {
    // The same schema, named: Contact's definitions, and the root a reference to Contact among them.
    const { $defs: contactDefs, $schema: _schema, ...contactSchema } = JSONSchema.make(Contact) as JSONSchema.JsonSchema7Root
    expect(JSONSchema.make(ContactOnWire)).toStrictEqual({
      $schema: "http://json-schema.org/draft-07/schema#",
      $defs: { ...contactDefs, Contact: contactSchema },
      $ref: "#/$defs/Contact"
    })
    fc.assert(fc.property(Arbitrary.make(ContactOnWire), (contact) => {
      expect(Either.isRight(Schema.decodeUnknownEither(Contact)(contact))).toBe(true)
    }), { seed: PROPERTY_SEED, numRuns: 200 })
  })

  it("shares checks with Contact that refuse a port past 65535 and a host past 253 characters", () => {
    const nodeId = "ab".repeat(32)
    const decode = Schema.decodeUnknownEither(Contact)
    expect(Either.isRight(decode({ nodeId, address: { host: "h".repeat(HOST_MAX_LENGTH), port: 65535 } }))).toBe(true)
    expect(Either.isLeft(decode({ nodeId, address: { host: "h", port: 65536 } }))).toBe(true)
    expect(Either.isLeft(decode({ nodeId, address: { host: "h".repeat(HOST_MAX_LENGTH + 1), port: 1 } }))).toBe(true)
  })

  it("reads inherited fields as Contact does", () => {
    expectSameAnswer(Object.create({ nodeId: "ab".repeat(32), address: { host: "h", port: 1 } }))
    expectSameAnswer(Object.create({ nodeId: 7, address: { host: "h", port: 1 } }))
  })

  it("encodes as Contact encodes", () => {
    fc.assert(fc.property(validContact, (contact) => {
      expect(Schema.encodeSync(ContactOnWire)(contact)).toStrictEqual(Schema.encodeSync(Contact)(contact))
    }))
    const bad = { nodeId: "nope", address: { host: "h", port: 1 } } as unknown as Contact
    expect(Either.isLeft(Schema.encodeEither(ContactOnWire)(bad))).toBe(true)
  })
})
