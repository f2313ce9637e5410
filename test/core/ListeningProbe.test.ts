/**
 * The listening probe's rules (core `ListeningProbe`): what a listener signs,
 * how an opening is read, and when an answer proves a node id. Signatures are
 * real Ed25519 from node:crypto; the attacks are the answers a hostile
 * listener could send instead.
 */
import { describe, expect, it } from "@effect/vitest"
import { concatBytes, utf8 } from "../../src/core/Bytes.js"
import { CIRCUIT_PREAMBLE } from "../../src/node/CircuitProtocol.js"
import { probeKeyInput } from "../../src/core/Datagram.js"
import {
  challengeOf,
  judgeProbeAnswer,
  opensListeningProbe,
  opensPairProbe,
  PAIR_PROBE_ANSWER_BYTES,
  type PairEnd,
  type PairProbe,
  PAIR_PROBE_ANSWER_CONTEXT,
  PAIR_PROBE_OPENING_BYTES,
  PAIR_PROBE_OPENING_CONTEXT,
  pairProbeAnswer,
  pairProbeOf,
  pairProbeOpening,
  pairProbeStatement,
  PROBE_ANSWER_BYTES,
  PROBE_CHALLENGE_BYTES,
  PROBE_CONTEXT,
  PROBE_OPENING_BYTES,
  probeAnswer,
  probeOpening,
  probeStatement
} from "../../src/core/ListeningProbe.js"
import { hmacSha256, sha256Native, verifyEd25519 } from "../../src/platform/NodeCrypto.js"
import { MAX_HANDSHAKE_MESSAGE } from "../../src/platform/SecureChannel.js"
import { seededRandomBytes } from "../support/arbitraries.js"
import { testIdentity } from "../support/relay.js"

const random = seededRandomBytes(29)
const listener = testIdentity(3)
const other = testIdentity(4)

const answerOf = (identity: typeof listener, challenge: Uint8Array) =>
  probeAnswer(identity.signingPublicKey, identity.sign, challenge)

const PROBE_PREAMBLE_FIRST = probeOpening(new Uint8Array(PROBE_CHALLENGE_BYTES))[0] as number
const PAIR_PROBE_OPENING_FIRST = pairProbeOpening(
  {
    challenge: new Uint8Array(PROBE_CHALLENGE_BYTES),
    prober: { staticKey: new Uint8Array(32), nodeId: testIdentity(1).nodeId },
    listener: { staticKey: new Uint8Array(32), nodeId: testIdentity(2).nodeId }
  },
  () => new Uint8Array(32)
)[0] as number

const judge = (answer: Uint8Array, challenge: Uint8Array, expected = listener.nodeId) =>
  judgeProbeAnswer({ expected, challenge, answer, verify: verifyEd25519, hash: sha256Native })

describe("listening probe", () => {
  it("an opening is the preamble and the challenge, read back exactly", () => {
    const challenge = random(PROBE_CHALLENGE_BYTES)
    const opening = probeOpening(challenge)
    expect(opening.length).toBe(PROBE_OPENING_BYTES)
    expect(challengeOf(opening)).toEqual(challenge)
    expect(opensListeningProbe(opening[0] as number)).toBe(true)
  })

  it("anything but exactly one opening has no challenge: short, trailing bytes, another preamble", () => {
    const opening = probeOpening(random(PROBE_CHALLENGE_BYTES))
    expect(challengeOf(opening.subarray(0, PROBE_OPENING_BYTES - 1))).toBeUndefined()
    expect(challengeOf(concatBytes(opening, Uint8Array.of(0)))).toBeUndefined()
    const circuit = opening.slice()
    circuit.set(CIRCUIT_PREAMBLE)
    expect(challengeOf(circuit)).toBeUndefined()
  })

  it("its first byte is neither a circuit leg's nor any handshake message's (a length's high byte)", () => {
    expect(opensListeningProbe(CIRCUIT_PREAMBLE[0] as number)).toBe(false)
    for (let length = 0; length <= MAX_HANDSHAKE_MESSAGE; length++) {
      expect(opensListeningProbe(length >>> 8)).toBe(false)
    }
  })

  it("the listener signs the context and the challenge, nothing else", () => {
    const challenge = random(PROBE_CHALLENGE_BYTES)
    const answer = answerOf(listener, challenge)
    expect(answer.length).toBe(PROBE_ANSWER_BYTES)
    expect(answer.subarray(0, 32)).toEqual(listener.signingPublicKey)
    const signature = answer.subarray(32)
    expect(verifyEd25519(listener.signingPublicKey, concatBytes(utf8(PROBE_CONTEXT), challenge), signature)).toBe(true)
    expect(probeStatement(challenge)).toEqual(concatBytes(utf8(PROBE_CONTEXT), challenge))
    // Not the bare challenge: an answer is good for no other Peerchat signature.
    expect(verifyEd25519(listener.signingPublicKey, challenge, signature)).toBe(false)
  })

  it("an answer to this challenge by the expected node's key proves its id", () => {
    const challenge = random(PROBE_CHALLENGE_BYTES)
    expect(judge(answerOf(listener, challenge), challenge)).toEqual({ _tag: "Proven", nodeId: listener.nodeId })
  })

  it("ATTACK: an answer replayed from an earlier probe proves nothing", () => {
    const earlier = random(PROBE_CHALLENGE_BYTES)
    const captured = answerOf(listener, earlier)
    const verdict = judge(captured, random(PROBE_CHALLENGE_BYTES))
    expect(verdict._tag).toBe("Invalid")
  })

  it("ATTACK: another node's valid answer is another node, never the expected one", () => {
    const challenge = random(PROBE_CHALLENGE_BYTES)
    expect(judge(answerOf(other, challenge), challenge)).toEqual({ _tag: "OtherNode", nodeId: other.nodeId })
  })

  it("ATTACK: the expected node's key with another key's signature, a flipped bit, or a cut answer is invalid", () => {
    const challenge = random(PROBE_CHALLENGE_BYTES)
    const forged = concatBytes(listener.signingPublicKey, answerOf(other, challenge).subarray(32))
    expect(judge(forged, challenge)._tag).toBe("Invalid")
    const flipped = answerOf(listener, challenge)
    flipped[PROBE_ANSWER_BYTES - 1] = (flipped[PROBE_ANSWER_BYTES - 1] as number) ^ 1
    expect(judge(flipped, challenge)._tag).toBe("Invalid")
    expect(judge(answerOf(listener, challenge).subarray(0, 95), challenge)._tag).toBe("Invalid")
    expect(judge(concatBytes(answerOf(listener, challenge), Uint8Array.of(0)), challenge)._tag).toBe("Invalid")
  })

  it("a key of the wrong node costs no signature check", () => {
    const challenge = random(PROBE_CHALLENGE_BYTES)
    let checks = 0
    const counting = (key: Uint8Array, message: Uint8Array, signature: Uint8Array) => {
      checks++
      return verifyEd25519(key, message, signature)
    }
    const verdict = judgeProbeAnswer({
      expected: listener.nodeId,
      challenge,
      answer: answerOf(other, challenge),
      verify: counting,
      hash: sha256Native
    })
    expect(verdict._tag).toBe("OtherNode")
    expect(checks).toBe(0)
  })
})

describe("pair probe", () => {
  const pairKey = random(32)
  const strangerKey = random(32)
  const proberStaticKey = random(32)
  const listenerStaticKey = random(32)
  const proberEnd = { staticKey: proberStaticKey, nodeId: other.nodeId }
  const listenerEnd = { staticKey: listenerStaticKey, nodeId: listener.nodeId }
  const macUnder = (key: Uint8Array) => (statement: Uint8Array) => hmacSha256(key, statement)
  const probeWith = (challenge: Uint8Array): PairProbe => ({ challenge, prober: proberEnd, listener: listenerEnd })
  const judgePair = (answer: Uint8Array, challenge: Uint8Array, key = pairKey) =>
    judgeProbeAnswer({
      expected: listener.nodeId,
      challenge,
      answer,
      verify: verifyEd25519,
      hash: sha256Native,
      pair: { probe: probeWith(challenge), mac: macUnder(key) }
    })
  /** What the listener (`own`) answers to the opening of `probe` made under `key`, holding the pair under `listenerKey`. */
  const listenerAnswer = (probe: PairProbe, key: Uint8Array, listenerKey = pairKey, own: PairEnd = listenerEnd) => {
    const opening = pairProbeOf(pairProbeOpening(probe, macUnder(key)))
    return opening === undefined ? undefined : pairProbeAnswer(opening, own, proberEnd.nodeId, macUnder(listenerKey))
  }

  it("an opening is the preamble, the challenge, the prober's static key and its MAC, read back exactly", () => {
    const challenge = random(PROBE_CHALLENGE_BYTES)
    const opening = pairProbeOpening(probeWith(challenge), macUnder(pairKey))
    expect(opening.length).toBe(PAIR_PROBE_OPENING_BYTES)
    expect(pairProbeOf(opening)).toEqual({
      challenge,
      proberStaticKey,
      proberMac: new Uint8Array(hmacSha256(pairKey, pairProbeStatement("opening", probeWith(challenge))))
    })
    expect(opensPairProbe(opening[0] as number)).toBe(true)
    expect(pairProbeOf(opening.subarray(0, PAIR_PROBE_OPENING_BYTES - 1))).toBeUndefined()
    expect(pairProbeOf(concatBytes(opening, Uint8Array.of(0)))).toBeUndefined()
    // A plain probe's opening is not a pair probe's, nor the other way round.
    expect(pairProbeOf(concatBytes(probeOpening(challenge), random(64)))).toBeUndefined()
    expect(challengeOf(opening.subarray(0, PROBE_OPENING_BYTES))).toBeUndefined()
  })

  it("its first byte is neither a plain probe's, a circuit leg's, nor any handshake message's", () => {
    expect(opensPairProbe(PROBE_PREAMBLE_FIRST)).toBe(false)
    expect(opensListeningProbe(PAIR_PROBE_OPENING_FIRST)).toBe(false)
    expect(opensPairProbe(CIRCUIT_PREAMBLE[0] as number)).toBe(false)
    for (let length = 0; length <= MAX_HANDSHAKE_MESSAGE; length++) {
      expect(opensPairProbe(length >>> 8)).toBe(false)
    }
  })

  it("each MAC covers its role's context, its maker's static key, the other end's, their node ids and the challenge", () => {
    const challenge = random(PROBE_CHALLENGE_BYTES)
    const probe = probeWith(challenge)
    expect(pairProbeStatement("opening", probe)).toEqual(
      concatBytes(utf8(PAIR_PROBE_OPENING_CONTEXT), proberStaticKey, listenerStaticKey, utf8(other.nodeId), utf8(listener.nodeId), challenge)
    )
    expect(pairProbeStatement("answer", probe)).toEqual(
      concatBytes(utf8(PAIR_PROBE_ANSWER_CONTEXT), listenerStaticKey, proberStaticKey, utf8(listener.nodeId), utf8(other.nodeId), challenge)
    )
  })

  it("the listener answers the other end of its pair with the pair's MAC, which proves the expected node", () => {
    const challenge = random(PROBE_CHALLENGE_BYTES)
    const answer = listenerAnswer(probeWith(challenge), pairKey)
    expect(answer?.length).toBe(PAIR_PROBE_ANSWER_BYTES)
    expect(judgePair(answer ?? new Uint8Array(0), challenge)).toEqual({ _tag: "Proven", nodeId: listener.nodeId })
  })

  it("ATTACK: the listener gives its MAC to nobody but the other end: a forged opening MAC, another pair's, or one made for another static key of it draws none", () => {
    const probe = probeWith(random(PROBE_CHALLENGE_BYTES))
    expect(listenerAnswer(probe, strangerKey)).toBeUndefined()
    // The prober knew an older static key of the listener (a restarted node): the listener signs instead.
    expect(listenerAnswer(probe, pairKey, pairKey, { ...listenerEnd, staticKey: random(32) })).toBeUndefined()
    // The prober took another node for it (one that claimed this listener's static key): no MAC either.
    expect(listenerAnswer(probe, pairKey, pairKey, { ...listenerEnd, nodeId: testIdentity(7).nodeId })).toBeUndefined()
    // It holds another pair with that prober (a key of another process of it): no MAC either.
    expect(listenerAnswer(probe, pairKey, strangerKey)).toBeUndefined()
    const opening = pairProbeOpening(probe, macUnder(pairKey))
    opening[opening.length - 1] = (opening[opening.length - 1] as number) ^ 1
    const tampered = pairProbeOf(opening)
    expect(tampered === undefined ? "unread" : pairProbeAnswer(tampered, listenerEnd, proberEnd.nodeId, macUnder(pairKey))).toBeUndefined()
  })

  it("ATTACK: a probe reflected to the prober draws the prober's own MAC, which its probe refuses", () => {
    const challenge = random(PROBE_CHALLENGE_BYTES)
    // The attacker sends the prober's challenge back to the prober's listener, naming the listener's static key:
    // the prober would answer with roles swapped, were the opening's MAC good for them.
    const reflected = { challenge, prober: listenerEnd, listener: proberEnd }
    const ownOpening = pairProbeOf(pairProbeOpening(probeWith(challenge), macUnder(pairKey)))
    expect(ownOpening).toBeDefined()
    if (ownOpening === undefined) return
    // The prober's own opening, with the names swapped, does not check out at the prober...
    expect(pairProbeAnswer({ ...ownOpening, proberStaticKey: listenerStaticKey }, proberEnd, listenerEnd.nodeId, macUnder(pairKey)))
      .toBeUndefined()
    // ...and the MAC the prober makes as a listener is not the answer its probe takes.
    expect(judgePair(hmacSha256(pairKey, pairProbeStatement("answer", reflected)), challenge)._tag).toBe("Invalid")
    expect(judgePair(hmacSha256(pairKey, pairProbeStatement("opening", probeWith(challenge))), challenge)._tag).toBe("Invalid")
  })

  it("ATTACK: a MAC of an earlier challenge, under another pair's key, of a plain probe's statement, or cut, proves nothing", () => {
    const challenge = random(PROBE_CHALLENGE_BYTES)
    const earlier = random(PROBE_CHALLENGE_BYTES)
    expect(judgePair(listenerAnswer(probeWith(earlier), pairKey) ?? new Uint8Array(0), challenge)._tag).toBe("Invalid")
    expect(judgePair(hmacSha256(strangerKey, pairProbeStatement("answer", probeWith(challenge))), challenge)._tag).toBe("Invalid")
    expect(judgePair(hmacSha256(pairKey, probeStatement(challenge)), challenge)._tag).toBe("Invalid")
    const flipped = hmacSha256(pairKey, pairProbeStatement("answer", probeWith(challenge)))
    flipped[5] = (flipped[5] as number) ^ 1
    expect(judgePair(flipped, challenge)._tag).toBe("Invalid")
    expect(judgePair(hmacSha256(pairKey, pairProbeStatement("answer", probeWith(challenge))).subarray(0, 31), challenge)._tag).toBe(
      "Invalid"
    )
  })

  it("ATTACK: a MAC answer counts only for a pair probe: a plain probe takes only a signature", () => {
    const challenge = random(PROBE_CHALLENGE_BYTES)
    expect(judge(hmacSha256(pairKey, pairProbeStatement("answer", probeWith(challenge))), challenge)._tag).toBe("Invalid")
  })

  it("a listener that holds no such pair answers with its signature, which a pair probe takes too", () => {
    const challenge = random(PROBE_CHALLENGE_BYTES)
    expect(judgePair(answerOf(listener, challenge), challenge)).toEqual({ _tag: "Proven", nodeId: listener.nodeId })
    expect(judgePair(answerOf(other, challenge), challenge)._tag).toBe("OtherNode")
  })

  it("both ends of a pair derive the probe key from the same input, whichever was the client; another pair does not", () => {
    const a = random(32)
    const b = random(32)
    expect(probeKeyInput(a, b)).toEqual(probeKeyInput(b, a))
    expect(probeKeyInput(a, random(32))).not.toEqual(probeKeyInput(a, b))
  })
})
