/**
 * The listening probe's rules (core `ListeningProbe`): what a listener signs,
 * how an opening is read, and when an answer proves a node id. Signatures are
 * real Ed25519 from node:crypto; the attacks are the answers a hostile
 * listener could send instead.
 */
import { describe, expect, it } from "@effect/vitest"
import { concatBytes, utf8 } from "../../src/core/Bytes.js"
import { CIRCUIT_PREAMBLE } from "../../src/node/CircuitProtocol.js"
import {
  challengeOf,
  judgeProbeAnswer,
  opensListeningProbe,
  PROBE_ANSWER_BYTES,
  PROBE_CHALLENGE_BYTES,
  PROBE_CONTEXT,
  PROBE_OPENING_BYTES,
  probeAnswer,
  probeOpening,
  probeStatement
} from "../../src/core/ListeningProbe.js"
import { sha256Native, verifyEd25519 } from "../../src/platform/NodeCrypto.js"
import { MAX_HANDSHAKE_MESSAGE } from "../../src/platform/SecureChannel.js"
import { seededRandomBytes } from "../support/arbitraries.js"
import { testIdentity } from "../support/relay.js"

const random = seededRandomBytes(29)
const listener = testIdentity(3)
const other = testIdentity(4)

const answerOf = (identity: typeof listener, challenge: Uint8Array) =>
  probeAnswer(identity.signingPublicKey, identity.sign, challenge)

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
