/**
 * Users behind home NATs chat through relays, on the test internet with real
 * `peerchat start` processes: two public nodes (alice, bob) and two homes,
 * one behind a port-preserving NAT (carol) and one behind a port-randomizing
 * ("symmetric") NAT (dave), none with a port forwarded. Carol and dave join
 * through alice (their calls go out through the NATs), register, and learn
 * from their peers' dial-backs that they cannot be reached (bob that he
 * can); the routers drop those dial-backs, so no routing table holds them.
 * They reserve slots at public peers and publish records that list those
 * relays instead of their private addresses. Then a public user reaches a
 * NAT'd one, and the two NAT'd users chat both ways, each message carried by
 * a circuit through a relay (which sees only the ciphertext of the
 * end-to-end secure channel) and confirmed by a receipt. Last, carol goes
 * offline, dave's next message waits with her mailbox's relays, and carol,
 * back behind her NAT, pulls it.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { join } from "node:path"
import { scopedTempDir } from "../support/tempDir.js"
import { canCreateNamespaces } from "./Netns.js"
import { type HostNode, peerchat, peerchatJson, startPeerchat } from "./Peerchat.js"
import { eventually, type Host, makeNetwork } from "./Topology.js"

const skip = canCreateNamespaces()
const title = (name: string) => (skip === undefined ? name : `${name} (skipped: ${skip})`)

/** `peerchat whois --json`, the fields used here. */
interface WhoisAnswer {
  readonly username: string
  readonly nodeId: string
  readonly addresses: ReadonlyArray<string>
  readonly relays?: ReadonlyArray<string>
}

/** `peerchat peers --json`. */
type Peers = ReadonlyArray<{ readonly nodeId: string; readonly address: string }>

/** `peerchat status --json`, the fields used here. */
interface NodeStatusAnswer {
  readonly reachability: string
  readonly peers: number
  readonly circuits?: {
    readonly relays: ReadonlyArray<string>
    readonly reservationsServed: number
    readonly circuitsServed: number
    readonly circuitsRelayed: number
  }
}

/** `peerchat send --wait --json` until delivered (at most `timeout`): the final status. */
const sendAndWait = (from: Host, node: HostNode, to: string, text: string) =>
  Effect.map(
    peerchat(from, ["send", to, text, "--wait", "--timeout", "20s", "--json", "--data-dir", node.dataDir]),
    (outcome) => ({ code: outcome.code, stdout: outcome.stdout.trim(), stderr: outcome.stderr.trim() })
  )

describe.skipIf(skip !== undefined)(title("chat across NATs through relays"), () => {
  it.scopedLive("a public user reaches a user behind a NAT, and users behind two kinds of NAT chat both ways", () =>
    Effect.gen(function*() {
      const began = Date.now()
      const phase = (what: string) => Effect.logInfo(`+${((Date.now() - began) / 1000).toFixed(1)} s: ${what}`)
      const net = yield* makeNetwork
      const [east, west] = [yield* net.addPublicHost("east"), yield* net.addPublicHost("west")]
      const [home, flat] = [yield* net.addHome("home", "port-preserving-nat"), yield* net.addHome("flat", "symmetric-nat")]
      const [laptop, phone] = [yield* home.addHost("laptop"), yield* flat.addHost("phone")]
      const root = yield* scopedTempDir("relayed")

      const alice = yield* startPeerchat(east, join(root, "alice"))
      const [bob, carol, dave] = yield* Effect.all([
        startPeerchat(west, join(root, "bob"), ["--bootstrap", alice.ready.listen]),
        startPeerchat(laptop, join(root, "carol"), ["--bootstrap", alice.ready.listen]),
        startPeerchat(phone, join(root, "dave"), ["--bootstrap", alice.ready.listen])
      ], { concurrency: "unbounded" })
      yield* Effect.all([
        peerchatJson(west, ["register", "bob", "--data-dir", bob.dataDir]),
        peerchatJson(laptop, ["register", "carol", "--data-dir", carol.dataDir]),
        peerchatJson(phone, ["register", "dave", "--data-dir", dave.dataDir])
      ], { concurrency: "unbounded" })
      yield* phase("four nodes running; bob, carol and dave registered")

      // Behind their NATs, carol and dave learn they cannot be dialled, hold reservations at the public
      // nodes, and publish records that list those relays (no private address: nobody could dial it).
      const publicAddresses = [alice.ready.listen, bob.ready.listen]
      const listsOnlyRelays = (name: string) =>
        Effect.flatMap(peerchatJson(east, ["whois", name, "--data-dir", alice.dataDir]), (answer) => {
          const found = answer as WhoisAnswer
          return found.addresses.length === 0 && (found.relays ?? []).length > 0 &&
              (found.relays ?? []).every((relay) => publicAddresses.some((address) => relay.endsWith(address)))
            ? Effect.void
            : Effect.fail(`${name}'s record: ${JSON.stringify(found)}`)
        })
      yield* Effect.all([
        eventually(listsOnlyRelays("carol"), "60 seconds", "1 second"),
        eventually(listsOnlyRelays("dave"), "60 seconds", "1 second")
      ], { concurrency: "unbounded" })
      yield* phase("carol's and dave's records list their relays")
      // Carol's status names her relays; the public nodes hold the reservations.
      const statusOf = (host: Host, node: HostNode) =>
        Effect.map(peerchatJson(host, ["status", "--data-dir", node.dataDir]), (status) => status as NodeStatusAnswer)
      const [carolStatus, aliceStatus, bobStatus] = yield* Effect.all([
        statusOf(laptop, carol),
        statusOf(east, alice),
        statusOf(west, bob)
      ], { concurrency: "unbounded" })
      expect(carolStatus.reachability).toBe("Private")
      expect(carolStatus.peers).toBeGreaterThanOrEqual(1)
      expect(carolStatus.circuits?.relays.length).toBeGreaterThan(0)
      expect((aliceStatus.circuits?.reservationsServed ?? 0) + (bobStatus.circuits?.reservationsServed ?? 0)).toBeGreaterThanOrEqual(2)
      // Bob, dialled back by alice, knows he is reachable.
      yield* eventually(Effect.flatMap(statusOf(west, bob), (status) =>
        status.reachability === "Public" ? Effect.void : Effect.fail(`bob's reachability is ${status.reachability}`)), "20 seconds", "1 second")
      // Public nodes route to each other (their dial-backs succeed), never to the NAT'd nodes: theirs were dropped
      // by the routers (no port forwarded), so carol and dave are in nobody's routing table (client mode).
      const [alicePeers, bobPeers] = yield* Effect.all([
        peerchatJson(east, ["peers", "--data-dir", alice.dataDir]),
        peerchatJson(west, ["peers", "--data-dir", bob.dataDir])
      ], { concurrency: "unbounded" })
      expect((alicePeers as Peers).map((peer) => peer.nodeId)).toEqual([bob.ready.nodeId])
      expect((bobPeers as Peers).map((peer) => peer.nodeId)).toEqual([alice.ready.nodeId])

      // A public user reaches a NAT'd one; then the NAT'd users, both ways.
      const bobToCarol = yield* sendAndWait(west, bob, "carol", "hello carol, from the internet")
      yield* phase(`bob → carol: ${bobToCarol.stdout} ${bobToCarol.stderr}`)
      expect(bobToCarol.code).toBe(0)
      expect(JSON.parse(bobToCarol.stdout)).toMatchObject({ to: "carol", status: "delivered" })
      const [carolToDave, daveToCarol] = yield* Effect.all([
        sendAndWait(laptop, carol, "dave", "hi dave, from behind my NAT"),
        sendAndWait(phone, dave, "carol", "hi carol, from behind mine")
      ], { concurrency: "unbounded" })
      yield* phase(`carol → dave: ${carolToDave.stdout} ${carolToDave.stderr}; dave → carol: ${daveToCarol.stdout} ${daveToCarol.stderr}`)
      expect(JSON.parse(carolToDave.stdout)).toMatchObject({ to: "dave", status: "delivered" })
      expect(JSON.parse(daveToCarol.stdout)).toMatchObject({ to: "carol", status: "delivered" })

      // The messages went through circuits at the public nodes (mail left offline would wait for a pull).
      const [aliceAfter, bobAfter] = yield* Effect.all([statusOf(east, alice), statusOf(west, bob)], { concurrency: "unbounded" })
      yield* Effect.logInfo(`circuits at the relays: alice ${JSON.stringify(aliceAfter.circuits)}, bob ${JSON.stringify(bobAfter.circuits)}`)
      expect((aliceAfter.circuits?.circuitsRelayed ?? 0) + (bobAfter.circuits?.circuitsRelayed ?? 0)).toBeGreaterThanOrEqual(2)
      // Each one's history holds what the other wrote.
      const [carolHistory, daveHistory] = yield* Effect.all([
        peerchatJson(laptop, ["history", "dave", "--data-dir", carol.dataDir]),
        peerchatJson(phone, ["history", "carol", "--data-dir", dave.dataDir])
      ], { concurrency: "unbounded" })
      expect(JSON.stringify(carolHistory)).toContain("hi carol, from behind mine")
      expect(JSON.stringify(daveHistory)).toContain("hi dave, from behind my NAT")
      // Offline delivery across NATs: carol goes offline; dave's next message waits with carol's mailbox
      // relays (public nodes: a NAT'd node holds no mail); carol comes back behind her NAT and pulls it.
      yield* carol.stop
      const whileAway = yield* peerchat(phone, ["send", "carol", "while you were away", "--wait", "--timeout", "3s", "--json", "--data-dir", dave.dataDir])
      yield* phase(`dave → carol (offline): ${whileAway.stdout.trim()} ${whileAway.stderr.trim()}`)
      expect(whileAway.code).toBe(2)
      expect(JSON.parse(whileAway.stdout)).toMatchObject({ status: expect.stringMatching(/^(stored-offline|queued)$/) })
      const carolAgain = yield* startPeerchat(laptop, carol.dataDir, ["--bootstrap", alice.ready.listen])
      yield* eventually(
        Effect.flatMap(peerchatJson(laptop, ["history", "dave", "--data-dir", carolAgain.dataDir]), (history) =>
          JSON.stringify(history).includes("while you were away") ? Effect.void : Effect.fail("not pulled yet")),
        "60 seconds",
        "1 second"
      )
      yield* phase("carol, back behind her NAT, pulled the message left while she was away")

      // Neither router let a single connection in: everything went out through the NATs.
      expect(yield* home.droppedInbound).toBeGreaterThan(0)
    }), { timeout: 240_000 })
})
