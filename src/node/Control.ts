/**
 * The local control interface of a running node: what `peerchat status`,
 * `peers`, `register` and `whois` ask for. `NodeControl` is the service the
 * node implements; the schemas here are the JSON documents of the loopback
 * HTTP API (served and called from `src/platform/`), shared by both sides so
 * the client decodes exactly what the server encodes.
 *
 * @since 0.1.0
 */
import { TransportHealth } from "./Transport.js"
import { Context, type Effect, Schema } from "effect"
import type { Contact } from "../core/Contact.js"
import { NodeId } from "../core/Id.js"
import { FingerprintMismatch, InvalidFingerprint } from "../core/Pinning.js"
import { InvalidUsername, Username } from "../core/Username.js"

/** Whether and how the node is connected to a network. */
export const BootstrapState = Schema.Union(
  /** No bootstrap peer was given: this node started a new network, and nobody has joined it yet. */
  Schema.TaggedStruct("Standalone", {}),
  /** Still trying to reach a bootstrap peer; after a failed try, why it failed and when the next one starts. */
  Schema.TaggedStruct("Joining", {
    /** Failed attempts so far. */
    attempts: Schema.Number,
    lastError: Schema.NullOr(Schema.String),
    nextAttemptAt: Schema.NullOr(Schema.Number),
    /** The bootstrap addresses being tried, `host:port` (absent from older nodes). */
    addresses: Schema.optional(Schema.Array(Schema.String))
  }),
  /**
   * At least one bootstrap peer answered and the table was filled from it;
   * for the first node of a new network, another node joined it (`joinedAt`:
   * when the first one did).
   */
  Schema.TaggedStruct("Joined", { joinedAt: Schema.Number })
)
/** @see BootstrapState */
export type BootstrapState = typeof BootstrapState.Type

/**
 * Where the node process's resident memory (`rss`) goes, in bytes: `code`
 * (the node binary and libraries mapped from disk, shared with other node
 * processes), `heapUsed` (JavaScript objects and compiled code in the V8 heap,
 * which has `heapCommitted` reserved), `buffers` (bytes outside the heap:
 * sockets, the secure channel) and `native` (the rest: SQLite, OpenSSL, libuv,
 * V8's tables, and heap pages committed but free).
 */
export const ProcessMemory = Schema.Struct({
  rss: Schema.NonNegativeInt,
  code: Schema.NonNegativeInt,
  heapUsed: Schema.NonNegativeInt,
  heapCommitted: Schema.NonNegativeInt,
  buffers: Schema.NonNegativeInt,
  native: Schema.NonNegativeInt
})
/** @see ProcessMemory */
export type ProcessMemory = typeof ProcessMemory.Type

/** `peerchat status --json`. */
export const NodeStatus = Schema.Struct({
  nodeId: NodeId,
  /** The address peers reach this node at, `host:port`. */
  listen: Schema.String,
  /** The username this node has registered, if any. */
  username: Schema.NullOr(Username),
  /** Number of contacts in the routing table: the peers this node knows, live or not. */
  peers: Schema.Number,
  /**
   * Contacts heard from in the last 2 minutes with no failed request since
   * (core `PeerLiveness`): the peers this node can reach now. Absent from
   * older nodes.
   */
  livePeers: Schema.optional(Schema.Number),
  bootstrap: BootstrapState,
  /** Set when another key claims this node's own name (a conflict people who look it up will see). */
  nameWarning: Schema.optional(Schema.String),
  /** Open connections and what the resource limits refused since start. */
  connections: TransportHealth,
  /** The node process's memory (absent from older nodes). */
  memory: Schema.optional(ProcessMemory),
  /** Whether peers can reach this node at its address, from their dial-back answers ("Unknown" until asked). */
  reachability: Schema.Literal("Public", "Private", "Unknown"),
  /**
   * Circuits: the relays this node holds reservations with (`host:port`;
   * only behind a NAT, where callers reach it through them), and what it
   * relays for others (reservations held here, circuits offered or open).
   * Absent from nodes without relaying.
   */
  circuits: Schema.optional(Schema.Struct({
    relays: Schema.Array(Schema.String),
    reservationsServed: Schema.NonNegativeInt,
    circuitsServed: Schema.NonNegativeInt,
    /** Circuits this node spliced for others since it started. */
    circuitsRelayed: Schema.NonNegativeInt,
    /**
     * Hole punches since start: tries this node made to move a relayed
     * conversation to a direct connection (`succeeded`, `failed`), and
     * peers' tries it took part in (`answered`) or turned down (`refused`).
     */
    holePunches: Schema.optional(Schema.Struct({
      succeeded: Schema.NonNegativeInt,
      failed: Schema.NonNegativeInt,
      answered: Schema.NonNegativeInt,
      refused: Schema.NonNegativeInt
    }))
  }))
})
/** @see NodeStatus */
export type NodeStatus = typeof NodeStatus.Type

/** One routing-table contact as `peerchat peers --json` prints it. */
export const PeerEntry = Schema.Struct({ nodeId: NodeId, address: Schema.String })
/** @see PeerEntry */
export type PeerEntry = typeof PeerEntry.Type

/** `peerchat whois NAME --json` (and the answer to `register`). */
export const WhoisAnswer = Schema.Struct({
  username: Username,
  /** Fingerprint of the user's signing key, grouped (`name@fingerprint` names exactly this key). */
  fingerprint: Schema.String,
  nodeId: NodeId,
  /** The first route of the user's record: `host:port`, or `via host:port` for a user reached through a relay. */
  address: Schema.String,
  /** The addresses the record lists, `host:port` (none for a user behind a NAT that lists relays). */
  addresses: Schema.Array(Schema.String),
  /** The relays the record lists (a user behind a NAT), `nodeIdPrefix@host:port`. */
  relays: Schema.optional(Schema.Array(Schema.String)),
  sequence: Schema.Number,
  expiresAt: Schema.Number,
  /** What the user should know with the answer (a claim that is only local so far, a rival claim). */
  warning: Schema.optional(Schema.String)
})
/** @see WhoisAnswer */
export type WhoisAnswer = typeof WhoisAnswer.Type

/**
 * `POST /v1/stop` (`peerchat stop`): the node accepted to shut down; `pid`
 * is its process, which exits once the shutdown is done (the same as on
 * SIGTERM: `node.json` removed, connections and database closed).
 */
export const StopAnswer = Schema.Struct({ pid: Schema.Int.pipe(Schema.positive()) })
/** @see StopAnswer */
export type StopAnswer = typeof StopAnswer.Type

/** Request body of `POST /register`. */
export const RegisterRequest = Schema.Struct({ username: Schema.String.pipe(Schema.maxLength(256)) })

/** The name is held by another key whose claim is still live. */
export class NameTaken extends Schema.TaggedError<NameTaken>()("NameTaken", {
  username: Username,
  /** Node id of the current holder, when known. */
  holder: Schema.optional(NodeId)
}) {
  override get message(): string {
    return `the name "${this.username}" is already registered by another user${this.holder === undefined ? "" : ` (node ${this.holder.slice(0, 16)}…)`}`
  }
}

/** No live record for the name was found in the network. */
export class UserNotFound extends Schema.TaggedError<UserNotFound>()("UserNotFound", {
  username: Username
}) {
  override get message(): string {
    return `no user named "${this.username}" was found in the network`
  }
}

/** No peer answered: the node is not connected to a network, so "not found" would be a guess. */
export class NotConnected extends Schema.TaggedError<NotConnected>()("NotConnected", {
  detail: Schema.String
}) {
  override get message(): string {
    return `this node is not connected to the network (${this.detail}); ` +
      "check the bootstrap address with `peerchat status` and try again once it has peers"
  }
}

/** One key claiming a name, as a conflict lists it. */
export const NameClaimant = Schema.Struct({
  /** Short fingerprint of the claimant's signing key (see `peerchat verify`). */
  fingerprint: Schema.String,
  signingKey: Schema.String,
  nodeId: NodeId,
  /** The first address of the claimant's record, `host:port`. */
  address: Schema.String,
  /** How many of the name's k closest nodes hold this claim. */
  holders: Schema.Number
})
/** @see NameClaimant */
export type NameClaimant = typeof NameClaimant.Type

/**
 * Different keys claim the name: the network cannot say who holds it, so
 * nothing is sent until the user chooses one (`name@fingerprint`).
 */
export class NameConflict extends Schema.TaggedError<NameConflict>()("NameConflict", {
  username: Username,
  claimants: Schema.Array(NameClaimant)
}) {
  override get message(): string {
    const list = this.claimants.map((claimant) =>
      `${this.username}@${claimant.fingerprint} (node ${claimant.nodeId.slice(0, 16)}…, at ${claimant.address}, held by ${claimant.holders})`
    ).join("; ")
    return `the name "${this.username}" is claimed by ${this.claimants.length} different keys: ${list}. ` +
      "Nothing was sent. Ask the person you mean for their fingerprint (`peerchat id`) and use NAME@FINGERPRINT"
  }
}

/** This node already holds a different name; one node, one user. */
export class AlreadyRegistered extends Schema.TaggedError<AlreadyRegistered>()("AlreadyRegistered", {
  username: Username,
  existing: Username
}) {
  override get message(): string {
    return `this node is already registered as "${this.existing}"; start another data directory to register "${this.username}"`
  }
}

/** The record could not be stored at any node (no reachable peers, or all refused). */
export class PublishFailed extends Schema.TaggedError<PublishFailed>()("PublishFailed", {
  username: Username,
  detail: Schema.String
}) {
  override get message(): string {
    return `could not publish "${this.username}" to the network: ${this.detail}`
  }
}

/** Every error the control interface can answer with. */
export const ControlError = Schema.Union(
  InvalidUsername,
  InvalidFingerprint,
  FingerprintMismatch,
  NameTaken,
  UserNotFound,
  AlreadyRegistered,
  PublishFailed,
  NotConnected,
  NameConflict
)
/** @see ControlError */
export type ControlError = typeof ControlError.Type

/** What a running node offers its local user. */
export class NodeControl extends Context.Tag("peerchat/NodeControl")<NodeControl, {
  readonly status: Effect.Effect<NodeStatus>
  readonly peers: Effect.Effect<ReadonlyArray<Contact>>
  readonly register: (
    username: string
  ) => Effect.Effect<WhoisAnswer, InvalidUsername | NameTaken | AlreadyRegistered | PublishFailed | NotConnected>
  /** `name` or `name@fingerprint`. */
  readonly whois: (
    username: string
  ) => Effect.Effect<
    WhoisAnswer,
    InvalidUsername | InvalidFingerprint | UserNotFound | NameConflict | NotConnected | FingerprintMismatch
  >
  /**
   * Starts the node's shutdown and returns at once with the process that
   * will exit; the shutdown runs after the answer is sent. Absent where a
   * node cannot be stopped from its API (the route then answers NotFound).
   */
  readonly stop?: Effect.Effect<StopAnswer> | undefined
}>() {}
