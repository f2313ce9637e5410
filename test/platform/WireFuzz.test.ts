/**
 * Fuzzing of the platform's decoders (issue 12): the frame reader, the Noise
 * record reader and handshake, the secure channel's handshake payloads and
 * its two sides driven by a hostile peer, the files a node reads from its
 * data directory, and a live `TcpTransport` fed hostile bytes before and
 * after a real handshake. For arbitrary input and for mutations of valid
 * input, every decoder must never throw (only typed failures), never hang
 * (every wait is bounded), and never accept a mutant that breaks its
 * invariants (a handshake completes only with the identity that signed it;
 * a damaged file is reported and left as it was). The live transport must
 * keep serving an honest node throughout and hold no connection afterwards.
 *
 * Samples are drawn with the shared `PROPERTY_SEED`, so a failure names the
 * case that replays it.
 */
import { arbByteMutations, isObject, mutateBytes, type Path, pathsOf, REMOVE, updateAt } from "../support/mutations.js"
import { NodeContext } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Cause, Deferred, Duration, Effect, Either, Exit, FastCheck as fc, Fiber, Option, ParseResult, Queue, Schema, Scope } from "effect"
import { chmod, mkdir, readdir, readFile, writeFile } from "node:fs/promises"
import * as net from "node:net"
import { join } from "node:path"
import { afterAll } from "vitest"
import { toHex, utf8 } from "../../src/core/Bytes.js"
import { type Address } from "../../src/core/Contact.js"
import { nodeIdFromPublicKey } from "../../src/core/Id.js"
import { sha256 } from "../../src/core/Sha256.js"
import { type IdentityService, Identity, Signatures } from "../../src/node/Identity.js"
import { Profile, ProfileStore } from "../../src/node/Profile.js"
import { Ping, PROTOCOL_VERSION, RequestRefused } from "../../src/node/Protocol.js"
import type { DhtHandlers } from "../../src/node/Transport.js"
import { bootstrapOf, NETWORK_FILE, NetworkSettings, readSettings } from "../../src/cli/chat/Settings.js"
import { type ByteStream, socketStream, type StreamEnd, type StreamListener } from "../../src/platform/ByteStream.js"
import { UnthrottledStream } from "../support/byteStreams.js"
import { encodeFrame, FrameReader } from "../../src/platform/Framing.js"
import * as IdentityStore from "../../src/platform/IdentityStore.js"
import { encryptionKeyFromSeed, sha256Native, sign, signingKeyFromSeed, verifyEd25519 } from "../../src/platform/NodeCrypto.js"
import {
  encodeLengthPrefixed,
  generateX25519KeyPair,
  LengthPrefixedReader,
  MAX_NOISE_MESSAGE,
  makeXXHandshake,
  NoiseError,
  type XXHandshake
} from "../../src/platform/Noise.js"
import { PROFILE_FILE, profileFileLayer } from "../../src/platform/ProfileFile.js"
import {
  API_TOKEN_FILE,
  readApiToken,
  readRuntimeInfo,
  RUNTIME_INFO_FILE,
  RuntimeInfo
} from "../../src/platform/RuntimeFiles.js"
import {
  initiate,
  makeSecureSelf,
  Opening,
  Proof,
  PROLOGUE,
  Rejected,
  respond,
  Welcome
} from "../../src/platform/SecureChannel.js"
import { TcpTransport, type TcpTransportConfig } from "../../src/platform/TcpTransport.js"
import { requestClasses } from "../../src/platform/WireProtocol.js"
import { PROPERTY_SEED } from "../support/arbitraries.js"
import { freshLoopbackHost } from "../support/loopback.js"
import { scopedTempDir } from "../support/tempDir.js"

// ---------------------------------------------------------------------------
// Sampling and reporting

/** `count` deterministic samples of `arbitrary`. */
const samples = <T>(arbitrary: fc.Arbitrary<T>, count: number, salt = 0): ReadonlyArray<T> =>
  fc.sample(arbitrary, { seed: PROPERTY_SEED + salt, numRuns: count })

/** Outcome counts of every target, printed when FUZZ_REPORT is set (for the report). */
const report: Array<{ readonly name: string; readonly runs: number; readonly counts: Record<string, number> }> = []

const tally = (name: string, runs: number) => {
  const counts: Record<string, number> = {}
  report.push({ name, runs, counts })
  return {
    counts,
    count: (outcome: string) => {
      counts[outcome] = (counts[outcome] ?? 0) + 1
    },
    atLeast: (minimums: Readonly<Record<string, number>>) => {
      for (const [outcome, minimum] of Object.entries(minimums)) {
        expect(counts[outcome] ?? 0, `"${outcome}" in ${JSON.stringify(counts)}`).toBeGreaterThanOrEqual(minimum)
      }
    }
  }
}

afterAll(() => {
  if (process.env["FUZZ_REPORT"] === undefined) return
  for (const { counts, name, runs } of report) console.log(`${runs}\t${name}\t${JSON.stringify(counts)}`)
})

// ---------------------------------------------------------------------------
// Mutations (the shared pieces are in test/support/mutations.ts)

const arbLeaf: fc.Arbitrary<unknown> = fc.oneof(
  fc.jsonValue({ maxDepth: 2 }),
  fc.constantFrom<unknown>(null, -0, -1, 0.5, 2 ** 53, 1e308, "", "\u0000", "\ud800", "A".repeat(70_000), [], {}, true),
  fc.string({ unit: "binary", maxLength: 16 })
)

/** A structural change at one node: replace, remove, wrap, retype, grow or shrink. */
const arbStructural = fc.record({
  at: fc.nat(),
  kind: fc.nat({ max: 7 }),
  leaf: arbLeaf,
  text: fc.string({ unit: "binary", minLength: 1, maxLength: 4 }),
  repeat: fc.integer({ min: 2, max: 80 })
})

type Structural = typeof arbStructural extends fc.Arbitrary<infer T> ? T : never

const mutateNode = (old: unknown, m: Structural): unknown => {
  switch (m.kind) {
    case 0:
      return m.leaf
    case 1:
      return REMOVE
    case 2:
      // A secret wrapped in an array is a classic way to make a decoder quote it.
      return [old]
    case 3:
      return { value: old }
    case 4:
      if (typeof old === "string") return old + m.text
      if (typeof old === "number") return old + 0.5
      return m.leaf
    case 5:
      if (typeof old === "string") return old.toUpperCase() === old ? `${old.toLowerCase()}G` : old.toUpperCase()
      if (typeof old === "number") return -old - 1
      return m.leaf
    case 6:
      if (Array.isArray(old)) return Array.from({ length: Math.max(1, old.length) * m.repeat }, (_, i) => old[i % Math.max(1, old.length)])
      if (typeof old === "string") return old.repeat(m.repeat * 50)
      return m.leaf
    default:
      if (isObject(old)) {
        const copy: Record<string, unknown> = { ...old }
        Object.defineProperty(copy, m.text, { value: m.leaf, enumerable: true, writable: true, configurable: true })
        return copy
      }
      return typeof old === "number" ? String(old) : typeof old === "string" ? old.length : m.leaf
  }
}

const arbTweak = fc.record({ at: fc.nat(), pick: fc.nat(), delta: fc.integer({ min: 1, max: 3 }) })

/** A shape-keeping change: one leaf gets another value of its own kind, so the mutant usually still decodes. */
const tweakLeaf = (value: unknown, tweak: typeof arbTweak extends fc.Arbitrary<infer T> ? T : never): unknown => {
  const leaves = pathsOf(value).filter((path) => {
    const leaf = path.reduce<unknown>((node, key) => (node as Record<string | number, unknown>)[key], value)
    return typeof leaf === "string" || typeof leaf === "number" || typeof leaf === "boolean"
  })
  if (leaves.length === 0) return value
  return updateAt(value, leaves[tweak.at % leaves.length] as Path, (old) => {
    if (typeof old === "boolean") return !old
    if (typeof old === "number") return old - tweak.delta >= 0 && tweak.pick % 2 === 0 ? old - tweak.delta : old + tweak.delta
    if (typeof old !== "string" || old.length === 0) return old
    const index = tweak.pick % old.length
    const others = [...new Set(old)].filter((char) => char !== old.charAt(index))
    const replacement = others.length > 0 ? (others[tweak.at % others.length] as string) : "a"
    return old.slice(0, index) + replacement + old.slice(index + 1)
  })
}

/** A mutant of `value` as JSON text: structural, shape-keeping, or bytes of its text changed. */
const mutatedJsonText = (value: unknown): fc.Arbitrary<Uint8Array> =>
  fc.oneof(
    { weight: 2, arbitrary: fc.array(arbStructural, { minLength: 1, maxLength: 2 }).map((ms) => utf8(JSON.stringify(ms.reduce((v, m) => {
      const paths = pathsOf(v)
      return updateAt(v, paths[m.at % paths.length] as Path, (old) => mutateNode(old, m))
    }, value)) ?? "null")) },
    { weight: 3, arbitrary: fc.array(arbTweak, { minLength: 1, maxLength: 2 }).map((ts) => utf8(JSON.stringify(ts.reduce(tweakLeaf, value)))) },
    { weight: 2, arbitrary: arbByteMutations.map((m) => mutateBytes(utf8(JSON.stringify(value)), m)) }
  )

/** Bytes a hostile peer or a damaged disk might hold. */
const arbGarbage: fc.Arbitrary<Uint8Array> = fc.oneof(
  fc.uint8Array({ maxLength: 300 }),
  fc.uint8Array({ minLength: 1000, maxLength: 4000 }),
  fc.jsonValue({ maxDepth: 3 }).map((value) => utf8(JSON.stringify(value) ?? "null")),
  fc.string({ unit: "binary", maxLength: 200 }).map(utf8)
)

/** `bytes` cut at the given sizes (the rest in one piece). */
const cut = (bytes: Uint8Array, sizes: ReadonlyArray<number>): Array<Uint8Array> => {
  const chunks: Array<Uint8Array> = []
  let at = 0
  for (const size of sizes) {
    if (at >= bytes.length) break
    chunks.push(bytes.subarray(at, at + size))
    at += size
  }
  if (at < bytes.length) chunks.push(bytes.subarray(at))
  return chunks
}

const arbSizes = fc.array(fc.integer({ min: 1, max: 70 }), { maxLength: 30 })

const parseJsonText = (bytes: Uint8Array): Option.Option<unknown> => {
  try {
    return Option.some(JSON.parse(new TextDecoder().decode(bytes)) as unknown)
  } catch {
    return Option.none()
  }
}

// ---------------------------------------------------------------------------
// FrameReader

/** The frames of a whole byte string, read the simplest way: the reference the incremental reader must agree with. */
const referenceFrames = (bytes: Uint8Array, maxFrameBytes: number): Array<string> => {
  const out: Array<string> = []
  const buffer = Buffer.from(bytes)
  let at = 0
  while (buffer.length - at >= 4) {
    const length = buffer.readUInt32BE(at)
    if (length > maxFrameBytes) {
      out.push(`Oversized ${length}`)
      return out
    }
    if (buffer.length - at - 4 < length) return out
    const text = buffer.toString("utf8", at + 4, at + 4 + length)
    at += 4 + length
    try {
      out.push(`Frame ${JSON.stringify(JSON.parse(text))}`)
    } catch {
      out.push("Malformed")
    }
  }
  return out
}

const validFrames = (values: ReadonlyArray<unknown>): Uint8Array =>
  Buffer.concat(values.map((value) => {
    const frame = encodeFrame(value, 1 << 20)
    if (!(frame instanceof Uint8Array)) throw new Error("frame too large")
    return frame
  }))

/** One frame of `value` (whatever its size: the node must refuse it, not the test). */
const frameOf = (value: unknown): Uint8Array => {
  const json = Buffer.from(JSON.stringify(value) ?? "null", "utf8")
  const header = Buffer.alloc(4)
  header.writeUInt32BE(json.length)
  return Buffer.concat([header, json])
}

describe("FrameReader", () => {
  it("arbitrary and mutated streams, cut anywhere: the same frames as a whole-buffer reading, never a throw, never more buffered than received", () => {
    const arbStream = fc.oneof(
      fc.uint8Array({ maxLength: 600 }),
      fc.array(fc.jsonValue({ maxDepth: 2 }), { maxLength: 6 }).map(validFrames),
      fc.array(fc.oneof(fc.uint8Array({ maxLength: 40 }), fc.jsonValue({ maxDepth: 1 }).map((v) => utf8(JSON.stringify(v) ?? "null"))), { maxLength: 6 })
        .map((bodies) => Buffer.concat(bodies.map((body) => Buffer.concat([Buffer.from([0, 0, body.length >>> 8, body.length & 255]), body])))),
      fc.tuple(fc.array(fc.jsonValue({ maxDepth: 2 }), { minLength: 1, maxLength: 6 }), arbByteMutations)
        .map(([values, m]) => mutateBytes(validFrames(values), m))
    )
    const tallied = tally("FrameReader: arbitrary and mutated streams, arbitrary chunking", 1000)
    for (const [bytes, sizes, maxFrameBytes] of samples(fc.tuple(arbStream, arbSizes, fc.constantFrom(0, 1, 16, 200, 1 << 20)), 1000)) {
      const reader = new FrameReader(maxFrameBytes)
      const read: Array<string> = []
      let pushed = 0
      let consumed = 0
      let stopped = false
      for (const chunk of cut(bytes, sizes)) {
        if (stopped) break
        reader.push(Buffer.from(chunk))
        pushed += chunk.length
        for (;;) {
          const before = reader.bufferedBytes
          const next = reader.next()
          expect(reader.bufferedBytes).toBeLessThanOrEqual(pushed - consumed)
          if (next._tag === "NeedMore") break
          if (next._tag === "Oversized") {
            // Reported as soon as the length is in, whatever follows.
            expect(before).toBeGreaterThanOrEqual(4)
            read.push(`Oversized ${next.announced}`)
            stopped = true
            break
          }
          consumed += before - reader.bufferedBytes
          read.push(next._tag === "Frame" ? `Frame ${JSON.stringify(next.value)}` : "Malformed")
        }
      }
      expect(read).toEqual(referenceFrames(bytes, maxFrameBytes))
      tallied.count(read.some((entry) => entry.startsWith("Oversized")) ? "oversized" : read.length === 0 ? "no frame" : read.includes("Malformed") ? "frames and malformed" : "frames")
    }
    tallied.atLeast({ oversized: 100, frames: 100, "frames and malformed": 30 })
  })
})

// ---------------------------------------------------------------------------
// LengthPrefixedReader

const referenceMessages = (bytes: Uint8Array, max: number): Array<string> => {
  const out: Array<string> = []
  let at = 0
  while (bytes.length - at >= 2) {
    const length = (bytes[at] as number) * 256 + (bytes[at + 1] as number)
    if (length > max) {
      out.push(`Oversized ${length}`)
      return out
    }
    if (bytes.length - at - 2 < length) return out
    out.push(toHex(bytes.subarray(at + 2, at + 2 + length)))
    at += 2 + length
  }
  return out
}

describe("LengthPrefixedReader", () => {
  it("arbitrary and mutated record streams, cut anywhere (also into thousands of 1-byte chunks): the same messages as a whole-buffer reading", () => {
    const arbStream = fc.oneof(
      fc.uint8Array({ maxLength: 800 }),
      fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 8 }).map((messages) => Buffer.concat(messages.map(encodeLengthPrefixed))),
      // Hundreds of small messages: thousands of 1-byte chunks in the reader at once.
      fc.array(fc.uint8Array({ maxLength: 12 }), { minLength: 300, maxLength: 600 }).map((messages) => Buffer.concat(messages.map(encodeLengthPrefixed))),
      fc.tuple(fc.array(fc.uint8Array({ maxLength: 300 }), { minLength: 1, maxLength: 8 }), arbByteMutations)
        .map(([messages, m]) => mutateBytes(Buffer.concat(messages.map(encodeLengthPrefixed)), m))
    )
    const arbCutting = fc.oneof(arbSizes, fc.constant(Array.from({ length: 10_000 }, () => 1)))
    const tallied = tally("LengthPrefixedReader: arbitrary and mutated streams, arbitrary chunking", 600)
    const arbCase = fc.tuple(arbStream, arbCutting, fc.constantFrom(0, 1, 100, 1024, MAX_NOISE_MESSAGE), fc.boolean())
    for (const [bytes, sizes, max, eager] of samples(arbCase, 600)) {
      const reader = new LengthPrefixedReader(max)
      const read: Array<string> = []
      let stopped = false
      const chunks = cut(bytes, sizes)
      // Read after every chunk, or only once everything is in (thousands of chunks held at once).
      for (const [index, chunk] of chunks.entries()) {
        if (stopped) break
        // A copy per chunk: the reader keeps chunks by reference.
        reader.push(chunk.slice())
        if (!eager && index < chunks.length - 1) continue
        for (;;) {
          const next = reader.next()
          if (next._tag === "NeedMore") break
          if (next._tag === "Oversized") {
            read.push(`Oversized ${next.announced}`)
            stopped = true
            break
          }
          read.push(toHex(next.bytes))
        }
      }
      expect(read).toEqual(referenceMessages(bytes, max))
      tallied.count(stopped ? "oversized" : read.length === 0 ? "no message" : "messages")
    }
    tallied.atLeast({ oversized: 50, messages: 150 })
  })
})

// ---------------------------------------------------------------------------
// The Noise handshake: garbage and mutated messages at every step

/** Public keys of small order on Curve25519 (and their encodings with the ignored top bit set). */
const SMALL_ORDER_KEYS = [
  "0000000000000000000000000000000000000000000000000000000000000000",
  "0100000000000000000000000000000000000000000000000000000000000000",
  "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
  "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
  "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
  "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
  "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
  "0000000000000000000000000000000000000000000000000000000000000080",
  "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b880",
  "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f11d7"
].map((hex) => Buffer.from(hex, "hex"))

const noisePair = () => ({
  initiator: makeXXHandshake({ initiator: true, prologue: PROLOGUE, staticKeyPair: generateX25519KeyPair() }),
  responder: makeXXHandshake({ initiator: false, prologue: PROLOGUE, staticKeyPair: generateX25519KeyPair() })
})

const rightOf = <A>(result: Either.Either<A, NoiseError>): A => {
  if (Either.isLeft(result)) throw new Error(`unexpected ${result.left.message}`)
  return result.right
}

/** Once a read failed, the handshake refuses everything and cannot be split. */
const expectDead = (side: XXHandshake) => {
  expect(side.isComplete).toBe(false)
  const again = side.readMessage(new Uint8Array(200))
  expect(Either.isLeft(again) && again.left.reason).toBe("OutOfOrder")
  const write = side.writeMessage(new Uint8Array(0))
  expect(Either.isLeft(write) && write.left.reason).toBe("OutOfOrder")
  expect(() => side.split()).toThrow(NoiseError)
}

describe("Noise XX handshake: readMessage with garbage and mutated messages", () => {
  it("message 1 (the responder's read): any 32 to 65,535 bytes are taken, anything else is Malformed; small-order keys fail the reply, never throw", () => {
    const arbMessage = fc.oneof(
      fc.uint8Array({ maxLength: 100 }),
      fc.uint8Array({ minLength: 32, maxLength: 2000 }),
      fc.tuple(fc.constantFrom(...SMALL_ORDER_KEYS), fc.uint8Array({ maxLength: 40 })).map(([key, rest]) => Buffer.concat([key, rest]))
    )
    const tallied = tally("Noise message 1 at the responder: arbitrary", 300)
    for (const message of samples(arbMessage, 300)) {
      const { responder } = noisePair()
      let read: Either.Either<Uint8Array, NoiseError> | undefined
      expect(() => {
        read = responder.readMessage(message)
      }).not.toThrow()
      if (read === undefined || Either.isLeft(read)) {
        expect(message.length < 32 || message.length > MAX_NOISE_MESSAGE).toBe(true)
        expect(read?._tag === "Left" && read.left.reason).toBe("Malformed")
        tallied.count("malformed")
        continue
      }
      let reply: Either.Either<Uint8Array, NoiseError> | undefined
      expect(() => {
        reply = responder.writeMessage(utf8("{}"))
      }).not.toThrow()
      const smallOrder = SMALL_ORDER_KEYS.some((key) => key.equals(Buffer.from(message.subarray(0, 32))))
      if (smallOrder) {
        expect(reply?._tag === "Left" && reply.left.reason).toBe("Malformed")
        tallied.count("small-order key refused")
      } else {
        tallied.count(reply !== undefined && Either.isRight(reply) ? "taken, replied" : "taken, reply refused")
      }
    }
    tallied.atLeast({ malformed: 50, "small-order key refused": 30, "taken, replied": 60 })
  })

  it("messages 2 and 3: garbage and every mutant of a real message are refused (Decrypt or Malformed), and the handshake is dead afterwards", () => {
    const arbCase = fc.tuple(
      fc.constantFrom(2, 3),
      fc.oneof(
        fc.uint8Array({ maxLength: 400 }).map((bytes) => ({ garbage: bytes, mutations: undefined })),
        arbByteMutations.map((mutations) => ({ garbage: undefined, mutations }))
      )
    )
    const tallied = tally("Noise messages 2 and 3: garbage and mutants", 400)
    for (const [index, input] of samples(arbCase, 400)) {
      const { initiator, responder } = noisePair()
      const first = rightOf(initiator.writeMessage(utf8(JSON.stringify({ version: PROTOCOL_VERSION }))))
      rightOf(responder.readMessage(first))
      const second = rightOf(responder.writeMessage(utf8("welcome")))
      let reader: XXHandshake = initiator
      let real = second
      if (index === 3) {
        rightOf(initiator.readMessage(second))
        real = rightOf(initiator.writeMessage(utf8("proof")))
        reader = responder
      }
      const message = input.garbage ?? mutateBytes(real, input.mutations ?? [])
      if (Buffer.from(message).equals(Buffer.from(real))) {
        tallied.count("unchanged")
        continue
      }
      let read: Either.Either<Uint8Array, NoiseError> | undefined
      expect(() => {
        read = reader.readMessage(message)
      }).not.toThrow()
      expect(read !== undefined && Either.isLeft(read)).toBe(true)
      const reason = read?._tag === "Left" ? read.left.reason : "accepted"
      expect(["Decrypt", "Malformed"]).toContain(reason)
      tallied.count(`message ${index}: ${reason}`)
      // A length-check failure leaves the state usable; anything else ends it.
      if (reason === "Decrypt") expectDead(reader)
    }
    tallied.atLeast({ "message 2: Decrypt": 30, "message 3: Decrypt": 30, "message 2: Malformed": 10 })
  })
})

// ---------------------------------------------------------------------------
// The secure channel: its payload schemas, and each side against a hostile peer

const testIdentity = (seed: number): IdentityService => {
  const signing = signingKeyFromSeed(new Uint8Array(32).fill(seed))
  return {
    nodeId: nodeIdFromPublicKey(signing.publicKey, sha256Native),
    signingPublicKey: signing.publicKey,
    encryptionPublicKey: encryptionKeyFromSeed(new Uint8Array(32).fill(seed + 100)).publicKey,
    sign: (message) => sign(signing.privateKey, message)
  }
}

/** The decoder contract for a schema: no throw; a failure formats; a success round-trips. */
const decodeChecked = <A, I>(schema: Schema.Schema<A, I>, input: unknown): Either.Either<A, ParseResult.ParseError> => {
  let result: Either.Either<A, ParseResult.ParseError> | undefined
  expect(() => {
    result = Schema.decodeUnknownEither(schema)(input)
  }).not.toThrow()
  const decoded = result as Either.Either<A, ParseResult.ParseError>
  if (Either.isLeft(decoded)) {
    expect(() => ParseResult.TreeFormatter.formatErrorSync(decoded.left)).not.toThrow()
    return decoded
  }
  expect(Schema.is(schema)(decoded.right)).toBe(true)
  const encoded = Schema.encodeSync(schema)(decoded.right)
  expect(JSON.stringify(Schema.encodeSync(schema)(Schema.decodeUnknownSync(schema)(JSON.parse(JSON.stringify(encoded)))))).toBe(JSON.stringify(encoded))
  return decoded
}

const server = testIdentity(2)
const client = testIdentity(9)
const serverSelf = makeSecureSelf(server)
const clientSelf = makeSecureSelf(client)
const validOpening = { version: PROTOCOL_VERSION }
const validWelcome = {
  _tag: "Welcome",
  signingKey: toHex(server.signingPublicKey),
  staticSignature: toHex(serverSelf.staticSignature),
  observed: { host: "192.0.2.9", port: 40000 }
}
const validRejected = { _tag: "Rejected", reason: "version 1 is not supported" }
const validProof = {
  _tag: "Proof",
  signingKey: toHex(client.signingPublicKey),
  staticSignature: toHex(clientSelf.staticSignature),
  listenPort: 9999
}

describe("secure channel payloads: Opening, Welcome, Rejected, Proof", () => {
  const targets = [
    { name: "Opening", schema: Opening as Schema.Schema<unknown, unknown>, valid: validOpening },
    { name: "Welcome", schema: Welcome as Schema.Schema<unknown, unknown>, valid: validWelcome },
    { name: "Rejected", schema: Rejected as Schema.Schema<unknown, unknown>, valid: validRejected },
    { name: "Proof", schema: Proof as Schema.Schema<unknown, unknown>, valid: validProof }
  ]
  for (const target of targets) {
    it(`${target.name}: arbitrary and mutated payloads decode to a typed failure or a value that round-trips`, () => {
      const tallied = tally(`${target.name} payload: arbitrary and mutated`, 300)
      const arbInput = fc.oneof(
        fc.jsonValue({ maxDepth: 3 }),
        mutatedJsonText(target.valid).map((bytes) => Option.getOrNull(parseJsonText(bytes)))
      )
      for (const input of samples(arbInput, 300)) {
        tallied.count(Either.isRight(decodeChecked(target.schema, input)) ? "decoded" : "refused")
      }
      tallied.atLeast({ decoded: 30, refused: 100 })
    })
  }
})

/**
 * One end of an in-memory byte stream: what the code under test writes goes
 * to `written`; the test delivers the peer's bytes and ends it.
 */
class TestStream extends UnthrottledStream implements ByteStream {
  readonly remoteHost = "192.0.2.9"
  readonly remotePort = 40000
  private listener: StreamListener | undefined = undefined
  private ended: StreamEnd | undefined = undefined
  readonly written: Queue.Queue<Uint8Array> = Effect.runSync(Queue.unbounded<Uint8Array>())
  writtenBytes = 0

  readonly listen = (listener: StreamListener): void => {
    this.listener = listener
    if (this.ended !== undefined) listener.end(this.ended)
  }
  readonly write = (bytes: Uint8Array): void => {
    if (this.ended !== undefined) return
    this.writtenBytes += bytes.length
    Queue.unsafeOffer(this.written, bytes.slice())
  }
  readonly destroy = (end: StreamEnd): void => this.finish(end)

  /** The peer's bytes arrive. */
  deliver(bytes: Uint8Array): void {
    if (this.ended === undefined) this.listener?.data(bytes)
  }

  /** The peer hangs up. */
  finish(end: StreamEnd = { reason: "Closed", detail: "the peer closed the connection" }): void {
    if (this.ended !== undefined) return
    this.ended = end
    this.listener?.end(end)
  }
}

const withPrefix = (message: Uint8Array): Uint8Array => encodeLengthPrefixed(message)

/** The next length-prefixed message the code under test wrote (each write is one whole message). */
const nextWritten = (stream: TestStream) =>
  Queue.take(stream.written).pipe(
    Effect.map((bytes) => bytes.subarray(2)),
    Effect.timeoutFail({ duration: "5 seconds", onTimeout: () => "nothing written" })
  )

/** How a handshake side ended: only a HandshakeError may fail it; a defect or a hang is a bug. */
const settle = <A>(fiber: Fiber.RuntimeFiber<A, unknown>) =>
  Effect.gen(function*() {
    const exit = yield* Fiber.await(fiber).pipe(
      Effect.timeoutFail({ duration: "5 seconds", onTimeout: () => "the handshake hangs" })
    )
    if (Exit.isSuccess(exit)) return { _tag: "Success" as const, value: exit.value }
    const failure = Cause.failureOption(exit.cause)
    expect(Cause.isDie(exit.cause), Cause.pretty(exit.cause)).toBe(false)
    expect(Option.isSome(failure) && (failure.value as { _tag?: string })._tag).toBe("HandshakeError")
    return { _tag: "Failure" as const }
  })

const encodeJson = (value: unknown) => utf8(JSON.stringify(value))

/** `count` turns of the event loop, so fibers woken by delivered bytes run. */
const turns = (count: number) =>
  Effect.promise(async () => {
    for (let i = 0; i < count; i++) await new Promise<void>((resolve) => setImmediate(resolve))
  })

describe("secure channel: each side against a hostile peer (in memory)", () => {
  it.live("respond: garbage in any chunks, then a hang-up, is a HandshakeError, never a defect or a hang", () =>
    Effect.gen(function*() {
      const tallied = tally("respond: garbage bytes, arbitrary chunking, then close", 300)
      const arbBytes = fc.oneof(
        arbGarbage,
        // A first message of the right size with a random key and payload: taken, then the opening fails.
        fc.tuple(fc.uint8Array({ minLength: 32, maxLength: 300 }), fc.uint8Array({ maxLength: 50 })).map(([message, rest]) => Buffer.concat([withPrefix(message), rest])),
        // A real first message, then garbage where the third should be.
        fc.uint8Array({ maxLength: 1100 }).map((rest) => {
          const noise = makeXXHandshake({ initiator: true, prologue: PROLOGUE, staticKeyPair: generateX25519KeyPair() })
          return Buffer.concat([withPrefix(rightOf(noise.writeMessage(encodeJson(validOpening)))), rest])
        })
      )
      for (const [bytes, sizes] of samples(fc.tuple(arbBytes, arbSizes), 300)) {
        const stream = new TestStream()
        const fiber = Effect.runFork(respond({ stream, self: serverSelf, verify: verifyEd25519 }))
        for (const chunk of cut(bytes, sizes)) stream.deliver(chunk)
        // Let it answer what it can before the hang-up.
        yield* turns(3)
        stream.finish()
        const outcome = yield* settle(fiber)
        expect(outcome._tag).toBe("Failure")
        // It answers at most one handshake message of bounded size.
        expect(stream.writtenBytes).toBeLessThanOrEqual(2 + 1024)
        tallied.count(stream.writtenBytes > 0 ? "replied, then failed" : "failed")
      }
      tallied.atLeast({ failed: 100, "replied, then failed": 20 })
    }))

  it.live("respond: a hostile initiator with real Noise and mutated payloads completes only with the identity that signed the static key", () =>
    Effect.gen(function*() {
      const arbCase = fc.oneof(
        { weight: 1, arbitrary: mutatedJsonText(validOpening).map((opening) => ({ opening, proof: encodeJson(validProof) })) },
        { weight: 4, arbitrary: mutatedJsonText(validProof).map((proof) => ({ opening: encodeJson(validOpening), proof })) },
        { weight: 1, arbitrary: arbGarbage.map((proof) => ({ opening: encodeJson(validOpening), proof })) }
      )
      const tallied = tally("respond: real Noise, mutated Opening and Proof payloads", 300)
      for (const { opening, proof } of samples(arbCase, 300)) {
        const stream = new TestStream()
        const fiber = Effect.runFork(respond({ stream, self: serverSelf, verify: verifyEd25519 }))
        const noise = makeXXHandshake({ initiator: true, prologue: PROLOGUE, staticKeyPair: clientSelf.staticKeys })
        const first = noise.writeMessage(opening)
        if (Either.isLeft(first)) {
          stream.finish()
          expect((yield* settle(fiber))._tag).toBe("Failure")
          tallied.count("opening too large to send")
          continue
        }
        stream.deliver(withPrefix(first.right))
        const decodedOpening = Option.flatMap(parseJsonText(opening), (value) => Either.getRight(Schema.decodeUnknownEither(Opening)(value)))
        if (Option.isNone(decodedOpening) || decodedOpening.value.version !== PROTOCOL_VERSION) {
          // Refused; another version is told why (a Rejected the initiator can read).
          if (Option.isSome(decodedOpening)) {
            const reply = rightOf(noise.readMessage(yield* nextWritten(stream)))
            expect(Schema.decodeUnknownSync(Rejected)(JSON.parse(new TextDecoder().decode(reply)))._tag).toBe("Rejected")
          }
          stream.finish()
          expect((yield* settle(fiber))._tag).toBe("Failure")
          tallied.count(Option.isSome(decodedOpening) ? "opening of another version, rejected" : "opening refused")
          continue
        }
        rightOf(noise.readMessage(yield* nextWritten(stream)))
        const third = noise.writeMessage(proof)
        if (Either.isLeft(third)) {
          // Too large for any Noise message: the hostile side cannot even send it.
          stream.finish()
          expect((yield* settle(fiber))._tag).toBe("Failure")
          tallied.count("proof too large to send")
          continue
        }
        stream.deliver(withPrefix(third.right))
        const outcome = yield* settle(fiber)
        const decodedProof = Option.flatMap(parseJsonText(proof), (value) => Either.getRight(Schema.decodeUnknownEither(Proof)(value)))
        const genuine = Option.isSome(decodedProof) && decodedProof.value.signingKey === validProof.signingKey &&
          decodedProof.value.staticSignature === validProof.staticSignature
        if (outcome._tag === "Success") {
          expect(genuine).toBe(true)
          expect(outcome.value.nodeId).toBe(client.nodeId)
          expect(Option.isSome(decodedProof) && outcome.value.listenPort).toBe(Option.isSome(decodedProof) && decodedProof.value.listenPort)
          tallied.count("completed as the signer")
        } else {
          expect(genuine).toBe(false)
          tallied.count(Option.isSome(decodedProof) ? "proof decoded, signature refused" : "proof refused")
        }
      }
      tallied.atLeast({ "completed as the signer": 10, "proof decoded, signature refused": 20, "proof refused": 30 })
    }))

  it.live("initiate: a hostile responder with garbage or mutated Welcome payloads completes only with the identity that signed the static key", () =>
    Effect.gen(function*() {
      const arbCase = fc.oneof(
        { weight: 4, arbitrary: mutatedJsonText(validWelcome).map((payload) => ({ payload, raw: undefined })) },
        { weight: 1, arbitrary: mutatedJsonText(validRejected).map((payload) => ({ payload, raw: undefined })) },
        { weight: 1, arbitrary: fc.tuple(arbGarbage, arbSizes).map(([raw, sizes]) => ({ payload: undefined, raw: cut(raw, sizes) })) }
      )
      const tallied = tally("initiate: real Noise, mutated Welcome/Rejected payloads, or garbage", 300)
      for (const { payload, raw } of samples(arbCase, 300)) {
        const stream = new TestStream()
        const fiber = Effect.runFork(initiate({ stream, self: clientSelf, verify: verifyEd25519, listenPort: 9999 }))
        const noise = makeXXHandshake({ initiator: false, prologue: PROLOGUE, staticKeyPair: serverSelf.staticKeys })
        rightOf(noise.readMessage(yield* nextWritten(stream)))
        if (raw !== undefined) {
          for (const chunk of raw) stream.deliver(chunk)
          stream.finish()
          expect((yield* settle(fiber))._tag).toBe("Failure")
          tallied.count("garbage refused")
          continue
        }
        const welcomeBytes = payload ?? new Uint8Array()
        const second = noise.writeMessage(welcomeBytes)
        if (Either.isLeft(second)) {
          stream.finish()
          expect((yield* settle(fiber))._tag).toBe("Failure")
          tallied.count("welcome too large to send")
          continue
        }
        stream.deliver(withPrefix(second.right))
        // The initiator either fails or sends message 3 and completes: nothing is left to wait for.
        const outcome = yield* settle(fiber)
        if (outcome._tag === "Success") expect(Either.isRight(noise.readMessage(yield* nextWritten(stream)))).toBe(true)
        stream.finish()
        const decoded = Option.flatMap(parseJsonText(welcomeBytes), (value) => Either.getRight(Schema.decodeUnknownEither(Welcome)(value)))
        const genuine = Option.isSome(decoded) && decoded.value.signingKey === validWelcome.signingKey &&
          decoded.value.staticSignature === validWelcome.staticSignature
        if (outcome._tag === "Success") {
          expect(genuine).toBe(true)
          expect(outcome.value.nodeId).toBe(server.nodeId)
          expect(Option.isSome(decoded) && outcome.value.observed).toEqual(Option.isSome(decoded) && decoded.value.observed)
          tallied.count("completed as the signer")
        } else {
          expect(genuine).toBe(false)
          tallied.count(Option.isSome(decoded) ? "welcome decoded, signature refused" : "welcome refused or rejected")
        }
      }
      tallied.atLeast({ "completed as the signer": 10, "welcome decoded, signature refused": 30, "garbage refused": 20 })
    }))
})

// ---------------------------------------------------------------------------
// Files in the data directory

const SIGNING_SEED = "5ec3e7d0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6071829304151"
const ENCRYPTION_SEED = "e4c47a9f0b1c2d3e4f5061728394a5b6c7d8e9f00112233445566778899aabbc"
const validIdentityFile = { version: 1, signingSeed: SIGNING_SEED, encryptionSeed: ENCRYPTION_SEED, createdAt: 1_700_000_000_000 }

/** Whether `text` quotes any 10-character piece of `secret`. */
const leaks = (text: string, secret: string): boolean => {
  for (let i = 0; i + 10 <= secret.length; i++) if (text.includes(secret.slice(i, i + 10))) return true
  return false
}

const arbFileContent = (valid: unknown): fc.Arbitrary<Uint8Array> =>
  fc.oneof({ weight: 1, arbitrary: arbGarbage }, { weight: 4, arbitrary: mutatedJsonText(valid) })

/** Writes `bytes` to `path` with mode 0600 (as the node writes it). */
const writePrivate = (path: string, bytes: Uint8Array) =>
  Effect.promise(async () => {
    await writeFile(path, bytes, { mode: 0o600 })
    await chmod(path, 0o600)
  })

const readBytes = (path: string) => Effect.promise(async () => new Uint8Array(await readFile(path)))
const sameBytes = (a: Uint8Array, b: Uint8Array): boolean => Buffer.from(a).equals(Buffer.from(b))
const listDir = (dir: string) => Effect.promise(async () => (await readdir(dir)).sort())

describe("files in the data directory: damaged content is a typed error, and the file is left as it was", () => {
  it.scopedLive("identity.json: Corrupt (never a throw, never a seed in the message) or exactly the keys of a valid document", () =>
    Effect.gen(function*() {
      const dir = yield* scopedTempDir("fuzz-identity")
      const file = join(dir, IdentityStore.IDENTITY_FILE)
      const tallied = tally("identity.json: arbitrary and mutated", 250)
      for (const content of samples(arbFileContent(validIdentityFile), 250)) {
        yield* writePrivate(file, content)
        const result = yield* Effect.either(IdentityStore.loadOrCreateKeyPairs(dir, 0))
        expect(sameBytes(yield* readBytes(file), content)).toBe(true)
        expect(yield* listDir(dir)).toEqual([IdentityStore.IDENTITY_FILE])
        const valid = Option.flatMap(parseJsonText(content), (value) => Either.getRight(Schema.decodeUnknownEither(IdentityStore.IdentityFile)(value)))
        if (Either.isRight(result)) {
          expect(Option.isSome(valid)).toBe(true)
          if (Option.isSome(valid)) {
            expect(toHex(result.right.signing.publicKey)).toBe(toHex(signingKeyFromSeed(Buffer.from(valid.value.signingSeed, "hex")).publicKey))
          }
          tallied.count("loaded")
          continue
        }
        expect(result.left._tag).toBe("IdentityError")
        expect(result.left.reason).toBe("Corrupt")
        const message = `${result.left.message} ${result.left.detail}`
        expect(leaks(message, SIGNING_SEED) || leaks(message, ENCRYPTION_SEED), message).toBe(false)
        tallied.count("Corrupt")
      }
      tallied.atLeast({ Corrupt: 150, loaded: 10 })
    }).pipe(Effect.provide(NodeContext.layer)))

  it.scopedLive("profile.json: Corrupt or a valid profile, and loading never writes", () =>
    Effect.gen(function*() {
      const dir = yield* scopedTempDir("fuzz-profile")
      const file = join(dir, PROFILE_FILE)
      const store = yield* ProfileStore.pipe(Effect.provide(profileFileLayer(dir)))
      const validProfile = { version: 1, username: "alice", sequence: 5, claim: { username: "alice", proof: { difficulty: 10, nonce: 123 } } }
      const tallied = tally("profile.json: arbitrary and mutated", 250)
      for (const content of samples(arbFileContent(validProfile), 250)) {
        yield* writePrivate(file, content)
        const result = yield* Effect.either(store.load)
        expect(sameBytes(yield* readBytes(file), content)).toBe(true)
        if (Either.isRight(result)) {
          expect(Schema.is(Profile)(result.right)).toBe(true)
          tallied.count("loaded")
        } else {
          expect(result.left).toMatchObject({ _tag: "ProfileError", reason: "Corrupt", path: file })
          tallied.count("Corrupt")
        }
      }
      tallied.atLeast({ Corrupt: 150, loaded: 10 })
    }).pipe(Effect.provide(NodeContext.layer)))

  it.scopedLive("node.json and api-token: Corrupt or valid; a damaged token is never replaced, nor quoted", () =>
    Effect.gen(function*() {
      const dir = yield* scopedTempDir("fuzz-runtime")
      const infoFile = join(dir, RUNTIME_INFO_FILE)
      const tokenFile = join(dir, API_TOKEN_FILE)
      const validInfo = {
        version: 1,
        pid: 4242,
        nodeId: "ab".repeat(32),
        listen: "127.0.0.1:4242",
        api: "[::1]:5000",
        startedAt: 1_700_000_000_000
      }
      const token = "7f3a9c2e5b8d1f4a6c0e3b7d9f2a5c8e1b4d7f0a3c6e9b2d5f8a1c4e7b0d3f6a"
      const info = tally("node.json: arbitrary and mutated", 200)
      for (const content of samples(arbFileContent(validInfo), 200, 1)) {
        yield* writePrivate(infoFile, content)
        const result = yield* Effect.either(readRuntimeInfo(dir))
        expect(sameBytes(yield* readBytes(infoFile), content)).toBe(true)
        if (Either.isRight(result)) {
          expect(Schema.is(RuntimeInfo)(result.right)).toBe(true)
          info.count("read")
        } else {
          expect(result.left).toMatchObject({ _tag: "RuntimeFileError", reason: "Corrupt" })
          info.count("Corrupt")
        }
      }
      info.atLeast({ Corrupt: 100, read: 10 })

      const tokens = tally("api-token: arbitrary and mutated (read by a client)", 200)
      const arbToken = fc.oneof(
        arbGarbage,
        fc.array(arbTweak, { minLength: 1, maxLength: 2 }).map((ts) => utf8(`${ts.reduce(tweakLeaf, token) as string}\n`)),
        arbByteMutations.map((m) => mutateBytes(utf8(`${token}\n`), m))
      )
      for (const content of samples(arbToken, 200, 2)) {
        yield* writePrivate(tokenFile, content)
        const read = yield* Effect.either(readApiToken(dir))
        expect(sameBytes(yield* readBytes(tokenFile), content)).toBe(true)
        if (Either.isRight(read)) {
          expect(read.right).toMatch(/^[0-9a-f]{64}$/)
          tokens.count("read")
        } else {
          expect(read.left).toMatchObject({ _tag: "RuntimeFileError", reason: "Corrupt" })
          expect(leaks(read.left.message, token), read.left.message).toBe(false)
          tokens.count("Corrupt")
        }
      }
      tokens.atLeast({ Corrupt: 100, read: 3 })
    }).pipe(Effect.provide(NodeContext.layer)))

  it.scopedLive("network.json (the chat's saved settings): Corrupt or settings whose every address reads back", () =>
    Effect.gen(function*() {
      const dir = yield* scopedTempDir("fuzz-settings")
      yield* Effect.promise(() => mkdir(dir, { recursive: true }))
      const file = join(dir, NETWORK_FILE)
      const validSettings = { version: 1, bootstrap: ["192.0.2.10:4242", "[::1]:5000", "peer.example:1"] }
      const tallied = tally("network.json: arbitrary and mutated", 250)
      for (const content of samples(arbFileContent(validSettings), 250, 3)) {
        yield* writePrivate(file, content)
        const result = yield* Effect.either(readSettings(dir))
        expect(sameBytes(yield* readBytes(file), content)).toBe(true)
        if (Either.isRight(result)) {
          expect(Option.isSome(result.right)).toBe(true)
          if (Option.isSome(result.right)) {
            expect(Schema.is(NetworkSettings)(result.right.value)).toBe(true)
            expect(bootstrapOf(result.right.value)).toHaveLength(result.right.value.bootstrap.length)
          }
          tallied.count("read")
        } else {
          expect(result.left).toMatchObject({ _tag: "SettingsError", reason: "Corrupt" })
          tallied.count("Corrupt")
        }
      }
      tallied.atLeast({ Corrupt: 150, read: 10 })
    }).pipe(Effect.provide(NodeContext.layer)))
})

// ---------------------------------------------------------------------------
// A live TcpTransport fed hostile bytes

const key = (digit: string) => digit.repeat(64)

const fuzzHandlers: Omit<DhtHandlers, "DialBack"> = {
  Ping: (caller) => Effect.succeed({ observedHost: caller.observedHost ?? caller.address.host }),
  FindNode: () => Effect.succeed({ contacts: [] }),
  FindValue: () => Effect.succeed({ _tag: "Closer" as const, contacts: [] }),
  Store: (_caller, request) =>
    request.record.username === "mallory"
      ? Effect.fail(new RequestRefused({ reason: "NotAccepted", detail: "no" }))
      : Effect.succeed({ outcome: "Stored" as const })
}

const startTransport = (seed: number, config: Partial<TcpTransportConfig>) =>
  TcpTransport.make({ listen: { host: freshLoopbackHost(), port: 0 }, ...config }).pipe(
    Effect.provideService(Identity, testIdentity(seed)),
    Effect.provideService(Signatures, { verify: verifyEd25519, claimHash: sha256 })
  )

/** A raw TCP connection from `from`; `closed` completes when it closes (from either side). */
const rawConnection = (address: Address, from: string) =>
  Effect.gen(function*() {
    const closed = yield* Deferred.make<void>()
    const socket = yield* Effect.acquireRelease(
      Effect.async<net.Socket>((resume) => {
        const socket = net.connect({ host: address.host, port: address.port, localAddress: from }, () => resume(Effect.succeed(socket)))
        socket.on("error", () => {})
        socket.on("close", () => Deferred.unsafeDone(closed, Exit.void))
      }),
      (socket) => Effect.sync(() => socket.destroy())
    )
    return { socket, closed: Deferred.await(closed) }
  })

/** Waits up to `millis` for `closed`; true when it closed in time. */
const closedWithin = (closed: Effect.Effect<void>, millis: number) =>
  closed.pipe(Effect.as(true), Effect.timeoutTo({ duration: Duration.millis(millis), onTimeout: () => false, onSuccess: (value) => value }))

/** Frames the honest client reads back from a secure stream. */
const frameQueue = (stream: ByteStream) =>
  Effect.gen(function*() {
    const frames = yield* Queue.unbounded<unknown>()
    const reader = new FrameReader(1 << 20)
    stream.listen({
      data: (chunk) => {
        reader.push(Buffer.from(chunk))
        for (let read = reader.next(); read._tag === "Frame"; read = reader.next()) frames.unsafeOffer(read.value)
      },
      drain: () => {},
      end: () => {}
    })
    return frames
  })

const requestTags = Object.keys(requestClasses) as Array<keyof typeof requestClasses>

/** Whether a `Request` frame is one the server must answer (rather than close the connection on). */
const isValidRequest = (frame: unknown): frame is { readonly id: string } => {
  if (!isObject(frame) || frame["_tag"] !== "Request") return false
  const { id, payload, tag } = frame
  if (typeof id !== "string" || !/^[0-9]{1,20}$/.test(id) || typeof tag !== "string") return false
  if (!requestTags.includes(tag as keyof typeof requestClasses)) return false
  const request = requestClasses[tag as keyof typeof requestClasses] as Schema.Schema<unknown, unknown> | undefined
  return requestTags.includes(tag as keyof typeof requestClasses) && request !== undefined && Either.isRight(Schema.decodeUnknownEither(request)(payload))
}

const validRequestFrames: ReadonlyArray<unknown> = [
  { _tag: "Request", id: "1", tag: "Ping", payload: { _tag: "Ping" }, headers: [] },
  { _tag: "Request", id: "2", tag: "FindNode", payload: { _tag: "FindNode", target: key("a") }, headers: [] },
  { _tag: "Request", id: "3", tag: "FindValue", payload: { _tag: "FindValue", key: key("b") }, headers: [["x", "y"]] },
  {
    _tag: "Request",
    id: "4",
    tag: "FetchMail",
    payload: { _tag: "FetchMail", recipientKey: key("c"), authorization: { requestedAt: 1, signature: "d".repeat(128) } },
    headers: []
  },
  { _tag: "Ping" },
  { _tag: "Interrupt", requestId: "9" },
  { _tag: "Eof" }
]

/**
 * What the node must do with one decoded frame from an authenticated peer
 * (docs/protocol.md, "Anything that does not decode closes that connection"):
 * answer a well-formed request with an exit for its id, answer a ping, close
 * on anything that is not a message of the protocol; interrupts, acks and
 * an end-of-stream have no visible answer ("either").
 */
const reactionTo = (frame: unknown): "answer" | "pong" | "close" | "either" => {
  if (!isObject(frame)) return "close"
  switch (frame["_tag"]) {
    case "Request":
      return isValidRequest(frame) ? "answer" : "close"
    case "Interrupt":
    case "Ack":
      return typeof frame["requestId"] === "string" && /^[0-9]{1,20}$/.test(frame["requestId"]) ? "either" : "close"
    case "Ping":
      return "pong"
    case "Eof":
      return "either"
    default:
      return "close"
  }
}

/**
 * The reaction to a stream of (decrypted) bytes: "close" when its first frame
 * calls for it (or is oversized or not JSON), the frame's own reaction when the
 * bytes are exactly one frame, else "either" (later frames may end the
 * connection before an answer to an earlier one is written).
 */
const reactionToBytes = (bytes: Uint8Array): { readonly reaction: ReturnType<typeof reactionTo>; readonly frame: unknown } => {
  const [first] = referenceFrames(bytes, 1 << 20)
  if (first === undefined) return { reaction: "either", frame: undefined }
  if (!first.startsWith("Frame ")) return { reaction: "close", frame: undefined }
  const frame = JSON.parse(first.slice("Frame ".length)) as unknown
  const reaction = reactionTo(frame)
  const single = Buffer.from(bytes).readUInt32BE(0) + 4 === bytes.length
  return { reaction: reaction === "close" || single ? reaction : "either", frame }
}

describe("a live TcpTransport fed hostile bytes", () => {
  it.scopedLive("arbitrary bytes before the handshake, then arbitrary frames after a real one: honest pings succeed after every case, and no connection is left", () =>
    Effect.gen(function*() {
      const target = yield* startTransport(2, { idleTimeout: Duration.seconds(10) })
      yield* target.serve(fuzzHandlers)
      const honestScope = yield* Scope.make()
      const honest = yield* startTransport(1, { callTimeout: Duration.seconds(10) }).pipe(Scope.extend(honestScope))
      const at = { address: target.localAddress, nodeId: testIdentity(2).nodeId }
      const ping = (label: string) =>
        honest.send(at, new Ping({})).pipe(
          Effect.mapError((error) => `honest ping failed after ${label}: ${error.message}`)
        )
      yield* ping("start")
      const attackers = Array.from({ length: 12 }, () => freshLoopbackHost())
      /** How long to wait for a close the protocol requires, and for one it does not (then we hang up). */
      const MUST_CLOSE_MS = 5000
      const MAY_CLOSE_MS = 15

      // (a) Before the handshake: garbage, announced lengths with some body, mutated real first
      // messages, and a real first message followed by a garbage third.
      const arbBefore = fc.oneof(
        fc.tuple(arbGarbage, arbSizes).map(([bytes, sizes]) => ({ kind: "garbage", chunks: cut(bytes, sizes), third: undefined, mustClose: false })),
        fc.tuple(fc.nat({ max: 65535 }), fc.uint8Array({ maxLength: 1500 })).map(([length, rest]) => ({
          kind: "announced length",
          chunks: [Uint8Array.of(length >>> 8, length & 255), rest],
          third: undefined,
          // A complete first message of random bytes is never a valid opening; an incomplete one
          // is refused once more than a handshake message's worth is buffered.
          mustClose: rest.length >= length || (length > 1024 && rest.length > 1024)
        })),
        arbByteMutations.map((m) => {
          const noise = makeXXHandshake({ initiator: true, prologue: PROLOGUE, staticKeyPair: generateX25519KeyPair() })
          return { kind: "mutated first message", chunks: [mutateBytes(withPrefix(rightOf(noise.writeMessage(encodeJson(validOpening)))), m)], third: undefined, mustClose: false }
        }),
        fc.uint8Array({ maxLength: 600 }).map((third) => ({ kind: "garbage third message", chunks: [] as Array<Uint8Array>, third, mustClose: true })),
        fc.tuple(fc.integer({ min: 1025, max: 65535 }), fc.uint8Array({ minLength: 1025, maxLength: 1500 })).map(([length, rest]) => ({
          kind: "oversized first message",
          chunks: [Uint8Array.of(length >>> 8, length & 255), rest],
          third: undefined,
          mustClose: true
        }))
      )
      const before = tally("live transport: bytes before the handshake", 200)
      let index = 0
      for (const attack of samples(arbBefore, 200, 4)) {
        index++
        const closedByNode = yield* Effect.scoped(Effect.gen(function*() {
          const { closed, socket } = yield* rawConnection(target.localAddress, attackers[index % attackers.length] as string)
          if (attack.third !== undefined) {
            const noise = makeXXHandshake({ initiator: true, prologue: PROLOGUE, staticKeyPair: generateX25519KeyPair() })
            const gotReply = yield* Deferred.make<void>()
            socket.on("data", () => Deferred.unsafeDone(gotReply, Exit.void))
            socket.write(withPrefix(rightOf(noise.writeMessage(encodeJson(validOpening)))))
            yield* Deferred.await(gotReply).pipe(Effect.timeoutFail({ duration: "5 seconds", onTimeout: () => "no second message" }))
            socket.write(withPrefix(attack.third))
          } else {
            for (const chunk of attack.chunks) socket.write(chunk)
          }
          return yield* closedWithin(closed, attack.mustClose ? MUST_CLOSE_MS : MAY_CLOSE_MS)
        }))
        if (attack.mustClose) expect(closedByNode, `case ${index}: ${attack.kind}`).toBe(true)
        before.count(`${attack.kind}: ${closedByNode ? "closed by the node" : "still waiting, hung up"}`)
        yield* ping(`before-handshake case ${index} (${attack.kind})`)
      }
      before.atLeast({
        "garbage third message: closed by the node": 20,
        "oversized first message: closed by the node": 20
      })

      // (b) After a real handshake: arbitrary bytes through the secure stream (so they pass
      // authentication and reach the framing), arbitrary JSON frames, mutated valid RPC messages,
      // and records written beside the secure stream (which fail authentication).
      const arbAfter = fc.oneof(
        { weight: 1, arbitrary: fc.tuple(arbGarbage, arbSizes).map(([bytes, sizes]) => ({ kind: "encrypted garbage", chunks: cut(bytes, sizes), raw: false })) },
        { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 3 }).map((frame) => ({ kind: "arbitrary JSON frame", chunks: [frameOf(frame)], raw: false })) },
        {
          weight: 4,
          arbitrary: fc.constantFrom(...validRequestFrames).chain((valid) => mutatedJsonText(valid)).map((text) => ({
            kind: "mutated RPC message",
            chunks: [Buffer.concat([Buffer.from([(text.length >>> 24) & 255, (text.length >>> 16) & 255, (text.length >>> 8) & 255, text.length & 255]), text])],
            raw: false
          }))
        },
        {
          weight: 1,
          arbitrary: fc.uint8Array({ minLength: 16, maxLength: 100 }).map((bytes) => ({ kind: "records beside the secure stream", chunks: [withPrefix(bytes)], raw: true }))
        }
      )
      const after = tally("live transport: frames after a real handshake", 300)
      let seed = 20
      for (const attack of samples(arbAfter, 300, 5)) {
        index++
        seed = seed >= 250 ? 20 : seed + 1
        const { frame, reaction } = attack.raw ? { reaction: "close" as const, frame: undefined } : reactionToBytes(Buffer.concat(attack.chunks))
        const outcome = yield* Effect.scoped(Effect.gen(function*() {
          const { closed, socket } = yield* rawConnection(target.localAddress, attackers[index % attackers.length] as string)
          const session = yield* initiate({ stream: socketStream(socket), self: makeSecureSelf(testIdentity(seed)), verify: verifyEd25519, listenPort: 9999 })
          const frames = yield* frameQueue(session.stream)
          for (const chunk of attack.chunks) {
            if (attack.raw) socket.write(chunk)
            else session.stream.write(chunk)
          }
          const answer = Queue.take(frames).pipe(Effect.timeoutFail({ duration: "5 seconds", onTimeout: () => `case ${index}: no answer` }))
          switch (reaction) {
            case "answer":
              expect(yield* answer).toMatchObject({ _tag: "Exit", requestId: (frame as { readonly id: string }).id })
              return "answered"
            case "pong":
              expect(yield* answer).toEqual({ _tag: "Pong" })
              return "ponged"
            case "close":
              expect(yield* closedWithin(closed, MUST_CLOSE_MS), `case ${index}: ${attack.kind}`).toBe(true)
              return "closed by the node"
            case "either":
              return (yield* closedWithin(closed, MAY_CLOSE_MS)) ? "closed by the node" : "kept open, hung up"
          }
        }))
        after.count(`${attack.kind}: ${outcome}`)
        yield* ping(`after-handshake case ${index} (${attack.kind})`)
      }
      after.atLeast({
        "mutated RPC message: answered": 20,
        "mutated RPC message: closed by the node": 60,
        "arbitrary JSON frame: closed by the node": 20,
        "records beside the secure stream: closed by the node": 20,
        "encrypted garbage: closed by the node": 10
      })

      // Afterwards nothing is held: the honest peer hangs up too, and every count goes back to zero.
      yield* ping("the end")
      yield* Scope.close(honestScope, Exit.void)
      const deadline = Date.now() + 5000
      let stats = yield* target.stats
      while ((stats.inbound > 0 || stats.pending > 0) && Date.now() < deadline) {
        yield* Effect.sleep("20 millis")
        stats = yield* target.stats
      }
      expect(stats).toMatchObject({ inbound: 0, pending: 0, outbound: 0 })
      expect(stats.accepted).toBeGreaterThanOrEqual(500)
      report.push({
        name: "live transport: the node's stats at the end",
        runs: 500,
        counts: { ...stats.refusedBy, accepted: stats.accepted, refused: stats.refused, inbound: stats.inbound, pending: stats.pending }
      })
    }), { timeout: 60_000 })

  it.scopedLive("a burst of hostile connections at once: once they and the honest peer are gone, inbound and pending are back to 0", () =>
    Effect.gen(function*() {
      const target = yield* startTransport(2, { handshakeTimeout: Duration.seconds(1) })
      yield* target.serve(fuzzHandlers)
      const attacker = freshLoopbackHost()
      yield* Effect.scoped(Effect.gen(function*() {
        // Some half-open, some garbage, some authenticated and then garbage: all open at the same time.
        for (const [bytes, authenticate] of samples(fc.tuple(arbGarbage, fc.boolean()), 40, 6)) {
          const { socket } = yield* rawConnection(target.localAddress, attacker)
          if (authenticate) {
            const session = yield* Effect.either(initiate({ stream: socketStream(socket), self: makeSecureSelf(testIdentity(77)), verify: verifyEd25519, listenPort: 1 }).pipe(Effect.timeout("1 second")))
            if (Either.isRight(session)) session.right.stream.write(bytes)
          } else socket.write(bytes)
        }
        yield* Effect.scoped(Effect.gen(function*() {
          const honest = yield* startTransport(1, {})
          yield* honest.send({ address: target.localAddress }, new Ping({}))
        }))
      }))
      const deadline = Date.now() + 5000
      let stats = yield* target.stats
      while ((stats.inbound > 0 || stats.pending > 0) && Date.now() < deadline) {
        yield* Effect.sleep("20 millis")
        stats = yield* target.stats
      }
      expect(stats).toMatchObject({ inbound: 0, pending: 0, outbound: 0 })
    }))
})

// Keeps the imported schemas honest: the valid payloads above must decode.
describe("fixtures", () => {
  it("the valid payloads decode", () => {
    expect(Either.isRight(Schema.decodeUnknownEither(Welcome)(validWelcome))).toBe(true)
    expect(Either.isRight(Schema.decodeUnknownEither(Proof)(validProof))).toBe(true)
    expect(Either.isRight(Schema.decodeUnknownEither(Rejected)(validRejected))).toBe(true)
    expect(Either.isRight(Schema.decodeUnknownEither(IdentityStore.IdentityFile)(validIdentityFile))).toBe(true)
    for (const frame of validRequestFrames.slice(0, 4)) expect(isValidRequest(frame)).toBe(true)
  })
})

