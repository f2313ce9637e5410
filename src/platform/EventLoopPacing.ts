/**
 * Claim evaluations spread over turns of Node's event loop (`ClaimPacing`,
 * see `src/node/Identity.ts`). A turn runs at most `perTurn` evaluations;
 * the others wait in arrival order, and each later turn (a `setImmediate`,
 * after the I/O that is ready) wakes the next `perTurn` of them. One timer per
 * turn, however many wait. Only evaluations the claim-check budget already
 * admitted wait (`ClaimCheckBudget.prepare`), so the queue is never longer
 * than the budget's burst and what refill it allows meanwhile.
 *
 * Why: an evaluation is about 1.7 ms of scrypt, and the budget admits bursts
 * of up to 200. Requests read in one turn run as fibers whose synchronous
 * work never returns to the event loop in between, so a burst ran as one
 * stretch of up to a third of a second in which no honest request was read.
 *
 * @since 0.9.0
 */
import { Effect } from "effect"
import type { ClaimPacing } from "../node/Identity.js"

/** Claim evaluations a real node runs per turn of its event loop: at most about 3.4 ms of scrypt. */
export const CLAIM_EVALUATIONS_PER_TURN = 2

/** A `ClaimPacing` over the event loop's turns, `perTurn` evaluations each (a positive integer). */
export const eventLoopClaimPacing = (perTurn: number = CLAIM_EVALUATIONS_PER_TURN): ClaimPacing => {
  if (!Number.isSafeInteger(perTurn) || perTurn < 1) throw new RangeError(`perTurn must be a positive integer, got ${perTurn}`)
  /** Evaluations run or woken in the current turn. */
  let spentThisTurn = 0
  let turnQueued = false
  /** Evaluations waiting for a turn, oldest first: each wakes its fiber. Bound: what the budget admitted. */
  const waiting: Array<() => void> = []

  const queueTurn = (): void => {
    if (turnQueued) return
    turnQueued = true
    setImmediate(nextTurn)
  }
  // A turn starts with its whole share, wakes the oldest waiters into it, and queues the next turn
  // whenever it spent anything (to reset the share) or leaves anyone waiting.
  const nextTurn = (): void => {
    turnQueued = false
    spentThisTurn = 0
    while (spentThisTurn < perTurn && waiting.length > 0) {
      spentThisTurn++
      ;(waiting.shift() as () => void)() // the loop checked the length
    }
    if (spentThisTurn > 0) queueTurn()
  }

  const pace = <A>(evaluate: () => A): Effect.Effect<A> =>
    Effect.suspend(() => {
      if (waiting.length === 0 && spentThisTurn < perTurn) {
        spentThisTurn++
        queueTurn()
        return Effect.sync(evaluate)
      }
      return Effect.async<A>((resume) => {
        const wake = () => resume(Effect.sync(evaluate))
        waiting.push(wake)
        queueTurn()
        // Interrupted while waiting (the caller gave up): leaves the queue.
        return Effect.sync(() => {
          const at = waiting.indexOf(wake)
          if (at >= 0) waiting.splice(at, 1)
        })
      })
    })

  return { pace, waiting: () => waiting.length }
}
