import { describe, expect, it } from "@effect/vitest"
import { Arbitrary, Either, FastCheck as fc, ParseResult, Schema } from "effect"
import { AddressFromString, Contact, ContactOnWire, formatAddress, parseAddress } from "../../src/core/Contact.js"
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
    fc.assert(fc.property(fc.oneof(validContact, mutated, fc.anything()), (input) => expectSameAnswer(input)), {
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
