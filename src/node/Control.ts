/**
 * The local control interface of a running node: what `peerchat status`,
 * `peers`, `register` and `whois` ask for. `NodeControl` is the service the
 * node implements; the schemas here are the JSON documents of the loopback
 * HTTP API (served and called from `src/platform/`), shared by both sides so
 * the client decodes exactly what the server encodes.
 *
 * @since 0.1.0
 */
import { Context, type Effect, Schema } from "effect"
import type { Contact } from "../core/Contact.js"
import { NodeId } from "../core/Id.js"
import { InvalidUsername, Username } from "../core/Username.js"

/** Whether and how the node is connected to a network. */
export const BootstrapState = Schema.Union(
  /** No bootstrap peer was given: this node started a new network. */
  Schema.TaggedStruct("Standalone", {}),
  /** Still trying to reach a bootstrap peer; after a failed try, why it failed and when the next one starts. */
  Schema.TaggedStruct("Joining", {
    attempts: Schema.Number,
    lastError: Schema.NullOr(Schema.String),
    nextAttemptAt: Schema.NullOr(Schema.Number)
  }),
  /** At least one bootstrap peer answered and the table was filled from it. */
  Schema.TaggedStruct("Joined", { joinedAt: Schema.Number })
)
/** @see BootstrapState */
export type BootstrapState = typeof BootstrapState.Type

/** `peerchat status --json`. */
export const NodeStatus = Schema.Struct({
  nodeId: NodeId,
  /** The address peers reach this node at, `host:port`. */
  listen: Schema.String,
  /** The username this node has registered, if any. */
  username: Schema.NullOr(Username),
  /** Number of contacts in the routing table. */
  peers: Schema.Number,
  bootstrap: BootstrapState
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
  nodeId: NodeId,
  /** The first address of the user's record, `host:port`. */
  address: Schema.String,
  addresses: Schema.Array(Schema.String),
  sequence: Schema.Number,
  expiresAt: Schema.Number
})
/** @see WhoisAnswer */
export type WhoisAnswer = typeof WhoisAnswer.Type

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
export const ControlError = Schema.Union(InvalidUsername, NameTaken, UserNotFound, AlreadyRegistered, PublishFailed)
/** @see ControlError */
export type ControlError = typeof ControlError.Type

/** What a running node offers its local user. */
export class NodeControl extends Context.Tag("peerchat/NodeControl")<NodeControl, {
  readonly status: Effect.Effect<NodeStatus>
  readonly peers: Effect.Effect<ReadonlyArray<Contact>>
  readonly register: (username: string) => Effect.Effect<WhoisAnswer, InvalidUsername | NameTaken | AlreadyRegistered | PublishFailed>
  readonly whois: (username: string) => Effect.Effect<WhoisAnswer, InvalidUsername | UserNotFound>
}>() {}
