/**
 * Names under attack, over the in-memory network: hostile nodes try to take
 * over a live name (forged records stored off the name's closest nodes,
 * records with huge sequences under their own key, answering FindValue for
 * a name they do not hold), and honest situations that used to go wrong (the
 * first user of a network that grows later, a node with no peers, two parts
 * of a network that each accepted a claim). Every reader must end at the
 * owner's key, or at a loud conflict, never silently at the attacker's.
 */
import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Fiber, Option, TestClock } from "effect"
import { meetsIdPuzzle } from "../../src/core/IdPuzzle.js"
import { userKey, type Username } from "../../src/core/Username.js"
import type { NodeConfigShape } from "../../src/node/NodeConfig.js"
import { Ping } from "../../src/node/Protocol.js"
import { MemoryNetwork } from "../../src/platform/MemoryTransport.js"
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
import { deterministic as seededDeterministic } from "../support/deterministic.js"

const K = 4
const HOUR = 60 * 60 * 1000
const config: Partial<NodeConfigShape> = { k: K, alpha: 3 }

const deterministic = <A, E, R>(self: Effect.Effect<A, E, R>, seed = 7) =>
  seededDeterministic(self, seed)

const name = (text: string) => text as Username

/** The directory of a running test node, with a fresh in-memory profile. */
const directoryOf = (node: TestNode) => Effect.map(directoryOfNode(node, config), ({ directory }) => directory)

describe("names against hostile peers", () => {
  it.scoped("a forged record stored away from the name's closest nodes is never believed", () =>
    deterministic(Effect.gen(function*() {
      const { nodes } = yield* makeTestNetwork(24, config)
      const victim = at(nodes, 3)
      const attacker = at(nodes, 4)
      const owner = signedRecord(victim, name("victim"), { issuedAt: 0, expiresAt: HOUR })
      yield* victim.dht.publish(owner)
      const key = userKey(name("victim"))
      const closest = new Set(trueClosest(key, nodes.map((n) => n.nodeId), K))
      // The attacker's own claim for the name, stored at every node that does not hold the owner's
      // record (they accept it: they hold nothing for that key), with a huge sequence.
      const forged = signedRecord(attacker, name("victim"), { sequence: Number.MAX_SAFE_INTEGER, issuedAt: 0, expiresAt: HOUR })
      let planted = 0
      for (const node of nodes.filter((n) => !closest.has(n.nodeId))) {
        const stored = yield* Effect.either(node.store.put(forged, 0))
        if (stored._tag === "Right") planted++
      }
      expect(planted).toBeGreaterThan(10)
      for (const reader of nodes) {
        const resolved = yield* reader.dht.resolveRecords(key)
        expect(resolved.answer._tag).toBe("Owner")
        if (resolved.answer._tag === "Owner") expect(resolved.answer.record.signingKey).toBe(owner.signingKey)
      }
    })))

  it.scoped("a hostile node among the closest that answers with its own key makes a loud conflict, not a silent winner", () =>
    deterministic(Effect.gen(function*() {
      const { nodes } = yield* makeTestNetwork(24, config)
      const victim = at(nodes, 5)
      const key = userKey(name("target"))
      const closestIds = trueClosest(key, nodes.map((n) => n.nodeId), K)
      const liar = nodes.find((n) => n.nodeId === closestIds[1]) as TestNode
      const owner = signedRecord(victim, name("target"), { issuedAt: 0, expiresAt: HOUR })
      yield* victim.dht.publish(owner)
      const forged = signedRecord(liar, name("target"), { sequence: 2 ** 40, issuedAt: 0, expiresAt: HOUR })
      // The liar answers every FindValue with its own claim.
      yield* liar.transport.serve({
        FindValue: () => Effect.succeed({ _tag: "Found" as const, record: forged, contacts: [] })
      })
      // Every reader asks the closest (the honest storers too, counting their own copy as one
      // voice) and sees both claims.
      for (const reader of nodes.filter((n) => n !== liar)) {
        const { answer } = yield* reader.dht.resolveRecords(key)
        expect(answer._tag).toBe("Conflict")
        if (answer._tag === "Conflict") {
          expect(answer.claimants.map((c) => c.record.signingKey).sort()).toEqual([owner.signingKey, forged.signingKey].sort())
          // The honest claim is held by more of the closest nodes.
          expect(answer.claimants[0]?.record.signingKey).toBe(owner.signingKey)
        }
        expect(Option.isNone(yield* reader.dht.findRecord(key))).toBe(true)
      }
      // Whois says so, listing both fingerprints, and names nobody.
      const directory = yield* directoryOf(at(nodes, 9))
      const conflict = yield* Effect.flip(directory.whois("target"))
      expect(conflict._tag).toBe("NameConflict")
      if (conflict._tag === "NameConflict") expect(conflict.claimants).toHaveLength(2)
      // The owner's fingerprint picks the owner's record through the conflict.
      const ownerFingerprint = conflict._tag === "NameConflict"
        ? conflict.claimants.find((c) => c.signingKey === owner.signingKey)?.fingerprint
        : undefined
      const chosen = yield* directory.whois(`target@${ownerFingerprint ?? ""}`)
      expect(chosen.signingKey).toBe(owner.signingKey)
    })))

  it.scoped("a storer that missed the owner's Store and then took a squatter's claim never names the squatter as owner", () =>
    deterministic(Effect.gen(function*() {
      const { network, nodes } = yield* makeTestNetwork(16, config)
      const key = userKey(name("alice"))
      const closestIds = trueClosest(key, nodes.map((n) => n.nodeId), K)
      const victimNode = nodes.find((n) => !closestIds.includes(n.nodeId)) as TestNode
      const attacker = nodes.find((n) => !closestIds.includes(n.nodeId) && n !== victimNode) as TestNode
      const absent = nodes.find((n) => n.nodeId === closestIds[0]) as TestNode
      // One of the closest is offline while alice publishes; when it is back, nothing hands it the record
      // (it was in every table already) and the attacker stores its own claim there first.
      yield* network.setOnline(absent.address, false)
      yield* victimNode.dht.publish(signedRecord(victimNode, name("alice"), { issuedAt: 0, expiresAt: HOUR }))
      yield* network.setOnline(absent.address, true)
      yield* absent.store.put(signedRecord(attacker, name("alice"), { issuedAt: 0, expiresAt: HOUR }), 0)
      // The storer's own reads still ask the k closest: a conflict, not the squatter.
      const { answer } = yield* absent.dht.resolveRecords(key)
      expect(answer._tag).toBe("Conflict")
      expect(Option.isNone(yield* absent.dht.findRecord(key))).toBe(true)
    })))

  it.scoped("ids that do not solve the id puzzle never enter a routing table or a lookup, but may still use the network", () =>
    deterministic(Effect.gen(function*() {
      const puzzle = { ...config, idPuzzleBits: 3 }
      const solving = Array.from({ length: 200 }, (_, index) => index)
        .filter((index) => meetsIdPuzzle(nodeIdentity(index).nodeId, 3))
        .slice(0, 12)
      const cheap = Array.from({ length: 200 }, (_, index) => index)
        .find((index) => !meetsIdPuzzle(nodeIdentity(index).nodeId, 3)) as number
      const network = yield* MemoryNetwork.make
      const first = at(solving, 0)
      const honest: Array<TestNode> = []
      for (const index of solving) {
        const node = yield* startNode(network, index, { ...puzzle, bootstrap: index === first ? [] : [nodeAddress(first)] })
        yield* node.dht.awaitJoined
        honest.push(node)
      }
      // A node with a cheap id joins and looks things up; every honest node hears from it.
      const intruder = yield* startNode(network, cheap, { ...puzzle, bootstrap: [nodeAddress(first)] })
      yield* intruder.dht.awaitJoined
      const lookup = yield* intruder.dht.findNode(intruder.nodeId)
      expect(lookup.closest.length).toBeGreaterThan(0)
      for (const node of honest) {
        yield* Effect.either(intruder.transport.send({ address: node.address }, new Ping({})))
        const table = yield* node.routing.contacts
        expect(table.map((contact) => contact.nodeId)).not.toContain(intruder.nodeId)
        // Even when a peer (here the intruder itself) names it in an answer, lookups skip it.
        const found = yield* node.dht.findNode(intruder.nodeId)
        expect(found.closest.map((contact) => contact.nodeId)).not.toContain(intruder.nodeId)
      }
    })))

  it.scoped("a claim the other storers refuse on its merits (too little work for them) is not reported as registered", () =>
    deterministic(Effect.gen(function*() {
      // Every node but one asks for more work than that one solves.
      const network = yield* MemoryNetwork.make
      const strict = { ...config, claimDifficulty: 12, minClaimDifficulty: 12 }
      const nodes: Array<TestNode> = []
      for (let index = 0; index < 8; index++) {
        const node = yield* startNode(network, index, { ...strict, bootstrap: index === 0 ? [] : [nodeAddress(0)] })
        yield* node.dht.awaitJoined
        nodes.push(node)
      }
      const lax = { ...config, claimDifficulty: 4, minClaimDifficulty: 4 }
      const outlier = yield* startNode(network, 8, { ...lax, bootstrap: [nodeAddress(0)] })
      yield* outlier.dht.awaitJoined
      // A name the outlier is itself one of the k closest of, so it stores its own record: the case
      // that used to print "registered" while nobody else held the claim.
      const everyone = [...nodes, outlier].map((node) => node.nodeId)
      const username = Array.from({ length: 50 }, (_, i) => `outlier${i}`)
        .find((candidate) => trueClosest(userKey(name(candidate)), everyone, K).includes(outlier.nodeId)) as string
      const { directory } = yield* directoryOfNode(outlier, lax)
      const refused = yield* Effect.flip(directory.register(username))
      expect(refused._tag).toBe("PublishFailed")
      expect(refused.message).toContain("lower difficulty")
    })))

  it.scoped("the first user of a new network stays resolvable as 30 nodes join after it (k = 4)", () =>
    deterministic(Effect.gen(function*() {
      const network = yield* MemoryNetwork.make
      const first = yield* startNode(network, 0, { ...config, bootstrap: [] })
      const directory = yield* directoryOf(first)
      const registration = yield* directory.register("user0")
      expect(registration.warning).toContain("first of a new network")
      const joined: Array<TestNode> = [first]
      for (let index = 1; index <= 30; index++) {
        // A chain: each node joins through the one before it.
        const node = yield* startNode(network, index, { ...config, bootstrap: [nodeAddress(index - 1)] })
        yield* node.dht.awaitJoined
        joined.push(node)
      }
      yield* TestClock.adjust(Duration.seconds(5))
      const key = userKey(name("user0"))
      for (const reader of joined) {
        const found = yield* reader.dht.findRecord(key)
        expect(Option.getOrUndefined(found)?.nodeId).toBe(first.nodeId)
      }
    })))

  it.scoped("no peer: whois and register say NotConnected; a new network's first node may register, locally", () =>
    deterministic(Effect.gen(function*() {
      const network = yield* MemoryNetwork.make
      // A node whose bootstrap address is wrong: it knows nobody.
      const lost = yield* startNode(network, 1, { ...config, bootstrap: [nodeAddress(99)] })
      const lostDirectory = yield* directoryOf(lost)
      // Each waits a while for the node to reach its bootstrap node first.
      const whois = yield* Effect.fork(Effect.flip(lostDirectory.whois("bob")))
      const register = yield* Effect.fork(Effect.flip(lostDirectory.register("bob")))
      yield* TestClock.adjust(Duration.seconds(11))
      expect((yield* Fiber.join(whois))._tag).toBe("NotConnected")
      const refused = yield* Fiber.join(register)
      expect(refused._tag).toBe("NotConnected")
      expect(refused.message).toContain("not connected")
      // The first node of a new network answers for itself: nobody holds the name.
      const first = yield* startNode(network, 2, { ...config, bootstrap: [] })
      const firstDirectory = yield* directoryOf(first)
      expect((yield* Effect.flip(firstDirectory.whois("bob")))._tag).toBe("UserNotFound")
      const registered = yield* firstDirectory.register("bob")
      expect(registered.warning).toContain("claimed only here")
    })))

  it.scoped("two parts of a network that each accepted a claim meet: readers see a conflict, owners are told", () =>
    deterministic(Effect.gen(function*() {
      const network = yield* MemoryNetwork.make
      const startPart = (indices: ReadonlyArray<number>) =>
        Effect.gen(function*() {
          const nodes: Array<TestNode> = []
          for (const index of indices) {
            const node = yield* startNode(network, index, {
              ...config,
              bootstrap: nodes.length === 0 ? [] : [nodeAddress(indices[0] as number)]
            })
            yield* node.dht.awaitJoined
            nodes.push(node)
          }
          return nodes
        })
      const left = yield* startPart([0, 2, 4, 6, 8, 10, 12, 14])
      const right = yield* startPart([1, 3, 5, 7, 9, 11, 13, 15])
      const leftBob = yield* directoryOf(at(left, 3))
      const rightBob = yield* directoryOf(at(right, 3))
      yield* leftBob.register("bob")
      yield* rightBob.register("bob")
      // The parts meet: every node of one part pings every node of the other.
      for (const node of left) {
        for (const other of right) yield* Effect.either(node.transport.send({ address: other.address }, new Ping({})))
      }
      for (const node of [...left, ...right]) yield* node.dht.findNode(userKey(name("bob")))
      yield* TestClock.adjust(Duration.seconds(10))
      // The owners republish (hourly, or at once here) and hear of the rival claim.
      yield* leftBob.republish
      yield* rightBob.republish
      yield* TestClock.adjust(Duration.seconds(10))
      const everyone = [...left, ...right]
      for (const reader of everyone) {
        const { answer } = yield* reader.dht.resolveRecords(userKey(name("bob")))
        expect(answer._tag).toBe("Conflict")
      }
      expect(Option.isSome(yield* leftBob.ownNameWarning)).toBe(true)
      expect(Option.isSome(yield* rightBob.ownNameWarning)).toBe(true)
    })), { timeout: 60_000 })
})
