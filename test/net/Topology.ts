/**
 * A small internet of Linux network namespaces, for tests and benchmarks that
 * run real `peerchat` processes on distinct hosts behind different routers.
 *
 *     internet switch (a bridge in its own namespace)
 *       ├── public hosts     198.51.100.10, 203.0.113.10, 198.51.100.11, …  (alternating /24s)
 *       ├── router "home"    WAN 203.0.113.100 ── home switch ── hosts 100.64.1.2, 100.64.1.3, …  (NAT)
 *       ├── router "office"  WAN 198.51.100.101 ── home switch ── hosts 198.51.100.130, …  (firewall: a public /28)
 *       └── router "den"     WAN 203.0.113.101 ── home switch ── hosts 100.64.2.2, …  (NAT + miniupnpd: port mappings)
 *
 * - The internet is one layer-2 segment: every namespace on it (public hosts,
 *   routers' WAN sides) has on-link routes for the public ranges
 *   198.51.100.0/24 and 203.0.113.0/24 and nothing else, so any public
 *   address is one ARP away and everything else (100.64.0.0/10 included) has
 *   no route: connecting to a private address from the internet fails at
 *   once with ENETUNREACH, as a packet to such an address would go nowhere.
 *   Nodes keep at most 2 contacts per /24, so public hosts alternate between
 *   the two ranges.
 * - A home is a router namespace (interfaces `wan` on the internet switch and
 *   `lan` on the home switch, IP forwarding on, an nftables ruleset by kind)
 *   and a home switch namespace; its hosts sit on the home switch with a
 *   default route via the router. NAT homes use 100.64.N.0/24 (router
 *   100.64.N.1); firewall homes get a public /28 from x.128/25 of a public
 *   range, which the router answers ARP for on its WAN side (proxy ARP), the
 *   way an ISP routes a customer's prefix to the customer's router.
 * - Hosts have one interface `eth0` and loopback up (the control API of a
 *   node listens on 127.0.0.1 inside its host).
 *
 * Everything lives inside namespaces made here: no address, route or
 * interface is ever added to the root namespace, and nothing routes out of
 * the test network. Interfaces are created directly inside their namespaces
 * (`ip link add … netns A type veth peer … netns B`), so their short fixed
 * names (`eth0`, `wan`, `lan`, `br0`, `p<N>`) never meet the root namespace's,
 * and deleting the namespaces deletes them. Every namespace name starts with
 * the network's prefix (see `Netns.ts`); the network's scope deletes them all
 * when it closes, whether the test passed, failed or was interrupted, after
 * killing any process still running inside them.
 */
import { Duration, Effect, Exit, Scope } from "effect"
import { randomUUID } from "node:crypto"
import { writeFile } from "node:fs/promises"
import { join } from "node:path"
import { createInterface } from "node:readline"
import { scopedTempDir } from "../support/tempDir.js"
import {
  deleteNamespace,
  execOk,
  freshPrefix,
  type InNamespace,
  NetError,
  runOk,
  spawnIn,
  sweepLeftovers
} from "./Netns.js"

/**
 * The kinds of home router.
 *
 * - `port-preserving-nat`: masquerade (source NAT to the WAN address) that
 *   keeps the source port when it is free, so one internal address and port
 *   maps to the same public port for every destination (the mapping a hole
 *   puncher hopes for); unsolicited inbound is dropped, and replies pass only
 *   from the exact address and port a connection went to (Linux conntrack).
 * - `symmetric-nat`: masquerade `fully-random`: every connection gets a new
 *   random public port, so the port a peer saw cannot be reused by another.
 * - `firewall`: no NAT: the LAN has public addresses; connections out and
 *   their replies pass, new connections in are dropped.
 *
 * - `upnp-igd`: `port-preserving-nat` whose router also runs `miniupnpd`
 *   (Debian's `miniupnpd` 2.3.1 with its nftables backend, installed by
 *   `.ci/run`), which grants port mappings (UPnP IGD, NAT-PMP and PCP) to LAN
 *   hosts: a mapping adds a DNAT rule to chain `prerouting_miniupnpd` and an
 *   accept rule to chain `miniupnpd`, which our prerouting and forward chains
 *   jump to. By default it grants ports 1024-65535 to the LAN's own hosts
 *   (`secure_mode`); `portMapping: "refuse"` makes a router that refuses
 *   every request (a miniupnpd `deny` rule would not do: it answers a host no
 *   rule allows with silence, and a port no rule allows only after trying
 *   all 65535 outside ports); `natPmp: false` turns its NAT-PMP/PCP off, leaving
 *   UPnP IGD only. Its outside address: miniupnpd 2.3.1 refuses to map on a WAN
 *   address in a reserved range — the documentation ranges of this internet
 *   included — whether on the interface or given as `ext_ip` (it assumes a
 *   second NAT upstream), and has no `ext_allow_private_ipv4` yet. What it
 *   does accept is an address learnt by STUN from an unrestricted ("1:1")
 *   NAT, so each such router runs a minimal STUN responder of its own on its
 *   WAN address (`STUN_RESPONDER`): miniupnpd asks it, hears its own address
 *   back on every port, and maps on it.
 */
export type RouterKind = "port-preserving-nat" | "symmetric-nat" | "firewall" | "upnp-igd"

/** The public /24s of the test internet (documentation ranges, RFC 5737). */
export const INTERNET_RANGES = ["198.51.100.0/24", "203.0.113.0/24"] as const

const RANGE_PREFIXES = ["198.51.100", "203.0.113"] as const

/** A machine: one namespace with one interface. */
export interface Host extends InNamespace {
  readonly label: string
  /** The namespace's name: the network's prefix, a dash and the label. */
  readonly namespace: string
  /** The address of its interface (for a router: the WAN address). */
  readonly address: string
  /** The address the internet sees it at: its own, or its router's WAN address behind NAT. */
  readonly publicAddress: string
}

/** A home: a router, a home switch and the hosts on it. */
export interface Home {
  readonly label: string
  readonly kind: RouterKind
  /** The router; its `address` is its WAN (public) address. */
  readonly router: Host
  /** The router's LAN address: the hosts' default gateway. */
  readonly gateway: string
  /** The LAN, as CIDR. */
  readonly subnet: string
  /** The nftables ruleset the router runs (as `nft -f` reads it). */
  readonly ruleset: string
  /** Adds a host on the home LAN (next free address, default route via the router). */
  readonly addHost: (label: string) => Effect.Effect<Host, NetError>
  /** Packets from the WAN side the router has dropped since it was made (unsolicited inbound, in and through it). */
  readonly droppedInbound: Effect.Effect<number, NetError>
  /**
   * The outside TCP ports the router forwards now, each with the LAN host and
   * port it forwards to (`upnp-igd`: the mappings its miniupnpd holds, read
   * from its DNAT rules; always empty for the other kinds).
   */
  readonly forwardedPorts: Effect.Effect<ReadonlyArray<{ readonly port: number; readonly to: string }>, NetError>
  /** What the router's daemons logged so far (`upnp-igd`: miniupnpd's log; empty for the other kinds), to explain a failure. */
  readonly routerLog: () => ReadonlyArray<string>
}

/**
 * How a `upnp-igd` router answers mapping requests: "allow" grants LAN hosts
 * ports 1024-65535; "refuse" refuses every request, as a router that learnt
 * it sits behind a port-changing NAT does (see `RouterKind`).
 */
export type PortMappingPolicy = "allow" | "refuse"

/** How to make a home: its WAN address (default: the next free one), and how a `upnp-igd` router answers (default "allow"). */
export interface HomeOptions {
  readonly wanAddress?: string
  readonly portMapping?: PortMappingPolicy
  /** Whether a `upnp-igd` router answers NAT-PMP/PCP too (default true); false leaves UPnP IGD only. */
  readonly natPmp?: boolean
}

/**
 * A minimal STUN responder (RFC 5389 Binding, answered with the
 * XOR-MAPPED-ADDRESS of the request's source), run with `node -e` on a
 * `upnp-igd` router's WAN address, port 3478: miniupnpd asks it for its
 * outside address (see `RouterKind`). It ignores CHANGE-REQUEST and answers
 * from where it was asked, which miniupnpd reads as an unrestricted NAT —
 * unless its second argument shifts the ports it reports, which miniupnpd
 * reads as a port-changing NAT upstream, and then refuses every mapping.
 * Prints "listening" once bound.
 */
export const STUN_RESPONDER = `
const socket = require("node:dgram").createSocket("udp4")
socket.on("message", (request, from) => {
  if (request.length < 20 || request.readUInt16BE(0) !== 0x0001) return
  const answer = Buffer.alloc(32)
  answer.writeUInt16BE(0x0101, 0)
  answer.writeUInt16BE(12, 2)
  request.copy(answer, 4, 4, 20)
  answer.writeUInt16BE(0x0020, 20)
  answer.writeUInt16BE(8, 22)
  answer.writeUInt16BE(1, 24)
  answer.writeUInt16BE(((from.port + Number(process.argv[2])) % 65536) ^ 0x2112, 26)
  const cookie = [0x21, 0x12, 0xa4, 0x42]
  from.address.split(".").forEach((byte, i) => answer.writeUInt8(Number(byte) ^ cookie[i], 28 + i))
  socket.send(answer, from.port, from.address)
})
socket.bind(3478, process.argv[1], () => console.log("listening"))
`

/** miniupnpd's configuration for a `upnp-igd` router (see `RouterKind`). */
export const miniupnpdConfig = (wan: string, subnet: string, leaseFile: string, natPmp = true): string =>
  [
    "ext_ifname=wan",
    "ext_perform_stun=yes",
    `ext_stun_host=${wan}`,
    "ext_stun_port=3478",
    "listening_ip=lan",
    "enable_upnp=yes",
    `enable_natpmp=${natPmp ? "yes" : "no"}`,
    "secure_mode=yes",
    "system_uptime=no",
    "upnp_table_name=router",
    "upnp_nat_table_name=nat",
    `uuid=${randomUUID()}`,
    `lease_file=${leaseFile}`,
    `allow 1024-65535 ${subnet} 1024-65535`,
    "deny 0-65535 0.0.0.0/0 0-65535",
    ""
  ].join("\n")

/**
 * Waits for a line matching `pattern` on `stream` of a process started with
 * `spawnIn`, for at most `within`; every line read (then and later) is
 * appended to `seen`.
 */
const awaitLine = (
  child: { readonly once: (event: "exit", listener: (code: number | null) => void) => unknown },
  stream: NodeJS.ReadableStream,
  pattern: RegExp,
  what: string,
  within: Duration.DurationInput,
  seen: Array<string> = []
): Effect.Effect<void, NetError> => {
  return Effect.async<void, NetError>((resume) => {
    const lines = createInterface({ input: stream })
    lines.on("line", (line) => {
      seen.push(line)
      if (pattern.test(line)) resume(Effect.void)
    })
    child.once("exit", (code) => resume(Effect.fail(new NetError({ message: `${what} exited with ${code}:\n${seen.join("\n")}` }))))
  }).pipe(
    Effect.timeoutFail({
      duration: within,
      onTimeout: () => new NetError({ message: `${what} did not print ${pattern} within ${Duration.format(within)}:\n${seen.join("\n")}` })
    })
  )
}

/** One test internet. */
export interface Network {
  /** The prefix of every namespace of this network (followed by `-` and a label). */
  readonly prefix: string
  /** The namespace of the internet switch. */
  readonly internet: InNamespace
  /** Adds a host on the internet: next free public address (alternating /24s), or `address` (in `INTERNET_RANGES`). */
  readonly addPublicHost: (label: string, options?: { readonly address?: string }) => Effect.Effect<Host, NetError>
  /** Adds a home behind a router of `kind`; its WAN address is the next free public one unless given. */
  readonly addHome: (label: string, kind: RouterKind, options?: HomeOptions) => Effect.Effect<Home, NetError>
  /** The namespaces made so far (all named `${prefix}-…`). */
  readonly namespaces: () => ReadonlyArray<string>
}

/**
 * The router's nftables ruleset for `kind`. The filter table is the same for
 * every kind (the firewall is the NAT routers' filter without the NAT):
 *
 *     table inet router {
 *       counter dropped_inbound { }
 *       chain input {                                          # to the router itself
 *         type filter hook input priority filter; policy drop;
 *         iifname "lo" accept
 *         ct state established,related accept
 *         iifname "lan" accept
 *         iifname "wan" counter name "dropped_inbound" drop
 *       }
 *       chain forward {                                        # through the router
 *         type filter hook forward priority filter; policy drop;
 *         ct state established,related accept
 *         iifname "lan" oifname "wan" accept
 *         iifname "wan" counter name "dropped_inbound" drop
 *       }
 *     }
 *
 * and the NAT kinds add
 *
 *     table ip nat {
 *       chain postrouting {
 *         type nat hook postrouting priority srcnat; policy accept;
 *         oifname "wan" masquerade                 # port-preserving-nat
 *         oifname "wan" masquerade fully-random    # symmetric-nat (instead)
 *       }
 *     }
 *
 * `upnp-igd` jumps to miniupnpd's chains: its forward chain has `jump
 * miniupnpd` (an empty chain miniupnpd fills) just before the drop, and its
 * NAT is `table inet nat` (the family miniupnpd's nftables backend writes
 * to) with chains `prerouting_miniupnpd` (its DNAT rules, jumped to from a
 * prerouting chain) and `postrouting_miniupnpd`, then the same masquerade.
 */
export const routerRuleset = (kind: RouterKind): string => {
  const filter = [
    "table inet router {",
    "  counter dropped_inbound {",
    "  }",
    "  chain input {",
    "    type filter hook input priority filter; policy drop;",
    "    iifname \"lo\" accept",
    "    ct state established,related accept",
    "    iifname \"lan\" accept",
    "    iifname \"wan\" counter name \"dropped_inbound\" drop",
    "  }",
    "  chain forward {",
    "    type filter hook forward priority filter; policy drop;",
    "    ct state established,related accept",
    "    iifname \"lan\" oifname \"wan\" accept",
    ...(kind === "upnp-igd" ? ["    jump miniupnpd"] : []),
    "    iifname \"wan\" counter name \"dropped_inbound\" drop",
    "  }",
    ...(kind === "upnp-igd" ? ["  chain miniupnpd {", "  }"] : []),
    "}"
  ]
  if (kind === "upnp-igd") {
    const nat = [
      "table inet nat {",
      "  chain prerouting {",
      "    type nat hook prerouting priority dstnat; policy accept;",
      "    jump prerouting_miniupnpd",
      "  }",
      "  chain prerouting_miniupnpd {",
      "  }",
      "  chain postrouting {",
      "    type nat hook postrouting priority srcnat; policy accept;",
      "    jump postrouting_miniupnpd",
      "    oifname \"wan\" masquerade",
      "  }",
      "  chain postrouting_miniupnpd {",
      "  }",
      "}"
    ]
    return [...filter, ...nat, ""].join("\n")
  }
  const masquerade = kind === "port-preserving-nat" ? "masquerade" : kind === "symmetric-nat" ? "masquerade fully-random" : undefined
  const nat = masquerade === undefined ? [] : [
    "table ip nat {",
    "  chain postrouting {",
    "    type nat hook postrouting priority srcnat; policy accept;",
    `    oifname "wan" ${masquerade}`,
    "  }",
    "}"
  ]
  return [...filter, ...nat, ""].join("\n")
}

const LABEL = /^[a-z][a-z0-9]{0,15}$/

/** Writes a sysctl inside a namespace (through /proc, which shows the writer's namespace; no `sysctl` binary needed). */
const setSysctl = (target: InNamespace, key: string, value: string) =>
  execOk(target, "sh", ["-c", `echo ${value} > /proc/sys/${key.replaceAll(".", "/")}`])

/**
 * Makes a test internet (an internet switch so far, hosts and homes are
 * added on it) and deletes all of it when the scope closes: every namespace
 * it made, after killing (SIGKILL) whatever still runs inside. First removes
 * what crashed earlier runs left (see `sweepLeftovers`).
 */
export const makeNetwork: Effect.Effect<Network, NetError, Scope.Scope> = Effect.gen(function*() {
  yield* sweepLeftovers
  const prefix = freshPrefix()
  // Daemons of routers (miniupnpd) live as long as the network; stopped before the namespaces go.
  const networkScope = yield* Effect.scope
  // A namespace is recorded before it is made, so a failure half way still deletes it.
  const made = yield* Effect.acquireRelease(
    Effect.sync((): Array<string> => []),
    (names) => Effect.forEach([...names].reverse(), deleteNamespace, { discard: true, concurrency: 8 })
  )
  const labels = new Set<string>()
  const taken = new Set<string>()

  const addNamespace = (label: string, internal = false): Effect.Effect<InNamespace, NetError> =>
    Effect.gen(function*() {
      if (!internal && !LABEL.test(label)) {
        return yield* new NetError({ message: `label "${label}": use 1 to 16 of a-z and 0-9, starting with a letter` })
      }
      if (labels.has(label)) return yield* new NetError({ message: `label "${label}" is used already in this network` })
      labels.add(label)
      const namespace = `${prefix}-${label}`
      made.push(namespace)
      yield* runOk("ip", ["netns", "add", namespace])
      yield* runOk("ip", ["-n", namespace, "link", "set", "lo", "up"])
      return { namespace }
    })

  /** A bridge `br0` in a namespace of its own; frames cross it untouched by netfilter. */
  const makeSwitch = (label: string) =>
    Effect.gen(function*() {
      const sw = yield* addNamespace(label, true)
      yield* runOk("ip", ["-n", sw.namespace, "link", "add", "br0", "type", "bridge"])
      yield* runOk("ip", ["-n", sw.namespace, "link", "set", "br0", "up"])
      // With br_netfilter loaded, bridged IPv4 would go through this namespace's (empty) ip hooks; keep it a plain switch.
      yield* Effect.ignore(setSysctl(sw, "net.bridge.bridge-nf-call-iptables", "0"))
      let ports = 0
      /** Connects `target` to the switch through a veth pair: `ifname` in the target, `p<N>` on the bridge. */
      const attach = (target: InNamespace, ifname: string) =>
        Effect.gen(function*() {
          const port = `p${++ports}`
          yield* runOk("ip", ["link", "add", ifname, "netns", target.namespace, "type", "veth", "peer", "name", port, "netns", sw.namespace])
          yield* runOk("ip", ["-n", sw.namespace, "link", "set", port, "master", "br0", "up"])
          yield* runOk("ip", ["-n", target.namespace, "link", "set", ifname, "up"])
        })
      return { ...sw, attach }
    })

  /** A public address on `ifname` with on-link routes to the whole test internet. */
  const configurePublic = (target: InNamespace, ifname: string, address: string) =>
    Effect.gen(function*() {
      yield* runOk("ip", ["-n", target.namespace, "addr", "add", `${address}/32`, "dev", ifname])
      for (const range of INTERNET_RANGES) {
        yield* runOk("ip", ["-n", target.namespace, "route", "add", range, "dev", ifname, "src", address])
      }
    })

  const claimPublic = (address: string) =>
    Effect.gen(function*() {
      const inRange = RANGE_PREFIXES.some((range) => address.startsWith(`${range}.`))
      const last = Number(address.split(".")[3])
      if (!inRange || !(last >= 1 && last <= 254)) {
        return yield* new NetError({ message: `${address} is not a host address of ${INTERNET_RANGES.join(" or ")}` })
      }
      if (taken.has(address)) return yield* new NetError({ message: `${address} is taken already in this network` })
      taken.add(address)
      return address
    })

  /** The next free address of `range` (0 or 1) from `first` to `last`, alternating ranges with `turn`. */
  const nextPublic = (turn: number, first: number, last: number) =>
    Effect.gen(function*() {
      for (let step = turn; ; step++) {
        const host = first + Math.floor(step / 2)
        if (host > last) return yield* new NetError({ message: `no free public address left between .${first} and .${last}` })
        const address = `${RANGE_PREFIXES[step % 2]}.${host}`
        if (!taken.has(address)) return yield* claimPublic(address)
      }
    })

  const internetSwitch = yield* makeSwitch("internet")
  let publicHosts = 0
  let routers = 0
  let natHomes = 0
  let firewallHomes = 0

  const addPublicHost = (label: string, options: { readonly address?: string } = {}) =>
    Effect.gen(function*() {
      // Public hosts take .10 to .99, routers' WAN sides .100 to .127; .128/25 is for firewall LANs.
      const address = options.address === undefined ? yield* nextPublic(publicHosts++, 10, 99) : yield* claimPublic(options.address)
      const host = yield* addNamespace(label)
      yield* internetSwitch.attach(host, "eth0")
      yield* configurePublic(host, "eth0", address)
      return { label, namespace: host.namespace, address, publicAddress: address } satisfies Host
    })

  const addHome = (label: string, kind: RouterKind, options: HomeOptions = {}) =>
    Effect.gen(function*() {
      const wan = options.wanAddress === undefined ? yield* nextPublic(1 + routers++, 100, 127) : yield* claimPublic(options.wanAddress)
      let subnet: string
      let gateway: string
      let firstHost: number
      let lastHost: number
      let base: string
      let prefixLength: number
      if (kind === "firewall") {
        const index = firewallHomes++
        if (index >= 16) return yield* new NetError({ message: "at most 16 firewall homes per network" })
        const low = 128 + 16 * Math.floor(index / 2)
        base = `${RANGE_PREFIXES[index % 2]}.`
        prefixLength = 28
        subnet = `${base}${low}/28`
        gateway = `${base}${low + 1}`
        firstHost = low + 2
        lastHost = low + 14
      } else {
        const index = ++natHomes
        if (index > 255) return yield* new NetError({ message: "at most 255 NAT homes per network" })
        base = `100.64.${index}.`
        prefixLength = 24
        subnet = `${base}0/24`
        gateway = `${base}1`
        firstHost = 2
        lastHost = 254
      }

      const router = yield* addNamespace(label)
      const homeSwitch = yield* makeSwitch(`${label}-lan`)
      yield* internetSwitch.attach(router, "wan")
      yield* homeSwitch.attach(router, "lan")
      yield* configurePublic(router, "wan", wan)
      yield* runOk("ip", ["-n", router.namespace, "addr", "add", `${gateway}/${prefixLength}`, "dev", "lan"])
      yield* setSysctl(router, "net.ipv4.ip_forward", "1")
      if (kind === "firewall") yield* setSysctl(router, "net.ipv4.conf.wan.proxy_arp", "1")
      const ruleset = routerRuleset(kind)
      yield* execOk(router, "nft", ["-f", "-"], { input: ruleset })
      const routerLog: Array<string> = []
      if (kind === "upnp-igd") {
        yield* Effect.gen(function*() {
          const portShift = options.portMapping === "refuse" ? "1" : "0"
          const stun = yield* spawnIn(router, process.execPath, ["-e", STUN_RESPONDER, wan, portShift])
          yield* awaitLine(stun, stun.stdout, /^listening$/, `the STUN responder of ${label}`, Duration.seconds(10))
          const dir = yield* scopedTempDir(`miniupnpd-${label}`)
          const config = join(dir, "miniupnpd.conf")
          const natPmp = options.natPmp ?? true
          yield* Effect.promise(() => writeFile(config, miniupnpdConfig(wan, subnet, join(dir, "leases"), natPmp)))
          const daemon = yield* spawnIn(router, "miniupnpd", ["-d", "-f", config, "-P", join(dir, "miniupnpd.pid")])
          // -d logs to stderr; the last line of its start is the NAT-PMP/PCP listener (without NAT-PMP, which
          // also turns PCP off: the HTTP listener, logged just before it opens its SSDP sockets).
          const started = natPmp ? /Listening for NAT-PMP\/PCP traffic/ : /HTTP listening on port/
          yield* awaitLine(daemon, daemon.stderr, started, `miniupnpd of ${label}`, Duration.seconds(15), routerLog)
        }).pipe(Scope.extend(networkScope))
      }

      let next = firstHost
      const addHost = (hostLabel: string) =>
        Effect.gen(function*() {
          if (next > lastHost) return yield* new NetError({ message: `home ${label} is full` })
          const address = `${base}${next++}`
          const host = yield* addNamespace(hostLabel)
          yield* homeSwitch.attach(host, "eth0")
          yield* runOk("ip", ["-n", host.namespace, "addr", "add", `${address}/${prefixLength}`, "dev", "eth0"])
          yield* runOk("ip", ["-n", host.namespace, "route", "add", "default", "via", gateway])
          const publicAddress = kind === "firewall" ? address : wan
          return { label: hostLabel, namespace: host.namespace, address, publicAddress } satisfies Host
        })

      const droppedInbound = Effect.map(
        execOk(router, "nft", ["-j", "list", "counter", "inet", "router", "dropped_inbound"]),
        (result) => {
          const parsed = JSON.parse(result.stdout) as { readonly nftables: ReadonlyArray<{ readonly counter?: { readonly packets: number } }> }
          return parsed.nftables.find((entry) => entry.counter !== undefined)?.counter?.packets ?? 0
        }
      )

      const forwardedPorts = kind !== "upnp-igd" ? Effect.succeed([]) : Effect.map(
        execOk(router, "nft", ["list", "chain", "inet", "nat", "prerouting_miniupnpd"]),
        (result) =>
          // miniupnpd writes raw matches: `iif "wan" @nh,72,8 0x6 th dport P dnat ip to H:P` (0x6: the IP protocol byte, TCP).
          [...result.stdout.matchAll(/@nh,72,8 0x6 th dport (\d+) dnat ip to ([0-9.]+:\d+)/g)].map((match) => ({
            port: Number(match[1]),
            to: match[2] ?? ""
          }))
      )

      return {
        label,
        kind,
        router: { label, namespace: router.namespace, address: wan, publicAddress: wan },
        gateway,
        subnet,
        ruleset,
        addHost,
        droppedInbound,
        forwardedPorts,
        routerLog: () => [...routerLog]
      } satisfies Home
    })

  return {
    prefix,
    internet: { namespace: internetSwitch.namespace },
    addPublicHost,
    addHome,
    namespaces: () => [...made]
  } satisfies Network
})

/**
 * Runs `check` again (every `interval`, default 100 ms) until it succeeds,
 * for at most `within`: for conditions other processes make true in their
 * own time (a routing table filling, a counter rising). A failed `expect`
 * counts as not yet; once the time is up, the last outcome is the result.
 */
export const eventually = <A, E, R>(
  check: Effect.Effect<A, E, R>,
  within: Duration.DurationInput,
  interval: Duration.DurationInput = Duration.millis(100)
): Effect.Effect<A, E, R> =>
  Effect.gen(function*() {
    const deadline = Date.now() + Duration.toMillis(within)
    for (;;) {
      const outcome = yield* Effect.exit(check)
      if (Exit.isSuccess(outcome) || Date.now() >= deadline) return yield* outcome
      yield* Effect.sleep(interval)
    }
  })
