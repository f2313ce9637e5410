/**
 * Chat nodes on the in-memory network for tests: a DHT node from
 * `memoryNetwork.ts` with the user directory, a chat store, the relay and
 * message delivery on top, all in the node's own scope. A test can keep a
 * node's `ChatStore` and profile and start them again (a restart, or a move
 * to another address), or cut the node off with `network.setOnline`.
 */
import { Context, Effect, Exit, Layer, Scope } from "effect"
import type { Address } from "../../src/core/Contact.js"
import { parseUsername, type Username } from "../../src/core/Username.js"
import { ChatConfig, type ChatConfigShape } from "../../src/chat/ChatConfig.js"
import { Contacts } from "../../src/chat/Contacts.js"
import { ChatStore, ChatStoreConfig, type ChatStoreConfigShape, type ChatStoreService } from "../../src/chat/ChatStore.js"
import * as DeliveryLayer from "../../src/chat/Delivery.js"
import { Delivery } from "../../src/chat/Delivery.js"
import { Messenger } from "../../src/chat/Messenger.js"
import { Relay } from "../../src/chat/Relay.js"
import { DhtNode } from "../../src/node/DhtNode.js"
import { Directory } from "../../src/node/Directory.js"
import { Identity } from "../../src/node/Identity.js"
import { NodeConfig, type NodeConfigShape } from "../../src/node/NodeConfig.js"
import { emptyProfile, type Profile, ProfileStore } from "../../src/node/Profile.js"
import { Transport } from "../../src/node/Transport.js"
import * as NodeMessageCrypto from "../../src/platform/NodeMessageCrypto.js"
import type { MemoryNetworkService } from "../../src/platform/MemoryTransport.js"
import { seededRandomBytes } from "./arbitraries.js"
import { nodeAddress, nodeSeeds, startNode, type TestNode, testSignatures } from "./memoryNetwork.js"

/** A running chat node. */
export interface ChatNode extends TestNode {
  readonly directory: Directory["Type"]
  readonly messenger: Messenger["Type"]
  readonly delivery: Delivery["Type"]
  readonly relay: Relay["Type"]
  readonly contacts: Contacts["Type"]
  readonly storeConfig: ChatStoreConfigShape
  readonly chatStore: ChatStoreService
  readonly profiles: ProfileStore["Type"]
}

/** What a chat node keeps across restarts: its store and its profile. */
export interface ChatNodeState {
  readonly storeConfig: ChatStoreConfigShape
  readonly chatStore: ChatStoreService
  readonly profiles: ProfileStore["Type"]
}

/** A fresh store and profile for a chat node. */
export const freshChatState = (
  storeConfig: Partial<ChatStoreConfigShape> = {},
  profile: Profile = emptyProfile
): Effect.Effect<ChatNodeState> =>
  Effect.gen(function*() {
    const config = ChatStoreConfig.make(storeConfig)
    const chatStore = yield* ChatStore.makeMemory(config)
    const profiles = Context.get(yield* Layer.build(ProfileStore.layerMemory(profile)).pipe(Effect.scoped), ProfileStore)
    return { storeConfig: config, chatStore, profiles }
  })

/** Options of `startChatNode`. */
export interface ChatNodeOptions {
  readonly config?: Partial<NodeConfigShape>
  readonly chat?: Partial<ChatConfigShape>
  /** The node's store and profile (defaults to fresh ones): pass a previous node's to restart it. */
  readonly state?: ChatNodeState
  /** Listen somewhere other than `nodeAddress(index)` (a user who moved). */
  readonly address?: Address
}

/** Starts chat node `index` (its identity and keys derive from the index) in a scope of its own. */
export const startChatNode = (
  network: MemoryNetworkService,
  index: number,
  options: ChatNodeOptions = {}
): Effect.Effect<ChatNode, never, Scope.Scope> =>
  Effect.gen(function*() {
    const state = options.state ?? (yield* freshChatState())
    const node = yield* startNode(network, index, options.config ?? {}, options.address === undefined ? {} : { address: options.address })
    const seeds = nodeSeeds(index)
    const base = Layer.mergeAll(
      Layer.succeed(DhtNode, node.dht),
      Layer.succeed(Identity, node.identity),
      Layer.succeed(Transport, node.transport),
      Layer.succeed(NodeConfig, NodeConfig.make({ idPuzzleBits: 0, ...options.config })),
      Layer.succeed(ChatStore, state.chatStore),
      Layer.succeed(ChatStoreConfig, state.storeConfig),
      Layer.succeed(ProfileStore, state.profiles),
      ChatConfig.layer(options.chat ?? {}),
      NodeMessageCrypto.layerFromSeeds(seeds.signing, seeds.encryption, {
        randomBytes: seededRandomBytes(0xc4a70000 + index)
      }),
      testSignatures
    )
    const directory = Directory.layer().pipe(Layer.provideMerge(base))
    const chat = Layer.merge(DeliveryLayer.layer, Relay.layer).pipe(Layer.provideMerge(directory))
    const context = yield* Layer.buildWithScope(chat, node.scope)
    return {
      ...node,
      directory: Context.get(context, Directory),
      messenger: Context.get(context, Messenger),
      delivery: Context.get(context, Delivery),
      relay: Context.get(context, Relay),
      contacts: Context.get(context, Contacts),
      storeConfig: state.storeConfig,
      chatStore: state.chatStore,
      profiles: state.profiles
    }
  })

/** `count` chat nodes: node 0 is standalone and every other node bootstraps from it and has joined before the next starts. */
export const makeChatNetwork = (
  network: MemoryNetworkService,
  count: number,
  options: Omit<ChatNodeOptions, "state" | "address"> = {}
): Effect.Effect<ReadonlyArray<ChatNode>, never, Scope.Scope> =>
  Effect.gen(function*() {
    const nodes: Array<ChatNode> = []
    for (let index = 0; index < count; index++) {
      const node = yield* startChatNode(network, index, {
        ...options,
        config: { ...options.config, bootstrap: index === 0 ? [] : [nodeAddress(0)] }
      })
      yield* node.dht.awaitJoined
      nodes.push(node)
    }
    return nodes
  })

/** Stops a node (closes its scope): it is gone from the network until started again. */
export const stopNode = (node: TestNode): Effect.Effect<void> => Scope.close(node.scope, Exit.void)

/** `input` as a username; throws on one that is not valid (a typo in the test). */
export const username = (input: string): Username => {
  const parsed = parseUsername(input)
  if (parsed._tag === "Left") throw parsed.left
  return parsed.right
}

/** The conversation with `peer` on `node`, a line per message: author, text and status. */
export const historyTexts = (node: ChatNode, peer: string) =>
  Effect.map(node.messenger.history(peer), (entries) => entries.map((entry) => `${entry.from}:${entry.text}:${entry.status}`))
