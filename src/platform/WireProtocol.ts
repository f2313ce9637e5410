/**
 * The whole wire protocol as the transports serve it: the DHT's requests
 * (`src/node/Protocol.ts`), the relay's (`src/node/CircuitProtocol.ts`) and
 * the chat's (`src/chat/ChatProtocol.ts`),
 * merged here, where the transports are built. Each layer lists its own
 * requests once; the request union, the RPC group and the transports'
 * dispatch are derived from this merge, and each layer installs one handler
 * per request of its own (`Transport.serve`).
 *
 * @since 0.2.0
 */
import { Rpc, RpcGroup } from "@effect/rpc"
import { Schema } from "effect"
import { chatRequests } from "../chat/ChatProtocol.js"
import { circuitRequests } from "../node/CircuitProtocol.js"
import { dhtRequests } from "../node/Protocol.js"
import type { AnyRequest } from "../node/Transport.js"

/** Every request class of the protocol, by tag. */
export const requestClasses = { ...dhtRequests, ...circuitRequests, ...chatRequests } as const

/** Every request of the protocol. */
export type WireRequest = InstanceType<(typeof requestClasses)[keyof typeof requestClasses]>

/** The tags of every request. */
export type WireRequestTag = WireRequest["_tag"]

/** Schema of any request, for transports that decode a frame before dispatching it. */
export const WireRequest = Schema.Union(...Object.values(requestClasses))

/** The protocol as an `@effect/rpc` group, for the TCP transport's clients. */
export const WireRpcs = RpcGroup.make(...Object.values(requestClasses).map((request) => Rpc.fromTaggedRequest(request)))

/**
 * `request` as a request of the protocol, when its tag is one of it (every
 * request a layer sends is; a transport refuses anything else rather than
 * put it on the wire).
 */
export const asWireRequest = (request: AnyRequest): WireRequest | undefined =>
  // A request carrying a protocol tag is an instance of that tag's class: the classes own their tags.
  Object.hasOwn(requestClasses, request._tag) ? (request as unknown as WireRequest) : undefined
