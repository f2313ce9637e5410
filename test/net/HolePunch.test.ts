/**
 * Every router kind, and the route a conversation ends on, with real
 * `peerchat start` processes on the test internet: two public nodes (alice,
 * the bootstrap; bob, who writes to everyone) and one user per kind of
 * place: pat on a public host (direct), mia behind a router that maps a port
 * (UPnP/NAT-PMP: mapped, hence direct), carol and erin behind
 * port-preserving NATs, dave behind a port-randomizing ("symmetric") NAT,
 * frank behind a firewall without NAT. A user behind a router with no
 * mapping is reached through a relay first; the sender then asks the
 * recipient, through that circuit, to dial it back directly while it dials
 * the recipient (a simultaneous TCP open from ports they told each other, to
 * the hosts the relay saw). Where both routers keep a connection's source
 * port, the next message goes direct and the relays copy none of it; behind
 * a symmetric NAT the punch fails and the conversation stays on the relay.
 * The test logs, per kind: the time from the node's start until the record
 * a sender resolves lists its route, the time to the first delivered
 * message, and the route the conversation ends on (a table for
 * docs/user-guide.md).
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { spawnSync } from "node:child_process"
import { join } from "node:path"
import { scopedTempDir } from "../support/tempDir.js"
import { canCreateNamespaces } from "./Netns.js"
import { type HostNode, peerchat, peerchatJson, startPeerchat } from "./Peerchat.js"
import { eventually, type Host, makeNetwork } from "./Topology.js"

const skip = canCreateNamespaces()
const title = (name: string) => (skip === undefined ? name : `${name} (skipped: ${skip})`)
/** The mapping router runs miniupnpd (`.ci/run` installs it); without it, that row is left out. */
const hasMiniupnpd = spawnSync("miniupnpd", ["--version"]).error === undefined

/** `peerchat status --json`, the fields used here. */
interface StatusAnswer {
  readonly reachability: string
  readonly connections: { readonly bytesRelayed?: number }
  readonly portMapping?: { readonly _tag: string } | null
  readonly circuits?: {
    readonly relays: ReadonlyArray<string>
    readonly holePunches?: { readonly succeeded: number; readonly failed: number; readonly answered: number }
  }
}

/** A user on a host, the node it runs, and when that node was started. */
interface User {
  readonly name: string
  readonly host: Host
  readonly node: HostNode
  readonly startedAt: number
}

/** The route a conversation ends on. */
type Route = "direct" | "mapped" | "hole-punched" | "relayed"

const statusOf = (user: User) =>
  Effect.map(peerchatJson(user.host, ["status", "--data-dir", user.node.dataDir]), (status) => status as StatusAnswer)

/** `peerchat send --wait`, which must end delivered; how long it took. */
const deliver = (from: User, to: User, text: string) =>
  Effect.gen(function*() {
    const started = Date.now()
    const outcome = yield* peerchat(from.host, ["send", to.name, text, "--wait", "--timeout", "20s", "--json", "--data-dir", from.node.dataDir])
    expect(
      outcome.code,
      `${from.name} → ${to.name}: ${outcome.stdout} ${outcome.stderr}\n${from.name}'s log:\n` +
        `${from.node.messages.slice(-25).join("\n")}\n${to.name}'s log:\n${to.node.messages.slice(-25).join("\n")}`
    ).toBe(0)
    expect(JSON.parse(outcome.stdout)).toMatchObject({ to: to.name, status: "delivered" })
    return Date.now() - started
  })

describe.skipIf(skip !== undefined)(title("every router kind, and the route a conversation ends on"), () => {
  it.scopedLive("public and mapped users are reached directly; port-preserving NATs and firewalls are punched through; a symmetric NAT stays on the relay", () =>
    Effect.gen(function*() {
      const began = Date.now()
      const phase = (what: string) => Effect.logInfo(`+${((Date.now() - began) / 1000).toFixed(1)} s: ${what}`)
      const net = yield* makeNetwork
      const [east, west, north] = [yield* net.addPublicHost("east"), yield* net.addPublicHost("west"), yield* net.addPublicHost("north")]
      const root = yield* scopedTempDir("routes")
      const alice = yield* startPeerchat(east, join(root, "alice"))
      const bootstrap = ["--bootstrap", alice.ready.listen]
      const start = (name: string, host: Effect.Effect<Host, unknown>) =>
        Effect.gen(function*() {
          const at = yield* host
          const startedAt = Date.now()
          const node = yield* startPeerchat(at, join(root, name), bootstrap)
          return { name, host: at, node, startedAt } satisfies User
        })
      const homeHost = (label: string, kind: Parameters<typeof net.addHome>[1]) =>
        Effect.flatMap(net.addHome(label, kind), (home) => home.addHost(`${label}pc`))
      const [bob, pat, carol, erin, dave, frank, ...mapped] = yield* Effect.all([
        start("bob", Effect.succeed(west)),
        start("pat", Effect.succeed(north)),
        start("carol", homeHost("home", "port-preserving-nat")),
        start("erin", homeHost("house", "port-preserving-nat")),
        start("dave", homeHost("flat", "symmetric-nat")),
        start("frank", homeHost("office", "firewall")),
        ...(hasMiniupnpd ? [start("mia", homeHost("den", "upnp-igd"))] : [])
      ], { concurrency: "unbounded" })
      const mia = mapped[0]
      const users = [bob, pat, carol, erin, dave, frank, ...mapped]
      yield* Effect.forEach(users, (user) => peerchatJson(user.host, ["register", user.name, "--data-dir", user.node.dataDir]), {
        concurrency: "unbounded"
      })

      // Each recipient's node finds out how it can be reached and publishes that route: its own (or
      // mapped) address once peers dialled it back, or relays once they could not.
      const expectedReach: ReadonlyArray<readonly [User, "Public" | "Private"]> = [
        [pat, "Public"],
        [carol, "Private"],
        [erin, "Private"],
        [dave, "Private"],
        [frank, "Private"],
        ...(mia === undefined ? [] : [[mia, "Public"] as const])
      ]
      const routeAfter = new Map<string, number>()
      yield* Effect.forEach(expectedReach, ([user, reach]) =>
        Effect.gen(function*() {
          yield* eventually(
            Effect.flatMap(statusOf(user), (status) =>
              status.reachability === reach && (reach === "Public" || (status.circuits?.relays.length ?? 0) > 0)
                ? Effect.void
                : Effect.fail(
                  `${user.name}: ${status.reachability}, relays ${JSON.stringify(status.circuits?.relays)}; its log:\n` +
                    user.node.messages.slice(-30).join("\n")
                )),
            "120 seconds",
            "500 millis"
          )
          // And the record others resolve says so (a sender that found an older record would dial an
          // address nobody can reach, and leave the message with the mailbox).
          yield* eventually(
            Effect.flatMap(peerchatJson(bob.host, ["whois", user.name, "--data-dir", bob.node.dataDir]), (answer) => {
              const record = answer as { readonly addresses: ReadonlyArray<string>; readonly relays?: ReadonlyArray<string> }
              const listsRoute = reach === "Public"
                ? record.addresses.length > 0 && (record.relays ?? []).length === 0
                : record.addresses.length === 0 && (record.relays ?? []).length > 0
              return listsRoute ? Effect.void : Effect.fail(`${user.name}'s record as bob resolves it: ${JSON.stringify(record)}`)
            }),
            "60 seconds",
            "500 millis"
          )
          routeAfter.set(user.name, Date.now() - user.startedAt)
        }), { concurrency: "unbounded" })
      yield* phase(`every node knows how it is reached: ${[...routeAfter].map(([name, ms]) => `${name} ${ms} ms`).join(", ")} after its start`)
      // Every public node relays (the mapped one too, once public).
      const relays: ReadonlyArray<User> = [{ name: "alice", host: east, node: alice, startedAt: began }, bob, pat, ...mapped]
      const relayedBytes = Effect.map(
        Effect.forEach(relays, statusOf, { concurrency: "unbounded" }),
        (statuses) => statuses.reduce((sum, status) => sum + (status.connections.bytesRelayed ?? 0), 0)
      )

      /**
       * A conversation from `from` to `to`: the first message (through a
       * relay when `to` cannot be dialled), the punch that follows it (its
       * outcome as `from` logs it), and a second, long message: the relays
       * copy none of it unless the conversation stayed on a relay.
       */
      const converse = (from: User, to: User) =>
        Effect.gen(function*() {
          const toStatus = yield* statusOf(to)
          const firstAt = Date.now()
          const firstMs = yield* deliver(from, to, `hello ${to.name}, from ${from.name}`)
          let punchedMs: number | undefined = undefined
          let punched = false
          if (toStatus.reachability === "Private") {
            const prefix = to.node.ready.nodeId.slice(0, 12)
            const outcome = yield* from.node.logged(new RegExp(`(reaching|no direct connection to) ${prefix}`), "30 seconds")
            punched = outcome.startsWith("reaching")
            punchedMs = Date.now() - firstAt
          }
          const before = yield* relayedBytes
          const long = `${"a long message that no relay should copy. ".repeat(200)}(${to.name})`
          const secondMs = yield* deliver(from, to, long)
          const copied = (yield* relayedBytes) - before
          const route: Route = toStatus.reachability === "Public"
            ? toStatus.portMapping?._tag === "Mapped" ? "mapped" : "direct"
            : punched
            ? "hole-punched"
            : "relayed"
          yield* phase(`${from.name} → ${to.name}: ${route}; first message delivered in ${firstMs} ms, ` +
            `second (${long.length} characters) in ${secondMs} ms, relays copied ${copied} bytes of it` +
            (punchedMs === undefined ? "" : `; the punch ended ${(punchedMs / 1000).toFixed(1)} s after the first send`))
          return { route, copied, length: long.length }
        })

      // From a public node to every kind of place.
      const toPublic = yield* converse(bob, pat)
      expect(toPublic.route).toBe("direct")
      if (mia !== undefined) {
        const toMapped = yield* converse(bob, mia)
        expect(toMapped.route).toBe("mapped")
        expect(toMapped.copied).toBeLessThan(toMapped.length)
      }
      const toPortPreserving = yield* converse(bob, carol)
      expect(toPortPreserving.route).toBe("hole-punched")
      expect(toPortPreserving.copied).toBeLessThan(toPortPreserving.length)
      const toFirewall = yield* converse(bob, frank)
      expect(toFirewall.route).toBe("hole-punched")
      const toSymmetric = yield* converse(bob, dave)
      expect(toSymmetric.route).toBe("relayed")
      expect(toSymmetric.copied).toBeGreaterThan(toSymmetric.length)
      // Between two homes.
      const natToNat = yield* converse(carol, erin)
      expect(natToNat.route).toBe("hole-punched")
      expect(natToNat.copied).toBeLessThan(natToNat.length)
      const natToFirewall = yield* converse(erin, frank)
      expect(natToFirewall.route).toBe("hole-punched")
      const natToSymmetric = yield* converse(carol, dave)
      expect(natToSymmetric.route).toBe("relayed")
      expect(natToSymmetric.copied).toBeGreaterThan(natToSymmetric.length)

      // The counts in status, and a recipient's history.
      const [carolStatus, erinStatus] = yield* Effect.all([statusOf(carol), statusOf(erin)], { concurrency: "unbounded" })
      expect(carolStatus.circuits?.holePunches).toMatchObject({ succeeded: 1, failed: 1 })
      expect(erinStatus.circuits?.holePunches?.answered).toBeGreaterThanOrEqual(1)
      const erinHistory = yield* peerchatJson(erin.host, ["history", "carol", "--data-dir", erin.node.dataDir])
      expect(JSON.stringify(erinHistory)).toContain("no relay should copy")
      expect(JSON.stringify(erinHistory)).toContain("hello erin, from carol")
    }), { timeout: 300_000 })
})
