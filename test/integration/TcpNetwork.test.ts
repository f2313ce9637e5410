/**
 * Twenty real nodes, each on its own loopback network (127.x.y.1), in one process, talking TCP through the
 * authenticated transport: every node registers a user and resolves every
 * other user; then a third of the nodes stop and every user is still found.
 */
import { loopbackHost } from "../support/loopback.js"
import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Exit, ExecutionStrategy, Layer, Logger, LogLevel, Schedule, Scope } from "effect"
import { formatAddress } from "../../src/core/Contact.js"
import { DhtNode } from "../../src/node/DhtNode.js"
import { Directory } from "../../src/node/Directory.js"
import { Identity } from "../../src/node/Identity.js"
import { NodeConfig } from "../../src/node/NodeConfig.js"
import { ProfileStore } from "../../src/node/Profile.js"
import { Transport } from "../../src/node/Transport.js"
import { signaturesLayer } from "../../src/platform/IdentityStore.js"
import { TcpTransport } from "../../src/platform/TcpTransport.js"
import { at, nodeIdentity } from "../support/memoryNetwork.js"

const NODES = 20
const K = 8

interface RunningNode {
  readonly index: number
  readonly username: string
  readonly address: string
  readonly directory: Directory["Type"]
  readonly dht: DhtNode["Type"]
  readonly scope: Scope.CloseableScope
}

const startTcpNode = (index: number, bootstrap: ReadonlyArray<{ host: string; port: number }>) =>
  Effect.gen(function*() {
    const layer = Directory.layer().pipe(
      Layer.provideMerge(ProfileStore.layerMemory()),
      Layer.provideMerge(DhtNode.layerWithMemoryStore),
      Layer.provideMerge(TcpTransport.layer({ listen: { host: loopbackHost(index), port: 0 }, callTimeout: "2 seconds" })),
      Layer.provideMerge(Layer.mergeAll(
        Layer.succeed(Identity, nodeIdentity(index)),
        signaturesLayer,
        NodeConfig.layer({ k: K, alpha: 3, bootstrap, claimDifficulty: 4, minClaimDifficulty: 4, idPuzzleBits: 0 })
      ))
    )
    const scope = yield* Scope.fork(yield* Effect.scope, ExecutionStrategy.sequential)
    const context = yield* Layer.buildWithScope(layer, scope)
    const dht = Context.get(context, DhtNode)
    yield* dht.awaitJoined
    return {
      index,
      username: `user-${index}`,
      address: formatAddress(Context.get(context, Transport).localAddress),
      directory: Context.get(context, Directory),
      dht,
      scope
    } satisfies RunningNode
  })

/** Every node in `resolvers` resolves every user in `users` to its node's address. */
const expectEveryoneResolves = (resolvers: ReadonlyArray<RunningNode>, users: ReadonlyArray<RunningNode>) =>
  Effect.forEach(resolvers, (resolver) =>
    Effect.forEach(users, (user) =>
      Effect.gen(function*() {
        const record = yield* resolver.directory.whois(user.username)
        expect(formatAddress(at(record.addresses, 0)), `${resolver.username} resolving ${user.username}`).toBe(user.address)
      }), { concurrency: 4 }), { discard: true })

describe("a network of real TCP nodes on loopback", () => {
  it.scopedLive("a newcomer enters its bootstrap node's table, and learns it is reachable, by the node's listening probes", () =>
    Effect.gen(function*() {
      const first = yield* startTcpNode(0, [])
      const seedAddress = { host: loopbackHost(0), port: Number(first.address.split(":")[1]) }
      const newcomer = yield* startTcpNode(1, [seedAddress])
      const newcomerId = (yield* newcomer.dht.status).nodeId
      // The first node never calls the newcomer: only its dial-back (a probe of the newcomer's
      // address) can put it in its table, at the address the newcomer listens on.
      const known = yield* first.dht.closestKnown(newcomerId, 1).pipe(
        Effect.repeat({ until: (contacts) => contacts[0]?.nodeId === newcomerId, schedule: Schedule.spaced("10 millis") }),
        Effect.timeoutFail({ duration: "5 seconds", onTimeout: () => "the newcomer never entered the first node's table" }),
        Effect.zipRight(first.dht.closestKnown(newcomerId, 1))
      )
      expect(formatAddress(at(known, 0).address)).toBe(newcomer.address)
      // The newcomer's DialBack request: the first node probes it and says it is reachable.
      yield* newcomer.dht.reachability.pipe(
        Effect.repeat({ until: (reachability) => reachability === "Public", schedule: Schedule.spaced("10 millis") }),
        Effect.timeoutFail({ duration: "5 seconds", onTimeout: () => "the newcomer never learnt it is reachable" })
      )
    }).pipe(Logger.withMinimumLogLevel(LogLevel.Warning)), { timeout: 30_000 })

  it.scopedLive("every node resolves every user, also after a third of the nodes stop", () =>
    Effect.gen(function*() {
      const first = yield* startTcpNode(0, [])
      const nodes: Array<RunningNode> = [first]
      const seedAddress = { host: loopbackHost(0), port: Number(first.address.split(":")[1]) }
      for (let index = 1; index < NODES; index++) nodes.push(yield* startTcpNode(index, [seedAddress]))

      yield* Effect.forEach(nodes, (node) => node.directory.register(node.username), { concurrency: 5, discard: true })
      yield* expectEveryoneResolves(nodes, nodes)

      // Stop every third node (not the bootstrap node): 7 of 20, fewer than the k = 8 replicas of each record.
      const stopped = nodes.filter((node) => node.index % 3 === 1)
      yield* Effect.forEach(stopped, (node) => Scope.close(node.scope, Exit.void), { discard: true })
      const alive = nodes.filter((node) => node.index % 3 !== 1)
      expect(stopped.length).toBeGreaterThanOrEqual(Math.floor(NODES / 3))
      yield* expectEveryoneResolves(alive, nodes)
    }).pipe(Logger.withMinimumLogLevel(LogLevel.Warning)), { timeout: 120_000 })
})
