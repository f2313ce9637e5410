import { describe, expect, it } from "@effect/vitest"
import { testClaimRules } from "../support/claims.js"
import { Clock, Effect, Exit, Fiber, LogLevel, Scope, TestClock } from "effect"
import type { NodeId } from "../../src/core/Id.js"
import { findContact } from "../../src/core/RoutingTable.js"
import { validRecordAt } from "../../src/node/Lookups.js"
import { verifyEd25519 } from "../../src/platform/NodeCrypto.js"
import { userKey, type Username } from "../../src/core/Username.js"
import { at, makeTestNetwork, nodeAddress, nodeIdentity, signedRecord, trueClosest } from "../support/memoryNetwork.js"
import { deterministic as seededDeterministic } from "../support/deterministic.js"

const K = 6
const CALL_TIMEOUT_MS = 2000

const deterministic = <A, E, R>(self: Effect.Effect<A, E, R>) => seededDeterministic(self, 9, LogLevel.Warning)

describe("Lookups", () => {
  it.scoped("never waits on a hanging peer longer than the call timeout", () =>
    deterministic(Effect.gen(function*() {
      const { nodes } = yield* makeTestNetwork(24, { k: K, alpha: 3 })
      const searcher = at(nodes, 0)
      const target = at(nodes, 13).nodeId
      // The three nodes closest to the target stop answering (their handlers hang forever).
      const hanging = trueClosest(target, nodes.slice(1).map((node) => node.nodeId), 3)
      for (const node of nodes.filter((n) => hanging.includes(n.nodeId))) {
        yield* node.transport.serve({
          Ping: () => Effect.never,
          FindNode: () => Effect.never,
          FindValue: () => Effect.never,
          Store: () => Effect.never
        })
      }
      const start = yield* Clock.currentTimeMillis
      const lookup = yield* Effect.fork(searcher.lookups.findNode(target))
      let elapsed = 0
      while (lookup.unsafePoll() === null && elapsed < 10 * CALL_TIMEOUT_MS) {
        yield* TestClock.adjust("100 millis")
        elapsed = (yield* Clock.currentTimeMillis) - start
      }
      const result = yield* Fiber.join(lookup)
      expect(elapsed).toBeLessThanOrEqual(CALL_TIMEOUT_MS + 100)
      expect(result.stats.timeouts).toBeGreaterThan(0)
      const responsive = nodes.map((n) => n.nodeId).filter((id) => id !== searcher.nodeId && !hanging.includes(id))
      // Honest peers still name the hanging ones among their k closest, which crowds out
      // the farthest responsive nodes; the k - 3 closest responsive ones are always found.
      const found = result.closest.map((c) => c.nodeId)
      expect(found.slice(0, K - hanging.length)).toEqual(trueClosest(target, responsive, K - hanging.length))
      for (const id of hanging) expect(found).not.toContain(id)
      // The hanging peers were charged a failure in the routing table once their calls timed out
      // (the lookup itself moved on after their overdue time), the others were observed.
      yield* TestClock.adjust(CALL_TIMEOUT_MS)
      const table = yield* searcher.routing.snapshot
      for (const id of hanging) expect(findContact(table, id as NodeId)?.failures ?? 1).toBeGreaterThan(0)
    })))

  it.scoped("a lookup whose node stops while its queries are out ends instead of waiting for good", () =>
    deterministic(Effect.gen(function*() {
      const { nodes } = yield* makeTestNetwork(16, { k: K, alpha: 3 })
      const searcher = at(nodes, 0)
      // Every other node holds its answer, so the searcher's queries are all out when it stops.
      for (const node of nodes.slice(1)) {
        yield* node.transport.serve({
          Ping: () => Effect.never,
          FindNode: () => Effect.never,
          FindValue: () => Effect.never,
          Store: () => Effect.never
        })
      }
      // Forked outside the node's scope, as a caller of the node (the simulator, a test) runs it.
      const lookup = yield* Effect.forkDaemon(searcher.lookups.findNode(at(nodes, 9).nodeId))
      yield* TestClock.adjust("10 millis")
      expect(lookup.unsafePoll()).toBeNull()
      yield* Scope.close(searcher.scope, Exit.void)
      // It ends at once, well inside the 2 s call timeout; before, the interrupted queries never
      // reported and the lookup waited for good (this failed with "still waiting").
      const joined = yield* Fiber.join(lookup).pipe(
        Effect.timeoutFail({ duration: "1 second", onTimeout: () => "still waiting" }),
        Effect.fork
      )
      yield* TestClock.adjust("1 second")
      const outcome = yield* Fiber.join(joined)
      expect(outcome.closest).toEqual([])
      expect(outcome.stats.messagesSent).toBeGreaterThan(0)
    })))

  it.scoped("keeps the transport's own peer values in the routing table, one shared object per peer", () =>
    deterministic(Effect.gen(function*() {
      const { network, nodes } = yield* makeTestNetwork(16, { k: K })
      const searcher = at(nodes, 5)
      const result = yield* searcher.lookups.findNode(at(nodes, 11).nodeId)
      expect(result.stats.messagesSent).toBeGreaterThan(0)
      const contacts = yield* searcher.routing.contacts
      expect(contacts.length).toBeGreaterThan(0)
      // Not copies: with thousands of simulated nodes in one process, a copy per entry adds up.
      for (const contact of contacts) expect(contact).toBe(network.endpoint(contact.address)?.peer)
    })))

  it.scoped("findValue ignores an invalid record and keeps looking", () =>
    deterministic(Effect.gen(function*() {
      const { nodes } = yield* makeTestNetwork(16, { k: K })
      const username = "grace" as Username
      const key = userKey(username)
      const record = signedRecord({ identity: nodeIdentity(3), address: nodeAddress(3) }, username, {
        issuedAt: 0,
        expiresAt: 60_000
      })
      yield* at(nodes, 3).dht.publish(record)
      const valid = yield* at(nodes, 10).lookups.findValue(key, validRecordAt(key, verifyEd25519, testClaimRules))
      expect(valid.value).toEqual(record)
      expect(valid.stats.hops).toBeGreaterThan(0)
      // A validator that rejects everything turns every Found into Closer: no value, a full FindNode result.
      const rejecting = yield* at(nodes, 10).lookups.findValue(key, () => false)
      expect(rejecting.value).toBeUndefined()
      expect(rejecting.closest.length).toBe(K)
      // A record under another key is not valid there.
      expect(validRecordAt(userKey("other" as Username), verifyEd25519, testClaimRules)(record, 0)).toBe(false)
      expect(validRecordAt(key, verifyEd25519, testClaimRules)(record, 60_000)).toBe(false)
    })))
})
