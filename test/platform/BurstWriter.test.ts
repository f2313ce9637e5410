/**
 * `BurstWriter`: a burst of frames leaves in groups of `MAX_FRAMES_PER_WRITE`
 * and the rest when the event loop reaches its check phase; a flush sends
 * what is held at once. The stream below counts Node's cork depth and
 * records what each uncork to depth 0 sends.
 */
import { describe, expect, it } from "@effect/vitest"
import { BurstWriter, type CorkableStream, MAX_FRAMES_PER_WRITE } from "../../src/platform/BurstWriter.js"

/** A stream with Node's cork semantics: writes are held while corked, and sent when the depth returns to 0. */
class CorkCountingStream implements CorkableStream {
  depth = 0
  held = 0
  /** Frames per send (one `writev`, or one `write` when not corked). */
  readonly sends: Array<number> = []
  readonly cork = (): void => {
    this.depth++
  }
  readonly uncork = (): void => {
    if (this.depth === 0) return
    this.depth--
    if (this.depth === 0 && this.held > 0) {
      this.sends.push(this.held)
      this.held = 0
    }
  }
  readonly write = (): void => {
    if (this.depth > 0) this.held++
    else this.sends.push(1)
  }
}

const frame = new Uint8Array([0, 0, 0, 2, 0x7b, 0x7d])
const checkPhase = () => new Promise<void>((resolve) => setImmediate(resolve))

describe("BurstWriter", () => {
  it("a burst leaves every 16 frames, and the rest at the check phase; the next burst starts afresh", async () => {
    const stream = new CorkCountingStream()
    const writer = new BurstWriter(stream)
    for (let i = 0; i < 40; i++) writer.write(frame)
    // Before: all 40 left in one send after the burst, and the peer idled meanwhile.
    expect(stream.sends).toEqual([MAX_FRAMES_PER_WRITE, MAX_FRAMES_PER_WRITE])
    expect(stream.depth).toBe(1)
    await checkPhase()
    expect(stream.sends).toEqual([16, 16, 8])
    expect(stream.depth).toBe(0)
    for (let i = 0; i < 3; i++) writer.write(frame)
    await checkPhase()
    expect(stream.sends).toEqual([16, 16, 8, 3])
  })

  it("a flush sends what is held at once, and the burst's end then does nothing more", async () => {
    const stream = new CorkCountingStream()
    const writer = new BurstWriter(stream)
    for (let i = 0; i < 5; i++) writer.write(frame)
    writer.flush()
    expect(stream.sends).toEqual([5])
    expect(stream.depth).toBe(0)
    await checkPhase()
    expect(stream.sends).toEqual([5])
    expect(stream.depth).toBe(0)
  })
})
