import { describe, expect, it } from "@effect/vitest"
import { dialBackSlotLimits, DialBackSlots } from "../../src/core/DialBackSlots.js"

describe("DialBackSlots", () => {
  it("ATTACK: one host holds at most its share, one node id one slot, whatever ports it names", () => {
    const slots = new DialBackSlots({ total: 32, perHost: 2, perGroup: 32 })
    expect(slots.take("a", "198.51.100.7")._tag).toBe("Taken")
    // The same id again (a new port in each request): one slot at a time.
    expect(slots.take("a", "198.51.100.7")).toEqual({ _tag: "Refused", reason: "UnderWay" })
    expect(slots.take("b", "198.51.100.7")._tag).toBe("Taken")
    expect(slots.take("c", "198.51.100.7")).toEqual({ _tag: "Refused", reason: "HostBusy" })
    // An IPv6 host is its /64: rotating addresses inside it buys nothing.
    expect(slots.take("d", "2001:db8:0:1::1")._tag).toBe("Taken")
    expect(slots.take("e", "2001:db8:0:1:ffff::2")._tag).toBe("Taken")
    expect(slots.take("f", "2001:db8:0:1:1:2:3:4")).toEqual({ _tag: "Refused", reason: "HostBusy" })
    expect(slots.held).toBe(4)
  })

  it("ATTACK: one network (an IPv4 /24, an IPv6 /48 of many /64s) holds at most its share", () => {
    const slots = new DialBackSlots(dialBackSlotLimits(32))
    for (const [index, host] of ["2001:db8:7:1::1", "2001:db8:7:2::1", "2001:db8:7:3::1", "2001:db8:7:4::1"].entries()) {
      expect(slots.take(`v6-${index}`, host)._tag).toBe("Taken")
    }
    expect(slots.take("v6-more", "2001:db8:7:5::1")).toEqual({ _tag: "Refused", reason: "NetworkBusy" })
    for (const last of [1, 2, 3, 4]) expect(slots.take(`v4-${last}`, `203.0.113.${last}`)._tag).toBe("Taken")
    expect(slots.take("v4-more", "203.0.113.99")).toEqual({ _tag: "Refused", reason: "NetworkBusy" })
    // Other networks are not held back.
    expect(slots.take("elsewhere", "198.51.100.1")._tag).toBe("Taken")
  })

  it("stops at its total whatever the hosts", () => {
    const slots = new DialBackSlots({ total: 3, perHost: 2, perGroup: 4 })
    for (const last of [1, 2, 3]) expect(slots.take(`n${last}`, `10.0.${last}.1`)._tag).toBe("Taken")
    expect(slots.take("n4", "10.0.4.1")).toEqual({ _tag: "Refused", reason: "AllBusy" })
  })

  it("gives slots back once, even when the node id took a new one since", () => {
    const slots = new DialBackSlots({ total: 2, perHost: 1, perGroup: 2 })
    const first = slots.take("a", "198.51.100.7")
    if (first._tag !== "Taken") throw new Error("refused")
    slots.release(first)
    expect(slots.held).toBe(0)
    const second = slots.take("a", "198.51.100.7")
    expect(second._tag).toBe("Taken")
    // The old slot released again frees nothing: the host's one slot stays held by the new one.
    slots.release(first)
    expect(slots.held).toBe(1)
    expect(slots.take("b", "198.51.100.7")).toEqual({ _tag: "Refused", reason: "HostBusy" })
    if (second._tag === "Taken") slots.release(second)
    expect(slots.take("b", "198.51.100.7")._tag).toBe("Taken")
  })
})
