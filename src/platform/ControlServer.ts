/**
 * The local control API of a running node: JSON over HTTP on a loopback
 * address, guarded by the bearer token of `<dataDir>/api-token`. It serves
 * the `NodeControl` service to `peerchat status`, `peers`, `register` and
 * `whois` (see `ControlClient.ts`). The API is only for the node's owner:
 * the listener refuses non-loopback hosts, every route checks the token in
 * constant time, and bodies and connections are bounded. Every outcome is a
 * JSON document; domain errors are encoded with the `ControlError` schema,
 * protocol errors (bad token, malformed body, unknown route) with
 * `ProtocolErrorBody`, so a client can always tell which it got.
 *
 * @since 0.1.0
 */
import { HttpRouter, HttpServerRequest, HttpServerResponse } from "@effect/platform"
import * as HttpIncomingMessage from "@effect/platform/HttpIncomingMessage"
import { NodeHttpServer } from "@effect/platform-node"
import { Cause, Context, Effect, Either, Layer, Option, ParseResult, Schema } from "effect"
import { createHash, timingSafeEqual } from "node:crypto"
import { createServer } from "node:http"
import { isIP } from "node:net"
import { type Address, formatAddress } from "../core/Contact.js"
import { InvalidUsername } from "../core/Username.js"
import { ControlError, NodeControl, NodeStatus, PeerEntry, RegisterRequest, WhoisAnswer } from "../node/Control.js"
import type { ApiToken } from "./RuntimeFiles.js"

/** Paths of the control API, shared with the client. */
export const ControlPaths = {
  status: "/v1/status",
  peers: "/v1/peers",
  register: "/v1/register",
  whois: (username: string): string => `/v1/whois/${encodeURIComponent(username)}`
} as const

/** Largest request body accepted, in bytes; a register request is well under 1 KiB. */
export const MAX_BODY_BYTES = 16 * 1024

/** Longest username accepted in a path, in UTF-16 units, matching `RegisterRequest`'s bound. */
export const MAX_USERNAME_INPUT = 256

/** Longest path parameter the router matches; a 256-unit name percent-encodes to at most 2304 characters. */
const MAX_PATH_PARAMETER = 4096

/** Longest request path quoted back in a 404 answer. */
const MAX_QUOTED_PATH = 200

/** Most simultaneous connections to the control API; it serves one local user. */
export const MAX_CONNECTIONS = 64

/** Time a client gets to send its whole request (not to wait for the answer). */
const REQUEST_RECEIVE_TIMEOUT_MS = 10_000

/** HTTP status of each domain error. */
export const CONTROL_ERROR_STATUS: { readonly [Tag in ControlError["_tag"]]: number } = {
  InvalidUsername: 400,
  NameTaken: 409,
  AlreadyRegistered: 409,
  UserNotFound: 404,
  PublishFailed: 503
}

/** Tags of the errors the HTTP layer itself answers with, beside the domain errors. */
export const ProtocolErrorTag = Schema.Literal(
  "Unauthorized",
  "BadRequest",
  "NotFound",
  "LengthRequired",
  "PayloadTooLarge",
  "InternalError"
)
/** @see ProtocolErrorTag */
export type ProtocolErrorTag = typeof ProtocolErrorTag.Type

/** Body of every protocol error answer: `{ "error": { "_tag", "message" } }`. */
export const ProtocolErrorBody = Schema.Struct({
  error: Schema.Struct({ _tag: ProtocolErrorTag, message: Schema.String })
})

const PROTOCOL_ERROR_STATUS: { readonly [Tag in ProtocolErrorTag]: number } = {
  Unauthorized: 401,
  BadRequest: 400,
  NotFound: 404,
  LengthRequired: 411,
  PayloadTooLarge: 413,
  InternalError: 500
}

/** Options of `layer`. */
export interface ControlServerOptions {
  /** A loopback host: `127.0.0.1` (or any 127.x.y.z), `::1` or `localhost`. */
  readonly host: string
  /** TCP port; 0 picks a free one, which `ControlServer.address` reports. */
  readonly port: number
  /** The bearer token every request must carry. */
  readonly token: ApiToken
}

/** The running control API: where it listens, for the startup message and `node.json`. */
export class ControlServer extends Context.Tag("peerchat/ControlServer")<ControlServer, {
  readonly address: Address
}>() {}

/** The control API could not be started. */
export class ControlServerError extends Schema.TaggedError<ControlServerError>()("ControlServerError", {
  reason: Schema.Literal("NotLoopback", "ListenFailed"),
  host: Schema.String,
  port: Schema.Number,
  detail: Schema.String
}) {
  override get message(): string {
    const where = formatAddress({ host: this.host, port: this.port })
    switch (this.reason) {
      case "NotLoopback":
        return `the control API must listen on a loopback address (127.0.0.1, ::1 or localhost), not ${this.host}`
      case "ListenFailed":
        return `cannot start the control API on ${where}: ${this.detail}`
    }
  }
}

/** True for the hosts only local processes can reach. */
export const isLoopbackHost = (host: string): boolean => {
  if (host === "localhost") return true
  switch (isIP(host)) {
    case 4:
      return host.startsWith("127.")
    case 6:
      return host === "::1" || host === "0:0:0:0:0:0:0:1" || /^::ffff:127\./i.test(host)
    default:
      return false
  }
}

const protocolError = (tag: ProtocolErrorTag, message: string): HttpServerResponse.HttpServerResponse =>
  HttpServerResponse.unsafeJson({ error: { _tag: tag, message } }, { status: PROTOCOL_ERROR_STATUS[tag] })

const unauthorized = protocolError("Unauthorized", "missing or wrong API token (expected \"Authorization: Bearer <token from the data directory's api-token file>\")")
  .pipe(HttpServerResponse.setHeader("www-authenticate", "Bearer"))

const encodeControlError = Schema.encodeEither(ControlError)

/** The JSON answer for a domain error: its encoded fields plus its message, with the status of its kind. */
const controlErrorResponse = (error: ControlError): HttpServerResponse.HttpServerResponse => {
  const encoded = encodeControlError(error)
  if (Either.isLeft(encoded)) {
    return protocolError("InternalError", `the node produced an invalid ${error._tag} error`)
  }
  const { _tag, ...fields } = encoded.right
  return HttpServerResponse.unsafeJson(
    { error: { _tag, message: error.message, ...fields } },
    { status: CONTROL_ERROR_STATUS[error._tag] }
  )
}

/** Runs a control operation and answers with its result encoded by `schema`, or with its error. */
const answer = <A, I>(
  schema: Schema.Schema<A, I>,
  operation: Effect.Effect<A, ControlError>
): Effect.Effect<HttpServerResponse.HttpServerResponse> =>
  operation.pipe(
    Effect.flatMap((value) => HttpServerResponse.schemaJson(schema)(value)),
    Effect.catchAll((error) =>
      Effect.succeed(
        error._tag === "HttpBodyError"
          ? protocolError("InternalError", "the node produced an answer that does not match the API schema")
          : controlErrorResponse(error)
      )
    )
  )

const sha256 = (text: string): Buffer => createHash("sha256").update(text, "utf8").digest()

/**
 * A check of the `Authorization` header in time independent of where it
 * differs from the token: both sides are hashed first, so even a header of
 * another length takes the same path through `timingSafeEqual`.
 */
const makeTokenCheck = (token: ApiToken): (header: string | undefined) => boolean => {
  const expected = sha256(`Bearer ${token}`)
  return (header) => header !== undefined && timingSafeEqual(sha256(header), expected)
}

const PeerEntries = Schema.Array(PeerEntry)

const describeParseError = (error: ParseResult.ParseError): string =>
  ParseResult.ArrayFormatter.formatErrorSync(error)
    .map((issue) => `${issue.path.length === 0 ? "body" : issue.path.join(".")}: ${issue.message}`)
    .join("; ")

const isBodyTooLarge = (cause: unknown): boolean => cause instanceof Error && cause.message === "maxBytes exceeded"

// The unread rest of a refused body would be parsed as the next request on the connection: close it instead.
const closingConnection = HttpServerResponse.setHeader("connection", "close")

/**
 * Reads and decodes the body of a register request, or answers why it cannot
 * be used. The body must declare its length: the platform's size limit
 * destroys the socket when a chunked body overflows, leaving the client
 * without an answer, whereas a declared length is checked before reading.
 */
const registerBody: Effect.Effect<
  Either.Either<typeof RegisterRequest.Type, HttpServerResponse.HttpServerResponse>,
  never,
  HttpServerRequest.HttpServerRequest
> = Effect.gen(function*() {
  const request = yield* HttpServerRequest.HttpServerRequest
  const tooLarge = protocolError("PayloadTooLarge", `request bodies are limited to ${MAX_BODY_BYTES} bytes`)
    .pipe(closingConnection)
  const lengthHeader = request.headers["content-length"]
  if (lengthHeader === undefined) {
    return Either.left(
      protocolError("LengthRequired", "a request body must come with a Content-Length header").pipe(closingConnection)
    )
  }
  if (Number(lengthHeader) > MAX_BODY_BYTES) return Either.left(tooLarge)
  return yield* HttpServerRequest.schemaBodyJson(RegisterRequest).pipe(
    HttpIncomingMessage.withMaxBodySize(Option.some(MAX_BODY_BYTES)),
    Effect.map(Either.right),
    Effect.catchTags({
      ParseError: (error) =>
        Effect.succeed(Either.left(protocolError("BadRequest", `malformed register request: ${describeParseError(error)}`))),
      RequestError: (error) =>
        Effect.succeed(Either.left(
          isBodyTooLarge(error.cause)
            ? tooLarge
            : protocolError("BadRequest", "the request body is not valid JSON (expected {\"username\": \"NAME\"})")
        ))
    })
  )
})

/**
 * The control API as an HTTP app over `control`, requiring `token`. It never
 * fails: every outcome, a defect in `control` included, is a JSON answer.
 */
export const makeApp = (
  control: typeof NodeControl.Service,
  token: ApiToken
): Effect.Effect<HttpServerResponse.HttpServerResponse, never, HttpServerRequest.HttpServerRequest> => {
  const router = HttpRouter.empty.pipe(
    HttpRouter.get(ControlPaths.status, answer(NodeStatus, control.status)),
    HttpRouter.get(
      ControlPaths.peers,
      answer(
        PeerEntries,
        Effect.map(control.peers, (contacts) =>
          contacts.map((contact): PeerEntry => ({ nodeId: contact.nodeId, address: formatAddress(contact.address) })))
      )
    ),
    HttpRouter.post(
      ControlPaths.register,
      Effect.flatMap(registerBody, (body) =>
        Either.isLeft(body) ? Effect.succeed(body.left) : answer(WhoisAnswer, control.register(body.right.username)))
    ),
    HttpRouter.get(
      "/v1/whois/:name",
      Effect.flatMap(HttpRouter.params, ({ name = "" }) =>
        name.length > MAX_USERNAME_INPUT
          ? Effect.succeed(controlErrorResponse(new InvalidUsername({ input: name, reason: "TooLong" })))
          : answer(WhoisAnswer, control.whois(name)))
    )
  ).pipe(HttpRouter.withRouterConfig({ maxParamLength: MAX_PATH_PARAMETER }))
  const isAuthorized = makeTokenCheck(token)
  return Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    if (!isAuthorized(request.headers["authorization"])) return unauthorized
    return yield* router
  }).pipe(
    Effect.catchTag("RouteNotFound", (error) =>
      Effect.succeed(
        protocolError("NotFound", `no such endpoint: ${error.request.method} ${error.request.url.slice(0, MAX_QUOTED_PATH)}`)
      )),
    Effect.catchAllCause((cause) =>
      // A client that hung up interrupts its request: nobody is left to answer, and nothing went wrong.
      Cause.isInterruptedOnly(cause) ? Effect.failCause(cause) : Effect.as(
        Effect.logError("control API request failed", cause),
        protocolError("InternalError", `the node failed to answer: ${Cause.pretty(cause).split("\n")[0] ?? "unknown error"}`)
      )
    )
  )
}

/**
 * Serves the control API on `options.host:options.port` (loopback only) for
 * as long as the layer lives; provides the bound address. Closing stops
 * accepting, closes idle connections and waits for answers in progress.
 */
export const layer = (options: ControlServerOptions): Layer.Layer<ControlServer, ControlServerError, NodeControl> =>
  Layer.scoped(
    ControlServer,
    Effect.gen(function*() {
      const { host, port, token } = options
      if (!isLoopbackHost(host)) {
        return yield* new ControlServerError({ reason: "NotLoopback", host, port, detail: "" })
      }
      const control = yield* NodeControl
      const server = yield* NodeHttpServer.make(() => {
        const server = createServer({ requestTimeout: REQUEST_RECEIVE_TIMEOUT_MS, headersTimeout: REQUEST_RECEIVE_TIMEOUT_MS })
        server.maxConnections = MAX_CONNECTIONS
        return server
      }, { host, port }).pipe(
        Effect.mapError((error) =>
          new ControlServerError({
            reason: "ListenFailed",
            host,
            port,
            detail: error.cause instanceof Error ? error.cause.message : String(error.cause)
          })
        )
      )
      yield* server.serve(makeApp(control, token))
      const address = server.address
      if (address._tag !== "TcpAddress") {
        return yield* new ControlServerError({ reason: "ListenFailed", host, port, detail: "bound to a non-TCP address" })
      }
      return { address: { host: address.hostname, port: address.port } }
    })
  )
