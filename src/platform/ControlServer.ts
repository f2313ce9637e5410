/**
 * The local control API of a running node: JSON over HTTP on a loopback
 * address, guarded by the bearer token of `<dataDir>/api-token`. It serves
 * the `NodeControl` service to `peerchat status`, `peers`, `register`,
 * `whois` and `stop`, the `Messenger` to `send`, `history`, `inbox` and the
 * terminal chat, which follows `GET /v1/events`, a stream of
 * newline-delimited JSON events (see `ControlClient.ts`), `Contacts` to
 * `id`, `contacts`, `verify` and `trust`, and `ChatWindows` to the terminal
 * chat's windows, which stay attached while they run (`GET /v1/windows`). The API is only for the node's owner: the listener
 * refuses non-loopback hosts, every route checks the token in constant time,
 * and bodies, pages, waits and connections are bounded. Every outcome is a
 * JSON document; domain errors are encoded with the `ControlError` and
 * `ChatControlError` schemas, protocol errors (bad token, malformed body or
 * query, unknown route) with `ProtocolErrorBody`, so a client can always tell
 * which it got. The chat routes are optional: a node built without a
 * `Messenger` (or without `Contacts`, for the contact routes) answers them
 * with `ChatUnavailable` (503).
 *
 * @since 0.1.0
 */
import { HttpRouter, HttpServerRequest, HttpServerResponse } from "@effect/platform"
import * as HttpIncomingMessage from "@effect/platform/HttpIncomingMessage"
import { NodeHttpServer } from "@effect/platform-node"
import { Cause, Context, Deferred, Duration, Effect, Either, Layer, Option, ParseResult, Ref, Schema, Stream } from "effect"
import { createHash, timingSafeEqual } from "node:crypto"
import { createServer } from "node:http"
import { isIP } from "node:net"
import {
  ChatControlError,
  ChatEventLine,
  ChatUnavailable,
  ContactsAnswer,
  DEFAULT_EVENT_HEARTBEAT,
  DEFAULT_HISTORY_LIMIT,
  DeliveryAnswer,
  DeliveryQuery,
  HistoryAnswer,
  HistoryQuery,
  IdentityAnswer,
  InboxAnswer,
  MarkReadAnswer,
  MAX_DELIVERY_WAIT,
  MAX_EVENT_STREAMS,
  pinnedContactOf,
  SendRequest,
  SentMessageAnswer,
  TrustAnswer,
  TrustRequest,
  VerifyAnswer,
  VerifyRequest
} from "../chat/ChatControl.js"
import { ChatConfig } from "../chat/ChatConfig.js"
import { MessageId } from "../chat/ChatStore.js"
import { Contacts, type OwnIdentity } from "../chat/Contacts.js"
import { Messenger, NotRegistered, UnknownMessage } from "../chat/Messenger.js"
import { type Address, formatAddress } from "../core/Contact.js"
import { formatFingerprint } from "../core/Pinning.js"
import { InvalidUsername, parseUsername } from "../core/Username.js"
import { ChatWindows, DetachAnswer, NodeStopping, WindowLine } from "../node/ChatWindows.js"
import { ControlError, NodeControl, NodeStatus, PeerEntry, RegisterRequest, StopAnswer, WhoisAnswer } from "../node/Control.js"
import { ControlPaths, MAX_USERNAME_INPUT, ProtocolErrorBody, ProtocolErrorTag } from "./ControlApi.js"
import type { ApiToken } from "./RuntimeFiles.js"
import { processMemory } from "./ProcessMemory.js"

// Shared with the client, which loads ControlApi.ts alone.
export { ControlPaths, MAX_USERNAME_INPUT, ProtocolErrorBody, ProtocolErrorTag }

/** Largest request body accepted, in bytes; a register request is well under 1 KiB. */
export const MAX_BODY_BYTES = 16 * 1024

/**
 * Largest body of `POST /v1/messages`, in bytes: a text at the 16 KiB UTF-8
 * limit made only of control characters escapes to 6 JSON bytes each (96 KiB),
 * so a text the `Messenger` could accept always fits, and a longer one still
 * reaches it and comes back as a typed `MessageTooLong`.
 */
export const MAX_MESSAGE_BODY_BYTES = 128 * 1024

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
  InvalidFingerprint: 400,
  NameTaken: 409,
  AlreadyRegistered: 409,
  // The name resolves, but to more than one key, or not to the key asked for: nothing is chosen.
  NameConflict: 409,
  FingerprintMismatch: 409,
  UserNotFound: 404,
  PublishFailed: 503,
  NotConnected: 503
}

/** HTTP status of each chat error. */
export const CHAT_ERROR_STATUS: { readonly [Tag in ChatControlError["_tag"]]: number } = {
  InvalidUsername: 400,
  InvalidFingerprint: 400,
  SelfMessage: 400,
  NameConflict: 409,
  KeyChanged: 409,
  FingerprintMismatch: 409,
  NotConnected: 503,
  MessageTooLong: 400,
  MessageTextMalformed: 400,
  MessageEmpty: 400,
  UserNotFound: 404,
  UnknownMessage: 404,
  NotRegistered: 409,
  OutboxFull: 429,
  // The bounded pin store holds as many contacts as it may: the request cannot be stored.
  PinsFull: 507,
  StorageError: 500,
  // The recipient's published record is unusable: a bad answer from the network, not a bad request.
  InvalidRecipientKey: 502,
  ChatUnavailable: 503
}

const PROTOCOL_ERROR_STATUS: { readonly [Tag in ProtocolErrorTag]: number } = {
  Unauthorized: 401,
  Forbidden: 403,
  BadRequest: 400,
  NotFound: 404,
  LengthRequired: 411,
  PayloadTooLarge: 413,
  InternalError: 500,
  Busy: 503,
  Stopping: 503
}

/** Options of `layer`. */
export interface ControlServerOptions {
  /** A loopback host: `127.0.0.1` (or any 127.x.y.z), `::1` or `localhost`. */
  readonly host: string
  /** TCP port; 0 picks a free one, which `ControlServer.address` reports. */
  readonly port: number
  /** The bearer token every request must carry. */
  readonly token: ApiToken
  /** Time between heartbeat lines of `GET /v1/events` (default 15 s). */
  readonly eventHeartbeat?: Duration.DurationInput | undefined
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

/**
 * Whether a request's `Host` names this machine's loopback (`127.x.y.z`,
 * `[::1]`, `localhost`, with any port). A web page that rebinds its own name
 * to 127.0.0.1 sends its own name here.
 */
const namesLoopback = (host: string | undefined): boolean => {
  if (host === undefined) return false
  const name = host.startsWith("[") ? host.slice(0, host.indexOf("]") + 1) : host.replace(/:\d*$/, "")
  return name === "localhost" || name === "[::1]" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(name)
}

const forbidden = protocolError(
  "Forbidden",
  "the control API answers only local programs: no web page (an Origin header), and only for a loopback Host"
)

const unauthorized = protocolError("Unauthorized", "missing or wrong API token (expected \"Authorization: Bearer <token from the data directory's api-token file>\")")
  .pipe(HttpServerResponse.setHeader("www-authenticate", "Bearer"))

/**
 * The JSON answer for a domain error of `schema`: its encoded fields plus its
 * message, with the status `statuses` gives its kind.
 */
const domainErrorResponder = <E extends { readonly _tag: string; readonly message: string }, I extends { readonly _tag: string }>(
  schema: Schema.Schema<E, I>,
  statuses: { readonly [Tag in E["_tag"]]: number }
) => {
  const encode = Schema.encodeEither(schema)
  return (error: E): HttpServerResponse.HttpServerResponse => {
    const encoded = encode(error)
    if (Either.isLeft(encoded)) {
      return protocolError("InternalError", `the node produced an invalid ${error._tag} error`)
    }
    const { _tag, ...fields } = encoded.right
    return HttpServerResponse.unsafeJson(
      { error: { _tag, message: error.message, ...fields } },
      // `error` is an E, so its tag is one of E's tags; TypeScript widens a generic's property to its constraint.
      { status: statuses[error._tag as E["_tag"]] }
    )
  }
}

const controlErrorResponse = domainErrorResponder(ControlError, CONTROL_ERROR_STATUS)

const chatErrorResponse = domainErrorResponder(ChatControlError, CHAT_ERROR_STATUS)

/** Runs an operation and answers with its result encoded by `schema`, or with its error as `respond` encodes it. */
const answerWith = <E>(respond: (error: E) => HttpServerResponse.HttpServerResponse) =>
<A, I, R>(
  schema: Schema.Schema<A, I>,
  operation: Effect.Effect<A, E, R>
): Effect.Effect<HttpServerResponse.HttpServerResponse, never, R> =>
  Effect.matchEffect(operation, {
    onFailure: (error) => Effect.succeed(respond(error)),
    onSuccess: (value) =>
      HttpServerResponse.schemaJson(schema)(value).pipe(
        Effect.orElseSucceed(() =>
          protocolError("InternalError", "the node produced an answer that does not match the API schema")
        )
      )
  })

/** Answers a `NodeControl` operation. */
const answer = answerWith(controlErrorResponse)

/** Answers a `Messenger` operation. */
const answerChat = answerWith(chatErrorResponse)

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

/** How a JSON request body is read: its schema, its size bound, and how to name and hint it in a 400 answer. */
interface BodySpec<A, I> {
  readonly schema: Schema.Schema<A, I>
  readonly maxBytes: number
  /** E.g. "register request". */
  readonly what: string
  /** The expected shape, e.g. `{"username": "NAME"}`. */
  readonly shape: string
}

/**
 * Reads and decodes a JSON request body, or answers why it cannot be used.
 * The body must declare its length: the platform's size limit destroys the
 * socket when a chunked body overflows, leaving the client without an
 * answer, whereas a declared length is checked before reading.
 */
const jsonBody = <A, I>(spec: BodySpec<A, I>): Effect.Effect<
  Either.Either<A, HttpServerResponse.HttpServerResponse>,
  never,
  HttpServerRequest.HttpServerRequest
> =>
  Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    const tooLarge = protocolError("PayloadTooLarge", `request bodies are limited to ${spec.maxBytes} bytes`)
      .pipe(closingConnection)
    const lengthHeader = request.headers["content-length"]
    if (lengthHeader === undefined) {
      return Either.left(
        protocolError("LengthRequired", "a request body must come with a Content-Length header").pipe(closingConnection)
      )
    }
    if (Number(lengthHeader) > spec.maxBytes) return Either.left(tooLarge)
    return yield* HttpServerRequest.schemaBodyJson(spec.schema).pipe(
      HttpIncomingMessage.withMaxBodySize(Option.some(spec.maxBytes)),
      Effect.map((body) => Either.right(body)),
      Effect.catchTags({
        ParseError: (error) =>
          Effect.succeed(Either.left(protocolError("BadRequest", `malformed ${spec.what}: ${describeParseError(error)}`))),
        RequestError: (error) =>
          Effect.succeed(Either.left(
            isBodyTooLarge(error.cause)
              ? tooLarge
              : protocolError("BadRequest", `the request body is not valid JSON (expected ${spec.shape})`)
          ))
      })
    )
  })

const registerBody = jsonBody({
  schema: RegisterRequest,
  maxBytes: MAX_BODY_BYTES,
  what: "register request",
  shape: "{\"username\": \"NAME\"}"
})

const sendBody = jsonBody({
  schema: SendRequest,
  maxBytes: MAX_MESSAGE_BODY_BYTES,
  what: "send request",
  shape: "{\"to\": \"NAME\", \"text\": \"TEXT\"}"
})

const verifyBody = jsonBody({
  schema: VerifyRequest,
  maxBytes: MAX_BODY_BYTES,
  what: "verify request",
  shape: "{\"name\": \"NAME\", \"confirm\": false}"
})

const trustBody = jsonBody({
  schema: TrustRequest,
  maxBytes: MAX_BODY_BYTES,
  what: "trust request",
  shape: "{\"name\": \"NAME\", \"fingerprint\": \"FINGERPRINT\"}"
})

/** Decodes the query string with `schema`, or answers why it cannot be used. */
const query = <A, I extends Readonly<Record<string, string | ReadonlyArray<string> | undefined>>>(
  schema: Schema.Schema<A, I>,
  what: string
): Effect.Effect<Either.Either<A, HttpServerResponse.HttpServerResponse>, never, HttpServerRequest.ParsedSearchParams> =>
  HttpServerRequest.schemaSearchParams(schema).pipe(
    Effect.map((decoded) => Either.right(decoded)),
    Effect.catchTag("ParseError", (error) =>
      Effect.succeed(Either.left(protocolError("BadRequest", `malformed ${what} query: ${describeParseError(error)}`))))
  )

/** Runs `use` with the `Right` of `input`, or answers with its `Left`. */
const withInput = <A, R, R2>(
  input: Effect.Effect<Either.Either<A, HttpServerResponse.HttpServerResponse>, never, R>,
  use: (value: A) => Effect.Effect<HttpServerResponse.HttpServerResponse, never, R2>
): Effect.Effect<HttpServerResponse.HttpServerResponse, never, R | R2> =>
  Effect.flatMap(input, Either.match({ onLeft: Effect.succeed, onRight: use }))

/**
 * A path parameter that names a user: longer input than any request may
 * carry is refused as an invalid username before it reaches the node.
 */
const usernameParameter = <R>(
  respond: (error: InvalidUsername) => HttpServerResponse.HttpServerResponse,
  use: (name: string) => Effect.Effect<HttpServerResponse.HttpServerResponse, never, R>
): Effect.Effect<HttpServerResponse.HttpServerResponse, never, R | HttpRouter.RouteContext> =>
  Effect.flatMap(HttpRouter.params, ({ name = "" }) =>
    name.length > MAX_USERNAME_INPUT
      ? Effect.succeed(respond(new InvalidUsername({ input: name, reason: "TooLong" })))
      : use(name))

const decodeMessageId = Schema.decodeUnknownOption(MessageId)

/** What the chat routes answer with: the node's `Messenger`, and the delivery wait when a request names none. */
export interface ChatBackend {
  readonly messenger: typeof Messenger.Service
  /** The user's contacts, for `id`, `contacts`, `verify` and `trust` (absent: those routes answer `ChatUnavailable`). */
  readonly contacts?: typeof Contacts.Service | undefined
  /** Default wait of `GET /v1/messages/:id/delivery` (ChatConfig's `deliveryWaitTimeout`); capped at 10 minutes. */
  readonly deliveryWaitTimeout: Duration.Duration
  /** Time between heartbeat lines of `GET /v1/events` (default 15 s). */
  readonly eventHeartbeat?: Duration.Duration | undefined
  /** Completes when the server shuts down: open event streams end then, so closing never waits on them. */
  readonly closing?: Effect.Effect<void> | undefined
}

const encodeEventLine = Schema.encodeSync(ChatEventLine)
const heartbeatLine: ChatEventLine = { _tag: "Heartbeat" }

/**
 * `GET /v1/events`: the `Messenger`'s events as newline-delimited JSON, a
 * heartbeat line first (which also sends the headers) and then every
 * `eventHeartbeat`, for as long as the client stays connected or the server
 * runs. At most `MAX_EVENT_STREAMS` streams are open at once (counted in
 * `open`); each one's buffer is the `Messenger`'s bounded subscription.
 */
const eventStream = (backend: ChatBackend, open: Ref.Ref<number>): Effect.Effect<HttpServerResponse.HttpServerResponse> =>
  Effect.map(Ref.get(open), (count) => {
    if (count >= MAX_EVENT_STREAMS) {
      return protocolError("Busy", `at most ${MAX_EVENT_STREAMS} event streams may be open at once`)
    }
    const heartbeats = Stream.tick(backend.eventHeartbeat ?? DEFAULT_EVENT_HEARTBEAT).pipe(Stream.as(heartbeatLine))
    const lines = Stream.merge(backend.messenger.events, heartbeats).pipe(
      Stream.map((line) => `${JSON.stringify(encodeEventLine(line))}\n`),
      Stream.encodeText,
      Stream.interruptWhen(backend.closing ?? Effect.never)
    )
    // Counted while the body is being written: a stream that never starts never takes a slot.
    const counted = Stream.unwrapScoped(
      Effect.as(Effect.acquireRelease(Ref.update(open, (n) => n + 1), () => Ref.update(open, (n) => n - 1)), lines)
    )
    return HttpServerResponse.stream(counted, {
      contentType: "application/x-ndjson",
      // An event stream holds its connection to the end; closing it then lets a shutting-down server finish at once.
      headers: { "cache-control": "no-store", connection: "close" }
    })
  })

/** `GET /v1/id`: this user as others name them exactly. */
const identityAnswerOf = (own: OwnIdentity): IdentityAnswer => {
  const fingerprint = formatFingerprint(own.fingerprint)
  return {
    username: own.username ?? null,
    fingerprint,
    nameRef: own.username === undefined ? null : `${own.username}@${fingerprint}`
  }
}

/** `POST /v1/contacts/verify`: the safety number with the contact, and both parties it covers. */
const verifyWith = (contacts: typeof Contacts.Service, request: VerifyRequest) =>
  Effect.gen(function*() {
    const verification = yield* contacts.verify(request.name, request.confirm)
    const own = yield* contacts.whoAmI
    // `verify` fails with NotRegistered first; a name cannot be given up, so this is only for the types.
    if (own.username === undefined) return yield* new NotRegistered()
    const answer: VerifyAnswer = {
      you: { username: own.username, fingerprint: formatFingerprint(own.fingerprint) },
      contact: { username: verification.username, fingerprint: formatFingerprint(verification.fingerprint) },
      safetyNumber: verification.safetyNumber,
      pin: verification.pin === undefined ? null : pinnedContactOf(verification.pin),
      confirmed: request.confirm
    }
    return answer
  })

/** `POST /v1/contacts/trust`: the new pin, and the one it replaced (read first, to say what changed). */
const trustWith = (contacts: typeof Contacts.Service, request: TrustRequest) =>
  Effect.gen(function*() {
    const username = Either.getOrUndefined(parseUsername(request.name))
    const before = username === undefined ? undefined : (yield* contacts.list).find((pin) => pin.username === username)
    const pin = yield* contacts.trust(request.name, request.fingerprint)
    const answer: TrustAnswer = {
      pin: pinnedContactOf(pin),
      previous: before === undefined ? null : pinnedContactOf(before)
    }
    return answer
  })

/** The chat routes over `chat`, or, without it, answers of `ChatUnavailable`. */
const chatRoutes = (chat: Option.Option<ChatBackend>) => {
  const withChat = <R>(
    use: (backend: ChatBackend) => Effect.Effect<HttpServerResponse.HttpServerResponse, never, R>
  ): Effect.Effect<HttpServerResponse.HttpServerResponse, never, R> =>
    Option.match(chat, { onNone: () => Effect.succeed(chatErrorResponse(new ChatUnavailable())), onSome: use })
  const withContacts = <R>(
    use: (contacts: typeof Contacts.Service) => Effect.Effect<HttpServerResponse.HttpServerResponse, never, R>
  ): Effect.Effect<HttpServerResponse.HttpServerResponse, never, R> =>
    withChat(({ contacts }) => (contacts === undefined ? Effect.succeed(chatErrorResponse(new ChatUnavailable())) : use(contacts)))
  const defaultWaitMs = (backend: ChatBackend) =>
    Math.min(Duration.toMillis(backend.deliveryWaitTimeout), Duration.toMillis(MAX_DELIVERY_WAIT))
  const openStreams = Ref.unsafeMake(0)

  return <E, R>(router: HttpRouter.HttpRouter<E, R>) =>
    router.pipe(
      HttpRouter.post(
        ControlPaths.messages,
        withChat(({ messenger }) =>
          withInput(sendBody, (body) => answerChat(SentMessageAnswer, messenger.send(body.to, body.text))))
      ),
      HttpRouter.get(
        "/v1/messages/:id/delivery",
        withChat((backend) =>
          withInput(query(DeliveryQuery, "delivery"), ({ timeoutMs }) =>
            Effect.flatMap(HttpRouter.params, ({ id = "" }) =>
              Option.match(decodeMessageId(id), {
                // Too long or empty: it cannot name any message.
                onNone: () => Effect.succeed(chatErrorResponse(new UnknownMessage({ id: id.slice(0, MAX_QUOTED_PATH) }))),
                onSome: (messageId) =>
                  answerChat(
                    DeliveryAnswer,
                    Effect.map(
                      backend.messenger.awaitDelivery(messageId, Duration.millis(timeoutMs ?? defaultWaitMs(backend))),
                      (status) => ({ id: messageId, status })
                    )
                  )
              })
            )))
      ),
      HttpRouter.get(ControlPaths.conversations, withChat(({ messenger }) => answerChat(InboxAnswer, messenger.inbox))),
      HttpRouter.get(
        "/v1/conversations/:name/messages",
        withChat(({ messenger }) =>
          withInput(query(HistoryQuery, "history"), ({ before, limit }) =>
            usernameParameter(chatErrorResponse, (name) =>
              answerChat(
                HistoryAnswer,
                messenger.history(name, { limit: limit ?? DEFAULT_HISTORY_LIMIT, ...(before === undefined ? {} : { before }) })
              ))))
      ),
      HttpRouter.post(
        "/v1/conversations/:name/read",
        withChat(({ messenger }) =>
          usernameParameter(chatErrorResponse, (name) =>
            answerChat(MarkReadAnswer, Effect.map(messenger.markRead(name), (unread) => ({ unread })))))
      ),
      HttpRouter.get(ControlPaths.events, withChat((backend) => eventStream(backend, openStreams))),
      HttpRouter.get(ControlPaths.id, withContacts((contacts) => answerChat(IdentityAnswer, Effect.map(contacts.whoAmI, identityAnswerOf)))),
      HttpRouter.get(
        ControlPaths.contacts,
        withContacts((contacts) => answerChat(ContactsAnswer, Effect.map(contacts.list, (pins) => pins.map(pinnedContactOf))))
      ),
      HttpRouter.post(
        ControlPaths.verify,
        withContacts((contacts) => withInput(verifyBody, (body) => answerChat(VerifyAnswer, verifyWith(contacts, body))))
      ),
      HttpRouter.post(
        ControlPaths.trust,
        withContacts((contacts) => withInput(trustBody, (body) => answerChat(TrustAnswer, trustWith(contacts, body))))
      )
    )
}

/** Most windows attached at once (each also follows the events, of which at most `MAX_EVENT_STREAMS` are open). */
export const MAX_WINDOWS = 16

/** What the window routes answer with: the node's window count, and how the attachment stream behaves. */
export interface WindowsBackend {
  readonly windows: typeof ChatWindows.Service
  /** Time between heartbeat lines of `GET /v1/windows` (default 15 s). */
  readonly heartbeat?: Duration.Duration | undefined
  /** Completes when the server shuts down: attachment streams end then, so closing never waits on them. */
  readonly closing?: Effect.Effect<void> | undefined
}

const encodeWindowLine = Schema.encodeSync(WindowLine)

const decodeWindowId = Schema.decodeUnknownOption(Schema.NumberFromString.pipe(Schema.int(), Schema.nonNegative()))

/**
 * `GET /v1/windows` attaches a chat window for as long as the client keeps
 * the answer open: an `Attached` line first, then heartbeats; the window is
 * detached when the connection closes (a crashed window included).
 * `POST /v1/windows/:id/detach` detaches it at once and says whether the
 * node stops (see `ChatWindows`). A node without `ChatWindows` answers
 * NotFound, as an older node does.
 */
const windowRoutes = (backend: Option.Option<WindowsBackend>) => {
  const open = Ref.unsafeMake(0)
  const missing = Effect.succeed(protocolError("NotFound", "this node does not keep track of chat windows"))
  const attach = (backend: WindowsBackend) =>
    Effect.map(Effect.zip(Ref.get(open), backend.windows.stopping), ([count, stopping]) => {
      if (count >= MAX_WINDOWS) return protocolError("Busy", `at most ${MAX_WINDOWS} chat windows may be attached at once`)
      // Said before the stream starts, so the window gets an answer it can act on; one that stops in
      // between makes the stream end before its first line, which the window reads as a failure too.
      if (stopping) return protocolError("Stopping", new NodeStopping().message)
      const lines = Stream.unwrapScoped(
        Effect.gen(function*() {
          yield* Effect.acquireRelease(Ref.update(open, (n) => n + 1), () => Ref.update(open, (n) => n - 1))
          const attachment = yield* backend.windows.attach
          const attached: WindowLine = {
            _tag: "Attached",
            window: attachment.window,
            windows: attachment.windows,
            stopsWithLastWindow: backend.windows.stopsWithLastWindow
          }
          const heartbeats = Stream.tick(backend.heartbeat ?? DEFAULT_EVENT_HEARTBEAT).pipe(
            Stream.drop(1),
            Stream.as<WindowLine>({ _tag: "Heartbeat" })
          )
          return Stream.concat(Stream.make(attached), heartbeats)
        })
      ).pipe(
        Stream.map((line) => `${JSON.stringify(encodeWindowLine(line))}\n`),
        Stream.encodeText,
        Stream.interruptWhen(backend.closing ?? Effect.never)
      )
      return HttpServerResponse.stream(lines, {
        contentType: "application/x-ndjson",
        headers: { "cache-control": "no-store", connection: "close" }
      })
    })
  const detach = (backend: WindowsBackend) =>
    Effect.flatMap(HttpRouter.params, ({ id = "" }) =>
      Option.match(decodeWindowId(id), {
        onNone: () => Effect.succeed(protocolError("BadRequest", "a window id is a non-negative integer")),
        onSome: (window) => answer(DetachAnswer, backend.windows.detach(window))
      }))
  return <E, R>(router: HttpRouter.HttpRouter<E, R>) =>
    router.pipe(
      HttpRouter.get(ControlPaths.windows, Option.match(backend, { onNone: () => missing, onSome: attach })),
      HttpRouter.post("/v1/windows/:id/detach", Option.match(backend, { onNone: () => missing, onSome: detach }))
    )
}

/**
 * The control API as an HTTP app over `control` (and `chat`, when the node
 * runs one), requiring `token`. It never fails: every outcome, a defect in
 * `control` or `chat` included, is a JSON answer.
 */
export const makeApp = (
  control: typeof NodeControl.Service,
  token: ApiToken,
  chat: Option.Option<ChatBackend> = Option.none(),
  windows: Option.Option<WindowsBackend> = Option.none()
): Effect.Effect<HttpServerResponse.HttpServerResponse, never, HttpServerRequest.HttpServerRequest> => {
  const router = HttpRouter.empty.pipe(
    HttpRouter.get(
      ControlPaths.status,
      answer(NodeStatus, Effect.zipWith(control.status, Effect.sync(processMemory), (status, memory) => ({ ...status, memory })))
    ),
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
      withInput(registerBody, (body) => answer(WhoisAnswer, control.register(body.username)))
    ),
    HttpRouter.get(
      "/v1/whois/:name",
      usernameParameter(controlErrorResponse, (name) => answer(WhoisAnswer, control.whois(name)))
    ),
    HttpRouter.post(
      ControlPaths.stop,
      control.stop === undefined
        ? Effect.succeed(protocolError("NotFound", "this node cannot be stopped through its control API"))
        : answer(StopAnswer, control.stop)
    ),
    chatRoutes(chat),
    windowRoutes(windows)
  ).pipe(HttpRouter.withRouterConfig({ maxParamLength: MAX_PATH_PARAMETER }))
  const isAuthorized = makeTokenCheck(token)
  return Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    // Before the token: a page in the user's browser must get nothing from here, even one that learnt
    // the token, and a rebound name must not reach the API as if it were this machine.
    if (request.headers["origin"] !== undefined || !namesLoopback(request.headers["host"])) return forbidden
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
 * The chat routes use the `Messenger` (and `Contacts`, `ChatConfig`) found
 * in the context when the layer is built, if any; they are not requirements, so a
 * node without chat still serves the rest (the chat routes answer 503).
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
      const messenger = yield* Effect.serviceOption(Messenger)
      const contacts = yield* Effect.serviceOption(Contacts)
      const chatConfig = yield* Effect.serviceOption(ChatConfig)
      const chatWindows = yield* Effect.serviceOption(ChatWindows)
      // Completed by the finalizer added below, which runs before the server's own: open event
      // streams end first, so closing the server does not wait for them forever.
      const closing = yield* Deferred.make<void>()
      const chat = Option.map(messenger, (service): ChatBackend => ({
        messenger: service,
        contacts: Option.getOrUndefined(contacts),
        deliveryWaitTimeout: Option.getOrElse(chatConfig, () => ChatConfig.defaults).deliveryWaitTimeout,
        eventHeartbeat: Duration.decode(options.eventHeartbeat ?? DEFAULT_EVENT_HEARTBEAT),
        closing: Deferred.await(closing)
      }))
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
      const windows = Option.map(chatWindows, (service): WindowsBackend => ({
        windows: service,
        heartbeat: Duration.decode(options.eventHeartbeat ?? DEFAULT_EVENT_HEARTBEAT),
        closing: Deferred.await(closing)
      }))
      yield* server.serve(makeApp(control, token, chat, windows))
      yield* Effect.addFinalizer(() => Deferred.succeed(closing, undefined))
      const address = server.address
      if (address._tag !== "TcpAddress") {
        return yield* new ControlServerError({ reason: "ListenFailed", host, port, detail: "bound to a non-TCP address" })
      }
      return { address: { host: address.hostname, port: address.port } }
    })
  )
