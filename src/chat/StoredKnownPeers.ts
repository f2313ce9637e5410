/**
 * The node's known peers kept in the chat store: `KnownPeers` over the
 * routing-table snapshot of `ChatStore`, so a restarted node finds the peers
 * it knew (the chat store keeps the `maxSnapshotContacts` most recently seen).
 * A storage failure is logged and never reaches the node: a snapshot that
 * cannot be read loads as empty (the node joins through its bootstrap peers
 * alone), and one that cannot be written keeps the previous one.
 *
 * @since 0.1.0
 */
import { Effect, Layer } from "effect"
import { KnownPeers, type KnownPeersService } from "../node/KnownPeers.js"
import { ChatStore } from "./ChatStore.js"

/** Known peers over the chat store's routing-table snapshot. */
export const make: Effect.Effect<KnownPeersService, never, ChatStore> = Effect.map(ChatStore, (chat) => ({
  load: chat.loadRoutingSnapshot.pipe(
    Effect.map((rows) =>
      rows.map((row) => ({ contact: { nodeId: row.nodeId, address: { host: row.host, port: row.port } }, lastSeen: row.lastSeen }))
    ),
    Effect.catchAll((error) =>
      Effect.as(Effect.logWarning(`known peers: could not load the routing-table snapshot: ${error.message}`), [])
    )
  ),
  save: (peers) =>
    chat.saveRoutingSnapshot(
      peers.map(({ contact, lastSeen }) => ({
        nodeId: contact.nodeId,
        host: contact.address.host,
        port: contact.address.port,
        lastSeen
      }))
    ).pipe(
      Effect.catchAll((error) => Effect.logWarning(`known peers: could not save the routing-table snapshot: ${error.message}`))
    ),
  remembers: true
}))

/** The chat store's routing-table snapshot as the node's `KnownPeers`. */
export const layer: Layer.Layer<KnownPeers, never, ChatStore> = Layer.effect(KnownPeers, make)
