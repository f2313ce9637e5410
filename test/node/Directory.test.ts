import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Exit, LogLevel, Option, Scope, SubscriptionRef, TestClock } from "effect"
import { formatAddress } from "../../src/core/Contact.js"
import { advertisedRoutes, type RelayHint } from "../../src/core/PeerAddress.js"
import type { Username } from "../../src/core/Username.js"
import type { Profile } from "../../src/node/Profile.js"
import { directoryOf as directoryOfNode } from "../support/directory.js"
import { at, makeTestNetwork, nodeAddress, startNode, type TestNode } from "../support/memoryNetwork.js"
import { deterministic as seededDeterministic } from "../support/deterministic.js"

const config = { k: 6, alpha: 3, maintenanceInterval: Duration.minutes(10) }

const deterministic = <A, E, R>(self: Effect.Effect<A, E, R>) => seededDeterministic(self, 7, LogLevel.Warning)

/** The directory of a test node, with a profile store that starts from `profile`. */
const directoryOf = (node: TestNode, profile?: Profile) => directoryOfNode(node, config, profile)

/**
 * The routes of a node behind a NAT, its relays set by the test; `onRead`
 * runs each time the directory reads the routes (the n-th read, from 1).
 */
const natRoutes = (node: TestNode, onRead: (read: number, relays: SubscriptionRef.SubscriptionRef<ReadonlyArray<RelayHint>>) => Effect.Effect<void>) =>
  Effect.gen(function*() {
    const relays = yield* SubscriptionRef.make<ReadonlyArray<RelayHint>>([])
    let reads = 0
    return {
      relays,
      circuits: {
        advertised: Effect.gen(function*() {
          const current = yield* SubscriptionRef.get(relays)
          yield* onRead(++reads, relays)
          return advertisedRoutes("Private", node.address, current)
        }),
        relayChanges: relays.changes,
        status: Effect.map(SubscriptionRef.get(relays), (held) => ({
          relays: held,
          reservationsServed: 0,
          circuitsServed: 0,
          circuitsRelayed: 0
        }))
      }
    }
  })

describe("Directory", () => {
  it.scoped("register publishes a signed record every node resolves; names are normalized", () =>
    deterministic(Effect.gen(function*() {
      const { nodes } = yield* makeTestNetwork(16, config)
      const alice = at(nodes, 3)
      const { directory, profiles } = yield* directoryOf(alice)
      const { record } = yield* directory.register("Alice")
      expect(record.username).toBe("alice")
      expect(record.nodeId).toBe(alice.nodeId)
      expect(record.addresses).toEqual([alice.address])
      expect((yield* profiles.load).username).toBe("alice")
      for (const node of nodes) {
        const { directory: other } = yield* directoryOf(node)
        const found = yield* other.whois("ALICE")
        expect(found.nodeId).toBe(alice.nodeId)
        expect(formatAddress(at(found.addresses, 0))).toBe(formatAddress(alice.address))
      }
    })))

  it.scoped("a live name cannot be taken by another key; one node holds one name", () =>
    deterministic(Effect.gen(function*() {
      const { nodes } = yield* makeTestNetwork(12, config)
      const { directory: first } = yield* directoryOf(at(nodes, 1))
      const { directory: second } = yield* directoryOf(at(nodes, 2))
      yield* first.register("alice")
      const taken = yield* second.register("alice").pipe(Effect.flip)
      expect(taken._tag).toBe("NameTaken")
      expect(taken.message).toContain("already registered")
      const twice = yield* first.register("bob").pipe(Effect.flip)
      expect(twice._tag).toBe("AlreadyRegistered")
      // Registering the same name again is a re-publish, not an error.
      const again = yield* first.register("alice")
      expect(again.record.sequence).toBe(2)
    })))

  it.scoped("bad names and unknown users are typed errors", () =>
    deterministic(Effect.gen(function*() {
      const { nodes } = yield* makeTestNetwork(6, config)
      const { directory } = yield* directoryOf(at(nodes, 1))
      expect((yield* directory.register("no spaces").pipe(Effect.flip))._tag).toBe("InvalidUsername")
      expect((yield* directory.whois("x").pipe(Effect.flip))._tag).toBe("InvalidUsername")
      const missing = yield* directory.whois("nobody").pipe(Effect.flip)
      expect(missing._tag).toBe("UserNotFound")
      expect(missing.message).toContain("nobody")
    })))

  it.scoped("login on a new address republishes with a higher sequence, and peers find the new address", () =>
    deterministic(Effect.gen(function*() {
      const network = yield* makeTestNetwork(14, config)
      const mover = at(network.nodes, 5)
      const { directory, profiles } = yield* directoryOf(mover)
      const { record: first } = yield* directory.register("mover")
      const saved = yield* profiles.load

      // The user stops, and starts again elsewhere with the same identity and profile.
      yield* Scope.close(mover.scope, Exit.void)
      const moved = yield* startNode(network.network, 5, { ...config, bootstrap: [nodeAddress(0)] }, {
        address: { host: "127.9.9.9", port: 7100 }
      })
      yield* moved.dht.awaitJoined
      const { directory: afterMove } = yield* directoryOf(moved, saved)
      // The login republish runs in the background once the node has joined.
      yield* TestClock.adjust(Duration.seconds(1))
      const { directory: observer } = yield* directoryOf(at(network.nodes, 9))
      const found = yield* observer.whois("mover")
      expect(found.sequence).toBeGreaterThan(first.sequence)
      expect(found.addresses).toEqual([{ host: "127.9.9.9", port: 7100 }])
      expect(Option.getOrNull(yield* afterMove.username)).toBe("mover" as Username)
    })))

  it.scoped("relays found while register was publishing reach the network in the next record", () =>
    deterministic(Effect.gen(function*() {
      const { nodes } = yield* makeTestNetwork(12, config)
      const owner = at(nodes, 4)
      const relay = at(nodes, 7)
      const hint: RelayHint = { relayId: relay.nodeId, address: relay.address }
      // The race seen on a loaded machine: register reads the routes (no relays yet), and the first
      // relay is granted right after, while its record is still being stored.
      const { circuits } = yield* natRoutes(owner, (read, relays) =>
        read === 1 ? SubscriptionRef.set(relays, [hint]) : Effect.void)
      const { directory } = yield* directoryOfNode(owner, config, undefined, circuits)
      const { record } = yield* directory.register("erin")
      expect(record.relays ?? []).toEqual([])
      yield* TestClock.adjust(Duration.seconds(1))
      const { directory: observer } = yield* directoryOf(at(nodes, 9))
      const found = yield* observer.whois("erin")
      expect(found.sequence).toBe(record.sequence + 1)
      expect(found.relays).toEqual([hint])
      expect(found.addresses).toEqual([])
      // Nothing changed since: no further record.
      yield* TestClock.adjust(Duration.seconds(10))
      expect((yield* observer.whois("erin")).sequence).toBe(found.sequence)
    })))

  it.scoped("the owner re-publishes every hour, so the record never lapses", () =>
    deterministic(Effect.gen(function*() {
      const { nodes } = yield* makeTestNetwork(8, config)
      const { directory } = yield* directoryOf(at(nodes, 2))
      const { record: first } = yield* directory.register("steady")
      yield* TestClock.adjust(Duration.hours(3))
      const { directory: observer } = yield* directoryOf(at(nodes, 6))
      const found = yield* observer.whois("steady")
      expect(found.sequence).toBeGreaterThanOrEqual(first.sequence + 3)
    })), { timeout: 60_000 })
})
