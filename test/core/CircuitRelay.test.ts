import { describe, expect, it } from "@effect/vitest"
import { CircuitTable, defaultCircuitLimits } from "../../src/core/CircuitRelay.js"
import type { NodeId } from "../../src/core/Id.js"

const id = (n: number): NodeId => n.toString(16).padStart(64, "0") as NodeId
const token = (n: number): string => n.toString(16).padStart(32, "0")
const T0 = 1_000_000

describe("CircuitTable: reservations", () => {
  it("grants up to the total and per-network bounds; a renewal is never refused", () => {
    const table = new CircuitTable({ maxReservations: 3, maxReservationsPerNetwork: 2 })
    expect(table.reserve(id(1), "203.0.113.1", T0)).toEqual({ _tag: "Granted", expiresAt: T0 + defaultCircuitLimits.reservationTtlMs })
    expect(table.reserve(id(2), "203.0.113.2", T0)._tag).toBe("Granted")
    // A third holder from the same /24: an attacker renting one network gets two slots, not the relay.
    expect(table.reserve(id(3), "203.0.113.3", T0)).toEqual({ _tag: "Refused", reason: "NetworkFull" })
    expect(table.reserve(id(4), "198.51.100.4", T0)._tag).toBe("Granted")
    expect(table.reserve(id(5), "192.0.2.5", T0)).toEqual({ _tag: "Refused", reason: "ReservationsFull" })
    // The holders renew while full.
    expect(table.reserve(id(1), "203.0.113.1", T0 + 10)._tag).toBe("Granted")
    expect(table.counts(T0 + 10).reservations).toBe(3)
  })

  it("a reservation not renewed lapses, freeing its place and its network's; asking for offers renews it", () => {
    const table = new CircuitTable({ maxReservations: 1, reservationTtlMs: 1000 })
    table.reserve(id(1), "203.0.113.1", T0)
    expect(table.takeOffers(id(1), T0 + 900)).toEqual([])
    expect(table.holds(id(1), T0 + 1500)).toBe(true)
    expect(table.holds(id(1), T0 + 1900)).toBe(false)
    expect(table.reserve(id(2), "203.0.113.2", T0 + 1900)._tag).toBe("Granted")
    // A lapsed holder asking for offers gets none and no slot.
    expect(table.takeOffers(id(1), T0 + 1900)).toEqual([])
    expect(table.holds(id(1), T0 + 1900)).toBe(false)
  })
})

describe("CircuitTable: circuits", () => {
  const withHolder = (limits = {}) => {
    const table = new CircuitTable(limits)
    table.reserve(id(100), "203.0.113.100", T0)
    return table
  }

  it("opens a circuit only to a holder, never to oneself, and offers it to the holder once", () => {
    const table = withHolder()
    expect(table.open(id(1), id(999), token(1), T0)).toEqual({ _tag: "Refused", reason: "NoReservation" })
    expect(table.open(id(100), id(100), token(1), T0)).toEqual({ _tag: "Refused", reason: "NoReservation" })
    expect(table.open(id(1), id(100), token(2), T0)).toEqual({
      _tag: "Opened",
      deadline: T0 + defaultCircuitLimits.offerTtlMs,
      targetHost: "203.0.113.100"
    })
    expect(table.takeOffers(id(100), T0)).toEqual([{ token: token(2), caller: id(1) }])
    expect(table.takeOffers(id(100), T0)).toEqual([])
  })

  it("tells each end of a circuit the host the relay saw the other at (all a hole punch may dial)", () => {
    const table = withHolder()
    const opened = table.open(id(1), id(100), token(3), T0, "198.51.100.7")
    expect(opened).toMatchObject({ _tag: "Opened", targetHost: "203.0.113.100" })
    expect(table.takeOffers(id(100), T0)).toEqual([{ token: token(3), caller: id(1), callerHost: "198.51.100.7" }])
    // A renewal from elsewhere does not move the host the reservation was made from.
    table.reserve(id(100), "198.51.100.99", T0 + 1)
    expect(table.open(id(2), id(100), token(4), T0 + 1)).toMatchObject({ targetHost: "203.0.113.100" })
  })

  it("bounds offers per holder, circuits per caller and in all", () => {
    const table = withHolder({ maxOffersPerHolder: 2, maxCircuitsPerCaller: 3, maxCircuits: 4 })
    table.reserve(id(101), "198.51.100.101", T0)
    expect(table.open(id(1), id(100), token(1), T0)._tag).toBe("Opened")
    expect(table.open(id(2), id(100), token(2), T0)._tag).toBe("Opened")
    expect(table.open(id(3), id(100), token(3), T0)).toEqual({ _tag: "Refused", reason: "TargetBusy" })
    // Taking the offers makes room for more offers, not for more circuits than the bounds.
    table.takeOffers(id(100), T0)
    expect(table.open(id(1), id(100), token(4), T0)._tag).toBe("Opened")
    expect(table.open(id(1), id(101), token(5), T0)._tag).toBe("Opened")
    expect(table.open(id(1), id(101), token(6), T0)).toEqual({ _tag: "Refused", reason: "CallerBusy" })
    expect(table.open(id(7), id(101), token(7), T0)).toEqual({ _tag: "Refused", reason: "CircuitsFull" })
    // A closed circuit gives its caller's slot back.
    table.close(token(1))
    expect(table.open(id(1), id(101), token(8), T0)._tag).toBe("Opened")
    expect(table.open(id(1), id(101), token(9), T0)).toEqual({ _tag: "Refused", reason: "TargetBusy" })
  })

  it("the first leg waits, the second is spliced, a third (a replay) is refused, and an unknown token is refused", () => {
    const table = withHolder()
    table.open(id(1), id(100), token(1), T0)
    expect(table.arrive(token(2), T0)).toBe("Unknown")
    expect(table.arrive(token(1), T0 + 1)).toBe("Wait")
    expect(table.arrive(token(1), T0 + 2)).toBe("Splice")
    expect(table.deadlineOf(token(1))).toBe(T0 + 2 + defaultCircuitLimits.circuitLifetimeMs)
    expect(table.arrive(token(1), T0 + 3)).toBe("Unknown")
  })

  it("an offer whose legs do not both arrive in time expires; a spliced circuit lives until closed", () => {
    const table = withHolder({ offerTtlMs: 100, reservationTtlMs: 1_000_000 })
    table.open(id(1), id(100), token(1), T0)
    table.arrive(token(1), T0 + 50)
    expect(table.arrive(token(1), T0 + 150)).toBe("Unknown")
    expect(table.deadlineOf(token(1))).toBeUndefined()
    table.open(id(1), id(100), token(2), T0 + 200)
    table.arrive(token(2), T0 + 200)
    expect(table.arrive(token(2), T0 + 210)).toBe("Splice")
    expect(table.counts(T0 + 10_000).circuits).toBe(1)
    table.close(token(2))
    expect(table.counts(T0 + 10_000).circuits).toBe(0)
  })

  it("a holder that leaves takes its waiting offers with it", () => {
    const table = withHolder()
    table.open(id(1), id(100), token(1), T0)
    table.cancel(id(100))
    expect(table.arrive(token(1), T0)).toBe("Unknown")
    expect(table.counts(T0)).toEqual({ reservations: 0, circuits: 0, splicedTotal: 0 })
  })
})
