/**
 * Lookup cost on a static network, without any I/O: for each network size,
 * builds the pure static model (k-buckets sampled from all nodes), stores a
 * value at the k nodes closest to random keys, and runs FIND_VALUE and
 * FIND_NODE lookups from random nodes. Prints hops, messages and the share of
 * lookups that found the value or the exact k closest. Seeded: the same
 * arguments print the same figures.
 *
 *   npx tsx bench/staticLookup.ts [--sizes 100,1000,10000] [--lookups 200] [--k 20] [--alpha 3] [--seed 1]
 */
import { parseArgs } from "node:util"
import { compareDistance } from "../src/core/Distance.js"
import { type Key, type NodeId, randomKey, randomNodeId } from "../src/core/Id.js"
import { makeStaticNetwork, runLookup } from "../src/core/StaticNetwork.js"
import { percentile, seededBytes } from "./support.js"

const { values: args } = parseArgs({
  options: {
    sizes: { type: "string", default: "100,1000,10000" },
    lookups: { type: "string", default: "200" },
    k: { type: "string", default: "20" },
    alpha: { type: "string", default: "3" },
    seed: { type: "string", default: "1" }
  }
})

const k = Number(args.k)
const alpha = Number(args.alpha)
const lookups = Number(args.lookups)
const randomBytes = seededBytes(Number(args.seed))
const pick = <A>(items: ReadonlyArray<A>): A => items[(randomBytes(4).reduce((acc, b) => acc * 256 + b, 0)) % items.length] as A

console.log(`static-network lookups: k=${k} alpha=${alpha}, ${lookups} lookups of each kind per size, seed ${args.seed}`)
console.log("nodes  | value found | value hops p50/p95/max | value msgs p50/p95 | exact k-closest | node hops p50/p95 | node msgs p50/p95 | build ms | ms/lookup")
for (const size of args.sizes.split(",").map(Number)) {
  const ids: Array<NodeId> = Array.from({ length: size }, () => randomNodeId(randomBytes))
  const keys: Array<Key> = Array.from({ length: lookups }, () => randomKey(randomBytes))
  const byDistance = (target: Key) => [...ids].sort((a, b) => compareDistance(target, a, b))
  const values = new Map<NodeId, Map<Key, string>>()
  for (const key of keys) {
    for (const holder of byDistance(key).slice(0, k)) {
      const held = values.get(holder) ?? new Map<Key, string>()
      held.set(key, `value-of-${key.slice(0, 8)}`)
      values.set(holder, held)
    }
  }
  const buildStart = performance.now()
  const network = makeStaticNetwork<string>(ids, k, { seed: Number(args.seed), values })
  const buildMs = performance.now() - buildStart

  const valueHops: Array<number> = []
  const valueMessages: Array<number> = []
  const nodeHops: Array<number> = []
  const nodeMessages: Array<number> = []
  let found = 0
  let exact = 0
  const lookupStart = performance.now()
  for (const key of keys) {
    const valueResult = runLookup(network, pick(ids), key, "FindValue", { k, alpha })
    if (valueResult.value !== undefined) found++
    valueHops.push(valueResult.stats.hops)
    valueMessages.push(valueResult.stats.messagesSent)

    const from = pick(ids)
    const nodeResult = runLookup(network, from, key, "FindNode", { k, alpha })
    // A node never appears in its own lookup's result.
    const truth = byDistance(key).filter((id) => id !== from).slice(0, k)
    const got = new Set(nodeResult.closest.map((contact) => contact.nodeId))
    if (truth.every((id) => got.has(id))) exact++
    nodeHops.push(nodeResult.stats.hops)
    nodeMessages.push(nodeResult.stats.messagesSent)
  }
  const perLookupMs = (performance.now() - lookupStart) / (2 * keys.length)
  const pct = (n: number) => `${((100 * n) / keys.length).toFixed(1)} %`
  console.log(
    [
      String(size).padEnd(6),
      pct(found).padEnd(11),
      `${percentile(valueHops, 50)}/${percentile(valueHops, 95)}/${Math.max(...valueHops)}`.padEnd(22),
      `${percentile(valueMessages, 50)}/${percentile(valueMessages, 95)}`.padEnd(18),
      pct(exact).padEnd(15),
      `${percentile(nodeHops, 50)}/${percentile(nodeHops, 95)}`.padEnd(17),
      `${percentile(nodeMessages, 50)}/${percentile(nodeMessages, 95)}`.padEnd(17),
      buildMs.toFixed(0).padEnd(8),
      perLookupMs.toFixed(2)
    ].join(" | ")
  )
}
