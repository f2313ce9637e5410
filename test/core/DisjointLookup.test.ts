/**
 * Tests of the S/Kademlia disjoint-path lookup. A synchronous driver runs it
 * on a virtual clock against static networks (answers from each node's
 * routing table, as `runLookup` does for a plain lookup) and against
 * hand-built adversarial topologies; expectations come from a brute-force
 * bigint XOR oracle and from what the driver itself saw on the wire (every
 * query emitted, per path), never from the module's own helpers.
 */
import { describe, expect, it } from "@effect/vitest"
import { FastCheck as fc } from "effect"
import type { Contact } from "../../src/core/Contact.js"
import {
  type DisjointLookup,
  type DisjointResult,
  nextDisjointStep,
  onDisjointAbandoned,
  onDisjointFailure,
  onDisjointResponse,
  type PathQuery,
  startDisjointLookup
} from "../../src/core/DisjointLookup.js"
import { type Key, type NodeId, randomNodeId } from "../../src/core/Id.js"
import type { LookupConfig, LookupKind, LookupResponse } from "../../src/core/Lookup.js"
import { answerQuery, makeStaticNetwork, runLookup, type StaticNetwork } from "../../src/core/StaticNetwork.js"
import { arbContact, arbKey, contactFor, PROPERTY_SEED, seededRandomBytes } from "../support/arbitraries.js"

// ---------------------------------------------------------------------------
// Independent oracles and helpers

const distance = (a: Key, b: Key): bigint => BigInt(`0x${a}`) ^ BigInt(`0x${b}`)

/** The `k` ids closest to `target` by brute-force bigint XOR. */
const oracleClosest = (ids: Iterable<NodeId>, target: Key, k: number): Array<NodeId> =>
  Array.from(new Set(ids))
    .map((id) => ({ id, d: distance(id, target) }))
    .sort((x, y) => (x.d < y.d ? -1 : x.d > y.d ? 1 : 0))
    .slice(0, k)
    .map((x) => x.id)

const makeIds = (n: number, seed: number): Array<NodeId> => {
  const randomBytes = seededRandomBytes(seed)
  return Array.from({ length: n }, () => randomNodeId(randomBytes))
}

/** Node id whose distance to ZERO is `n`, so hand-made scenarios read in plain numbers. */
const nid = (n: number): NodeId => n.toString(16).padStart(64, "0") as NodeId
const ZERO = nid(0) as Key
const peer = (n: number): Contact => contactFor(nid(n))
const idsOf = (contacts: ReadonlyArray<Contact>): Array<NodeId> => contacts.map((c) => c.nodeId)
const closer = (...ns: Array<number>): LookupResponse<never> => ({ _tag: "Closer", contacts: ns.map(peer) })

const propOptions = (numRuns: number) => ({ fastCheck: { seed: PROPERTY_SEED, numRuns } })

/** The (path, peer) pairs of a `Query` action. */
const queriesOf = (
  action: { readonly _tag: string; readonly queries?: ReadonlyArray<PathQuery> }
): Array<[number, NodeId]> => {
  if (action._tag !== "Query" || action.queries === undefined) throw new Error(`expected Query, got ${action._tag}`)
  return action.queries.map((q) => [q.path, q.peer.nodeId])
}

const finished = <V>(lookup: DisjointLookup<V>, now: number): DisjointResult<V> => {
  const step = nextDisjointStep(lookup, now)
  if (step.action._tag !== "Finished") throw new Error(`expected Finished, got ${step.action._tag}`)
  return step.action.result
}

// ---------------------------------------------------------------------------
// A synchronous driver on a virtual clock

/** How a peer behaves when queried: answers, refuses at once, or never answers. */
type Behaviour<V> =
  | { readonly _tag: "Answer"; readonly response: LookupResponse<V> }
  | { readonly _tag: "Refuse" }
  | { readonly _tag: "Silent" }

interface Driven<V> {
  readonly result: DisjointResult<V>
  readonly final: DisjointLookup<V>
  /** Every query emitted, in order. */
  readonly sent: ReadonlyArray<{ readonly path: number; readonly peer: NodeId }>
  /** Answers delivered to a path that was still running. */
  readonly answered: ReadonlyArray<{ readonly path: number; readonly peer: NodeId }>
  /** Refusals delivered to a path that was still running. */
  readonly refused: ReadonlyArray<{ readonly path: number; readonly peer: NodeId }>
}

interface Arrival {
  readonly at: number
  readonly path: number
  readonly peer: NodeId
  readonly refused: boolean
  /** A silent peer's call ending at the call timeout (a failure, not a refusal). */
  readonly silent?: boolean
}

const snapshot = <V>(lookup: DisjointLookup<V>): string =>
  JSON.stringify({ owner: [...lookup.owner.entries()], paths: lookup.paths, skipped: lookup.skipped })

/**
 * Runs `start` to completion the way `runLookupTraced` runs a plain lookup:
 * answers arrive after their latency, in arrival order (ties in sending
 * order), refusals at once; silent peers time out, and their calls fail at
 * the call timeout (as the shell's do). Checks on the way
 * that no step mutates the state it was given.
 */
/** When the shell's call to a silent peer fails (the transport's call timeout). */
const CALL_TIMEOUT_MS = 2000

const drive = <V>(
  start: DisjointLookup<V>,
  behave: (peer: NodeId) => Behaviour<V>,
  options: {
    readonly latencyMs?: (peer: NodeId) => number
    readonly timeoutFor?: (peer: Contact) => number | undefined
  } = {}
): Driven<V> => {
  const latencyOf = options.latencyMs ?? (() => 10)
  let lookup = start
  let now = 0
  const sent: Array<{ path: number; peer: NodeId }> = []
  const answered: Array<{ path: number; peer: NodeId }> = []
  const refused: Array<{ path: number; peer: NodeId }> = []
  const arrivals: Array<Arrival> = []
  const schedule = (arrival: Arrival): void => {
    let index = arrivals.length
    while (index > 0 && (arrivals[index - 1] as Arrival).at > arrival.at) index--
    arrivals.splice(index, 0, arrival)
  }
  const maxQueries = Math.max(...start.paths.map((p) => p.config.maxQueries))
  const bound = 3 * start.paths.length * maxQueries + 10
  for (let iteration = 0;; iteration++) {
    if (iteration > bound) throw new Error(`disjoint lookup made no progress after ${bound} steps`)
    const before = snapshot(lookup)
    const step = nextDisjointStep(lookup, now, options.timeoutFor)
    expect(snapshot(lookup)).toBe(before)
    lookup = step.lookup
    const action = step.action
    if (action._tag === "Finished") return { result: action.result, final: lookup, sent, answered, refused }
    if (action._tag === "Query") {
      expect(action.queries.length).toBeGreaterThan(0)
      for (const { path, peer: contact } of action.queries) {
        sent.push({ path, peer: contact.nodeId })
        const behaviour = behave(contact.nodeId)
        if (behaviour._tag === "Answer") schedule({ at: now + latencyOf(contact.nodeId), path, peer: contact.nodeId, refused: false })
        else if (behaviour._tag === "Refuse") schedule({ at: now, path, peer: contact.nodeId, refused: true })
        // A silent peer's call fails when the shell's call timeout ends it.
        else schedule({ at: now + CALL_TIMEOUT_MS, path, peer: contact.nodeId, refused: true, silent: true })
      }
      continue
    }
    const next = arrivals[0]
    const deadline = action.nextDeadline
    if (next !== undefined && (deadline === undefined || next.at <= deadline)) {
      arrivals.shift()
      now = Math.max(now, next.at)
      const running = lookup.paths[next.path]?.result === undefined
      const before = snapshot(lookup)
      if (next.refused) {
        if (running) refused.push({ path: next.path, peer: next.peer })
        lookup = onDisjointFailure(lookup, next.path, next.peer, now)
      } else {
        const behaviour = behave(next.peer)
        if (behaviour._tag !== "Answer") throw new Error("unreachable: only answering peers are scheduled")
        if (running) answered.push({ path: next.path, peer: next.peer })
        lookup = onDisjointResponse(lookup, next.path, next.peer, behaviour.response, now)
      }
      expect(snapshot(step.lookup)).toBe(before)
    } else if (deadline !== undefined) {
      now = Math.max(now, deadline)
    } else {
      throw new Error("disjoint lookup is waiting with nothing in flight and no deadline")
    }
  }
}

/** A static network's peers as behaviours: offline peers time out or refuse. */
const staticBehaviour = <V>(
  network: StaticNetwork<V>,
  target: Key,
  kind: LookupKind,
  offline: "Silent" | "Refuse" = "Silent"
) =>
(at: NodeId): Behaviour<V> =>
  network.offline.has(at) ? { _tag: offline } : { _tag: "Answer", response: answerQuery(network, at, target, kind) }

/** Checks the invariants every run must keep, and returns the set of peers each path queried. */
const checkDisjoint = <V>(driven: Driven<V>, paths: number, self: NodeId | undefined): Array<Set<NodeId>> => {
  const perPath = Array.from({ length: paths }, () => new Set<NodeId>())
  for (const { path, peer: id } of driven.sent) {
    expect(path).toBeGreaterThanOrEqual(0)
    expect(path).toBeLessThan(paths)
    expect(id).not.toBe(self)
    perPath[path]?.add(id)
  }
  // No peer is ever queried twice, so in particular never by two paths.
  expect(new Set(driven.sent.map((q) => q.peer)).size).toBe(driven.sent.length)
  for (let a = 0; a < paths; a++) {
    for (let b = a + 1; b < paths; b++) {
      for (const id of perPath[a] as Set<NodeId>) expect((perPath[b] as Set<NodeId>).has(id)).toBe(false)
    }
  }
  // What was sent and settled is what the statistics say.
  const { stats } = driven.result
  expect(stats.messagesSent).toBe(driven.sent.length)
  expect(stats.responses).toBe(driven.answered.length)
  expect(stats.failures).toBe(driven.refused.length)
  // The merged result is the k closest of every peer that answered a running path, distinct.
  const k = driven.final.k
  expect(idsOf(driven.result.closest)).toEqual(
    oracleClosest(driven.answered.map((a) => a.peer), driven.result.target, k)
  )
  expect(driven.result.paths).toHaveLength(paths)
  return perPath
}

// ---------------------------------------------------------------------------

describe("startDisjointLookup", () => {
  it("rejects a number of paths that is not a positive integer", () => {
    for (const paths of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, -Number.MAX_SAFE_INTEGER]) {
      expect(() => startDisjointLookup({ target: ZERO, kind: "FindNode", seeds: [peer(1)], paths })).toThrow(
        RangeError
      )
    }
    expect(() => startDisjointLookup({ target: ZERO, kind: "FindNode", seeds: [peer(1)], paths: 1 })).not.toThrow()
  })

  it("deals the seeds round-robin by distance, after dropping self and duplicates", () => {
    const seeds = [peer(9), peer(3), peer(1), peer(3), peer(12), peer(5), peer(7), peer(2)]
    const lookup = startDisjointLookup({ target: ZERO, kind: "FindNode", seeds, paths: 3, self: nid(2) })
    // Sorted distinct without self: 1, 3, 5, 7, 9, 12.
    expect(lookup.paths.map((path) => path.candidates.map((c) => c.contact.nodeId))).toEqual([
      [nid(1), nid(7)],
      [nid(3), nid(9)],
      [nid(5), nid(12)]
    ])
    expect([...lookup.owner.entries()].sort((a, b) => (a[0] < b[0] ? -1 : 1))).toEqual([
      [nid(1), 0],
      [nid(3), 1],
      [nid(5), 2],
      [nid(7), 0],
      [nid(9), 1],
      [nid(12), 2]
    ])
    expect(lookup.skipped).toBe(0)
    expect(lookup.k).toBe(20)
    expect(startDisjointLookup({ target: ZERO, kind: "FindNode", seeds, paths: 2, config: { k: 4 } }).k).toBe(4)
  })

  it.prop(
    "path p starts from the seeds of rank p, p + d, p + 2d, … and asks its alpha closest first",
    [arbKey, fc.array(arbContact, { maxLength: 40 }), fc.integer({ min: 1, max: 6 }), fc.integer({ min: 1, max: 4 }), fc
      .boolean()],
    ([target, contacts, paths, alpha, withSelf]) => {
      const self = contacts[0]?.nodeId
      const seeds = [...contacts, ...contacts.slice(0, 3)]
      const lookup = startDisjointLookup({
        target,
        kind: "FindNode",
        seeds,
        paths,
        ...(withSelf && self !== undefined ? { self } : {}),
        config: { k: 8, alpha }
      })
      const ranked = oracleClosest(idsOf(seeds).filter((id) => !(withSelf && id === self)), target, seeds.length)
      const shares = Array.from({ length: paths }, (_, p) => ranked.filter((_, i) => i % paths === p))
      expect(lookup.paths.map((path) => path.candidates.map((c) => c.contact.nodeId))).toEqual(shares)
      for (const [p, share] of shares.entries()) for (const id of share) expect(lookup.owner.get(id)).toBe(p)
      expect(lookup.owner.size).toBe(ranked.length)
      const step = nextDisjointStep(lookup, 0)
      if (ranked.length === 0) {
        expect(step.action._tag).toBe("Finished")
        return
      }
      expect(queriesOf(step.action)).toEqual(shares.flatMap((share, p) => share.slice(0, alpha).map((id) => [p, id])))
    },
    propOptions(300)
  )
})

describe("nextDisjointStep on hand-made scenarios", () => {
  it("with no seed at all, finishes at once with nothing", () => {
    const result = finished(startDisjointLookup({ target: ZERO, kind: "FindNode", seeds: [], paths: 3 }), 0)
    expect(result.closest).toEqual([])
    expect(result.paths).toHaveLength(3)
    expect(result.stats).toEqual({ messagesSent: 0, responses: 0, failures: 0, timeouts: 0, hops: 0, rounds: 0 })
  })

  it("with fewer seeds than paths, the extra paths finish empty and the others run", () => {
    let lookup = startDisjointLookup<never>({ target: ZERO, kind: "FindNode", seeds: [peer(2), peer(1)], paths: 4 })
    expect(lookup.paths.map((p) => p.candidates.length)).toEqual([1, 1, 0, 0])
    const step = nextDisjointStep(lookup, 0)
    expect(queriesOf(step.action)).toEqual([[0, nid(1)], [1, nid(2)]])
    lookup = step.lookup
    expect(lookup.paths[2]?.result?.closest).toEqual([])
    expect(lookup.paths[3]?.result?.closest).toEqual([])
    expect(nextDisjointStep(lookup, 0).action).toEqual({ _tag: "Waiting", nextDeadline: 2000 })
    lookup = onDisjointResponse(lookup, 1, nid(2), closer(), 5)
    lookup = onDisjointResponse(lookup, 0, nid(1), closer(), 6)
    const result = finished(lookup, 7)
    expect(idsOf(result.closest)).toEqual([nid(1), nid(2)])
    expect(result.stats).toMatchObject({ messagesSent: 2, responses: 2, failures: 0, timeouts: 0, hops: 1, rounds: 1 })
  })

  it("a path skips a peer another path owns: never sent, not counted as sent or failed", () => {
    let lookup = startDisjointLookup<never>({
      target: ZERO,
      kind: "FindNode",
      seeds: [peer(0x20), peer(0x10)],
      paths: 2,
      config: { k: 2, alpha: 2 }
    })
    let step = nextDisjointStep(lookup, 0)
    expect(queriesOf(step.action)).toEqual([[0, nid(0x10)], [1, nid(0x20)]])
    lookup = step.lookup
    // Path 1's peer points at path 0's seed: path 1 must not query it.
    lookup = onDisjointResponse(lookup, 1, nid(0x20), closer(0x10), 1)
    step = nextDisjointStep(lookup, 1)
    expect(step.action._tag).toBe("Waiting")
    lookup = step.lookup
    expect(lookup.skipped).toBe(1)
    expect(lookup.paths[1]?.candidates.map((c) => c.state)).toEqual(["Elsewhere", "Succeeded"])
    // It stays in path 1's window while path 0's query to it is in flight: path 1 waits for it.
    expect(lookup.paths[1]?.result).toBeUndefined()
    // And path 0's peer points back at path 1's: skipped as well.
    lookup = onDisjointResponse(lookup, 0, nid(0x10), closer(0x20), 2)
    const result = finished(lookup, 2)
    expect(idsOf(result.closest)).toEqual([nid(0x10), nid(0x20)])
    expect(result.stats).toMatchObject({ messagesSent: 2, responses: 2, failures: 0, timeouts: 0 })
    // Neither path counts a skip as sent or failed; each path's result holds only its own answers.
    expect(result.paths.map((p) => p.stats.failures)).toEqual([0, 0])
    expect(result.paths.map((p) => p.stats.messagesSent)).toEqual([1, 1])
    expect(result.paths.map((p) => idsOf(p.closest))).toEqual([[nid(0x10)], [nid(0x20)]])
  })

  it("a peer another path owns fills this path's window as it stands there: answered, in flight, or not live", () => {
    // k = 1: path 1's window is its single closest live peer. Path 0 owns 0x10, path 1 owns 0x20.
    const start = () => {
      const lookup = startDisjointLookup<never>({
        target: ZERO,
        kind: "FindNode",
        seeds: [peer(0x20), peer(0x10)],
        paths: 2,
        config: { k: 1, alpha: 1 }
      })
      const step = nextDisjointStep(lookup, 0, () => 100)
      // Path 1 answers first and names 0x10, which path 0 queries: path 1 skips it.
      return nextDisjointStep(onDisjointResponse(step.lookup, 1, nid(0x20), closer(0x10), 10), 10, () => 100).lookup
    }
    // In flight on path 0: path 1 waits rather than finishing with 0x20.
    const waiting = nextDisjointStep(start(), 20, () => 100)
    expect(waiting.action._tag).toBe("Waiting")
    expect(waiting.lookup.paths[1]?.result).toBeUndefined()
    // Answered on path 0: path 1 is done, and its own result holds only what it heard itself.
    const answered = finished(onDisjointResponse(start(), 0, nid(0x10), closer(), 30), 30)
    expect(idsOf(answered.paths[1]?.closest ?? [])).toEqual([nid(0x20)])
    expect(idsOf(answered.closest)).toEqual([nid(0x10)])
    // Overdue on path 0 (its deadline at 100 passed): not live, so path 1's window is 0x20, answered.
    const overdue = nextDisjointStep(start(), 150, () => 100)
    expect(overdue.lookup.paths[1]?.result).toBeDefined()
    expect(idsOf(overdue.lookup.paths[1]?.result?.closest ?? [])).toEqual([nid(0x20)])
    // Failed on path 0: the same.
    const failed = nextDisjointStep(onDisjointFailure(start(), 0, nid(0x10), 40), 40, () => 100)
    expect(failed.action._tag).toBe("Finished")
    if (failed.action._tag === "Finished") expect(idsOf(failed.action.result.closest)).toEqual([nid(0x20)])
  })

  it("the first path to ask for a peer nobody owns claims it; a later path skips it", () => {
    let lookup = startDisjointLookup<never>({
      target: ZERO,
      kind: "FindNode",
      seeds: [peer(0x10), peer(0x20)],
      paths: 2,
      config: { k: 3, alpha: 1 }
    })
    lookup = nextDisjointStep(lookup, 0).lookup
    // Path 1 hears of node 1 first and claims it.
    lookup = onDisjointResponse(lookup, 1, nid(0x20), closer(1), 1)
    let step = nextDisjointStep(lookup, 1)
    expect(queriesOf(step.action)).toEqual([[1, nid(1)]])
    lookup = step.lookup
    expect(lookup.owner.get(nid(1))).toBe(1)
    // Path 0 hears of it later: skipped, and path 0 asks nobody else.
    lookup = onDisjointResponse(lookup, 0, nid(0x10), closer(1), 2)
    step = nextDisjointStep(lookup, 2)
    expect(step.action._tag).toBe("Waiting")
    lookup = onDisjointResponse(step.lookup, 1, nid(1), closer(), 3)
    const result = finished(lookup, 3)
    expect(idsOf(result.closest)).toEqual([nid(1), nid(0x10), nid(0x20)])
    expect(result.stats.messagesSent).toBe(3)
    expect(result.stats.failures).toBe(0)
  })

  it("ignores answers for a path out of range, and answers credited to a path that did not ask", () => {
    let lookup = startDisjointLookup<never>({
      target: ZERO,
      kind: "FindNode",
      seeds: [peer(0x10), peer(0x20)],
      paths: 2,
      config: { k: 3 }
    })
    lookup = nextDisjointStep(lookup, 0).lookup
    for (const path of [-1, 2, 7, 0.5]) {
      expect(onDisjointResponse(lookup, path, nid(0x10), closer(1), 1)).toBe(lookup)
      expect(onDisjointFailure(lookup, path, nid(0x10), 1)).toBe(lookup)
    }
    // A hostile answer from path 0's peer, credited to path 1, changes nothing on path 1.
    const spoofed = onDisjointResponse(lookup, 1, nid(0x10), closer(1, 2, 3), 1)
    expect(spoofed.paths[1]).toBe(lookup.paths[1])
    expect(onDisjointFailure(lookup, 1, nid(0x10), 1).paths[1]).toBe(lookup.paths[1])
  })

  it("waits until the earliest deadline of any path and counts what timed out", () => {
    const timeoutFor = (contact: Contact) => (contact.nodeId === nid(1) ? 500 : 300)
    let lookup = startDisjointLookup<never>({ target: ZERO, kind: "FindNode", seeds: [peer(1), peer(2)], paths: 2 })
    let step = nextDisjointStep(lookup, 0, timeoutFor)
    expect(queriesOf(step.action)).toEqual([[0, nid(1)], [1, nid(2)]])
    step = nextDisjointStep(step.lookup, 0, timeoutFor)
    // First wake-up: path 1's query stops holding its slot (0.6 of 300 ms), then both at 300.
    expect(step.action).toEqual({ _tag: "Waiting", nextDeadline: 180 })
    step = nextDisjointStep(step.lookup, 180, timeoutFor)
    expect(step.action).toEqual({ _tag: "Waiting", nextDeadline: 300 })
    step = nextDisjointStep(step.lookup, 300, timeoutFor)
    expect(step.action).toEqual({ _tag: "Waiting", nextDeadline: 500 })
    // Path 1's only query is overdue, but nothing has answered it yet: it waits for the call to end.
    expect(step.lookup.paths[1]?.result).toBeUndefined()
    step = nextDisjointStep(step.lookup, 500, timeoutFor)
    expect(step.action).toEqual({ _tag: "Waiting", nextDeadline: undefined })
    // The calls fail at the call timeout; then both paths are done, with nothing found.
    lookup = onDisjointFailure(onDisjointFailure(step.lookup, 0, nid(1), 2000), 1, nid(2), 2000)
    const result = finished(lookup, 2000)
    expect(result.closest).toEqual([])
    expect(result.stats).toMatchObject({ messagesSent: 2, responses: 0, failures: 2, timeouts: 2 })
  })

  it("abandoned: every query still out, in flight or overdue, on any path, counts as failed, and the lookup ends", () => {
    const timeoutFor = (contact: Contact) => (contact.nodeId === nid(1) ? 500 : 300)
    let step = nextDisjointStep(
      startDisjointLookup<never>({ target: ZERO, kind: "FindNode", seeds: [peer(1), peer(2), peer(3)], paths: 2 }),
      0,
      timeoutFor
    )
    expect(queriesOf(step.action)).toEqual([[0, nid(1)], [0, nid(3)], [1, nid(2)]])
    // Path 0's second query answered; nid(2) on path 1 is overdue at 400, nid(1) still in flight.
    const answered = onDisjointResponse(step.lookup, 0, nid(3), { _tag: "Closer", contacts: [] }, 100)
    step = nextDisjointStep(answered, 400, timeoutFor)
    expect(step.action._tag).toBe("Waiting")
    const abandoned = onDisjointAbandoned(step.lookup, 400)
    const result = finished(abandoned, 400)
    expect(result.closest.map((contact) => contact.nodeId)).toEqual([nid(3)])
    expect(result.stats).toMatchObject({ messagesSent: 3, responses: 1, failures: 2 })
    // Nothing out: nothing changes.
    expect(onDisjointAbandoned(abandoned, 500)).toEqual(abandoned)
  })

  it("bounds the queries against peers that answer with endless fresh contacts: at most d · maxQueries", () => {
    const randomBytes = seededRandomBytes(77)
    let fresh = 0x7fff_ffff
    const behave = (): Behaviour<never> => ({
      _tag: "Answer",
      // Ever closer to the target, so no window ever settles.
      response: { _tag: "Closer", contacts: Array.from({ length: 4 }, () => peer(--fresh)) }
    })
    const seeds = Array.from({ length: 9 }, () => contactFor(randomNodeId(randomBytes)))
    const lookup = startDisjointLookup<never>({
      target: ZERO,
      kind: "FindNode",
      seeds,
      paths: 3,
      config: { k: 4, alpha: 2, maxQueries: 12 }
    })
    const driven = drive(lookup, behave)
    checkDisjoint(driven, 3, undefined)
    expect(driven.sent.length).toBeLessThanOrEqual(3 * 12)
    expect(driven.sent.length).toBeGreaterThan(12)
  })
})

// ---------------------------------------------------------------------------
// Static networks

const arbNetworkRun = fc.record({
  n: fc.integer({ min: 8, max: 160 }),
  netSeed: fc.integer({ min: 1, max: 10_000 }),
  k: fc.integer({ min: 2, max: 8 }),
  paths: fc.integer({ min: 1, max: 4 }),
  alpha: fc.integer({ min: 1, max: 3 }),
  from: fc.nat(),
  targetIsNode: fc.boolean(),
  node: fc.nat(),
  key: arbKey,
  salt: fc.nat({ max: 0xffff })
})

/** Latency from the peer's id and a salt: an arbitrary but reproducible arrival order, far below the timeout. */
const latencyFrom = (salt: number) => (peerId: NodeId): number =>
  1 + ((Number.parseInt(peerId.slice(0, 6), 16) ^ (salt * 2654435761)) >>> 0) % 97

const networkCache = new Map<string, { ids: Array<NodeId>; network: StaticNetwork<never> }>()
const networkFor = (n: number, seed: number, k: number) => {
  const name = `${n}/${seed}/${k}`
  let entry = networkCache.get(name)
  if (entry === undefined) {
    const ids = makeIds(n, seed)
    entry = { ids, network: makeStaticNetwork(ids, k, { seed }) }
    networkCache.set(name, entry)
  }
  return entry
}

describe("disjoint lookups on static networks", () => {
  it.prop(
    "no peer is queried by two paths, the statistics match the wire, and closest is the true k closest",
    [arbNetworkRun],
    ([s]) => {
      const { ids, network } = networkFor(s.n, s.netSeed, s.k)
      const from = ids[s.from % ids.length] as NodeId
      const target = s.targetIsNode ? (ids[s.node % ids.length] as Key) : s.key
      // As the node does: the local table's k closest per path.
      const table = network.tables.get(from)?.contacts ?? []
      const seeds = oracleClosest(idsOf(table), target, s.k * s.paths).map((id) => network.contacts.get(id) as Contact)
      const lookup = startDisjointLookup<never>({
        target,
        kind: "FindNode",
        seeds,
        paths: s.paths,
        self: from,
        config: { k: s.k, alpha: s.alpha }
      })
      const driven = drive(lookup, staticBehaviour(network, target, "FindNode"), { latencyMs: latencyFrom(s.salt) })
      checkDisjoint(driven, s.paths, from)
      expect(idsOf(driven.result.closest)).toEqual(oracleClosest(ids.filter((id) => id !== from), target, s.k))
      expect(driven.result.stats.timeouts).toBe(0)
      // Every peer a path queried is owned by that path.
      for (const { path, peer: id } of driven.sent) expect(driven.final.owner.get(id)).toBe(path)
    },
    propOptions(250)
  )

  it.prop(
    "with offline peers, the invariants hold and every answering peer's result is accounted for",
    [arbNetworkRun, fc.constantFrom<"Silent" | "Refuse">("Silent", "Refuse")],
    ([s, offlineMode]) => {
      const { ids, network: base } = networkFor(s.n, s.netSeed, s.k)
      const from = ids[s.from % ids.length] as NodeId
      const offline = new Set(ids.filter((id, i) => id !== from && (i * 7919 + s.salt) % 10 < 3))
      const network = { ...base, offline }
      const target = s.targetIsNode ? (ids[s.node % ids.length] as Key) : s.key
      const table = network.tables.get(from)?.contacts ?? []
      const seeds = oracleClosest(idsOf(table), target, s.k * s.paths).map((id) => network.contacts.get(id) as Contact)
      const lookup = startDisjointLookup<never>({
        target,
        kind: "FindNode",
        seeds,
        paths: s.paths,
        self: from,
        config: { k: s.k, alpha: s.alpha, queryTimeoutMs: 200 }
      })
      const driven = drive(lookup, staticBehaviour(network, target, "FindNode", offlineMode), {
        latencyMs: latencyFrom(s.salt)
      })
      checkDisjoint(driven, s.paths, from)
      for (const id of idsOf(driven.result.closest)) expect(offline.has(id)).toBe(false)
      if (offlineMode === "Refuse") expect(driven.result.stats.timeouts).toBe(0)
    },
    propOptions(150)
  )

  it.prop(
    "with one path it is a plain lookup: the same result as runLookup, statistics included",
    [arbNetworkRun, fc.constantFrom<"Timeout" | "Refuse" | "None">("Timeout", "Refuse", "None")],
    ([s, offlineBehavior]) => {
      const { ids, network: base } = networkFor(s.n, s.netSeed, s.k)
      const from = ids[s.from % ids.length] as NodeId
      const offline = offlineBehavior === "None"
        ? new Set<NodeId>()
        : new Set(ids.filter((id, i) => id !== from && (i * 31 + s.salt) % 4 === 0))
      const network = { ...base, offline }
      const target = s.targetIsNode ? (ids[s.node % ids.length] as Key) : s.key
      const table = network.tables.get(from)?.contacts ?? []
      const seeds = oracleClosest(idsOf(table), target, s.k).map((id) => network.contacts.get(id) as Contact)
      const config: Partial<LookupConfig> = { k: s.k, alpha: s.alpha, queryTimeoutMs: 150 }
      const latencyMs = latencyFrom(s.salt)
      const plain = runLookup(network, from, target, "FindNode", config, {
        seeds,
        latencyMs,
        offlineBehavior: offlineBehavior === "Refuse" ? "Refuse" : "Timeout"
      })
      const lookup = startDisjointLookup<never>({ target, kind: "FindNode", seeds, paths: 1, self: from, config })
      const driven = drive(
        lookup,
        staticBehaviour(network, target, "FindNode", offlineBehavior === "Refuse" ? "Refuse" : "Silent"),
        { latencyMs }
      )
      checkDisjoint(driven, 1, from)
      expect(driven.final.skipped).toBe(0)
      expect(driven.result.paths[0]).toEqual(plain)
      expect(idsOf(driven.result.closest)).toEqual(idsOf(plain.closest))
      expect(driven.result.stats).toEqual(plain.stats)
    },
    propOptions(200)
  )

  it("a FIND_VALUE lookup passed as FindNode does not stop at the first copy: every path runs to the end", () => {
    const { ids, network: base } = networkFor(300, 4242, 8)
    const key = makeIds(1, 99)[0] as Key
    const holders = oracleClosest(ids, key, 8)
    const values = new Map(holders.map((id) => [id, new Map([[key, `copy-at-${id}`]])] as const))
    const network: StaticNetwork<string> = { ...base, values }
    const from = ids.find((id) => !holders.includes(id)) as NodeId
    const seeds = oracleClosest(idsOf(network.tables.get(from)?.contacts ?? []), key, 8 * 3).map((id) =>
      network.contacts.get(id) as Contact
    )
    const lookup = startDisjointLookup<string>({ target: key, kind: "FindNode", seeds, paths: 3, self: from, config: { k: 8 } })
    // Holders answer with their value and their contacts, as a gathering node's peers do.
    const driven = drive(lookup, (at) => {
      const contacts = answerQuery(network, at, key, "FindNode")
      const held = network.values.get(at)?.get(key)
      return {
        _tag: "Answer",
        response: held === undefined
          ? contacts
          : { _tag: "Value", value: held, contacts: contacts._tag === "Closer" ? contacts.contacts : [] }
      }
    })
    checkDisjoint(driven, 3, from)
    expect(idsOf(driven.result.closest)).toEqual(holders)
    for (const result of driven.result.paths) expect(result.value).toBeUndefined()
  })
})

// ---------------------------------------------------------------------------
// Eclipse attacks, built by hand so that every run is the same

/**
 * Target ZERO. Honest nodes route S (seeds) → M (middle) → H (the honest
 * neighbourhood); they know no hostile node. Each hostile node belongs to a
 * group (one per hostile seed) and answers every query with nodes of its
 * own group only: "near" groups sit closer to the target than any honest
 * node, "far" groups farther than every seed. Hostile nodes answer, so a
 * lookup that follows them ends among them.
 */
const K = 3
const H = [0x101, 0x102, 0x103, 0x104, 0x105].map(nid)
const M = [0x1001, 0x1002, 0x1003, 0x1004].map(nid)
const SEED_IDS = [0x8001, 0x8002, 0x8003, 0x8004, 0x8005, 0x8006].map(nid)
const HONEST_K_CLOSEST = H.slice(0, K)

type Placement = "near" | "far"

interface Eclipse {
  readonly hostile: ReadonlySet<NodeId>
  readonly behave: (at: NodeId) => Behaviour<never>
}

const eclipse = (hostileSeeds: ReadonlyArray<number>, placement: Placement): Eclipse => {
  const group = new Map<NodeId, number>()
  const members = (g: number): Array<NodeId> =>
    Array.from({ length: 6 }, (_, i) => nid((placement === "near" ? 0x1 : 0x100_0000) + 0x10 * g + i))
  hostileSeeds.forEach((seedIndex, g) => {
    group.set(SEED_IDS[seedIndex] as NodeId, g)
    for (const id of members(g)) group.set(id, g)
  })
  const honestKnows = (at: NodeId): Array<NodeId> =>
    SEED_IDS.includes(at) ? M : M.includes(at) ? [...M, ...H] : H.includes(at) ? H : []
  return {
    hostile: new Set(group.keys()),
    behave: (at) => {
      const g = group.get(at)
      const known = g === undefined ? honestKnows(at) : members(g)
      const contacts = oracleClosest(known.filter((id) => id !== at), ZERO, K).map(contactFor)
      return { _tag: "Answer", response: { _tag: "Closer", contacts } }
    }
  }
}

const runEclipse = (scenario: Eclipse, paths: number, alpha: number, seeds = SEED_IDS) =>
  drive(
    startDisjointLookup<never>({
      target: ZERO,
      kind: "FindNode",
      seeds: seeds.map(contactFor),
      paths,
      config: { k: K, alpha }
    }),
    scenario.behave
  )

/** The k closest honest nodes among those that appear in any path's own result. */
const honestFound = (driven: Driven<never>, scenario: Eclipse): Array<NodeId> =>
  oracleClosest(driven.result.paths.flatMap((p) => idsOf(p.closest)).filter((id) => !scenario.hostile.has(id)), ZERO, K)

/** All ways of choosing `count` of `n` positions. */
const choose = (n: number, count: number): Array<Array<number>> =>
  count === 0 ? [[]] : Array.from({ length: n }, (_, first) => first).flatMap((first) =>
    choose(n - first - 1, count - 1).map((rest) => [first, ...rest.map((r) => r + first + 1)])
  )

describe("eclipse attacks", () => {
  it("the scenario is what it claims: the honest k closest are H[0..k), hostile near nodes are closer still", () => {
    const near = eclipse([0], "near")
    const far = eclipse([0], "far")
    const nearest = (ids: Iterable<NodeId>) => distance(oracleClosest(ids, ZERO, 1)[0] as NodeId, ZERO)
    const farthest = (ids: Iterable<NodeId>) => distance(oracleClosest(ids, ZERO, 1_000).at(-1) as NodeId, ZERO)
    expect(oracleClosest([...H, ...M, ...SEED_IDS], ZERO, K)).toEqual(HONEST_K_CLOSEST)
    const nearSybils = [...near.hostile].filter((id) => id !== SEED_IDS[0])
    const farSybils = [...far.hostile].filter((id) => id !== SEED_IDS[0])
    expect(farthest(nearSybils)).toBeLessThan(nearest(H))
    expect(nearest(farSybils)).toBeGreaterThan(farthest(SEED_IDS))
  })

  /** Runs d = 3 from the six seeds with `hostileSeeds` hostile and checks that the honest k closest are found. */
  const expectHonestFound = (hostileSeeds: ReadonlyArray<number>, placement: Placement, alpha: number): void => {
    const scenario = eclipse(hostileSeeds, placement)
    const driven = runEclipse(scenario, 3, alpha)
    checkDisjoint(driven, 3, undefined)
    // Each honest neighbour answered on some path, and shows in that path's own result.
    const answeredIds = new Set(driven.answered.map((a) => a.peer))
    for (const id of HONEST_K_CLOSEST) expect(answeredIds.has(id)).toBe(true)
    expect(honestFound(driven, scenario)).toEqual(HONEST_K_CLOSEST)
    if (placement === "far") {
      // Far sybils cannot displace anyone: the merged result is exactly the honest k closest.
      expect(idsOf(driven.result.closest)).toEqual(HONEST_K_CLOSEST)
    }
  }

  for (const alpha of [1, 2, 3]) {
    it(`with d = 3 and hostile seeds a minority (any 2 of 6), far sybils never hide the honest k closest (alpha ${alpha})`, () => {
      for (const hostileSeeds of choose(SEED_IDS.length, 2)) expectHonestFound(hostileSeeds, "far", alpha)
    })
  }

  it("with d = 3 and hostile seeds among the closest, near sybils do not hide the honest k closest", () => {
    for (const alpha of [1, 2, 3]) {
      for (const hostileSeeds of [[0], [1], [2], [0, 1], [0, 2], [1, 2]]) expectHonestFound(hostileSeeds, "near", alpha)
    }
  })

  it("with d = 3, alpha 1 or 2 and any 2 of 6 seeds hostile, near sybils do not hide the honest k closest", () => {
    for (const alpha of [1, 2]) {
      for (const hostileSeeds of choose(SEED_IDS.length, 2)) expectHonestFound(hostileSeeds, "near", alpha)
    }
  })

  // Known limitation, kept as an expected failure so that it is seen (and flipped if the module learns to
  // avoid it). Seeds by rank: 0 honest, 1 honest, 2 honest, 3 hostile, 4 hostile, 5 honest. Path 2 (ranks 2
  // and 5) is all honest, yet: with alpha 3, paths 0 and 1 query their honest seed and their hostile seed at
  // once, claim every honest middle node M first (lower paths are served first in each step), learn H from
  // them, but then follow their sybil groups, which are nearer than H, and finish without querying H. Path 2
  // learns the same middle nodes, finds them all owned, skips them, and ends at its seeds. No path queries H.
  // Disjointness starves the one clean path: "a minority of hostile seeds" is not sufficient.
  it.fails("LIMITATION: hostile seeds of rank 3 and 4, near sybils, alpha 3: the all-honest path is starved", () => {
    expectHonestFound([3, 4], "near", 3)
  })

  it("the starvation case, as it happens: honest middle nodes owned by eclipsed paths, H never queried", () => {
    const scenario = eclipse([3, 4], "near")
    const driven = runEclipse(scenario, 3, 3)
    checkDisjoint(driven, 3, undefined)
    const askedBy = new Map(driven.sent.map((q) => [q.peer, q.path]))
    expect(M.slice(0, K).map((id) => askedBy.get(id))).toEqual([0, 0, 1])
    for (const id of H) expect(askedBy.has(id)).toBe(false)
    expect(idsOf(driven.result.paths[2]?.closest ?? [])).toEqual([SEED_IDS[2], SEED_IDS[5]])
    expect(driven.final.skipped).toBeGreaterThan(0)
  })

  it("CONTRAST (near sybils): one path from the same seeds is eclipsed; three disjoint paths are not", () => {
    // One hostile seed of six, the closest one.
    const scenario = eclipse([0], "near")
    for (const alpha of [1, 2, 3]) {
      const plain = runEclipse(scenario, 1, alpha)
      checkDisjoint(plain, 1, undefined)
      // The plain lookup ends among the sybils and never reaches an honest neighbour.
      expect(plain.result.closest.every((c) => scenario.hostile.has(c.nodeId))).toBe(true)
      expect(honestFound(plain, scenario)).toEqual([])
      for (const id of H) expect(plain.sent.map((q) => q.peer)).not.toContain(id)

      const disjoint = runEclipse(scenario, 3, alpha)
      checkDisjoint(disjoint, 3, undefined)
      expect(honestFound(disjoint, scenario)).toEqual(HONEST_K_CLOSEST)
      // By construction the sybils that answer are nearer than anyone honest, so the merged k closest
      // are theirs: the honest neighbourhood is visible in the honest paths' own results only.
      expect(disjoint.result.closest.every((c) => scenario.hostile.has(c.nodeId))).toBe(true)
    }
  })

  it("CONTRAST (far sybils): a single path from the hostile seed is misled; d = 3 from all seeds finds the honest k closest", () => {
    const scenario = eclipse([0], "far")
    const lone = runEclipse(scenario, 1, 3, [SEED_IDS[0] as NodeId])
    checkDisjoint(lone, 1, undefined)
    expect(lone.result.closest).toHaveLength(K)
    expect(lone.result.closest.every((c) => scenario.hostile.has(c.nodeId))).toBe(true)
    const disjoint = runEclipse(scenario, 3, 3)
    checkDisjoint(disjoint, 3, undefined)
    expect(idsOf(disjoint.result.closest)).toEqual(HONEST_K_CLOSEST)
    // The path dealt the hostile seed asked it, and nothing it said reached another path.
    const hostileAsked = disjoint.sent.filter((q) => scenario.hostile.has(q.peer))
    expect(new Set(hostileAsked.map((q) => q.path))).toEqual(new Set([0]))
  })

  it("is deterministic: the same scenario gives the same run", () => {
    const scenario = eclipse([0, 3], "near")
    const a = runEclipse(scenario, 3, 2)
    const b = runEclipse(scenario, 3, 2)
    expect(b.sent).toEqual(a.sent)
    expect(b.result).toEqual(a.result)
  })
})
