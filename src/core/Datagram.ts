/**
 * Datagram queries: how a node asks a peer a `Ping` or a `FindNode` in one
 * UDP round trip instead of a TCP connection and a Noise handshake (a first
 * meeting over TCP costs both ends about 3.3 ms of CPU; a join at 1,000 nodes
 * meets about 160 peers). The UDP socket is bound to the same port as the
 * TCP listener; everything else still goes over TCP, and a peer that does
 * not answer datagrams is called over TCP (see `DatagramRoutes`).
 *
 * Keys. Each node has a static X25519 key for the life of its process,
 * signed by its identity key (the statement the secure channel signs, see
 * `src/platform/SecureChannel.ts`). Both directions of a client-server pair
 * are sealed with ChaCha20-Poly1305 under keys derived from the two static
 * keys' DH, with a random 96-bit nonce per packet: computed once per pair and
 * process, so a query costs no key agreement after the first.
 *
 * Packets (every one starts with `"PD"`, the format version and its kind):
 * - `Hello` (client → server): a random 16-byte token, padded to
 *   `HELLO_BYTES`, so the `Welcome` it draws is never larger than itself:
 *   a forged source address gains an attacker no amplification.
 * - `Welcome` (server → client): the token, the server's identity key, its
 *   static key and the identity key's signature over it, and a cookie: a MAC
 *   of the client's address (host and port) under a secret of the server's
 *   that changes every `COOKIE_EPOCH_MILLIS`. The client believes the keys
 *   only if the identity key hashes to the node id it expected and the
 *   signature holds.
 * - `Query` (client → server): the cookie, the client's identity key, static
 *   key and signature, a nonce, and the sealed request (with the port the
 *   client listens on). The server first checks the cookie (so a query from a
 *   forged source address, which could aim a large answer at a victim, costs
 *   it one MAC and gets nothing), then, only for a client it has not met,
 *   the signature; the caller's address is its source host and its listening
 *   port, as over TCP.
 * - `Answer` (server → client): a nonce and the sealed answer, to the address
 *   the query came from.
 * - `Busy` (server → client): a query from a client it has not met came over
 *   its budget for new clients; the client calls over TCP instead.
 *
 * A query with a bad cookie (stale, or from before the server restarted)
 * draws a `Welcome` whose token is the first 16 bytes of the query's sealed
 * body: the client takes the new cookie (and keys) and sends its requests
 * again at once. `Welcome` and `Busy` are smaller than any query.
 *
 * A server serves only `Ping`, `FindNode` (reads) and `DialBack` by
 * datagram, and each request id of a client at most `MAX_SERVINGS` times
 * (`RequestReplays`): an observer who saw a query can draw two more answers
 * (or dial-backs) to its sender at most.
 *
 * Pure: layouts, sizes and the decisions; the caller brings the crypto.
 *
 * @since 0.7.0
 */
import { compareBytes, concatBytes, utf8 } from "./Bytes.js"
import { setNewest } from "./NewestFirst.js"
import { KEY_BYTES, SIGNATURE_BYTES } from "./KeySizes.js"

/**
 * Version of the datagram format (the second byte after the magic); a node
 * ignores packets of another. 2 since `DialBack` travels this way too: a
 * node of format 1 would drop one unanswered, and its caller would wait out
 * the call and count no vote, so the two formats do not meet at all and
 * such a pair talks over TCP (after one unanswered `Hello` per address, as
 * with a node that predates datagrams). 3 since two nodes that share a
 * pair answer each other's listening probes with a MAC under the pair's
 * probe key (core `ListeningProbe`, "A pair probe"), which a node of format
 * 2 would take for a handshake: a pair exists only between nodes of one
 * format, so a prober holding one knows the listener reads the pair probe.
 */
export const DATAGRAM_FORMAT_VERSION = 3

/** The first two bytes of every datagram: ASCII "PD". */
const MAGIC_0 = 0x50
const MAGIC_1 = 0x44

/** The four kinds of datagram. */
export const DatagramKind = { Hello: 1, Welcome: 2, Query: 3, Answer: 4, Busy: 5 } as const

const HEADER_BYTES = 4
/** Random bytes of a `Hello`'s token, echoed by its `Welcome`. */
export const TOKEN_BYTES = 16
/** Bytes of a cookie (a truncated HMAC-SHA256). */
export const COOKIE_BYTES = 16
/** Bytes of a packet's nonce (ChaCha20-Poly1305's). */
export const NONCE_BYTES = 12
/** Bytes of the authentication tag that ends every sealed body. */
export const TAG_BYTES = 16

/** A `Hello` is padded to this size: larger than the `Welcome` it draws. */
export const HELLO_BYTES = 192
/** A `Busy`'s size: header and token. */
export const BUSY_BYTES = HEADER_BYTES + TOKEN_BYTES
/** A `Welcome`'s size: header, token, identity key, static key, signature, cookie. */
export const WELCOME_BYTES = HEADER_BYTES + TOKEN_BYTES + KEY_BYTES + KEY_BYTES + SIGNATURE_BYTES + COOKIE_BYTES
/** A `Query`'s bytes before its nonce (all of them authenticated with the sealed request). */
const QUERY_HEADER_BYTES = HEADER_BYTES + COOKIE_BYTES + KEY_BYTES + KEY_BYTES + SIGNATURE_BYTES
/** An `Answer`'s bytes before its nonce. */
const ANSWER_HEADER_BYTES = HEADER_BYTES

/** Largest `Query`: a `Ping` or a `FindNode` needs a few hundred bytes; anything larger is dropped unread. */
export const MAX_QUERY_BYTES = 1200
/**
 * Largest `Answer`: a `FindNode` answer of 20 contacts is about 2.3 KB; one
 * of 64 contacts with long host names fits too. An answer that would not is
 * replaced by a failure (a handler's bug: answers are bounded).
 */
export const MAX_ANSWER_BYTES = 16 * 1024

/**
 * The requests that travel by datagram: reads with small, bounded answers,
 * and `DialBack`, whose only effect is a listening probe of the caller's
 * proven host (a replay draws at most two more, there). A write or a long
 * poll never does: a replayed datagram would repeat it.
 */
const DATAGRAM_REQUESTS: ReadonlySet<string> = new Set(["Ping", "FindNode", "DialBack"])

/** Whether a request of kind `tag` goes by datagram (when the peer takes datagrams). */
export const travelsByDatagram = (tag: string): boolean => DATAGRAM_REQUESTS.has(tag)

/** What a datagram says, once its layout checks out (nothing in it is believed yet). */
export type Datagram =
  | { readonly kind: "Hello"; readonly token: Uint8Array }
  | {
    readonly kind: "Welcome"
    readonly token: Uint8Array
    readonly signingKey: Uint8Array
    readonly staticKey: Uint8Array
    readonly staticSignature: Uint8Array
    readonly cookie: Uint8Array
  }
  | {
    readonly kind: "Query"
    readonly cookie: Uint8Array
    readonly signingKey: Uint8Array
    readonly staticKey: Uint8Array
    readonly staticSignature: Uint8Array
    readonly nonce: Uint8Array
    /** The bytes the seal authenticates besides the body: everything before the nonce. */
    readonly associated: Uint8Array
    readonly sealed: Uint8Array
  }
  | { readonly kind: "Answer"; readonly nonce: Uint8Array; readonly associated: Uint8Array; readonly sealed: Uint8Array }
  | { readonly kind: "Busy"; readonly token: Uint8Array }

const header = (kind: number): Uint8Array => Uint8Array.of(MAGIC_0, MAGIC_1, DATAGRAM_FORMAT_VERSION, kind)

/**
 * The layout of `packet`, or undefined when it is not a datagram of this
 * format (wrong magic, version or kind, or a size its kind cannot have):
 * the cheap check before any crypto. The fields are views into `packet`.
 */
export const parseDatagram = (packet: Uint8Array): Datagram | undefined => {
  if (packet.length < HEADER_BYTES || packet[0] !== MAGIC_0 || packet[1] !== MAGIC_1) return undefined
  if (packet[2] !== DATAGRAM_FORMAT_VERSION) return undefined
  let at = HEADER_BYTES
  const take = (bytes: number): Uint8Array => packet.subarray(at, (at += bytes))
  switch (packet[3]) {
    case DatagramKind.Hello:
      return packet.length === HELLO_BYTES ? { kind: "Hello", token: take(TOKEN_BYTES) } : undefined
    case DatagramKind.Welcome:
      if (packet.length !== WELCOME_BYTES) return undefined
      return {
        kind: "Welcome",
        token: take(TOKEN_BYTES),
        signingKey: take(KEY_BYTES),
        staticKey: take(KEY_BYTES),
        staticSignature: take(SIGNATURE_BYTES),
        cookie: take(COOKIE_BYTES)
      }
    case DatagramKind.Query:
      if (packet.length < QUERY_HEADER_BYTES + NONCE_BYTES + TAG_BYTES || packet.length > MAX_QUERY_BYTES) return undefined
      return {
        kind: "Query",
        cookie: take(COOKIE_BYTES),
        signingKey: take(KEY_BYTES),
        staticKey: take(KEY_BYTES),
        staticSignature: take(SIGNATURE_BYTES),
        associated: packet.subarray(0, QUERY_HEADER_BYTES),
        nonce: take(NONCE_BYTES),
        sealed: packet.subarray(QUERY_HEADER_BYTES + NONCE_BYTES)
      }
    case DatagramKind.Answer:
      if (packet.length < ANSWER_HEADER_BYTES + NONCE_BYTES + TAG_BYTES || packet.length > MAX_ANSWER_BYTES) return undefined
      return {
        kind: "Answer",
        associated: packet.subarray(0, ANSWER_HEADER_BYTES),
        nonce: take(NONCE_BYTES),
        sealed: packet.subarray(ANSWER_HEADER_BYTES + NONCE_BYTES)
      }
    case DatagramKind.Busy:
      return packet.length === BUSY_BYTES ? { kind: "Busy", token: take(TOKEN_BYTES) } : undefined
    default:
      return undefined
  }
}

const requireLength = (what: string, bytes: Uint8Array, length: number): void => {
  if (bytes.length !== length) throw new RangeError(`${what} is ${length} bytes, got ${bytes.length}`)
}

/** A `Hello` carrying `token`, padded with zeros to `HELLO_BYTES`. */
export const helloPacket = (token: Uint8Array): Uint8Array => {
  requireLength("a token", token, TOKEN_BYTES)
  const packet = new Uint8Array(HELLO_BYTES)
  packet.set(header(DatagramKind.Hello))
  packet.set(token, HEADER_BYTES)
  return packet
}

/** This node as it shows itself in datagrams: its identity key, static key and the signature binding them. */
export interface DatagramSelf {
  readonly signingKey: Uint8Array
  readonly staticKey: Uint8Array
  readonly staticSignature: Uint8Array
}

const selfBytes = (self: DatagramSelf): Uint8Array => {
  requireLength("an identity key", self.signingKey, KEY_BYTES)
  requireLength("a static key", self.staticKey, KEY_BYTES)
  requireLength("a signature", self.staticSignature, SIGNATURE_BYTES)
  return concatBytes(self.signingKey, self.staticKey, self.staticSignature)
}

/** The `Welcome` answering `token`, with the cookie for the address the `Hello` came from. */
export const welcomePacket = (token: Uint8Array, self: DatagramSelf, cookie: Uint8Array): Uint8Array => {
  requireLength("a token", token, TOKEN_BYTES)
  requireLength("a cookie", cookie, COOKIE_BYTES)
  return concatBytes(header(DatagramKind.Welcome), token, selfBytes(self), cookie)
}

/** What a `Query`'s seal authenticates besides its body: the header, the cookie and the client's keys. */
export const queryAssociated = (cookie: Uint8Array, self: DatagramSelf): Uint8Array => {
  requireLength("a cookie", cookie, COOKIE_BYTES)
  return concatBytes(header(DatagramKind.Query), cookie, selfBytes(self))
}

/**
 * A `Busy`: the server has no budget left for a client it has not met; the
 * token is the first `TOKEN_BYTES` of the refused query's sealed body, so the
 * client knows which call to take over TCP at once.
 */
export const busyPacket = (token: Uint8Array): Uint8Array => {
  requireLength("a token", token, TOKEN_BYTES)
  return concatBytes(header(DatagramKind.Busy), token)
}

/** What an `Answer`'s seal authenticates besides its body: its header (never written to). */
export const ANSWER_ASSOCIATED: Uint8Array = header(DatagramKind.Answer)

/** A sealed packet: the associated bytes, the nonce, the sealed body (ciphertext and tag). */
export const sealedPacket = (associated: Uint8Array, nonce: Uint8Array, sealed: Uint8Array): Uint8Array => {
  requireLength("a nonce", nonce, NONCE_BYTES)
  return concatBytes(associated, nonce, sealed)
}

// -- Budgets --------------------------------------------------------------------------

/** What a server spends on datagrams from hosts it has not met, per host and in total. */
export interface DatagramLimits {
  /** `Hello`s one host may send a second; each costs a MAC and a `Welcome` (smaller than the `Hello`). */
  readonly hellosPerSecond: number
  /** `Hello`s one host may send at once. */
  readonly helloBurst: number
  /** New clients one host may bring a second; each costs a signature check and a DH (about 160 µs). */
  readonly newClientsPerSecond: number
  /** New clients one host may bring at once. */
  readonly newClientBurst: number
  /** New clients over all hosts a second: the node's bound on that work (about 8 % of a core at the default). */
  readonly newClientsPerSecondTotal: number
  /** New clients over all hosts at once. */
  readonly newClientBurstTotal: number
  /** `Hello`s over all hosts a second: spoofed sources beyond the per-host memory reflect no more than this. */
  readonly hellosPerSecondTotal: number
  /** `Hello`s over all hosts at once. */
  readonly helloBurstTotal: number
}

/**
 * Defaults. A joining node meets each peer once (one new client, a `Hello`
 * or two); a host that runs a few nodes stays far inside them; a flood from
 * one host is cut to 20 signature checks a second.
 */
export const defaultDatagramLimits: DatagramLimits = Object.freeze({
  hellosPerSecond: 50,
  helloBurst: 200,
  newClientsPerSecond: 20,
  newClientBurst: 100,
  newClientsPerSecondTotal: 500,
  newClientBurstTotal: 1000,
  hellosPerSecondTotal: 2000,
  helloBurstTotal: 4000
})

/** Request ids remembered per client: enough for the calls of several seconds, little memory per client. */
export const REMEMBERED_REQUESTS = 256

/** How often one request id is served: the first time and once for each of its two resends (`QUERY_RESENDS_MILLIS`). */
export const MAX_SERVINGS = 3

/**
 * The request ids a server has seen from one client, to refuse replays: a
 * query is served again only as often as its resends could need (a lost
 * answer), so an observer who saw it once can make the server answer it at
 * most `MAX_SERVINGS` times while it is among the last `REMEMBERED_REQUESTS`
 * served; an older one could be served again, but a captured query dies
 * with its cookie within two epochs (4 minutes), and replaying it costs the
 * replayer's victim its request budget (and, for a `DialBack`, draws a
 * listening probe of that victim alone, at the host its cookie proved),
 * never a probe of anyone else. No order of ids is assumed: a client's
 * link made again starts at a new random id, maybe below the old ones.
 * Bound: `REMEMBERED_REQUESTS` ids.
 */
export class RequestReplays {
  private readonly servings = new Map<string, number>()

  /** Whether request `id` may be served again (it was served fewer than `MAX_SERVINGS` times). */
  mayServe(id: string): boolean {
    return (this.servings.get(id) ?? 0) < MAX_SERVINGS
  }

  /** Whether request `id` was never served (among the last `REMEMBERED_REQUESTS`): not a resend nor a replay. */
  isNew(id: string): boolean {
    return !this.servings.has(id)
  }

  /** Request `id` is being served (once the budgets let it in: refused requests take no room). */
  served(id: string): void {
    setNewest(this.servings, id, (this.servings.get(id) ?? 0) + 1, REMEMBERED_REQUESTS)
  }
}

// -- Cookies ------------------------------------------------------------------------

/** How long a cookie secret lasts; a cookie is accepted in its epoch and the next. */
export const COOKIE_EPOCH_MILLIS = 120_000

/** The epoch of `now`. */
export const cookieEpochOf = (now: number): number => Math.floor(now / COOKIE_EPOCH_MILLIS)

/** The epochs whose cookies the server accepts at `now`: this one and the one before. */
export const acceptedCookieEpochs = (now: number): readonly [number, number] => {
  const epoch = cookieEpochOf(now)
  return [epoch, epoch - 1]
}

/** What a cookie MACs: the epoch and the client's address as the server saw it. */
export const cookieInput = (epoch: number, host: string, port: number): Uint8Array => utf8(`peerchat/cookie\n${epoch}\n${host}\n${port}`)

/**
 * Whether a client still uses a cookie it received at `receivedAt`: for one
 * epoch's length, so the server, which accepts the epoch it minted it in and
 * the next, always still does.
 */
export const cookieStillGood = (receivedAt: number, now: number): boolean =>
  now >= receivedAt && now - receivedAt < COOKIE_EPOCH_MILLIS

// -- Key derivation ------------------------------------------------------------------

/** HKDF's salt for the keys of a pair. */
export const KEY_SALT = utf8("peerchat/datagram/v1")

/**
 * HKDF's info for the keys a client with static key `clientStatic` shares
 * with a server with `serverStatic`: the order makes the two sessions of a
 * pair that query each other use different keys.
 */
export const keyInfo = (clientStatic: Uint8Array, serverStatic: Uint8Array): Uint8Array => concatBytes(clientStatic, serverStatic)

const PROBE_KEY_CONTEXT = utf8("peerchat/datagram/probe-key/v1\n")

/**
 * What a pair's probe key is the HMAC of (keyed by the pair's DH secret):
 * a context, then the two static keys in byte order, so both ends derive the
 * same key whichever of them was the client (two nodes that query each other
 * hold two sessions, which share one DH secret). The listening probe's MAC
 * key (core `ListeningProbe`, "A pair probe"); no packet uses it.
 */
export const probeKeyInput = (staticA: Uint8Array, staticB: Uint8Array): Uint8Array =>
  compareBytes(staticA, staticB) <= 0
    ? concatBytes(PROBE_KEY_CONTEXT, staticA, staticB)
    : concatBytes(PROBE_KEY_CONTEXT, staticB, staticA)

// -- Timing and fallback ---------------------------------------------------------------

/** When a `Hello` not yet answered is sent again, in ms after the first. */
export const HELLO_RESENDS_MILLIS: ReadonlyArray<number> = [250, 750]

/** When a `Query` not yet answered is sent again, in ms after the first (a lost datagram must not cost a whole timeout). */
export const QUERY_RESENDS_MILLIS: ReadonlyArray<number> = [400, 1200]

/**
 * How long a call waits for a `Welcome` before it goes over TCP instead: half
 * its own time, at most 750 ms (a `Hello` and two resends), so the TCP
 * attempt still has most of a default call's 2 s.
 */
export const helloGiveUpMillis = (callMillis: number): number => Math.min(750, Math.floor(callMillis / 2))

/** How long a peer that did not answer a `Hello` is called over TCP only. */
export const NO_DATAGRAMS_FOR_MILLIS = 10 * 60_000

/** Most addresses remembered as not answering datagrams. */
export const MAX_NO_DATAGRAM_ADDRESSES = 4096

/**
 * Addresses that did not answer a `Hello` (a firewall, a NAT, a node of an
 * older version), called over TCP only until their time is up. Bound:
 * `MAX_NO_DATAGRAM_ADDRESSES` entries, the oldest forgotten first (which
 * costs a `Hello` timeout again, nothing worse).
 */
export class DatagramRoutes {
  private readonly until = new Map<string, number>()

  /** Whether calls to `address` may try datagrams at `now`. */
  usable(address: string, now: number): boolean {
    const until = this.until.get(address)
    if (until === undefined) return true
    if (now < until) return false
    this.until.delete(address)
    return true
  }

  /** `address` did not answer a `Hello` at `now`. */
  markUnanswered(address: string, now: number): void {
    setNewest(this.until, address, now + NO_DATAGRAMS_FOR_MILLIS, MAX_NO_DATAGRAM_ADDRESSES)
  }

  /** Addresses remembered. */
  get size(): number {
    return this.until.size
  }
}
