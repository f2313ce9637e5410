import { describe, expect, it } from "@effect/vitest"
import { DialBackSlots } from "../../src/core/DialBackSlots.js"

describe("DialBackSlots", () => {
  it("ATTACK: one host holds at most its share, one node id one slot, whatever ports it names", () => {
    const slots = new DialBackSlots({ total: 4, perHost: 2 })
    expect(slots.take("a", "198.51.100.7")._tag).toBe("Taken")
    // The same id again (a new port in each request): one slot at a time.
    expect(slots.take("a", "198.51.100.7")).toEqual({ _tag: "Refused", reason: "UnderWay" })
    expect(slots.take("b", "198.51.100.7")._tag).toBe("Taken")
    // A third id on the same host, or in the same IPv6 /64, waits for the host's share.
    expect(slots.take("c", "198.51.100.7")).toEqual({ _tag: "Refused", reason: "HostBusy" })
    expect(slots.take("d", "2001:db8::1")._tag).toBe("Taken")
    expect(slots.take("e", "2001:db8::2")._tag).toBe("Taken")
    expect(slots.take("f", "2001:db8::3")).toEqual({ _tag: "Refused", reason: "AllBusy" })
    expect(slots.held).toBe(4)
  })

  it("gives slots back once, even when the node id took a new one since", () => {
    const slots = new DialBackSlots({ total: 2, perHost: 1 })
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
