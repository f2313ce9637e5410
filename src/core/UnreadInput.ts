/**
 * Unread input: what a node holds of frames that have not fully arrived,
 * and who gives way when that is too much. A connection's reader keeps the
 * bytes of a frame until its last byte is in, up to the frame limit (1 MiB),
 * and all connections together share one cap (`maxBufferedBytes`).
 *
 * Two rules keep peers from holding that memory for nothing:
 * - **An unfinished frame has a deadline**: from the moment the reader waits
 *   for the rest of a frame, the rest must come within `baseMs` plus the
 *   frame's announced size at `minBytesPerSecond` (a 1 MiB frame: 10 s +
 *   64 s by default, so a link of 128 kbit/s still carries the largest
 *   mailbox answer). Otherwise a peer could send most of a large frame and
 *   then a byte a minute, which resets the idle timeout and holds the bytes
 *   forever: with a few dozen connections, the whole cap. With the deadline
 *   it must send the bytes again every 74 s (about 0.9 MB/s to hold
 *   64 MiB), which is the price of a flood, not of a trickle.
 * - **Over the cap, the connection holding the most gives way**, not the one
 *   whose bytes came last. The last bytes are as likely an honest caller's
 *   small request (or an answer to this node's own call) as an attacker's,
 *   while whoever holds the most is where the memory went.
 *
 * Pure: the transport brings the clock and the connections.
 *
 * @since 0.4.0
 */

/** How long the rest of an unfinished frame may take. */
export interface FrameDeadlineConfig {
  /** Milliseconds allowed whatever the frame's size. */
  readonly baseMs: number
  /** The slowest rate, in bytes a second, at which a frame's announced bytes must arrive on top of `baseMs`. */
  readonly minBytesPerSecond: number
}

/** 10 s, plus the frame's size at 16 KiB/s (128 kbit/s: a slow mobile link, far below a home uplink). */
export const DEFAULT_FRAME_DEADLINE: FrameDeadlineConfig = { baseMs: 10_000, minBytesPerSecond: 16 * 1024 }

/**
 * Milliseconds the rest of a frame of `announcedBytes` may take from when the
 * reader starts waiting for it (`announcedBytes` undefined: its length
 * header itself has not fully arrived, `baseMs` alone).
 */
export const unfinishedFrameDeadlineMs = (announcedBytes: number | undefined, config: FrameDeadlineConfig): number =>
  config.baseMs + (announcedBytes === undefined ? 0 : Math.ceil((announcedBytes * 1000) / config.minBytesPerSecond))

/** Of `holders`, the one holding the most unread bytes (the first of equals): the one to close over the cap. */
export const largestHolder = <T>(holders: Iterable<T>, heldBytesOf: (holder: T) => number): T | undefined => {
  let largest: T | undefined
  let most = -1
  for (const holder of holders) {
    const held = heldBytesOf(holder)
    if (held > most) {
      largest = holder
      most = held
    }
  }
  return largest
}
