/**
 * The simulator on small seeded networks in virtual time: a seed replays a
 * run byte for byte, and the scenarios of the paper (offline chat,
 * dual-offline chat), moving, a partition that heals and 30 % churn deliver
 * what they should. Assertions are on delivered messages and lookups, never
 * on wall-clock timings.
 */
import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Exit, Logger, LogLevel, Option, Random, type Scope } from "effect"
import type { MemoryNetworkService } from "../../src/platform/MemoryTransport.js"
import { makeSimLinks } from "../../src/sim/LinkModel.js"
import {
  buildNetwork,
  checkInvariants,
  runLookups,
  runSimulation,
  silencePeers,
  type SimNetwork,
  startChurn
} from "../../src/sim/Simulation.js"
import { defaultSimulationOptions, type SimulationOptions } from "../../src/sim/SimulationOptions.js"
import type { SimNode } from "../../src/sim/SimNode.js"
import { simAddress } from "../../src/sim/SimNode.js"
import { makeVirtualTime } from "../../src/sim/VirtualTime.js"

/**
 * Runs `program` on a fresh network in virtual time, seeded; returns to the
 * event loop now and then so the test runner's own timers keep running.
 */
const simulate = async <A>(
  seed: number,
  program: (network: MemoryNetworkService, rpcCounts: () => Readonly<Record<string, number>>) => Effect.Effect<A, never, Scope.Scope>
): Promise<A> => {
  const exit = await makeVirtualTime(Date.UTC(2026, 0, 1)).runPromise(
    Effect.flatMap(makeSimLinks(), (links) => program(links.network, links.rpcCountsByKind)).pipe(
      Effect.scoped,
      Effect.withRandom(Random.make(seed)),
      Logger.withMinimumLogLevel(LogLevel.None)
    ),
    { limitMs: 7 * 24 * 3_600_000 }
  )
  if (Exit.isFailure(exit)) throw new Error(`the simulation failed (seed ${seed}): ${String(exit.cause)}`)
  return exit.value
}

const small: SimulationOptions = {
  ...defaultSimulationOptions,
  nodes: 40,
  k: 8,
  users: 12,
  lookups: 60,
  messages: 4,
  durationMs: 10 * 60_000,
  warmupMs: 60_000
}

const node = (net: SimNetwork, index: number): SimNode => {
  const session = net.sessions[index]
  if (session === undefined) throw new Error(`node ${index} is offline`)
  return session
}

const receivedTexts = (at: SimNode, from: string) =>
  Effect.map(Effect.orDie(at.messenger.history(from)), (entries) => entries.map((entry) => entry.text))

describe("the simulator", async () => {
  it("replays a seed exactly: the same seed gives the same summary, byte for byte", async () => {
    const options = { ...small, churn: 0.3, seed: 5 }
    const first = JSON.stringify(await simulate(options.seed, (network, rpcCounts) => runSimulation(network, options, { rpcCounts })))
    const second = JSON.stringify(await simulate(options.seed, (network, rpcCounts) => runSimulation(network, options, { rpcCounts })))
    expect(second).toBe(first)
    const other = JSON.stringify(await simulate(6, (network, rpcCounts) => runSimulation(network, { ...options, seed: 6 }, { rpcCounts })))
    expect(other).not.toBe(first)
  }, 120_000)

  it("30 % churn: lookups still find every user, offline mail arrives, invariants hold", async () => {
    const summary = await simulate(7, (network, rpcCounts) => runSimulation(network, { ...small, churn: 0.3, seed: 7, lookups: 100 }, { rpcCounts }))
    expect(summary.violations).toEqual([])
    expect(summary.lookups.count).toBe(100)
    // k = 8 on 40 nodes with silent offline peers: this seed loses one lookup in 100 (the
    // 99.9 % target is for k = 20 on 10,000 nodes, measured by npm run sim).
    expect(summary.lookups.successRate).toBeGreaterThanOrEqual(0.98)
    expect(summary.offlineDelivery.sent).toBe(4)
    expect(summary.offlineDelivery.deliveryRate).toBe(1)
    expect(summary.lookups.latencyMs.p50).toBeGreaterThan(0)
    expect(summary.rpcsPerNodePerSecond).toBeGreaterThan(0)
    expect(summary.rpcsByKind["FindValue"]).toBeGreaterThan(0)
  }, 120_000)

  it("the paper's offline chat: the recipient is away, comes back, and gets the message", async () => {
    const texts = await simulate(11, (network) =>
      Effect.gen(function*() {
        const net = yield* buildNetwork(network, { ...small, seed: 11 })
        const [alice, bob] = [net.users[0], net.users[1]]
        if (alice === undefined || bob === undefined) return yield* Effect.die("no users")
        yield* net.stop(bob.index)
        yield* Effect.orDie(node(net, alice.index).messenger.send(bob.username, "are you there?"))
        yield* Effect.sleep(Duration.minutes(30))
        const back = yield* net.start(bob.index)
        yield* Effect.sleep(Duration.seconds(10))
        return yield* receivedTexts(back, alice.username)
      }))
    expect(texts).toEqual(["are you there?"])
  }, 60_000)

  it("dual-offline chat: the sender leaves before the recipient returns; the receipt waits for the sender", async () => {
    const outcome = await simulate(12, (network) =>
      Effect.gen(function*() {
        const net = yield* buildNetwork(network, { ...small, seed: 12 })
        const [alice, bob] = [net.users[0], net.users[1]]
        if (alice === undefined || bob === undefined) return yield* Effect.die("no users")
        yield* net.stop(bob.index)
        const sent = yield* Effect.orDie(node(net, alice.index).messenger.send(bob.username, "see you never"))
        yield* Effect.sleep(Duration.minutes(1))
        yield* net.stop(alice.index)
        yield* Effect.sleep(Duration.minutes(30))
        const back = yield* net.start(bob.index)
        yield* Effect.sleep(Duration.seconds(10))
        const texts = yield* receivedTexts(back, alice.username)
        yield* net.stop(bob.index)
        const aliceBack = yield* net.start(alice.index)
        yield* Effect.sleep(Duration.seconds(10))
        const status = Option.map(yield* Effect.orDie(aliceBack.state.chatStore.message(sent.id)), (entry) => entry.status)
        return { texts, status }
      }))
    expect(outcome).toEqual({ texts: ["see you never"], status: Option.some("delivered") })
  }, 60_000)

  it("moving: a user starts at a new address; peers find it and messages reach it there", async () => {
    const outcome = await simulate(13, (network) =>
      Effect.gen(function*() {
        const net = yield* buildNetwork(network, { ...small, seed: 13 })
        const [alice, bob] = [net.users[0], net.users[1]]
        if (alice === undefined || bob === undefined) return yield* Effect.die("no users")
        yield* net.stop(bob.index)
        const moved = yield* net.start(bob.index, { address: simAddress(bob.index, 9000) })
        yield* Effect.sleep(Duration.seconds(10))
        const found = yield* Effect.orDie(node(net, alice.index).directory.whois(bob.username))
        const sent = yield* Effect.orDie(node(net, alice.index).messenger.send(bob.username, "new place?"))
        yield* Effect.sleep(Duration.seconds(10))
        const status = Option.map(yield* Effect.orDie(node(net, alice.index).state.chatStore.message(sent.id)), (entry) => entry.status)
        return { port: found.addresses[0]?.port, texts: yield* receivedTexts(moved, alice.username), status }
      }))
    expect(outcome).toEqual({ port: 9000, texts: ["new place?"], status: Option.some("delivered") })
  }, 60_000)

  it("a partition that heals: mail waits on the sender's side, lookups and delivery work again after healing", async () => {
    const outcome = await simulate(14, (network) =>
      Effect.gen(function*() {
        const net = yield* buildNetwork(network, { ...small, seed: 14 })
        const [alice, bob] = [net.users[0], net.users[1]]
        if (alice === undefined || bob === undefined) return yield* Effect.die("no users")
        // Bob's side: bob and a third of the others; alice's side: the rest.
        const bobSide = new Set([bob.index, ...net.sessions.map((_, index) => index).filter((index) => index % 3 === 0 && index !== alice.index)])
        const addresses = net.online().map((session) => session.address)
        yield* network.partition([
          addresses.filter((_, index) => bobSide.has(index)),
          addresses.filter((_, index) => !bobSide.has(index))
        ])
        const sent = yield* Effect.orDie(node(net, alice.index).messenger.send(bob.username, "across the split"))
        yield* Effect.sleep(Duration.seconds(30))
        const during = Option.map(yield* Effect.orDie(node(net, alice.index).state.chatStore.message(sent.id)), (entry) => entry.status)
        const textsDuring = yield* receivedTexts(node(net, bob.index), alice.username)
        yield* network.heal
        // Bob's periodic mailbox pull (or a relay's push) brings it over.
        yield* Effect.sleep(Duration.minutes(6))
        const lookups = yield* runLookups(net, { count: 40, windowMs: 60_000 })
        return {
          during,
          textsDuring,
          textsAfter: yield* receivedTexts(node(net, bob.index), alice.username),
          lookupsFound: lookups.filter((lookup) => lookup.found).length,
          violations: yield* checkInvariants(net)
        }
      }))
    expect(outcome.during).toEqual(Option.some("stored-offline"))
    expect(outcome.textsDuring).toEqual([])
    expect(outcome.textsAfter).toEqual(["across the split"])
    expect(outcome.lookupsFound).toBe(40)
    expect(outcome.violations).toEqual([])
  }, 60_000)

  it("churn keeps lookups working for every user while a third of the nodes come and go", async () => {
    const outcome = await simulate(15, (network) =>
      Effect.gen(function*() {
        const net = yield* buildNetwork(network, { ...small, seed: 15 })
        yield* startChurn(net, { fraction: 0.3, medianSessionMs: 20 * 60_000, sigma: 1, exclude: new Set() })
        yield* Effect.sleep(Duration.minutes(30))
        const offline = net.sessions.filter((session) => session === undefined).length
        const lookups = yield* runLookups(net, { count: 100, windowMs: 20 * 60_000 })
        return { offline, found: lookups.filter((lookup) => lookup.found).length, violations: yield* checkInvariants(net) }
      }))
    expect(outcome.offline).toBeGreaterThan(0)
    expect(outcome.found).toBe(100)
    expect(outcome.violations).toEqual([])
  }, 60_000)

  it("silent peers: nodes that probe their quiet contacts, as real nodes do, drop them from their tables; nodes that do not, keep them", async () => {
    const heldAfter = (probeQuietPeers: boolean) =>
      simulate(14, (network) =>
        Effect.gen(function*() {
          const net = yield* buildNetwork(network, { ...small, seed: 14, probeQuietPeers })
          const ids = net.sessions.map((session) => session?.nodeId)
          const silenced = yield* silencePeers(net, 0.3, new Set([0, ...net.users.map((user) => user.index)]))
          const silentIds = new Set(silenced.map((index) => ids[index]))
          const held = () =>
            Effect.map(
              Effect.forEach(net.online(), (session) => session.routing.contacts),
              (tables) => tables.flat().filter((contact) => silentIds.has(contact.nodeId)).length
            )
          const before = yield* held()
          yield* Effect.sleep(Duration.minutes(20))
          return { silenced: silenced.length, before, after: yield* held() }
        }))
    const probing = await heldAfter(true)
    expect(probing.silenced).toBe(12)
    expect(probing.before).toBeGreaterThan(0)
    // Each silent contact fails three probes (the table's eviction rule), a few per round of 8.
    expect(probing.after).toBe(0)
    const quiet = await heldAfter(false)
    expect(quiet.before).toBe(probing.before)
    expect(quiet.after).toBeGreaterThan(0)
  }, 120_000)
})
