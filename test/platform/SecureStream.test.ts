/**
 * The secure stream after the handshake: a corked burst is sealed as one
 * record (one cipher set-up and one tag for the whole burst), the peer opens
 * exactly the bytes written, in order, and nothing held leaks out of a
 * stream that ends while corked.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { concatBytes, utf8 } from "../../src/core/Bytes.js"
import type { ByteStream, StreamEnd, StreamListener } from "../../src/platform/ByteStream.js"
import { UnthrottledStream } from "../support/byteStreams.js"
import { LengthPrefixedReader, MAX_NOISE_MESSAGE } from "../../src/platform/Noise.js"
import { verifyEd25519 } from "../../src/platform/NodeCrypto.js"
import { initiate, makeSecureSelf, respond } from "../../src/platform/SecureChannel.js"
import { testIdentity } from "../support/relay.js"

/** One end of an in-memory connection: every write reaches the other end at once, and is recorded. */
class LinkedStream extends UnthrottledStream implements ByteStream {
  readonly writes: Array<Uint8Array> = []
  peer: LinkedStream | undefined = undefined
  private listener: StreamListener | undefined = undefined
  private early: Array<Uint8Array> = []
  private ended: StreamEnd | undefined = undefined

  constructor(readonly remoteHost: string, readonly remotePort: number) {
    super()
  }

  readonly listen = (listener: StreamListener): void => {
    this.listener = listener
    const early = this.early
    this.early = []
    for (const bytes of early) listener.data(bytes)
  }
  readonly write = (bytes: Uint8Array): void => {
    if (this.ended !== undefined) return
    const copy = bytes.slice()
    this.writes.push(copy)
    this.peer?.receive(copy)
  }
  private receive(bytes: Uint8Array): void {
    if (this.listener === undefined) this.early.push(bytes)
    else this.listener.data(bytes)
  }
  readonly destroy = (end: StreamEnd): void => {
    this.ended ??= end
  }
}

/** Two nodes with a finished handshake over linked in-memory streams, and what the responder's side receives. */
const securePair = Effect.gen(function*() {
  const clientEnd = new LinkedStream("192.0.2.1", 40001)
  const serverEnd = new LinkedStream("192.0.2.2", 40002)
  clientEnd.peer = serverEnd
  serverEnd.peer = clientEnd
  const [client, server] = yield* Effect.all([
    initiate({ stream: clientEnd, self: makeSecureSelf(testIdentity(31)), verify: verifyEd25519, listenPort: 1 }),
    respond({ stream: serverEnd, self: makeSecureSelf(testIdentity(32)), verify: verifyEd25519 })
  ], { concurrency: 2 })
  const received: Array<Uint8Array> = []
  server.stream.listen({ data: (bytes) => received.push(bytes.slice()), drain: () => {}, end: () => {} })
  // What the client wrote during the handshake is not part of the test.
  const handshakeWrites = clientEnd.writes.length
  return {
    client: client.stream,
    /** The raw writes (sealed records) the client made after the handshake. */
    recordsWritten: () => clientEnd.writes.slice(handshakeWrites),
    received: () => concatBytes(...received)
  }
})

/** The records in raw bytes a secure stream wrote: each is a 2-byte length and that many bytes. */
const recordCount = (writes: ReadonlyArray<Uint8Array>): number => {
  const reader = new LengthPrefixedReader(MAX_NOISE_MESSAGE)
  for (const bytes of writes) reader.push(bytes)
  let count = 0
  while (reader.next()._tag === "Message") count++
  return count
}

const frames = Array.from({ length: 16 }, (_, index) => utf8(`{"frame":${index},"padding":"${"x".repeat(index * 40)}"}`))

describe("secure stream: corked bursts", () => {
  it.effect("writes made while corked leave as one record at the outermost uncork, and the peer reads them all in order", () =>
    Effect.gen(function*() {
      const pair = yield* securePair
      pair.client.cork()
      pair.client.cork()
      for (const frame of frames) pair.client.write(frame)
      // Held as plaintext, and counted as not yet sent (a slow reader's bound sees them).
      expect(pair.recordsWritten()).toHaveLength(0)
      expect(pair.client.writableLength()).toBe(frames.reduce((sum, frame) => sum + frame.length, 0))
      pair.client.uncork()
      expect(pair.recordsWritten()).toHaveLength(0)
      pair.client.uncork()
      expect(recordCount(pair.recordsWritten())).toBe(1)
      expect(pair.client.writableLength()).toBe(0)
      expect(pair.received()).toEqual(concatBytes(...frames))
      // An extra uncork does nothing (Node's semantics).
      pair.client.uncork()
      expect(recordCount(pair.recordsWritten())).toBe(1)
    }))

  it.effect("uncorked writes are sealed one record each, as before", () =>
    Effect.gen(function*() {
      const pair = yield* securePair
      for (const frame of frames.slice(0, 3)) pair.client.write(frame)
      expect(recordCount(pair.recordsWritten())).toBe(3)
      expect(pair.received()).toEqual(concatBytes(...frames.slice(0, 3)))
    }))

  it.effect("a burst larger than one record is sealed as it fills records, holds at most one record's worth, and arrives whole", () =>
    Effect.gen(function*() {
      const pair = yield* securePair
      const big = Array.from({ length: 5 }, (_, index) => new Uint8Array(30_000).fill(index + 1))
      pair.client.cork()
      for (const part of big) pair.client.write(part)
      // The third write filled a record: 90,000 bytes left as two records; 60,000 are held.
      expect(recordCount(pair.recordsWritten())).toBe(2)
      expect(pair.client.writableLength()).toBe(60_000)
      pair.client.uncork()
      expect(recordCount(pair.recordsWritten())).toBe(3)
      expect(pair.received()).toEqual(concatBytes(...big))
    }))

  it.effect("a stream destroyed while corked sends nothing it held", () =>
    Effect.gen(function*() {
      const pair = yield* securePair
      pair.client.cork()
      pair.client.write(frames[0] as Uint8Array)
      pair.client.destroy({ reason: "Closed", detail: "closing" })
      pair.client.uncork()
      expect(pair.recordsWritten()).toHaveLength(0)
      expect(pair.client.writableLength()).toBe(0)
    }))
})
