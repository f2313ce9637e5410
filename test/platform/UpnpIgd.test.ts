/**
 * The router port mapper against a UPnP IGD this test plays on loopback
 * (SSDP pointed at its unicast address, a real HTTP server for the
 * description and SOAP control): with no NAT-PMP there (ICMP "port
 * unreachable"), the node finds the device, maps its port over SOAP (the
 * same outside port first; another when taken; permanent when the router
 * takes no lease) and deletes the mapping when its scope closes. A device
 * whose description is too large, or that never answers, or answers SSDP
 * pointing elsewhere, leaves the node unmapped within the start budget.
 */
import { describe, expect, it } from "@effect/vitest"
import { type Duration, Effect, Exit, Scope, TestClock } from "effect"
import { createSocket, type Socket } from "node:dgram"
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http"
import type { PortMappingState } from "../../src/core/PortMapping.js"
import { routerPortMapper } from "../../src/platform/RouterPortMapping.js"
import { freshLoopbackHost } from "../support/loopback.js"
import { miniupnpdDescription, soapEnvelope, soapFault } from "../support/upnpIgd.js"

/** A SOAP action the played device received: its name and arguments. */
interface Received {
  readonly action: string
  readonly args: Readonly<Record<string, string>>
}

/** How the played device answers: to the description request, and to each SOAP action. */
interface Behaviour {
  readonly description?: (response: ServerResponse) => void
  readonly soap?: (received: Received, response: ServerResponse) => void
  /** The LOCATION its SSDP answer gives (default: its own description URL). */
  readonly location?: (host: string, port: number) => string
}

const grantAll = (received: Received, response: ServerResponse) => {
  response.writeHead(200, { "Content-Type": "text/xml" })
  response.end(soapEnvelope(
    received.action === "GetExternalIPAddress"
      ? `<u:GetExternalIPAddressResponse xmlns:u="x"><NewExternalIPAddress>203.0.113.100</NewExternalIPAddress></u:GetExternalIPAddressResponse>`
      : `<u:${received.action}Response xmlns:u="x"/>`
  ))
}

const fault = (response: ServerResponse, code: number, description: string) => {
  response.writeHead(500, { "Content-Type": "text/xml" })
  response.end(soapFault(code, description))
}

/** The played device: its address (SSDP and HTTP on one loopback host), and every SOAP action so far. */
interface PlayedDevice {
  readonly host: string
  readonly ssdpPort: number
  readonly received: Array<Received>
}

const readBody = (request: IncomingMessage) =>
  new Promise<string>((resolve) => {
    const chunks: Array<Buffer> = []
    request.on("data", (chunk: Buffer) => chunks.push(chunk))
    request.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")))
  })

const playDevice = (behaviour: Behaviour = {}) =>
  Effect.acquireRelease(
    Effect.async<PlayedDevice & { readonly ssdp: Socket; readonly http: Server }>((resume) => {
      const host = freshLoopbackHost()
      const received: Array<Received> = []
      const http = createServer((request, response) => {
        if (request.method === "GET") {
          if (behaviour.description !== undefined) return behaviour.description(response)
          response.writeHead(200, { "Content-Type": "text/xml" })
          return response.end(miniupnpdDescription())
        }
        void readBody(request).then((body) => {
          const action = /#(\w+)"?$/.exec(String(request.headers["soapaction"]))?.[1] ?? "?"
          const args = Object.fromEntries([...body.matchAll(/<(New\w+)>([^<]*)<\/\1>/g)].map((match) => [match[1], match[2]]))
          const one = { action, args }
          received.push(one)
          ;(behaviour.soap ?? grantAll)(one, response)
        })
      })
      http.listen(0, host, () => {
        const httpPort = (http.address() as { port: number }).port
        const ssdp = createSocket("udp4")
        ssdp.on("message", (message, from) => {
          if (!message.toString().startsWith("M-SEARCH")) return
          const st = /\r\nST: (.*)\r\n/.exec(message.toString())?.[1] ?? ""
          const location = behaviour.location?.(host, httpPort) ?? `http://${host}:${httpPort}/rootDesc.xml`
          ssdp.send(`HTTP/1.1 200 OK\r\nST: ${st}\r\nLOCATION: ${location}\r\nSERVER: played/1 UPnP/1.1\r\n\r\n`, from.port, from.address)
        })
        ssdp.bind(0, host, () => resume(Effect.succeed({ host, ssdpPort: ssdp.address().port, received, ssdp, http })))
      })
    }),
    ({ http, ssdp }) =>
      Effect.sync(() => {
        ssdp.close()
        http.closeAllConnections()
        http.close()
      })
  )

/** A UDP port on `host` where nothing listens (bound, then closed): NAT-PMP there meets ICMP "port unreachable". */
const closedUdpPort = (host: string) =>
  Effect.async<number>((resume) => {
    const probe = createSocket("udp4")
    probe.bind(0, host, () => {
      const bound = probe.address().port
      probe.close(() => resume(Effect.succeed(bound)))
    })
  })

/** Starts the router port mapper against `device` in a scope of its own; its state, the time taken, what the transport heard. */
const mapWith = (device: PlayedDevice, port: number, startBudget: Duration.DurationInput = "1500 millis") =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const reported: Array<string> = []
    const startedAt = Date.now()
    const handle = yield* routerPortMapper({
      gateway: device.host,
      gatewayPort: yield* closedUdpPort(device.host),
      ssdpTarget: { host: device.host, port: device.ssdpPort },
      startBudget
    })({
      bound: { host: freshLoopbackHost(), port },
      onExternal: (external) => void reported.push(external === undefined ? "none" : `${external.host}:${external.port}`)
    }).pipe(Scope.extend(scope))
    const state: PortMappingState = yield* handle.state
    return { state, tookMs: Date.now() - startedAt, reported, scope }
  })

describe("routerPortMapper with UPnP IGD", () => {
  it.scopedLive("maps the same outside port over SOAP when NAT-PMP is absent, and deletes the mapping when the scope closes", () =>
    Effect.gen(function*() {
      const device = yield* playDevice()
      const { state, reported, scope, tookMs } = yield* mapWith(device, 40010)
      expect(state).toMatchObject({ _tag: "Mapped", protocol: "UPnP-IGD", external: "203.0.113.100:40010", gateway: expect.stringMatching(/^127\./) })
      expect(reported).toEqual(["203.0.113.100:40010"])
      expect(tookMs).toBeLessThan(1500)
      expect(device.received.map((one) => one.action)).toEqual(["GetExternalIPAddress", "AddPortMapping"])
      expect(device.received[1]?.args).toMatchObject({
        NewExternalPort: "40010",
        NewProtocol: "TCP",
        NewInternalPort: "40010",
        NewInternalClient: expect.stringMatching(/^127\./),
        NewLeaseDuration: "3600"
      })
      yield* Scope.close(scope, Exit.void)
      expect(device.received.map((one) => one.action)).toEqual(["GetExternalIPAddress", "AddPortMapping", "DeletePortMapping"])
      expect(device.received[2]?.args).toMatchObject({ NewExternalPort: "40010", NewProtocol: "TCP" })
      expect(reported).toEqual(["203.0.113.100:40010", "none"])
    }))

  it.scopedLive("asks for a permanent mapping when the router takes no lease, and another outside port when its own is taken", () =>
    Effect.gen(function*() {
      const device = yield* playDevice({
        soap: (received, response) => {
          if (received.action !== "AddPortMapping") return grantAll(received, response)
          if (received.args["NewLeaseDuration"] !== "0") return fault(response, 725, "OnlyPermanentLeasesSupported")
          if (received.args["NewExternalPort"] === "40011") return fault(response, 718, "ConflictInMappingEntry")
          return grantAll(received, response)
        }
      })
      const { state, scope } = yield* mapWith(device, 40011)
      const adds = device.received.filter((one) => one.action === "AddPortMapping").map((one) => [one.args["NewExternalPort"], one.args["NewLeaseDuration"]])
      expect(adds.slice(0, 2)).toEqual([["40011", "3600"], ["40011", "0"]])
      const granted = adds[2]?.[0]
      expect(adds[2]?.[1]).toBe("0")
      expect(granted).not.toBe("40011")
      expect(state).toMatchObject({ _tag: "Mapped", protocol: "UPnP-IGD", external: `203.0.113.100:${granted}` })
      // Permanent: removed for sure when the node stops.
      yield* Scope.close(scope, Exit.void)
      expect(device.received.at(-1)).toMatchObject({ action: "DeletePortMapping", args: { NewExternalPort: granted } })
    }))

  it.scoped("renews at half the lease with the same outside port, and a permanent mapping every half hour", () =>
    Effect.gen(function*() {
      const leased = yield* playDevice()
      const permanent = yield* playDevice({
        soap: (received, response) =>
          received.action === "AddPortMapping" && received.args["NewLeaseDuration"] !== "0"
            ? fault(response, 725, "OnlyPermanentLeasesSupported")
            : grantAll(received, response)
      })
      const adds = (device: PlayedDevice) => device.received.filter((one) => one.action === "AddPortMapping").length
      yield* mapWith(leased, 40018)
      yield* mapWith(permanent, 40019)
      expect([adds(leased), adds(permanent)]).toEqual([1, 2])
      // Nothing before half the lease (an hour asked, permanent re-asserted as if it were one)…
      yield* TestClock.adjust("29 minutes")
      expect([adds(leased), adds(permanent)]).toEqual([1, 2])
      // …then both ask again for the port they hold (the permanent one straight away as permanent).
      yield* TestClock.adjust("1 minute")
      /** The arguments of the next AddPortMapping after the first `before` (the renewal goes over real HTTP: its answer takes real time). */
      const renewal = (device: PlayedDevice, before: number) =>
        Effect.gen(function*() {
          while (adds(device) === before) yield* Effect.promise(() => new Promise<void>((resolve) => setImmediate(resolve)))
          return device.received.filter((one) => one.action === "AddPortMapping")[before]?.args
        })
      expect(yield* renewal(leased, 1)).toMatchObject({ NewExternalPort: "40018", NewLeaseDuration: "3600" })
      expect(yield* renewal(permanent, 2)).toMatchObject({ NewExternalPort: "40019", NewLeaseDuration: "0" })
    }))

  it.scopedLive("a refusal carries its UPnP error code; a device pointing elsewhere is not followed", () =>
    Effect.gen(function*() {
      const refusing = yield* playDevice({
        soap: (received, response) => received.action === "AddPortMapping" ? fault(response, 606, "Action not authorized") : grantAll(received, response)
      })
      const elsewhere = yield* playDevice({ location: () => "http://100.64.9.9:80/rootDesc.xml" })
      const [fromRefusing, fromElsewhere] = yield* Effect.all([mapWith(refusing, 40012), mapWith(elsewhere, 40013, "600 millis")], {
        concurrency: "unbounded"
      })
      expect(fromRefusing.state).toEqual({ _tag: "Unavailable", reason: expect.stringContaining("refused (AddPortMapping: UPnP error 606: action not authorized)") })
      expect(fromElsewhere.state).toEqual({
        _tag: "Unavailable",
        reason: expect.stringContaining("its LOCATION host 100.64.9.9 is not the responder")
      })
      expect(elsewhere.received).toEqual([])
    }))

  it.scopedLive("an oversize description is refused, and a device that never answers leaves the node unmapped within the budget", () =>
    Effect.gen(function*() {
      const declaredHuge = yield* playDevice({
        description: (response) => {
          response.writeHead(200, { "Content-Type": "text/xml", "Content-Length": String(10 * 1024 * 1024) })
          response.write("<root>")
        }
      })
      // No Content-Length: the body streams on until the cap cuts it off.
      const streamingHuge = yield* playDevice({
        description: (response) => {
          response.writeHead(200, { "Content-Type": "text/xml" })
          const chunk = `<a>${"x".repeat(16 * 1024)}</a>`
          for (let i = 0; i < 8; i++) response.write(chunk)
        }
      })
      const silent = yield* playDevice({ description: () => undefined })
      const slowSoap = yield* playDevice({ soap: () => undefined })
      const outcomes = yield* Effect.all(
        [mapWith(declaredHuge, 40014, "800 millis"), mapWith(streamingHuge, 40015, "800 millis"), mapWith(silent, 40016, "800 millis"), mapWith(slowSoap, 40017, "800 millis")],
        { concurrency: "unbounded" }
      )
      const [fromDeclared, fromStreaming, fromSilent, fromSlowSoap] = outcomes
      expect(fromDeclared?.state).toEqual({ _tag: "Unavailable", reason: expect.stringContaining("over the 65536 allowed") })
      expect(fromStreaming?.state).toEqual({ _tag: "Unavailable", reason: expect.stringContaining("over the 65536 bytes allowed") })
      expect(fromSilent?.state).toEqual({ _tag: "Unavailable", reason: expect.stringContaining("no complete answer within") })
      expect(fromSlowSoap?.state).toEqual({ _tag: "Unavailable", reason: expect.stringMatching(/within/) })
      // Nothing waits past the budget (plus scheduling slack on a busy machine).
      for (const outcome of outcomes) expect(outcome.tookMs).toBeLessThan(2000)
    }))
})
