/** Helpers shared by the benchmarks: seeded bytes, percentiles, and DHT nodes on loopback. */
import { Context, Effect, Layer } from "effect"
import { seededRandomBytes } from "../src/core/Id.js"
import { type Address, formatAddress } from "../src/core/Contact.js"
import { DhtNode } from "../src/node/DhtNode.js"
import { Directory } from "../src/node/Directory.js"
import { Identity } from "../src/node/Identity.js"
import { NodeConfig, type NodeConfigShape } from "../src/node/NodeConfig.js"
import { ProfileStore } from "../src/node/Profile.js"
import { identityFromSeeds, signaturesLayer } from "../src/platform/IdentityStore.js"
import { Transport } from "../src/node/Transport.js"
import { TcpTransport, type TcpTransportConfig, type TcpTransportService, type TcpTransportStats } from "../src/platform/TcpTransport.js"
import { percentile as percentileOf } from "../src/sim/Summary.js"
import { loopbackHost } from "../test/support/loopback.js"

/** A deterministic byte stream (xorshift32): the same seed gives the same ids, so runs are comparable. */
export const seededBytes = seededRandomBytes

/** The `p`-th percentile (nearest rank) of `values`; 0 for none. */
export const percentile = percentileOf

/** Deterministic 32-byte key seeds for bench node `index`, so every run builds the same ids. */
const nodeSeed = (index: number, salt: number): Uint8Array => seededBytes(index * 2654435761 + salt * 40503 + 1)(32)

/** The TCP transport's own counters of a node started by `startLoopbackNode`. */
export const transportStatsOf = (context: Context.Context<Transport>): TcpTransportStats | undefined => {
  // The node's Transport is the TCP transport's service spread into a wrapper (see below), counters included.
  const service = Context.get(context, Transport) as Partial<TcpTransportService>
  return service.stats === undefined ? undefined : Effect.runSync(service.stats)
}

/** The tag `startLoopbackNode`'s `onSend` sees for a listening probe. */
export const LISTENING_PROBE = "ListeningProbe"

/**
 * Starts DHT node `index` of a benchmark in this process: its own loopback
 * /24 (`loopbackHost`), the real TCP transport with the secure channel, an
 * in-memory store, and a seeded identity. The id puzzle is off (0 bits) so
 * that building a thousand identities takes no minutes; checking a solved
 * puzzle costs one hash, which changes no figure these benchmarks report.
 * `onSend` sees the tag and the target address of every request the node sends (`LISTENING_PROBE`
 * for a listening probe, a dial-back's check, which is no request). Completes once the
 * node has joined through `bootstrap`.
 */
export const startLoopbackNode = (
  index: number,
  bootstrap: ReadonlyArray<Address>,
  config: Partial<NodeConfigShape> = {},
  onSend: (requestTag: string, target: string) => void = () => {},
  transport: Omit<TcpTransportConfig, "listen"> = {}
) =>
  Effect.gen(function*() {
    const layer = Directory.layer().pipe(
      Layer.provideMerge(ProfileStore.layerMemory()),
      Layer.provideMerge(DhtNode.layerWithMemoryStore),
      Layer.provideMerge(Layer.map(TcpTransport.layer({ ...transport, listen: { host: loopbackHost(index), port: 0 } }), (context) => {
        const transport = Context.get(context, Transport)
        return Context.add(context, Transport, {
          ...transport,
          send: (target, request, options) => {
            onSend(request._tag, formatAddress(target.address))
            return transport.send(target, request, options)
          },
          proveListening: (target, options) => {
            onSend(LISTENING_PROBE, formatAddress(target.address))
            return transport.proveListening(target, options)
          }
        })
      })),
      Layer.provideMerge(Layer.mergeAll(
        Layer.succeed(Identity, identityFromSeeds(nodeSeed(index, 1), nodeSeed(index, 2))),
        signaturesLayer,
        NodeConfig.layer({ bootstrap, idPuzzleBits: 0, ...config })
      ))
    )
    const context = yield* Layer.build(layer)
    yield* Context.get(context, DhtNode).awaitJoined
    return context
  })
