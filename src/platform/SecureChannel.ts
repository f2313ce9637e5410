/**
 * The secure upgrade of the transport stack: turns a raw byte stream into an
 * encrypted, authenticated one bound to both nodes' ids. It runs the Noise
 * handshake `Noise_XX_25519_ChaChaPoly_SHA256` (`Noise.ts`), in which each
 * side proves a fresh X25519 static key, and carries in the encrypted
 * handshake payloads each node's Ed25519 identity key with its signature over
 * that static key — the binding libp2p's Noise handshake uses. The node id is
 * the SHA-256 of the identity key, so after the handshake each side knows the
 * other's node id, and every byte that follows is encrypted and authenticated
 * under keys only the two of them hold. An on-path observer sees the protocol
 * version (in the first message, in clear), then sizes and timing only; a
 * changed, dropped, replayed or reordered byte fails authentication and ends
 * the connection.
 *
 * Messages (each sent as a 2-byte big-endian length and the Noise message):
 *
 * 1. initiator → responder: `e`; payload in clear `{"version": 2}`
 * 2. responder → initiator: `e, ee, s, es`; encrypted payload `Welcome
 *    {signingKey, staticSignature, observed}` (the initiator's host and port
 *    as the responder sees them, as libp2p's identify reports them), or
 *    `Rejected {reason}` (another version), after which the responder closes
 * 3. initiator → responder: `s, se`; encrypted payload `Proof {signingKey,
 *    staticSignature, listenPort}` (where the initiator accepts connections;
 *    the responder pairs it with the host it sees, never a host the initiator
 *    names, so a node cannot point others at a third party)
 *
 * The prologue is `"peerchat/noise"`; the first payload puts the version in
 * the handshake hash, so both sides agree on it or the handshake fails. The static-key signature covers `"peerchat/noise-static-key/v3\n" (the protocol version) ‖
 * static public key (32)`: no other Peerchat signature starts with that
 * prefix. Static keys are fresh per process and never stored.
 *
 * Bounds: a handshake message is at most 1,024 bytes (a longer announced
 * length ends the connection before its body is buffered); after the
 * handshake, encrypted records are at most 65,535 bytes each.
 *
 * @since 0.2.0
 */
import { Effect, type Either, ParseResult, Schema } from "effect"
import { concatBytes, fromHex, toHex, utf8 } from "../core/Bytes.js"
import { Address, Port } from "../core/Contact.js"
import { type NodeId, nodeIdFromPublicKey } from "../core/Id.js"
import { PublicKeyHex, SignatureHex, type VerifySignature } from "../core/UserRecord.js"
import type { IdentityService } from "../node/Identity.js"
import { PROTOCOL_VERSION } from "../node/Protocol.js"
import type { ByteStream, StreamEnd, StreamListener } from "./ByteStream.js"
import {
  type CipherState,
  generateX25519KeyPair,
  LengthPrefixedReader,
  MAX_NOISE_MESSAGE,
  MAX_RECORD_PLAINTEXT,
  makeXXHandshake,
  type NoiseError,
  sealStream,
  type X25519KeyPair
} from "./Noise.js"
import { sha256Native } from "./NodeCrypto.js"

/** Largest handshake message accepted (they are a few hundred bytes). */
export const MAX_HANDSHAKE_MESSAGE = 1024

/**
 * The Noise prologue. The version is not in it: it travels in the first
 * payload, which the handshake hash covers too, so a peer of another version
 * can still read the `Rejected` that says why.
 */
export const PROLOGUE = utf8("peerchat/noise")

/** Prefix of what an identity key signs to vouch for a Noise static key. */
export const STATIC_KEY_CONTEXT = `peerchat/noise-static-key/v${PROTOCOL_VERSION}\n`

const STATIC_KEY_CONTEXT_BYTES = utf8(STATIC_KEY_CONTEXT)

/** Longest reason a `Rejected` payload may carry. */
export const MAX_REJECT_REASON = 200

/** The bytes an identity key signs for a static key. */
export const staticKeyStatement = (staticPublicKey: Uint8Array): Uint8Array =>
  concatBytes(STATIC_KEY_CONTEXT_BYTES, staticPublicKey)

/** First payload, in clear: the version the initiator speaks. */
export const Opening = Schema.Struct({
  /** An integer rather than a literal, so another version is reported as such rather than as garbage. */
  version: Schema.Int
})

/** Second payload: the responder's identity, and what it sees of the initiator. */
export const Welcome = Schema.TaggedStruct("Welcome", {
  signingKey: PublicKeyHex,
  staticSignature: SignatureHex,
  /** The initiator's host and port as the responder sees them. */
  observed: Address
})

/** Second payload when the responder will not talk (another version), sent just before it closes. */
export const Rejected = Schema.TaggedStruct("Rejected", {
  reason: Schema.String.pipe(Schema.maxLength(MAX_REJECT_REASON))
})

/** Third payload: the initiator's identity and the port it accepts connections on. */
export const Proof = Schema.TaggedStruct("Proof", {
  signingKey: PublicKeyHex,
  staticSignature: SignatureHex,
  /** 0 when the initiator accepts no connections. */
  listenPort: Port
})

const ResponderPayload = Schema.Union(Welcome, Rejected)

/** Why a handshake did not complete. */
export class HandshakeError extends Schema.TaggedError<HandshakeError>()("HandshakeError", {
  /** Bad signature, wrong version, undecodable or tampered message, the peer hung up, or no answer in time. */
  detail: Schema.String
}) {
  override get message(): string {
    return `handshake failed: ${this.detail}`
  }
}

/** This node as it presents itself in handshakes: its identity and a static key vouched for by it. */
export interface SecureSelf {
  readonly identity: IdentityService
  readonly staticKeys: X25519KeyPair
  /** The identity key's signature over `staticKeyStatement(staticKeys.publicKey)`. */
  readonly staticSignature: Uint8Array
}

/** A fresh static key for this process, signed by the node's identity key. */
export const makeSecureSelf = (identity: IdentityService, staticKeys: X25519KeyPair = generateX25519KeyPair()): SecureSelf => ({
  identity,
  staticKeys,
  staticSignature: identity.sign(staticKeyStatement(staticKeys.publicKey))
})

/** An upgraded stream and who is at the other end. */
export interface SecureSession {
  /** The encrypted stream: writes are sealed, reads are opened and authenticated. */
  readonly stream: ByteStream
  /** The other node's id, proven by the handshake. */
  readonly nodeId: NodeId
}

/** The initiator's session: also what the responder saw of us. */
export interface InitiatorSession extends SecureSession {
  /** Our host and port as the responder sees them. */
  readonly observed: Address
}

/** The responder's session: also where the initiator accepts connections. */
export interface ResponderSession extends SecureSession {
  /** The port the initiator listens on (0: none); its host is `stream.remoteHost`. */
  readonly listenPort: number
}

const failed = (detail: string) => new HandshakeError({ detail })

const encodeJson = (value: unknown): Uint8Array => utf8(JSON.stringify(value))

const decodePayload = <A, I>(schema: Schema.Schema<A, I>, what: string) => {
  const decode = Schema.decodeUnknownEither(schema)
  return (bytes: Uint8Array): Effect.Effect<A, HandshakeError> => {
    let value: unknown
    try {
      value = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes))
    } catch {
      return Effect.fail(failed(`the ${what} payload is not JSON`))
    }
    const result = decode(value)
    return result._tag === "Right"
      ? Effect.succeed(result.right)
      : Effect.fail(failed(`malformed ${what}: ${ParseResult.TreeFormatter.formatErrorSync(result.left)}`))
  }
}

const decodeOpening = decodePayload(Opening, "opening")
const decodeResponder = decodePayload(ResponderPayload, "Welcome")
const decodeProof = decodePayload(Proof, "Proof")

const fromNoise = <A>(result: Either.Either<A, NoiseError>, what: string): Effect.Effect<A, HandshakeError> =>
  result._tag === "Right" ? Effect.succeed(result.right) : Effect.fail(failed(`${what}: ${result.left.detail}`))

/** Frames a handshake message for the wire: 2-byte big-endian length, then the message. */
const withLength = (message: Uint8Array): Uint8Array => {
  const out = new Uint8Array(2 + message.length)
  out[0] = message.length >>> 8
  out[1] = message.length & 255
  out.set(message, 2)
  return out
}

/**
 * Reads length-prefixed handshake messages from a stream. Whatever arrives
 * after the last handshake message (the initiator may send requests at once)
 * stays in `reader` for the secure stream.
 */
class HandshakeInbox {
  readonly reader = new LengthPrefixedReader(MAX_NOISE_MESSAGE)
  private ended: StreamEnd | undefined = undefined
  private waiter: (() => void) | undefined = undefined

  constructor(readonly stream: ByteStream) {
    stream.listen({
      data: (chunk) => {
        this.reader.push(chunk)
        this.wake()
      },
      drain: () => {},
      end: (end) => {
        this.ended = end
        this.wake()
      }
    })
  }

  private wake(): void {
    const waiter = this.waiter
    this.waiter = undefined
    waiter?.()
  }

  /** The next handshake message; fails when the stream ends or announces more than a handshake message may hold. */
  readonly next: Effect.Effect<Uint8Array, HandshakeError> = Effect.suspend(() => {
    // Checked as soon as the 2-byte length arrives, before any of the body is buffered.
    const announced = this.reader.announcedLength()
    if (announced !== undefined && announced > MAX_HANDSHAKE_MESSAGE) {
      return Effect.fail(failed(`a handshake message announces ${announced} bytes, over ${MAX_HANDSHAKE_MESSAGE}`))
    }
    const read = this.reader.next()
    if (read._tag === "Message") {
      return read.bytes.length <= MAX_HANDSHAKE_MESSAGE
        ? Effect.succeed(read.bytes)
        : Effect.fail(failed(`a handshake message of ${read.bytes.length} bytes exceeds ${MAX_HANDSHAKE_MESSAGE}`))
    }
    // A message of at most the limit is complete once `2 + limit` bytes are buffered, so more
    // than that while still incomplete means a longer one was announced: refuse before buffering it.
    if (read._tag === "Oversized" || this.reader.bufferedBytes > 2 + MAX_HANDSHAKE_MESSAGE) {
      return Effect.fail(failed(`a handshake message announces more than ${MAX_HANDSHAKE_MESSAGE} bytes`))
    }
    if (this.ended !== undefined) return Effect.fail(failed(`the connection closed (${this.ended.detail})`))
    return Effect.flatMap(
      Effect.async<void>((resume) => {
        this.waiter = () => resume(Effect.void)
        return Effect.sync(() => {
          this.waiter = undefined
        })
      }),
      () => this.next
    )
  })

  send(message: Uint8Array): void {
    this.stream.write(withLength(message))
  }
}

// The schemas admit only lower-case hex of the right length, so decoding cannot fail.
const bytesOfHex = (hex: string): Uint8Array => fromHex(hex) as Uint8Array

/**
 * The node id a peer proved: its identity key must have signed the static key
 * the Noise handshake authenticated.
 */
const provenNodeId = (
  verify: VerifySignature,
  remoteStatic: Uint8Array,
  signingKeyHex: string,
  staticSignatureHex: string
): Effect.Effect<NodeId, HandshakeError> => {
  const signingKey = bytesOfHex(signingKeyHex)
  return verify(signingKey, staticKeyStatement(remoteStatic), bytesOfHex(staticSignatureHex))
    ? Effect.succeed(nodeIdFromPublicKey(signingKey, sha256Native))
    : Effect.fail(failed("the peer's identity key did not sign its handshake key"))
}

/**
 * Runs the initiator's side over a freshly opened stream. Succeeds with the
 * responder's proven node id; whether that is the node the caller expected is
 * the caller's check.
 */
export const initiate = (options: {
  readonly stream: ByteStream
  readonly self: SecureSelf
  readonly verify: VerifySignature
  /** The port this node accepts connections on (0: none). */
  readonly listenPort: number
}): Effect.Effect<InitiatorSession, HandshakeError> =>
  Effect.gen(function*() {
    const { self, stream } = options
    const inbox = new HandshakeInbox(stream)
    const noise = makeXXHandshake({ initiator: true, prologue: PROLOGUE, staticKeyPair: self.staticKeys })
    inbox.send(yield* fromNoise(noise.writeMessage(encodeJson({ version: PROTOCOL_VERSION })), "first message"))
    const reply = yield* Effect.flatMap(
      Effect.flatMap(inbox.next, (message) => fromNoise(noise.readMessage(message), "the responder's message")),
      decodeResponder
    )
    if (reply._tag === "Rejected") return yield* Effect.fail(failed(`the peer refused: ${reply.reason}`))
    const remoteStatic = noise.remoteStaticKey
    if (remoteStatic === undefined) return yield* Effect.fail(failed("no static key from the responder"))
    const nodeId = yield* provenNodeId(options.verify, remoteStatic, reply.signingKey, reply.staticSignature)
    const proof = {
      _tag: "Proof",
      signingKey: toHex(self.identity.signingPublicKey),
      staticSignature: toHex(self.staticSignature),
      listenPort: options.listenPort
    }
    inbox.send(yield* fromNoise(noise.writeMessage(encodeJson(proof)), "third message"))
    const ciphers = noise.split()
    return { stream: new SecureStream(stream, inbox.reader, ciphers.send, ciphers.receive), nodeId, observed: reply.observed }
  })

/**
 * Runs the responder's side over a freshly accepted stream. Succeeds with the
 * initiator's proven node id and listening port; an initiator of another
 * version is told why (`Rejected`) before the failure.
 */
export const respond = (options: {
  readonly stream: ByteStream
  readonly self: SecureSelf
  readonly verify: VerifySignature
}): Effect.Effect<ResponderSession, HandshakeError> =>
  Effect.gen(function*() {
    const { self, stream } = options
    const inbox = new HandshakeInbox(stream)
    const noise = makeXXHandshake({ initiator: false, prologue: PROLOGUE, staticKeyPair: self.staticKeys })
    const opening = yield* Effect.flatMap(
      Effect.flatMap(inbox.next, (message) => fromNoise(noise.readMessage(message), "the first message")),
      decodeOpening
    )
    if (opening.version !== PROTOCOL_VERSION) {
      const reason = `version ${opening.version} is not supported (this node speaks ${PROTOCOL_VERSION})`
      const rejection = noise.writeMessage(encodeJson({ _tag: "Rejected", reason: reason.slice(0, MAX_REJECT_REASON) }))
      if (rejection._tag === "Right") inbox.send(rejection.right)
      return yield* Effect.fail(failed(reason))
    }
    const welcome = {
      _tag: "Welcome",
      signingKey: toHex(self.identity.signingPublicKey),
      staticSignature: toHex(self.staticSignature),
      observed: { host: stream.remoteHost, port: stream.remotePort }
    }
    inbox.send(yield* fromNoise(noise.writeMessage(encodeJson(welcome)), "second message"))
    const proof = yield* Effect.flatMap(
      Effect.flatMap(inbox.next, (message) => fromNoise(noise.readMessage(message), "the initiator's proof")),
      decodeProof
    )
    const remoteStatic = noise.remoteStaticKey
    if (remoteStatic === undefined) return yield* Effect.fail(failed("no static key from the initiator"))
    const nodeId = yield* provenNodeId(options.verify, remoteStatic, proof.signingKey, proof.staticSignature)
    const ciphers = noise.split()
    return {
      stream: new SecureStream(stream, inbox.reader, ciphers.send, ciphers.receive),
      nodeId,
      listenPort: proof.listenPort
    }
  })

/**
 * The encrypted stream over a raw one: every write is sealed into records of
 * at most 65,535 bytes; every record read is authenticated and opened, and
 * the first that fails ends the connection as a protocol violation.
 *
 * While corked, writes are held as plaintext and sealed together when the
 * stream is uncorked (or once they fill a record): a burst of frames costs one record (one cipher set-up
 * and one tag, about 3 µs each) rather than one per frame, for this end and
 * for the peer that opens them. An observer then sees the size of a burst,
 * not of each message in it.
 */
class SecureStream implements ByteStream {
  private listener: StreamListener | undefined = undefined
  private ended: StreamEnd | undefined = undefined
  /** Nesting depth of `cork` (Node's semantics: only the outermost `uncork` sends). */
  private corks = 0
  /** Plaintext written while corked, sealed at the outermost `uncork`. */
  private held: Array<Uint8Array> = []
  private heldBytes = 0

  constructor(
    private readonly inner: ByteStream,
    private readonly reader: LengthPrefixedReader,
    private readonly sender: CipherState,
    private readonly receiver: CipherState
  ) {
    inner.listen({
      data: (chunk) => {
        this.reader.push(chunk)
        if (this.listener !== undefined) this.openRecords(this.listener)
      },
      drain: () => this.listener?.drain(),
      end: (end) => this.finish(end)
    })
  }

  get remoteHost(): string {
    return this.inner.remoteHost
  }

  get remotePort(): number {
    return this.inner.remotePort
  }

  /** Opens every complete record received, in order. */
  private openRecords(listener: StreamListener): void {
    while (this.ended === undefined) {
      const read = this.reader.next()
      if (read._tag === "NeedMore") return
      if (read._tag === "Oversized") {
        return this.destroy({ reason: "ProtocolViolation", detail: `a record announces ${read.announced} bytes` })
      }
      const opened = this.receiver.decryptWithAd(EMPTY, read.bytes)
      if (opened._tag === "Left") {
        return this.destroy({ reason: "ProtocolViolation", detail: "a record failed authentication (tampered or out of order)" })
      }
      listener.data(opened.right)
    }
  }

  private finish(end: StreamEnd): void {
    if (this.ended !== undefined) return
    this.ended = end
    this.reader.clear()
    this.held = []
    this.heldBytes = 0
    this.listener?.end(end)
  }

  readonly listen = (listener: StreamListener): void => {
    this.listener = listener
    if (this.ended !== undefined) listener.end(this.ended)
    // Records that arrived with the last handshake message.
    else if (this.reader.bufferedBytes > 0) this.openRecords(listener)
  }

  /**
   * Seals and sends `bytes`, or holds them until the outermost `uncork`; the
   * caller must not reuse them. Held plaintext that fills a record is sealed
   * at once, so a corked stream holds at most one record's worth.
   */
  readonly write = (bytes: Uint8Array): void => {
    if (this.ended !== undefined) return
    if (this.corks === 0) return this.inner.write(sealStream(this.sender, bytes))
    this.held.push(bytes)
    this.heldBytes += bytes.length
    if (this.heldBytes >= MAX_RECORD_PLAINTEXT) this.sealHeld()
  }

  /** Seals what is held into as few records as it fills, and passes them on. */
  private sealHeld(): void {
    const held = this.held
    this.held = []
    this.heldBytes = 0
    this.inner.write(sealStream(this.sender, held.length === 1 ? held[0] as Uint8Array : concatBytes(...held)))
  }

  /** Bytes not yet taken by the operating system, held plaintext included (the caller's bound on a slow reader). */
  readonly writableLength = (): number => this.inner.writableLength() + this.heldBytes
  readonly pause = (): void => this.inner.pause()
  readonly resume = (): void => this.inner.resume()
  readonly isPaused = (): boolean => this.inner.isPaused()
  readonly cork = (): void => {
    this.corks++
  }
  readonly uncork = (): void => {
    if (this.corks === 0) return
    // Nothing is held once the stream ended (`finish` drops it, `write` holds nothing after).
    if (--this.corks > 0 || this.held.length === 0) return
    this.sealHeld()
  }
  readonly setIdleTimeout = (millis: number, onIdle: () => void): void => this.inner.setIdleTimeout(millis, onIdle)

  readonly destroy = (end: StreamEnd): void => {
    this.inner.destroy(end)
    this.finish(end)
  }
}

const EMPTY = new Uint8Array(0)
