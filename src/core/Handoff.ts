/**
 * Storage that follows the network (Kademlia §2.5): when a node meets a
 * contact that is closer to a key it stores than the nodes it knew, it hands
 * the record over, so a record stored while the network was small (the first
 * user of a new network) reaches the nodes that are its k closest once
 * others join. To bound the redundant stores (the paper lets only the
 * closest holder transfer), only a holder among the `redundancy` closest
 * nodes it knows (other than the newcomer) hands over: with `redundancy`
 * above one, a hostile or departed closest holder cannot stop the transfer.
 *
 * @since 0.2.0
 */
import { compareDistance } from "./Distance.js"
import type { Key, NodeId } from "./Id.js"

/** The inputs of one hand-over decision. */
export interface HandoffQuestion {
  readonly key: Key
  readonly self: NodeId
  readonly newcomer: NodeId
  /** Nodes this node knows near `key` (its routing table's closest, at least k of them when it has them). */
  readonly known: ReadonlyArray<NodeId>
  /** Replication factor: the record belongs at the k closest nodes. */
  readonly k: number
  /** How many of the closest known holders hand over (1 is the paper's rule). */
  readonly redundancy: number
}

/**
 * Whether this node should store its record under `key` at `newcomer`: the
 * newcomer is among the k closest to `key` of every node this node knows
 * (itself included), and this node is among the `redundancy` closest of
 * those other than the newcomer.
 */
export const shouldHandOver = (question: HandoffQuestion): boolean => {
  const { k, key, newcomer, redundancy, self } = question
  if (newcomer === self) return false
  // Distinct: a node listed twice is still one node ahead of the newcomer or of self.
  const others = Array.from(new Set(question.known)).filter((id) => id !== newcomer && id !== self)
  // Rank = how many known nodes are strictly closer.
  const closerThanNewcomer = others.filter((id) => compareDistance(key, id, newcomer) < 0).length +
    (compareDistance(key, self, newcomer) < 0 ? 1 : 0)
  if (closerThanNewcomer >= k) return false
  const closerThanSelf = others.filter((id) => compareDistance(key, id, self) < 0).length
  return closerThanSelf < redundancy
}
