/**
 * The envelopes of `@effect/rpc`'s protocol as Peerchat's transports carry
 * them once a peer is authenticated, over a secure stream (`TcpTransport`) or
 * in sealed datagrams (`Datagrams`): what a client and a server may send, and
 * how each request is encoded and its answer decoded, compiled once.
 *
 * @since 0.7.0
 */
import { Rpc, RpcGroup, type RpcMessage } from "@effect/rpc"
import { Schema } from "effect"
import { refusalDetail, type RequestRefusal } from "../core/RequestLimits.js"
import { callCodecsOf } from "./RpcCalls.js"
import { serveCodecsOf } from "./RpcServing.js"
import { requestClasses, WireRpcs as NodeRpcs } from "./WireProtocol.js"


/** Request ids are decimal bigints (`RequestId` parses them with `BigInt`). */
const RequestIdString = Schema.String.pipe(Schema.pattern(/^[0-9]{1,20}$/))

const rpcTags = Array.from(NodeRpcs.requests.keys())

/** How each request goes on the wire and its answer comes back, compiled once. */
export const callCodecs = callCodecsOf(NodeRpcs)

/** What a client may send once authenticated; payloads are decoded by `ServedCalls` with the request's schema. */
export const FromClient = Schema.Union(
  Schema.Struct({
    _tag: Schema.Literal("Request"),
    id: RequestIdString,
    tag: Schema.Literal(...rpcTags),
    payload: Schema.Unknown,
    headers: Schema.optional(Schema.Unknown)
  }),
  Schema.Struct({ _tag: Schema.Literal("Interrupt", "Ack"), requestId: RequestIdString }),
  Schema.Struct({ _tag: Schema.Literal("Ping", "Eof") })
)
export const decodeFromClient = Schema.decodeUnknownEither(FromClient)

/** What a server may send; exits are decoded by `PendingCalls` with the request's exit schema. */
export const FromServer = Schema.Union(
  Schema.Struct({ _tag: Schema.Literal("Exit"), requestId: RequestIdString, exit: Schema.Unknown }),
  Schema.Struct({ _tag: Schema.Literal("Pong") }),
  Schema.Struct({ _tag: Schema.Literal("Defect"), defect: Schema.Unknown })
)
export const decodeFromServer = Schema.decodeUnknownEither(FromServer)

export const PONG: RpcMessage.FromServerEncoded = { _tag: "Pong" }

/**
 * The answer to a request refused by a rate limit: the request's own typed
 * failure (every request may fail with `RequestRefused`), so the caller sees
 * `Overloaded` and may try another node or later.
 */
export const rateLimited = (requestId: string, reason: RequestRefusal, retryAfterMillis: number): RpcMessage.FromServerEncoded => ({
  _tag: "Exit",
  requestId,
  exit: {
    _tag: "Failure",
    cause: {
      _tag: "Fail",
      error: {
        _tag: "RequestRefused",
        reason: "Overloaded",
        detail: refusalDetail(reason, retryAfterMillis)
      }
    }
  }
})

/** What the caller gets instead of an answer too large for one frame (a handler bug: answers are bounded). */
export const answerTooLarge = (response: { readonly requestId: string }): RpcMessage.FromServerEncoded => ({
  _tag: "Exit",
  requestId: response.requestId,
  exit: { _tag: "Failure", cause: { _tag: "Die", defect: "the answer exceeds the frame limit" } }
})

/**
 * `NodeRpcs` as this node serves it: the same tags and payload schemas (so
 * every request is fully decoded), but answers are encoded with the encoded
 * side of their schemas, without re-checking refinements. Answers are this
 * node's own values, and the caller decodes them with the full schemas anyway;
 * re-validating them costs more than everything else (a FindNode answer of 20
 * contacts: 136 µs to encode with the full schemas, 21 µs this way). The
 * bytes on the wire are the same. One exception: the contacts of an answer
 * (`ContactOnWire`, a declaration, which is its own encoded side) are still
 * checked, with its quick check of about 0.25 µs a contact; a contact that
 * failed it would turn the answer into a failure; none is expected, as a
 * table's contacts were decoded with these checks or are a caller's socket
 * address with the port its handshake gave (a decoded `Port`).
 */
const servedAs = <
  const Tag extends string,
  Request extends Schema.Schema.AnyNoContext & {
    readonly success: Schema.Schema.AnyNoContext
    readonly failure: Schema.Schema.AnyNoContext
  }
>(tag: Tag, request: Request) =>
  Rpc.make(tag, {
    payload: request,
    success: Schema.encodedSchema(request.success),
    error: Schema.encodedSchema(request.failure)
  })

type RequestClasses = typeof requestClasses

/** The served form of each request, by tag (what `servedAs` makes of it). */
type ServedRpc = {
  [Tag in keyof RequestClasses]: ReturnType<typeof servedAs<Tag, RequestClasses[Tag]>>
}[keyof RequestClasses]

const ServedRpcs = RpcGroup.make(
  ...(Object.entries(requestClasses).map(([tag, request]) =>
    servedAs(tag, request as RequestClasses[keyof RequestClasses])
  ) as unknown as ReadonlyArray<ServedRpc>)
)

/** How each request is decoded and its answer encoded, compiled once. */
export const serveCodecs = serveCodecsOf(ServedRpcs)

/** A client's message, decoded. */
export type FromClientMessage = typeof FromClient.Type
