/**
 * `peerchat start`: the composition of a real node — identity from the data
 * directory, the chat store (`<dataDir>/chat.db`, which also keeps the DHT
 * records this node stores and its routing-table snapshot), the TCP
 * transport, the DHT node, the user directory and the loopback control API —
 * run until the process is interrupted. On the way up it writes `node.json`
 * so client commands find the node; on the way down every layer's finalizer
 * runs (routing table saved, connections closed, database closed,
 * `node.json` removed). A node the terminal chat started for itself (it
 * runs `peerchat start` with `CHAT_NODE_ENV` set) logs to the rotating
 * `<dataDir>/logs/node.log` instead of stderr, and stops once the last chat
 * window attached to it has gone (`ChatWindows`).
 */
import { Config, Console, type Duration, Effect, Layer, Schema } from "effect"
import { join } from "node:path"
import { ChatStoreConfig } from "../chat/ChatStore.js"
import * as StoredKnownPeers from "../chat/StoredKnownPeers.js"
import * as StoredRecords from "../chat/StoredRecords.js"
import { type Address, formatAddress } from "../core/Contact.js"
import { ChatConfig } from "../chat/ChatConfig.js"
import * as DeliveryLayer from "../chat/Delivery.js"
import { Relay } from "../chat/Relay.js"
import { Directory } from "../node/Directory.js"
import { Circuits } from "../node/Circuits.js"
import { HolePunching } from "../node/HolePunching.js"
import { DhtNode } from "../node/DhtNode.js"
import { Identity } from "../node/Identity.js"
import { NodeConfig } from "../node/NodeConfig.js"
import { nodeControlLayer } from "../node/NodeControlLive.js"
import { Transport } from "../node/Transport.js"
import { ControlServer } from "../platform/ControlServer.js"
import * as ControlServerLayer from "../platform/ControlServer.js"
import { signaturesLayer } from "../platform/IdentityStore.js"
import * as NodeMessageCrypto from "../platform/NodeMessageCrypto.js"
import { keysLayerFromDataDir } from "../platform/NodeMessageCrypto.js"
import { profileFileLayer } from "../platform/ProfileFile.js"
import { createApiToken, isProcessAlive, readRuntimeInfo, writeRuntimeInfoScoped } from "../platform/RuntimeFiles.js"
import * as SqliteChatStore from "../platform/SqliteChatStore.js"
import * as ScryptClaimHash from "../platform/ScryptClaimHash.js"
import { TcpTransport } from "../platform/TcpTransport.js"
import { routerPortMapper } from "../platform/RouterPortMapping.js"
import { shouldAskRouter } from "../core/PortMapping.js"
import { ChatWindows } from "../node/ChatWindows.js"
import { withNodeLogger, withRotatingFileLogger } from "./Logging.js"

/** Everything `peerchat start` needs to know. */
export interface StartOptions {
  readonly dataDir: string
  readonly listen: Address
  readonly advertise: Address | undefined
  /**
   * Whether to ask the home router to forward the listen port (NAT-PMP/PCP, else UPnP IGD;
   * default true). Only a node listening on a private address or on all
   * addresses asks (core `shouldAskRouter`).
   */
  readonly portMapping?: boolean | undefined
  readonly bootstrap: ReadonlyArray<Address>
  readonly api: Address
  readonly k: number
  readonly alpha: number
  readonly callTimeout: Duration.Duration
  /** Proof-of-work difficulty of this user's name claim, and the least this node accepts from others. */
  readonly claimDifficulty: number
  readonly json: boolean
  /** The node stops once the last chat window attached to it has gone (a node the chat started; default false). */
  readonly stopsWithLastWindow?: boolean | undefined
}

/**
 * Set to `1` by the terminal chat in the environment of the `peerchat start`
 * it runs for itself: that node logs to its rotating log file and stops with
 * its last chat window. Not a user option: a node started by hand is the
 * user's to stop.
 */
export const CHAT_NODE_ENV = "PEERCHAT_NODE_FOR_CHAT"

/** The name of the chat store's database in the data directory. */
export const CHAT_DB_FILE = "chat.db"

/** The layers of a node, from the data directory up to the control API. */
const nodeLayers = (options: Omit<StartOptions, "json">, token: Parameters<typeof ControlServerLayer.layer>[0]["token"]) => {
  const keys = Layer.merge(keysLayerFromDataDir(options.dataDir), signaturesLayer)
  const config = NodeConfig.layer({
    k: options.k,
    alpha: options.alpha,
    callTimeout: options.callTimeout,
    bootstrap: options.bootstrap,
    claimDifficulty: options.claimDifficulty,
    minClaimDifficulty: options.claimDifficulty
  })
  const transport = TcpTransport.layer({
    listen: options.listen,
    advertise: options.advertise,
    callTimeout: options.callTimeout,
    portMapping: options.portMapping !== false && shouldAskRouter(options.listen.host) ? routerPortMapper() : undefined
  })
  // The durable state: the chat store (exposed for the chat layers) and the DHT's records and known peers over it.
  const storage = SqliteChatStore.layer({ filename: join(options.dataDir, CHAT_DB_FILE) }).pipe(
    Layer.provideMerge(ChatStoreConfig.layer())
  )
  const dhtStores = Layer.merge(StoredRecords.layer, StoredKnownPeers.layer).pipe(Layer.provideMerge(storage))
  // With Circuits: a public node relays for nodes behind NATs, and a node behind one is reached through
  // relays; HolePunching then tries to move each relayed conversation to a direct connection.
  const dht = Layer.merge(Circuits.layer(), HolePunching.layer()).pipe(
    Layer.provideMerge(DhtNode.layerWithStores),
    Layer.provideMerge(dhtStores),
    Layer.provideMerge(transport),
    Layer.provideMerge(config)
  )
  // Name claims are solved in chunks that yield to the event loop, so the node keeps answering meanwhile.
  const directory = Directory.layer().pipe(
    Layer.provideMerge(Layer.merge(profileFileLayer(options.dataDir), ScryptClaimHash.layer()))
  )
  const control = ControlServerLayer.layer({ host: options.api.host, port: options.api.port, token }).pipe(
    Layer.provideMerge(Layer.merge(nodeControlLayer, ChatWindows.layer({ stopsWithLastWindow: options.stopsWithLastWindow === true })))
  )
  // Delivery (the user's messages) and the relay (other users' mail), with the node's message keys.
  const chat = Layer.merge(DeliveryLayer.layer, Relay.layer).pipe(
    Layer.provideMerge(Layer.merge(NodeMessageCrypto.layer, ChatConfig.layer()))
  )
  return control.pipe(
    Layer.provideMerge(chat),
    Layer.provideMerge(directory),
    Layer.provideMerge(dht),
    Layer.provideMerge(keys)
  )
}

/** Another live process already runs a node on this data directory. */
export class NodeAlreadyRunning extends Schema.TaggedError<NodeAlreadyRunning>()("NodeAlreadyRunning", {
  dataDir: Schema.String,
  pid: Schema.Number,
  api: Schema.String
}) {
  override get message(): string {
    return `a node is already running for data directory ${this.dataDir} (pid ${this.pid}, control api ${this.api}); ` +
      "stop it first, or use another --data-dir"
  }
}

/** Fails when `node.json` names a process that is still alive; a stale file (crash, kill -9) is fine. */
const ensureNotRunning = (dataDir: string) =>
  readRuntimeInfo(dataDir).pipe(
    Effect.flatMap((info) =>
      info.pid !== process.pid && isProcessAlive(info.pid)
        ? Effect.fail(new NodeAlreadyRunning({ dataDir, pid: info.pid, api: info.api }))
        : Effect.void
    ),
    // No readable node.json means no node to collide with; a damaged one is replaced when this node is ready.
    Effect.catchTags({ NodeNotRunning: () => Effect.void, RuntimeFileError: () => Effect.void })
  )

/** A node started by `startNode`: where it listens and where its control API is. */
export interface StartedNode {
  readonly nodeId: string
  readonly listen: Address
  readonly api: Address
  /** Peers known from the last run that the node asked as it started (see `DhtNodeService.rememberedPeers`). */
  readonly rememberedPeers: number
  /** Completes when the node should stop because its last chat window has gone (never unless `stopsWithLastWindow`). */
  readonly lastWindowGone: Effect.Effect<void>
}

/**
 * Starts a node in the current scope: the layers of `nodeLayers`, then
 * `node.json`, so the client commands (and the terminal chat) find it. Closing
 * the scope shuts it down (routing table saved, connections and database
 * closed, `node.json` removed). `peerchat start` runs one until interrupted;
 * `peerchat chat` runs one in its own process when no node is running.
 */
export const startNode = (options: Omit<StartOptions, "json">) =>
  Effect.gen(function*() {
    yield* ensureNotRunning(options.dataDir)
    const token = yield* createApiToken(options.dataDir)
    const context = yield* Layer.build(nodeLayers(options, token))
    const identity = yield* Effect.provide(Identity, context)
    const transport = yield* Effect.provide(Transport, context)
    const control = yield* Effect.provide(ControlServer, context)
    const windows = yield* Effect.provide(ChatWindows, context)
    const dht = yield* Effect.provide(DhtNode, context)
    yield* writeRuntimeInfoScoped(options.dataDir, {
      nodeId: identity.nodeId,
      listen: transport.localAddress,
      api: control.address
    })
    const started: StartedNode = {
      nodeId: identity.nodeId,
      listen: transport.localAddress,
      api: control.address,
      rememberedPeers: dht.rememberedPeers,
      lastWindowGone: windows.lastWindowGone
    }
    return started
  })

/** Whether this process is a node the terminal chat started for itself (`CHAT_NODE_ENV`); anything but `1`/`true` is not. */
const startedByChat = Config.boolean(CHAT_NODE_ENV).pipe(Config.withDefault(false), Effect.orElseSucceed(() => false))

/**
 * Runs a node until interrupted, or, for a node the chat started, until its
 * last chat window has gone.
 */
export const runNode = (options: StartOptions) =>
  Effect.flatMap(startedByChat, (forChat) =>
    runNodeUntilStopped({ ...options, stopsWithLastWindow: forChat }).pipe(
      forChat ? withRotatingFileLogger(options.dataDir) : withNodeLogger(options.json)
    ))

/** The end of the ready line: the network the node joins, or that it starts one. */
const joinPlan = (bootstrap: ReadonlyArray<string>, rememberedPeers: number): string =>
  bootstrap.length > 0
    ? `, joining via ${bootstrap.join(", ")}`
    : rememberedPeers > 0
    // A restarted node without --bootstrap goes back to its old network, not a new one.
    ? `, rejoining through ${rememberedPeers} peer${rememberedPeers === 1 ? "" : "s"} known from the last run`
    : " (new network: others can join through this address)"

const runNodeUntilStopped = (options: StartOptions) =>
  Effect.gen(function*() {
    const node = yield* startNode(options)
    const ready = {
      event: "ready",
      nodeId: node.nodeId,
      listen: formatAddress(node.listen),
      api: formatAddress(node.api),
      dataDir: options.dataDir,
      bootstrap: options.bootstrap.map(formatAddress),
      rememberedPeers: node.rememberedPeers
    }
    yield* Console.log(
      options.json
        ? JSON.stringify(ready)
        : `peerchat node ${ready.nodeId.slice(0, 16)}… listening on ${ready.listen}, control api on ${ready.api}, ` +
            `data in ${ready.dataDir}${joinPlan(ready.bootstrap, ready.rememberedPeers)}`
    )
    if (options.stopsWithLastWindow !== true) return yield* Effect.never
    // Nobody reads the ready line of a node started by the chat: its log says when it started and why it stops.
    yield* Effect.logInfo(`node started for the terminal chat (pid ${process.pid}): ${ready.nodeId.slice(0, 16)}… listening on ${ready.listen}`)
    yield* node.lastWindowGone
    yield* Effect.logInfo("the last chat window has gone: stopping")
  }).pipe(Effect.scoped)
