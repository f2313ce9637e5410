import { describe, expect, it } from "@effect/vitest"
import { Either, FastCheck as fc, Schema } from "effect"
import { AddressFromString, formatAddress, parseAddress } from "../../src/core/Contact.js"
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
