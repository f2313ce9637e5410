/**
 * The simulated network's links: the in-memory network with per-message
 * latency and loss, as the simulator and the study use it, and its RPC
 * counter. Offline and partitioned peers are silent (a call to them waits
 * for its deadline, as with a laptop that vanished behind its NAT), which is
 * the hard case for lookups; so are hosts behind NATs (`MemoryNetwork.setBehindNat`)
 * to anyone calling them; values cross the network by reference (the
 * protocol's schemas are exercised by the unit and TCP tests, and skipping
 * them makes large runs several times faster).
 *
 * @since 0.1.0
 */
import { Effect, type Scope } from "effect"
import { logNormal } from "../core/Distributions.js"
import { MemoryNetwork, type MemoryNetworkService } from "../platform/MemoryTransport.js"
import { makeRpcCauses, type RpcCauses } from "./RpcCauses.js"
import { defaultLinks, type LinkOptions } from "./SimulationOptions.js"

/** A simulated network with these links, and a reading of how many RPCs were sent on it. */
export interface SimLinks {
  readonly network: MemoryNetworkService
  /** Requests sent by every node since the network was made. */
  readonly rpcCount: () => number
  /** The same per request kind (Ping, FindNode, FindValue, ...). */
  readonly rpcCountsByKind: () => Readonly<Record<string, number>>
  /** The same by cause: who set each call off, and why (see `RpcCauses`). */
  readonly causes: RpcCauses
}

/** Makes the network of a simulated run. */
export const makeSimLinks = (links: LinkOptions = defaultLinks): Effect.Effect<SimLinks, never, Scope.Scope> =>
  Effect.map(
    MemoryNetwork.makeWith({
      latency: links.latencyMedianMs > 0 ? logNormal(links.latencyMedianMs, links.latencySigma) : undefined,
      loss: links.loss,
      unreachable: "silent",
      roundTrip: "reference"
    }),
    (network) => {
      const causes = makeRpcCauses()
      return {
        network: causes.instrument(network),
        rpcCount: () => network.stats().total.sent,
        rpcCountsByKind: () => network.stats().sentByTag,
        causes
      }
    }
  )
