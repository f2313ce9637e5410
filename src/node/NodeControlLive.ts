/**
 * The `NodeControl` a real node offers its local user, assembled from the DHT
 * node, its routing table and the user directory. Its status counts the live
 * peers (core `PeerLiveness`), and for that it keeps probing the quietest
 * contacts (`Liveness`) for as long as it runs.
 *
 * @since 0.1.0
 */
import { Clock, Effect, Layer, Option } from "effect"
import { type Address, formatAddress } from "../core/Contact.js"
import type { ClaimCheckStats } from "../core/ClaimCheckBudget.js"
import { livePeerCount } from "../core/PeerLiveness.js"
import { formatPeerAddress, routesOf } from "../core/PeerAddress.js"
import { fingerprintOf, formatFingerprint } from "../core/Pinning.js"
import type { UserRecord } from "../core/UserRecord.js"
import { type BootstrapState, NodeControl, type WhoisAnswer } from "./Control.js"
import { DhtNode, type BootstrapState as DhtBootstrapState } from "./DhtNode.js"
import { Circuits } from "./Circuits.js"
import { HolePunching } from "./HolePunching.js"
import { Directory } from "./Directory.js"
import { keepLivenessFresh } from "./Liveness.js"
import { Routing } from "./Routing.js"
import { Transport, type TransportHealth } from "./Transport.js"

/** The control answer for a user record. */
export const whoisAnswerOf = (record: UserRecord, warning?: string): WhoisAnswer => {
  const addresses = record.addresses.map(formatAddress)
  const relays = (record.relays ?? []).map((relay) => `${relay.relayId.slice(0, 16)}@${formatAddress(relay.address)}`)
  const firstRoute = routesOf(record)[0]
  return {
    username: record.username,
    fingerprint: formatFingerprint(fingerprintOf(record.signingKey)),
    nodeId: record.nodeId,
    // The schema guarantees at least one address or relay.
    address: firstRoute === undefined ? "" : formatPeerAddress(firstRoute),
    addresses,
    ...(relays.length === 0 ? {} : { relays }),
    sequence: record.sequence,
    expiresAt: record.expiresAt,
    ...(warning === undefined ? {} : { warning })
  }
}

const bootstrapStateOf = (state: DhtBootstrapState, addresses: ReadonlyArray<Address>): BootstrapState => {
  switch (state._tag) {
    case "Standalone":
      return { _tag: "Standalone" }
    case "Joining":
      return {
        _tag: "Joining",
        attempts: state.attempts,
        lastError: state.lastError ?? null,
        nextAttemptAt: state.nextAttemptAt ?? null,
        addresses: addresses.map(formatAddress)
      }
    case "Joined":
      return { _tag: "Joined", joinedAt: state.joinedAt }
  }
}

/**
 * The transport's health with the claims the claim-check budget refused
 * (ClaimPeerRate, ClaimGlobalRate) among the rate-limited requests: each
 * refused check refused the request that brought it. Only those that refused
 * something, as the transport lists its own limits.
 */
const withClaimRefusals = (health: TransportHealth, claimChecks: ClaimCheckStats): TransportHealth => {
  const refused = Object.entries(claimChecks.refused).filter(([, count]) => count > 0)
  return refused.length === 0 ? health : { ...health, rateLimited: { ...health.rateLimited, ...Object.fromEntries(refused) } }
}

/** `NodeControl` over the running node's services; probes quiet peers while the layer lives. */
export const nodeControlLayer = Layer.scoped(
  NodeControl,
  Effect.gen(function*() {
    const dht = yield* DhtNode
    const routing = yield* Routing
    const directory = yield* Directory
    const transport = yield* Transport
    yield* keepLivenessFresh
    const circuits = yield* Effect.serviceOption(Circuits)
    const holePunching = yield* Effect.serviceOption(HolePunching)
    return {
      status: Effect.gen(function*() {
        const status = yield* dht.status
        const username = yield* directory.username.pipe(Effect.orElseSucceed(() => Option.none()))
        const now = yield* Clock.currentTimeMillis
        const holePunches = Option.isNone(holePunching) ? undefined : yield* Effect.map(
          holePunching.value.status,
          ({ answered, failed, refused, succeeded }) => ({ succeeded, failed, answered, refused })
        )
        return {
          nodeId: status.nodeId,
          listen: formatAddress(status.address),
          username: Option.getOrNull(username),
          peers: status.contactCount,
          livePeers: livePeerCount(yield* routing.snapshot, now),
          bootstrap: bootstrapStateOf(status.bootstrap, status.bootstrapAddresses),
          connections: withClaimRefusals(yield* transport.health, status.claimChecks),
          reachability: status.reachability,
          ...(Option.isNone(circuits) ? {} : {
            circuits: yield* Effect.map(circuits.value.status, (held) => ({
              relays: held.relays.map((relay) => formatAddress(relay.address)),
              reservationsServed: held.reservationsServed,
              circuitsServed: held.circuitsServed,
              circuitsRelayed: held.circuitsRelayed,
              ...(holePunches === undefined ? {} : { holePunches })
            }))
          }),
          ...Option.match(yield* directory.ownNameWarning, { onNone: () => ({}), onSome: (nameWarning) => ({ nameWarning }) })
        }
      }),
      peers: routing.contacts,
      register: (username) =>
        Effect.map(directory.register(username), ({ record, warning }) => whoisAnswerOf(record, warning)),
      whois: (username) => Effect.map(directory.whois(username), whoisAnswerOf),
      // The node runs until its process is interrupted (`peerchat start`, or the chat that started it): SIGTERM to
      // itself takes the same clean path as Ctrl-C. The signal arrives on a later turn of the event loop, and the
      // control server lets the answer in progress finish before it closes.
      stop: Effect.sync(() => {
        process.kill(process.pid, "SIGTERM")
        return { pid: process.pid }
      })
    }
  })
)
