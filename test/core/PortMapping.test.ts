/**
 * NAT-PMP's wire format and the decisions around a port mapping: answers
 * decode only when well formed (garbage from the network is refused, never
 * thrown), requests have the bytes RFC 6886 gives, and the node tells peers
 * the router's address only while a mapping with a public outside address
 * lives; renewals come at half the lifetime, retransmissions fit the budget.
 */
import { describe, expect, it } from "@effect/vitest"
import { Either, Schema } from "effect"
import fc from "fast-check"
import {
  advertisedAddress,
  externalAddressRequest,
  isPublicIpv4,
  mapTcpRequest,
  MIN_RENEWAL_MS,
  type NatPmpAnswer,
  NatPmpAnswerFromBytes,
  opcodeAnswered,
  opcodeOf,
  renewalDelayMs,
  retransmitWaits,
  retryDelayMs,
  shouldAskRouter
} from "../../src/core/PortMapping.js"

const decode = (bytes: ReadonlyArray<number>) => Schema.decodeUnknownEither(NatPmpAnswerFromBytes)(Uint8Array.from(bytes))
const encode = (answer: NatPmpAnswer) => Schema.encodeSync(NatPmpAnswerFromBytes)(answer)

describe("NAT-PMP requests", () => {
  it("have RFC 6886's layout: version 0, opcode, then ports and lifetime big-endian", () => {
    expect(Array.from(externalAddressRequest())).toEqual([0, 0])
    expect(Array.from(mapTcpRequest(40000, 40001, 7200))).toEqual([0, 2, 0, 0, 0x9c, 0x40, 0x9c, 0x41, 0, 0, 0x1c, 0x20])
    // Removal: lifetime 0 and outside port 0.
    expect(Array.from(mapTcpRequest(40000, 0, 0))).toEqual([0, 2, 0, 0, 0x9c, 0x40, 0, 0, 0, 0, 0, 0])
    expect(opcodeOf(mapTcpRequest(1, 1, 1))).toBe(2)
  })
})

describe("NAT-PMP answers", () => {
  it("decode an outside address, a granted mapping and a refusal as a router sends them", () => {
    // miniupnpd's answers: outside address 203.0.113.100, epoch 1234.
    expect(decode([0, 128, 0, 0, 0, 0, 4, 210, 203, 0, 113, 100])).toEqual(
      Either.right({ _tag: "ExternalAddress", epoch: 1234, address: "203.0.113.100" })
    )
    expect(decode([0, 130, 0, 0, 0, 0, 4, 210, 0x9c, 0x40, 0x9c, 0x41, 0, 0, 0x1c, 0x20])).toEqual(
      Either.right({ _tag: "Mapped", epoch: 1234, internalPort: 40000, externalPort: 40001, lifetimeSeconds: 7200 })
    )
    // Result 2 (refused) to a mapping request: only the 8-byte header is needed.
    expect(decode([0, 130, 0, 2, 0, 0, 0, 9])).toEqual(Either.right({ _tag: "Refused", opcode: 2, resultCode: 2, epoch: 9 }))
    expect(decode([0, 128, 0, 3, 0, 0, 0, 9, 0, 0, 0, 0])).toEqual(Either.right({ _tag: "Refused", opcode: 0, resultCode: 3, epoch: 9 }))
  })

  it("refuse garbage: empty, short, another version, a request echoed back, a UDP mapping answer", () => {
    for (
      const garbage of [
        [],
        [0],
        [0, 128, 0, 0, 0, 0, 0],
        [0, 128, 0, 0, 0, 0, 0, 1, 203, 0, 113], // an outside address cut short
        [0, 130, 0, 0, 0, 0, 0, 1, 0x9c, 0x40], // a mapping cut short
        [2, 128, 0, 0, 0, 0, 0, 1, 203, 0, 113, 100], // PCP's version
        [0, 2, 0, 0, 0x9c, 0x40, 0x9c, 0x40, 0, 0, 0x1c, 0x20], // a request, not an answer
        [0, 129, 0, 0, 0, 0, 0, 1, 0, 1, 0, 1, 0, 0, 0, 1] // UDP: never asked for
      ]
    ) {
      expect(Either.isLeft(decode(garbage)), JSON.stringify(garbage)).toBe(true)
    }
  })

  it("never throw on any bytes, and what decodes encodes back to the bytes it came from (trailing bytes aside)", () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
      const decoded = Schema.decodeUnknownEither(NatPmpAnswerFromBytes)(bytes)
      if (Either.isLeft(decoded)) return
      const again = encode(decoded.right)
      expect(Array.from(bytes.subarray(0, again.length))).toEqual(Array.from(again))
    }))
    // Answers that start right, so the property reaches the decoding of every field.
    fc.assert(fc.property(
      fc.constantFrom(128, 130),
      fc.integer({ min: 0, max: 5 }),
      fc.uint8Array({ minLength: 6, maxLength: 20 }),
      (opcode, result, rest) => {
        const bytes = Uint8Array.from([0, opcode, 0, result, ...rest])
        const decoded = Schema.decodeUnknownEither(NatPmpAnswerFromBytes)(bytes)
        if (Either.isLeft(decoded)) return
        expect(opcodeAnswered(decoded.right)).toBe(opcode - 128)
        expect(Array.from(bytes.subarray(0, encode(decoded.right).length))).toEqual(Array.from(encode(decoded.right)))
      }
    ))
  })
})

describe("which address to tell peers", () => {
  const own = { host: "100.64.1.2", port: 40000 }
  const mapping = { external: { host: "203.0.113.100", port: 41000 }, internalPort: 40000, expiresAt: 10_000 }

  it("the router's outside address and mapped port while the mapping lives, the own address otherwise", () => {
    expect(advertisedAddress(own, mapping, 9_999)).toEqual({ host: "203.0.113.100", port: 41000 })
    expect(advertisedAddress(own, mapping, 10_000)).toEqual(own)
    expect(advertisedAddress(own, undefined, 0)).toEqual(own)
  })

  it("never an outside address behind which another NAT sits (private, shared, loopback), nor port 0", () => {
    for (const host of ["10.1.2.3", "100.64.0.1", "100.127.255.254", "172.16.0.1", "192.168.1.1", "127.0.0.1", "169.254.1.1", "0.0.0.0", "224.0.0.1"]) {
      expect(isPublicIpv4(host), host).toBe(false)
      expect(advertisedAddress(own, { ...mapping, external: { host, port: 41000 } }, 0)).toEqual(own)
    }
    expect(advertisedAddress(own, { ...mapping, external: { host: "203.0.113.100", port: 0 } }, 0)).toEqual(own)
    for (const host of ["203.0.113.100", "198.51.100.7", "100.128.0.1", "172.32.0.1", "8.8.8.8"]) expect(isPublicIpv4(host), host).toBe(true)
    expect(isPublicIpv4("2001:db8::1")).toBe(false)
    expect(isPublicIpv4("example.org")).toBe(false)
  })

  it("only a node on a private address, or on all addresses, asks its router; loopback and public ones never do", () => {
    for (const host of ["0.0.0.0", "192.168.1.20", "10.0.0.5", "172.20.1.1", "100.64.1.2"]) expect(shouldAskRouter(host), host).toBe(true)
    for (const host of ["127.0.0.1", "127.3.4.5", "203.0.113.10", "::", "::1", "localhost"]) expect(shouldAskRouter(host), host).toBe(false)
  })
})

describe("timing", () => {
  it("renews at half the lifetime, at least a minute before it lapses when it can, never in a tight loop", () => {
    expect(renewalDelayMs(7200)).toBe(3_600_000)
    expect(renewalDelayMs(100)).toBe(40_000)
    expect(renewalDelayMs(1)).toBe(MIN_RENEWAL_MS)
    fc.assert(fc.property(fc.integer({ min: 0, max: 10_000_000 }), (lifetime) => {
      const delay = renewalDelayMs(lifetime)
      expect(delay).toBeGreaterThanOrEqual(MIN_RENEWAL_MS)
      if (lifetime * 1000 >= 2 * MIN_RENEWAL_MS) expect(delay).toBeLessThanOrEqual(lifetime * 500)
    }))
  })

  it("retries a failed renewal within what is left of the mapping, then slowly once it lapsed", () => {
    expect(retryDelayMs(1, 3_600_000)).toBe(60_000)
    expect(retryDelayMs(3, 3_600_000)).toBe(240_000)
    expect(retryDelayMs(10, 200_000)).toBe(100_000)
    expect(retryDelayMs(1, 10_000)).toBe(MIN_RENEWAL_MS)
    expect(retryDelayMs(1, 0)).toBe(600_000)
  })

  it("retransmits at 250 ms, doubling, within the budget (RFC 6886 3.1)", () => {
    expect(retransmitWaits(1500)).toEqual([250, 500, 750])
    expect(retransmitWaits(4000)).toEqual([250, 500, 1000, 2000, 250])
    expect(retransmitWaits(100)).toEqual([100])
    expect(retransmitWaits(0)).toEqual([])
    fc.assert(fc.property(fc.integer({ min: 0, max: 100_000 }), (budget) => {
      expect(retransmitWaits(budget).reduce((sum, wait) => sum + wait, 0)).toBe(budget)
    }))
  })
})
