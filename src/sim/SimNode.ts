/**
 * One simulated Peerchat node: the real DHT node, directory, delivery and
 * relay, over the in-memory network, with in-memory storage. Its keys derive
 * from the run's seed and its index, so a seed names every node. A node's
 * state (chat store, profile, known peers) outlives a session: stopping a
 * node and starting it again with the same state is a user closing and
 * reopening Peerchat, possibly at another address.
 *
 * @since 0.1.0
 */
import { Context, Effect, ExecutionStrategy, Exit, Layer, Scope } from "effect"
import { ChatConfig, type ChatConfigShape } from "../chat/ChatConfig.js"
import { ChatStore, ChatStoreConfig, type ChatStoreConfigShape, type ChatStoreService } from "../chat/ChatStore.js"
import * as DeliveryLayer from "../chat/Delivery.js"
import { Delivery } from "../chat/Delivery.js"
import { Messenger } from "../chat/Messenger.js"
import { Relay } from "../chat/Relay.js"
import * as StoredRecords from "../chat/StoredRecords.js"
import type { Address } from "../core/Contact.js"
import { type NodeId, seededRandomBytes } from "../core/Id.js"
import { DhtNode } from "../node/DhtNode.js"
import { Directory } from "../node/Directory.js"
import { Identity, type IdentityService } from "../node/Identity.js"
import { KnownPeers, type KnownPeersService } from "../node/KnownPeers.js"
import { Lookups } from "../node/Lookups.js"
import { NodeConfig, type NodeConfigShape } from "../node/NodeConfig.js"
import { ProfileStore } from "../node/Profile.js"
import { RecordStore } from "../node/RecordStore.js"
import { Routing } from "../node/Routing.js"
import { Transport } from "../node/Transport.js"
import { identityFromSeeds, signaturesLayer } from "../platform/IdentityStore.js"
import { type MemoryNetworkService, MemoryNetwork, MemoryTransport } from "../platform/MemoryTransport.js"
import * as NodeMessageCrypto from "../platform/NodeMessageCrypto.js"

/** A deterministic byte stream from a 32-bit seed (re-exported for the simulator's callers). */
export const seededBytes = seededRandomBytes

/** The 32-bit seed of node `index` in the run seeded `runSeed`. */
const nodeSeed = (runSeed: number, index: number, salt: number): number =>
  (Math.imul(runSeed ^ 0x5bd1e995, 0x01000193) + Math.imul(index + 1, 0x9e3779b1) + salt) >>> 0

/** The keys of node `index`: signing and encryption seeds, and the identity they give. */
export interface SimKeys {
  readonly signing: Uint8Array
  readonly encryption: Uint8Array
  readonly identity: IdentityService
}

/** The deterministic keys of node `index` of the run seeded `runSeed`. */
export const simKeys = (runSeed: number, index: number): SimKeys => {
  const bytes = seededBytes(nodeSeed(runSeed, index, 1))
  const signing = bytes(32)
  const encryption = bytes(32)
  return { signing, encryption, identity: identityFromSeeds(signing, encryption) }
}

/** The address of node `index`: one loopback host per node (nothing could leave the machine even by mistake). */
export const simAddress = (index: number, port = 7000): Address => ({
  host: `127.${(index >>> 16) & 255}.${(index >>> 8) & 255}.${index & 255}`,
  port
})

/** What a node keeps between sessions. */
export interface SimNodeState {
  readonly chatStore: ChatStoreService
  readonly profiles: ProfileStore["Type"]
  readonly knownPeers: KnownPeersService
}

/** A fresh state for a node that never ran. */
export const freshState = (storeConfig: ChatStoreConfigShape): Effect.Effect<SimNodeState> =>
  Effect.gen(function*() {
    const chatStore = yield* ChatStore.makeMemory(storeConfig)
    const profiles = Context.get(yield* Effect.scoped(Layer.build(ProfileStore.layerMemory())), ProfileStore)
    const knownPeers = yield* KnownPeers.makeMemory
    return { chatStore, profiles, knownPeers }
  })

/** A running session of a node, and its services. */
export interface SimNode {
  readonly index: number
  readonly nodeId: NodeId
  readonly address: Address
  readonly state: SimNodeState
  readonly dht: DhtNode["Type"]
  readonly routing: Routing["Type"]
  readonly lookups: Lookups["Type"]
  readonly records: RecordStore["Type"]
  readonly directory: Directory["Type"]
  readonly messenger: Messenger["Type"]
  readonly delivery: Delivery["Type"]
  readonly relay: Relay["Type"]
  readonly transport: Transport["Type"]
  /** The node's configuration (its bootstrap included). */
  readonly nodeConfig: NodeConfigShape
  /** Closing it ends the session: the node leaves the network, its state stays. */
  readonly scope: Scope.CloseableScope
}

/** How a node is configured. */
export interface SimNodeConfig {
  readonly node: NodeConfigShape
  readonly chat: ChatConfigShape
  readonly store: ChatStoreConfigShape
}

/**
 * Starts a session of node `index` at `address` on `network`, in a scope of
 * its own (closed with the caller's scope too).
 */
export const startSimNode = (args: {
  readonly network: MemoryNetworkService
  readonly runSeed: number
  readonly index: number
  readonly address: Address
  readonly state: SimNodeState
  readonly config: SimNodeConfig
}): Effect.Effect<SimNode, never, Scope.Scope> =>
  Effect.gen(function*() {
    const { config, index, network, state } = args
    const keys = simKeys(args.runSeed, index)
    const base = Layer.mergeAll(
      Layer.succeed(Identity, keys.identity),
      signaturesLayer,
      Layer.succeed(NodeConfig, config.node),
      Layer.succeed(ChatConfig, config.chat),
      Layer.succeed(ChatStoreConfig, config.store),
      Layer.succeed(ChatStore, state.chatStore),
      Layer.succeed(ProfileStore, state.profiles),
      Layer.succeed(KnownPeers, state.knownPeers),
      NodeMessageCrypto.layerFromSeeds(keys.signing, keys.encryption, {
        randomBytes: seededBytes(nodeSeed(args.runSeed, index, 2))
      })
    )
    const dht = DhtNode.layer.pipe(
      Layer.provideMerge(Lookups.layer),
      Layer.provideMerge(Routing.layer),
      // Records held for others live in the node's store, so they survive its sessions, as on disk.
      Layer.provideMerge(StoredRecords.layer),
      Layer.provideMerge(MemoryTransport.layer(args.address, { defaultTimeout: config.node.callTimeout })),
      Layer.provide(Layer.succeed(MemoryNetwork, network))
    )
    const chat = Layer.merge(DeliveryLayer.layer, Relay.layer).pipe(
      Layer.provideMerge(Directory.layer()),
      Layer.provideMerge(dht),
      Layer.provideMerge(base)
    )
    const outer = yield* Effect.scope
    const scope = yield* Scope.fork(outer, ExecutionStrategy.sequential)
    const context = yield* Layer.buildWithScope(chat, scope)
    return {
      index,
      nodeId: keys.identity.nodeId,
      address: args.address,
      state,
      dht: Context.get(context, DhtNode),
      routing: Context.get(context, Routing),
      lookups: Context.get(context, Lookups),
      records: Context.get(context, RecordStore),
      directory: Context.get(context, Directory),
      messenger: Context.get(context, Messenger),
      delivery: Context.get(context, Delivery),
      relay: Context.get(context, Relay),
      transport: Context.get(context, Transport),
      nodeConfig: config.node,
      scope
    }
  })

/** Ends a node's session. */
export const stopSimNode = (node: SimNode): Effect.Effect<void> => Scope.close(node.scope, Exit.void)
