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
import { sha256 } from "../core/Sha256.js"
import { Context, Effect, ExecutionStrategy, Exit, Layer, Option, Scope } from "effect"
import { ChatConfig, type ChatConfigShape } from "../chat/ChatConfig.js"
import { ChatStore, ChatStoreConfig, type ChatStoreConfigShape, type ChatStoreService } from "../chat/ChatStore.js"
import * as DeliveryLayer from "../chat/Delivery.js"
import { Delivery } from "../chat/Delivery.js"
import { MessageCrypto } from "../chat/MessageCrypto.js"
import { Messenger } from "../chat/Messenger.js"
import { Relay } from "../chat/Relay.js"
import * as StoredRecords from "../chat/StoredRecords.js"
import type { Address } from "../core/Contact.js"
import { type NodeId, seededRandomBytes } from "../core/Id.js"
import { Circuits } from "../node/Circuits.js"
import { DhtNode } from "../node/DhtNode.js"
import { Directory } from "../node/Directory.js"
import { Identity, type IdentityService, Signatures, type SignaturesService } from "../node/Identity.js"
import { KnownPeers, type KnownPeersService } from "../node/KnownPeers.js"
import { keepLivenessFresh } from "../node/Liveness.js"
import { Lookups } from "../node/Lookups.js"
import { NodeConfig, type NodeConfigShape } from "../node/NodeConfig.js"
import { ProfileStore } from "../node/Profile.js"
import { RecordStore } from "../node/RecordStore.js"
import { Routing } from "../node/Routing.js"
import { Transport } from "../node/Transport.js"
import { identityFromSeeds } from "../platform/IdentityStore.js"
import { type MemoryNetworkService, MemoryNetwork, MemoryTransport } from "../platform/MemoryTransport.js"
import { verifyEd25519 } from "../platform/NodeCrypto.js"
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
  // One /24 per node (up to 65,536 nodes), as distinct hosts on the internet would have:
  // nodes keep at most a few contacts per network.
  host: `127.${(index >>> 8) & 255}.${index & 255}.${1 + ((index >>> 16) & 127)}`,
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

/**
 * Ed25519 verification, shared by every node (as `signaturesLayer`), with name
 * claims solved and checked over SHA-256 instead of scrypt: the same rules at
 * a price ten thousand simulated users can pay (the difficulty is NodeConfig's).
 */
export const simSignatures: SignaturesService = { verify: verifyEd25519, claimHash: sha256 }
const signatures = simSignatures

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
  /** Relaying for nodes behind NATs, and being reached through relays (only in runs with NATs). */
  readonly circuits: Option.Option<Circuits["Type"]>
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
  /**
   * Whether the node runs `Circuits` as a real node does (relays for others
   * when public, holds reservations when behind a NAT). Runs without NATs
   * leave it out: there it would only add idle timers.
   */
  readonly circuits: boolean
  /** Whether the node probes its quietest contacts as a real node does (`Liveness`). */
  readonly probeQuietPeers: boolean
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
    // The services are made one by one in the node's scope rather than as a layer graph: a
    // built layer keeps its memo entry, scopes, references and context copies alive for the
    // whole session (about 5 KiB per layer; the graph of a node held some 150 KiB), and
    // nothing here needs layers' sharing. The order is the layers' order, so finalizers run
    // as they did. Directory and delivery export no constructor but their layer, built alone.
    const outer = yield* Effect.scope
    const scope = yield* Scope.fork(outer, ExecutionStrategy.sequential)
    const base = Context.make(Identity, keys.identity).pipe(
      Context.add(Signatures, signatures),
      Context.add(NodeConfig, config.node),
      Context.add(ChatConfig, config.chat),
      Context.add(ChatStoreConfig, config.store),
      Context.add(ChatStore, state.chatStore),
      Context.add(ProfileStore, state.profiles),
      Context.add(KnownPeers, state.knownPeers),
      Context.add(
        MessageCrypto,
        NodeMessageCrypto.make({
          identity: keys.identity,
          keyAgreement: NodeMessageCrypto.keyAgreementFromSeed(keys.encryption),
          randomBytes: seededBytes(nodeSeed(args.runSeed, index, 2))
        })
      )
    )
    const transport = yield* MemoryTransport.make(args.address, { defaultTimeout: config.node.callTimeout }).pipe(
      Effect.provide(Context.add(base, MemoryNetwork, network)),
      Scope.extend(scope)
    )
    const withTransport = Context.add(base, Transport, transport)
    // Records held for others live in the node's store, so they survive its sessions, as on disk.
    const records = yield* StoredRecords.make.pipe(Effect.provide(withTransport), Scope.extend(scope))
    const withRecords = Context.add(withTransport, RecordStore, records)
    const routing = yield* Routing.make.pipe(Effect.provide(withRecords), Scope.extend(scope))
    const withRouting = Context.add(withRecords, Routing, routing)
    const lookups = yield* Lookups.make.pipe(Effect.provide(withRouting), Scope.extend(scope))
    const withLookups = Context.add(withRouting, Lookups, lookups)
    const dht = yield* DhtNode.make.pipe(Effect.provide(withLookups), Scope.extend(scope))
    const withDht = Context.add(withLookups, DhtNode, dht)
    // Before the directory, which lists the relays it holds in its user record when it has them.
    const circuits = config.circuits
      ? Option.some(Context.get(yield* Layer.buildWithScope(Circuits.layer(), scope).pipe(Effect.provide(withDht)), Circuits))
      : Option.none()
    const withCircuits = Option.match(circuits, {
      onNone: () => withDht,
      onSome: (service) => Context.add(withDht, Circuits, service)
    })
    const directory = Context.get(
      yield* Layer.buildWithScope(Directory.layer(), scope).pipe(Effect.provide(withCircuits)),
      Directory
    )
    const withDirectory = Context.add(withCircuits, Directory, directory)
    // Delivery and relay start side by side, in scopes of their own closed in parallel, as
    // `Layer.merge` did: the fibers they fork then take their first steps (and random draws)
    // in the same order, so a seed still replays the runs it gave with layers, byte for byte.
    const parallel = yield* Scope.fork(scope, ExecutionStrategy.parallel)
    const deliveryScope = yield* Scope.fork(parallel, ExecutionStrategy.sequential)
    const relayScope = yield* Scope.fork(parallel, ExecutionStrategy.sequential)
    const [chat, relay] = yield* Effect.zip(
      Layer.buildWithScope(DeliveryLayer.layer, deliveryScope).pipe(Effect.provide(withDirectory)),
      Relay.make.pipe(Effect.provide(withDirectory), Scope.extend(relayScope)),
      { concurrent: true }
    )
    // Last, so runs without it draw their random numbers as before.
    if (config.probeQuietPeers) yield* keepLivenessFresh.pipe(Effect.provide(withDirectory), Scope.extend(scope))
    return {
      index,
      nodeId: keys.identity.nodeId,
      address: args.address,
      state,
      dht,
      routing,
      lookups,
      records,
      directory,
      messenger: Context.get(chat, Messenger),
      delivery: Context.get(chat, Delivery),
      relay,
      transport,
      circuits,
      nodeConfig: config.node,
      scope
    }
  })

/** Ends a node's session. */
export const stopSimNode = (node: SimNode): Effect.Effect<void> => Scope.close(node.scope, Exit.void)
