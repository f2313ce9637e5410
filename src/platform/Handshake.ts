/**
 * The mutual signed handshake that opens every TCP connection between two
 * nodes, before any request is accepted. Each side proves that it holds the
 * Ed25519 key whose SHA-256 is its node id by signing a transcript that binds
 * both sides' fresh nonces and node ids, and the client also signs the address
 * it advertises, so the server can hand handlers an authenticated caller
 * (node id + address) without trusting anything in the requests themselves.
 *
 * Messages (one frame each, JSON, hex for bytes):
 *
 * 1. client → server `Hello   {version, nodeId, signingKey, address, nonce}`
 * 2. server → client `Welcome {version, nodeId, signingKey, nonce, signature}`
 *    (or `Rejected {reason}` and the server closes)
 * 3. client → server `Proof   {signature}`
 *
 * after which the client may send requests at once (it does not wait for an
 * acknowledgement; a rejected proof closes the connection).
 *
 * Signed transcripts, byte for byte (`‖` is concatenation, ids and nonces are
 * their raw 32 bytes, integers unsigned big-endian):
 *
 * ```
 * server signs: "peerchat/handshake/v1/server"   (28 ASCII bytes)
 *               ‖ clientNonce (32) ‖ serverNonce (32)
 *               ‖ clientNodeId (32) ‖ serverNodeId (32)
 * client signs: "peerchat/handshake/v1/client"   (28 ASCII bytes)
 *               ‖ clientNonce (32) ‖ serverNonce (32)
 *               ‖ clientNodeId (32) ‖ serverNodeId (32)
 *               ‖ u16 length of host ‖ host (UTF-8) ‖ u16 port
 * ```
 *
 * The two context strings have the same length and differ, and no other
 * Peerchat signature starts with `peerchat/handshake/`, so a signature made
 * for one role or purpose is never valid for another. Every field before the
 * host has a fixed length and the host is length-prefixed, so the encoding is
 * unambiguous. Fresh nonces on both sides make every transcript unique, so a
 * recorded handshake cannot be replayed. Node ids are hashes of the signing
 * keys, so binding the ids binds the keys.
 *
 * @since 0.1.0
 */
import { randomBytes as nodeRandomBytes } from "node:crypto"
import { Effect, ParseResult, Schema } from "effect"
import { concatBytes, fromHex, toHex, utf8 } from "../core/Bytes.js"
import { shortString, uint16 } from "../core/Encoding.js"
import { Address } from "../core/Contact.js"
import { keyToBytes, NodeId, nodeIdFromPublicKey } from "../core/Id.js"
import { PublicKeyHex, SignatureHex, type VerifySignature } from "../core/UserRecord.js"
import type { IdentityService } from "../node/Identity.js"
import { type AuthenticatedPeer, PROTOCOL_VERSION } from "../node/Protocol.js"
import { sha256Native } from "./NodeCrypto.js"

/** Bytes of a handshake nonce. */
export const NONCE_BYTES = 32

/** Longest reason a `Rejected` message may carry. */
export const MAX_REJECT_REASON = 200

/** Context string of the server's signature. */
export const SERVER_CONTEXT = `peerchat/handshake/v${PROTOCOL_VERSION}/server`

/** Context string of the client's signature. */
export const CLIENT_CONTEXT = `peerchat/handshake/v${PROTOCOL_VERSION}/client`

const SERVER_CONTEXT_BYTES = utf8(SERVER_CONTEXT)
const CLIENT_CONTEXT_BYTES = utf8(CLIENT_CONTEXT)

/** A 32-byte nonce as 64 lower-case hex characters. */
export const NonceHex = Schema.String.pipe(
  Schema.pattern(/^[0-9a-f]{64}$/, { message: () => "expected 64 lower-case hex characters (a 32-byte nonce)" })
)

/** First message: who the client is, where it listens, and its nonce. */
export const Hello = Schema.TaggedStruct("Hello", {
  /** An integer rather than a literal, so another version is reported as such rather than as garbage. */
  version: Schema.Int,
  nodeId: NodeId,
  signingKey: PublicKeyHex,
  /** The address the client advertises; covered by its `Proof` signature. */
  address: Address,
  nonce: NonceHex
})
/** @see Hello */
export type Hello = typeof Hello.Type

/** Second message: the server's identity, nonce and signature over the server transcript. */
export const Welcome = Schema.TaggedStruct("Welcome", {
  version: Schema.Int,
  nodeId: NodeId,
  signingKey: PublicKeyHex,
  nonce: NonceHex,
  signature: SignatureHex
})
/** @see Welcome */
export type Welcome = typeof Welcome.Type

/** The server's refusal of a `Hello` (wrong version, bad node id), sent just before it closes. */
export const Rejected = Schema.TaggedStruct("Rejected", {
  reason: Schema.String.pipe(Schema.maxLength(MAX_REJECT_REASON))
})
/** @see Rejected */
export type Rejected = typeof Rejected.Type

/** Third message: the client's signature over the client transcript. */
export const Proof = Schema.TaggedStruct("Proof", {
  signature: SignatureHex
})
/** @see Proof */
export type Proof = typeof Proof.Type

/** What the client may receive in answer to its `Hello`. */
export const ServerReply = Schema.Union(Welcome, Rejected)

/** Any handshake message, as a frame carries it. */
export type HandshakeMessage = Hello | Welcome | Rejected | Proof

/** Why a handshake did not complete. */
export class HandshakeError extends Schema.TaggedError<HandshakeError>()("HandshakeError", {
  /** Bad signature, wrong version, undecodable message, the peer hung up, or no answer in time. */
  detail: Schema.String
}) {
  override get message(): string {
    return `handshake failed: ${this.detail}`
  }
}

/** One side of a connection as the handshake needs it: the next frame, and a way to send one. */
export interface HandshakeChannel {
  /** The next frame's JSON value; fails when the connection closes or sends something unreadable. */
  readonly receive: Effect.Effect<unknown, HandshakeError>
  /** Sends one message; returns false if the connection is already closed. */
  readonly send: (message: HandshakeMessage) => boolean
}

/** This node, as it presents itself in handshakes. */
export interface HandshakeSelf {
  readonly identity: IdentityService
  /** The address this node advertises (what callers it dials will see as its address). */
  readonly address: Address
}

/** Source of handshake nonces; `node:crypto` by default, seeded in tests. */
export type NonceSource = (length: number) => Uint8Array

const defaultNonces: NonceSource = (length) => new Uint8Array(nodeRandomBytes(length))

/** The bytes the server signs (see the module comment). */
export const serverTranscript = (
  clientNonce: Uint8Array,
  serverNonce: Uint8Array,
  clientNodeId: NodeId,
  serverNodeId: NodeId
): Uint8Array =>
  concatBytes(SERVER_CONTEXT_BYTES, clientNonce, serverNonce, keyToBytes(clientNodeId), keyToBytes(serverNodeId))

/** The bytes the client signs (see the module comment); the host is at most 253 bytes, so its length fits in 16 bits. */
export const clientTranscript = (
  clientNonce: Uint8Array,
  serverNonce: Uint8Array,
  clientNodeId: NodeId,
  serverNodeId: NodeId,
  clientAddress: Address
): Uint8Array => {
  return concatBytes(
    CLIENT_CONTEXT_BYTES,
    clientNonce,
    serverNonce,
    keyToBytes(clientNodeId),
    keyToBytes(serverNodeId),
    shortString(clientAddress.host, "host"),
    uint16(clientAddress.port, "port")
  )
}

const failed = (detail: string) => new HandshakeError({ detail })

const decode = <A, I>(schema: Schema.Schema<A, I>, what: string) => {
  const decodeEither = Schema.decodeUnknownEither(schema)
  return (value: unknown): Effect.Effect<A, HandshakeError> => {
    const result = decodeEither(value)
    return result._tag === "Right"
      ? Effect.succeed(result.right)
      : Effect.fail(failed(`malformed ${what}: ${ParseResult.TreeFormatter.formatErrorSync(result.left)}`))
  }
}

const decodeHello = decode(Hello, "Hello")
const decodeServerReply = decode(ServerReply, "Welcome")
const decodeProof = decode(Proof, "Proof")

// The schemas admit only lower-case hex of the right length, so decoding cannot fail.
const bytesOfHex = (hex: string): Uint8Array => fromHex(hex) as Uint8Array

/** Checks that `nodeId` is the hash of `signingKeyHex`; returns the key bytes. */
const checkNodeId = (nodeId: NodeId, signingKeyHex: string, who: string): Effect.Effect<Uint8Array, HandshakeError> => {
  const key = bytesOfHex(signingKeyHex)
  return nodeIdFromPublicKey(key, sha256Native) === nodeId
    ? Effect.succeed(key)
    : Effect.fail(failed(`the ${who}'s node id is not the hash of its signing key`))
}

// `toHex` of a 32-byte key or a 64-byte Ed25519 signature is exactly the lower-case hex the brands check.
const keyHex = (key: Uint8Array): PublicKeyHex => toHex(key) as PublicKeyHex
const signatureHex = (signature: Uint8Array): SignatureHex => toHex(signature) as SignatureHex

const send = (channel: HandshakeChannel, message: HandshakeMessage): Effect.Effect<void, HandshakeError> =>
  Effect.suspend(() => channel.send(message) ? Effect.void : Effect.fail(failed("the connection closed")))

/**
 * Runs the client side over a freshly opened connection. Succeeds with the
 * server's proven identity (its address is the one we dialled, `dialled`).
 * Whether that is the node the caller expected is the caller's check: the
 * connection is valid for whoever proved themselves, and is pooled as such.
 */
export const clientHandshake = (options: {
  readonly channel: HandshakeChannel
  readonly self: HandshakeSelf
  readonly verify: VerifySignature
  readonly dialled: Address
  readonly nonces?: NonceSource
}): Effect.Effect<AuthenticatedPeer, HandshakeError> =>
  Effect.gen(function*() {
    const { channel, self } = options
    const clientNonce = (options.nonces ?? defaultNonces)(NONCE_BYTES)
    yield* send(channel, {
      _tag: "Hello",
      version: PROTOCOL_VERSION,
      nodeId: self.identity.nodeId,
      signingKey: keyHex(self.identity.signingPublicKey),
      address: self.address,
      nonce: toHex(clientNonce)
    })
    const reply = yield* Effect.flatMap(channel.receive, decodeServerReply)
    if (reply._tag === "Rejected") return yield* Effect.fail(failed(`the server refused: ${reply.reason}`))
    if (reply.version !== PROTOCOL_VERSION) {
      return yield* Effect.fail(failed(`the server speaks version ${reply.version}, this node ${PROTOCOL_VERSION}`))
    }
    const serverKey = yield* checkNodeId(reply.nodeId, reply.signingKey, "server")
    const serverNonce = bytesOfHex(reply.nonce)
    const signed = serverTranscript(clientNonce, serverNonce, self.identity.nodeId, reply.nodeId)
    if (!options.verify(serverKey, signed, bytesOfHex(reply.signature))) {
      return yield* Effect.fail(failed("the server's signature does not verify"))
    }
    const proof = self.identity.sign(
      clientTranscript(clientNonce, serverNonce, self.identity.nodeId, reply.nodeId, self.address)
    )
    yield* send(channel, { _tag: "Proof", signature: signatureHex(proof) })
    return { nodeId: reply.nodeId, address: options.dialled }
  })

/**
 * Runs the server side over a freshly accepted connection. Succeeds with the
 * client's proven identity and signed address; on a bad `Hello` it tells the
 * client why (`Rejected`) before failing.
 */
export const serverHandshake = (options: {
  readonly channel: HandshakeChannel
  readonly self: HandshakeSelf
  readonly verify: VerifySignature
  readonly nonces?: NonceSource
}): Effect.Effect<AuthenticatedPeer, HandshakeError> =>
  Effect.gen(function*() {
    const { channel, self } = options
    const hello = yield* Effect.flatMap(channel.receive, decodeHello)
    const reject = (reason: string) => {
      channel.send({ _tag: "Rejected", reason: reason.slice(0, MAX_REJECT_REASON) })
      return Effect.fail(failed(reason))
    }
    if (hello.version !== PROTOCOL_VERSION) {
      return yield* reject(`version ${hello.version} is not supported (this node speaks ${PROTOCOL_VERSION})`)
    }
    const clientKey = bytesOfHex(hello.signingKey)
    if (nodeIdFromPublicKey(clientKey, sha256Native) !== hello.nodeId) {
      return yield* reject("the node id is not the hash of the signing key")
    }
    const clientNonce = bytesOfHex(hello.nonce)
    const serverNonce = (options.nonces ?? defaultNonces)(NONCE_BYTES)
    const signature = self.identity.sign(serverTranscript(clientNonce, serverNonce, hello.nodeId, self.identity.nodeId))
    yield* send(channel, {
      _tag: "Welcome",
      version: PROTOCOL_VERSION,
      nodeId: self.identity.nodeId,
      signingKey: keyHex(self.identity.signingPublicKey),
      nonce: toHex(serverNonce),
      signature: signatureHex(signature)
    })
    const proof = yield* Effect.flatMap(channel.receive, decodeProof)
    const signed = clientTranscript(clientNonce, serverNonce, hello.nodeId, self.identity.nodeId, hello.address)
    if (!options.verify(clientKey, signed, bytesOfHex(proof.signature))) {
      return yield* Effect.fail(failed("the client's signature does not verify"))
    }
    return { nodeId: hello.nodeId, address: hello.address }
  })
