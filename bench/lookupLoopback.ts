/**
 * Lookup latency and hops in a network of real nodes on loopback: starts N
 * nodes (default 100) in this process, each on its own TCP port with the
 * authenticated transport, registers users on some of them, then resolves
 * users from random nodes with FIND_VALUE lookups over the network and prints
 * latency (p50, p95, max) and hops (p50, p95, max).
 *
 *   npx tsx bench/lookupLoopback.ts [--nodes 100] [--users 20] [--lookups 300] [--k 20] [--alpha 3]
 */
import { Context, Effect, Logger, LogLevel } from "effect"
import { parseArgs } from "node:util"
import type { Address } from "../src/core/Contact.js"
import { userKey, type Username } from "../src/core/Username.js"
import { Directory } from "../src/node/Directory.js"
import { Signatures } from "../src/node/Identity.js"
import { Lookups, validRecordAt } from "../src/node/Lookups.js"
import { Transport } from "../src/node/Transport.js"
import { nodeClaimHash } from "../src/platform/ScryptClaimHash.js"
import { percentile, startLoopbackNode } from "./support.js"

const { values: args } = parseArgs({
  options: {
    nodes: { type: "string", default: "100" },
    users: { type: "string", default: "20" },
    lookups: { type: "string", default: "300" },
    k: { type: "string", default: "20" },
    alpha: { type: "string", default: "3" }
  }
})
const nodeCount = Number(args.nodes)
const userCount = Math.min(Number(args.users), nodeCount)
const lookupCount = Number(args.lookups)

/** A node of this benchmark: k and alpha from the flags, a light name-claim proof of work (bench/claimCost.ts measures claims). */
const startNode = (index: number, bootstrap: ReadonlyArray<Address>) =>
  startLoopbackNode(index, bootstrap, { k: Number(args.k), alpha: Number(args.alpha), claimDifficulty: 4, minClaimDifficulty: 4 })

const program = Effect.gen(function*() {
  const startedAt = performance.now()
  const first = yield* startNode(0, [])
  const nodes = [first]
  const seedAddress = Context.get(first, Transport).localAddress
  for (let index = 1; index < nodeCount; index++) nodes.push(yield* startNode(index, [seedAddress]))
  const joinSeconds = (performance.now() - startedAt) / 1000

  const usernames: Array<Username> = []
  for (let index = 0; index < userCount; index++) {
    const node = nodes[(index * 7) % nodes.length]
    if (node === undefined) continue
    const { record } = yield* Context.get(node, Directory).register(`user-${index}`)
    usernames.push(record.username)
  }

  const { verify } = Context.get(first, Signatures)
  const latencies: Array<number> = []
  const hops: Array<number> = []
  const messages: Array<number> = []
  let found = 0
  for (let i = 0; i < lookupCount; i++) {
    const from = nodes[(i * 31 + 5) % nodes.length]
    const username = usernames[i % usernames.length]
    if (from === undefined || username === undefined) continue
    const key = userKey(username)
    const begin = performance.now()
    const result = yield* Context.get(from, Lookups).findValue(key, validRecordAt(key, verify, { minDifficulty: 4, hash: nodeClaimHash }))
    latencies.push(performance.now() - begin)
    hops.push(result.stats.hops)
    messages.push(result.stats.messagesSent)
    if (result.value !== undefined) found++
  }
  const show = (values: ReadonlyArray<number>, digits: number) =>
    `p50 ${percentile(values, 50).toFixed(digits)}, p95 ${percentile(values, 95).toFixed(digits)}, max ${Math.max(...values).toFixed(digits)}`
  console.log(`lookups over loopback TCP: ${nodeCount} nodes (joined in ${joinSeconds.toFixed(1)} s), k=${args.k}, alpha=${args.alpha}`)
  console.log(`  FIND_VALUE of ${usernames.length} users, ${latencies.length} lookups from different nodes`)
  console.log(`  found      ${found}/${latencies.length}`)
  console.log(`  latency    ${show(latencies, 2)} ms`)
  console.log(`  hops       ${show(hops, 0)}`)
  console.log(`  messages   ${show(messages, 0)}`)
}).pipe(Effect.scoped, Logger.withMinimumLogLevel(LogLevel.Warning))

Effect.runPromise(program).catch((error: unknown) => {
  console.error(error)
  process.exitCode = 1
})
