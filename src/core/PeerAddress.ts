/**
 * Where a node can be reached: directly at a host and port, or — when it sits
 * behind a NAT or a firewall that drops inbound connections — through a
 * relay, a publicly reachable node it keeps a reservation with (Circuit
 * Relay v2 style, see `CircuitRelay.ts`). A caller of a relayed node asks the
 * relay for a circuit and runs the end-to-end secure channel through it, so
 * the relay carries ciphertext only.
 *
 * A user record lists both kinds (`addresses` and `relays`); `routesOf`
 * orders them as a caller should try them.
 *
 * @since 0.3.0
 */
import { Schema } from "effect"
import { Address, addressEquals, formatAddress } from "./Contact.js"
import { NodeId } from "./Id.js"
import type { Reachability } from "./Reachability.js"

/** A relay a node keeps a reservation with: the relay's node id (which it must prove) and its address. */
export const RelayHint = Schema.Struct({
  relayId: NodeId,
  address: Address
})
/** @see RelayHint */
export type RelayHint = typeof RelayHint.Type

/** A route to a node: dial it, or open a circuit to it through a relay. */
export type PeerAddress =
  | { readonly _tag: "Direct"; readonly address: Address }
  | { readonly _tag: "Relayed"; readonly relay: RelayHint }

/** A direct route. */
export const direct = (address: Address): PeerAddress => ({ _tag: "Direct", address })

/** A route through `relay`. */
export const relayed = (relay: RelayHint): PeerAddress => ({ _tag: "Relayed", relay })

/**
 * The routes to a node whose record lists `addresses` and `relays`, in the
 * order to try them: direct addresses first (no third party, lowest
 * latency), then each relay.
 */
export const routesOf = (record: {
  readonly addresses: ReadonlyArray<Address>
  readonly relays?: ReadonlyArray<RelayHint> | undefined
}): ReadonlyArray<PeerAddress> => [
  ...record.addresses.map(direct),
  ...(record.relays ?? []).map(relayed)
]

/** A route as people read it: `host:port`, or `via host:port` for a relay. */
export const formatPeerAddress = (route: PeerAddress): string =>
  route._tag === "Direct" ? formatAddress(route.address) : `via ${formatAddress(route.relay.address)}`

/** True when two relay hints name the same relay at the same address. */
export const relayHintEquals = (a: RelayHint, b: RelayHint): boolean =>
  a.relayId === b.relayId && a.address.host === b.address.host && a.address.port === b.address.port

/** Where this node says it can be reached: its own address, or the relays it holds reservations with. */
export interface AdvertisedRoutes {
  readonly addresses: ReadonlyArray<Address>
  readonly relays: ReadonlyArray<RelayHint>
}

/**
 * What a record should list, given what peers found (`reachability`): a
 * node they could not dial lists its relays (once it has any) rather than
 * an address nobody can reach; any other lists its own address.
 */
export const advertisedRoutes = (
  reachability: Reachability,
  localAddress: Address,
  relays: ReadonlyArray<RelayHint>
): AdvertisedRoutes =>
  reachability === "Private" && relays.length > 0 ? { addresses: [], relays } : { addresses: [localAddress], relays: [] }

/** True when two sets of advertised routes list the same addresses and relays, in the same order. */
export const advertisedRoutesEqual = (a: AdvertisedRoutes, b: AdvertisedRoutes): boolean =>
  a.addresses.length === b.addresses.length &&
  a.addresses.every((address, index) => addressEquals(address, b.addresses[index] as Address)) &&
  a.relays.length === b.relays.length &&
  a.relays.every((relay, index) => relayHintEquals(relay, b.relays[index] as RelayHint))
