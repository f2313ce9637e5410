/**
 * Port mapping with UPnP IGD, for routers that answer no NAT-PMP: SSDP
 * discovery over UDP, the device description over HTTP, then SOAP actions
 * (`GetExternalIPAddress`, `AddPortMapping` — `AddAnyPortMapping` on IGD:2
 * when the port is taken —, `DeletePortMapping`). The formats and decisions
 * are in `src/core/UpnpIgd.ts`.
 *
 * Every host on the LAN can answer SSDP, so nothing here trusts an answer:
 * only answers from the gateway whose LOCATION is on the gateway itself are
 * followed (core `acceptLocation`); every HTTP exchange has a hard size cap
 * (the description 64 KiB, SOAP answers 16 KiB; larger answers are cut off
 * and refused) and a timeout, and goes to that one host and port; all that
 * comes back is decoded with Schema, and whatever does not decode is a
 * `PortMappingError` ("BadAnswer"), never a crash or a wait past the budget.
 *
 * @since 0.2.0
 */
import { Duration, Effect, Either, Random, Schema } from "effect"
import { createSocket } from "node:dgram"
import { request as httpRequest } from "node:http"
import { isPublicIpv4 } from "../core/PortMapping.js"
import {
  acceptLocation,
  addPortMappingArgs,
  CONFLICT_IN_MAPPING,
  deletePortMappingArgs,
  DESCRIPTION_MAX_BYTES,
  externalPortCandidates,
  type HttpTarget,
  ONLY_PERMANENT_LEASES,
  SEARCH_TARGETS,
  searchRequest,
  SOAP_ANSWER_MAX_BYTES,
  soapRequest,
  type SoapAnswer,
  SoapAnswerFromText,
  SSDP_ADDRESS,
  SSDP_ANSWER_MAX_BYTES,
  SSDP_PORT,
  SsdpAnswerFromText,
  UPNP_ERRORS,
  UPNP_LEASE_SECONDS,
  wanConnectionService,
  XmlFromText
} from "../core/UpnpIgd.js"
import { type Grant, type MappingSession, PortMappingError } from "./PortMapping.js"

/** Where M-SEARCH requests go: SSDP's multicast group, or (tests) a unicast fake device. */
export interface SsdpTarget {
  readonly host: string
  readonly port: number
}

/** Outside ports tried after the same port is taken (on IGD:1, or when AddAnyPortMapping fails). */
const OTHER_PORTS_TRIED = 3

const upnpError = (gateway: string, reason: PortMappingError["reason"], detail: string, upnpErrorCode?: number) =>
  new PortMappingError({ gateway, protocol: "UPnP-IGD", reason, detail, ...(upnpErrorCode === undefined ? {} : { upnpErrorCode }) })

/**
 * Searches for an Internet Gateway Device (IGD:1 and IGD:2, sent again after
 * a third of `budget` in case a datagram was lost) from `localHost`, and
 * returns the first answer's description location that core
 * `acceptLocation` accepts (from `gateway`, pointing at itself, on the LAN).
 * Fails with "NoAnswer" when none came within `budget`, saying why the
 * answers that came were refused.
 */
export const discoverIgd = (
  localHost: string,
  gateway: string | undefined,
  budget: Duration.Duration,
  target: SsdpTarget = { host: SSDP_ADDRESS, port: SSDP_PORT }
): Effect.Effect<HttpTarget, PortMappingError> => {
  const key = gateway ?? ""
  let refusedBecause = ""
  return Effect.async<HttpTarget, PortMappingError>((resume) => {
    const socket = createSocket("udp4")
    let resend: ReturnType<typeof setTimeout> | undefined
    let done = false
    const finish = (outcome: Effect.Effect<HttpTarget, PortMappingError>) => {
      if (done) return
      done = true
      clearTimeout(resend)
      socket.close()
      resume(outcome)
    }
    const search = () => {
      for (const searchTarget of SEARCH_TARGETS) socket.send(searchRequest(searchTarget), target.port, target.host)
    }
    socket.on("error", (error) => finish(Effect.fail(upnpError(key, "SocketError", `SSDP: ${error.message}`))))
    socket.on("message", (message, from) => {
      // A datagram larger than any search answer is not one; it is not even read.
      if (message.length > SSDP_ANSWER_MAX_BYTES) return
      const answer = Schema.decodeUnknownEither(SsdpAnswerFromText)(message.toString("latin1"))
      if (Either.isLeft(answer)) return
      const location = acceptLocation(answer.right.location, from.address, gateway)
      if (Either.isLeft(location)) {
        refusedBecause = `; ignored an answer from ${from.address}: ${location.left}`
        return
      }
      finish(Effect.succeed(location.right))
    })
    socket.bind({ address: localHost, port: 0 }, () => {
      if (localHost !== "0.0.0.0" && target.host === SSDP_ADDRESS) {
        // Throws (rather than emitting "error") when the address has no multicast-capable interface.
        try {
          socket.setMulticastInterface(localHost)
        } catch (error) {
          return finish(Effect.fail(upnpError(key, "SocketError", `SSDP from ${localHost}: ${error instanceof Error ? error.message : String(error)}`)))
        }
      }
      search()
      resend = setTimeout(search, Duration.toMillis(budget) / 3)
    })
    return Effect.sync(() => {
      if (done) return
      done = true
      clearTimeout(resend)
      socket.close()
    })
  }).pipe(
    Effect.timeoutFail({
      duration: budget,
      onTimeout: () => upnpError(key, "NoAnswer", `no SSDP answer within ${Duration.format(budget)}${refusedBecause}`)
    })
  )
}

/** An HTTP answer: its status, its body (at most the cap), and the local address the connection came from. */
interface HttpAnswer {
  readonly status: number
  readonly body: string
  readonly localAddress: string
}

/**
 * One HTTP exchange with the device (a fresh connection, closed after),
 * refused when the answer's body exceeds `maxBytes` (cut off as soon as it
 * does, whatever Content-Length claims) or does not end within `timeout`.
 */
const httpExchange = (
  target: HttpTarget,
  options: {
    readonly method: "GET" | "POST"
    readonly headers: Readonly<Record<string, string>>
    readonly body?: string
    readonly maxBytes: number
    readonly timeout: Duration.Duration
  }
): Effect.Effect<HttpAnswer, PortMappingError> => {
  const key = `${target.host}:${target.port}`
  return Effect.async<HttpAnswer, PortMappingError>((resume) => {
    let done = false
    const finish = (outcome: Effect.Effect<HttpAnswer, PortMappingError>) => {
      if (done) return
      done = true
      resume(outcome)
    }
    const body = options.body === undefined ? undefined : Buffer.from(options.body, "utf8")
    const request = httpRequest({
      host: target.host,
      port: target.port,
      path: target.path,
      method: options.method,
      agent: false,
      maxHeaderSize: 8192,
      headers: {
        ...options.headers,
        Host: `${target.host}:${target.port}`,
        Connection: "close",
        ...(body === undefined ? {} : { "Content-Length": String(body.length) })
      }
    }, (response) => {
      const declared = Number(response.headers["content-length"] ?? "0")
      if (declared > options.maxBytes) {
        request.destroy()
        return finish(Effect.fail(upnpError(key, "BadAnswer", `${target.path}: an answer of ${declared} bytes, over the ${options.maxBytes} allowed`)))
      }
      const chunks: Array<Buffer> = []
      let size = 0
      response.on("data", (chunk: Buffer) => {
        size += chunk.length
        if (size > options.maxBytes) {
          request.destroy()
          finish(Effect.fail(upnpError(key, "BadAnswer", `${target.path}: an answer over the ${options.maxBytes} bytes allowed`)))
          return
        }
        chunks.push(chunk)
      })
      response.on("error", (error) => finish(Effect.fail(upnpError(key, "NoAnswer", `${target.path}: ${error.message}`))))
      response.on("end", () =>
        finish(Effect.succeed({
          status: response.statusCode ?? 0,
          body: Buffer.concat(chunks).toString("utf8"),
          localAddress: request.socket?.localAddress ?? ""
        })))
    })
    request.on("error", (error) => finish(Effect.fail(upnpError(key, "NoAnswer", `${target.path}: ${error.message}`))))
    request.end(body)
    return Effect.sync(() => {
      done = true
      request.destroy()
    })
  }).pipe(
    Effect.timeoutFail({
      duration: options.timeout,
      onTimeout: () => upnpError(key, "NoAnswer", `${target.path}: no complete answer within ${Duration.format(options.timeout)}`)
    })
  )
}

/**
 * A UPnP IGD session with the device whose description is at `location`,
 * mapping TCP port `internalPort` of this host (asking `leaseSeconds`, or a
 * permanent mapping when the router only takes those): fetches and reads
 * the description within `budget`.
 */
export const openUpnpSession = (
  location: HttpTarget,
  internalPort: number,
  budget: Duration.Duration,
  leaseSeconds: number = UPNP_LEASE_SECONDS
): Effect.Effect<MappingSession, PortMappingError> =>
  Effect.gen(function*() {
    const deviceKey = `${location.host}:${location.port}`
    const fetched = yield* httpExchange(location, { method: "GET", headers: {}, maxBytes: DESCRIPTION_MAX_BYTES, timeout: budget })
    if (fetched.status !== 200) return yield* upnpError(deviceKey, "BadAnswer", `its description ${location.path}: HTTP ${fetched.status}`)
    const description = Schema.decodeUnknownEither(XmlFromText)(fetched.body)
    if (Either.isLeft(description)) {
      return yield* upnpError(deviceKey, "BadAnswer", `its description: ${description.left.message.split("\n").at(-1)?.trim()}`)
    }
    const found = wanConnectionService(description.right, location)
    if (Either.isLeft(found)) return yield* upnpError(deviceKey, "Refused", found.left)
    const { control, serviceType } = found.right
    const key = `${control.host}:${control.port}`
    // Our address on the LAN as the router sees it: the connection's local address (a node listening on 0.0.0.0 has no other).
    const internalClient = fetched.localAddress
    let lease = leaseSeconds
    let mappedPort: number | undefined

    const call = (action: string, args: ReadonlyArray<readonly [string, string]>, timeout: Duration.Duration) =>
      Effect.gen(function*() {
        const answer = yield* httpExchange(control, {
          method: "POST",
          headers: { "Content-Type": "text/xml; charset=\"utf-8\"", SOAPAction: `"${serviceType}#${action}"` },
          body: soapRequest(serviceType, action, args),
          maxBytes: SOAP_ANSWER_MAX_BYTES,
          timeout
        })
        const decoded = Schema.decodeUnknownEither(SoapAnswerFromText)(answer.body)
        if (Either.isLeft(decoded)) {
          return yield* upnpError(key, "BadAnswer", `${action}: HTTP ${answer.status}, ${decoded.left.message.split("\n").at(-1)?.trim()}`)
        }
        if (decoded.right._tag === "Done" && answer.status !== 200) {
          return yield* upnpError(key, "BadAnswer", `${action}: HTTP ${answer.status}`)
        }
        return decoded.right
      })

    const refusedBy = (action: string, fault: SoapAnswer & { readonly _tag: "Fault" }) =>
      upnpError(
        key,
        "Refused",
        `${action}: UPnP error ${fault.errorCode ?? "(none)"}: ${
          fault.errorCode === undefined ? fault.description : UPNP_ERRORS[fault.errorCode] ?? fault.description
        }`,
        fault.errorCode
      )

    const map = (suggestedPort: number, mapBudget: Duration.Duration): Effect.Effect<Grant, PortMappingError> =>
      Effect.gen(function*() {
        const outside = yield* call("GetExternalIPAddress", [], mapBudget)
        if (outside._tag === "Fault") return yield* refusedBy("GetExternalIPAddress", outside)
        const address = outside.values["NewExternalIPAddress"] ?? ""
        if (!isPublicIpv4(address)) {
          return yield* upnpError(key, "NotPublic", `its outside address is ${JSON.stringify(address.slice(0, 60))}`)
        }
        const candidates = externalPortCandidates(suggestedPort, OTHER_PORTS_TRIED, yield* Random.next)
        let lastFault: (SoapAnswer & { readonly _tag: "Fault" }) | undefined
        for (const externalPort of candidates) {
          let added = yield* call("AddPortMapping", addPortMappingArgs(externalPort, internalClient, internalPort, lease), mapBudget)
          if (added._tag === "Fault" && added.errorCode === ONLY_PERMANENT_LEASES && lease !== 0) {
            // This router keeps mappings until removed: asked again as permanent, removed when the node stops.
            lease = 0
            added = yield* call("AddPortMapping", addPortMappingArgs(externalPort, internalClient, internalPort, lease), mapBudget)
          }
          if (added._tag === "Done") {
            mappedPort = externalPort
            return { external: { host: address, port: externalPort }, lifetimeSeconds: lease }
          }
          lastFault = added
          if (added.errorCode !== CONFLICT_IN_MAPPING) return yield* refusedBy("AddPortMapping", added)
          if (serviceType === "urn:schemas-upnp-org:service:WANIPConnection:2") {
            // IGD:2 lets the router pick a free port.
            const any = yield* call("AddAnyPortMapping", addPortMappingArgs(externalPort, internalClient, internalPort, lease), mapBudget)
            const reserved = any._tag === "Done" ? Number(any.values["NewReservedPort"]) : Number.NaN
            if (Number.isInteger(reserved) && reserved > 0 && reserved <= 65535) {
              mappedPort = reserved
              return { external: { host: address, port: reserved }, lifetimeSeconds: lease }
            }
          }
        }
        return yield* refusedBy("AddPortMapping", lastFault ?? { _tag: "Fault", description: "no port left to try" })
      }).pipe(
        Effect.timeoutFail({
          duration: mapBudget,
          onTimeout: () => upnpError(key, "NoAnswer", `no mapping within ${Duration.format(mapBudget)}`)
        })
      )

    const remove = (removeBudget: Duration.Duration): Effect.Effect<void, PortMappingError> =>
      Effect.gen(function*() {
        if (mappedPort === undefined) return
        const removed = yield* call("DeletePortMapping", deletePortMappingArgs(mappedPort), removeBudget)
        if (removed._tag === "Fault") return yield* refusedBy("DeletePortMapping", removed)
        mappedPort = undefined
      }).pipe(
        Effect.timeoutFail({
          duration: removeBudget,
          onTimeout: () => upnpError(key, "NoAnswer", `no answer to DeletePortMapping within ${Duration.format(removeBudget)}`)
        })
      )

    return { protocol: "UPnP-IGD", key, map, remove } satisfies MappingSession
  })
