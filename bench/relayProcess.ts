/**
 * A relay alone in its own process, for `bench/relay.ts`: the TCP transport
 * with a gate over a `CircuitTable` (test/support/relay.ts `startRelay`),
 * holding a reservation for the node id given, so the relay's own CPU per
 * relayed call can be measured apart from the caller's and the target's.
 * stdout, one JSON line each: `{ "ready": { host, port, relayId } }`, then
 * `{ "offer": { token, caller, callerHost } }` for every circuit opened
 * (the driver hands it to the target, as its AwaitCircuit poll would), and
 * `{ "cpu": µs, "bytesRelayed": n }` for each `cpu` line on stdin.
 *
 *   node --import tsx bench/relayProcess.ts TARGET_NODE_ID
 */
import { Effect, Queue } from "effect"
import { createInterface } from "node:readline"
import { startRelay } from "../test/support/relay.js"

const target = process.argv[2]
if (target === undefined || !/^[0-9a-f]{64}$/.test(target)) throw new Error("usage: relayProcess.ts TARGET_NODE_ID")

const print = (line: object) => process.stdout.write(`${JSON.stringify(line)}\n`)

const program = Effect.scoped(Effect.gen(function*() {
  // The bench measures relaying, not the rate limits a node puts on one peer.
  const relay = yield* startRelay(7, {}, {
    requestLimits: { perPeerRate: 1e9, perPeerBurst: 1e9, perIpRate: 1e9, perIpBurst: 1e9, globalRate: 1e9, globalBurst: 1e9 }
  })
  relay.table.reserve(target as Parameters<typeof relay.table.reserve>[0], "127.0.0.1", Date.now())
  print({ ready: { ...relay.hint.address, relayId: relay.hint.relayId } })
  createInterface({ input: process.stdin }).on("line", (line) => {
    if (line.trim() !== "cpu") return
    Effect.runFork(Effect.map(relay.transport.stats, (stats) => {
      const cpu = process.cpuUsage()
      print({ cpu: cpu.user + cpu.system, bytesRelayed: stats.circuits.bytesRelayed })
    }))
  })
  yield* Effect.forever(Effect.map(Queue.take(relay.offers), (offer) => print({ offer })))
}))

Effect.runFork(program)
