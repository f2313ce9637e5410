/**
 * How a connection's frames leave: the frames written while one burst of
 * input is handled go out together, a few system calls per burst rather
 * than one per frame, but never held back whole.
 *
 * The stream is corked at the first frame of a burst and uncorked when the
 * event loop reaches its check phase (`setImmediate`), and on the way every
 * `framesPerWrite` frames. Holding a whole burst made the two ends of a
 * connection take turns: the peer got all the answers at once, handled them
 * all and sent its next burst while this end sat idle (at 64 calls in
 * flight, 0.29 of a raw + Noise loop's calls a second; sending every 16
 * frames, about 0.45: `bench/transport.ts`, and "`@effect/rpc`'s messages
 * and schemas, our own dispatch" in `docs/decisions.md`).
 *
 * @since 0.9.0
 */

/** Frames of one burst that leave together at most. */
export const MAX_FRAMES_PER_WRITE = 16

/** What the writer needs of a byte stream (Node's `cork` semantics: nested, and `uncork` at depth 0 does nothing). */
export interface CorkableStream {
  readonly cork: () => void
  readonly uncork: () => void
  readonly write: (bytes: Uint8Array) => void
}

/** The frames of one connection, written in bursts. */
export class BurstWriter {
  private corked = false
  /** Frames written since the stream was last corked. */
  private corkedFrames = 0

  constructor(
    private readonly stream: CorkableStream,
    private readonly framesPerWrite: number = MAX_FRAMES_PER_WRITE
  ) {}

  /** Writes one frame: held with the rest of its burst, sent with every `framesPerWrite`th and at the burst's end. */
  write(frame: Uint8Array): void {
    if (!this.corked) {
      this.corked = true
      this.corkedFrames = 0
      this.stream.cork()
      setImmediate(this.endBurst)
    }
    this.stream.write(frame)
    if (++this.corkedFrames >= this.framesPerWrite) {
      // The burst goes on: what it wrote so far leaves now, the rest stays held.
      this.corkedFrames = 0
      this.stream.uncork()
      this.stream.cork()
    }
  }

  /** Sends what is held now (the connection is closing: answers already produced still go). */
  flush(): void {
    this.endBurst()
  }

  private readonly endBurst = (): void => {
    if (!this.corked) return
    this.corked = false
    this.stream.uncork()
  }
}
