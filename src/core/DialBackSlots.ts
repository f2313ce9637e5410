/**
 * Dial-backs under way: the listening probes a node runs to check callers'
 * addresses, and who may hold them. A probe of an address that drops SYNs,
 * or accepts and never answers, holds its slot for the probe's whole
 * timeout, and the address is the caller's to name: so without per-caller
 * bounds one host could keep every slot busy with addresses of its own and
 * no honest caller would be checked (or, for `DialBack` requests, answered).
 *
 * Each kind of dial-back (the routing table's checks of its callers, and the
 * `DialBack` requests peers make) has slots of its own, at most
 * `limits.total` at once, so neither kind can take the other's; within a
 * kind, at most `limits.perHost` for one host (an IPv4 address or an IPv6
 * /64, `hostKeyOf`), `limits.perGroup` for one network (an IPv4 /24, an IPv6
 * /48, `addressGroupOf`: a /48 holds 65,536 /64s) and one at a time per node
 * id (a caller naming a new port in each request gains one slot, not one per
 * port).
 *
 * A small mutable object like `ConnectionLedger`: synchronous, so atomic
 * between fibers; the caller releases every slot it took. Bound: one entry
 * per slot held, at most `limits.total`.
 *
 * @since 0.4.0
 */
import { addressGroupOf, hostKeyOf } from "./AddressGroup.js"
import { countDown, countOf, countUp } from "./KeyCounts.js"

/** How many dial-backs of one kind run at once. */
export interface DialBackSlotLimits {
  /** In all. */
  readonly total: number
  /** For callers on one host (IPv4 address, IPv6 /64). */
  readonly perHost: number
  /** For callers on one network (IPv4 /24, IPv6 /48). */
  readonly perGroup: number
}

/** A slot taken: give it back with `release`. */
export interface DialBackSlot {
  readonly _tag: "Taken"
  readonly nodeId: string
  readonly hostKey: string
  readonly group: string
}

/** Why no slot was given: all taken, the host's share taken, or this node id's dial-back is under way already. */
export interface DialBackRefusal {
  readonly _tag: "Refused"
  readonly reason: "AllBusy" | "HostBusy" | "NetworkBusy" | "UnderWay"
}

/** Each kind's limits: 32 at once, 2 for one host, 4 for one network. */
export const dialBackSlotLimits = (total: number): DialBackSlotLimits => ({ total, perHost: 2, perGroup: 4 })

export class DialBackSlots {
  private readonly byHost = new Map<string, number>()
  private readonly byGroup = new Map<string, number>()
  private readonly byNode = new Map<string, DialBackSlot>()

  constructor(readonly limits: DialBackSlotLimits) {}

  /** Slots held now. */
  get held(): number {
    return this.byNode.size
  }

  /** Takes a slot to dial back `nodeId`, which called from `host`, or says why not. */
  take(nodeId: string, host: string): DialBackSlot | DialBackRefusal {
    if (this.byNode.has(nodeId)) return { _tag: "Refused", reason: "UnderWay" }
    if (this.byNode.size >= this.limits.total) return { _tag: "Refused", reason: "AllBusy" }
    const hostKey = hostKeyOf(host)
    if (countOf(this.byHost, hostKey) >= this.limits.perHost) return { _tag: "Refused", reason: "HostBusy" }
    const group = addressGroupOf(host)
    if (countOf(this.byGroup, group) >= this.limits.perGroup) return { _tag: "Refused", reason: "NetworkBusy" }
    countUp(this.byHost, hostKey)
    countUp(this.byGroup, group)
    const slot: DialBackSlot = { _tag: "Taken", nodeId, hostKey, group }
    this.byNode.set(nodeId, slot)
    return slot
  }

  /** Gives `slot` back (once: releasing it again, even after its node id took a new slot, changes nothing). */
  release(slot: DialBackSlot): void {
    if (this.byNode.get(slot.nodeId) !== slot) return
    this.byNode.delete(slot.nodeId)
    countDown(this.byHost, slot.hostKey)
    countDown(this.byGroup, slot.group)
  }
}
