/**
 * The peers a node knew when it last ran: the routing table's contacts with
 * when each was last seen alive, saved periodically and at shutdown by
 * `DhtNode` and loaded at start, so a restarted node rejoins through its old
 * neighbours even when its bootstrap peer is gone (the Kademlia paper's
 * periodic backup of the routing table). This module holds the Tag and the
 * in-memory layers; the durable layer over the chat store lives in
 * `src/chat/StoredKnownPeers.ts` (the node layer does not depend on chat).
 * Implementations never fail: storage trouble is theirs to log, and a node
 * that cannot remember its peers still runs.
 *
 * @since 0.1.0
 */
import { Context, Effect, Layer, Ref } from "effect"
import type { Contact } from "../core/Contact.js"

/** A contact and when it was last seen alive (ms since the epoch). */
export interface KnownPeer {
  readonly contact: Contact
  readonly lastSeen: number
}

/** Where a node keeps the peers it knew. */
export interface KnownPeersService {
  /** The peers saved last, most recently seen first; empty when none were saved or they cannot be read. */
  readonly load: Effect.Effect<ReadonlyArray<KnownPeer>>
  /** Replaces the saved peers; a failure to store them is logged, not raised. */
  readonly save: (peers: ReadonlyArray<KnownPeer>) => Effect.Effect<void>
  /**
   * False when saved peers are dropped (`none`): the node then skips its
   * snapshot timer, which matters in simulations of hundreds of nodes.
   */
  readonly remembers: boolean
}

/** Saved peers as `makeMemory` keeps them: the contacts, and when each was last seen at the same index. */
interface CompactPeers {
  readonly contacts: ReadonlyArray<Contact>
  readonly lastSeen: Float64Array
}

/** Most recently seen first, then by node id, so equal inputs load in one order. */
const byRecency = (a: KnownPeer, b: KnownPeer): number =>
  b.lastSeen - a.lastSeen || (a.contact.nodeId < b.contact.nodeId ? -1 : a.contact.nodeId > b.contact.nodeId ? 1 : 0)

/** The peers known to a node across restarts. */
export class KnownPeers extends Context.Tag("peerchat/KnownPeers")<KnownPeers, KnownPeersService>() {
  /** A store of known peers over `ref`: build it around one Ref to carry peers from one node lifetime to the next. */
  static readonly fromRef = (ref: Ref.Ref<ReadonlyArray<KnownPeer>>): KnownPeersService => ({
    load: Effect.map(Ref.get(ref), (peers) => peers.slice().sort(byRecency)),
    save: (peers) => Ref.set(ref, peers.slice()),
    remembers: true
  })

  /**
   * A fresh in-memory store of known peers (empty). It behaves as `fromRef`
   * but keeps the saved peers compactly, their contacts (shared with the
   * routing table that saved them) in one array and their times in a
   * `Float64Array`, about 16 bytes a peer instead of 64: a simulator keeps
   * one such store per node, each holding a whole routing table.
   */
  static readonly makeMemory: Effect.Effect<KnownPeersService> = Effect.map(
    // Replaced as a whole, so a load never sees half a save.
    Ref.make<CompactPeers>({ contacts: [], lastSeen: new Float64Array(0) }),
    (ref) => ({
      load: Effect.map(Ref.get(ref), ({ contacts, lastSeen }) =>
        contacts
          // Both arrays come from one save, so `lastSeen` has an entry for every contact's index.
          .map((contact, index): KnownPeer => ({ contact, lastSeen: lastSeen[index] as number }))
          .sort(byRecency)),
      save: (peers) =>
        Ref.set(ref, {
          contacts: peers.map((peer) => peer.contact),
          lastSeen: Float64Array.from(peers, (peer) => peer.lastSeen)
        }),
      remembers: true
    })
  )

  /** An in-memory store, new and empty each time the layer is built. */
  static readonly layerMemory: Layer.Layer<KnownPeers> = Layer.effect(KnownPeers, KnownPeers.makeMemory)

  /** Remembers nothing: loads no peers and drops what is saved. */
  static readonly none: KnownPeersService = {
    load: Effect.succeed([]),
    save: () => Effect.void,
    remembers: false
  }
}
