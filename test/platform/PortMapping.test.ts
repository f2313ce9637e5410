/**
 * The NAT-PMP client against a gateway on loopback that this test plays: a
 * real UDP exchange. A gateway that grants gives a mapping (and gets the
 * removal when the scope closes); one that answers garbage, or garbage then
 * a refusal, or nothing, leaves the node without a mapping — a state with
 * the reason, never a failure — within the start budget.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Queue, Schema, Scope, TestClock } from "effect"
import { createSocket, type RemoteInfo, type Socket } from "node:dgram"
import { type NatPmpAnswer, NatPmpAnswerFromBytes } from "../../src/core/PortMapping.js"
import { defaultGatewayFromRouteTable, natPmp } from "../../src/platform/PortMapping.js"
import { freshLoopbackHost } from "../support/loopback.js"

/** What the played gateway sends back for one request (several datagrams, in order). */
type Reply = (request: Uint8Array) => ReadonlyArray<Uint8Array>

const answer = (value: NatPmpAnswer): Uint8Array => Schema.encodeSync(NatPmpAnswerFromBytes)(value)

/** A played gateway: where it listens, every request so far, and the same requests as they arrive. */
interface PlayedGateway {
  readonly socket: Socket
  readonly host: string
  readonly port: number
  readonly requests: Array<Array<number>>
  readonly arrivals: Queue.Queue<Array<number>>
}

/** A UDP "gateway" on a fresh loopback address and a free port, answering with `reply`; records every request. */
const playGateway = (reply: Reply) =>
  Effect.acquireRelease(
    Effect.flatMap(Queue.unbounded<Array<number>>(), (arrivals) =>
      Effect.async<PlayedGateway>((resume) => {
        const host = freshLoopbackHost()
        const socket = createSocket("udp4")
        const requests: Array<Array<number>> = []
        socket.on("message", (message: Buffer, from: RemoteInfo) => {
          const request = new Uint8Array(message)
          requests.push(Array.from(request))
          Queue.unsafeOffer(arrivals, Array.from(request))
          for (const datagram of reply(request)) socket.send(datagram, from.port, from.address)
        })
        socket.bind(0, host, () => resume(Effect.succeed({ socket, host, port: socket.address().port, requests, arrivals })))
      })),
    ({ socket }) => Effect.sync(() => socket.close())
  )

const grants: Reply = (request) =>
  request[1] === 0
    ? [answer({ _tag: "ExternalAddress", epoch: 7, address: "203.0.113.100" })]
    : [answer({
      _tag: "Mapped",
      epoch: 7,
      internalPort: ((request[4] as number) << 8) | (request[5] as number),
      externalPort: 41000,
      lifetimeSeconds: ((request[8] as number) << 24) | ((request[9] as number) << 16) | ((request[10] as number) << 8) | (request[11] as number)
    })]

describe("natPmp", () => {
  it.scopedLive("maps the port, reports the router's address to the transport, and removes the mapping when the scope closes", () =>
    Effect.gen(function*() {
      const gateway = yield* playGateway(grants)
      const reported: Array<string> = []
      const scope = yield* Scope.make()
      const handle = yield* natPmp({ gateway: gateway.host, gatewayPort: gateway.port })({
        bound: { host: freshLoopbackHost(), port: 40000 },
        onExternal: (external) => void reported.push(external === undefined ? "none" : `${external.host}:${external.port}`)
      }).pipe(Scope.extend(scope))
      expect(yield* handle.state).toMatchObject({ _tag: "Mapped", protocol: "NAT-PMP", external: "203.0.113.100:41000" })
      expect(reported).toEqual(["203.0.113.100:41000"])
      // Asked: the outside address, then TCP port 40000 (suggesting 40000 outside) for two hours.
      expect(gateway.requests).toEqual([[0, 0], [0, 2, 0, 0, 0x9c, 0x40, 0x9c, 0x40, 0, 0, 0x1c, 0x20]])
      yield* Scope.close(scope, Exit.void)
      // The removal: lifetime 0, outside port 0; the transport goes back to its own address.
      expect(gateway.requests[2]).toEqual([0, 2, 0, 0, 0x9c, 0x40, 0, 0, 0, 0, 0, 0])
      expect(reported).toEqual(["203.0.113.100:41000", "none"])
    }))

  it.scoped("renews at half the granted lifetime, and takes a new outside port the router gives then", () =>
    Effect.gen(function*() {
      // The router grants 120 s; at the renewal it gives another outside port.
      let externalPort = 41000
      const gateway = yield* playGateway((request) =>
        request[1] === 0
          ? [answer({ _tag: "ExternalAddress", epoch: 7, address: "203.0.113.100" })]
          : [answer({ _tag: "Mapped", epoch: 7, internalPort: 40003, externalPort: externalPort++, lifetimeSeconds: request[11] === 0 ? 0 : 120 })]
      )
      const reported = yield* Queue.unbounded<string>()
      yield* natPmp({ gateway: gateway.host, gatewayPort: gateway.port })({
        bound: { host: freshLoopbackHost(), port: 40003 },
        onExternal: (external) => void Queue.unsafeOffer(reported, external === undefined ? "none" : `${external.host}:${external.port}`)
      })
      yield* Queue.takeBetween(gateway.arrivals, 2, 2)
      expect(yield* Queue.take(reported)).toBe("203.0.113.100:41000")
      // Nothing before half the lifetime (60 s, a minute before it lapses)…
      yield* TestClock.adjust("59 seconds")
      expect(yield* Queue.size(gateway.arrivals)).toBe(0)
      // …then the outside address and the mapping again, suggesting the port granted before.
      yield* TestClock.adjust("1 second")
      const renewal = yield* Queue.takeBetween(gateway.arrivals, 2, 2)
      expect([...renewal]).toEqual([[0, 0], [0, 2, 0, 0, 0x9c, 0x43, 0xa0, 0x28, 0, 0, 0x1c, 0x20]])
      // The transport is told the new outside port (once the answer is in).
      expect(yield* Queue.take(reported)).toBe("203.0.113.100:41001")
    }))

  it.scopedLive("skips garbage and answers to other requests, and takes the answer that follows", () =>
    Effect.gen(function*() {
      const gateway = yield* playGateway((request) => [
        Uint8Array.of(),
        Uint8Array.of(0, 130, 0),
        Uint8Array.from({ length: 600 }, (_, i) => i % 256),
        // An answer, but to the other request.
        request[1] === 0 ? answer({ _tag: "Refused", opcode: 2, resultCode: 2, epoch: 1 }) : answer({ _tag: "Refused", opcode: 0, resultCode: 2, epoch: 1 }),
        ...grants(request)
      ])
      const handle = yield* natPmp({ gateway: gateway.host, gatewayPort: gateway.port })({
        bound: { host: freshLoopbackHost(), port: 40001 },
        onExternal: () => undefined
      })
      expect(yield* handle.state).toMatchObject({ _tag: "Mapped", external: "203.0.113.100:41000" })
    }))

  it.scopedLive("a gateway that answers only garbage, or refuses, or is silent leaves the node unmapped within the budget", () =>
    Effect.gen(function*() {
      const garbage = yield* playGateway(() => [Uint8Array.of(1, 2, 3), Uint8Array.from([0, 128, 0, 0, 0, 0, 0, 0, 10])])
      const refusing = yield* playGateway((request) => [
        answer({ _tag: "Refused", opcode: request[1] === 0 ? 0 : 2, resultCode: 2, epoch: 1 })
      ])
      const behindAnotherNat = yield* playGateway((request) =>
        request[1] === 0 ? [answer({ _tag: "ExternalAddress", epoch: 1, address: "100.64.9.9" })] : grants(request)
      )
      const silent = yield* playGateway(() => [])
      const stateWith = (gateway: { readonly host: string; readonly port: number }) =>
        Effect.gen(function*() {
          const startedAt = Date.now()
          const reported: Array<unknown> = []
          const handle = yield* natPmp({ gateway: gateway.host, gatewayPort: gateway.port, startBudget: "600 millis" })({
            bound: { host: freshLoopbackHost(), port: 40002 },
            onExternal: (external) => void reported.push(external)
          })
          expect(reported).toEqual([])
          return { state: yield* handle.state, tookMs: Date.now() - startedAt }
        })
      const [fromGarbage, fromRefusing, fromNatted, fromSilent] = yield* Effect.all(
        [stateWith(garbage), stateWith(refusing), stateWith(behindAnotherNat), stateWith(silent)],
        { concurrency: "unbounded" }
      )
      expect(fromGarbage.state).toEqual({ _tag: "Unavailable", reason: expect.stringContaining("does not offer NAT-PMP/PCP (no answer within") })
      expect(fromRefusing.state).toEqual({ _tag: "Unavailable", reason: expect.stringContaining("refused (result 2: not authorized") })
      expect(fromNatted.state).toEqual({ _tag: "Unavailable", reason: expect.stringContaining("behind a NAT (its outside address is 100.64.9.9)") })
      expect(fromSilent.state).toEqual({ _tag: "Unavailable", reason: expect.stringContaining("no answer within 600ms") })
      // Nothing waits past the budget (plus scheduling slack on a busy machine).
      for (const outcome of [fromGarbage, fromRefusing, fromNatted, fromSilent]) expect(outcome.tookMs).toBeLessThan(3000)
      // The refusal needed one round trip, not the whole budget.
      expect(fromRefusing.tookMs).toBeLessThan(600)
    }))
})

describe("natPmp, a router that does not speak it", () => {
  it.scopedLive("gives up at the ICMP \"port unreachable\", long before the budget", () =>
    Effect.gen(function*() {
      // A port where nothing listens (bound, then closed): the kernel answers with ICMP port unreachable.
      const host = freshLoopbackHost()
      const port = yield* Effect.async<number>((resume) => {
        const probe = createSocket("udp4")
        probe.bind(0, host, () => {
          const bound = probe.address().port
          probe.close(() => resume(Effect.succeed(bound)))
        })
      })
      const startedAt = Date.now()
      const handle = yield* natPmp({ gateway: host, gatewayPort: port, startBudget: "3 seconds" })({
        bound: { host: freshLoopbackHost(), port: 40004 },
        onExternal: () => undefined
      })
      expect(yield* handle.state).toEqual({ _tag: "Unavailable", reason: expect.stringContaining("nothing listens on its NAT-PMP port") })
      expect(Date.now() - startedAt).toBeLessThan(1000)
    }))
})

describe("defaultGatewayFromRouteTable", () => {
  it("reads the default route's gateway from /proc/net/route, and nothing from a table without one", () => {
    const header = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT"
    const withDefault = [
      header,
      "eth0\t00000000\t01014064\t0003\t0\t0\t0\t00000000\t0\t0\t0",
      "eth0\t00014064\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0"
    ].join("\n")
    expect(defaultGatewayFromRouteTable(withDefault)).toBe("100.64.1.1")
    const onLinkOnly = [header, "eth0\t006433CB\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0"].join("\n")
    expect(defaultGatewayFromRouteTable(onLinkOnly)).toBeUndefined()
    expect(defaultGatewayFromRouteTable("")).toBeUndefined()
    expect(defaultGatewayFromRouteTable(`${header}\neth0\t00000000\tZZZZ\t0003\t0\t0\t0\t00000000`)).toBeUndefined()
  })
})
