/**
 * Real `peerchat start` processes on the test internet: two nodes on public
 * hosts (the second joins through the first) and one at home behind a
 * port-preserving NAT, joining through a public one:
 *
 * - the home node joins (its calls go out through the NAT and the answers
 *   come back), registers a name, and public nodes resolve it;
 * - public nodes never add it to their routing tables: they dial a caller
 *   back before adding it, at the host its connection came from (the NAT's
 *   public address) and the port it listens on, and the router drops that
 *   dial-back (no port is forwarded);
 * - it learns from its peers' dial-backs that it cannot be reached
 *   (Private), and the public ones that they can (Public).
 *
 * How it is then reached (relays) is `RelayedChat.test.ts`.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { join } from "node:path"
import { scopedTempDir } from "../support/tempDir.js"
import { canCreateNamespaces } from "./Netns.js"
import { peerchatJson, startPeerchat } from "./Peerchat.js"
import { eventually, makeNetwork } from "./Topology.js"

const skip = canCreateNamespaces()
const title = (name: string) => (skip === undefined ? name : `${name} (skipped: ${skip})`)
if (skip !== undefined) console.warn(`test/net: skipping the tests on network namespaces: ${skip}`)

/** `peerchat peers --json`. */
type Peers = ReadonlyArray<{ readonly nodeId: string; readonly address: string }>
/** `peerchat whois --json`, the fields used here. */
interface WhoisAnswer {
  readonly username: string
  readonly nodeId: string
  readonly address: string
}

describe.skipIf(skip !== undefined)(title("peerchat over a NAT"), () => {
  it.scopedLive("a node behind a port-preserving NAT joins, registers and is found, stays out of routing tables, and knows it is unreachable", () =>
    Effect.gen(function*() {
      const began = Date.now()
      const phase = (what: string) => Effect.logInfo(`+${((Date.now() - began) / 1000).toFixed(1)} s: ${what}`)
      const net = yield* makeNetwork
      const [east, west] = [yield* net.addPublicHost("east"), yield* net.addPublicHost("west")]
      const home = yield* net.addHome("home", "port-preserving-nat")
      const laptop = yield* home.addHost("laptop")
      const root = yield* scopedTempDir("net")

      // Every `peerchat` command is a process that loads the CLI (seconds of CPU), so independent ones run together.
      const alice = yield* startPeerchat(east, join(root, "alice"))
      const [bob, carol] = yield* Effect.all([
        startPeerchat(west, join(root, "bob"), ["--bootstrap", alice.ready.listen]),
        startPeerchat(laptop, join(root, "carol"), ["--bootstrap", alice.ready.listen])
      ], { concurrency: 2 })
      expect(alice.ready.listen).toBe(`${east.address}:${alice.port}`)
      expect(carol.ready.listen).toBe(`${laptop.address}:${carol.port}`)
      // Carol joins: her calls go out through the NAT and the answers come back.
      yield* Effect.all([bob.logged(/^joined the network through/), carol.logged(/^joined the network through/)], { concurrency: 2 })
      yield* phase("three nodes running, bob and carol joined")

      // Carol's status shows peers; she registers, and so does bob (to send, one needs a name).
      const [carolStatus] = yield* Effect.all([
        peerchatJson(laptop, ["status", "--data-dir", carol.dataDir]),
        peerchatJson(west, ["register", "bob", "--data-dir", bob.dataDir]),
        peerchatJson(laptop, ["register", "carol", "--data-dir", carol.dataDir])
      ], { concurrency: "unbounded" })
      expect(carolStatus).toMatchObject({ nodeId: carol.ready.nodeId, peers: expect.any(Number) })
      expect((carolStatus as { readonly peers: number }).peers).toBeGreaterThanOrEqual(1)
      yield* phase("carol has peers; bob and carol registered")

      // Public nodes dialled carol back (at her router's public address, the port she listens on) and the router dropped it.
      yield* eventually(Effect.map(home.droppedInbound, (dropped) => expect(dropped).toBeGreaterThan(0)), "10 seconds")
      // Alice resolves carol; the routing tables.
      const [whois, alicePeers, bobPeers] = yield* Effect.all([
        peerchatJson(east, ["whois", "carol", "--data-dir", alice.dataDir]),
        peerchatJson(east, ["peers", "--data-dir", alice.dataDir]),
        peerchatJson(west, ["peers", "--data-dir", bob.dataDir])
      ], { concurrency: "unbounded" })
      const found = whois as WhoisAnswer
      const [aliceRoutes, bobRoutes] = [alicePeers as Peers, bobPeers as Peers]
      yield* phase("alice looked carol up")
      yield* Effect.logInfo(
        `whois carol at alice: ${JSON.stringify(found)}\nrouting tables: alice ${JSON.stringify(aliceRoutes)}; bob ${JSON.stringify(bobRoutes)}\n` +
          `router ${home.router.address} dropped ${yield* home.droppedInbound} inbound packets`
      )
      // Public nodes find carol…
      expect(found).toMatchObject({ username: "carol", nodeId: carol.ready.nodeId })
      // …and route to each other (their dial-backs succeed), never to carol (theirs to her are dropped).
      expect(aliceRoutes.map((peer) => peer.nodeId)).toEqual([bob.ready.nodeId])
      expect(bobRoutes.map((peer) => peer.nodeId)).toEqual([alice.ready.nodeId])

      // Each node asks its peers to dial it back once it has joined (AutoNAT style, issue 13): bob (public,
      // who joined through alice) learns he is reachable, carol behind the NAT that she is not.
      const reachabilityOf = (host: typeof east, dataDir: string) =>
        Effect.map(peerchatJson(host, ["status", "--data-dir", dataDir]), (status) =>
          (status as { readonly reachability: string }).reachability)
      yield* eventually(Effect.flatMap(reachabilityOf(laptop, carol.dataDir), (reach) =>
        reach === "Private" ? Effect.void : Effect.fail(`carol's reachability is ${reach}`)), "20 seconds", "500 millis")
      yield* eventually(Effect.flatMap(reachabilityOf(west, bob.dataDir), (reach) =>
        reach === "Public" ? Effect.void : Effect.fail(`bob's reachability is ${reach}`)), "20 seconds", "500 millis")
    }), { timeout: 180_000 })
})
