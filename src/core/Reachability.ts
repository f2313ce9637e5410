/**
 * Whether this node can be reached from the internet, judged from what peers
 * report when asked to dial it back (AutoNAT style): "Public" when enough of
 * them reached it at its address, "Private" when enough tried and none did
 * (behind a NAT or a firewall), "Unknown" otherwise. A quorum, not one
 * answer, decides, so a single lying peer cannot flip the verdict either way.
 *
 * @since 0.2.0
 */

/** What this node knows of its own reachability. */
export type Reachability = "Public" | "Private" | "Unknown"

/** Answers that must agree: two of the (at most three) peers asked. */
export const REACHABILITY_QUORUM = 2

/** Peers asked per check. */
export const REACHABILITY_PEERS = 3

/**
 * The verdict from dial-back answers (`true`: the peer reached this node at
 * its address and the same node id answered). Public with `quorum` successes;
 * Private with `quorum` failures and no success (one success means some path
 * in works, so the node is not simply unreachable); Unknown otherwise, and
 * with no answer at all. A node that knows a single peer (a small network)
 * goes by that one answer: it has no other witness, and that peer could
 * mislead it about everything else anyway.
 */
export const judgeReachability = (answers: ReadonlyArray<boolean>, quorum: number = REACHABILITY_QUORUM): Reachability => {
  if (answers.length === 0) return "Unknown"
  quorum = Math.min(quorum, answers.length)
  const reached = answers.filter((answer) => answer).length
  const failed = answers.length - reached
  if (reached >= quorum) return "Public"
  if (reached === 0 && failed >= quorum) return "Private"
  return "Unknown"
}
