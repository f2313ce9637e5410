/**
 * A node that could not be dialled when it joined (its port mapping granted
 * late, a firewall opened later) and can be now: its peers' dial-backs of
 * its first calls failed, and each peer dials back one node id and address
 * once per `DIAL_BACK_WINDOW_MS` (10 minutes). Its next reachability check,
 * whose `DialBack` each asked peer answers by dialling it, puts it in those
 * peers' routing tables.
 */
import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Logger, LogLevel, Random, TestClock } from "effect"
import { DialBack } from "../../src/node/Protocol.js"
import { TransportError } from "../../src/node/Transport.js"
import { findContact } from "../../src/core/RoutingTable.js"
import { DIAL_BACK_WINDOW_MS } from "../../src/node/Routing.js"
import { at, makeTestNetwork, nodeAddress, startNode, type TestNode } from "../support/memoryNetwork.js"

const config = { k: 6, alpha: 3, reachabilityInterval: Duration.minutes(1) }

const knows = (node: TestNode, other: TestNode) =>
  Effect.map(node.routing.snapshot, (table) => findContact(table, other.nodeId) !== undefined)

describe("a node reachable only after it joined", () => {
  it.scoped("enters its peers' tables at its next reachability check, not a dial-back window later", () =>
    Effect.gen(function*() {
      const { network, nodes } = yield* makeTestNetwork(5, config)
      // Node 5 joins from behind a NAT: every dial-back of its calls fails.
      yield* network.setBehindNat(nodeAddress(5), true)
      const late = yield* startNode(network, 5, { ...config, bootstrap: [nodeAddress(0)] })
      yield* late.dht.awaitJoined
      yield* TestClock.adjust(Duration.seconds(5))
      expect((yield* late.dht.status).reachability).toBe("Private")
      expect(yield* knows(at(nodes, 0), late)).toBe(false)

      // Its router opens (a mapping granted late): the next check, a minute on, is well inside the
      // 10-minute window in which its peers would not dial it back again.
      yield* network.setBehindNat(nodeAddress(5), false)
      yield* TestClock.adjust(Duration.minutes(1))
      expect((yield* late.dht.status).reachability).toBe("Public")
      expect(Duration.toMillis(Duration.minutes(1))).toBeLessThan(DIAL_BACK_WINDOW_MS)
      const knownBy = yield* Effect.filter(nodes, (node) => knows(node, late))
      expect(knownBy.length).toBeGreaterThan(0)
    }).pipe(Effect.withRandom(Random.make(5)), Logger.withMinimumLogLevel(LogLevel.Warning)))

  it.scoped("ATTACK: a node whose listening probes are all taken refuses a DialBack rather than vote the caller unreachable", () =>
    Effect.gen(function*() {
      const { network } = yield* makeTestNetwork(1, config)
      // Callers holding every probe slot (naming ports they firewall): this node cannot start a probe.
      const busy = yield* startNode(network, 1, { ...config, bootstrap: [nodeAddress(0)] }, {
        transport: (transport) => ({
          ...transport,
          proveListening: (target) =>
            Effect.fail(new TransportError({ peer: `${target.address.host}:${target.address.port}`, reason: "Overloaded", detail: "64 listening probes are under way" }))
        })
      })
      yield* busy.dht.awaitJoined
      const caller = yield* startNode(network, 2, { ...config, bootstrap: [nodeAddress(0)] })
      yield* caller.dht.awaitJoined
      const asked = yield* Effect.flip(caller.transport.send({ address: busy.address, nodeId: busy.nodeId }, new DialBack({})))
      // Refused: the caller's reachability check counts no vote from this node (see judgeReachability).
      expect(asked).toMatchObject({ _tag: "RequestRefused", reason: "Overloaded" })
    }).pipe(Effect.withRandom(Random.make(6)), Logger.withMinimumLogLevel(LogLevel.Warning)))
})
