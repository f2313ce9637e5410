/**
 * Claim checks spread over turns of Node's event loop (`ClaimPacing`, see
 * `src/node/Identity.ts`). A turn may run `perTurn` claim evaluations; a
 * check that finds the turn's share spent waits for a later turn, after the
 * I/O that is ready (a `setImmediate`). The count goes back to zero in the
 * check phase after the turn in which it first grew: that callback is queued
 * before any check that then waits, so it runs first.
 *
 * Why: an evaluation is about 1.7 ms of scrypt, and the claim-check budget
 * admits bursts of up to 200. Requests read in one turn run as fibers whose
 * synchronous work never returns to the event loop in between: under the
 * soak's flood the victim's CPU profile showed runs of 400–600 ms with no
 * idle moment, mostly scrypt, in which no honest request was read.
 *
 * @since 0.9.0
 */
import { Effect } from "effect"
import type { ClaimPacing } from "../node/Identity.js"

/** Claim evaluations a real node runs per turn of its event loop: at most about 3.4 ms of scrypt. */
export const CLAIM_EVALUATIONS_PER_TURN = 2

/** The next turn of the event loop, after the I/O that is ready; cancelled when interrupted. */
const nextTurn: Effect.Effect<void> = Effect.async<void>((resume) => {
  const handle = setImmediate(() => resume(Effect.void))
  return Effect.sync(() => clearImmediate(handle))
})

/** A `ClaimPacing` over the event loop's turns, `perTurn` evaluations each (a positive integer). */
export const eventLoopClaimPacing = (perTurn: number = CLAIM_EVALUATIONS_PER_TURN): ClaimPacing => {
  if (!Number.isSafeInteger(perTurn) || perTurn < 1) throw new RangeError(`perTurn must be a positive integer, got ${perTurn}`)
  let spentThisTurn = 0
  let resetQueued = false
  const reset = () => {
    spentThisTurn = 0
    resetQueued = false
  }
  const awaitTurn: Effect.Effect<void> = Effect.suspend(() =>
    spentThisTurn < perTurn ? Effect.void : Effect.zipRight(nextTurn, awaitTurn)
  )
  return {
    awaitTurn,
    spent: (evaluations) => {
      if (evaluations <= 0) return
      spentThisTurn += evaluations
      if (!resetQueued) {
        resetQueued = true
        setImmediate(reset)
      }
    }
  }
}
