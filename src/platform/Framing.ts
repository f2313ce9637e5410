/**
 * The TCP transport's framing: every message is a 4-byte big-endian length
 * followed by that many bytes of UTF-8 JSON. The reader checks the announced
 * length against the frame limit before it buffers anything, so a peer
 * cannot make the node hold more than one frame's worth of its bytes
 * (plus one socket chunk), and a length over the limit ends the connection at
 * once. Chunks are kept as received; only a frame that spans several of them
 * is copied, once, into a buffer of its own size.
 *
 * @since 0.1.0
 */
import { Buffer } from "node:buffer"

/** Bytes of the length prefix in front of every frame. */
export const FRAME_HEADER_BYTES = 4

/** What the reader found next in the bytes received so far. */
export type FrameRead =
  | { readonly _tag: "Frame"; readonly value: unknown }
  | { readonly _tag: "NeedMore" }
  | { readonly _tag: "Oversized"; readonly announced: number }
  | { readonly _tag: "Malformed"; readonly detail: string }

const NEED_MORE: FrameRead = { _tag: "NeedMore" }

/**
 * Incremental decoder of length-prefixed JSON frames for one connection.
 * Holds at most the bytes received and not yet consumed; the connection
 * stops reading (pauses the socket) when that exceeds its own bound.
 */
export class FrameReader {
  private chunks: Array<Buffer> = []
  /** Read position inside `chunks[0]`. */
  private offset = 0
  private buffered = 0

  constructor(private readonly maxFrameBytes: number) {}

  /** Bytes received and not yet returned as frames. */
  get bufferedBytes(): number {
    return this.buffered
  }

  /** The length the next frame's header announces, once its header has arrived; undefined before. */
  get announcedBytes(): number | undefined {
    return this.buffered < FRAME_HEADER_BYTES ? undefined : this.peekLength()
  }

  /** Appends bytes received from the socket. */
  push(chunk: Buffer): void {
    if (chunk.length === 0) return
    this.chunks.push(chunk)
    this.buffered += chunk.length
  }

  /** Drops everything buffered (the connection is closing). */
  clear(): void {
    this.chunks = []
    this.offset = 0
    this.buffered = 0
  }

  /** Decodes the next complete frame, if the bytes for one have arrived. */
  next(): FrameRead {
    if (this.buffered < FRAME_HEADER_BYTES) return NEED_MORE
    const length = this.peekLength()
    if (length > this.maxFrameBytes) return { _tag: "Oversized", announced: length }
    if (this.buffered < FRAME_HEADER_BYTES + length) return NEED_MORE
    this.skip(FRAME_HEADER_BYTES)
    let text = ""
    if (length === 0) {
      // Not JSON either; falls through to the parse error below.
    } else if (this.firstChunk().length - this.offset >= length) {
      const first = this.firstChunk()
      text = first.toString("utf8", this.offset, this.offset + length)
      this.skip(length)
    } else {
      text = this.copyOut(length).toString("utf8")
    }
    try {
      return { _tag: "Frame", value: JSON.parse(text) as unknown }
    } catch (cause) {
      return { _tag: "Malformed", detail: cause instanceof Error ? cause.message : "invalid JSON" }
    }
  }

  private firstChunk(): Buffer {
    // Callers check `buffered` first, and `buffered > 0` implies at least one chunk.
    return this.chunks[0] as Buffer
  }

  /** The length prefix at the read position, which may span chunks; needs `buffered >= 4`. */
  private peekLength(): number {
    const first = this.firstChunk()
    if (first.length - this.offset >= FRAME_HEADER_BYTES) return first.readUInt32BE(this.offset)
    let value = 0
    let chunkIndex = 0
    let position = this.offset
    for (let i = 0; i < FRAME_HEADER_BYTES; i++) {
      let chunk = this.chunks[chunkIndex] as Buffer
      while (position >= chunk.length) {
        chunkIndex++
        position = 0
        chunk = this.chunks[chunkIndex] as Buffer
      }
      value = value * 256 + (chunk[position] as number)
      position++
    }
    return value
  }

  /** Drops `bytes` from the read position; needs `buffered >= bytes`. */
  private skip(bytes: number): void {
    let remaining = bytes
    while (remaining > 0) {
      const first = this.firstChunk()
      const available = first.length - this.offset
      if (available > remaining) {
        this.offset += remaining
        break
      }
      remaining -= available
      this.chunks.shift()
      this.offset = 0
    }
    this.buffered -= bytes
  }

  /** Copies the next `bytes` (spread over several chunks) into one buffer and consumes them. */
  private copyOut(bytes: number): Buffer {
    const out = Buffer.allocUnsafe(bytes)
    let written = 0
    while (written < bytes) {
      const first = this.firstChunk()
      const count = Math.min(first.length - this.offset, bytes - written)
      first.copy(out, written, this.offset, this.offset + count)
      written += count
      this.skip(count)
    }
    return out
  }
}

/** A value whose JSON encoding exceeds the frame limit. */
export class FrameTooLarge extends Error {
  constructor(readonly bytes: number, readonly limit: number) {
    super(`frame of ${bytes} bytes exceeds the limit of ${limit}`)
  }
}

/** Encodes `value` as one frame; fails when its JSON exceeds `maxFrameBytes`. */
export const encodeFrame = (value: unknown, maxFrameBytes: number): Buffer | FrameTooLarge => {
  const json = JSON.stringify(value)
  const length = Buffer.byteLength(json, "utf8")
  if (length > maxFrameBytes) return new FrameTooLarge(length, maxFrameBytes)
  const frame = Buffer.allocUnsafe(FRAME_HEADER_BYTES + length)
  frame.writeUInt32BE(length, 0)
  frame.write(json, FRAME_HEADER_BYTES, "utf8")
  return frame
}
