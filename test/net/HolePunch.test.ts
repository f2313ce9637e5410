/**
 * Hole punching across real NATs, with real `peerchat start` processes on
 * the test internet: two public nodes (alice, bob: the relays) and four
 * users who cannot be dialled, each in a home of its own: carol and erin
 * behind port-preserving NATs, dave behind a port-randomizing ("symmetric")
 * NAT, frank behind a firewall without NAT. Each first message goes through
 * a relay; the sender then asks the recipient, through that circuit, to
 * dial it back directly while it dials the recipient (a simultaneous TCP
 * open from the ports they told each other, to the hosts the relay saw).
 * Where both routers keep a connection's source port, the two SYNs open
 * both NATs and the next message goes direct: the relays copy none of it.
 * Where one router picks a new port per destination, the punch fails and
 * the conversation stays on the relay.
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

/** `peerchat status --json`, the fields used here. */
interface StatusAnswer {
  readonly reachability: string
  readonly connections: { readonly bytesRelayed?: number }
  readonly circuits?: {
    readonly relays: ReadonlyArray<string>
    readonly holePunches?: { readonly succeeded: number; readonly failed: number; readonly answered: number }
  }
}

/** A user on a host, with the node it runs. */
interface User {
  readonly name: string
  readonly host: Host
  readonly node: HostNode
}

const statusOf = (user: User) =>
  Effect.map(peerchatJson(user.host, ["status", "--data-dir", user.node.dataDir]), (status) => status as StatusAnswer)

/** `peerchat send --wait`, which must end delivered. */
const deliver = (from: User, to: User, text: string) =>
  Effect.gen(function*() {
    const outcome = yield* peerchat(from.host, ["send", to.name, text, "--wait", "--timeout", "20s", "--json", "--data-dir", from.node.dataDir])
    expect(outcome.code, `${from.name} → ${to.name}: ${outcome.stdout} ${outcome.stderr}`).toBe(0)
    expect(JSON.parse(outcome.stdout)).toMatchObject({ to: to.name, status: "delivered" })
  })

describe.skipIf(skip !== undefined)(title("hole punching across NATs"), () => {
  it.scopedLive("port-preserving NATs and a firewall are punched through (the next message goes direct); a symmetric NAT stays on the relay", () =>
    Effect.gen(function*() {
      const began = Date.now()
      const phase = (what: string) => Effect.logInfo(`+${((Date.now() - began) / 1000).toFixed(1)} s: ${what}`)
      const net = yield* makeNetwork
      const [east, west] = [yield* net.addPublicHost("east"), yield* net.addPublicHost("west")]
      const homes = {
        carol: yield* net.addHome("home", "port-preserving-nat"),
        erin: yield* net.addHome("house", "port-preserving-nat"),
        dave: yield* net.addHome("flat", "symmetric-nat"),
        frank: yield* net.addHome("office", "firewall")
      }
      const root = yield* scopedTempDir("punch")
      const alice = yield* startPeerchat(east, join(root, "alice"))
      const bootstrap = ["--bootstrap", alice.ready.listen]
      const start = (name: string, host: Host) => Effect.map(startPeerchat(host, join(root, name), bootstrap), (node): User => ({ name, host, node }))
      const [bob, carol, erin, dave, frank] = yield* Effect.all([
        start("bob", west),
        Effect.flatMap(homes.carol.addHost("laptop"), (host) => start("carol", host)),
        Effect.flatMap(homes.erin.addHost("desktop"), (host) => start("erin", host)),
        Effect.flatMap(homes.dave.addHost("phone"), (host) => start("dave", host)),
        Effect.flatMap(homes.frank.addHost("workstation"), (host) => start("frank", host))
      ], { concurrency: "unbounded" })
      const users = [bob, carol, erin, dave, frank]
      yield* Effect.forEach(users, (user) => peerchatJson(user.host, ["register", user.name, "--data-dir", user.node.dataDir]), {
        concurrency: "unbounded"
      })
      // Everyone behind a router holds relays (and its record lists them) before anyone writes.
      yield* Effect.forEach([carol, erin, dave, frank], (user) =>
        eventually(
          Effect.flatMap(statusOf(user), (status) =>
            status.reachability === "Private" && (status.circuits?.relays.length ?? 0) > 0
              ? Effect.void
              : Effect.fail(
                `${user.name}: ${status.reachability}, relays ${JSON.stringify(status.circuits?.relays)}; its log:\n` +
                  user.node.messages.slice(-30).join("\n")
              )),
          "120 seconds",
          "1 second"
        ), { concurrency: "unbounded" })
      yield* phase("six nodes; the four behind routers hold relays")
      const relays: ReadonlyArray<User> = [{ name: "alice", host: east, node: alice }, bob]
      const relayedBytes = Effect.map(
        Effect.forEach(relays, statusOf, { concurrency: "unbounded" }),
        (statuses) => statuses.reduce((sum, status) => sum + (status.connections.bytesRelayed ?? 0), 0)
      )

      /**
       * The first message from `from` to `to` goes through a relay; then
       * the punch: its outcome as `from` logs it, and (when it succeeded)
       * whether a second, long message crossed no relay.
       */
      const converse = (from: User, to: User) =>
        Effect.gen(function*() {
          const first = Date.now()
          yield* deliver(from, to, `hello ${to.name}, through a relay at first`)
          const prefix = to.node.ready.nodeId.slice(0, 12)
          const outcome = yield* from.node.logged(new RegExp(`(reaching|no direct connection to) ${prefix}`), "30 seconds")
          const punched = outcome.startsWith("reaching")
          const punchedAfter = (Date.now() - first) / 1000
          const before = yield* relayedBytes
          const long = `${"a long message that no relay should copy. ".repeat(200)}(${to.name})`
          const sent = Date.now()
          yield* deliver(from, to, long)
          const secondMs = Date.now() - sent
          const copied = (yield* relayedBytes) - before
          yield* phase(`${from.name} → ${to.name}: ${punched ? "punched" : "stayed relayed"} (${punchedAfter.toFixed(1)} s after the first send); ` +
            `second message (${long.length} characters) delivered in ${secondMs} ms, relays copied ${copied} bytes meanwhile`)
          return { punched, copied, length: long.length }
        })

      // Port-preserving NAT to port-preserving NAT: punched, and the long message bypasses the relays.
      const natToNat = yield* converse(carol, erin)
      expect(natToNat.punched).toBe(true)
      expect(natToNat.copied).toBeLessThan(natToNat.length)
      // A public node to a port-preserving NAT: punched too (the public side's kernel answers the NAT'd SYNs).
      const publicToNat = yield* converse(bob, carol)
      expect(publicToNat.punched).toBe(true)
      expect(publicToNat.copied).toBeLessThan(publicToNat.length)
      // A firewall (public addresses, new connections in dropped) is crossed the same way.
      const toFirewall = yield* converse(erin, frank)
      expect(toFirewall.punched).toBe(true)
      expect(toFirewall.copied).toBeLessThan(toFirewall.length)
      // A symmetric NAT gives the punch a fresh port: it fails, and the messages keep going through the relay.
      const toSymmetric = yield* converse(carol, dave)
      expect(toSymmetric.punched).toBe(false)
      expect(toSymmetric.copied).toBeGreaterThan(toSymmetric.length)

      // The counts in status, and the recipients' histories.
      const [carolStatus, erinStatus] = yield* Effect.all([statusOf(carol), statusOf(erin)], { concurrency: "unbounded" })
      expect(carolStatus.circuits?.holePunches).toMatchObject({ succeeded: 1, failed: 1 })
      expect(erinStatus.circuits?.holePunches?.answered).toBeGreaterThanOrEqual(1)
      const erinHistory = yield* peerchatJson(erin.host, ["history", "carol", "--data-dir", erin.node.dataDir])
      expect(JSON.stringify(erinHistory)).toContain("no relay should copy")
      expect(JSON.stringify(erinHistory)).toContain("through a relay at first")
    }), { timeout: 300_000 })
})
