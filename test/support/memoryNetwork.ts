/**
 * Spins up DHT nodes on one in-memory network for tests: deterministic
 * identities from seeds, addresses derived from the node's index, and node i
 * bootstrapping from node 0. Each node lives in its own scope, so a test can
 * stop one (close its scope) or cut it off (`network.setOnline`).
 */
import { Context, Effect, ExecutionStrategy, Layer, Scope } from "effect"
import type { Address } from "../../src/core/Contact.js"
import type { NodeId } from "../../src/core/Id.js"
import type { RequestLimitsConfig } from "../../src/core/RequestLimits.js"
import { signUserRecord, type UnsignedUserRecord, type UserRecord } from "../../src/core/UserRecord.js"
import type { Username } from "../../src/core/Username.js"
import { toHex } from "../../src/core/Bytes.js"
import type { PublicKeyHex } from "../../src/core/UserRecord.js"
import { DhtNode, type DhtNodeService } from "../../src/node/DhtNode.js"
import { type ClaimPacing, Identity, type IdentityService, type Signatures } from "../../src/node/Identity.js"
import { KnownPeers, type KnownPeersService } from "../../src/node/KnownPeers.js"
import { Lookups, type LookupsService } from "../../src/node/Lookups.js"
import { NodeConfig, type NodeConfigShape } from "../../src/node/NodeConfig.js"
import { RecordStore, type RecordStoreService } from "../../src/node/RecordStore.js"
import { Routing, type RoutingService } from "../../src/node/Routing.js"
import { Transport } from "../../src/node/Transport.js"
import { identityFromSeeds, signaturesLayerWith } from "../../src/platform/IdentityStore.js"
import type { MemoryHardHash } from "../../src/core/ClaimProof.js"
import { MemoryNetwork, type MemoryNetworkService, MemoryTransport } from "../../src/platform/MemoryTransport.js"
import { seededRandomBytes } from "./arbitraries.js"
import { solvedClaim, testClaimHash } from "./claims.js"

/**
 * The address of test node `index`: one host per node, like a real deployment,
 * taken from the loopback range so that nothing could ever leave the machine.
 */
export const nodeAddress = (index: number): Address => ({
  // One /24 per node (up to 65,536 nodes), as distinct hosts on the internet would have:
  // nodes keep at most a few contacts per network.
  host: `127.${(index >>> 8) & 255}.${index & 255}.${1 + ((index >>> 16) & 127)}`,
  port: 7000
})

const identityCache = new Map<number, IdentityService>()

/** The signing and encryption seeds of test node `index` (its identity and message keys derive from them). */
export const nodeSeeds = (index: number): { readonly signing: Uint8Array; readonly encryption: Uint8Array } => {
  const bytes = seededRandomBytes(0x5eed0000 + index)
  const signing = bytes(32)
  return { signing, encryption: bytes(32) }
}

/** The deterministic identity of test node `index` (cached: key derivation is the slow part). */
export const nodeIdentity = (index: number): IdentityService => {
  let identity = identityCache.get(index)
  if (identity === undefined) {
    const seeds = nodeSeeds(index)
    identity = identityFromSeeds(seeds.signing, seeds.encryption)
    identityCache.set(index, identity)
  }
  return identity
}

/** One running test node and its services. */
export interface TestNode {
  readonly index: number
  readonly address: Address
  readonly nodeId: NodeId
  readonly identity: IdentityService
  readonly dht: DhtNodeService
  readonly routing: RoutingService
  readonly lookups: LookupsService
  readonly store: RecordStoreService
  readonly transport: Transport["Type"]
  /** Closing it stops the node and unregisters its address. */
  readonly scope: Scope.CloseableScope
}

/**
 * Starts test node `index` on `network` with `config` (NodeConfig overrides),
 * in a scope of its own that is also closed with the caller's scope.
 */
export const startNode = (
  network: MemoryNetworkService,
  index: number,
  config: Partial<NodeConfigShape>,
  options: {
    /** Run node `index`'s identity at another address (a user who moved). */
    readonly address?: Address
    /** Where the node remembers its peers (pass one service to several runs to restart a node); none by default. */
    readonly knownPeers?: KnownPeersService
    /** The node's request budgets (core `RequestLimits`); a TCP node's defaults when unset. */
    readonly requestLimits?: Partial<RequestLimitsConfig>
    /** The claim hash the node checks claims with (one that counts its evaluations, say); the tests' cheap one by default. */
    readonly claimHash?: MemoryHardHash
    /** How peers' claim checks are paced (a real node's: a few per turn of the event loop); none by default. */
    readonly claimPacing?: ClaimPacing
    /** The node's transport as its DHT sees it (one whose probes all fail, say); the memory transport itself by default. */
    readonly transport?: (transport: Transport["Type"]) => Transport["Type"]
  } = {}
): Effect.Effect<TestNode, never, Scope.Scope> =>
  Effect.gen(function*() {
    const identity = nodeIdentity(index)
    const address = options.address ?? nodeAddress(index)
    // Test ids come from seeds and solve no puzzle: the check is off unless a test asks for it.
    const nodeConfig = NodeConfig.make({ idPuzzleBits: 0, ...config })
    const dht = options.knownPeers === undefined
      ? DhtNode.layerWithMemoryStore
      : DhtNode.layerWithStores.pipe(
        Layer.provideMerge(RecordStore.layerMemory),
        Layer.provide(Layer.succeed(KnownPeers, options.knownPeers))
      )
    const layer = dht.pipe(
      Layer.provideMerge(
        Layer.map(
          MemoryTransport.layer(address, { defaultTimeout: nodeConfig.callTimeout, requestLimits: options.requestLimits }),
          (context) => options.transport === undefined ? context : Context.add(context, Transport, options.transport(Context.get(context, Transport)))
        )
      ),
      Layer.provideMerge(
        Layer.mergeAll(
          Layer.succeed(Identity, identity),
          options.claimHash === undefined && options.claimPacing === undefined
            ? testSignatures
            : signaturesLayerWith(options.claimHash ?? testClaimHash, options.claimPacing),
          Layer.succeed(NodeConfig, nodeConfig)
        )
      ),
      Layer.provide(Layer.succeed(MemoryNetwork, network))
    )
    const outer = yield* Effect.scope
    const scope = yield* Scope.fork(outer, ExecutionStrategy.sequential)
    const context = yield* Layer.buildWithScope(layer, scope)
    return {
      index,
      address,
      nodeId: identity.nodeId,
      identity,
      dht: Context.get(context, DhtNode),
      routing: Context.get(context, Routing),
      lookups: Context.get(context, Lookups),
      store: Context.get(context, RecordStore),
      transport: Context.get(context, Transport),
      scope
    }
  })

/** A network of test nodes and its controls. */
export interface TestNetwork {
  readonly network: MemoryNetworkService
  readonly nodes: ReadonlyArray<TestNode>
}

/**
 * `count` nodes on a fresh network, started one after the other; node 0 is
 * standalone and every other node bootstraps from it and has joined before
 * the next one starts. `config` overrides apply to every node, and so do the
 * request budgets in `options` (a TCP node's defaults when unset).
 */
export const makeTestNetwork = (
  count: number,
  config: Partial<NodeConfigShape> = {},
  options: { readonly requestLimits?: Partial<RequestLimitsConfig> } = {}
): Effect.Effect<TestNetwork, never, Scope.Scope> =>
  Effect.gen(function*() {
    const network = yield* MemoryNetwork.make
    const nodes: Array<TestNode> = []
    for (let index = 0; index < count; index++) {
      const node = yield* startNode(network, index, {
        ...config,
        bootstrap: index === 0 ? [] : [nodeAddress(0)]
      }, options)
      yield* node.dht.awaitJoined
      nodes.push(node)
    }
    return { network, nodes }
  })

/** Node ids of `nodes` sorted by XOR distance to `target` (as bigints): the oracle for lookups. */
export const trueClosest = (target: string, nodeIds: ReadonlyArray<NodeId>, n: number): Array<NodeId> => {
  const t = BigInt(`0x${target}`)
  return nodeIds
    .map((id) => ({ id, distance: BigInt(`0x${id}`) ^ t }))
    .sort((a, b) => (a.distance < b.distance ? -1 : a.distance > b.distance ? 1 : 0))
    .slice(0, n)
    .map((entry) => entry.id)
}

/** A user record for `username` owned by `owner`, signed with its identity. */
export const signedRecord = (
  owner: { readonly identity: IdentityService; readonly address: Address },
  username: Username,
  fields: { readonly sequence?: number; readonly issuedAt: number; readonly expiresAt: number }
): UserRecord => {
  const unsigned: UnsignedUserRecord = {
    username,
    signingKey: toHex(owner.identity.signingPublicKey) as PublicKeyHex,
    encryptionKey: toHex(owner.identity.encryptionPublicKey) as PublicKeyHex,
    nodeId: owner.identity.nodeId,
    addresses: [owner.address],
    sequence: fields.sequence ?? 1,
    issuedAt: fields.issuedAt,
    expiresAt: fields.expiresAt,
    claim: solvedClaim(username, toHex(owner.identity.signingPublicKey))
  }
  return signUserRecord(unsigned, owner.identity.sign)
}

/** `items[index]`, throwing when it is missing (tests index arrays they built themselves). */
export const at = <A>(items: ReadonlyArray<A>, index: number): A => {
  const item = items[index]
  if (item === undefined) throw new RangeError(`no item at index ${index} of ${items.length}`)
  return item
}

/** `Signatures` of test nodes: real Ed25519, name claims over SHA-256 (see claims.ts). */
export const testSignatures: Layer.Layer<Signatures> = signaturesLayerWith(testClaimHash)
