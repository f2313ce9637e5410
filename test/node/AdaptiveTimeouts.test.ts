/**
 * Adaptive query timeouts over the in-memory network (zero latency; slow and
 * dead peers are modelled by handlers that sleep or hang). Each scenario is
 * run twice on identical networks, with `adaptiveTimeouts` on and off, and
 * compares the virtual time the lookup took and what it found.
 */
import type { DhtHandlers } from "../../src/node/Transport.js"
import { testClaimRules } from "../support/claims.js"
import { withFastTestClock } from "../support/deterministic.js"
import { describe, expect, it } from "@effect/vitest"
import { Clock, Effect, Fiber, Logger, LogLevel, Option, Random, TestClock } from "effect"
import type { Key, NodeId } from "../../src/core/Id.js"
import type { LookupResult } from "../../src/core/Lookup.js"
import { userKey, type Username } from "../../src/core/Username.js"
import { validRecordAt } from "../../src/node/Lookups.js"
import { verifyEd25519 } from "../../src/platform/NodeCrypto.js"
import {
  at,
  makeTestNetwork,
  nodeAddress,
  nodeIdentity,
  signedRecord,
  type TestNetwork,
  type TestNode,
  trueClosest
} from "../support/memoryNetwork.js"

const K = 6
const NODES = 16
const CALL_TIMEOUT_MS = 2000
/** The nodes' configuration; joining with one self-lookup (no bucket refreshes) keeps the tests fast. */
const CONFIG = { k: K, alpha: 3, refreshBucketsOnJoin: false }
/** Virtual time between polls of a running lookup (the TestClock wakes each sleep at its own time within a step). */
const STEP_MS = 50

const quiet = <A, E, R>(self: Effect.Effect<A, E, R>) => withFastTestClock(Logger.withMinimumLogLevel(self, LogLevel.Error))

/**
 * Runs `scenario` on a fresh network with adaptive timeouts on, then on an
 * identical one with them off. Each run gets its own generator from the same
 * seed (the node fibers inherit it), so both networks are built alike.
 */
const onAndOff = <A, E, R>(scenario: (net: TestNetwork, adaptive: boolean) => Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    const runs: Array<A> = []
    for (const adaptive of [true, false]) {
      runs.push(
        yield* Effect.withRandom(
          Effect.flatMap(makeTestNetwork(NODES, { ...CONFIG, adaptiveTimeouts: adaptive }), (net) =>
            scenario(net, adaptive)),
          Random.make(7)
        )
      )
    }
    const [on, off] = runs
    if (on === undefined || off === undefined) throw new Error("both runs return")
    return { on, off }
  })

/** Makes `node` accept connections but never answer a DHT request, like a host that went away mid-call. */
const hang = (node: TestNode) =>
  node.transport.serve({
    Ping: () => Effect.never,
    FindNode: () => Effect.never,
    FindValue: () => Effect.never,
    Store: () => Effect.never
  })

/** Makes `node` answer FindNode and FindValue like DhtNode does, but only after `delayMs`. */
const slow = (node: TestNode, delayMs: number) =>
  node.transport.serve({
    FindNode: (caller, request) =>
      Effect.sleep(delayMs).pipe(
        Effect.zipRight(node.routing.observe(caller)),
        Effect.zipRight(node.routing.closest(request.target, K, caller.nodeId)),
        Effect.map((contacts) => ({ contacts }))
      ),
    FindValue: (caller, request) =>
      Effect.gen(function*() {
        yield* Effect.sleep(delayMs)
        yield* node.routing.observe(caller)
        const held = yield* node.store.get(request.key, yield* Clock.currentTimeMillis)
        const contacts = yield* node.routing.closest(request.key, K, caller.nodeId)
        return Option.isSome(held)
          ? { _tag: "Found" as const, record: held.value, contacts }
          : { _tag: "Closer" as const, contacts }
      })
  } satisfies Partial<DhtHandlers>)

/** Runs `lookup` while advancing virtual time, and returns its result and the virtual time it took. */
const timed = <A>(lookup: Effect.Effect<A>) =>
  Effect.gen(function*() {
    const start = yield* Clock.currentTimeMillis
    // The lookup reads the clock when it ends: TestClock.adjust sets the time of each
    // wake-up it runs, so this is exact, not rounded to the polling step.
    const fiber = yield* Effect.fork(
      Effect.flatMap(lookup, (result) => Effect.map(Clock.currentTimeMillis, (end) => ({ result, elapsed: end - start })))
    )
    for (let polled = 0; fiber.unsafePoll() === null && polled < 10 * CALL_TIMEOUT_MS; polled += STEP_MS) {
      yield* TestClock.adjust(STEP_MS)
    }
    return yield* Fiber.join(fiber)
  })

const nodeIds = (net: TestNetwork): Array<NodeId> => net.nodes.map((node) => node.nodeId)
const ids = (result: LookupResult<unknown>): Array<NodeId> => result.closest.map((contact) => contact.nodeId)

/** The searcher joined last, so its join lookups have taught it the network's round-trip times. */
const SEARCHER = NODES - 1

describe("adaptive query timeouts", () => {
  it.scoped("a lookup moves past peers that never answer after about their round trip, not the call timeout", () =>
    quiet(Effect.gen(function*() {
      const { off, on } = yield* onAndOff((net) => Effect.gen(function*() {
        const searcher = at(net.nodes, SEARCHER)
        const target = at(net.nodes, 5).nodeId as string as Key
        const others = nodeIds(net).filter((id) => id !== searcher.nodeId && id !== target)
        // A third of the network goes dark, including the three nodes closest to the target.
        const closestThree = trueClosest(target, others, 3)
        const dark = net.nodes.filter((node) =>
          closestThree.includes(node.nodeId) || (node.index % 3 === 0 && node.index !== SEARCHER && node.index !== 5)
        )
        expect(dark.length).toBeGreaterThanOrEqual(5)
        for (const node of dark) yield* hang(node)
        const before = yield* searcher.lookups.queryTimeout(at(dark, 0).nodeId)
        const { elapsed, result } = yield* timed(searcher.lookups.findNode(target))
        const after = yield* searcher.lookups.queryTimeout(at(dark, 0).nodeId)
        return { elapsed, result, before, after, dark: dark.map((node) => node.nodeId), net, searcher }
      }))
      // Off: the first queries all go to dark peers, and each holds its slot for the full call timeout.
      expect(off.elapsed).toBeGreaterThanOrEqual(CALL_TIMEOUT_MS)
      expect(off.before.overdueAfterMs).toBe(CALL_TIMEOUT_MS)
      // On: the join taught the searcher that the network answers at once, so a dark peer
      // is overdue after the 100 ms floor and the lookup is over within a few of them.
      expect(on.before.overdueAfterMs).toBe(100)
      expect(on.elapsed).toBeLessThanOrEqual(500)
      expect(on.elapsed * 4).toBeLessThanOrEqual(off.elapsed)
      for (const run of [on, off]) {
        expect(run.result.stats.timeouts).toBeGreaterThan(0)
        const found = ids(run.result)
        for (const id of run.dark) expect(found).not.toContain(id)
        const live = nodeIds(run.net).filter((id) => id !== run.searcher.nodeId && !run.dark.includes(id))
        // The closest live nodes are found; honest peers still name dark ones, which may
        // crowd the farthest live ones out of every answer.
        expect(found.slice(0, 3)).toEqual(trueClosest(at(run.net.nodes, 5).nodeId, live, 3))
      }
      // Both settings end with the same closest live nodes.
      expect(ids(on.result)).toEqual(ids(off.result))
      // A query that never answered is no round-trip sample.
      expect(on.after).toEqual({ ...on.before, network: on.after.network })
    })))

  it.scoped("findValue gets past dark holders to a live one within a few hundred virtual ms", () =>
    quiet(Effect.gen(function*() {
      const username = "grace" as Username
      const key = userKey(username)
      const { off, on } = yield* onAndOff((net) => Effect.gen(function*() {
        const searcher = at(net.nodes, SEARCHER)
        const record = signedRecord({ identity: nodeIdentity(2), address: nodeAddress(2) }, username, {
          issuedAt: 0,
          expiresAt: 60 * 60_000
        })
        yield* at(net.nodes, 2).dht.publish(record)
        // The searcher's whole first wave of alpha queries goes to peers that never answer.
        const dark = (yield* searcher.routing.closest(key, 3)).map((contact) => contact.nodeId)
        for (const node of net.nodes.filter((n) => dark.includes(n.nodeId))) yield* hang(node)
        const run = yield* timed(searcher.lookups.findValue(key, validRecordAt(key, verifyEd25519, testClaimRules)))
        expect(run.result.value).toEqual(record)
        expect(dark).not.toContain(run.result.valueFrom?.nodeId)
        return run.elapsed
      }))
      expect(off).toBeGreaterThanOrEqual(CALL_TIMEOUT_MS)
      expect(on).toBeLessThanOrEqual(300)
    })))

  it.scoped("a slow peer's late answer teaches the lookup to wait for it next time", () =>
    quiet(Effect.withRandom(Random.make(7))(Effect.gen(function*() {
      const net = yield* makeTestNetwork(NODES, CONFIG)
      const searcher = at(net.nodes, SEARCHER)
      const sluggish = at(net.nodes, 5)
      yield* slow(sluggish, 600)
      const target = sluggish.nodeId as string as Key
      expect((yield* searcher.lookups.queryTimeout(sluggish.nodeId)).overdueAfterMs).toBe(100)

      const first = yield* timed(searcher.lookups.findNode(target))
      // Overdue at 100 ms, the lookup went on without it and finished before its answer.
      expect(first.result.stats.timeouts).toBe(1)
      expect(ids(first.result)).not.toContain(sluggish.nodeId)
      expect(first.elapsed).toBeLessThan(600)
      // The late answer still arrives and is a sample: it raises the peer's timeout (to 375 ms after
      // its earlier prompt answer: srtt 75, rttvar 150), and a second late answer past 600 ms.
      yield* TestClock.adjust(600)
      const raised = yield* searcher.lookups.queryTimeout(sluggish.nodeId)
      expect(raised.overdueAfterMs).toBeGreaterThan(100)
      const again = yield* timed(searcher.lookups.findNode(target))
      expect(again.result.stats.timeouts).toBe(1)
      yield* TestClock.adjust(600)
      const learned = yield* searcher.lookups.queryTimeout(sluggish.nodeId)
      expect(learned.overdueAfterMs).toBeGreaterThan(600)
      expect(learned.peer?.srtt).toBeGreaterThan(0)
      // A peer that answered at once keeps its own short timeout.
      const prompt = yield* searcher.lookups.queryTimeout(at(ids(first.result), 0))
      expect(prompt.peer).toEqual({ srtt: 0, rttvar: 0 })
      expect(prompt.overdueAfterMs).toBe(100)

      const second = yield* timed(searcher.lookups.findNode(target))
      expect(second.result.stats.timeouts).toBe(0)
      expect(ids(second.result)[0]).toBe(sluggish.nodeId)
      const everyone = nodeIds(net).filter((id) => id !== searcher.nodeId)
      expect(ids(second.result)).toEqual(trueClosest(target, everyone, K))
    }))))

  it.scoped("with every peer answering, results are exactly those without adaptive timeouts", () =>
    quiet(Effect.gen(function*() {
      const { off, on } = yield* onAndOff((net) => Effect.gen(function*() {
        const username = "ada" as Username
        const record = signedRecord({ identity: nodeIdentity(4), address: nodeAddress(4) }, username, {
          issuedAt: 0,
          expiresAt: 60 * 60_000
        })
        yield* at(net.nodes, 4).dht.publish(record)
        const results: Array<unknown> = []
        const lookups = (searcher: TestNode) =>
          Effect.gen(function*() {
            for (const index of [1, 5, 9, 13]) {
              results.push(yield* timed(searcher.lookups.findNode(at(net.nodes, index).nodeId)))
            }
            const key = userKey(username)
            results.push(yield* timed(searcher.lookups.findValue(key, validRecordAt(key, verifyEd25519, testClaimRules))))
          })
        // At once (the in-memory network has no latency) ...
        yield* lookups(at(net.nodes, SEARCHER))
        yield* lookups(at(net.nodes, 3))
        // ... and with every other node taking 40 ms to answer: still within every timeout.
        for (const node of net.nodes.filter((n) => n.index !== SEARCHER)) yield* slow(node, 40)
        yield* lookups(at(net.nodes, SEARCHER))
        return results
      }))
      expect(on.length).toBe(15)
      expect(on).toEqual(off)
      for (const outcome of on) {
        expect((outcome as { result: LookupResult<unknown> }).result.stats.timeouts).toBe(0)
      }
      // The slow lookups really took virtual time.
      expect((at(on, 14) as { elapsed: number }).elapsed).toBeGreaterThanOrEqual(40)
    })))
})
