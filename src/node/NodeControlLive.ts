/**
 * The `NodeControl` a real node offers its local user, assembled from the DHT
 * node, its routing table and the user directory.
 *
 * @since 0.1.0
 */
import { Effect, Layer, Option } from "effect"
import { formatAddress } from "../core/Contact.js"
import { fingerprintOf, formatFingerprint } from "../core/Pinning.js"
import type { UserRecord } from "../core/UserRecord.js"
import { type BootstrapState, NodeControl, type WhoisAnswer } from "./Control.js"
import { DhtNode, type BootstrapState as DhtBootstrapState } from "./DhtNode.js"
import { Directory } from "./Directory.js"
import { Routing } from "./Routing.js"
import { Transport } from "./Transport.js"

/** The control answer for a user record. */
export const whoisAnswerOf = (record: UserRecord, warning?: string): WhoisAnswer => {
  const addresses = record.addresses.map(formatAddress)
  return {
    username: record.username,
    fingerprint: formatFingerprint(fingerprintOf(record.signingKey)),
    nodeId: record.nodeId,
    // The schema guarantees at least one address.
    address: addresses[0] ?? "",
    addresses,
    sequence: record.sequence,
    expiresAt: record.expiresAt,
    ...(warning === undefined ? {} : { warning })
  }
}

const bootstrapStateOf = (state: DhtBootstrapState): BootstrapState => {
  switch (state._tag) {
    case "Standalone":
      return { _tag: "Standalone" }
    case "Joining":
      return {
        _tag: "Joining",
        attempts: state.attempts,
        lastError: state.lastError ?? null,
        nextAttemptAt: state.nextAttemptAt ?? null
      }
    case "Joined":
      return { _tag: "Joined", joinedAt: state.joinedAt }
  }
}

/** `NodeControl` over the running node's services. */
export const nodeControlLayer = Layer.effect(
  NodeControl,
  Effect.gen(function*() {
    const dht = yield* DhtNode
    const routing = yield* Routing
    const directory = yield* Directory
    const transport = yield* Transport
    return {
      status: Effect.gen(function*() {
        const status = yield* dht.status
        const username = yield* directory.username.pipe(Effect.orElseSucceed(() => Option.none()))
        return {
          nodeId: status.nodeId,
          listen: formatAddress(status.address),
          username: Option.getOrNull(username),
          peers: status.contactCount,
          bootstrap: bootstrapStateOf(status.bootstrap),
          connections: yield* transport.health,
          reachability: status.reachability,
          ...Option.match(yield* directory.ownNameWarning, { onNone: () => ({}), onSome: (nameWarning) => ({ nameWarning }) })
        }
      }),
      peers: routing.contacts,
      register: (username) =>
        Effect.map(directory.register(username), ({ record, warning }) => whoisAnswerOf(record, warning)),
      whois: (username) => Effect.map(directory.whois(username), whoisAnswerOf)
    }
  })
)
