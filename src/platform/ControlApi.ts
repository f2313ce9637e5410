/**
 * What the control API's client and server share beside the domain schemas:
 * the paths, the bound on a name in a path, and the body of a protocol error.
 * It lives apart from `ControlServer.ts` so the `peerchat` client commands
 * load only this, not the HTTP server and the chat services behind it.
 *
 * @since 0.1.0
 */
import { Schema } from "effect"

/** Paths of the control API, shared with the client. */
export const ControlPaths = {
  status: "/v1/status",
  peers: "/v1/peers",
  register: "/v1/register",
  stop: "/v1/stop",
  whois: (username: string): string => `/v1/whois/${encodeURIComponent(username)}`,
  messages: "/v1/messages",
  delivery: (id: string): string => `/v1/messages/${encodeURIComponent(id)}/delivery`,
  conversations: "/v1/conversations",
  id: "/v1/id",
  contacts: "/v1/contacts",
  verify: "/v1/contacts/verify",
  trust: "/v1/contacts/trust",
  conversationMessages: (name: string): string => `/v1/conversations/${encodeURIComponent(name)}/messages`,
  markRead: (name: string): string => `/v1/conversations/${encodeURIComponent(name)}/read`,
  events: "/v1/events",
  windows: "/v1/windows",
  detachWindow: (window: number): string => `/v1/windows/${window}/detach`
} as const

/** Longest username accepted in a path, in UTF-16 units, matching `RegisterRequest`'s bound. */
export const MAX_USERNAME_INPUT = 256

/** Tags of the errors the HTTP layer itself answers with, beside the domain errors. */
export const ProtocolErrorTag = Schema.Literal(
  "Unauthorized",
  /** A request from a web page (an `Origin` header) or for a host that is not this machine's loopback (DNS rebinding). */
  "Forbidden",
  "BadRequest",
  "NotFound",
  "LengthRequired",
  "PayloadTooLarge",
  "InternalError",
  /** Too many event streams are open already. */
  "Busy",
  /** The node is on its way out (its last chat window has gone) and takes no new window. */
  "Stopping"
)
/** @see ProtocolErrorTag */
export type ProtocolErrorTag = typeof ProtocolErrorTag.Type

/** Body of every protocol error answer: `{ "error": { "_tag", "message" } }`. */
export const ProtocolErrorBody = Schema.Struct({
  error: Schema.Struct({ _tag: ProtocolErrorTag, message: Schema.String })
})
