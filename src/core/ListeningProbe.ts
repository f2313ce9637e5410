/**
 * The listening probe: how a node checks that a peer accepts connections at
 * an address (a caller's dial-back, a `DialBack` request) without opening a
 * secure channel. The prober dials the address and sends a fresh random
 * challenge; the node listening there answers with its identity key and that
 * key's signature over the challenge, then closes. The answer counts only if
 * the key hashes to the node id the prober expects and the signature covers
 * this very challenge, so whoever answers must hold that node's identity key
 * (or relay the challenge to it and its answer back, which is what a TCP
 * proxy in front of the node does, and what a dial-back over the secure
 * channel allowed as well).
 *
 * Why not the secure channel: a dial-back needs only "node X listens here",
 * and a Noise handshake plus a Ping costs each end about 1.8 ms of CPU (two
 * key agreements three times over, a signature check, the RPC stack) where a
 * probe costs one signature and one check. A join at 1,000 nodes dials back
 * about 90 callers.
 *
 * Wire (protocol version 3), on a fresh TCP connection to the listening port:
 * - prober → listener: `PROBE_PREAMBLE` (4 bytes, "LISN": its first byte
 *   tells it from a handshake, whose first byte is a length's high byte, and
 *   from a circuit leg's "PCRL") ‖ challenge (32 random bytes);
 * - listener → prober: identity key (32) ‖ Ed25519 signature (64) over
 *   `PROBE_CONTEXT` ‖ challenge; then the listener closes.
 *
 * A pair probe. Two nodes that met by datagram share a pair: static X25519
 * keys each signed by its identity key and checked at that first meeting,
 * and a probe key derived from their DH (`src/platform/Datagrams.ts`), the
 * same at both ends. A prober that shares one with the node it probes sends
 * `PAIR_PROBE_PREAMBLE` ("MLSN") ‖ challenge (32) ‖ its own static key (32)
 * ‖ its MAC of the opening (32), and a listener that holds a pair with that
 * static key and finds the MAC good answers the pair's MAC of the answer
 * (32 bytes). Each MAC names its maker's static key and node id first, then
 * the other end's, under its own context (`pairProbeStatement`), so neither
 * direction's MAC stands for the other's, and a listener's MAC says which
 * node id made it. Only the two ends of the pair hold the key, and the
 * listener makes its MAC only for the node id it is, so the MAC proves what
 * the signature would, for four HMACs instead of a signature and
 * its check (about 100 µs less CPU a probe; a join draws about 26). Any other
 * listener (no such pair, a bad MAC: a stranger, a restarted node, a
 * reflection) answers with the signature as above, which the prober also
 * takes: nobody but the pair's other end learns from the answer whether the
 * listener holds that pair. Both nodes read the pair probe only since
 * datagram format 3: a pair exists only between nodes that do.
 *
 * Pure: the caller brings the randomness, the signing, the MAC and the checking.
 *
 * @since 0.3.0
 */
import { bytesEqualInConstantTime, concatBytes, utf8 } from "./Bytes.js"
import { type NodeId, nodeIdFromPublicKey } from "./Id.js"
import type { HashFunction } from "./Sha256.js"
import type { VerifySignature } from "./UserRecord.js"
import { KEY_BYTES, SIGNATURE_BYTES } from "./KeySizes.js"

/** What a probe sends first instead of a handshake: the 4 ASCII bytes "LISN". */
export const PROBE_PREAMBLE = Uint8Array.from([0x4c, 0x49, 0x53, 0x4e])

/** Random bytes of a challenge: never repeated, so an answer cannot be replayed. */
export const PROBE_CHALLENGE_BYTES = 32

/** Bytes a probe sends: the preamble and the challenge. */
export const PROBE_OPENING_BYTES = PROBE_PREAMBLE.length + PROBE_CHALLENGE_BYTES

/** Bytes of an answer: the identity key and its signature. */
export const PROBE_ANSWER_BYTES = KEY_BYTES + SIGNATURE_BYTES

/**
 * What the identity key signs: a prefix no other Peerchat signature starts
 * with (so an answer is good for nothing else), then the challenge.
 */
export const PROBE_CONTEXT = "peerchat/listening-probe/v3\n"

const PROBE_CONTEXT_BYTES = utf8(PROBE_CONTEXT)

/** True when a connection's first byte opens a listening probe. */
export const opensListeningProbe = (firstByte: number): boolean => firstByte === PROBE_PREAMBLE[0]

/** The bytes an identity key signs to answer `challenge`. */
export const probeStatement = (challenge: Uint8Array): Uint8Array => concatBytes(PROBE_CONTEXT_BYTES, challenge)

/** The opening a prober sends for `challenge` (`PROBE_CHALLENGE_BYTES` random bytes). */
export const probeOpening = (challenge: Uint8Array): Uint8Array => {
  const opening = new Uint8Array(PROBE_OPENING_BYTES)
  opening.set(PROBE_PREAMBLE)
  opening.set(challenge.subarray(0, PROBE_CHALLENGE_BYTES), PROBE_PREAMBLE.length)
  return opening
}

/**
 * The challenge of a probe's opening, or undefined when the bytes are not
 * exactly one opening (another preamble, too short, or more sent after it:
 * a prober sends nothing else, so extra bytes mean something else is talking).
 */
export const challengeOf = (opening: Uint8Array): Uint8Array | undefined => {
  if (opening.length !== PROBE_OPENING_BYTES) return undefined
  for (let i = 0; i < PROBE_PREAMBLE.length; i++) {
    if (opening[i] !== PROBE_PREAMBLE[i]) return undefined
  }
  return opening.slice(PROBE_PREAMBLE.length)
}

/** What a pair probe sends first: the 4 ASCII bytes "MLSN" (its first byte tells it from the other openings). */
export const PAIR_PROBE_PREAMBLE = Uint8Array.from([0x4d, 0x4c, 0x53, 0x4e])

/** Bytes of a static X25519 key, and of a pair probe's MACs (HMAC-SHA256). */
const STATIC_KEY_BYTES = KEY_BYTES
const MAC_BYTES = 32

/** Bytes a pair probe sends: the preamble, the challenge, the prober's static key and its MAC of the opening. */
export const PAIR_PROBE_OPENING_BYTES = PAIR_PROBE_PREAMBLE.length + PROBE_CHALLENGE_BYTES + STATIC_KEY_BYTES + MAC_BYTES

/** Bytes of a pair probe's MAC answer. */
export const PAIR_PROBE_ANSWER_BYTES = MAC_BYTES

/** What the prober's MAC covers first: its opening. */
export const PAIR_PROBE_OPENING_CONTEXT = "peerchat/listening-probe/pair-opening/v1\n"
/** What the listener's MAC covers first: its answer. */
export const PAIR_PROBE_ANSWER_CONTEXT = "peerchat/listening-probe/pair-answer/v1\n"

const PAIR_PROBE_OPENING_CONTEXT_BYTES = utf8(PAIR_PROBE_OPENING_CONTEXT)
const PAIR_PROBE_ANSWER_CONTEXT_BYTES = utf8(PAIR_PROBE_ANSWER_CONTEXT)

/** True when a connection's first byte opens a pair probe. */
export const opensPairProbe = (firstByte: number): boolean => firstByte === PAIR_PROBE_PREAMBLE[0]

/** One end of a pair probe: its static key and its node id (as the other end knows them). */
export interface PairEnd {
  readonly staticKey: Uint8Array
  readonly nodeId: NodeId
}

/** One pair probe: its challenge and its two ends, the prober and the listener (as the prober expects it). */
export interface PairProbe {
  readonly challenge: Uint8Array
  readonly prober: PairEnd
  readonly listener: PairEnd
}

/** What a prober checks a pair probe's MAC answer with: the probe, and the MAC its pair's probe key makes. */
export interface PairProbeCheck {
  readonly probe: PairProbe
  readonly mac: (statement: Uint8Array) => Uint8Array
}

/**
 * What a MAC of a pair probe covers: the role's context, then the static key
 * of the end that makes the MAC, the other end's, the maker's node id, the
 * other's, and the challenge.
 * - Each end names itself first, so a MAC of one direction is never the
 *   other's: a prober asked its own challenge back (an attacker reflecting a
 *   probe to the prober's listener) would make the prober's MAC, which the
 *   prober refuses.
 * - The node ids bind the MAC to the ids the prober checks, not only to the
 *   static keys: anyone may sign anyone's static key with their own identity
 *   key in a `Welcome` (a static key cannot sign), so a pair's static keys
 *   alone do not say whose they are. A listener makes its MAC with its own
 *   node id, so a node whose static key an attacker claimed in a `Welcome`
 *   (and whose answers it relayed, making the pair) answers the attacker's
 *   probe with a MAC the prober refuses.
 */
export const pairProbeStatement = (role: "opening" | "answer", probe: PairProbe): Uint8Array => {
  const [maker, other] = role === "opening" ? [probe.prober, probe.listener] : [probe.listener, probe.prober]
  return concatBytes(
    role === "opening" ? PAIR_PROBE_OPENING_CONTEXT_BYTES : PAIR_PROBE_ANSWER_CONTEXT_BYTES,
    maker.staticKey,
    other.staticKey,
    // Node ids are 64 lowercase hex digits: fixed length, so the concatenation is unambiguous.
    utf8(maker.nodeId),
    utf8(other.nodeId),
    probe.challenge
  )
}

/**
 * The opening of `probe`, with the prober's MAC of it under the pair's probe
 * key (`mac`): only an end of the pair can make it, so a listener answers
 * with the pair's MAC only to the other end, and tells nobody else whether
 * it holds that pair.
 */
export const pairProbeOpening = (probe: PairProbe, mac: (statement: Uint8Array) => Uint8Array): Uint8Array =>
  concatBytes(PAIR_PROBE_PREAMBLE, probe.challenge, probe.prober.staticKey, mac(pairProbeStatement("opening", probe)))

/** A pair probe's opening as sent: the challenge, the prober's static key and its MAC (nothing in it believed yet). */
export interface PairProbeOpening {
  readonly challenge: Uint8Array
  readonly proberStaticKey: Uint8Array
  readonly proberMac: Uint8Array
}

/** The parts of a pair probe's opening, or undefined when the bytes are not exactly one. */
export const pairProbeOf = (opening: Uint8Array): PairProbeOpening | undefined => {
  if (opening.length !== PAIR_PROBE_OPENING_BYTES) return undefined
  for (let i = 0; i < PAIR_PROBE_PREAMBLE.length; i++) {
    if (opening[i] !== PAIR_PROBE_PREAMBLE[i]) return undefined
  }
  const challengeEnd = PAIR_PROBE_PREAMBLE.length + PROBE_CHALLENGE_BYTES
  const staticEnd = challengeEnd + STATIC_KEY_BYTES
  return {
    challenge: opening.slice(PAIR_PROBE_PREAMBLE.length, challengeEnd),
    proberStaticKey: opening.slice(challengeEnd, staticEnd),
    proberMac: opening.slice(staticEnd)
  }
}

/**
 * The listener's MAC answer to `opening`, when its prober is the other end of
 * the pair whose probe key makes `mac` (`proberNodeId`, as the pair has it):
 * the opening's MAC checks out, made for this listener's static key and node
 * id (`listener`). Undefined otherwise (another node, a pair this listener no
 * longer holds, a prober that knew an older static key of it or took another
 * node for it), and the listener then signs as for a plain probe.
 */
export const pairProbeAnswer = (
  opening: PairProbeOpening,
  listener: PairEnd,
  proberNodeId: NodeId,
  mac: (statement: Uint8Array) => Uint8Array
): Uint8Array | undefined => {
  const probe = { challenge: opening.challenge, prober: { staticKey: opening.proberStaticKey, nodeId: proberNodeId }, listener }
  return bytesEqualInConstantTime(opening.proberMac, mac(pairProbeStatement("opening", probe)))
    ? mac(pairProbeStatement("answer", probe))
    : undefined
}

/** The listener's answer to `challenge`: its identity key and `sign`'s signature over the statement. */
export const probeAnswer = (
  signingPublicKey: Uint8Array,
  sign: (message: Uint8Array) => Uint8Array,
  challenge: Uint8Array
): Uint8Array => concatBytes(signingPublicKey, sign(probeStatement(challenge)))

/** What a probe's answer proves. */
export type ProbeVerdict =
  | { readonly _tag: "Proven"; readonly nodeId: NodeId }
  /** The answer carries the key of another node (not checked further: it proves nothing either way). */
  | { readonly _tag: "OtherNode"; readonly nodeId: NodeId }
  | { readonly _tag: "Invalid"; readonly detail: string }

/**
 * Judges the answer to `challenge`: `Proven` when the key hashes to
 * `expected` and signed this very challenge. The hash is checked before the
 * signature, so an answer with another node's key (`OtherNode`: someone else
 * listens there, or claims to) costs no signature check.
 *
 * For a pair probe, `pair` gives the probe (its challenge is `challenge`)
 * and the MAC the pair's probe key makes of a statement (the pair is
 * `expected`'s, checked when it was made): a MAC answer is `Proven` when it
 * is that MAC of the probe's answer statement, and a signed answer (a
 * listener that no longer holds the pair) is judged as above. Without
 * `pair`, only a signed answer counts.
 */
export const judgeProbeAnswer = (options: {
  readonly expected: NodeId
  readonly challenge: Uint8Array
  readonly answer: Uint8Array
  readonly verify: VerifySignature
  readonly hash: HashFunction
  readonly pair?: PairProbeCheck | undefined
}): ProbeVerdict => {
  const { answer, pair } = options
  if (pair !== undefined && answer.length === PAIR_PROBE_ANSWER_BYTES) {
    const probe = { ...pair.probe, challenge: options.challenge }
    return bytesEqualInConstantTime(answer, pair.mac(pairProbeStatement("answer", probe)))
      ? { _tag: "Proven", nodeId: options.expected }
      : { _tag: "Invalid", detail: "the MAC is not the pair's answer to this probe" }
  }
  if (answer.length !== PROBE_ANSWER_BYTES) {
    const lengths = pair === undefined ? `${PROBE_ANSWER_BYTES}` : `${PAIR_PROBE_ANSWER_BYTES} or ${PROBE_ANSWER_BYTES}`
    return { _tag: "Invalid", detail: `an answer of ${answer.length} bytes, not ${lengths}` }
  }
  const signingKey = answer.subarray(0, KEY_BYTES)
  const nodeId = nodeIdFromPublicKey(signingKey, options.hash)
  if (nodeId !== options.expected) return { _tag: "OtherNode", nodeId }
  return options.verify(signingKey, probeStatement(options.challenge), answer.subarray(KEY_BYTES))
    ? { _tag: "Proven", nodeId }
    : { _tag: "Invalid", detail: "the signature does not cover this probe's challenge" }
}
