/**
 * How the terminal chat judges presence, as pure functions shared by the
 * reducer (`ChatState.ts`) and the screen (`ChatView.ts`): whether its node
 * has reached the network, how many peers it can reach now (the node's live
 * count, core `PeerLiveness`), how long the first-run setup waits for the
 * network before offering another address by default, and when each contact was last
 * reached (a message of ours delivered to it, or one it sent), in words.
 */
import type { Username } from "../../core/Username.js"
import type { NodeStatus } from "../../node/Control.js"
import { formatClock, formatLocalDay } from "./PlainText.js"

/**
 * How long the first-run setup waits by default for the node to reach the
 * network before offering a choice (20 s; `peerchat chat --join-timeout`).
 */
export const DEFAULT_JOIN_TIMEOUT_MS = 20_000

/** How long after a contact was last reached the chat calls it recently reachable (10 minutes). */
export const RECENT_REACH_MS = 10 * 60_000

/**
 * When a contact was last known to be online: a message of ours was
 * delivered to it (its signed receipt came back), or it sent one.
 */
export interface ContactReach {
  readonly name: Username
  /** ms since the epoch: when the receipt arrived, or when their message was sent (at the latest when it arrived). */
  readonly at: number
  /** Delivered straight to its node, delivered through a relay (it is behind a NAT), or it sent one. */
  readonly how: "delivered" | "relayed" | "answered"
}

/** Whether the node can look names up yet: it started its own network, or reached at least one peer. */
export const networkReady = (status: NodeStatus | null): boolean =>
  status !== null && (status.bootstrap._tag === "Standalone" || status.peers > 0)

/** The peers the node can reach now: the live count, or the routing table's size from a node that does not count them. */
export const livePeersOf = (status: NodeStatus): number => status.livePeers ?? status.peers

/** When `name` was last reached, if known. */
export const reachOf = (reach: ReadonlyArray<ContactReach>, name: Username): ContactReach | undefined =>
  reach.find((item) => item.name === name)

/**
 * When a contact was last reached, in words: "reached 2 min ago (delivery)"
 * within `RECENT_REACH_MS` of `clock` (recent), else "last reached 14:05"
 * (with the day when it was not today), or "not reached yet".
 */
export const reachText = (
  reach: ContactReach | undefined,
  clock: number | null
): { readonly text: string; readonly recent: boolean } => {
  if (reach === undefined) return { text: "not reached yet", recent: false }
  const how = reach.how === "delivered" ? "delivery" : reach.how === "relayed" ? "delivery through a relay" : "their message"
  const age = clock === null ? null : clock - reach.at
  if (age !== null && age < RECENT_REACH_MS) {
    const minutes = Math.floor(Math.max(0, age) / 60_000)
    return { text: `reached ${minutes === 0 ? "just now" : `${minutes} min ago`} (${how})`, recent: true }
  }
  const when = clock !== null && formatLocalDay(clock) === formatLocalDay(reach.at)
    ? formatClock(reach.at)
    : `${formatLocalDay(reach.at)} ${formatClock(reach.at)}`
  return { text: `last reached ${when} (${how})`, recent: false }
}
