/**
 * Request budgets: one flooding peer, one host with many ids, and the node as
 * a whole; each is refused at its own limit and the others are untouched.
 */
import { describe, expect, it } from "@effect/vitest"
import { defaultRequestLimits, RequestLimiter } from "../../src/core/RequestLimits.js"

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

  it("the global budget caps the node's total work whatever the number of peers and hosts", () => {
    const limiter = new RequestLimiter(0, { globalBurst: 100, globalRate: 10 })
    let allowed = 0
    for (let host = 0; host < 1000; host++) allowed += admitted(limiter, `peer-${host}`, `10.0.${host >> 8}.${host & 255}`, 1, 0)
    expect(allowed).toBe(100)
    expect(limiter.refusals().GlobalRate).toBe(900)
    expect(admitted(limiter, "later", "10.9.9.9", 100, 2000)).toBe(20)
  })

  it("says when to retry", () => {
    const limiter = new RequestLimiter(0, { perPeerBurst: 1, perPeerRate: 2 })
    expect(limiter.admit("p", "1.2.3.4", 0)._tag).toBe("Admit")
    expect(limiter.admit("p", "1.2.3.4", 0)).toEqual({ _tag: "Refuse", reason: "PeerRate", retryAfterMillis: 500 })
  })
})
