/**
 * The port mapper a node uses: NAT-PMP (RFC 6886, which PCP routers answer
 * too), and UPnP IGD when NAT-PMP gets no answer. SSDP discovery starts at
 * once, alongside NAT-PMP, so a router that speaks only UPnP IGD is found
 * within the same start budget (1.5 s): NAT-PMP gets the first half of it
 * (a LAN router answers in milliseconds, and one without NAT-PMP usually
 * answers with an ICMP error at once), UPnP IGD what is left. Only one
 * protocol ever maps: UPnP IGD is not asked to map when NAT-PMP mapped, or
 * when the router answered NAT-PMP with a refusal (it would refuse UPnP
 * too) or a private outside address.
 *
 * @since 0.2.0
 */
import { Clock, Duration, Effect, Fiber } from "effect"
import { UPNP_LEASE_SECONDS } from "../core/UpnpIgd.js"
import {
  DEFAULT_START_BUDGET,
  gatewayToAsk,
  mapOverNatPmp,
  type NatPmpConfig,
  type PortMapper,
  PortMappingError,
  runPortMapping
} from "./PortMapping.js"
import { discoverIgd, openUpnpSession, type SsdpTarget } from "./UpnpIgd.js"

/** Settings of the router port mapper: NAT-PMP's, and UPnP IGD's. */
export interface RouterPortMappingConfig extends NatPmpConfig {
  /** Where SSDP searches go (default: the multicast group 239.255.255.250:1900; tests use a unicast fake). */
  readonly ssdpTarget?: SsdpTarget | undefined
  /** The UPnP lease asked for (default one hour). */
  readonly upnpLeaseSeconds?: number | undefined
}

/** NAT-PMP, then UPnP IGD (see the module comment). */
export const routerPortMapper = (config: RouterPortMappingConfig = {}): PortMapper => (request) =>
  runPortMapping(
    request,
    Effect.gen(function*() {
      const budget = Duration.decode(config.startBudget ?? DEFAULT_START_BUDGET)
      const startedAt = yield* Clock.currentTimeMillis
      const gateway = yield* gatewayToAsk(config.gateway)
      const discovery = yield* Effect.fork(discoverIgd(request.bound.host, gateway, budget, config.ssdpTarget))
      const viaNatPmp = yield* Effect.either(
        Effect.map(
          mapOverNatPmp(config, gateway, request, Duration.millis(Duration.toMillis(budget) / 2)),
          (mapped) => ({ ...mapped, askedAt: startedAt })
        )
      )
      if (viaNatPmp._tag === "Right" || viaNatPmp.left.reason !== "NoAnswer") {
        yield* Fiber.interrupt(discovery)
        return yield* viaNatPmp
      }
      const natPmpFailure = viaNatPmp.left
      const location = yield* Fiber.join(discovery).pipe(
        Effect.mapError((upnpFailure) =>
          upnpFailure.reason === "NoAnswer"
            ? new PortMappingError({
              gateway: natPmpFailure.gateway,
              protocol: "both",
              reason: "NoAnswer",
              detail: `NAT-PMP: ${natPmpFailure.detail}; UPnP IGD: ${upnpFailure.detail}`
            })
            : upnpFailure
        )
      )
      const left = () =>
        Effect.map(Clock.currentTimeMillis, (now) => Duration.millis(Math.max(1, Duration.toMillis(budget) - (now - startedAt))))
      const session = yield* openUpnpSession(location, request.bound.port, yield* left(), config.upnpLeaseSeconds ?? UPNP_LEASE_SECONDS)
      const grant = yield* session.map(request.bound.port, yield* left())
      // "answered in" counts from the first question to the router: NAT-PMP's, SSDP's.
      return { session, grant, askedAt: startedAt }
    })
  )
