/**
 * The test internet behaves like the internet it models: public hosts reach
 * each other; hosts at home reach out, seen at their router's public address
 * (port kept by the port-preserving NAT, a new port per connection by the
 * symmetric one, their own address through the firewall); nothing reaches a
 * home uninvited; and nothing of a network outlives its scope.
 */
import { describe, expect, it, layer } from "@effect/vitest"
import { Cause, Context, Effect, Exit, Layer } from "effect"
import { spawnSync } from "node:child_process"
import { listNamespaces, listRootInterfaces, run, sweepLeftovers, TAG, canCreateNamespaces } from "./Netns.js"
import { type DialResult, type Endpoint, tcpDial, tcpServer, type TcpServer } from "./Probe.js"
import { type Home, type Host, makeNetwork } from "./Topology.js"

const skip = canCreateNamespaces()
const title = (name: string) => (skip === undefined ? name : `${name} (skipped: ${skip})`)
if (skip !== undefined) console.warn(`test/net: skipping the tests on network namespaces: ${skip}`)

interface WorldShape {
  readonly east: Host
  readonly west: Host
  readonly eastServer: TcpServer
  readonly westServer: TcpServer
  readonly natted: Home
  readonly laptop: Host
  readonly symmetric: Home
  readonly phone: Host
  readonly office: Home
  readonly desktop: Host
}
class World extends Context.Tag("test/net/World")<World, WorldShape>() {}

/** Two public hosts with probe servers, and one home of each kind with one host. */
const world = Layer.scoped(
  World,
  Effect.gen(function*() {
    const net = yield* makeNetwork
    const east = yield* net.addPublicHost("east")
    const west = yield* net.addPublicHost("west")
    const natted = yield* net.addHome("natted", "port-preserving-nat")
    const laptop = yield* natted.addHost("laptop")
    const symmetric = yield* net.addHome("symmetric", "symmetric-nat")
    const phone = yield* symmetric.addHost("phone")
    const office = yield* net.addHome("office", "firewall")
    const desktop = yield* office.addHost("desktop")
    const eastServer = yield* tcpServer(east)
    const westServer = yield* tcpServer(west)
    yield* Effect.logInfo(
      `test internet ${net.prefix}: east ${east.address}, west ${west.address}; ` +
        `natted ${natted.router.address} (LAN ${natted.subnet}, laptop ${laptop.address}); ` +
        `symmetric ${symmetric.router.address} (LAN ${symmetric.subnet}, phone ${phone.address}); ` +
        `office ${office.router.address} (LAN ${office.subnet}, desktop ${desktop.address})`
    )
    return { east, west, eastServer, westServer, natted, laptop, symmetric, phone, office, desktop }
  })
)

const at = (server: TcpServer): Endpoint => ({ address: server.host.address, port: server.port })

/** Expects the dial to have connected and returns what each side saw. */
const connected = (result: DialResult) => {
  if (!result.ok) expect.fail(`expected a connection, got ${result.error}`)
  return result
}

/** Dials `server` from `from` and returns what the client found and what the server logged for that connection. */
const dial = (from: Host, server: TcpServer, options: { readonly localPort?: number } = {}) =>
  Effect.gen(function*() {
    const index = server.connections.length
    const result = connected(yield* tcpDial(from, at(server), options))
    const logged = yield* server.connection(index)
    yield* Effect.logInfo(`${server.host.label} saw a connection from ${logged.address}:${logged.port} (${from.label} bound ${result.local.address}:${result.local.port})`)
    expect(logged).toEqual(result.seen)
    return result
  })

describe.skipIf(skip !== undefined)(title("a test internet of network namespaces"), () => {
  layer(world, { excludeTestServices: true, timeout: "30 seconds" })((it) => {
    it.effect("public hosts connect to each other, both ways, from their own addresses", () =>
      Effect.gen(function*() {
        const { east, eastServer, west, westServer } = yield* World
        expect(east.address.split(".").slice(0, 3)).not.toEqual(west.address.split(".").slice(0, 3))
        const there = yield* dial(east, westServer)
        expect(there.seen).toEqual(there.local)
        expect(there.seen.address).toBe(east.address)
        const back = yield* dial(west, eastServer)
        expect(back.seen).toEqual({ address: west.address, port: back.local.port })
      }))

    it.effect("port-preserving NAT: a home host is seen at its router's address, from the port it bound, for every destination", () =>
      Effect.gen(function*() {
        const { eastServer, laptop, natted, westServer } = yield* World
        expect(laptop.address).toMatch(/^100\.64\.\d+\.\d+$/)
        const first = yield* dial(laptop, eastServer)
        expect(first.local.address).toBe(laptop.address)
        expect(first.seen).toEqual({ address: natted.router.address, port: first.local.port })
        // The same local port to another destination keeps the same public port (endpoint-independent mapping).
        const second = yield* dial(laptop, westServer, { localPort: first.local.port })
        expect(second.seen).toEqual({ address: natted.router.address, port: first.local.port })
      }))

    it.effect("symmetric NAT: a home host is seen at its router's address, from a new random port per connection", () =>
      Effect.gen(function*() {
        const { eastServer, phone, symmetric, westServer } = yield* World
        const first = yield* dial(phone, eastServer)
        expect(first.seen.address).toBe(symmetric.router.address)
        expect(first.seen.port).not.toBe(first.local.port)
        // The same local port to another destination gets yet another public port.
        const second = yield* dial(phone, westServer, { localPort: first.local.port })
        expect(second.seen.address).toBe(symmetric.router.address)
        expect(second.seen.port).not.toBe(first.local.port)
        expect(second.seen.port).not.toBe(first.seen.port)
      }))

    it.effect("firewall without NAT: a home host reaches out from its own public address", () =>
      Effect.gen(function*() {
        const { desktop, eastServer, office } = yield* World
        expect(desktop.publicAddress).toBe(desktop.address)
        expect(desktop.address).not.toBe(office.router.address)
        const out = yield* dial(desktop, eastServer)
        expect(out.seen).toEqual(out.local)
        expect(out.seen.address).toBe(desktop.address)
      }))

    it.scoped("nothing reaches a home uninvited: not its private address, not its router's, not a firewalled public one", () =>
      Effect.gen(function*() {
        const { desktop, east, laptop, natted, office, phone, symmetric } = yield* World
        // The three homes at once: each unanswered dial waits out its 1 s.
        yield* Effect.forEach([[natted, laptop], [symmetric, phone], [office, desktop]] as const, ([home, host]) =>
          Effect.gen(function*() {
            const server = yield* tcpServer(host)
            // The server does listen: its own router, on the LAN side, gets through.
            yield* dial(home.router, server)
            const dropsBefore = yield* home.droppedInbound
            const [direct, viaRouter] = yield* Effect.all([
              tcpDial(east, at(server), { timeout: "1 second" }),
              tcpDial(east, { address: home.router.address, port: server.port }, { timeout: "1 second" })
            ], { concurrency: 2 })
            yield* Effect.logInfo(
              `${home.kind}: ${east.label} → ${host.label} ${host.address}:${server.port}: ${JSON.stringify(direct)}; ` +
                `→ router ${home.router.address}:${server.port}: ${JSON.stringify(viaRouter)}`
            )
            if (home.kind === "firewall") {
              // A public address: routed to the router, which drops the new connection.
              expect(direct).toEqual({ ok: false, error: "timeout" })
            } else {
              // A private address: the internet has no route to it at all.
              expect(direct).toEqual({ ok: false, error: "ENETUNREACH" })
            }
            // The router's own address: no port is forwarded, and it drops rather than refuses.
            expect(viaRouter).toEqual({ ok: false, error: "timeout" })
            expect(yield* home.droppedInbound).toBeGreaterThan(dropsBefore)
            // Only the router's LAN-side dial reached the server, none from the internet.
            expect(server.connections.map((seen) => seen.address)).toEqual([home.gateway])
          }), { concurrency: "unbounded", discard: true })
      }))
  })

  it.live("deletes every namespace of a network when its scope closes, also when the test fails", () =>
    Effect.gen(function*() {
      let prefix = ""
      let made: ReadonlyArray<string> = []
      let during: ReadonlyArray<string> = []
      const outcome = yield* Effect.exit(Effect.scoped(Effect.gen(function*() {
        const net = yield* makeNetwork
        prefix = net.prefix
        const host = yield* net.addPublicHost("solo")
        const home = yield* net.addHome("flat", "port-preserving-nat")
        yield* home.addHost("tenant")
        // A process still running inside when the scope closes.
        yield* tcpServer(host)
        made = net.namespaces()
        during = yield* listNamespaces
        return yield* Effect.fail("the test failed")
      })))
      expect(Exit.isFailure(outcome) ? Cause.squash(outcome.cause) : "succeeded").toBe("the test failed")
      expect(prefix).toMatch(new RegExp(`^${TAG}[0-9a-z]{6,}$`))
      // The internet switch, solo, flat's router and home switch, tenant.
      expect(made).toHaveLength(5)
      expect(made.every((name) => name.startsWith(`${prefix}-`))).toBe(true)
      expect(during).toEqual(expect.arrayContaining([...made]))
      const ours = (names: ReadonlyArray<string>) => names.filter((name) => name.startsWith(`${prefix}-`))
      expect(ours(yield* listNamespaces)).toEqual([])
      expect(ours(yield* listRootInterfaces)).toEqual([])
      // Interfaces were never made in the root namespace in the first place.
      expect((yield* listRootInterfaces).filter((name) => name.startsWith(TAG))).toEqual([])
    }))

  it.scopedLive("removes what a crashed run left, and nothing of a live one", () =>
    Effect.gen(function*() {
      // A process that has exited: its pid runs no more, as after a crash.
      const gone = spawnSync(process.execPath, ["-e", "0"])
      const leftover = `${TAG}${gone.pid.toString(36).padStart(5, "0")}1-leftover`
      const added = yield* run("ip", ["netns", "add", leftover])
      expect(added.code).toBe(0)
      const net = yield* makeNetwork // sweeps first
      expect(yield* listNamespaces).not.toContain(leftover)
      yield* net.addPublicHost("alive")
      // A sweep now (as another test file's network would do) leaves this live network alone.
      expect(yield* sweepLeftovers).toEqual([])
      expect(yield* listNamespaces).toEqual(expect.arrayContaining([...net.namespaces()]))
    }))
})
