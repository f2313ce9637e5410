/**
 * Random bytes for the transport's per-packet and per-probe values (nonces,
 * tokens, challenges, first call ids), drawn from a pool the operating
 * system fills 4 KiB at a time: one system call per few hundred values
 * instead of one each. At 1,000 joins in one process the calls took 2.6 s
 * of 105 (`bench/manyNodes.ts` under `--cpu-prof`), several times what the
 * bytes themselves cost. The bytes are the OS's secure random bytes all
 * the same; each value is copied out, and no byte is handed out twice.
 *
 * Long-lived secrets (keys, cookie secrets) are drawn directly.
 *
 * @since 0.9.0
 */
import { randomFillSync } from "node:crypto"

const POOL_BYTES = 4096
const pool = Buffer.alloc(POOL_BYTES)
let used = POOL_BYTES

/** `length` fresh random bytes (at most 4,096), a copy of their own. */
export const pooledRandomBytes = (length: number): Uint8Array => {
  if (!Number.isSafeInteger(length) || length < 0 || length > POOL_BYTES) {
    throw new RangeError(`0 to ${POOL_BYTES} pooled random bytes at once, asked for ${length}`)
  }
  if (used + length > POOL_BYTES) {
    randomFillSync(pool)
    used = 0
  }
  const bytes = new Uint8Array(pool.subarray(used, used + length))
  used += length
  return bytes
}
