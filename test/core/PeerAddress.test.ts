import { describe, expect, it } from "@effect/vitest"
import type { NodeId } from "../../src/core/Id.js"
import { advertisedRoutes, formatPeerAddress, type RelayHint, relayHintEquals, routesOf } from "../../src/core/PeerAddress.js"

const relay = (n: number, port = 4242): RelayHint => ({
  relayId: n.toString(16).padStart(64, "0") as NodeId,
  address: { host: `198.51.100.${n}`, port }
})
const home = { host: "100.64.1.2", port: 4242 }

describe("routesOf", () => {
  it("lists direct addresses first, then each relay, in the record's order", () => {
    const routes = routesOf({ addresses: [{ host: "203.0.113.7", port: 1 }], relays: [relay(1), relay(2)] })
    expect(routes.map(formatPeerAddress)).toEqual(["203.0.113.7:1", "via 198.51.100.1:4242", "via 198.51.100.2:4242"])
    expect(routesOf({ addresses: [] })).toEqual([])
  })
})

describe("advertisedRoutes", () => {
  it("a node peers cannot dial lists its relays once it holds some, never its own unreachable address", () => {
    expect(advertisedRoutes("Private", home, [relay(1), relay(2)])).toEqual({ addresses: [], relays: [relay(1), relay(2)] })
  })

  it("lists its own address while it holds no relay, or when peers can dial it (or do not know yet)", () => {
    expect(advertisedRoutes("Private", home, [])).toEqual({ addresses: [home], relays: [] })
    expect(advertisedRoutes("Public", home, [relay(1)])).toEqual({ addresses: [home], relays: [] })
    expect(advertisedRoutes("Unknown", home, [relay(1)])).toEqual({ addresses: [home], relays: [] })
  })
})

describe("relayHintEquals", () => {
  it("is the same relay only with the same id, host and port", () => {
    expect(relayHintEquals(relay(1), relay(1))).toBe(true)
    expect(relayHintEquals(relay(1), relay(1, 4243))).toBe(false)
    expect(relayHintEquals(relay(1), { ...relay(1), relayId: relay(2).relayId })).toBe(false)
  })
})
