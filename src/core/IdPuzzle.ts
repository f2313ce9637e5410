/**
 * Ids that cost (S/Kademlia's static puzzle): a node id is the SHA-256 of the
 * node's Ed25519 key, and it counts only when the SHA-256 of
 * ("peerchat/id-puzzle/v1\n" ‖ the id) starts with `bits` zero bits. Making
 * an id then takes about 2^bits key pairs, and checking one takes a single
 * hash. An attacker who wants ids near a chosen key (to own the k closest
 * positions of a name or a mailbox) pays 2^bits times more for every id it
 * tries, while an honest node pays once, when its identity is created. The
 * id is still the hash of the key, so records, handshakes and routing are
 * unchanged; only which ids are believed changes.
 *
 * @since 0.2.0
 */
import { concatBytes, leadingZeroBits, utf8 } from "./Bytes.js"
import { type NodeId, keyToBytes } from "./Id.js"
import { type HashFunction, sha256 } from "./Sha256.js"

/** Domain-separation prefix of the puzzle hash. */
export const ID_PUZZLE_PREFIX = "peerchat/id-puzzle/v1\n"

/**
 * Default puzzle: 11 zero bits, about 2,050 key pairs: about a second of one
 * core for a node's first start here (node:crypto derives ~2,000 key pairs a
 * second from seeds on this machine), about 0.2 s for an attacker at the
 * ~10,600 per second issue 11 measured, and 2,048 times the cost of every id
 * it places: owning the k = 20 closest positions of a name goes from ~2 s to
 * ~64 core-minutes at 1,000 nodes, and from ~31 core-minutes to ~1,070
 * core-hours at 1,000,000.
 */
export const DEFAULT_ID_PUZZLE_BITS = 11

/** Most bits a network may demand (2^32 key pairs is far past any honest node's budget). */
export const MAX_ID_PUZZLE_BITS = 32

const PREFIX_BYTES = utf8(ID_PUZZLE_PREFIX)

/** Leading zero bits of the puzzle hash of `nodeId`. */
export const idPuzzleZeroBits = (nodeId: NodeId, hash: HashFunction = sha256): number =>
  leadingZeroBits(hash(concatBytes(PREFIX_BYTES, keyToBytes(nodeId))))

/** Whether `nodeId` solves the puzzle of `bits` zero bits (always, for 0). */
export const meetsIdPuzzle = (nodeId: NodeId, bits: number, hash: HashFunction = sha256): boolean =>
  bits <= 0 || idPuzzleZeroBits(nodeId, hash) >= bits
