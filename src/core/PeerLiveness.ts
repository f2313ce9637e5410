/**
 * Which peers of the routing table are live right now, as opposed to merely
 * known. Kademlia keeps a contact until requests to it fail, and a quiet
 * network sends few requests, so a peer that stopped can stay in the table
 * for an hour; counting the table answers "how many peers do I know", not
 * "how many can I reach". A peer is live when it was heard from (it answered
 * us, or called us) within `LIVE_PEER_WINDOW_MS` and no request to it failed
 * since. To keep that true in a quiet network, the node asks the quietest
 * contacts now and then (`peersToProbe`, at most `MAX_PROBES_PER_ROUND` a
 * round): one that answers stays live, one that does not stops counting at
 * once and, after a few failures, leaves the table as Kademlia says.
 *
 * @since 0.3.0
 */
import type { Contact } from "./Contact.js"
import type { Entry, RoutingTable } from "./RoutingTable.js"

/** How recently a peer must have been heard from to count as live (2 minutes). */
export const LIVE_PEER_WINDOW_MS = 2 * 60_000

/** A contact silent this long (1 minute) is asked whether it is still there. */
export const PROBE_QUIET_MS = 60_000

/** Most contacts asked per round, so a large table costs a bounded trickle of pings. */
export const MAX_PROBES_PER_ROUND = 8

/** Most contacts asked in one round while probes keep failing (see `nextProbeBudget`). */
export const MAX_PROBES_WHILE_FAILING = 96

/**
 * Most pings of one step in flight at once. A silent host can hold each for
 * the whole call timeout, and the node's outbound connection budget (128,
 * core `ConnectionLimits`) is shared with its own lookups: a step of 96 runs
 * in waves of 32 (at most three call timeouts, well within the 10 s step),
 * so at least 96 connections stay for everything else.
 */
export const PROBES_IN_FLIGHT = 32

/**
 * How many contacts the next round may ask, after a round that asked
 * `asked` and heard `failed` of them fail: `MAX_PROBES_PER_ROUND` after a
 * round in which every one answered, twice the last round's (at most
 * `MAX_PROBES_WHILE_FAILING`) while some fail. A contact leaves its bucket
 * after three failed requests, so a table that lost 45 contacts at once
 * (30 % of its peers gone silent) took some 17 rounds of 8, about 8
 * minutes, and lookups kept meeting the silent ones all that time. A round
 * asks the quietest first, and most of the quietest are live contacts
 * nobody needed lately, so the silent ones come up only once the round has
 * gone through most of the table (some 150 contacts at 1,000 nodes): at up
 * to 32 a round that took about 5 rounds, at up to 96 about 3
 * (`docs/decisions.md`). A network where nobody fails pays nothing more;
 * one under churn pays about 12 % more pings.
 */
export const nextProbeBudget = (last: { readonly asked: number; readonly failed: number }): number =>
  last.failed === 0 ? MAX_PROBES_PER_ROUND : Math.min(MAX_PROBES_WHILE_FAILING, Math.max(MAX_PROBES_PER_ROUND, 2 * last.asked))

const entriesOf = (table: RoutingTable): ReadonlyArray<Entry> => table.buckets.flatMap((bucket) => bucket.entries)

/** Time between two steps of the prober (10 s): every `STEPS_PER_ROUND`th step is a round, the others rechecks. */
export const PROBE_STEP_MS = 10_000

/** Steps per probe round: a round of the quietest contacts every 30 s. */
export const STEPS_PER_ROUND = 3

/** What one step of the prober asks: at most `max` contacts, only those whose last request failed when `failingOnly`. */
export interface ProbeStep {
  readonly max: number
  readonly failingOnly: boolean
}

/**
 * Step `step` (counted from 1) of the prober: every `STEPS_PER_ROUND`th is
 * a round of up to `roundBudget` (failing contacts first, then the
 * quietest); the steps between recheck the contacts whose last request
 * failed, and only those. A contact leaves its bucket at its third failure,
 * so one that stopped answering is gone about 20 s after a probe or a
 * lookup first missed it, rather than three rounds (90 s) later; every
 * contact still costs at most three unanswered pings, and a step with no
 * failing contact sends nothing.
 */
export const probeStep = (step: number, roundBudget: number): ProbeStep =>
  step % STEPS_PER_ROUND === 0
    ? { max: roundBudget, failingOnly: false }
    : { max: MAX_PROBES_WHILE_FAILING, failingOnly: true }

/**
 * What tells a recheck's failures from this node's own outage (its link
 * down for a few seconds fails every call it makes): `Up` when some contact
 * was heard from (answered us or called us) within the last step, else a
 * live contact to ask alongside, the one heard from most recently, whose
 * failure would void the step's failures; `None` when the table has no
 * live contact to ask, and the recheck waits for the next round. Without
 * it, a 20 s outage would evict up to 32 contacts per step.
 */
export type RecheckControl =
  | { readonly _tag: "Up" }
  | { readonly _tag: "Ask"; readonly contact: Contact }
  | { readonly _tag: "None" }

export const recheckControl = (table: RoutingTable, now: number, sinceMs: number = PROBE_STEP_MS): RecheckControl => {
  let newest: Entry | undefined = undefined
  for (const entry of entriesOf(table)) {
    if (entry.failures === 0 && (newest === undefined || entry.lastSeen > newest.lastSeen)) newest = entry
  }
  if (newest === undefined) return { _tag: "None" }
  return now - newest.lastSeen <= sinceMs ? { _tag: "Up" } : { _tag: "Ask", contact: newest.contact }
}

/** Whether `entry` counts as live at `now`: heard from within `windowMs` and no request to it failed since. */
export const isLivePeer = (entry: Entry, now: number, windowMs: number = LIVE_PEER_WINDOW_MS): boolean =>
  entry.failures === 0 && now - entry.lastSeen <= windowMs

/** How many contacts of `table` are live at `now` (see `isLivePeer`). */
export const livePeerCount = (table: RoutingTable, now: number, windowMs: number = LIVE_PEER_WINDOW_MS): number =>
  entriesOf(table).filter((entry) => isLivePeer(entry, now, windowMs)).length

/**
 * The contacts to ask now: those whose last request failed (the answer
 * decides whether they count again), then, unless `failingOnly`, those
 * silent for `quietMs` or longer, the longest silent first; at most `max`.
 */
export const peersToProbe = (
  table: RoutingTable,
  now: number,
  options: { readonly quietMs?: number; readonly max?: number; readonly failingOnly?: boolean } = {}
): ReadonlyArray<Contact> => {
  const quietMs = options.failingOnly === true ? Number.POSITIVE_INFINITY : options.quietMs ?? PROBE_QUIET_MS
  const max = options.max ?? MAX_PROBES_PER_ROUND
  return entriesOf(table)
    .filter((entry) => entry.failures > 0 || now - entry.lastSeen >= quietMs)
    .sort((a, b) => (b.failures > 0 ? 1 : 0) - (a.failures > 0 ? 1 : 0) || a.lastSeen - b.lastSeen)
    .slice(0, Math.max(0, max))
    .map((entry) => entry.contact)
}
