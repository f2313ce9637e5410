/**
 * Port mapping on the test internet, with real `peerchat start` processes:
 * two public nodes (alice, bob) and two homes whose routers run miniupnpd
 * (router kind `upnp-igd`). In "den" the router grants mappings: carol's
 * node asks it over NAT-PMP at start, announces the router's outside address
 * and the mapped port, passes its peers' dial-backs, learns it is Public,
 * publishes that address (no relays), enters the public nodes' routing
 * tables as a DHT server, and a public user's message reaches it directly
 * (no circuit at any relay). When carol's node stops, the router's
 * forwarding rule is gone. In "loft" the router speaks UPnP IGD only (its
 * NAT-PMP/PCP is off): erin's node gets no NAT-PMP answer, finds the router
 * over SSDP, maps over SOAP, is Public with status saying "UPnP-IGD", and
 * deletes the mapping when it stops. In "flat" the router refuses every mapping: dave's
 * node starts as fast, logs the refusal, and is an ordinary node behind a NAT
 * (Private, reached through relays).
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { spawnSync } from "node:child_process"
import { join } from "node:path"
import { addressGroupOf } from "../../src/core/AddressGroup.js"
import { scopedTempDir } from "../support/tempDir.js"
import { canCreateNamespaces } from "./Netns.js"
import { type HostNode, peerchat, peerchatJson, startPeerchat } from "./Peerchat.js"
import { eventually, type Host, makeNetwork } from "./Topology.js"

const hasMiniupnpd = (): boolean => spawnSync("miniupnpd", ["--version"]).error === undefined
const skip = canCreateNamespaces() ??
  (hasMiniupnpd() ? undefined : "miniupnpd is not installed (apt-get install -y miniupnpd miniupnpd-nftables)")
const title = (name: string) => (skip === undefined ? name : `${name} (skipped: ${skip})`)

/** `peerchat whois --json`, the fields used here. */
interface WhoisAnswer {
  readonly addresses: ReadonlyArray<string>
  readonly relays?: ReadonlyArray<string>
}

/** `peerchat status --json`, the fields used here. */
interface NodeStatusAnswer {
  readonly listen: string
  readonly reachability: string
  readonly portMapping:
    | { readonly _tag: "Mapped"; readonly protocol: string; readonly external: string; readonly gateway: string }
    | { readonly _tag: "Unavailable"; readonly reason: string }
    | null
  readonly circuits?: { readonly relays: ReadonlyArray<string>; readonly circuitsRelayed: number }
}

describe.skipIf(skip !== undefined)(title("port mapping on a UPnP/NAT-PMP router"), () => {
  it.scopedLive("a node behind a router that maps a port is public and reached directly; one that refuses leaves it behind its NAT", () =>
    Effect.gen(function*() {
      const began = Date.now()
      const phase = (what: string) => Effect.logInfo(`+${((Date.now() - began) / 1000).toFixed(1)} s: ${what}`)
      const net = yield* makeNetwork
      const [east, west] = [yield* net.addPublicHost("east"), yield* net.addPublicHost("west")]
      const den = yield* net.addHome("den", "upnp-igd")
      const flat = yield* net.addHome("flat", "upnp-igd", { portMapping: "refuse" })
      // A router that speaks UPnP IGD only (NAT-PMP/PCP off): the node finds it over SSDP once NAT-PMP gets no answer.
      // Its WAN side is in alice's /24, not in bob's and carol's: a bucket holds at most two contacts of one /24
      // (IpDiversity), so with bob, carol and erin in one /24 and one bucket, carol could be kept out of alice's table.
      const loft = yield* net.addHome("loft", "upnp-igd", { natPmp: false, wanAddress: "198.51.100.120" })
      expect(addressGroupOf(loft.router.address)).not.toBe(addressGroupOf(den.router.address))
      const [desk, nook, attic] = [yield* den.addHost("desk"), yield* flat.addHost("nook"), yield* loft.addHost("attic")]
      const root = yield* scopedTempDir("port-mapping")
      yield* phase("network up, miniupnpd running in the three routers")

      /** Starts a node and measures how long until its ready line. */
      const timedStart = (host: Host, name: string, extra: ReadonlyArray<string>) =>
        Effect.gen(function*() {
          const startedAt = Date.now()
          const node = yield* startPeerchat(host, join(root, name), extra)
          return { node, readyMs: Date.now() - startedAt, startedAt }
        })
      const alice = yield* startPeerchat(east, join(root, "alice"))
      const bootstrap = ["--bootstrap", alice.ready.listen]
      const [bob, carol, dave, erin] = yield* Effect.all([
        timedStart(west, "bob", bootstrap),
        timedStart(desk, "carol", bootstrap),
        timedStart(nook, "dave", bootstrap),
        timedStart(attic, "erin", bootstrap)
      ], { concurrency: "unbounded" })
      yield* phase(`ready after: bob ${bob.readyMs} ms (public, no router asked), carol ${carol.readyMs} ms (mapped), ` +
        `dave ${dave.readyMs} ms (refused), erin ${erin.readyMs} ms (mapped over UPnP IGD)`)

      // Carol's node asked the router at start and announces the router's outside address with the mapped port.
      const mapped = yield* carol.node.logged(/^port mapping: the router at .* forwards/, "5 seconds")
      yield* phase(`carol: ${mapped}`)
      const external = `${den.router.address}:${carol.node.port}`
      expect(mapped).toContain(`the router at ${den.gateway}:5351 forwards ${external} to this node's port`)
      expect(carol.node.ready.listen).toBe(external)
      expect(yield* den.forwardedPorts).toEqual([{ port: carol.node.port, to: `${desk.address}:${carol.node.port}` }])
      // Dave's router refused (it learnt that a port-changing NAT sits upstream): logged, not fatal; the node announces its own address.
      const refused = yield* dave.node.logged(/^port mapping: /, "5 seconds")
      expect(refused).toContain(`the router at ${flat.gateway}:5351 refused (result 3`)
      expect(dave.node.ready.listen.startsWith(`${nook.address}:`)).toBe(true)
      expect(yield* flat.forwardedPorts).toEqual([])
      // Erin's router answers no NAT-PMP: her node maps over UPnP IGD (SSDP, the description, SOAP) instead.
      const upnpMapped = yield* erin.node.logged(/^port mapping: /, "5 seconds")
      yield* phase(`erin: ${upnpMapped}`)
      const erinExternal = `${loft.router.address}:${erin.node.port}`
      expect(upnpMapped).toMatch(new RegExp(`^port mapping: the router at ${loft.gateway.replaceAll(".", "\\.")}:\\d+ forwards ${erinExternal} to`))
      expect(upnpMapped).toContain("(UPnP-IGD, for 1h")
      expect(erin.node.ready.listen).toBe(erinExternal)
      expect(yield* loft.forwardedPorts).toEqual([{ port: erin.node.port, to: `${attic.address}:${erin.node.port}` }])

      yield* Effect.all([
        peerchatJson(attic, ["register", "erin", "--data-dir", erin.node.dataDir]),
        peerchatJson(west, ["register", "bob", "--data-dir", bob.node.dataDir]),
        peerchatJson(desk, ["register", "carol", "--data-dir", carol.node.dataDir]),
        peerchatJson(nook, ["register", "dave", "--data-dir", dave.node.dataDir])
      ], { concurrency: "unbounded" })
      yield* phase("bob, carol, dave and erin registered")

      const statusOf = (host: Host, node: HostNode) =>
        Effect.map(peerchatJson(host, ["status", "--data-dir", node.dataDir]), (status) => status as NodeStatusAnswer)
      // Peers dial carol back at the router's address and mapped port; the router forwards: Public.
      const carolStatus = yield* eventually(
        Effect.flatMap(statusOf(desk, carol.node), (status) =>
          status.reachability === "Public" ? Effect.succeed(status) : Effect.fail(`carol's reachability is ${status.reachability}`)),
        "60 seconds",
        "250 millis"
      )
      const publicAfterMs = Date.now() - carol.startedAt
      yield* phase(`carol is Public ${publicAfterMs} ms after her start`)
      expect(carolStatus.listen).toBe(external)
      expect(carolStatus.portMapping).toMatchObject({ _tag: "Mapped", protocol: "NAT-PMP", external, gateway: `${den.gateway}:5351` })
      const carolText = yield* peerchat(desk, ["status", "--data-dir", carol.node.dataDir])
      expect(carolText.stdout).toContain(`reach     reachable: public, through a port mapping on the router (NAT-PMP) ${external}`)

      // Her record lists the router's address and mapped port, no relays; the public nodes route to her.
      const carolRecord = yield* eventually(
        Effect.flatMap(peerchatJson(east, ["whois", "carol", "--data-dir", alice.dataDir]), (answer) => {
          const found = answer as WhoisAnswer
          return found.addresses.length === 1 ? Effect.succeed(found) : Effect.fail(`carol's record: ${JSON.stringify(found)}`)
        }),
        "30 seconds",
        "500 millis"
      )
      expect(carolRecord.addresses).toEqual([external])
      expect(carolRecord.relays ?? []).toEqual([])
      yield* eventually(
        Effect.flatMap(peerchatJson(east, ["peers", "--data-dir", alice.dataDir]), (peers) =>
          (peers as ReadonlyArray<{ readonly nodeId: string }>).some((peer) => peer.nodeId === carol.node.ready.nodeId)
            ? Effect.void
            : Effect.fail(`carol is not in alice's routing table: ${JSON.stringify(peers)}`)),
        "30 seconds",
        "500 millis"
      )

      // A public user's message reaches her directly: no circuit at either public node.
      const relayedBefore = yield* Effect.map(
        Effect.all([statusOf(east, alice), statusOf(west, bob.node)]),
        (statuses) => statuses.reduce((sum, status) => sum + (status.circuits?.circuitsRelayed ?? 0), 0)
      )
      // Nodes on public addresses never ask a router.
      expect((yield* statusOf(west, bob.node)).portMapping).toBeNull()
      const sentAt = Date.now()
      const bobToCarol = yield* peerchat(west, ["send", "carol", "hello carol, through your router", "--wait", "--timeout", "20s", "--json", "--data-dir", bob.node.dataDir])
      yield* phase(`bob → carol in ${Date.now() - sentAt} ms: ${bobToCarol.stdout.trim()} ${bobToCarol.stderr.trim()}`)
      expect(bobToCarol.code).toBe(0)
      expect(JSON.parse(bobToCarol.stdout)).toMatchObject({ to: "carol", status: "delivered" })
      const relayedAfter = yield* Effect.map(
        Effect.all([statusOf(east, alice), statusOf(west, bob.node)]),
        (statuses) => statuses.reduce((sum, status) => sum + (status.circuits?.circuitsRelayed ?? 0), 0)
      )
      expect(relayedAfter).toBe(relayedBefore)
      expect(JSON.stringify(yield* peerchatJson(desk, ["history", "bob", "--data-dir", carol.node.dataDir]))).toContain(
        "hello carol, through your router"
      )

      // Erin, mapped over UPnP IGD, is Public too, and her status says which protocol mapped.
      const erinStatus = yield* eventually(
        Effect.flatMap(statusOf(attic, erin.node), (status) =>
          status.reachability === "Public" ? Effect.succeed(status) : Effect.fail(`erin's reachability is ${status.reachability}`)),
        "60 seconds",
        "250 millis"
      )
      yield* phase(`erin is Public ${Date.now() - erin.startedAt} ms after her start`)
      expect(erinStatus.portMapping).toMatchObject({ _tag: "Mapped", protocol: "UPnP-IGD", external: erinExternal })
      const erinText = yield* peerchat(attic, ["status", "--data-dir", erin.node.dataDir])
      expect(erinText.stdout).toContain(`reach     reachable: public, through a port mapping on the router (UPnP-IGD) ${erinExternal}`)

      // Dave, whose router refused, is an ordinary node behind a NAT: Private, reached through relays.
      const daveStatus = yield* eventually(
        Effect.flatMap(statusOf(nook, dave.node), (status) =>
          status.reachability === "Private" && (status.circuits?.relays.length ?? 0) > 0
            ? Effect.succeed(status)
            : Effect.fail(`dave: ${status.reachability}, relays ${JSON.stringify(status.circuits?.relays)}`)),
        "60 seconds",
        "1 second"
      )
      expect(daveStatus.portMapping).toMatchObject({ _tag: "Unavailable", reason: expect.stringContaining("refused (result 3") })
      yield* phase("dave: Private, with relays")

      // Stopped, carol's node removes its mapping: the router forwards nothing any more.
      yield* carol.node.stop
      expect(carol.node.messages.some((message) => message.startsWith(`port mapping: removed the mapping at ${den.gateway}:5351`))).toBe(true)
      expect(yield* den.forwardedPorts).toEqual([])
      yield* phase("carol stopped; the router's forwarding rule is gone")

      // Stopped, erin's node deletes its UPnP mapping (DeletePortMapping): gone from her router too.
      yield* erin.node.stop
      expect(erin.node.messages.some((message) => message.startsWith("port mapping: removed the mapping at "))).toBe(true)
      expect(yield* loft.forwardedPorts).toEqual([])
      yield* phase("erin stopped; her router's forwarding rule is gone")
    }), { timeout: 240_000 })
})
