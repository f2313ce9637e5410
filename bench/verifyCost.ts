/**
 * Whether Ed25519 verification would gain from caching public-key objects
 * (issue 14): `verifyEd25519` (src/platform/NodeCrypto.ts) imports the raw key
 * as a JWK on every check; this weighs that against reusing one key object
 * per signer from a bounded LRU (4,096 keys, as proposed), in one run on
 * this machine: the same signatures over a working set of `--keys` signers,
 * the two forms alternating in seven rounds of `--checks` checks (so other
 * load weighs on both alike), the median round of each printed in µs per
 * check with their ratio, and the cost of the import alone.
 *
 *   npx tsx bench/verifyCost.ts [--keys 64] [--checks 3000] [--seed 1]
 */
import { createPublicKey, type KeyObject, verify as nodeVerify } from "node:crypto"
import { parseArgs } from "node:util"
import type { VerifySignature } from "../src/core/UserRecord.js"
import { sign, signingKeyFromSeed, verifyEd25519 } from "../src/platform/NodeCrypto.js"
import { seededBytes } from "./support.js"

const { values: args } = parseArgs({
  options: {
    keys: { type: "string", default: "64" },
    checks: { type: "string", default: "3000" },
    seed: { type: "string", default: "1" }
  }
})
const keyCount = Number(args.keys)
const checks = Number(args.checks)
const random = seededBytes(Number(args.seed))

const jwkOf = (publicKey: Uint8Array) => ({
  key: { kty: "OKP", crv: "Ed25519", x: Buffer.from(publicKey).toString("base64url") },
  format: "jwk" as const
})

// The proposed cache: key objects by raw key, least recently used first. Bound: 4,096 keys.
const CACHE_SIZE = 4096
const keys = new Map<string, KeyObject>()
const verifyCached: VerifySignature = (publicKey, message, signature) => {
  const x = Buffer.from(publicKey).toString("base64url")
  let key = keys.get(x)
  if (key === undefined) {
    key = createPublicKey(jwkOf(publicKey))
    if (keys.size >= CACHE_SIZE) keys.delete(keys.keys().next().value as string)
  } else keys.delete(x)
  keys.set(x, key)
  return nodeVerify(null, message, key, signature)
}

// One signed message per signer, checked round-robin: a node checking records and mail of its contacts.
const signed = Array.from({ length: keyCount }, () => {
  const pair = signingKeyFromSeed(random(32))
  const message = random(200)
  return { publicKey: pair.publicKey, message, signature: sign(pair.privateKey, message) }
})

/** µs per check of `verify` over `checks` checks; throws if a check fails (a broken benchmark). */
const measure = (verify: VerifySignature): number => {
  const start = performance.now()
  for (let i = 0; i < checks; i++) {
    const { message, publicKey, signature } = signed[i % signed.length] as (typeof signed)[number]
    if (!verify(publicKey, message, signature)) throw new Error("a valid signature did not verify")
  }
  return (performance.now() - start) * 1000 / checks
}

/** µs per JWK import of a signer's key (what the cache would save per check). */
const measureImport = (): number => {
  const start = performance.now()
  for (let i = 0; i < checks; i++) createPublicKey(jwkOf((signed[i % signed.length] as (typeof signed)[number]).publicKey))
  return (performance.now() - start) * 1000 / checks
}

measure(verifyEd25519)
measure(verifyCached)
const rounds = { imported: [] as Array<number>, cached: [] as Array<number>, importOnly: [] as Array<number> }
for (let round = 0; round < 7; round++) {
  rounds.imported.push(measure(verifyEd25519))
  rounds.cached.push(measure(verifyCached))
  rounds.importOnly.push(measureImport())
}
const median = (values: ReadonlyArray<number>): number => [...values].sort((a, b) => a - b)[values.length >> 1] ?? 0
const imported = median(rounds.imported)
const cached = median(rounds.cached)
process.stdout.write(
  `Ed25519 verify, ${keyCount} signers, 7 × ${checks} checks: key imported per check (as shipped) ${imported.toFixed(1)} µs, ` +
    `cached key object ${cached.toFixed(1)} µs, ratio ${(imported / cached).toFixed(2)}x; the JWK import alone ${median(rounds.importOnly).toFixed(1)} µs\n`
)
