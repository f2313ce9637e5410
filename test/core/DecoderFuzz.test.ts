/**
 * Fuzzing of every pure decoder that reads bytes or JSON from outside (issue
 * 12): the protocol's request and answer schemas, user records (JSON and
 * canonical bytes), envelopes, sealed payloads, receipts, mail, postage and
 * mailbox authorizations, usernames, name references, fingerprints,
 * addresses and claim proofs. For arbitrary input and for mutations of valid
 * input, each decoder must
 *
 * - never throw: only a typed failure (`Either.Left`, a `ParseError` that
 *   also formats without throwing, since the transport formats it);
 * - never hang: every case is bounded by the run's time limit;
 * - never accept a mutated-valid input that breaks its invariants: whatever
 *   decodes re-encodes to itself (`Schema.is` holds, encode∘decode is stable),
 *   and whatever is signed verifies only when it is exactly what was signed.
 *
 * Cryptography is the platform's (`node:crypto` Ed25519, X25519 and
 * ChaCha20-Poly1305), name claims are solved and checked over SHA-256 as in
 * every test (`test/support/claims.ts`). All properties run with the shared
 * `PROPERTY_SEED`, so a failure replays exactly.
 */
import { arbByteMutations, isObject, mutateBytes, type Path, pathsOf, REMOVE, updateAt } from "../support/mutations.js"
import { describe, expect, it } from "@effect/vitest"
import { afterAll } from "vitest"
import { Arbitrary, Effect, Either, Encoding, Exit, FastCheck as fc, ParseResult, Schema } from "effect"
import { createHash } from "node:crypto"
import { toHex, utf8 } from "../../src/core/Bytes.js"
import { checkClaimProof, ClaimProof, leadingZeroBits } from "../../src/core/ClaimProof.js"
import { Address, formatAddress, parseAddress } from "../../src/core/Contact.js"
import { type Key, nodeIdFromPublicKey } from "../../src/core/Id.js"
import {
  checkMailboxRequest,
  checkPostage,
  Mail,
  MailboxAuthorization,
  type MailboxRequestFields,
  mailId,
  type MessageMail,
  Postage,
  type ReceiptMail,
  signMailboxRequest,
  signPostage
} from "../../src/core/Mail.js"
import {
  type ChatMessage,
  checkOpenedMessage,
  checkReceipt,
  Envelope,
  envelopeId,
  fromBase64,
  makeChatMessage,
  type MessageId,
  parseSealedPayload,
  parseUserRecordBytes,
  readSealedPayload,
  sealedPayloadBytes,
  type SignedChatMessage,
  signChatMessage,
  SignedReceipt,
  signReceipt,
  toBase64,
  userRecordBytes
} from "../../src/core/Message.js"
import {
  fingerprintOf,
  formatFingerprint,
  formatNameRef,
  parseFingerprint,
  parseNameRef
} from "../../src/core/Pinning.js"
import {
  acceptUserRecord,
  defaultRecordLimits,
  type PublicKeyHex,
  type RecordRejected,
  signUserRecord,
  type UnsignedUserRecord,
  UserRecord,
  withoutSignature
} from "../../src/core/UserRecord.js"
import { parseUsername, Username, userKey } from "../../src/core/Username.js"
import type { IdentityService } from "../../src/node/Identity.js"
import { AckMail, DeliverReceipt, FetchMail, MessageRefused, SendMessage, StoreMail } from "../../src/chat/ChatProtocol.js"
import { DialBack, FindNode, FindValue, Ping, RequestRefused, Store } from "../../src/node/Protocol.js"
import { AwaitCircuit, CircuitRefused, HolePunch, OpenCircuit, PunchRefused, Reserve } from "../../src/node/CircuitProtocol.js"
import { sha256Native, sign, signingKeyFromSeed, verifyEd25519 } from "../../src/platform/NodeCrypto.js"
import * as NodeMessageCrypto from "../../src/platform/NodeMessageCrypto.js"
import { requestClasses } from "../../src/platform/WireProtocol.js"
import { PROPERTY_SEED, seededRandomBytes } from "../support/arbitraries.js"
import { solvedClaim, testClaimRules } from "../support/claims.js"

// ---------------------------------------------------------------------------
// Run sizes (the whole file stays well under ten seconds on two cores)

/** Arbitrary values per decoder. */
const ARBITRARY_RUNS = 300
/** Mutations of a valid value per decoder. */
const MUTATION_RUNS = 300
/** Mutations of signed values (each costs a signature check or a decryption). */
const SIGNED_RUNS = 400

// ---------------------------------------------------------------------------
// Mutations of JSON-like values and of bytes (the shared pieces are in test/support/mutations.ts)

/** One structural change to a JSON-like value (see `mutateValue` for the kinds). */
interface JsonMutation {
  readonly at: number
  readonly kind: number
  readonly leaf: unknown
  readonly delta: number
  readonly text: string
  readonly repeat: number
}

const JSON_MUTATION_KINDS = 12

/** Leaves a mutation may plant: JSON values, numbers at the edges, and values JSON cannot even carry. */
const arbLeaf: fc.Arbitrary<unknown> = fc.oneof(
  fc.jsonValue({ maxDepth: 2 }),
  fc.constantFrom<unknown>(
    null, undefined, Number.NaN, Number.POSITIVE_INFINITY, -0, -1, 0.5, 2 ** 53, 2 ** 64, -(2 ** 63), 1e308,
    "", " ", "\u0000", "\ud800", "é", "A".repeat(70_000), [], {}, true, false
  ),
  fc.string({ unit: "binary", maxLength: 16 })
)

const arbJsonMutation: fc.Arbitrary<JsonMutation> = fc.record({
  at: fc.nat(),
  kind: fc.nat({ max: JSON_MUTATION_KINDS - 1 }),
  leaf: arbLeaf,
  delta: fc.integer({ min: -3, max: 3 }),
  text: fc.string({ unit: "binary", minLength: 1, maxLength: 4 }),
  repeat: fc.integer({ min: 2, max: 80 })
})

const arbJsonMutations = fc.array(arbJsonMutation, { minLength: 1, maxLength: 3 })

const mutateNode = (old: unknown, m: JsonMutation): unknown => {
  switch (m.kind) {
    case 0:
      return m.leaf
    case 1:
      return REMOVE
    case 2:
      return [old]
    case 3:
      return { value: old }
    case 4:
      if (typeof old === "string" && old.length > 0) {
        const index = m.at % old.length
        return old.slice(0, index) + String.fromCharCode(old.charCodeAt(index) ^ (1 << (m.repeat % 7))) + old.slice(index + 1)
      }
      if (typeof old === "number") return old + (m.delta === 0 ? 1 : m.delta)
      return m.leaf
    case 5:
      if (typeof old === "string") return old.toUpperCase() === old ? old.toLowerCase() + "G" : old.toUpperCase()
      if (typeof old === "number") return -old - 1
      if (typeof old === "boolean") return !old
      return m.leaf
    case 6:
      if (typeof old === "string") return old + m.text
      if (typeof old === "number") return old + 0.5
      return m.leaf
    case 7:
      if (typeof old === "string") return old.slice(0, Math.max(0, old.length - 1 - Math.abs(m.delta)))
      if (typeof old === "number") return old * 2 ** 40
      return m.leaf
    case 8:
      if (Array.isArray(old)) return Array.from({ length: Math.max(1, old.length) * m.repeat }, (_, i) => old[i % Math.max(1, old.length)])
      if (isObject(old)) {
        const copy: Record<string, unknown> = { ...old }
        // An own property even for "__proto__", as JSON.parse would make it.
        Object.defineProperty(copy, m.text, { value: m.leaf, enumerable: true, writable: true, configurable: true })
        return copy
      }
      return m.leaf
    case 9:
      if (typeof old === "string") return old.length
      if (typeof old === "number") return String(old)
      return m.leaf
    case 10:
      if (typeof old === "string") return old.repeat(m.repeat * 50)
      if (typeof old === "number") return Number.MAX_SAFE_INTEGER + 2
      return m.leaf
    default: {
      if (Array.isArray(old)) return old.slice().reverse()
      if (isObject(old)) {
        const keys = Object.keys(old)
        if (keys.length < 2) return m.leaf
        const a = keys[m.at % keys.length] as string
        const b = keys[(m.at + 1) % keys.length] as string
        return { ...old, [a]: old[b], [b]: old[a] }
      }
      return m.leaf
    }
  }
}

/** `value` with the mutations applied, each at the node its `at` picks. */
const mutateValue = (value: unknown, mutations: ReadonlyArray<JsonMutation>): unknown =>
  mutations.reduce<unknown>((current, m) => {
    const paths = pathsOf(current)
    const path = paths[m.at % paths.length] as Path
    return updateAt(current, path, (old) => mutateNode(old, m))
  }, value)

/**
 * A change that keeps the shape: one leaf gets another value of its own kind
 * (a string another character of its own alphabet, a number a neighbour, a
 * boolean its opposite), so most such mutants still decode and reach the
 * checks behind the decoder (signatures, decryption, proofs of work).
 */
const arbLeafTweaks = fc.array(fc.record({ at: fc.nat(), pick: fc.nat(), delta: fc.integer({ min: 1, max: 3 }) }), { minLength: 1, maxLength: 2 })

const tweakLeaves = (value: unknown, tweaks: ReadonlyArray<{ readonly at: number; readonly pick: number; readonly delta: number }>): unknown =>
  tweaks.reduce<unknown>((current, tweak) => {
    const leaves = pathsOf(current).filter((path) => {
      const leaf = path.reduce<unknown>((node, key) => (node as Record<string | number, unknown>)[key], current)
      return typeof leaf === "string" || typeof leaf === "number" || typeof leaf === "boolean"
    })
    if (leaves.length === 0) return current
    return updateAt(current, leaves[tweak.at % leaves.length] as Path, (old) => {
      if (typeof old === "boolean") return !old
      if (typeof old === "number") return old - tweak.delta >= 0 && tweak.pick % 2 === 0 ? old - tweak.delta : old + tweak.delta
      if (typeof old !== "string" || old.length === 0) return old
      const alphabet = [...new Set(old)]
      const index = tweak.pick % old.length
      const current = old.charAt(index)
      const others = alphabet.filter((char) => char !== current)
      const replacement = others.length > 0 ? (others[tweak.at % others.length] as string) : current === "a" ? "b" : "a"
      return old.slice(0, index) + replacement + old.slice(index + 1)
    })
  }, value)

/** Mostly in-place changes (a flipped bit, a replaced byte), which keep lengths and so reach deeper; sometimes anything. */
const mutantsOf = (bytes: Uint8Array): fc.Arbitrary<Uint8Array> =>
  fc.oneof(
    {
      weight: 3,
      arbitrary: fc.array(fc.record({ at: fc.nat(), kind: fc.nat({ max: 1 }), value: fc.nat({ max: 255 }), length: fc.constant(1) }), { minLength: 1, maxLength: 2 })
        .map((m) => mutateBytes(bytes, m))
    },
    { weight: 1, arbitrary: arbByteMutations.map((m) => mutateBytes(bytes, m)) }
  )

const flipBit = (bytes: Uint8Array, bit: number): Uint8Array => {
  const out = bytes.slice()
  out[bit >>> 3] = (out[bit >>> 3] as number) ^ (0x80 >>> (bit & 7))
  return out
}

const bytesOf = (text: string): Uint8Array => utf8(text)

const parseJson = (bytes: Uint8Array): { readonly ok: true; readonly value: unknown } | { readonly ok: false } => {
  try {
    return { ok: true, value: JSON.parse(new TextDecoder().decode(bytes)) as unknown }
  } catch {
    return { ok: false }
  }
}

// ---------------------------------------------------------------------------
// The decoder contract

/** What arbitrary input looks like: JSON as a frame carries it, and values JSON cannot carry. */
const arbInput: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 4, arbitrary: fc.jsonValue({ maxDepth: 4 }) },
  { weight: 1, arbitrary: fc.anything({ maxDepth: 3, withBigInt: true, withNullPrototype: true, withDate: true, withMap: true, withSet: true, withTypedArray: true, withSparseArray: true, withBoxedValues: true }) },
  { weight: 1, arbitrary: arbLeaf }
)

/**
 * Decodes `input` with `schema` and checks the contract: no throw; a failure
 * is a `ParseError` that formats; a success satisfies `Schema.is`, encodes,
 * and decodes again to the same encoding. Returns the decoded value, if any.
 */
const decodeChecked = <A, I>(schema: Schema.Schema<A, I>, input: unknown): Either.Either<A, ParseResult.ParseError> => {
  let result: Either.Either<A, ParseResult.ParseError> | undefined
  expect(() => {
    result = Schema.decodeUnknownEither(schema)(input)
  }).not.toThrow()
  const decoded = result as Either.Either<A, ParseResult.ParseError>
  if (Either.isLeft(decoded)) {
    expect(ParseResult.isParseError(decoded.left)).toBe(true)
    expect(() => ParseResult.TreeFormatter.formatErrorSync(decoded.left)).not.toThrow()
    return decoded
  }
  expect(Schema.is(schema)(decoded.right)).toBe(true)
  const encoded = Schema.encodeEither(schema)(decoded.right)
  expect(Either.isRight(encoded)).toBe(true)
  if (Either.isRight(encoded)) {
    // What decodes must survive the trip through JSON, as it would on the wire.
    const wire = JSON.parse(JSON.stringify(encoded.right)) as unknown
    const again = Schema.decodeUnknownEither(schema)(wire)
    expect(Either.isRight(again)).toBe(true)
    // Compared as JSON text: -0, which JSON.parse does produce, is written 0.
    if (Either.isRight(again)) expect(JSON.stringify(Schema.encodeSync(schema)(again.right))).toBe(JSON.stringify(encoded.right))
  }
  return decoded
}

/** The transport's payload check (`TcpTransport.payloadChecker`): it must never pass what the full decode refuses. */
const transportCheck = <A, I>(schema: Schema.Schema<A, I>) => Schema.validateEither(Schema.encodedBoundSchema(schema))

/** The signed fields and signature of a record, for comparisons. */
const recordJson = (record: UserRecord): unknown => Schema.encodeSync(UserRecord)(record)

// ---------------------------------------------------------------------------
// Fixtures: identities, a valid record, messages, receipts, mail

const NOW = 1_700_000_000_000
const HOUR = 3_600_000
const DAY = 24 * HOUR

interface TestUser {
  readonly identity: IdentityService
  readonly signingKey: PublicKeyHex
  readonly encryptionSeed: Uint8Array
  readonly username: Username
  readonly record: UserRecord
}

const usernameOf = (name: string): Username => Either.getOrThrow(parseUsername(name))

const makeUser = (seed: number, name: string, host = "192.0.2.1"): TestUser => {
  const signing = signingKeyFromSeed(seededRandomBytes(seed)(32))
  const encryptionSeed = seededRandomBytes(seed + 1000)(32)
  const keyAgreement = NodeMessageCrypto.keyAgreementFromSeed(encryptionSeed)
  const identity: IdentityService = {
    nodeId: nodeIdFromPublicKey(signing.publicKey, sha256Native),
    signingPublicKey: signing.publicKey,
    encryptionPublicKey: keyAgreement.encryptionPublicKey,
    sign: (message) => sign(signing.privateKey, message)
  }
  const signingKey = toHex(signing.publicKey) as PublicKeyHex
  const username = usernameOf(name)
  const record = signUserRecord({
    username,
    signingKey,
    encryptionKey: toHex(keyAgreement.encryptionPublicKey) as PublicKeyHex,
    nodeId: identity.nodeId,
    addresses: [{ host, port: 4001 }, { host: "example.org", port: 65535 }],
    sequence: 17,
    issuedAt: NOW - HOUR,
    expiresAt: NOW + DAY,
    claim: solvedClaim(username, signingKey)
  }, identity.sign)
  return { identity, signingKey, encryptionSeed, username, record }
}

const alice = makeUser(1, "alice")
const bob = makeUser(2, "bob.smith_2")
const mallory = makeUser(3, "mallory")

const accept = (record: UserRecord, now = NOW): Either.Either<unknown, RecordRejected> =>
  acceptUserRecord({ incoming: record, now, verify: verifyEd25519, claim: testClaimRules, hash: sha256Native })

const cryptoOf = (user: TestUser) =>
  NodeMessageCrypto.make({
    identity: user.identity,
    keyAgreement: NodeMessageCrypto.keyAgreementFromSeed(user.encryptionSeed),
    randomBytes: seededRandomBytes(user.identity.signingPublicKey[0] as number)
  })

const aliceCrypto = cryptoOf(alice)
const bobCrypto = cryptoOf(bob)

const messageFromAlice = (text: string): ChatMessage =>
  Either.getOrThrow(makeChatMessage({
    from: alice.username,
    to: bob.username,
    senderSigningKey: alice.signingKey,
    senderRecord: alice.record,
    sequence: 5,
    sentAt: NOW,
    text
  }))

const signedFromAlice: SignedChatMessage = signChatMessage(messageFromAlice("hello, bob ✓"), alice.identity.sign)
const sealed = Effect.runSync(aliceCrypto.seal(messageFromAlice("a sealed hello ✓"), bob.record.encryptionKey))
const envelope = sealed.envelope
const envelopeJson = Schema.encodeSync(Envelope)(envelope)

const receipt = signReceipt({ version: 1, messageId: sealed.id, recipient: bob.username, receivedAt: NOW + 5 }, bob.identity.sign)
const receiptJson = Schema.encodeSync(SignedReceipt)(receipt)

const messageMail: MessageMail = { _tag: "Message", envelope }
const receiptMail: ReceiptMail = { _tag: "Receipt", recipientKey: userKey(alice.username), receipt }
const MAIL_TTL = 14 * DAY
const messagePostage = signPostage({ mail: messageMail, sender: alice.record, expiresAt: NOW + MAIL_TTL, sign: alice.identity.sign })
const receiptPostage = signPostage({ mail: receiptMail, sender: bob.record, expiresAt: NOW + MAIL_TTL, sign: bob.identity.sign })

const relayId = mallory.identity.nodeId
const fetchRequest: MailboxRequestFields = {
  operation: "FetchMail",
  recipientKey: userKey(bob.username),
  relay: relayId,
  requestedAt: NOW - 1000,
  ids: []
}
const ackRequest: MailboxRequestFields = { ...fetchRequest, operation: "AckMail", ids: [sealed.id, mailId(receiptMail)] }
const fetchAuthorization = signMailboxRequest(fetchRequest, bob.identity.sign)
const ackAuthorization = signMailboxRequest(ackRequest, bob.identity.sign)

const contacts = [
  { nodeId: alice.identity.nodeId, address: { host: "192.0.2.1", port: 4001 } },
  { nodeId: bob.identity.nodeId, address: { host: "2001:db8::1", port: 0 } }
]

// ---------------------------------------------------------------------------
// The protocol: every request, answer and failure schema

interface Sample {
  readonly name: string
  readonly schema: Schema.Schema<unknown, unknown>
  readonly valid: ReadonlyArray<unknown>
  /** A request payload: the transport checks it before decoding. */
  readonly payload: boolean
}

const asSchema = <A, I>(schema: Schema.Schema<A, I>): Schema.Schema<unknown, unknown> =>
  schema as unknown as Schema.Schema<unknown, unknown>

const encodeAll = <A, I>(schema: Schema.Schema<A, I>, values: ReadonlyArray<A>): ReadonlyArray<unknown> =>
  values.map((value) => Schema.encodeSync(schema)(value))

const refused = { _tag: "RequestRefused", reason: "Overloaded", detail: "rate limit" }

const protocolSamples: ReadonlyArray<Sample> = [
  { name: "Ping", schema: asSchema(Ping), valid: [{ _tag: "Ping" }], payload: true },
  { name: "DialBack", schema: asSchema(DialBack), valid: [{ _tag: "DialBack" }], payload: true },
  { name: "Reserve", schema: asSchema(Reserve), valid: [{ _tag: "Reserve" }], payload: true },
  { name: "AwaitCircuit", schema: asSchema(AwaitCircuit), valid: [{ _tag: "AwaitCircuit" }], payload: true },
  { name: "OpenCircuit", schema: asSchema(OpenCircuit), valid: [{ _tag: "OpenCircuit", target: alice.record.nodeId }], payload: true },
  { name: "HolePunch", schema: asSchema(HolePunch), valid: [{ _tag: "HolePunch", port: 61_234 }], payload: true },
  { name: "FindNode", schema: asSchema(FindNode), valid: [{ _tag: "FindNode", target: userKey(alice.username) }], payload: true },
  { name: "FindValue", schema: asSchema(FindValue), valid: [{ _tag: "FindValue", key: userKey(bob.username) }], payload: true },
  { name: "Store", schema: asSchema(Store), valid: [{ _tag: "Store", record: recordJson(alice.record) }], payload: true },
  { name: "SendMessage", schema: asSchema(SendMessage), valid: [{ _tag: "SendMessage", envelope: envelopeJson }], payload: true },
  { name: "DeliverReceipt", schema: asSchema(DeliverReceipt), valid: [{ _tag: "DeliverReceipt", receipt: receiptJson }], payload: true },
  {
    name: "StoreMail",
    schema: asSchema(StoreMail),
    valid: [
      { _tag: "StoreMail", mail: Schema.encodeSync(Mail)(messageMail), postage: Schema.encodeSync(Postage)(messagePostage) },
      { _tag: "StoreMail", mail: Schema.encodeSync(Mail)(receiptMail), postage: Schema.encodeSync(Postage)(receiptPostage) }
    ],
    payload: true
  },
  {
    name: "FetchMail",
    schema: asSchema(FetchMail),
    valid: [{ _tag: "FetchMail", recipientKey: fetchRequest.recipientKey, authorization: fetchAuthorization }],
    payload: true
  },
  {
    name: "AckMail",
    schema: asSchema(AckMail),
    valid: [{ _tag: "AckMail", recipientKey: ackRequest.recipientKey, ids: ackRequest.ids, authorization: ackAuthorization }],
    payload: true
  },
  { name: "Ping.success", schema: asSchema(Ping.success), valid: [{ observedHost: "127.0.0.1" }], payload: false },
  { name: "DialBack.success", schema: asSchema(DialBack.success), valid: [{ reachable: true }, { reachable: false }], payload: false },
  {
    name: "Reserve.success",
    schema: asSchema(Reserve.success),
    valid: [{ expiresAt: 1_700_000_090_000, renewWithinMillis: 90_000, circuitBytes: 16_777_216, circuitLifetimeMillis: 900_000 }],
    payload: false
  },
  {
    name: "AwaitCircuit.success",
    schema: asSchema(AwaitCircuit.success),
    valid: [
      { offers: [] },
      { offers: [{ token: "0123456789abcdef0123456789abcdef", caller: bob.record.nodeId }] },
      { offers: [{ token: "0123456789abcdef0123456789abcdef", caller: bob.record.nodeId, callerHost: "203.0.113.7" }] }
    ],
    payload: false
  },
  {
    name: "OpenCircuit.success",
    schema: asSchema(OpenCircuit.success),
    valid: [
      { token: "0123456789abcdef0123456789abcdef", validForMillis: 10_000 },
      { token: "0123456789abcdef0123456789abcdef", validForMillis: 10_000, targetHost: "2001:db8::7" }
    ],
    payload: false
  },
  { name: "HolePunch.success", schema: asSchema(HolePunch.success), valid: [{ port: 1024 }, { port: 65_535 }], payload: false },
  { name: "FindNode.success", schema: asSchema(FindNode.success), valid: [{ contacts }], payload: false },
  {
    name: "FindValue.success",
    schema: asSchema(FindValue.success),
    valid: [
      { _tag: "Found", record: recordJson(alice.record), rival: recordJson(mallory.record), contacts },
      { _tag: "Found", record: recordJson(bob.record), contacts: [] },
      { _tag: "Closer", contacts }
    ],
    payload: false
  },
  { name: "Store.success", schema: asSchema(Store.success), valid: [{ outcome: "Stored" }, { outcome: "Unchanged" }], payload: false },
  { name: "SendMessage.success", schema: asSchema(SendMessage.success), valid: [{ receipt: receiptJson }], payload: false },
  { name: "DeliverReceipt.success", schema: asSchema(DeliverReceipt.success), valid: [{ outcome: "Unknown" }], payload: false },
  { name: "StoreMail.success", schema: asSchema(StoreMail.success), valid: [{ outcome: "Duplicate" }], payload: false },
  {
    name: "FetchMail.success",
    schema: asSchema(FetchMail.success),
    valid: [{ mail: encodeAll(Mail, [messageMail, receiptMail]), more: true }],
    payload: false
  },
  { name: "AckMail.success", schema: asSchema(AckMail.success), valid: [{ removed: 2 }], payload: false }
]

/** Every typed failure a request can answer with, as it travels (encoded). */
const failureValues: ReadonlyArray<unknown> = [
  refused,
  Schema.encodeSync(RequestRefused)(new RequestRefused({ reason: "NotResponsible", detail: "ask closer nodes" })),
  { _tag: "RecordRejected", username: "alice", reason: "KeyConflict" },
  Schema.encodeSync(MessageRefused)(new MessageRefused({ reason: "SenderUnknown", detail: "later" })),
  { _tag: "MailboxAccessDenied", reason: "Stale", detail: "too old" },
  Schema.encodeSync(CircuitRefused)(new CircuitRefused({ reason: "NoReservation", detail: "reserve first" })),
  Schema.encodeSync(PunchRefused)(new PunchRefused({ reason: "TooSoon", detail: "" }))
]

/** The failure schema of every request class, with the failure values it admits. */
const failureSamples: ReadonlyArray<Sample> = Object.entries(requestClasses).map(([tag, request]) => {
  const schema = request.failure as unknown as Schema.Schema<unknown, unknown>
  return { name: `${tag}.failure`, schema, valid: failureValues.filter((value) => Either.isRight(Schema.decodeUnknownEither(schema)(value))), payload: false }
})

const allProtocolSamples: ReadonlyArray<Sample> = [...protocolSamples, ...failureSamples]

// ---------------------------------------------------------------------------
// The harness: every property counts what its cases came to, and requires
// enough of them to reach the interesting checks (a fuzz target that only
// ever fails to parse proves nothing about the signature check behind it).

/** Outcome counts of every target, printed when FUZZ_REPORT is set (for the report). */
const report: Array<{ readonly name: string; readonly runs: number; readonly counts: Record<string, number> }> = []

const fuzz = <T>(
  name: string,
  arbitrary: fc.Arbitrary<T>,
  numRuns: number,
  body: (input: T) => string,
  atLeast: Readonly<Record<string, number>> = {}
) =>
  it(name, () => {
    const counts: Record<string, number> = {}
    fc.assert(
      fc.property(arbitrary, (input) => {
        const outcome = body(input)
        counts[outcome] = (counts[outcome] ?? 0) + 1
      }),
      { seed: PROPERTY_SEED, numRuns }
    )
    report.push({ name, runs: numRuns, counts })
    for (const [outcome, minimum] of Object.entries(atLeast)) {
      expect(counts[outcome] ?? 0, `"${outcome}" in ${JSON.stringify(counts)}`).toBeGreaterThanOrEqual(minimum)
    }
  })

afterAll(() => {
  if (process.env["FUZZ_REPORT"] === undefined) return
  for (const { counts, name, runs } of report) console.log(`${runs}\t${name}\t${JSON.stringify(counts)}`)
})

/** A structural mutation, a shape-keeping one, or a byte mutation of `value`'s JSON text, then JSON.parse. */
const mutatedJson = (value: unknown): fc.Arbitrary<unknown> =>
  fc.oneof(
    { weight: 2, arbitrary: arbJsonMutations.map((m) => mutateValue(value, m)) },
    { weight: 4, arbitrary: arbLeafTweaks.map((t) => tweakLeaves(value, t)) },
    {
      weight: 2,
      arbitrary: arbByteMutations.map((m) => {
        const parsed = parseJson(mutateBytes(bytesOf(JSON.stringify(value)), m))
        return parsed.ok ? parsed.value : Symbol.for("not JSON")
      })
    }
  )

// ---------------------------------------------------------------------------
// The protocol

describe("protocol schemas: every request, answer and failure", () => {
  it("covers every request class of the protocol with its success and failure schemas, and every sample is valid", () => {
    const covered = new Set(allProtocolSamples.map((sample) => sample.name))
    for (const tag of Object.keys(requestClasses)) {
      for (const name of [tag, `${tag}.success`, `${tag}.failure`]) expect(covered.has(name), name).toBe(true)
    }
    for (const sample of allProtocolSamples) {
      expect(sample.valid.length, sample.name).toBeGreaterThan(0)
      for (const value of sample.valid) expect(Either.isRight(Schema.decodeUnknownEither(sample.schema)(value)), sample.name).toBe(true)
    }
  })

  fuzz(
    "arbitrary values: a typed failure or a value that round-trips, for every schema",
    fc.tuple(arbInput, fc.nat()),
    ARBITRARY_RUNS * 3,
    ([input, pick]) => {
      const sample = allProtocolSamples[pick % allProtocolSamples.length] as Sample
      const decoded = decodeChecked(sample.schema, input)
      if (sample.payload && Either.isRight(transportCheck(sample.schema)(input))) expect(Either.isRight(decoded)).toBe(true)
      return Either.isRight(decoded) ? "decoded" : "refused"
    },
    { refused: 800 }
  )

  fuzz(
    "mutations of valid values: a typed failure or a value that round-trips; the transport's check never passes what decoding refuses",
    fc.tuple(fc.nat(), fc.nat(), fc.nat()).chain(([pick, which]) => {
      const sample = allProtocolSamples[pick % allProtocolSamples.length] as Sample
      return fc.tuple(fc.constant(sample), mutatedJson(sample.valid[which % sample.valid.length]))
    }),
    MUTATION_RUNS * 6,
    ([sample, input]) => {
      const decoded = decodeChecked(sample.schema, input)
      if (sample.payload) {
        const checked = transportCheck(sample.schema)(input)
        if (Either.isRight(checked)) expect(Either.isRight(decoded)).toBe(true)
        else expect(Either.isLeft(decoded)).toBe(true)
      }
      return Either.isRight(decoded) ? "decoded" : "refused"
    },
    { decoded: 150, refused: 800 }
  )

  it("bounded lists stay bounded: 65 contacts, 33 mails or 33 acknowledged ids are refused", () => {
    const many = <T>(item: T, count: number): Array<T> => Array.from({ length: count }, () => item)
    expect(Either.isLeft(Schema.decodeUnknownEither(FindNode.success)({ contacts: many(contacts[0], 65) }))).toBe(true)
    expect(Either.isLeft(Schema.decodeUnknownEither(FetchMail.success)({ mail: many(Schema.encodeSync(Mail)(receiptMail), 33), more: false })))
      .toBe(true)
    expect(Either.isLeft(Schema.decodeUnknownEither(AckMail)({ _tag: "AckMail", recipientKey: ackRequest.recipientKey, ids: many(sealed.id, 33), authorization: ackAuthorization })))
      .toBe(true)
  })
})

// ---------------------------------------------------------------------------
// User records

describe("user records: decode, signature and validity rules", () => {
  const original = recordJson(alice.record)
  const isOriginal = (record: UserRecord) => expect(JSON.stringify(recordJson(record))).toBe(JSON.stringify(original))

  it("the fixture is valid, so every refusal below is the mutation's doing", () => {
    expect(accept(alice.record)).toEqual(Either.right("Stored"))
    expect(Either.isRight(parseUserRecordBytes(userRecordBytes(alice.record)))).toBe(true)
  })

  fuzz("arbitrary JSON never decodes to a record that verifies", arbInput, ARBITRARY_RUNS, (input) => {
    const decoded = decodeChecked(UserRecord, input)
    if (Either.isLeft(decoded)) return "refused"
    expect(Either.isLeft(accept(decoded.right))).toBe(true)
    return "decoded, rejected"
  })

  fuzz(
    "a mutated record (structure or JSON text) does not decode or is rejected, unless it decodes to the very record signed",
    mutatedJson(original),
    SIGNED_RUNS,
    (input) => {
      const decoded = decodeChecked(UserRecord, input)
      if (Either.isLeft(decoded)) return "refused"
      if (Either.isLeft(accept(decoded.right))) return "decoded, rejected"
      isOriginal(decoded.right)
      return "decoded to the original"
    },
    { "decoded, rejected": 60 }
  )

  fuzz(
    "field by field: any other schema-valid value in any one field makes a rejected record",
    fc.tuple(Arbitrary.make(UserRecord), fc.constantFrom(...(Object.keys(alice.record) as Array<keyof UserRecord>))),
    SIGNED_RUNS,
    ([donor, field]) => {
      if (JSON.stringify(donor[field]) === JSON.stringify(alice.record[field])) return "same value"
      const changed = { ...alice.record, [field]: donor[field] } as UserRecord
      expect(Either.isRight(Schema.decodeUnknownEither(UserRecord)(recordJson(changed)))).toBe(true)
      const outcome = accept(changed)
      expect(Either.isLeft(outcome), field).toBe(true)
      return Either.isLeft(outcome) ? outcome.left.reason : "accepted"
    },
    { BadSignature: 150, NodeIdMismatch: 20 }
  )

  it("byte by byte: every single-bit flip of the record's JSON text (exhaustive) is rejected or does not decode", () => {
    const text = bytesOf(JSON.stringify(original))
    let decodedCount = 0
    for (let bit = 0; bit < text.length * 8; bit++) {
      const parsed = parseJson(flipBit(text, bit))
      if (!parsed.ok) continue
      const decoded = Schema.decodeUnknownEither(UserRecord)(parsed.value)
      if (Either.isLeft(decoded)) continue
      decodedCount++
      expect(Either.isLeft(accept(decoded.right)), `bit ${bit}`).toBe(true)
    }
    report.push({ name: "record JSON, every single-bit flip", runs: text.length * 8, counts: { "decoded, rejected": decodedCount } })
    // Flips inside hex digits, names and numbers still decode: they reach the signature check.
    expect(decodedCount).toBeGreaterThan(500)
  })

  it("byte by byte: every single-bit flip of the canonical record bytes (exhaustive) parses back exactly or not at all, and never verifies", () => {
    const bytes = userRecordBytes(alice.record)
    let parsedCount = 0
    for (let bit = 0; bit < bytes.length * 8; bit++) {
      const mutated = flipBit(bytes, bit)
      const parsed = parseUserRecordBytes(mutated)
      if (Either.isLeft(parsed)) continue
      parsedCount++
      expect(toHex(userRecordBytes(parsed.right))).toBe(toHex(mutated))
      expect(Either.isLeft(accept(parsed.right)), `bit ${bit}`).toBe(true)
    }
    report.push({ name: "canonical record bytes, every single-bit flip", runs: bytes.length * 8, counts: { "parsed, rejected": parsedCount } })
    expect(parsedCount).toBeGreaterThan(1000)
  })

  fuzz(
    "arbitrary and mutated canonical bytes: never a throw; what parses re-encodes to the same bytes and is rejected",
    fc.oneof(fc.uint8Array({ maxLength: 1400 }), mutantsOf(userRecordBytes(bob.record)), mutantsOf(userRecordBytes(bob.record))),
    SIGNED_RUNS,
    (bytes) => {
      let parsed: Either.Either<UserRecord, string> | undefined
      expect(() => {
        parsed = parseUserRecordBytes(bytes)
      }).not.toThrow()
      if (parsed === undefined || Either.isLeft(parsed)) return "refused"
      expect(toHex(userRecordBytes(parsed.right))).toBe(toHex(bytes))
      if (toHex(bytes) === toHex(userRecordBytes(bob.record))) return "the original"
      expect(Either.isLeft(accept(parsed.right))).toBe(true)
      return "parsed, rejected"
    },
    { "parsed, rejected": 40 }
  )

  fuzz(
    "the validity rules: a properly signed record is accepted exactly when its claim, times and lifetime are in bounds",
    fc.tuple(
      fc.integer({ min: 8, max: 12 }),
      fc.integer({ min: -2 * DAY, max: 2 * DAY }),
      fc.integer({ min: -DAY, max: 9 * DAY }),
      fc.nat({ max: 100 })
    ),
    200,
    ([difficulty, issuedOffset, lifetime, sequence]) => {
      const issuedAt = Math.max(0, NOW + issuedOffset)
      const expiresAt = Math.max(0, issuedAt + lifetime)
      const unsigned: UnsignedUserRecord = {
        ...withoutSignature(alice.record),
        sequence,
        issuedAt,
        expiresAt,
        claim: solvedClaim(alice.username, alice.signingKey, difficulty)
      }
      const record = signUserRecord(unsigned, alice.identity.sign)
      const { maxClockSkewMs, maxLifetimeMs } = defaultRecordLimits
      const expected = difficulty < testClaimRules.minDifficulty
        ? "ClaimTooEasy"
        : expiresAt <= NOW
        ? "Expired"
        : issuedAt > NOW + maxClockSkewMs
        ? "IssuedInFuture"
        : expiresAt - issuedAt <= 0 || expiresAt - issuedAt > maxLifetimeMs
        ? "LifetimeTooLong"
        : "Stored"
      const outcome = accept(record)
      const actual = Either.isRight(outcome) ? String(outcome.right) : outcome.left.reason
      expect(actual).toBe(expected)
      return actual
    },
    { ClaimTooEasy: 10, Expired: 10, IssuedInFuture: 10, LifetimeTooLong: 5, Stored: 10 }
  )
})

// ---------------------------------------------------------------------------
// Envelopes, sealed payloads, receipts

describe("envelopes, messages and receipts", () => {
  it("the fixtures open and check", () => {
    const opened = Effect.runSync(bobCrypto.open(envelope))
    expect(opened.text).toBe("a sealed hello ✓")
    const checked = checkOpenedMessage({ opened, expectedRecipient: bob.username, receivedAt: NOW, verify: verifyEd25519, claim: testClaimRules })
    expect(Either.isRight(checked)).toBe(true)
    expect(Either.isRight(checkReceipt({ receipt, recipientRecord: bob.record, verify: verifyEd25519 }))).toBe(true)
  })

  fuzz(
    "a mutated envelope does not decode or does not open, unless it decodes to the very envelope sealed",
    fc.oneof(arbInput, mutatedJson(envelopeJson), mutatedJson(envelopeJson)),
    SIGNED_RUNS,
    (input) => {
      const decoded = decodeChecked(Envelope, input)
      if (Either.isLeft(decoded)) return "refused"
      // A decoded envelope always has an id: the relays compute it without guarding.
      expect(() => envelopeId(decoded.right)).not.toThrow()
      const opened = Effect.runSyncExit(bobCrypto.open(decoded.right))
      if (Exit.isFailure(opened)) return "decoded, does not open"
      expect(JSON.stringify(Schema.encodeSync(Envelope)(decoded.right))).toBe(JSON.stringify(envelopeJson))
      return "decoded to the original"
    },
    { "decoded, does not open": 40 }
  )

  fuzz(
    "ciphertext base64 is canonical: whatever decodes encodes back to the same text",
    fc.oneof(
      fc.string({ maxLength: 64 }),
      fc.base64String({ maxLength: 64 }),
      arbByteMutations.map((m) => new TextDecoder().decode(mutateBytes(bytesOf(toBase64(Uint8Array.of(1, 2, 3, 4, 5))), m)))
    ),
    ARBITRARY_RUNS * 2,
    (text) => {
      const bytes = fromBase64(text)
      if (bytes === undefined) return "refused"
      expect(toBase64(bytes)).toBe(text)
      return "decoded"
    },
    { decoded: 100, refused: 100 }
  )

  // What Effect's base64 decoder takes though it is not canonical: line breaks anywhere, and the
  // unused low bits of the last group set (for lengths that are not a multiple of 3).
  const BASE64_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
  const arbLaxBase64 = fc.oneof(
    fc.tuple(fc.uint8Array({ maxLength: 40 }), fc.nat(), fc.constantFrom("\n", "\r\n", "\r")).map(([bytes, at, lineBreak]) => {
      const text = toBase64(bytes)
      const cut = at % (text.length + 1)
      return text.slice(0, cut) + lineBreak + text.slice(cut)
    }),
    fc.tuple(fc.uint8Array({ minLength: 1, maxLength: 40 }).filter((bytes) => bytes.length % 3 !== 0), fc.integer({ min: 1, max: 15 }))
      .map(([bytes, noise]) => {
        const text = toBase64(bytes)
        const padding = bytes.length % 3 === 1 ? 2 : 1
        const last = text.length - padding - 1
        // Two padding characters leave 4 unused bits in the last character, one leaves 2.
        const unused = padding === 2 ? noise : (noise % 3) + 1
        const sextet = BASE64_ALPHABET.indexOf(text.charAt(last)) | unused
        return text.slice(0, last) + BASE64_ALPHABET.charAt(sextet) + text.slice(last + 1)
      })
  )

  fuzz(
    "ciphertext base64 refuses what Effect's decoder alone would take: line breaks, unused bits set",
    arbLaxBase64,
    ARBITRARY_RUNS,
    (text) => {
      expect(Either.isRight(Encoding.decodeBase64(text)), JSON.stringify(text)).toBe(true)
      expect(fromBase64(text), JSON.stringify(text)).toBeUndefined()
      return "refused"
    },
    { refused: ARBITRARY_RUNS }
  )

  it("every single-bit flip of a sealed payload (exhaustive) parses back exactly or not at all, and never passes the signature check", () => {
    const payload = sealedPayloadBytes(signedFromAlice)
    const header = { version: 2 as const, recipientKey: userKey(bob.username), ephemeralKey: bob.record.encryptionKey }
    expect(Either.isRight(readSealedPayload({ envelope: header, plaintext: payload, verify: verifyEd25519 }))).toBe(true)
    let parsedCount = 0
    for (let bit = 0; bit < payload.length * 8; bit++) {
      const mutated = flipBit(payload, bit)
      const parsed = parseSealedPayload(mutated)
      if (Either.isLeft(parsed)) continue
      parsedCount++
      expect(toHex(sealedPayloadBytes(parsed.right))).toBe(toHex(mutated))
      expect(Either.isLeft(readSealedPayload({ envelope: header, plaintext: mutated, verify: verifyEd25519 })), `bit ${bit}`).toBe(true)
    }
    report.push({ name: "sealed payload, every single-bit flip", runs: payload.length * 8, counts: { "parsed, rejected": parsedCount } })
    expect(parsedCount).toBeGreaterThan(1000)
  })

  fuzz(
    "arbitrary and mutated sealed payloads: never a throw; what parses re-encodes to the same bytes and fails the checks",
    fc.oneof(fc.uint8Array({ maxLength: 2000 }), mutantsOf(sealedPayloadBytes(signedFromAlice)), mutantsOf(sealedPayloadBytes(signedFromAlice))),
    SIGNED_RUNS,
    (bytes) => {
      let parsed: ReturnType<typeof parseSealedPayload> | undefined
      expect(() => {
        parsed = parseSealedPayload(bytes)
      }).not.toThrow()
      if (parsed === undefined || Either.isLeft(parsed)) return "refused"
      expect(toHex(sealedPayloadBytes(parsed.right))).toBe(toHex(bytes))
      if (toHex(bytes) === toHex(sealedPayloadBytes(signedFromAlice))) return "the original"
      const header = { version: 2 as const, recipientKey: userKey(parsed.right.to), ephemeralKey: bob.record.encryptionKey }
      expect(Either.isLeft(readSealedPayload({ envelope: header, plaintext: bytes, verify: verifyEd25519 }))).toBe(true)
      // Even past the payload signature (not checked here), the carried record must be the sender's and valid.
      const checked = checkOpenedMessage({
        opened: parsed.right,
        expectedRecipient: bob.username,
        receivedAt: NOW,
        verify: verifyEd25519,
        claim: testClaimRules
      })
      expect(Either.isLeft(checked)).toBe(true)
      return "parsed, rejected"
    },
    { "parsed, rejected": 40 }
  )

  fuzz(
    "a mutated receipt does not decode or does not verify, unless it decodes to the very receipt signed",
    fc.oneof(arbInput, mutatedJson(receiptJson), mutatedJson(receiptJson)),
    SIGNED_RUNS,
    (input) => {
      const decoded = decodeChecked(SignedReceipt, input)
      if (Either.isLeft(decoded)) return "refused"
      const checked = checkReceipt({ receipt: decoded.right, recipientRecord: bob.record, verify: verifyEd25519 })
      if (Either.isLeft(checked)) return "decoded, rejected"
      expect(JSON.stringify(Schema.encodeSync(SignedReceipt)(decoded.right))).toBe(JSON.stringify(receiptJson))
      return "decoded to the original"
    },
    { "decoded, rejected": 40 }
  )
})

// ---------------------------------------------------------------------------
// Mail, postage and mailbox authorizations

describe("mail, postage and mailbox authorizations", () => {
  const StoreMailPayload = Schema.Struct({ mail: Mail, postage: Postage })
  const valid = [
    { mail: messageMail, postage: messagePostage },
    { mail: receiptMail, postage: receiptPostage }
  ].map((value) => Schema.encodeSync(StoreMailPayload)(value))
  const postageOk = (value: typeof StoreMailPayload.Type) =>
    Either.isRight(checkPostage({
      mail: value.mail,
      postage: value.postage,
      now: NOW,
      mailTtlMs: MAIL_TTL,
      verify: verifyEd25519,
      claim: testClaimRules
    }))

  it("the fixtures pass", () => {
    for (const value of valid) expect(postageOk(Schema.decodeUnknownSync(StoreMailPayload)(value))).toBe(true)
  })

  fuzz(
    "mutated mail and postage: a typed failure, or the postage is refused, unless they decode to the very mail and postage signed",
    fc.nat().chain((which) => {
      const base = valid[which % valid.length]
      return fc.tuple(fc.constant(base), mutatedJson(base))
    }),
    SIGNED_RUNS,
    ([base, input]) => {
      const decoded = decodeChecked(StoreMailPayload, input)
      if (Either.isLeft(decoded)) return "refused"
      expect(() => mailId(decoded.right.mail)).not.toThrow()
      if (!postageOk(decoded.right)) return "decoded, postage refused"
      expect(JSON.stringify(Schema.encodeSync(StoreMailPayload)(decoded.right))).toBe(JSON.stringify(base))
      return "decoded to the original"
    },
    { "decoded, postage refused": 40 }
  )

  const FetchPayload = Schema.Struct({ recipientKey: FetchMail.fields.recipientKey, authorization: MailboxAuthorization })
  const AckPayload = Schema.Struct({
    recipientKey: AckMail.fields.recipientKey,
    ids: AckMail.fields.ids,
    authorization: MailboxAuthorization
  })
  const mailboxValid = [
    { schema: asSchema(FetchPayload), value: { recipientKey: fetchRequest.recipientKey, authorization: fetchAuthorization }, operation: "FetchMail" as const },
    { schema: asSchema(AckPayload), value: { recipientKey: ackRequest.recipientKey, ids: ackRequest.ids, authorization: ackAuthorization }, operation: "AckMail" as const }
  ]

  fuzz(
    "mutated mailbox requests: a typed failure, or denied, unless they decode to the very request signed",
    fc.nat().chain((which) => {
      const sample = mailboxValid[which % mailboxValid.length] as (typeof mailboxValid)[number]
      return fc.tuple(fc.constant(sample), mutatedJson(sample.value))
    }),
    SIGNED_RUNS,
    ([sample, input]) => {
      const decoded = decodeChecked(sample.schema, input)
      if (Either.isLeft(decoded)) return "refused"
      const value = decoded.right as {
        readonly recipientKey: Key
        readonly ids?: ReadonlyArray<MessageId>
        readonly authorization: MailboxAuthorization
      }
      const checked = checkMailboxRequest({
        request: {
          operation: sample.operation,
          recipientKey: value.recipientKey,
          relay: relayId,
          requestedAt: value.authorization.requestedAt,
          ids: value.ids ?? []
        },
        signature: value.authorization.signature,
        owner: bob.record,
        caller: bob.identity.nodeId,
        now: NOW,
        verify: verifyEd25519
      })
      if (Either.isLeft(checked)) return `decoded, denied ${checked.left.reason}`
      expect(JSON.stringify(Schema.encodeSync(sample.schema)(value))).toBe(JSON.stringify(sample.value))
      return "decoded to the original"
    },
    { "decoded, denied BadSignature": 40 }
  )
})

// ---------------------------------------------------------------------------
// Names, references, fingerprints, addresses

/** Strings users type, and what a hostile peer or a damaged file might hold. */
const arbText: fc.Arbitrary<string> = fc.oneof(
  fc.string({ maxLength: 40 }),
  fc.string({ unit: "binary", maxLength: 40 }),
  fc.string({ unit: "grapheme", maxLength: 20 }),
  fc.constantFrom("ａｌｉｃｅ", "Alice", "alice@", "@", "alice＠1a2b", "\u212a" + "elvin", "ﬃx", "﷽".repeat(200), "\ud800abc", "a".repeat(100_000)),
  fc.tuple(fc.constantFrom("alice", "bob.smith_2", "a-b"), fc.constantFrom("@", "＠", " @"), fc.string({ maxLength: 50 }))
    .map(([name, at, rest]) => name + at + rest)
)

const mutatedText = (valid: ReadonlyArray<string>): fc.Arbitrary<string> =>
  fc.constantFrom(...valid).chain((text) => mutantsOf(bytesOf(text))).map((bytes) => new TextDecoder().decode(bytes))

describe("usernames, name references, fingerprints and addresses", () => {
  const aliceFingerprint = formatFingerprint(fingerprintOf(alice.signingKey))
  const validRefs = ["alice", `alice@${aliceFingerprint}`, `Bob.Smith_2@${fingerprintOf(bob.signingKey).toUpperCase()}`]

  fuzz(
    "parseUsername: a typed failure or a normalized name that parses to itself and has a key",
    fc.oneof(arbText, mutatedText(validRefs)),
    ARBITRARY_RUNS * 2,
    (input) => {
      let parsed: ReturnType<typeof parseUsername> | undefined
      expect(() => {
        parsed = parseUsername(input)
      }).not.toThrow()
      if (parsed === undefined || Either.isLeft(parsed)) {
        expect(parsed?._tag === "Left" && parsed.left._tag).toBe("InvalidUsername")
        return "refused"
      }
      expect(parsed.right).toMatch(/^[a-z0-9_.-]{3,32}$/)
      expect(parseUsername(parsed.right)).toEqual(Either.right(parsed.right))
      expect(Schema.is(Username)(parsed.right)).toBe(true)
      expect(userKey(parsed.right)).toMatch(/^[0-9a-f]{64}$/)
      return "parsed"
    },
    { parsed: 50, refused: 200 }
  )

  fuzz(
    "parseNameRef: a typed failure or a reference whose written form reads back the same",
    fc.oneof(arbText, mutatedText(validRefs), mutatedText(validRefs)),
    ARBITRARY_RUNS * 2,
    (input) => {
      let parsed: ReturnType<typeof parseNameRef> | undefined
      expect(() => {
        parsed = parseNameRef(input)
      }).not.toThrow()
      if (parsed === undefined || Either.isLeft(parsed)) {
        expect(["InvalidUsername", "InvalidFingerprint"]).toContain(parsed?._tag === "Left" ? parsed.left._tag : "none")
        return "refused"
      }
      const ref = parsed.right
      expect(Schema.is(Username)(ref.username)).toBe(true)
      if (ref.fingerprint !== undefined) expect(ref.fingerprint).toMatch(/^[0-9a-f]{32}$/)
      expect(parseNameRef(formatNameRef(ref))).toEqual(Either.right(ref))
      return ref.fingerprint === undefined ? "parsed, name" : "parsed, name@fingerprint"
    },
    { "parsed, name": 20, "parsed, name@fingerprint": 20 }
  )

  fuzz(
    "parseFingerprint: a typed failure or 32 lower-case hex digits that read back the same",
    fc.oneof(arbText, mutatedText([aliceFingerprint, fingerprintOf(bob.signingKey)]), mutatedText([aliceFingerprint.toUpperCase().replaceAll("-", " ")])),
    ARBITRARY_RUNS,
    (input) => {
      const parsed = parseFingerprint(input)
      if (Either.isLeft(parsed)) {
        expect(parsed.left._tag).toBe("InvalidFingerprint")
        return "refused"
      }
      expect(parsed.right).toMatch(/^[0-9a-f]{32}$/)
      expect(parseFingerprint(formatFingerprint(parsed.right))).toEqual(parsed)
      return "parsed"
    },
    { parsed: 10 }
  )

  fuzz(
    "parseAddress: a typed failure or an address that formats and reads back the same",
    fc.oneof(arbText, mutatedText(["127.0.0.1:4242", "[2001:db8::1]:80", "peer.example:65535"])),
    ARBITRARY_RUNS,
    (input) => {
      const parsed = parseAddress(input)
      if (Either.isLeft(parsed)) {
        expect(parsed.left._tag).toBe("InvalidAddress")
        return "refused"
      }
      expect(Schema.is(Address)(parsed.right)).toBe(true)
      expect(parseAddress(formatAddress(parsed.right))).toEqual(parsed)
      return "parsed"
    },
    { parsed: 20 }
  )
})

// ---------------------------------------------------------------------------
// Claim proofs

describe("claim proofs", () => {
  /** The documented challenge, built independently of the code under test, hashed with node:crypto. */
  const oracle = (username: string, signingKey: string, difficulty: number, nonce: number): boolean => {
    const name = Buffer.from(username, "utf8")
    const nonceBytes = Buffer.alloc(8)
    nonceBytes.writeBigUInt64BE(BigInt(nonce))
    const challenge = Buffer.concat([
      Buffer.from("peerchat/name-claim/v1\n", "ascii"),
      Buffer.from([name.length >>> 8, name.length & 255]),
      name,
      Buffer.from(signingKey, "hex"),
      nonceBytes
    ])
    return leadingZeroBits(new Uint8Array(createHash("sha256").update(challenge).digest())) >= difficulty
  }
  const validProof = Schema.encodeSync(ClaimProof)(alice.record.claim)

  fuzz(
    "arbitrary and mutated proofs: a typed failure, or checked exactly as the documented challenge says",
    fc.tuple(
      fc.oneof(arbInput, mutatedJson(validProof), mutatedJson(validProof), Arbitrary.make(ClaimProof)),
      fc.constantFrom(alice, bob, mallory),
      fc.integer({ min: 0, max: 12 })
    ),
    ARBITRARY_RUNS * 2,
    ([input, user, minDifficulty]) => {
      const decoded = decodeChecked(ClaimProof, input)
      if (Either.isLeft(decoded)) return "refused"
      const proof = decoded.right
      let result: ReturnType<typeof checkClaimProof> | undefined
      expect(() => {
        result = checkClaimProof({ username: alice.username, signingKey: user.signingKey, proof, minDifficulty, hash: sha256Native })
      }).not.toThrow()
      const valid = result !== undefined && Either.isRight(result)
      expect(valid).toBe(proof.difficulty >= minDifficulty && oracle(alice.username, user.signingKey, proof.difficulty, proof.nonce))
      return valid ? "decoded, valid" : "decoded, invalid"
    },
    { "decoded, valid": 3, "decoded, invalid": 100 }
  )

  it("a proof is bound to its name and key: alice's proof checks for other names and keys only as the challenge says", () => {
    const proof = alice.record.claim
    const check = (username: string, signingKey: string) =>
      checkClaimProof({ username, signingKey, proof, minDifficulty: 0, hash: sha256Native })
    expect(Either.isRight(check(alice.username, alice.signingKey))).toBe(true)
    for (const [username, signingKey] of [[bob.username, alice.signingKey], [alice.username, bob.signingKey], ["alicf", alice.signingKey]] as const) {
      expect(Either.isRight(check(username, signingKey))).toBe(oracle(username, signingKey, proof.difficulty, proof.nonce))
    }
  })
})
