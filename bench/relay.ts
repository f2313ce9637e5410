/**
 * What relaying costs: a caller calls a node directly and through a relay
 * (a circuit: two TCP connections to the relay, spliced, with the Noise
 * channel end to end through it), all on loopback in this process, and the
 * relayed rate is reported as a ratio of the direct one measured in the same
 * run. Also: bytes the relay copies per call, the relay's CPU per relayed
 * call measured in its own process (`bench/relayProcess.ts`) and what one
 * core of it would carry, a raw byte pump through a circuit, and the memory
 * of a reservation in the relay's table.
 *
 *   npx tsx bench/relay.ts [--seconds 3] [--inflight 64]
 */
import { parseArgs } from "node:util"
import { spawn } from "node:child_process"
import * as net from "node:net"
import { createInterface } from "node:readline"
import { Effect } from "effect"
import { CircuitTable } from "../src/core/CircuitRelay.js"
import type { NodeId } from "../src/core/Id.js"
import type { RelayHint } from "../src/core/PeerAddress.js"
import { Ping } from "../src/node/Protocol.js"
import { relayedTarget } from "../src/node/Transport.js"
import { answerPings, relayedPair, startNode, startRelay, testIdentity } from "../test/support/relay.js"

const { values: args } = parseArgs({
  options: {
    seconds: { type: "string", default: "3" },
    inflight: { type: "string", default: "64" }
  }
})
const caseMillis = Number(args.seconds) * 1000
const inFlight = Number(args.inflight)

/** Calls per second of `call` with `parallel` calls in flight for `caseMillis`. */
const rate = (call: Effect.Effect<unknown, unknown>, parallel: number) =>
  Effect.gen(function*() {
    const until = Date.now() + caseMillis
    let done = 0
    const worker = Effect.whileLoop({
      while: () => Date.now() < until,
      body: () => Effect.orDie(call),
      step: () => {
        done++
      }
    })
    const started = Date.now()
    yield* Effect.all(Array.from({ length: parallel }, () => worker), { concurrency: "unbounded" })
    return done / ((Date.now() - started) / 1000)
  })

/** Bytes of heap one reservation holds in the relay's table (the connection it keeps open is apart). */
const reservationBytes = (count: number): number => {
  globalThis.gc?.()
  const before = process.memoryUsage().heapUsed
  const table = new CircuitTable({ maxReservations: count, maxReservationsPerNetwork: count })
  for (let i = 0; i < count; i++) {
    table.reserve(i.toString(16).padStart(64, "0") as NodeId, `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`, 0)
  }
  globalThis.gc?.()
  const after = process.memoryUsage().heapUsed
  return table.counts(0).reservations === count ? (after - before) / count : Number.NaN
}

/**
 * Relayed Pings at `inFlight` in flight through a relay running in a child
 * process (`bench/relayProcess.ts`), the caller and the target here: the
 * relay's own CPU per relayed call, read from its process.
 */
const relayInItsOwnProcess = (config: Parameters<typeof startNode>[1]) =>
  Effect.gen(function*() {
    const target = yield* startNode(8, config)
    const caller = yield* startNode(9, config)
    yield* answerPings(target)
    const targetId = testIdentity(8).nodeId
    const child = spawn(process.execPath, ["--import", "tsx", "bench/relayProcess.ts", targetId], { stdio: ["pipe", "pipe", "inherit"] })
    yield* Effect.addFinalizer(() => Effect.sync(() => child.kill()))
    const lines = createInterface({ input: child.stdout })
    let cpuWaiter: ((sample: { readonly cpu: number; readonly bytesRelayed: number }) => void) | undefined
    const hint = yield* Effect.async<RelayHint>((resume) => {
      lines.on("line", (line) => {
        const message = JSON.parse(line) as {
          readonly ready?: { readonly host: string; readonly port: number; readonly relayId: NodeId }
          readonly offer?: { readonly token: string; readonly caller: NodeId; readonly callerHost?: string }
          readonly cpu?: number
          readonly bytesRelayed?: number
        }
        if (message.ready !== undefined) {
          const { relayId, ...address } = message.ready
          resume(Effect.succeed({ relayId, address }))
        }
        const offer = message.offer
        if (offer !== undefined) Effect.runFork(Effect.ignore(target.acceptCircuit(hintOf(), offer.token, offer.caller, offer.callerHost)))
        if (message.cpu !== undefined) cpuWaiter?.({ cpu: message.cpu, bytesRelayed: message.bytesRelayed ?? 0 })
      })
    })
    const hintOf = () => hint
    const sample = Effect.async<{ readonly cpu: number; readonly bytesRelayed: number }>((resume) => {
      cpuWaiter = (value) => resume(Effect.succeed(value))
      child.stdin.write("cpu\n")
    })
    const relayed = caller.send(relayedTarget(targetId, hint), new Ping({}))
    yield* relayed
    const before = yield* sample
    const relayedRate = yield* rate(relayed, inFlight)
    const after = yield* sample
    const calls = relayedRate * caseMillis / 1000
    const microsPerCall = (after.cpu - before.cpu) / calls
    return `relay in its own process, ${inFlight} in flight: ${relayedRate.toFixed(0)} relayed Pings/s, ` +
      `relay CPU ${microsPerCall.toFixed(1)} µs/call (${((after.cpu - before.cpu) / (caseMillis * 10)).toFixed(0)} % of a core), ` +
      `${((after.bytesRelayed - before.bytesRelayed) / calls).toFixed(0)} B copied/call: ` +
      `one relay core carries about ${(1e6 / microsPerCall).toFixed(0)} relayed calls/s`
  })

const program = Effect.scoped(Effect.gen(function*() {
  // The bench measures throughput, not the rate limits a node puts on one peer.
  const unlimited = { requestLimits: { perPeerRate: 1e9, perPeerBurst: 1e9, perIpRate: 1e9, perIpBurst: 1e9, globalRate: 1e9, globalBurst: 1e9 } }
  const { caller, relay, target, targetId, via } = yield* relayedPair({ relay: 1, target: 2, caller: 3 }, {}, unlimited)
  const direct = caller.send({ address: target.localAddress, nodeId: targetId }, new Ping({}))
  const relayed = caller.send(via, new Ping({}))
  // Open both connections first, so the cases measure calls, not set-up.
  yield* direct
  yield* relayed
  const rows: Array<string> = []
  for (const parallel of [1, inFlight]) {
    const directRate = yield* rate(direct, parallel)
    const before = (yield* relay.transport.stats).circuits.bytesRelayed
    const cpuBefore = process.cpuUsage()
    const relayedRate = yield* rate(relayed, parallel)
    const cpu = process.cpuUsage(cpuBefore)
    const bytes = (yield* relay.transport.stats).circuits.bytesRelayed - before
    const calls = relayedRate * caseMillis / 1000
    rows.push(
      `Ping, ${String(parallel).padStart(2)} in flight   direct ${directRate.toFixed(0).padStart(7)}/s   relayed ${relayedRate.toFixed(0).padStart(7)}/s` +
        `   relayed/direct ${(relayedRate / directRate).toFixed(2)}   relay copies ${(bytes / calls).toFixed(0)} B/call` +
        `   all three nodes' CPU ${((cpu.user + cpu.system) / calls).toFixed(0)} µs/relayed call`
    )
  }

  // The relay alone in its own process: its CPU per relayed call, and what one core of it carries.
  rows.push(yield* relayInItsOwnProcess(unlimited))

  // The relay's own work, alone: a raw pump of 16 KiB chunks through a spliced circuit (no Noise, no RPC).
  const pumpRelay = yield* startRelay(4, { circuitBytes: 1 << 30 })
  const holder = testIdentity(5).nodeId
  pumpRelay.table.reserve(holder, "127.0.0.1", Date.now())
  const token = "0000000000000000000000000000beef"
  pumpRelay.table.open(testIdentity(6).nodeId, holder, token, Date.now())
  const opening = Buffer.concat([Buffer.from("PCRL"), Buffer.from(token, "hex")])
  const pumped = yield* Effect.async<{ readonly bytes: number; readonly micros: number }>((resume) => {
    const sink = net.connect(pumpRelay.transport.localAddress, () => sink.write(opening))
    let received = 0
    sink.on("data", (chunk) => {
      received += chunk.length
    })
    const source = net.connect(pumpRelay.transport.localAddress, () => {
      source.write(opening)
      const chunk = Buffer.alloc(16 * 1024, 7)
      const cpuBefore = process.cpuUsage()
      const until = Date.now() + caseMillis
      const pump = () => {
        while (Date.now() < until) if (!source.write(chunk)) return void source.once("drain", pump)
        setTimeout(() => {
          const cpu = process.cpuUsage(cpuBefore)
          source.destroy()
          sink.destroy()
          resume(Effect.succeed({ bytes: received, micros: cpu.user + cpu.system }))
        }, 200)
      }
      pump()
    })
  })
  const mib = pumped.bytes / (1 << 20)
  rows.push(
    `raw pump through a circuit   ${(mib / (caseMillis / 1000)).toFixed(0)} MiB/s   ` +
      `${(pumped.micros / mib).toFixed(0)} µs of CPU per MiB (source, relay and sink in this process)`
  )
  rows.push(`a reservation in the relay's table: about ${reservationBytes(10_000).toFixed(0)} bytes of heap (plus its holder's open connection)`)
  return rows
}))

const rows = await Effect.runPromise(program)
console.log(`relay bench (${caseMillis / 1000} s per case, loopback; one process, except where the relay runs in its own)`)
for (const row of rows) console.log(`  ${row}`)
