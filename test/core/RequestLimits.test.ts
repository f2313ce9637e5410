/**
 * Request budgets: one flooding peer, one host with many ids, and the node as
 * a whole; each is refused at its own limit and the others are untouched.
 */
import { describe, expect, it } from "@effect/vitest"
import { defaultRequestLimits, requestCost, RequestLimiter } from "../../src/core/RequestLimits.js"

const admitted = (limiter: RequestLimiter, peer: string, ip: string, count: number, now: number): number => {
  let allowed = 0
  for (let i = 0; i < count; i++) if (limiter.admit(peer, ip, now)._tag === "Admit") allowed++
  return allowed
}

describe("RequestLimiter", () => {
  it("cuts one flooding peer to its burst, then its rate; another peer on another host is not affected", () => {
    const limiter = new RequestLimiter(0)
    expect(admitted(limiter, "flooder", "203.0.113.1", 26_000, 0)).toBe(defaultRequestLimits.perPeerBurst)
    // One second later it has earned one second's worth.
    expect(admitted(limiter, "flooder", "203.0.113.1", 1000, 1000)).toBe(defaultRequestLimits.perPeerRate)
    expect(admitted(limiter, "honest", "198.51.100.1", 10, 1000)).toBe(10)
    expect(limiter.refusals().PeerRate).toBe(26_000 - 400 + 900)
  })

  it("one host with many fresh ids is held to the per-IP budget", () => {
    const limiter = new RequestLimiter(0, { perPeerBurst: 10, perIpBurst: 50, perIpRate: 1 })
    let allowed = 0
    for (let id = 0; id < 100; id++) allowed += admitted(limiter, `sybil-${id}`, "203.0.113.7", 10, 0)
    expect(allowed).toBe(50)
    expect(limiter.refusals().IpRate).toBe(950)
    expect(admitted(limiter, "honest", "198.51.100.1", 10, 0)).toBe(10)
  })

  it("the global budget, plus a reserve each peer may draw on a little, caps the node's total work", () => {
    const limiter = new RequestLimiter(0, { globalBurst: 100, globalRate: 10 })
    let allowed = 0
    // 1,000 light peers on 1,000 hosts: the global burst, then the reserve (a quarter of it).
    for (let host = 0; host < 1000; host++) allowed += admitted(limiter, `peer-${host}`, `10.0.${host >> 8}.${host & 255}`, 1, 0)
    expect(allowed).toBe(125)
    expect(limiter.refusals().GlobalRate).toBe(875)
    expect(admitted(limiter, "later", "10.9.9.9", 100, 2000)).toBe(25)
  })

  it("50 peers flooding within their own budgets cannot crowd out a peer that asks little", () => {
    const limiter = new RequestLimiter(0)
    let flood = 0
    let honest = 0
    for (let second = 0; second < 10; second++) {
      const now = second * 1000
      // Each flooder asks its full 100/s (5,000/s together); the honest peer asks 5/s, after them.
      for (let peer = 0; peer < 50; peer++) flood += admitted(limiter, `flooder-${peer}`, `203.0.${peer}.1`, 100, now)
      honest += admitted(limiter, "honest", "198.51.100.1", 5, now)
    }
    expect(honest).toBe(50)
    // The flood gets the global budget and the reserve (bursts, then 2,000/s + 500/s), not 5,000/s.
    expect(flood).toBeLessThanOrEqual(4000 + 1000 + 2500 * 10)
    expect(limiter.refusals().GlobalRate).toBeGreaterThan(15_000)
  })

  it("a Store costs 20 requests: it may cost a scrypt evaluation", () => {
    const limiter = new RequestLimiter(0)
    let stores = 0
    while (limiter.admit("p", "1.2.3.4", 0, requestCost("Store"))._tag === "Admit") stores++
    expect(stores).toBe(defaultRequestLimits.perPeerBurst / 20)
    expect(requestCost("FindNode")).toBe(1)
  })

  it("says when to retry", () => {
    const limiter = new RequestLimiter(0, { perPeerBurst: 1, perPeerRate: 2 })
    expect(limiter.admit("p", "1.2.3.4", 0)._tag).toBe("Admit")
    expect(limiter.admit("p", "1.2.3.4", 0)).toEqual({ _tag: "Refuse", reason: "PeerRate", retryAfterMillis: 500 })
  })
})
