/**
 * End-to-end chat over loopback TCP: starts N nodes (default 10) in this
 * process, each with its own SQLite chat store in a temporary directory (WAL,
 * synchronous = FULL, as a real node), registers alice and bob, and measures
 *
 * - latency: alice sends one message at a time and waits for bob's signed
 *   receipt (send → sealed and committed → delivered → receipt checked);
 *   p50 / p95 / max over `--messages` messages;
 * - throughput: alice queues a burst of `--burst` messages at once; messages
 *   per second committed into the outbox, and per second delivered to bob
 *   with verified receipts (everything through alice's one node).
 *
 *   npx tsx bench/chatLoopback.ts [--nodes 10] [--messages 300] [--burst 1000]
 */
import { loopbackHost } from "../test/support/loopback.js"
import { Context, Duration, Effect, Layer, Logger, LogLevel, Stream } from "effect"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { parseArgs } from "node:util"
import { ChatConfig } from "../src/chat/ChatConfig.js"
import { ChatStoreConfig } from "../src/chat/ChatStore.js"
import * as DeliveryLayer from "../src/chat/Delivery.js"
import { Messenger } from "../src/chat/Messenger.js"
import { Relay } from "../src/chat/Relay.js"
import { DhtNode } from "../src/node/DhtNode.js"
import { Directory } from "../src/node/Directory.js"
import { Identity } from "../src/node/Identity.js"
import { NodeConfig } from "../src/node/NodeConfig.js"
import { ProfileStore } from "../src/node/Profile.js"
import { Transport } from "../src/node/Transport.js"
import { identityFromSeeds, signaturesLayer } from "../src/platform/IdentityStore.js"
import * as NodeMessageCrypto from "../src/platform/NodeMessageCrypto.js"
import * as SqliteChatStore from "../src/platform/SqliteChatStore.js"
import { TcpTransport } from "../src/platform/TcpTransport.js"
import { percentile, seededBytes } from "./support.js"

const { values: args } = parseArgs({
  options: {
    nodes: { type: "string", default: "10" },
    messages: { type: "string", default: "300" },
    burst: { type: "string", default: "1000" }
  }
})
const nodeCount = Math.max(3, Number(args.nodes))
const messageCount = Number(args.messages)
const burstCount = Number(args.burst)

const seed = (index: number, salt: number): Uint8Array => seededBytes(index * 2654435761 + salt * 40503 + 7)(32)

const startNode = (index: number, dataDir: string, bootstrap: ReadonlyArray<{ host: string; port: number }>) =>
  Effect.gen(function*() {
    const signing = seed(index, 1)
    const encryption = seed(index, 2)
    const base = Layer.mergeAll(
      Layer.succeed(Identity, identityFromSeeds(signing, encryption)),
      signaturesLayer,
      // A light name-claim proof of work: this bench measures messages, not claims (bench/claimCost.ts does).
      NodeConfig.layer({ bootstrap, claimDifficulty: 4, minClaimDifficulty: 4, idPuzzleBits: 0 }),
      ChatConfig.layer(),
      ChatStoreConfig.layer(),
      NodeMessageCrypto.layerFromSeeds(signing, encryption)
    )
    const storage = SqliteChatStore.layer({ filename: join(dataDir, `node-${index}.db`) })
    const node = Directory.layer().pipe(
      Layer.provideMerge(ProfileStore.layerMemory()),
      Layer.provideMerge(DhtNode.layerWithMemoryStore),
      Layer.provideMerge(TcpTransport.layer({ listen: { host: loopbackHost(index), port: 0 } }))
    )
    const chat = Layer.merge(DeliveryLayer.layer, Relay.layer).pipe(
      Layer.provideMerge(node),
      Layer.provideMerge(storage),
      Layer.provideMerge(base)
    )
    const context = yield* Layer.build(chat)
    yield* Context.get(context, DhtNode).awaitJoined
    return context
  })

const program = (dataDir: string) =>
  Effect.gen(function*() {
    const first = yield* startNode(0, dataDir, [])
    const nodes = [first]
    const seedAddress = Context.get(first, Transport).localAddress
    for (let index = 1; index < nodeCount; index++) nodes.push(yield* startNode(index, dataDir, [seedAddress]))
    const [alice, bob] = [nodes[1], nodes[2]]
    if (alice === undefined || bob === undefined) return
    yield* Context.get(alice, Directory).register("alice")
    yield* Context.get(bob, Directory).register("bob")
    const messenger = Context.get(alice, Messenger)

    // Warm up connections and record caches.
    for (let i = 0; i < 20; i++) {
      const sent = yield* messenger.send("bob", `warm-up ${i}`)
      yield* messenger.awaitDelivery(sent.id, Duration.seconds(10))
    }

    const latencies: Array<number> = []
    let delivered = 0
    for (let i = 0; i < messageCount; i++) {
      const begin = performance.now()
      const sent = yield* messenger.send("bob", `message ${i}`)
      const status = yield* messenger.awaitDelivery(sent.id, Duration.seconds(10))
      latencies.push(performance.now() - begin)
      if (status === "delivered") delivered++
    }

    // A burst: count bob's receptions and alice's receipts as they happen.
    const bobEvents = Context.get(bob, Messenger).events
    const receipts = messenger.events.pipe(
      Stream.filter((event) => event._tag === "StatusChanged" && event.status === "delivered"),
      Stream.take(burstCount),
      Stream.runDrain,
      Effect.fork
    )
    const received = bobEvents.pipe(Stream.filter((event) => event._tag === "Received"), Stream.take(burstCount), Stream.runDrain, Effect.fork)
    const receiptsFiber = yield* receipts
    const receivedFiber = yield* received
    const burstBegin = performance.now()
    for (let i = 0; i < burstCount; i++) yield* messenger.send("bob", `burst ${i}`)
    const queuedMs = performance.now() - burstBegin
    yield* receivedFiber.await
    const receivedMs = performance.now() - burstBegin
    yield* receiptsFiber.await
    const deliveredMs = performance.now() - burstBegin

    const show = (values: ReadonlyArray<number>) =>
      `p50 ${percentile(values, 50).toFixed(2)} ms, p95 ${percentile(values, 95).toFixed(2)} ms, max ${Math.max(...values).toFixed(2)} ms`
    console.log(`chat over loopback TCP: ${nodeCount} nodes, SQLite stores (WAL, synchronous=FULL)`)
    console.log(`  online delivery latency (send → receipt verified), ${messageCount} messages one at a time:`)
    console.log(`    ${show(latencies)}; delivered ${delivered}/${messageCount}`)
    console.log(`  burst of ${burstCount} messages from one node:`)
    console.log(`    committed to the outbox  ${(burstCount / (queuedMs / 1000)).toFixed(0)} msg/s`)
    console.log(`    received by bob          ${(burstCount / (receivedMs / 1000)).toFixed(0)} msg/s`)
    console.log(`    delivered (receipts)     ${(burstCount / (deliveredMs / 1000)).toFixed(0)} msg/s`)
  }).pipe(Effect.scoped, Logger.withMinimumLogLevel(LogLevel.Warning))

const dataDir = mkdtempSync(join(tmpdir(), "peerchat-bench-"))
Effect.runPromise(program(dataDir))
  .catch((error: unknown) => {
    console.error(error)
    process.exitCode = 1
  })
  .finally(() => rmSync(dataDir, { recursive: true, force: true }))
