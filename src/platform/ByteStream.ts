/**
 * The bottom of the transport stack: an ordered, reliable byte stream to one
 * peer, with back-pressure. A TCP socket is one (`socketStream`); the secure
 * channel (`SecureChannel.ts`) turns one byte stream into another that is
 * encrypted and authenticated; a relayed link (a later step) will be one more.
 * Everything above — framing, the connection pool, the RPC adapter — sees
 * only this interface, so it works the same over any of them.
 *
 * Callbacks rather than Effect streams: this is the path of every byte, and
 * the connection above already turns readiness into Effect waits.
 *
 * @since 0.2.0
 */
import type * as net from "node:net"

/** How a byte stream ended. */
export interface StreamEnd {
  /** `ProtocolViolation` when the bytes themselves were bad (tampered, malformed); `Closed` otherwise. */
  readonly reason: "Closed" | "ProtocolViolation"
  readonly detail: string
}

/** What a byte stream reports to the one layer above it. */
export interface StreamListener {
  /** Bytes arrived, in order. */
  readonly data: (chunk: Uint8Array) => void
  /** Everything written so far has been handed to the operating system. */
  readonly drain: () => void
  /** The stream ended (called once). */
  readonly end: (end: StreamEnd) => void
}

/** An ordered, reliable, back-pressured byte stream to one peer. */
export interface ByteStream {
  /** The host the bytes come from, as this node sees it (IPv4-mapped IPv6 written as IPv4). */
  readonly remoteHost: string
  /** The port the bytes come from, as this node sees it. */
  readonly remotePort: number
  /** Sets the layer above; only the latest listener hears anything. */
  readonly listen: (listener: StreamListener) => void
  /** Queues bytes for sending; ignored once ended. */
  readonly write: (bytes: Uint8Array) => void
  /** Bytes queued and not yet handed to the operating system. */
  readonly writableLength: () => number
  /** Stops delivering `data` until `resume` (the peer is then slowed down by TCP). */
  readonly pause: () => void
  readonly resume: () => void
  readonly isPaused: () => boolean
  /** Holds writes back until `uncork`, so a burst leaves in one system call. */
  readonly cork: () => void
  readonly uncork: () => void
  /** Ends the stream at once (idempotent); the listener's `end` is called. */
  readonly destroy: (end: StreamEnd) => void
  /** Calls `onIdle` after `millis` without traffic in either direction (again after each call); 0 turns it off. */
  readonly setIdleTimeout: (millis: number, onIdle: () => void) => void
}

/** The remote host of a socket, with IPv4-mapped IPv6 addresses written as plain IPv4. */
export const observedHostOf = (socket: net.Socket): string => {
  const host = socket.remoteAddress ?? ""
  return host.startsWith("::ffff:") && host.includes(".") ? host.slice(7) : host
}

const describeError = (error: Error): string =>
  "code" in error && typeof error.code === "string" ? `${error.code}: ${error.message}` : error.message

/** A connected TCP socket as a byte stream. */
export const socketStream = (socket: net.Socket): ByteStream => {
  let listener: StreamListener | undefined = undefined
  let ended: StreamEnd | undefined = undefined
  const finish = (end: StreamEnd): void => {
    if (ended !== undefined) return
    ended = end
    socket.destroy()
    listener?.end(end)
  }
  socket.setNoDelay(true)
  socket.on("data", (chunk: Buffer) => listener?.data(chunk))
  socket.on("drain", () => listener?.drain())
  socket.on("error", (error) => finish({ reason: "Closed", detail: `socket error: ${describeError(error)}` }))
  socket.on("close", () => finish({ reason: "Closed", detail: "the peer closed the connection" }))
  return {
    remoteHost: observedHostOf(socket),
    remotePort: socket.remotePort ?? 0,
    listen: (next) => {
      listener = next
      if (ended !== undefined) next.end(ended)
    },
    write: (bytes) => {
      if (ended === undefined) socket.write(bytes)
    },
    writableLength: () => socket.writableLength,
    pause: () => socket.pause(),
    resume: () => socket.resume(),
    isPaused: () => socket.isPaused(),
    cork: () => socket.cork(),
    uncork: () => socket.uncork(),
    destroy: finish,
    setIdleTimeout: (millis, onIdle) => {
      socket.removeAllListeners("timeout")
      socket.setTimeout(millis)
      if (millis > 0) socket.on("timeout", onIdle)
    }
  }
}

/**
 * `stream` with `unread` delivered first, flowing again: for a layer that
 * read the opening bytes of a stream (`readOpening`, which leaves it paused)
 * to decide what it is, and hands it on as if only what follows `unread` had
 * been read.
 */
export const withUnread = (stream: ByteStream, unread: Uint8Array): ByteStream => {
  let pending: Uint8Array | undefined = unread.length === 0 ? undefined : unread
  return {
    ...stream,
    listen: (next) => {
      stream.listen(next)
      const first = pending
      pending = undefined
      if (first !== undefined) next.data(first)
      stream.resume()
    }
  }
}

/**
 * Reads the opening bytes of `stream`: calls `onOpening` once at least
 * `atLeast(firstByte)` bytes have arrived (so the first byte can say how many
 * more a decision needs) with everything read so far, leaving the stream
 * paused for the next layer (see `withUnread`); or `onEnd` if it ends first.
 * Holds at most one read beyond what was asked for.
 */
export const readOpening = (
  stream: ByteStream,
  atLeast: (firstByte: number) => number,
  onOpening: (opening: Uint8Array) => void,
  onEnd: (end: StreamEnd) => void
): void => {
  const chunks: Array<Uint8Array> = []
  let held = 0
  let done = false
  stream.listen({
    data: (chunk) => {
      if (done || chunk.length === 0) return
      chunks.push(chunk)
      held += chunk.length
      if (held < atLeast((chunks[0] as Uint8Array)[0] as number)) return
      done = true
      stream.pause()
      const opening = new Uint8Array(held)
      let offset = 0
      for (const part of chunks) {
        opening.set(part, offset)
        offset += part.length
      }
      onOpening(opening)
    },
    drain: () => {},
    end: (end) => {
      if (done) return
      done = true
      onEnd(end)
    }
  })
}
