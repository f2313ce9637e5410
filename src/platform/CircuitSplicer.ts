/**
 * The relay's half of a circuit: two legs (fresh connections from the caller
 * and from the node behind a NAT), each opening with the circuit preamble and
 * a token instead of a handshake, spliced into one byte stream. The relay
 * copies bytes both ways without reading them (the ends run their own secure
 * channel through it), with back-pressure (a leg is not read while the other
 * has more than 256 KiB unsent), and closes both legs when either ends, at
 * the circuit's byte bound each way, or at its deadline. Which tokens are good,
 * and for how long, is the node's decision (`CircuitGate`, core `CircuitRelay`).
 *
 * @since 0.3.0
 */
import { Effect } from "effect"
import { toHex } from "../core/Bytes.js"
import { CIRCUIT_OPENING_BYTES, CIRCUIT_PREAMBLE } from "../node/CircuitProtocol.js"
import type { CircuitGate } from "../node/Transport.js"
import { type ByteStream, type StreamEnd, withUnread } from "./ByteStream.js"

/** Unsent bytes on one leg beyond which the other leg is not read. */
const SPLICE_HIGH_WATER_BYTES = 256 * 1024

/** True when a stream's first byte opens a circuit leg rather than a handshake. */
export const opensCircuitLeg = (firstByte: number): boolean => firstByte === CIRCUIT_PREAMBLE[0]

/** The token a circuit leg's opening carries, or undefined when the opening is not a circuit preamble. */
export const circuitTokenOf = (opening: Uint8Array): string | undefined => {
  if (opening.length < CIRCUIT_OPENING_BYTES) return undefined
  for (let i = 0; i < CIRCUIT_PREAMBLE.length; i++) {
    if (opening[i] !== CIRCUIT_PREAMBLE[i]) return undefined
  }
  return toHex(opening.subarray(CIRCUIT_PREAMBLE.length, CIRCUIT_OPENING_BYTES))
}

/** The opening a circuit leg sends: the preamble and the token's 16 bytes. */
export const circuitOpening = (tokenBytes: Uint8Array): Uint8Array => {
  const opening = new Uint8Array(CIRCUIT_OPENING_BYTES)
  opening.set(CIRCUIT_PREAMBLE)
  opening.set(tokenBytes, CIRCUIT_PREAMBLE.length)
  return opening
}

interface WaitingLeg {
  readonly stream: ByteStream
  /** The other leg arrived: the wait's deadline no longer applies (the circuit's own does). */
  readonly spliced: () => void
  /** The leg ends (the wait ran out, it hung up, or its circuit ended): called once. */
  readonly ended: (end: StreamEnd) => void
}

/** Counters of what the relay has spliced, for status and tests. */
export interface SplicerStats {
  /** Legs waiting for their other half. */
  readonly waiting: number
  /** Circuits spliced now. */
  readonly spliced: number
  /** Circuits spliced since start. */
  readonly splicedTotal: number
  /** Bytes copied since start, both ways. */
  readonly bytesRelayed: number
}

/** The relay's circuit legs: those waiting for their other half, and the splicing. */
export const makeCircuitSplicer = () => {
  let gate: CircuitGate | undefined = undefined
  const waiting = new Map<string, WaitingLeg>()
  let spliced = 0
  let splicedTotal = 0
  let bytesRelayed = 0

  /** Copies between `a` and `b` until either ends, a direction carries `maxBytes`, or `deadline` (ms since the epoch). */
  const splice = (a: ByteStream, b: ByteStream, maxBytes: number, deadline: number, onEnd: (end: StreamEnd) => void) => {
    let ended = false
    spliced++
    splicedTotal++
    const finish = (end: StreamEnd) => {
      if (ended) return
      ended = true
      spliced--
      clearTimeout(timer)
      a.destroy(end)
      b.destroy(end)
      onEnd(end)
    }
    const forward = (from: ByteStream, to: ByteStream) => {
      let carried = 0
      return (chunk: Uint8Array) => {
        carried += chunk.length
        if (carried > maxBytes) {
          finish({ reason: "Closed", detail: `the circuit carried its limit of ${maxBytes} bytes one way` })
          return
        }
        bytesRelayed += chunk.length
        to.write(chunk)
        if (to.writableLength() > SPLICE_HIGH_WATER_BYTES) from.pause()
      }
    }
    const timer = setTimeout(
      () => finish({ reason: "Closed", detail: "the circuit reached the end of its lifetime" }),
      Math.max(0, deadline - Date.now())
    )
    a.listen({ data: forward(a, b), drain: () => b.resume(), end: finish })
    b.listen({ data: forward(b, a), drain: () => a.resume(), end: finish })
  }

  /**
   * Serves one circuit leg whose opening (preamble, token and whatever
   * followed) has been read: closes it at once when the gate does not know
   * the token, else waits for the other leg (until the offer's deadline) or
   * splices it to the one waiting. Completes when the leg is closed.
   */
  const serveLeg = (stream: ByteStream, opening: Uint8Array): Effect.Effect<void> =>
    Effect.async<void>((resume) => {
      const token = circuitTokenOf(opening)
      const rest = withUnread(stream, opening.subarray(CIRCUIT_OPENING_BYTES))
      const close = (detail: string) => {
        stream.destroy({ reason: "Closed", detail })
        resume(Effect.void)
      }
      if (gate === undefined || token === undefined) return close("this node relays no circuits")
      const current = gate
      const arrival = current.arrive(token)
      if (arrival === "Unknown") return close("unknown or expired circuit token")
      const deadline = current.deadlineOf(token) ?? Date.now()
      if (arrival === "Splice") {
        const other = waiting.get(token)
        if (other === undefined) {
          current.close(token)
          return close("the other leg of the circuit is gone")
        }
        waiting.delete(token)
        other.spliced()
        splice(other.stream, rest, current.circuitBytes, deadline, (end) => {
          current.close(token)
          other.ended(end)
          resume(Effect.void)
        })
        return
      }
      // The first leg waits, unread (its stream stays paused), for the other one until the offer's deadline.
      let over = false
      const timer = setTimeout(
        () => leg.ended({ reason: "Closed", detail: "the other leg never came" }),
        Math.max(0, deadline - Date.now())
      )
      const leg: WaitingLeg = {
        stream: rest,
        spliced: () => clearTimeout(timer),
        ended: (end) => {
          if (over) return
          over = true
          clearTimeout(timer)
          if (waiting.get(token) === leg) {
            waiting.delete(token)
            current.close(token)
          }
          stream.destroy(end)
          resume(Effect.void)
        }
      }
      waiting.set(token, leg)
      // A waiting leg that hangs up gives its place back (once spliced, the splice listens instead).
      stream.listen({ data: () => {}, drain: () => {}, end: (end) => leg.ended(end) })
      return Effect.sync(() => leg.ended({ reason: "Closed", detail: "the relay is closing" }))
    })

  return {
    /** Installs the node's decisions on circuit tokens; without them every leg is closed at once. */
    setGate: (next: CircuitGate | undefined): void => {
      gate = next
    },
    serveLeg,
    stats: (): SplicerStats => ({ waiting: waiting.size, spliced, splicedTotal, bytesRelayed })
  }
}

/** The relay's circuit legs (see `makeCircuitSplicer`). */
export type CircuitSplicer = ReturnType<typeof makeCircuitSplicer>
