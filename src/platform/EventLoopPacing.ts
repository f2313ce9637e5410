/**
 * Claim evaluations spread over turns of Node's event loop (`ClaimPacing`,
 * see `src/node/Identity.ts`). A turn runs at most its share of evaluations;
 * the others wait in arrival order, and each later turn (a `setImmediate`,
 * after the I/O that is ready) wakes the next share of them. One timer per
 * turn, however many wait. The share is `perTurn`, or one per
 * `msPerEvaluation` of the turn's length when turns are slow, so the queue
 * drains at least as fast as the claim-check budget's node rate (100/s, one
 * per 10 ms) fills it, however busy the node is. Only evaluations the budget
 * already admitted wait (`ClaimCheckBudget.prepare`).
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

/** A turn's length that earns it one evaluation more than `perTurn` allows: the node budget's rate (100/s). */
export const MS_PER_CLAIM_EVALUATION = 10

/**
 * A `ClaimPacing` over the event loop's turns: `perTurn` evaluations a turn
 * (a positive integer), or one per `msPerEvaluation` of a longer turn.
 */
export const eventLoopClaimPacing = (
  perTurn: number = CLAIM_EVALUATIONS_PER_TURN,
  msPerEvaluation: number = MS_PER_CLAIM_EVALUATION
): ClaimPacing => {
  if (!Number.isSafeInteger(perTurn) || perTurn < 1) throw new RangeError(`perTurn must be a positive integer, got ${perTurn}`)
  if (!(msPerEvaluation > 0) || !Number.isFinite(msPerEvaluation)) {
    throw new RangeError(`msPerEvaluation must be a finite number > 0, got ${msPerEvaluation}`)
  }
  /** Evaluations run or woken in the current turn. */
  let spentThisTurn = 0
  /** The current turn's share. */
  let share = perTurn
  let turnQueued = false
  /** When the next turn was queued: its length is measured from there. */
  let queuedAt = 0
  /** Evaluations waiting for a turn, oldest first: each wakes its fiber. Bound: what the budget admitted. */
  const waiting: Array<() => void> = []

  const queueTurn = (): void => {
    if (turnQueued) return
    turnQueued = true
    queuedAt = performance.now()
    setImmediate(nextTurn)
  }
  // A turn starts with its whole share, wakes the oldest waiters into it, and queues the next turn
  // whenever it spent anything (to reset the share) or leaves anyone waiting.
  const nextTurn = (): void => {
    turnQueued = false
    spentThisTurn = 0
    share = Math.max(perTurn, Math.floor((performance.now() - queuedAt) / msPerEvaluation))
    while (spentThisTurn < share && waiting.length > 0) {
      spentThisTurn++
      ;(waiting.shift() as () => void)() // the loop checked the length
    }
    if (spentThisTurn > 0) queueTurn()
  }

  const pace = <A>(evaluate: () => A): Effect.Effect<A> =>
    Effect.suspend(() => {
      if (waiting.length === 0 && spentThisTurn < share) {
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
