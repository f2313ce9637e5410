/**
 * Connection admission: each limit on its own, the order refusals are named
 * in, eviction only when it admits, and a model-based property over random
 * admit / handshakeDone / release / evict sequences (counts equal admitted
 * minus released, never negative, every refusal names the first limit the
 * model finds reached). The model groups hosts from a hand-written table, not
 * from AddressGroup, so the two are checked against each other too.
 */
import { describe, expect, it } from "@effect/vitest"
import { FastCheck as fc } from "effect"
import {
  ConnectionLedger,
  type ConnectionLimits,
  type ConnectionTicket,
  defaultConnectionLimits,
  idleBeyond,
  type InboundRefusal,
  type InboundTicket,
  type RefusalReason,
  refusalReasons
} from "../../src/core/ConnectionLimits.js"
import { PROPERTY_SEED } from "../support/arbitraries.js"

const propOptions = (numRuns: number) => ({ fastCheck: { seed: PROPERTY_SEED, numRuns } })

/** Generous limits, overridden one at a time by the examples. */
const roomy: ConnectionLimits = {
  maxInbound: 100,
  maxOutbound: 100,
  maxPendingHandshakes: 100,
  maxPendingPerIp: 100,
  maxInboundPerIp: 100,
  maxInboundPerGroup: 100,
  maxIdleOutbound: 100,
  idleLingerMs: 0
}

const admitted = (ledger: ConnectionLedger, host: string): InboundTicket => {
  const decision = ledger.admitInbound(host)
  if (decision._tag !== "Admit") throw new Error(`expected ${host} to be admitted, refused: ${decision.reason}`)
  return decision.ticket
}

const established = (ledger: ConnectionLedger, host: string): InboundTicket => {
  const ticket = admitted(ledger, host)
  ledger.handshakeDone(ticket)
  return ticket
}

const reasonOf = (decision: { readonly _tag: "Admit" } | { readonly _tag: "Refuse"; readonly reason: RefusalReason }) =>
  decision._tag === "Refuse" ? decision.reason : "Admit"

describe("ConnectionLedger examples", () => {
  it("has the documented defaults", () => {
    expect(defaultConnectionLimits).toEqual({
      maxInbound: 192,
      maxOutbound: 128,
      maxPendingHandshakes: 64,
      maxPendingPerIp: 4,
      maxInboundPerIp: 8,
      maxInboundPerGroup: 16,
      maxIdleOutbound: 8,
      idleLingerMs: 5_000
    })
    expect(new ConnectionLedger().limits).toEqual(defaultConnectionLimits)
  })

  it("caps handshakes in progress over all addresses", () => {
    const ledger = new ConnectionLedger({ ...roomy, maxPendingHandshakes: 2 })
    const a = admitted(ledger, "10.0.1.1")
    admitted(ledger, "10.0.2.1")
    expect(reasonOf(ledger.admitInbound("10.0.3.1"))).toBe("PendingHandshakes")
    ledger.handshakeDone(a)
    expect(reasonOf(ledger.admitInbound("10.0.3.1"))).toBe("Admit")
  })

  it("caps handshakes in progress per address, counting every form of it as one", () => {
    const ledger = new ConnectionLedger({ ...roomy, maxPendingPerIp: 2 })
    const a = admitted(ledger, "10.0.0.1")
    admitted(ledger, "::ffff:10.0.0.1")
    expect(reasonOf(ledger.admitInbound("::FFFF:a00:1"))).toBe("PendingPerIp")
    expect(reasonOf(ledger.admitInbound("10.0.0.2"))).toBe("Admit") // another address of the same network
    ledger.handshakeDone(a)
    expect(reasonOf(ledger.admitInbound("10.0.0.1"))).toBe("Admit")
  })

  it("caps inbound connections, established ones included", () => {
    const ledger = new ConnectionLedger({ ...roomy, maxInbound: 2 })
    established(ledger, "10.0.1.1")
    const b = admitted(ledger, "10.0.2.1")
    expect(reasonOf(ledger.admitInbound("10.0.3.1"))).toBe("InboundFull")
    ledger.release(b)
    expect(reasonOf(ledger.admitInbound("10.0.3.1"))).toBe("Admit")
  })

  it("caps inbound connections per address and per network", () => {
    const perIp = new ConnectionLedger({ ...roomy, maxInboundPerIp: 2 })
    established(perIp, "2001:db8::1")
    established(perIp, "2001:DB8:0:0::1")
    expect(reasonOf(perIp.admitInbound("2001:db8::0:1"))).toBe("PerIp")
    expect(reasonOf(perIp.admitInbound("2001:db8::2"))).toBe("Admit")

    const perGroup = new ConnectionLedger({ ...roomy, maxInboundPerGroup: 2 })
    established(perGroup, "10.0.0.1")
    established(perGroup, "10.0.0.2")
    expect(reasonOf(perGroup.admitInbound("10.0.0.3"))).toBe("PerGroup")
    expect(reasonOf(perGroup.admitInbound("10.0.1.3"))).toBe("Admit")
    expect(perGroup.inboundFromGroup("10.0.0.200")).toBe(2)
    expect(perGroup.inboundFrom("::ffff:10.0.0.1")).toBe(1)
  })

  it("names the first limit reached, cheapest first", () => {
    // One address, in its handshake, at every limit at once.
    const ledger = new ConnectionLedger({
      maxInbound: 1,
      maxOutbound: 1,
      maxPendingHandshakes: 1,
      maxPendingPerIp: 1,
      maxInboundPerIp: 1,
      maxInboundPerGroup: 1
    })
    const a = admitted(ledger, "10.0.0.1")
    expect(reasonOf(ledger.admitInbound("10.0.0.1"))).toBe("PendingHandshakes")
    const relaxed = new ConnectionLedger({ ...roomy, maxInbound: 1, maxPendingPerIp: 1, maxInboundPerIp: 1, maxInboundPerGroup: 1 })
    const b = admitted(relaxed, "10.0.0.1")
    expect(reasonOf(relaxed.admitInbound("10.0.0.1"))).toBe("PendingPerIp")
    relaxed.handshakeDone(b)
    expect(reasonOf(relaxed.admitInbound("10.0.0.1"))).toBe("InboundFull")
    ledger.release(a)
    expect(ledger.snapshot().byReason.PendingHandshakes).toBe(1)
  })

  it("says which limit would refuse a connection without counting a refusal (a transport that can make room asks first)", () => {
    const ledger = new ConnectionLedger({ ...roomy, maxInbound: 1, maxOutbound: 1 })
    expect(ledger.inboundRefusalFor("10.0.1.1")).toBeUndefined()
    expect(ledger.outboundFull).toBe(false)
    admitted(ledger, "10.0.1.1")
    expect(reasonOf(ledger.admitOutbound())).toBe("Admit")
    expect(ledger.inboundRefusalFor("10.0.2.1")).toBe("InboundFull")
    expect(ledger.outboundFull).toBe(true)
    expect(Object.values(ledger.snapshot().byReason).every((count) => count === 0)).toBe(true)
  })

  it("keeps outbound and inbound budgets apart", () => {
    const ledger = new ConnectionLedger({ ...roomy, maxInbound: 2, maxOutbound: 1 })
    admitted(ledger, "10.0.1.1")
    admitted(ledger, "10.0.2.1")
    expect(reasonOf(ledger.admitInbound("10.0.3.1"))).toBe("InboundFull")
    const out = ledger.admitOutbound()
    expect(reasonOf(out)).toBe("Admit")
    expect(reasonOf(ledger.admitOutbound())).toBe("OutboundFull")
    expect(ledger.snapshot()).toEqual({
      inbound: 2,
      outbound: 1,
      pending: 2,
      byReason: { PendingHandshakes: 0, PendingPerIp: 0, InboundFull: 1, PerIp: 0, PerGroup: 0, OutboundFull: 1 }
    })
    if (out._tag === "Admit") {
      expect(ledger.handshakeDone(out.ticket)).toBe(false) // outbound handshakes are not counted
      expect(ledger.release(out.ticket)).toBe(true)
    }
    expect(reasonOf(ledger.admitOutbound())).toBe("Admit")
  })

  it("ignores a second handshakeDone or release, and tickets it did not issue", () => {
    const ledger = new ConnectionLedger(roomy)
    const a = admitted(ledger, "10.0.0.1")
    expect(ledger.handshakeDone(a)).toBe(true)
    expect(ledger.handshakeDone(a)).toBe(false)
    expect(ledger.handshakeDone({ ...a })).toBe(false)
    const forged: ConnectionTicket = { ...a, ip: "10.9.9.9" }
    expect(ledger.release(forged)).toBe(false)
    expect(ledger.isOpen(a)).toBe(true)
    expect(ledger.release({ ...a })).toBe(true) // a copy is the same ticket
    expect(ledger.release(a)).toBe(false)
    expect(ledger.handshakeDone(a)).toBe(false)
    expect(ledger.release({ direction: "outbound", id: a.id })).toBe(false)
    expect(ledger.snapshot()).toMatchObject({ inbound: 0, outbound: 0, pending: 0 })
    expect(ledger.inboundFrom("10.0.0.1")).toBe(0)
  })

  it("releasing a connection still in its handshake frees its pending slots too", () => {
    const ledger = new ConnectionLedger({ ...roomy, maxPendingPerIp: 1 })
    const a = admitted(ledger, "10.0.0.1")
    expect(ledger.snapshot().pending).toBe(1)
    ledger.release(a)
    expect(ledger.snapshot().pending).toBe(0)
    expect(reasonOf(ledger.admitInbound("10.0.0.1"))).toBe("Admit")
  })

  it("lists established inbound connections oldest first", () => {
    const ledger = new ConnectionLedger(roomy)
    const a = established(ledger, "10.0.0.1")
    admitted(ledger, "10.0.0.2")
    const c = established(ledger, "10.0.0.3")
    ledger.admitOutbound()
    expect(ledger.establishedInbound()).toEqual([a, c])
  })

  it("evicts only an established inbound connection, and only when that admits the newcomer", () => {
    const ledger = new ConnectionLedger({ ...roomy, maxInbound: 3, maxInboundPerIp: 1 })
    const old = established(ledger, "10.0.1.1")
    const pending = admitted(ledger, "10.0.2.1")
    const other = established(ledger, "10.0.3.1")

    // A victim still in its handshake is not eligible.
    expect(reasonOf(ledger.admitInboundEvicting("10.0.4.1", pending))).toBe("InboundFull")
    // Evicting would not help a newcomer that is over its per-address share: nothing is evicted.
    expect(reasonOf(ledger.admitInboundEvicting("10.0.3.1", old))).toBe("PerIp")
    expect(ledger.isOpen(old)).toBe(true)
    // Evicting the newcomer's own address frees its per-address share too.
    const same = ledger.admitInboundEvicting("10.0.3.1", other)
    expect(same).toMatchObject({ _tag: "Admit", evicted: other })
    expect(ledger.isOpen(other)).toBe(false)

    const fresh = ledger.admitInboundEvicting("10.0.4.1", old)
    expect(fresh).toMatchObject({ _tag: "Admit", evicted: old })
    expect(ledger.isOpen(old)).toBe(false)
    expect(ledger.snapshot()).toMatchObject({ inbound: 3, pending: 3 })
    // A released victim is not evicted again.
    expect(reasonOf(ledger.admitInboundEvicting("10.0.5.1", old))).toBe("InboundFull")
  })

  it("does not evict when there is room", () => {
    const ledger = new ConnectionLedger(roomy)
    const a = established(ledger, "10.0.0.1")
    expect(ledger.admitInboundEvicting("10.0.0.2", a)).toMatchObject({ _tag: "Admit", evicted: undefined })
    expect(ledger.isOpen(a)).toBe(true)
  })

  it("rejects limits that are not integers >= 0, and allows 0", () => {
    expect(() => new ConnectionLedger({ maxInbound: -1 })).toThrow(RangeError)
    expect(() => new ConnectionLedger({ maxOutbound: 1.5 })).toThrow(RangeError)
    expect(() => new ConnectionLedger({ maxPendingPerIp: Number.NaN })).toThrow(RangeError)
    const clientOnly = new ConnectionLedger({ maxInbound: 0 })
    expect(reasonOf(clientOnly.admitInbound("10.0.0.1"))).toBe("InboundFull")
    expect(reasonOf(clientOnly.admitOutbound())).toBe("Admit")
  })

  it("hands out counters as a copy", () => {
    const ledger = new ConnectionLedger({ maxOutbound: 0 })
    ledger.admitOutbound()
    const snapshot = ledger.snapshot()
    ;(snapshot.byReason as Record<RefusalReason, number>).OutboundFull = 99
    expect(ledger.snapshot().byReason.OutboundFull).toBe(1)
    expect(refusalReasons).toEqual(["PendingHandshakes", "PendingPerIp", "InboundFull", "PerIp", "PerGroup", "OutboundFull"])
  })
})

// ---------------------------------------------------------------------------
// Model-based properties

/** Hosts with their address key and network written out by hand: several spellings of one address, shared networks. */
const HOSTS: ReadonlyArray<{ readonly host: string; readonly ip: string; readonly group: string }> = [
  { host: "10.0.0.1", ip: "10.0.0.1", group: "10.0.0.0/24" },
  { host: "::ffff:10.0.0.1", ip: "10.0.0.1", group: "10.0.0.0/24" },
  { host: "10.0.0.2", ip: "10.0.0.2", group: "10.0.0.0/24" },
  { host: "10.0.0.3", ip: "10.0.0.3", group: "10.0.0.0/24" },
  { host: "10.0.1.1", ip: "10.0.1.1", group: "10.0.1.0/24" },
  { host: "127.0.0.1", ip: "127.0.0.1", group: "127.0.0.0/24" },
  { host: "2001:db8:1::1", ip: "2001:db8:1::1", group: "2001:db8:1::/48" },
  { host: "2001:DB8:1:0:0:0:0:1", ip: "2001:db8:1::1", group: "2001:db8:1::/48" },
  { host: "2001:db8:1:ff::2", ip: "2001:db8:1:ff::2", group: "2001:db8:1::/48" },
  { host: "2001:db8:2::1", ip: "2001:db8:2::1", group: "2001:db8:2::/48" },
  { host: "fe80::1%eth0", ip: "fe80::1", group: "fe80::/48" }
]

type Op =
  | { readonly kind: "in"; readonly host: number }
  | { readonly kind: "out" }
  | { readonly kind: "done"; readonly pick: number }
  | { readonly kind: "release"; readonly pick: number }
  | { readonly kind: "evict"; readonly host: number; readonly pick: number }

const arbOp: fc.Arbitrary<Op> = fc.oneof(
  { arbitrary: fc.nat(HOSTS.length - 1).map((host): Op => ({ kind: "in", host })), weight: 5 },
  { arbitrary: fc.constant<Op>({ kind: "out" }), weight: 2 },
  { arbitrary: fc.nat().map((pick): Op => ({ kind: "done", pick })), weight: 3 },
  { arbitrary: fc.nat().map((pick): Op => ({ kind: "release", pick })), weight: 3 },
  { arbitrary: fc.tuple(fc.nat(HOSTS.length - 1), fc.nat()).map(([host, pick]): Op => ({ kind: "evict", host, pick })), weight: 2 }
)

const arbLimits: fc.Arbitrary<ConnectionLimits> = fc.record({
  maxInbound: fc.integer({ min: 0, max: 8 }),
  maxOutbound: fc.integer({ min: 0, max: 3 }),
  maxPendingHandshakes: fc.integer({ min: 0, max: 6 }),
  maxPendingPerIp: fc.integer({ min: 0, max: 3 }),
  maxInboundPerIp: fc.integer({ min: 0, max: 4 }),
  maxInboundPerGroup: fc.integer({ min: 0, max: 5 }),
  maxIdleOutbound: fc.integer({ min: 0, max: 3 }),
  idleLingerMs: fc.integer({ min: 0, max: 10_000 })
})

interface ModelConnection {
  readonly ticket: ConnectionTicket
  readonly ip: string | undefined
  readonly group: string | undefined
  pending: boolean
}

/** The first limit, in the documented order, that `open` has reached for a newcomer at `ip` in `group`. */
const modelRefusal = (
  limits: ConnectionLimits,
  open: ReadonlyArray<ModelConnection>,
  ip: string,
  group: string
): InboundRefusal | undefined => {
  const inbound = open.filter((c) => c.ticket.direction === "inbound")
  const pending = inbound.filter((c) => c.pending)
  if (pending.length >= limits.maxPendingHandshakes) return "PendingHandshakes"
  if (pending.filter((c) => c.ip === ip).length >= limits.maxPendingPerIp) return "PendingPerIp"
  if (inbound.length >= limits.maxInbound) return "InboundFull"
  if (inbound.filter((c) => c.ip === ip).length >= limits.maxInboundPerIp) return "PerIp"
  if (inbound.filter((c) => c.group === group).length >= limits.maxInboundPerGroup) return "PerGroup"
  return undefined
}

describe("pendingVictimFor: a full handshake budget gives way by address", () => {
  it("a newcomer from a fresh address displaces the oldest half-open connection of the most crowded address", () => {
    const ledger = new ConnectionLedger({ ...roomy, maxPendingHandshakes: 8, maxPendingPerIp: 4 })
    const floodA = [0, 1, 2, 3].map(() => admitted(ledger, "203.0.113.1"))
    ;[0, 1, 2, 3].forEach(() => admitted(ledger, "203.0.113.2"))
    expect(reasonOf(ledger.admitInbound("198.51.100.7"))).toBe("PendingHandshakes")
    expect(ledger.pendingVictimFor("198.51.100.7")).toBe(floodA[0])
  })

  it("a flooder cannot push out an honest handshake: it may only displace addresses holding two more than itself", () => {
    const ledger = new ConnectionLedger({ ...roomy, maxPendingHandshakes: 5, maxPendingPerIp: 4 })
    admitted(ledger, "198.51.100.7") // the honest peer, mid-handshake
    ;[0, 1, 2, 3].forEach(() => admitted(ledger, "203.0.113.1"))
    // Another flooding address with nothing pending would displace 203.0.113.1 (4 ≥ 0 + 2), never the honest one.
    expect(ledger.pendingVictimFor("203.0.113.9")?.ip).toBe("203.0.113.1")
    // The crowded address itself (4 pending) displaces nobody, and one holding 3 cannot displace one holding 4.
    expect(ledger.pendingVictimFor("203.0.113.1")).toBeUndefined()
    const even = new ConnectionLedger({ ...roomy, maxPendingHandshakes: 4, maxPendingPerIp: 4 })
    ;["203.0.113.1", "203.0.113.2", "203.0.113.3", "198.51.100.7"].forEach((host) => admitted(even, host))
    // Everyone holds one: nobody is displaced, whoever asks.
    expect(even.pendingVictimFor("203.0.113.4")).toBeUndefined()
  })

  it("floods from many addresses holding one handshake each: a fresh address displaces the oldest handshake once it is stale", () => {
    const ledger = new ConnectionLedger({ ...roomy, maxPendingHandshakes: 4, maxPendingPerIp: 4 })
    const [oldest] = ["203.0.113.1", "203.0.113.2", "203.0.113.3", "203.0.113.4"].map((host) => admitted(ledger, host))
    // Before (no judgement of age), and while the oldest is still young: nobody is displaced.
    expect(ledger.pendingVictimFor("198.51.100.7")).toBeUndefined()
    expect(ledger.pendingVictimFor("198.51.100.7", () => false)).toBeUndefined()
    // Stale: the oldest of all gives way, and only that one is asked about.
    const asked: Array<InboundTicket> = []
    expect(ledger.pendingVictimFor("198.51.100.7", (ticket) => (asked.push(ticket), true))).toBe(oldest)
    expect(asked).toEqual([oldest])
    // A newcomer whose address already holds a handshake displaces nobody, stale or not.
    expect(ledger.pendingVictimFor("203.0.113.2", () => true)).toBeUndefined()
    // The crowded-address rule comes first: with an address holding two more, its oldest goes, young or not.
    const crowdedLedger = new ConnectionLedger({ ...roomy, maxPendingHandshakes: 4, maxPendingPerIp: 4 })
    admitted(crowdedLedger, "198.51.100.9")
    const [flooder] = [0, 1, 2].map(() => admitted(crowdedLedger, "203.0.113.1"))
    expect(crowdedLedger.pendingVictimFor("198.51.100.7", () => false)).toBe(flooder)
  })

  it("established connections are never chosen", () => {
    const ledger = new ConnectionLedger({ ...roomy, maxPendingHandshakes: 2, maxPendingPerIp: 4 })
    ;[0, 1, 2].forEach(() => established(ledger, "203.0.113.1"))
    admitted(ledger, "198.51.100.7")
    admitted(ledger, "198.51.100.8")
    expect(ledger.pendingVictimFor("100.64.0.1")).toBeUndefined()
  })
})

describe("idleBeyond: how many idle connections stay open", () => {
  const connection = (name: string, lastActive: number | undefined) => ({ name, lastActive })
  const namesBeyond = (keep: number, list: ReadonlyArray<{ readonly name: string; readonly lastActive: number | undefined }>) =>
    idleBeyond(list, keep, (c) => c.lastActive, 100, 0).close.map((c) => c.name)

  it("closes the least recently active idle connections beyond the cap, oldest first", () => {
    const list = [connection("a", 50), connection("b", 10), connection("c", 40), connection("d", 20)]
    expect(namesBeyond(2, list)).toEqual(["b", "d"])
    expect(namesBeyond(4, list)).toEqual([])
    expect(namesBeyond(0, list)).toEqual(["b", "d", "c", "a"])
  })

  it("never closes a connection with a call in flight, nor counts it against the cap", () => {
    const list = [connection("busy-old", undefined), connection("a", 30), connection("busy", undefined), connection("b", 20)]
    expect(namesBeyond(2, list)).toEqual([])
    expect(namesBeyond(1, list)).toEqual(["b"])
  })

  it("of equals, closes the first, as leastRecentlyActive would pick it", () => {
    expect(namesBeyond(1, [connection("first", 5), connection("second", 5)])).toEqual(["first"])
  })

  it("closes one beyond the cap only once it has lingered, and says when the next one will have", () => {
    const list = [connection("a", 50), connection("b", 10), connection("c", 40), connection("d", 20)]
    const at = (now: number) => {
      const decision = idleBeyond(list, 1, (c) => c.lastActive, now, 25)
      return { close: decision.close.map((c) => c.name), recheckAt: decision.recheckAt }
    }
    // Beyond the cap of 1: b (10), d (20), c (40); a (50) stays as the most recent.
    expect(at(30)).toEqual({ close: [], recheckAt: 35 })
    expect(at(35)).toEqual({ close: ["b"], recheckAt: 45 })
    expect(at(64)).toEqual({ close: ["b", "d"], recheckAt: 65 })
    expect(at(65)).toEqual({ close: ["b", "d", "c"], recheckAt: undefined })
    // Within the cap nothing lingers or closes, however old.
    expect(idleBeyond(list, 4, (c) => c.lastActive, 1_000, 25)).toEqual({ close: [], recheckAt: undefined })
  })
})

describe("ConnectionLedger properties", () => {
  it.prop(
    "counts equal admitted minus released and never go negative; every decision is the model's",
    [arbLimits, fc.array(arbOp, { minLength: 1, maxLength: 200, size: "max" })],
    ([limits, ops]) => {
      const ledger = new ConnectionLedger(limits)
      let open: Array<ModelConnection> = []
      const closed: Array<ConnectionTicket> = []
      const refusals: Record<RefusalReason, number> = {
        PendingHandshakes: 0, PendingPerIp: 0, InboundFull: 0, PerIp: 0, PerGroup: 0, OutboundFull: 0
      }
      /** An open connection, or now and then one already closed (stale tickets must be harmless). */
      const pickTicket = (pick: number): ConnectionTicket | undefined => {
        const all = [...open.map((c) => c.ticket), ...closed]
        return all.length === 0 ? undefined : all[pick % all.length]
      }
      const release = (ticket: ConnectionTicket): void => {
        open = open.filter((c) => c.ticket.id !== ticket.id)
        closed.push(ticket)
      }

      // Plain checks collected per run, one expect at the end: expect is slow in loops.
      const violations: Array<string> = []
      const same = (actual: unknown, expected: unknown, what: string): void => {
        if (JSON.stringify(actual) !== JSON.stringify(expected)) {
          violations.push(`${what}: got ${JSON.stringify(actual)}, expected ${JSON.stringify(expected)}`)
        }
      }
      const atMost = (actual: number, bound: number, what: string): void => {
        if (!(actual <= bound)) violations.push(`${what}: ${actual} > ${bound}`)
      }

      let step = 0
      for (const op of ops) {
        if (violations.length > 0) break
        switch (op.kind) {
          case "in": {
            const { host, ip, group } = HOSTS[op.host] as (typeof HOSTS)[number]
            const expected = modelRefusal(limits, open, ip, group)
            const decision = ledger.admitInbound(host)
            same(reasonOf(decision), expected ?? "Admit", `admitInbound(${host})`)
            if (decision._tag === "Admit") {
              same([decision.ticket.direction, decision.ticket.ip, decision.ticket.group], ["inbound", ip, group], "ticket")
              open.push({ ticket: decision.ticket, ip, group, pending: true })
            } else {
              refusals[decision.reason]++
            }
            break
          }
          case "out": {
            const decision = ledger.admitOutbound()
            const full = open.filter((c) => c.ticket.direction === "outbound").length >= limits.maxOutbound
            same(reasonOf(decision), full ? "OutboundFull" : "Admit", "admitOutbound")
            if (decision._tag === "Admit") open.push({ ticket: decision.ticket, ip: undefined, group: undefined, pending: false })
            else refusals.OutboundFull++
            break
          }
          case "done": {
            const ticket = pickTicket(op.pick)
            if (ticket === undefined) break
            const entry = open.find((c) => c.ticket.id === ticket.id)
            const wasPending = entry !== undefined && entry.pending
            same(ledger.handshakeDone(ticket), wasPending, `handshakeDone(${ticket.id})`)
            if (entry !== undefined) entry.pending = false
            break
          }
          case "release": {
            const ticket = pickTicket(op.pick)
            if (ticket === undefined) break
            const isOpen = open.some((c) => c.ticket.id === ticket.id)
            same(ledger.release(ticket), isOpen, `release(${ticket.id})`)
            if (isOpen) release(ticket)
            break
          }
          case "evict": {
            const { host, ip, group } = HOSTS[op.host] as (typeof HOSTS)[number]
            const victim = pickTicket(op.pick)
            if (victim === undefined || victim.direction !== "inbound") break
            const plain = modelRefusal(limits, open, ip, group)
            const victimEntry = open.find((c) => c.ticket.id === victim.id)
            const eligible = victimEntry !== undefined && !victimEntry.pending
            const withEviction = eligible ? modelRefusal(limits, open.filter((c) => c !== victimEntry), ip, group) : plain
            const expected = plain === undefined ? undefined : plain === "InboundFull" ? withEviction : plain
            const evicts = plain === "InboundFull" && eligible && withEviction === undefined
            const decision = ledger.admitInboundEvicting(host, victim)
            same(reasonOf(decision), expected ?? "Admit", `admitInboundEvicting(${host}, ${victim.id})`)
            if (decision._tag === "Admit") {
              same(decision.evicted?.id, evicts ? victim.id : undefined, "evicted")
              if (evicts) release(victim)
              open.push({ ticket: decision.ticket, ip, group, pending: true })
            } else {
              refusals[decision.reason]++
            }
            break
          }
        }
        const inbound = open.filter((c) => c.ticket.direction === "inbound")
        const snapshot = ledger.snapshot()
        same(snapshot, {
          inbound: inbound.length,
          outbound: open.length - inbound.length,
          pending: inbound.filter((c) => c.pending).length,
          byReason: refusals
        }, "snapshot")
        // The limits hold: nothing admitted beyond them (a refusal is the only way to stay within).
        atMost(snapshot.inbound, limits.maxInbound, "inbound")
        atMost(snapshot.outbound, limits.maxOutbound, "outbound")
        atMost(snapshot.pending, limits.maxPendingHandshakes, "pending")
        // Per-address counts of every host now and then (each is a parse), of the host just seen always.
        const hostIndex = op.kind === "in" || op.kind === "evict" ? op.host : -1
        const checked = step++ % 8 === 0 ? HOSTS : HOSTS.filter((_, i) => i === hostIndex)
        for (const { host, ip, group } of checked) {
          same(ledger.inboundFrom(host), inbound.filter((c) => c.ip === ip).length, `inboundFrom(${host})`)
          same(ledger.inboundFromGroup(host), inbound.filter((c) => c.group === group).length, `inboundFromGroup(${host})`)
          atMost(ledger.inboundFrom(host), limits.maxInboundPerIp, `inboundFrom(${host})`)
          atMost(ledger.inboundFromGroup(host), limits.maxInboundPerGroup, `inboundFromGroup(${host})`)
        }
        same(ledger.establishedInbound().map((t) => t.id), inbound.filter((c) => !c.pending).map((c) => c.ticket.id), "establishedInbound")
      }
      expect(violations).toEqual([])
      // Closing everything, in any order and more than once, returns every count to zero.
      for (const c of [...open]) ledger.release(c.ticket)
      for (const ticket of closed) ledger.release(ticket)
      expect(ledger.snapshot()).toMatchObject({ inbound: 0, outbound: 0, pending: 0 })
    },
    propOptions(250)
  )

  it.prop(
    "an address that opens hundreds of handshakes holds at most maxPendingPerIp of them and blocks no other address",
    [
      fc.integer({ min: 1, max: 8 }),
      fc.array(fc.tuple(fc.integer({ min: 1, max: 254 }), fc.integer({ min: 0, max: 255 })), { maxLength: 60 }),
      fc.array(fc.boolean(), { minLength: 300, maxLength: 300 })
    ],
    ([maxPendingPerIp, honest, interleave]) => {
      const limits = { ...defaultConnectionLimits, maxPendingPerIp }
      const ledger = new ConnectionLedger(limits)
      const attacker = "203.0.113.7"
      // Honest peers: distinct networks except for one that shares the attacker's /24.
      const honestHosts = [...new Set(honest.map(([a, b]) => `${a}.${b}.9.1`)), "203.0.113.8"]
      const violations: Array<string> = []
      let next = 0
      for (const honestTurn of interleave) {
        if (honestTurn && next < honestHosts.length) {
          const host = honestHosts[next++] as string
          const decision = ledger.admitInbound(host)
          if (decision._tag === "Admit") ledger.handshakeDone(decision.ticket)
          else violations.push(`${host} refused: ${decision.reason}`)
        }
        const hostile = ledger.admitInbound(attacker) // never completes its handshake
        if (hostile._tag === "Refuse" && hostile.reason !== "PendingPerIp") violations.push(`attacker refused for ${hostile.reason}`)
        if (ledger.inboundFrom(attacker) > maxPendingPerIp) violations.push(`attacker holds ${ledger.inboundFrom(attacker)}`)
        // Honest handshakes finish at once, so the attacker's are all that are pending.
        if (ledger.snapshot().pending > maxPendingPerIp) violations.push(`pending ${ledger.snapshot().pending}`)
      }
      expect(violations).toEqual([])
      expect(ledger.inboundFrom(attacker)).toBe(maxPendingPerIp)
      expect(ledger.snapshot().byReason.PendingPerIp).toBe(300 - maxPendingPerIp)
      // Every honest peer not yet let in still gets in, including the attacker's neighbour, and so do our own calls.
      for (const host of honestHosts.slice(next)) expect(ledger.admitInbound(host)._tag, host).toBe("Admit")
      expect(ledger.admitOutbound()._tag).toBe("Admit")
    },
    propOptions(200)
  )
})
