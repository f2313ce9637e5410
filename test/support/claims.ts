/**
 * Name claims for tests: solved and checked over SHA-256 rather than scrypt
 * (the rules, difficulty included, stay the real ones), so a test can build
 * hundreds of valid records in milliseconds. Every test node's `Signatures`
 * uses `testClaimHash`, so the claims made here are the ones it accepts.
 */
import { type ClaimProof, solveClaimStep } from "../../src/core/ClaimProof.js"
import { sha256 } from "../../src/core/Sha256.js"
import type { ClaimRules } from "../../src/core/UserRecord.js"
import { NodeConfig } from "../../src/node/NodeConfig.js"

/** The claim hash of every test node. */
export const testClaimHash = sha256

/** The claim rules test nodes apply by default. */
export const testClaimRules: ClaimRules = { minDifficulty: NodeConfig.defaults.minClaimDifficulty, hash: testClaimHash }

const solved = new Map<string, ClaimProof>()

/** A proof of work for `username` claimed by `signingKey` at `difficulty` (the default one unless given); cached. */
export const solvedClaim = (
  username: string,
  signingKey: string,
  difficulty: number = NodeConfig.defaults.claimDifficulty
): ClaimProof => {
  const id = `${username}/${signingKey}/${difficulty}`
  const known = solved.get(id)
  if (known !== undefined) return known
  for (let nonce = 0;;) {
    const step = solveClaimStep({ username, signingKey, difficulty, hash: testClaimHash, fromNonce: nonce, attempts: 4096 })
    if (step._tag === "Solved") {
      solved.set(id, step.proof)
      return step.proof
    }
    nonce = step.nextNonce
  }
}
