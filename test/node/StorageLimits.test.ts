/**
 * Storage anyone could fill (issue 12), for records, over the in-memory
 * network: a node keeps records only for names it belongs to (among the k
 * closest by its own table, with slack), one signing key holds at most
 * `maxNamesPerKey` names at a storer, and re-replication hands a record a
 * node no longer belongs to hold to the nodes now closest and drops it. Each
 * rule is tested the way a hostile node would try to break it.
 */
import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Either, Option, TestClock } from "effect"
import { toHex } from "../../src/core/Bytes.js"
import { bucketsToRefreshAfterJoin } from "../../src/core/JoinRefresh.js"
import { formatAddress } from "../../src/core/Contact.js"
import { defaultClaimCheckBudget } from "../../src/core/ClaimCheckBudget.js"
import type { Key, NodeId } from "../../src/core/Id.js"
import {
  bucketsToFillBeforeDeciding,
  defaultStorageSlack,
  neighbourhoodDepth,
  placementQuestion,
  placementRefusal
} from "../../src/core/StoragePolicy.js"
import { type PublicKeyHex, signUserRecord, type UserRecord } from "../../src/core/UserRecord.js"
import { userKey, type Username } from "../../src/core/Username.js"
import type { IdentityService } from "../../src/node/Identity.js"
import { FILL_RETRY_AFTER } from "../../src/node/DhtNode.js"
import type { NodeConfigShape } from "../../src/node/NodeConfig.js"
import { Store } from "../../src/node/Protocol.js"
import { solvedClaim } from "../support/claims.js"
import { directoryOf as directoryOfNode } from "../support/directory.js"
import {
  at,
  makeTestNetwork,
  nodeAddress,
  nodeIdentity,
  signedRecord,
  startNode,
  type TestNode,
  trueClosest
} from "../support/memoryNetwork.js"
import { unlimitedRequests } from "../support/requestLimits.js"
import { deterministic as seededDeterministic } from "../support/deterministic.js"

const K = 4
const HOUR = 60 * 60 * 1000
const DAY = 24 * HOUR
/**
 * Cheap claims (difficulty 4), so a flood of thousands of names takes seconds; the rules are the same.
 * The floods below come from one peer in frozen time: the claim-check budget (test/node/ClaimCheckFlood.test.ts)
 * would refuse all but 20 of them, so it is lifted here, where the storage rules a paced flood reaches are tested.
 */
const config: Partial<NodeConfigShape> = {
  k: K,
  alpha: 3,
  claimDifficulty: 4,
  minClaimDifficulty: 4,
  claimCheckBudget: { ...defaultClaimCheckBudget, perPeerRate: 1e9, perPeerBurst: 1e9, globalRate: 1e9, globalBurst: 1e9 }
}

const deterministic = <A, E, R>(self: Effect.Effect<A, E, R>, seed = 12) =>
  seededDeterministic(self, seed)

const name = (text: string) => text as Username

/** A record of `username` claimed by `identity` at difficulty 4, live for a week from `now`. */
const claimOf = (identity: IdentityService, username: string, now: number): UserRecord =>
  signUserRecord({
    username: name(username),
    signingKey: toHex(identity.signingPublicKey) as PublicKeyHex,
    encryptionKey: toHex(identity.encryptionPublicKey) as PublicKeyHex,
    nodeId: identity.nodeId,
    addresses: [{ host: "203.0.113.9", port: 4242 }],
    sequence: 1,
    issuedAt: now,
    expiresAt: now + 7 * DAY,
    claim: solvedClaim(username, toHex(identity.signingPublicKey), 4)
  }, identity.sign)

/** Stores `record` at `target` as `from`: "Stored", or the refusal's tag and reason. */
const storeAt = (from: TestNode, target: TestNode, record: UserRecord) =>
  Effect.map(
    Effect.either(from.transport.send({ address: target.address, nodeId: target.nodeId }, new Store({ record }))),
    (outcome): string => {
      if (Either.isRight(outcome)) return outcome.right.value.outcome
      const error: { readonly _tag: string; readonly reason: string } = outcome.left
      return `${error._tag}:${error.reason}`
    }
  )

const nodesById = (nodes: ReadonlyArray<TestNode>, ids: ReadonlyArray<NodeId>) =>
  ids.map((id) => nodes.find((node) => node.nodeId === id) as TestNode)

/**
 * A network of 64 with a slack so large that no bucket ever knows k + slack (every key near a
 * neighbourhood asks for a fill), a newcomer joined to it with `newcomerConfig`, and `count` names
 * (`prefix` and a number) in the bucket two bits shallower than the newcomer's neighbourhood: each asks
 * for both buckets near it.
 */
const newcomerAndNamesNearIt = (count: number, prefix: string, newcomerConfig: Partial<NodeConfigShape> = {}) =>
  Effect.gen(function*() {
    const generous = { ...config, storageSlack: 100 }
    const { network, nodes } = yield* makeTestNetwork(64, generous, { requestLimits: unlimitedRequests })
    const newcomer = yield* startNode(network, 64, { ...generous, ...newcomerConfig, bootstrap: [nodeAddress(0)] }, {
      requestLimits: unlimitedRequests
    })
    yield* newcomer.dht.awaitJoined
    yield* TestClock.adjust("1 minute")
    const table = yield* newcomer.routing.snapshot
    const depth = neighbourhoodDepth(table, K)
    if (depth === undefined) throw new Error("the newcomer has no neighbourhood")
    const names: Array<string> = []
    for (let n = 0; names.length < count && n < 100_000; n++) {
      const key = userKey(name(`${prefix}${n}`))
      if (placementQuestion(table, key, K, 100).keyDepth === depth - 2) names.push(`${prefix}${n}`)
    }
    expect(names.length).toBe(count)
    /** Requests the newcomer has sent (refused ones included). */
    const sent = () => network.stats().byNode.get(formatAddress(newcomer.address))?.sent ?? 0
    return { network, nodes, newcomer, names, sent }
  })

/** `count` names whose k closest nodes (of `ids`) are exactly those of `key`: the name's "neighbours". */
const namesNear = (key: Key, ids: ReadonlyArray<NodeId>, count: number, prefix: string): Array<string> => {
  const closest = new Set(trueClosest(key, ids, K))
  const found: Array<string> = []
  for (let n = 0; found.length < count; n++) {
    const candidate = `${prefix}${n}`
    if (trueClosest(userKey(name(candidate)), ids, K).every((id) => closest.has(id))) found.push(candidate)
  }
  return found
}

describe("record storage limits", () => {
  it.scoped("ATTACK: a hostile node storing a record at nodes far from the name is refused; the name's k closest accept", () =>
    deterministic(Effect.gen(function*() {
      const { nodes } = yield* makeTestNetwork(24, config)
      const attacker = at(nodes, 3)
      const key = userKey(name("target"))
      const ranked = nodesById(nodes, trueClosest(key, nodes.map((node) => node.nodeId), nodes.length))
      const record = claimOf(nodeIdentity(500), "target", 0)
      for (const storer of ranked.slice(0, K)) expect(yield* storeAt(attacker, storer, record)).toBe("Stored")
      // The farthest half know (by their own tables) k + slack = 6 nodes closer than themselves.
      const far = ranked.slice(12).filter((node) => node !== attacker)
      for (const storer of far) {
        expect(yield* storeAt(attacker, storer, record)).toBe("RequestRefused:NotResponsible")
        expect(Option.isNone(yield* storer.store.get(key, 0))).toBe(true)
      }
    })), { timeout: 60_000 })

  it.scoped(
    "ATTACK: a newcomer whose join left its far half nearly empty refuses a record for a key there, which its count alone would take",
    () =>
      deterministic(Effect.gen(function*() {
        // 64 nodes, k = 4: a node's neighbourhood lies about 4 bits deep, so its join fills the buckets two bits
        // shallower and leaves the far half (bucket 0) with what its self lookup met there.
        const { network, nodes } = yield* makeTestNetwork(64, config)
        const newcomer = yield* startNode(network, 64, { ...config, bootstrap: [nodeAddress(0)] })
        yield* newcomer.dht.awaitJoined
        yield* TestClock.adjust("1 minute") // the join's background refreshes end
        const table = yield* newcomer.routing.snapshot
        const slack = defaultStorageSlack(K)
        expect(bucketsToRefreshAfterJoin(table, K).meetings).not.toContain(0)
        // A name across the id space from the newcomer, where it knows fewer than k + slack nodes closer.
        let username: string | undefined
        for (let n = 0; username === undefined && n < 4096; n++) {
          const question = placementQuestion(table, userKey(name(`far${n}`)), K, slack)
          if (question.keyDepth === 0 && question.closerKnown < K + slack) username = `far${n}`
        }
        if (username === undefined) throw new Error("no name found in the newcomer's far half that its count would take")
        const record = claimOf(nodeIdentity(700), username, 0)
        const attacker = at(nodes, 3)
        expect(yield* storeAt(attacker, newcomer, record)).toBe("RequestRefused:NotResponsible")
        expect(Option.isNone(yield* newcomer.store.get(userKey(name(username)), 0))).toBe(true)
        // The name's k closest (the newcomer is not among them) take it.
        const ids = [...nodes, newcomer].map((node) => node.nodeId)
        for (const storer of nodesById([...nodes, newcomer], trueClosest(userKey(name(username)), ids, K))) {
          expect(yield* storeAt(attacker, storer, record)).toBe("Stored")
        }
      })),
    { timeout: 120_000 }
  )

  it.scoped(
    "ATTACK: a newcomer asked to store a name just outside its neighbourhood, or in its neighbourhood's own bucket, whose count its self lookup left short, fills that count first and refuses",
    () =>
      deterministic(Effect.gen(function*() {
        const { network, nodes } = yield* makeTestNetwork(128, config)
        const slack = defaultStorageSlack(K)
        const attacker = at(nodes, 3)
        /**
         * Starts newcomer `index`, and finds `count` names its table would take as it stands (fewer than k + slack
         * known closer) while the network holds k + slack + 2 or more closer: junk for it; `where`
         * picks by the key's depth against the neighbourhood's.
         */
        const newcomerWithJunk = (index: number, count: number, where: (keyDepth: number, depth: number) => boolean) =>
          Effect.gen(function*() {
            const newcomer = yield* startNode(network, index, { ...config, bootstrap: [nodeAddress(0)] })
            yield* newcomer.dht.awaitJoined
            yield* TestClock.adjust("1 minute") // the join's background refreshes end
            const ids = [...nodes, newcomer].map((node) => node.nodeId)
            /** How many nodes of the whole network are closer to `username`'s key than the newcomer. */
            const trulyCloser = (username: string) => trueClosest(userKey(name(username)), ids, ids.length).indexOf(newcomer.nodeId)
            const before = yield* newcomer.routing.snapshot
            const depth = neighbourhoodDepth(before, K) as number
            const junk: Array<string> = []
            for (let n = 0; junk.length < count && n < 50_000; n++) {
              const username = `near${index}-${n}`
              const key = userKey(name(username))
              const question = placementQuestion(before, key, K, slack)
              if (placementRefusal(question) !== undefined || !where(question.keyDepth, depth)) continue
              if (trulyCloser(username) >= K + slack + 2) junk.push(username)
            }
            expect(junk.length).toBe(count)
            return { newcomer, junk, before, trulyCloser }
          })
        const refusesAll = (newcomer: TestNode, junk: ReadonlyArray<string>) =>
          Effect.forEach(junk, (username) =>
            Effect.gen(function*() {
              expect(yield* storeAt(attacker, newcomer, claimOf(nodeIdentity(700), username, 0))).toBe("RequestRefused:NotResponsible")
              expect(Option.isNone(yield* newcomer.store.get(userKey(name(username)), 0))).toBe(true)
            }))

        // One whose self lookup met only half of its neighbourhood's own bucket (4 of its 8 nodes): names there.
        const first = yield* newcomerWithJunk(156, 2, (keyDepth, depth) => keyDepth === depth)
        yield* refusesAll(first.newcomer, first.junk)

        // Another: names in the two buckets just shallower.
        const second = yield* newcomerWithJunk(157, 3, (keyDepth, depth) => keyDepth < depth)
        yield* refusesAll(second.newcomer, second.junk)
        // A name in the same part of the id space that it is among the k + slack closest of (the owner's lookup
        // may find it among the k closest that answer): taken, after the same fills.
        let owned: string | undefined
        for (let n = 0; owned === undefined && n < 20_000; n++) {
          const username = `mine${n}`
          const key = userKey(name(username))
          if (bucketsToFillBeforeDeciding(second.before, key, K, slack).length > 0 && second.trulyCloser(username) < K + slack) {
            owned = username
          }
        }
        if (owned === undefined) throw new Error("no name near the newcomer's neighbourhood that it is among the k + slack closest of")
        expect(yield* storeAt(attacker, second.newcomer, claimOf(nodeIdentity(701), owned, 0))).toBe("Stored")
      })),
    { timeout: 120_000 }
  )

  it.scoped(
    "ATTACK: a flood of Stores for many keys near a newcomer's neighbourhood makes it fill each bucket once, not look up once a Store",
    () =>
      deterministic(Effect.gen(function*() {
        // The newcomer refreshes its buckets (and so may fill them again) every 10 minutes, not hourly: the
        // network's own hourly refreshes would make the last step below slow.
        const refreshEvery = Duration.minutes(10)
        const { names, newcomer, nodes, sent } = yield* newcomerAndNamesNearIt(41, "flood", { bucketRefreshInterval: refreshEvery })
        const attacker = at(nodes, 3)
        const first = sent()
        expect(yield* storeAt(attacker, newcomer, claimOf(nodeIdentity(800), at(names, 0), 0))).toBe("Stored")
        const afterFirst = sent()
        expect(afterFirst).toBeGreaterThan(first) // the first Store there filled the two buckets
        let keyIndex = 0
        for (const username of names.slice(1, 40)) {
          // Eight names per key (the per-key quota), so that each Store is taken.
          expect(yield* storeAt(attacker, newcomer, claimOf(nodeIdentity(801 + Math.floor(keyIndex++ / 8)), username, 0)))
            .toBe("Stored")
        }
        // The 39 others asked for the same fills, which ran once: not one more request.
        expect(sent()).toBe(afterFirst)
        // A refresh interval later the buckets are filled again, once.
        yield* TestClock.adjust(Duration.sum(refreshEvery, Duration.seconds(1)))
        const later = sent()
        expect(yield* storeAt(attacker, newcomer, claimOf(nodeIdentity(900), at(names, 40), 0))).toBe("Stored")
        expect(sent()).toBeGreaterThan(later)
      })),
    { timeout: 120_000 }
  )

  it.scoped(
    "a fill that met nobody (this node cut off) is tried again by the next Store a minute later, not an interval later",
    () =>
      deterministic(Effect.gen(function*() {
        const { names, network, newcomer, nodes, sent } = yield* newcomerAndNamesNearIt(3, "retry")
        // The Stores come from the node farthest from the newcomer (its top bit differs), which no fill near the
        // newcomer's neighbourhood asks; everyone else is cut off from the newcomer, as if its own link were down.
        const farthest = nodes.filter((node) => (parseInt(node.nodeId[0] as string, 16) >> 3) !== (parseInt(newcomer.nodeId[0] as string, 16) >> 3))
        const sender = at(farthest, 0)
        yield* network.partition([
          [newcomer.address, sender.address],
          nodes.filter((node) => node !== sender).map((node) => node.address)
        ])
        const cutOff = sent()
        yield* storeAt(sender, newcomer, claimOf(nodeIdentity(950), at(names, 0), 0))
        // The first Store asked for the fills; every one of their queries failed.
        expect(sent()).toBeGreaterThan(cutOff)
        yield* network.heal
        // Within the minute the failed fills stand: a Store asks for nothing.
        const healed = sent()
        yield* storeAt(sender, newcomer, claimOf(nodeIdentity(951), at(names, 1), 0))
        expect(sent()).toBe(healed)
        // A minute later they are forgotten, and the next Store fills again (an hour early: the interval is 1 h).
        yield* TestClock.adjust(Duration.sum(FILL_RETRY_AFTER, Duration.seconds(1)))
        const later = sent()
        yield* storeAt(sender, newcomer, claimOf(nodeIdentity(952), at(names, 2), 0))
        expect(sent()).toBeGreaterThan(later)
      })),
    { timeout: 120_000 }
  )

  it.scoped(
    "ATTACK: 200 fresh keys flooding records near a name cannot make its k closest refuse the owner's register and update",
    () =>
      deterministic(Effect.gen(function*() {
        // Room for 1,700 records: the flood below offers 2,000 names to each storer, and 200 keys × 8
        // names per key is 1,600. Without the per-key cap the storers would be full (see the next test).
        const limits = { ...config, maxStoredRecords: 1700 }
        // The flood is 8,000 Stores from one peer in frozen time: the request limits would refuse all but 20
        // of them; they are lifted so that the storage rules, which a paced flood reaches, are what is tested.
        const { nodes } = yield* makeTestNetwork(12, limits, { requestLimits: unlimitedRequests })
        const key = userKey(name("olive"))
        const ids = nodes.map((node) => node.nodeId)
        const storers = nodesById(nodes, trueClosest(key, ids, K))
        const attacker = at(nodes.filter((node) => !storers.includes(node)), 0)
        const names = namesNear(key, ids, 2000, "junk")
        let stored = 0
        let refused = 0
        for (let keyIndex = 0; keyIndex < 200; keyIndex++) {
          const identity = nodeIdentity(1000 + keyIndex)
          for (const username of names.slice(keyIndex * 10, keyIndex * 10 + 10)) {
            const record = claimOf(identity, username, 0)
            for (const storer of storers) {
              const outcome = yield* storeAt(attacker, storer, record)
              if (outcome === "Stored") stored++
              else {
                expect(outcome).toBe("RequestRefused:QuotaExceeded")
                refused++
              }
            }
          }
        }
        // Each key placed its 8 names at each storer; its 9th and 10th were refused.
        expect(stored).toBe(200 * 8 * K)
        expect(refused).toBe(200 * 2 * K)
        for (const storer of storers) expect(yield* storer.store.size).toBe(1600)

        const owner = at(nodes, 5)
        const { directory } = yield* directoryOfNode(owner, limits)
        const registered = yield* directory.register("olive")
        for (const storer of storers) {
          const held = yield* storer.store.get(key, 0)
          expect(Option.map(held, (record) => record.signingKey)).toEqual(Option.some(registered.record.signingKey))
        }
        // The owner's hourly update (a higher sequence) is taken by every storer too.
        const updated = yield* directory.republish
        expect(Option.isSome(updated)).toBe(true)
        for (const storer of storers) {
          const held = yield* storer.store.get(key, 0)
          expect(Option.map(held, (record) => record.sequence)).toEqual(Option.map(updated, (record) => record.sequence))
        }
      })),
    { timeout: 120_000 }
  )

  it.scoped("CONTRAST: without the per-key cap, one key's flood fills the storers and the owner is refused", () =>
    deterministic(Effect.gen(function*() {
      const run = (maxNamesPerKey: number) =>
        Effect.gen(function*() {
          const limits = { ...config, maxStoredRecords: 50, maxNamesPerKey }
          // As above: the request limits would stop this flood of 240 Stores before the storage rules do.
          const { nodes } = yield* makeTestNetwork(8, limits, { requestLimits: unlimitedRequests })
          const key = userKey(name("olive"))
          const ids = nodes.map((node) => node.nodeId)
          const storers = nodesById(nodes, trueClosest(key, ids, K))
          const attacker = at(nodes.filter((node) => !storers.includes(node)), 0)
          const flooder = nodeIdentity(900)
          for (const username of namesNear(key, ids, 60, "spam")) {
            for (const storer of storers) yield* storeAt(attacker, storer, claimOf(flooder, username, 0))
          }
          const olive = signedRecord(at(nodes, 2), name("olive"), { issuedAt: 0, expiresAt: DAY })
          const outcomes: Array<string> = []
          for (const storer of storers) outcomes.push(yield* storeAt(at(nodes, 2), storer, olive))
          return outcomes
        })
      expect(yield* run(10_000)).toEqual(Array(K).fill("RequestRefused:QuotaExceeded"))
      expect(yield* run(8)).toEqual(Array(K).fill("Stored"))
    })), { timeout: 60_000 })

  it.scoped("ATTACK: one key is refused a ninth name at a storer, but may update the names it holds", () =>
    deterministic(Effect.gen(function*() {
      const { nodes } = yield* makeTestNetwork(5, config)
      const storer = at(nodes, 0)
      const squatter = nodeIdentity(700)
      for (let n = 0; n < 8; n++) expect(yield* storer.store.put(claimOf(squatter, `name${n}`, 0), 0)).toBe("Stored")
      const ninth = yield* Effect.flip(storer.store.put(claimOf(squatter, "name8", 0), 0))
      expect(ninth).toMatchObject({ _tag: "RequestRefused", reason: "QuotaExceeded" })
      expect(ninth.message).toContain("8 names claimed by this signing key")
      // A rival claim of someone else's name counts as one of its names too.
      yield* storer.store.put(claimOf(nodeIdentity(701), "taken", 0), 0)
      expect(yield* Effect.flip(storer.store.putRival(claimOf(squatter, "taken", 0), 0))).toMatchObject({ reason: "QuotaExceeded" })
      const renewed = signUserRecord({ ...claimOf(squatter, "name3", 0), sequence: 2 }, squatter.sign)
      expect(yield* storer.store.put(renewed, 1)).toBe("Stored")
      // Another key is not held back by the squatter's names.
      expect(yield* storer.store.put(claimOf(nodeIdentity(702), "name8", 0), 0)).toBe("Stored")
    })))

  it.scoped("a record its holder no longer belongs to hold is handed to the nodes now closest and dropped there", () =>
    deterministic(Effect.gen(function*() {
      const slow = { ...config, maintenanceInterval: Duration.minutes(30) }
      const { network, nodes } = yield* makeTestNetwork(3, slow)
      const key = userKey(name("olive"))
      const record = signedRecord(at(nodes, 1), name("olive"), { issuedAt: 0, expiresAt: 7 * DAY })
      // A small network: every node stores it.
      for (const node of nodes) expect(yield* node.store.put(record, 0)).toBe("Stored")
      const joined: Array<TestNode> = [...nodes]
      for (let index = 3; index < 30; index++) {
        const node = yield* startNode(network, index, { ...slow, bootstrap: [nodeAddress(0)] })
        yield* node.dht.awaitJoined
        joined.push(node)
      }
      // One re-replication interval later: the k closest hold it, the first nodes hold it only if
      // they still belong (fewer than k + slack = 6 nodes they know are closer).
      yield* TestClock.adjust(Duration.hours(1))
      const closest = new Set(trueClosest(key, joined.map((node) => node.nodeId), K))
      for (const node of joined.filter((node) => closest.has(node.nodeId))) {
        expect(Option.isSome(yield* node.store.get(key, HOUR))).toBe(true)
      }
      for (const node of nodes) {
        const stillHeld = Option.isSome(yield* node.store.get(key, HOUR))
        expect(stillHeld).toBe(yield* node.dht.belongsHere(key))
      }
      const dropped = []
      for (const node of nodes) if (!(yield* node.dht.belongsHere(key))) dropped.push(node.index)
      expect(dropped.length).toBeGreaterThan(0)
    })), { timeout: 60_000 })
})
