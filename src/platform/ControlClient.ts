/**
 * The client side of the control API (see `ControlServer.ts`), used by the
 * `peerchat` commands that talk to a running node. It finds the node through
 * `<dataDir>/node.json` and authenticates with `<dataDir>/api-token`, then
 * decodes every answer with the schemas the server encodes with. A domain
 * error comes back as the same typed error the node raised, so the command
 * can print its message; a node that died without removing `node.json` shows
 * up as a refused connection and is reported as `NodeNotRunning`. Every call
 * has a timeout, because a node that hangs must not hang the command too; a
 * long wait for a delivery receipt is split into polls of bounded length.
 *
 * @since 0.1.0
 */
import { type FileSystem, HttpClient, HttpClientRequest, type HttpClientResponse, type Path } from "@effect/platform"
import type { HttpClientError } from "@effect/platform/HttpClientError"
import { Clock, Deferred, Duration, Effect, Either, Option, Schema, type Scope, Stream } from "effect"
import type {
  ChatUnavailable,
  ContactsErrors,
  ConversationErrors,
  DeliveryAnswer,
  IdentityAnswer,
  IdErrors,
  InboxErrors,
  PinnedContact,
  SendErrors,
  SentMessageAnswer,
  TrustAnswer,
  TrustErrors,
  VerifyAnswer,
  VerifyErrors
} from "../chat/ChatControl.js"
import { DEFAULT_EVENT_HEARTBEAT, MAX_DELIVERY_WAIT } from "../chat/ControlLimits.js"
import type { ConversationSummary, HistoryCursor, HistoryEntry, MessageId, StorageError } from "../chat/ChatStore.js"
import type { ChatEvent, UnknownMessage } from "../chat/Messenger.js"
import { parseAddress } from "../core/Contact.js"
import { FingerprintMismatch, InvalidFingerprint } from "../core/Pinning.js"
import { InvalidUsername } from "../core/Username.js"
import {
  AlreadyRegistered,
  NameConflict,
  NameTaken,
  NodeStatus,
  NotConnected,
  PeerEntry,
  PublishFailed,
  StopAnswer,
  UserNotFound,
  WhoisAnswer
} from "../node/Control.js"
import type { DetachAnswer, WindowLine } from "../node/ChatWindows.js"
import { ControlPaths, MAX_USERNAME_INPUT, ProtocolErrorBody } from "./ControlApi.js"
import {
  type ApiToken,
  isProcessAlive,
  NodeNotRunning,
  readApiToken,
  readRuntimeInfo,
  type RuntimeFileError,
  type RuntimeInfo
} from "./RuntimeFiles.js"

/** Default time limit of `status`, `peers`, `id` and `contacts`, which only read local state. */
export const DEFAULT_LOCAL_TIMEOUT: Duration.Duration = Duration.seconds(5)

/** Default time limit of `register` and `whois`, which run lookups in the network. */
export const DEFAULT_NETWORK_TIMEOUT: Duration.Duration = Duration.seconds(30)

/**
 * Longest single poll of a delivery wait. Longer waits poll again, so no
 * request outlives the HTTP client's own response deadline (undici's is 5 minutes).
 */
export const DEFAULT_DELIVERY_POLL: Duration.Duration = Duration.seconds(60)

/**
 * Longest silence on an event stream before the client gives it up as dead:
 * three of the server's heartbeat intervals.
 */
export const DEFAULT_EVENT_IDLE_TIMEOUT: Duration.Duration = Duration.times(DEFAULT_EVENT_HEARTBEAT, 3)

/** Longest line of an event stream accepted: a history entry with a 16 KiB text escapes to well under this. */
export const MAX_EVENT_LINE = 512 * 1024

/** Time a delivery poll may take beyond the wait it asks for before the call counts as timed out. */
const DELIVERY_POLL_SLACK: Duration.Duration = Duration.seconds(5)

/** A request to the node failed for a reason other than a domain error. */
export class ControlRequestFailed extends Schema.TaggedError<ControlRequestFailed>()("ControlRequestFailed", {
  /** The control API address, `host:port`. */
  api: Schema.String,
  reason: Schema.Literal(
    /** The node refused the token: `api-token` was replaced after the node started. */
    "Unauthorized",
    /** The node refused the request itself (malformed, too large, unknown endpoint, internal failure). */
    "Rejected",
    /** No answer within the time limit. */
    "Timeout",
    /** The node is stopping (its last chat window has gone) and takes no new window. */
    "Stopping",
    /** The answer is not what the API defines: another program may hold the port. */
    "BadResponse",
    /** The connection failed other than by being refused. */
    "Transport"
  ),
  detail: Schema.String
}) {
  override get message(): string {
    switch (this.reason) {
      case "Unauthorized":
        return `the node at ${this.api} rejected the API token (${this.detail}); ` +
          "the api-token file was probably replaced after the node started: restart the node"
      case "Rejected":
        return `the node at ${this.api} rejected the request: ${this.detail}`
      case "Timeout":
        return `the node at ${this.api} did not answer within ${this.detail}`
      case "Stopping":
        return `the node at ${this.api} takes no new window: ${this.detail}`
      case "BadResponse":
        return `unexpected answer from ${this.api} (${this.detail}); is another program listening on that port?`
      case "Transport":
        return `cannot talk to the node at ${this.api}: ${this.detail}`
    }
  }
}

/** Why any control call can fail, beside its domain errors. */
export type ControlCallError = NodeNotRunning | ControlRequestFailed

/** The calls a command can make on the running node of one data directory. */
export interface ControlClient {
  /** The `node.json` the client was made from. */
  readonly info: RuntimeInfo
  readonly status: Effect.Effect<NodeStatus, ControlCallError>
  readonly peers: Effect.Effect<ReadonlyArray<PeerEntry>, ControlCallError>
  readonly register: (username: string) => Effect.Effect<WhoisAnswer, RegisterErrors | ControlCallError>
  /** Looks up `name` or `name@fingerprint` (passed through as typed; the node reads it). */
  readonly whois: (username: string) => Effect.Effect<WhoisAnswer, WhoisErrors | ControlCallError>
  /** Asks the node to shut down; succeeds once it accepted, with the process that will exit. */
  readonly stop: Effect.Effect<StopAnswer, ControlCallError>
  /**
   * Sends a message to `name` or `name@fingerprint`; succeeds once it is in
   * the node's outbox. The text is checked here first, so an oversized text never travels.
   */
  readonly send: (to: string, text: string) => Effect.Effect<SentMessageAnswer, SendErrors | ControlCallError>
  /**
   * Waits until the message is delivered or `timeout` (at most 10 minutes)
   * passes, and returns its status then; the wait is made of polls of at
   * most `deliveryPoll` each.
   */
  readonly awaitDelivery: (
    id: MessageId,
    timeout: Duration.DurationInput
  ) => Effect.Effect<DeliveryAnswer, UnknownMessage | StorageError | ChatUnavailable | ControlCallError>
  /**
   * The latest `limit` messages (default 100, at most 1,000) of the
   * conversation with `name`, oldest first; with `before`, the latest ones
   * strictly older than that entry (paging back).
   */
  readonly history: (
    name: string,
    options?: { readonly limit?: number | undefined; readonly before?: HistoryCursor | undefined }
  ) => Effect.Effect<ReadonlyArray<HistoryEntry>, ConversationErrors | ControlCallError>
  /** Conversations, latest activity first, with their unread counts. */
  readonly inbox: Effect.Effect<ReadonlyArray<ConversationSummary>, InboxErrors | ControlCallError>
  /** Marks the conversation with `name` read; returns how many messages were unread. */
  readonly markRead: (name: string) => Effect.Effect<number, ConversationErrors | ControlCallError>
  /**
   * Opens the node's event stream: succeeds once the node accepted it, with
   * the chat events from then on (received messages, status changes) for as
   * long as the scope is open. The stream fails when the connection breaks
   * or stays silent longer than the idle timeout (the node writes
   * heartbeats, which are not passed on); the caller reconnects.
   */
  readonly events: Effect.Effect<
    Stream.Stream<ChatEvent, ControlCallError>,
    ChatUnavailable | ControlCallError,
    Scope.Scope
  >
  /**
   * Attaches a terminal chat window to the node for as long as the scope is
   * open (`GET /v1/windows`, see `ChatWindows`): succeeds with the node's
   * `Attached` line; `ended` completes when the node ends the attachment
   * (it stopped) or the connection breaks. A node that does not count
   * windows answers `Rejected`.
   */
  readonly attachWindow: Effect.Effect<WindowAttachment, ControlCallError, Scope.Scope>
  /** Detaches `window` at once: how many windows remain, and whether the node stops now. */
  readonly detachWindow: (window: number) => Effect.Effect<DetachAnswer, ControlCallError>
  /** This user's name, fingerprint and `name@fingerprint`. */
  readonly id: Effect.Effect<IdentityAnswer, IdErrors | ControlCallError>
  /** Every contact whose key is pinned, by name. */
  readonly contacts: Effect.Effect<ReadonlyArray<PinnedContact>, ContactsErrors | ControlCallError>
  /**
   * The safety number with `name` (or `name@fingerprint`); with `confirm`,
   * records that the numbers matched.
   */
  readonly verify: (name: string, confirm: boolean) => Effect.Effect<VerifyAnswer, VerifyErrors | ControlCallError>
  /** Accepts the key with `fingerprint` for `name` on purpose; returns the new pin and the one it replaced. */
  readonly trust: (name: string, fingerprint: string) => Effect.Effect<TrustAnswer, TrustErrors | ControlCallError>
}

/** A window attached to the node (`ControlClient.attachWindow`). */
export interface WindowAttachment {
  readonly attached: Extract<WindowLine, { readonly _tag: "Attached" }>
  /** Completes when the attachment ends from the node's side (it stopped, or the connection broke). */
  readonly ended: Effect.Effect<void>
}

/** The window schemas, loaded by the first window call (only the terminal chat makes them). */
const windowsApi = Effect.promise(() => import("../node/ChatWindows.js"))

/** Errors of `register`, decoded from the node's answer. */
const RegisterErrors = Schema.Union(InvalidUsername, NameTaken, AlreadyRegistered, PublishFailed, NotConnected)
/** @see RegisterErrors */
export type RegisterErrors = typeof RegisterErrors.Type

/** Errors of `whois`, decoded from the node's answer. */
const WhoisErrors = Schema.Union(
  InvalidUsername,
  InvalidFingerprint,
  UserNotFound,
  NameConflict,
  NotConnected,
  FingerprintMismatch
)
/** @see WhoisErrors */
export type WhoisErrors = typeof WhoisErrors.Type

/** Options of `makeControlClient`. */
export interface ControlClientOptions {
  /** Time limit of `status`, `peers`, `id`, `contacts`, history and inbox (default 5 s). */
  readonly localTimeout?: Duration.DurationInput | undefined
  /** Time limit of `register`, `whois`, `send`, `verify` and `trust` (default 30 s). */
  readonly networkTimeout?: Duration.DurationInput | undefined
  /** Longest single poll of `awaitDelivery` (default 60 s). */
  readonly deliveryPoll?: Duration.DurationInput | undefined
  /** Longest silence on the event stream before it counts as broken (default 45 s). */
  readonly eventIdleTimeout?: Duration.DurationInput | undefined
}

/** True when `error`, or an error it wraps, is a refused TCP connection (node:http and undici nest it differently). */
const isConnectionRefused = (error: unknown): boolean => {
  let current: unknown = error
  // Bounded: causes nest two or three deep; a cycle must not loop forever.
  for (let depth = 0; depth < 8 && typeof current === "object" && current !== null; depth++) {
    if ("code" in current && current.code === "ECONNREFUSED") return true
    if (current instanceof AggregateError && current.errors.some(isConnectionRefused)) return true
    current = "cause" in current ? current.cause : undefined
  }
  return false
}

const describeCause = (error: HttpClientError): string => {
  const cause: unknown = error.cause
  return cause instanceof Error ? cause.message : error.message
}

const NoDomainError = Schema.Never

/**
 * What only the chat's calls need (their schemas, the check of a message's
 * text), loaded by the first such call: `status`, `peers`, `register` and
 * `whois` run without building them (`ControlClientChat.ts`).
 */
const chatApi = Effect.promise(() => import("./ControlClientChat.js"))

/**
 * A client for the node running on `dataDir`. Fails with `NodeNotRunning`
 * when there is no `node.json`, with `RuntimeFileError` when `node.json` or
 * `api-token` is damaged, unreadable, or the token is readable by others.
 * Needs an `HttpClient` (`NodeHttpClient.layer` or `FetchHttpClient.layer`).
 */
export const makeControlClient = (
  dataDir: string,
  options?: ControlClientOptions
): Effect.Effect<
  ControlClient,
  NodeNotRunning | RuntimeFileError,
  FileSystem.FileSystem | Path.Path | HttpClient.HttpClient
> =>
  Effect.gen(function*() {
    const info = yield* readRuntimeInfo(dataDir)
    // A node.json its process outlived (kill -9, a crash, a reboot): nothing of ours listens there, and
    // whatever does must not be sent the token.
    if (!isProcessAlive(info.pid)) return yield* new NodeNotRunning({ dataDir, api: info.api, pid: info.pid })
    const token: ApiToken = yield* readApiToken(dataDir)
    const http = yield* HttpClient.HttpClient
    const api = info.api
    // The schema admits only strings `parseAddress` reads, so this cannot fail; the fallback keeps the types honest.
    const baseUrl = Either.match(parseAddress(api), {
      onLeft: () => `http://${api}`,
      onRight: (address) => `http://${address.host.includes(":") ? `[${address.host}]` : address.host}:${address.port}`
    })
    const localTimeout = Duration.decode(options?.localTimeout ?? DEFAULT_LOCAL_TIMEOUT)
    const networkTimeout = Duration.decode(options?.networkTimeout ?? DEFAULT_NETWORK_TIMEOUT)
    const deliveryPollMs = Math.max(1, Duration.toMillis(options?.deliveryPoll ?? DEFAULT_DELIVERY_POLL))
    const eventIdleTimeout = Duration.decode(options?.eventIdleTimeout ?? DEFAULT_EVENT_IDLE_TIMEOUT)

    const failed = (reason: ControlRequestFailed["reason"], detail: string) =>
      new ControlRequestFailed({ api, reason, detail })

    /** Decodes the answer: `success` on 2xx, else a domain error of `errors`, else a protocol error. */
    const interpret = <A, I, E, EI>(
      response: HttpClientResponse.HttpClientResponse,
      success: Schema.Schema<A, I>,
      errors: Schema.Schema<E, EI>
    ): Effect.Effect<A, E | ControlRequestFailed> =>
      Effect.gen(function*() {
        const body = yield* response.json.pipe(
          Effect.mapError(() => failed("BadResponse", `HTTP ${response.status} without a JSON body`))
        )
        if (response.status >= 200 && response.status < 300) {
          return yield* Schema.decodeUnknown(success)(body).pipe(
            Effect.mapError(() => failed("BadResponse", `HTTP ${response.status} with a body that does not match the API`))
          )
        }
        const domain = Schema.decodeUnknownEither(Schema.Struct({ error: errors }))(body)
        if (Either.isRight(domain)) return yield* Effect.fail(domain.right.error)
        const protocol = Schema.decodeUnknownEither(ProtocolErrorBody)(body)
        if (Either.isLeft(protocol)) {
          return yield* failed("BadResponse", `HTTP ${response.status} with an error the API does not define`)
        }
        const { _tag, message } = protocol.right.error
        return yield* failed(_tag === "Unauthorized" || _tag === "Stopping" ? _tag : "Rejected", message)
      })

    /** Sends `request` (with the token) and gives the response, open until the scope closes. */
    const execute = (request: HttpClientRequest.HttpClientRequest) =>
      http.execute(request.pipe(HttpClientRequest.bearerToken(token))).pipe(
        Effect.mapError((error): ControlCallError =>
          error._tag === "RequestError" && isConnectionRefused(error.cause)
            ? new NodeNotRunning({ dataDir, api })
            : failed("Transport", describeCause(error))
        )
      )

    /** Sends `request` and interprets the answer, within `timeout`. */
    const call = <A, I, E, EI>(
      request: HttpClientRequest.HttpClientRequest,
      timeout: Duration.Duration,
      success: Schema.Schema<A, I>,
      errors: Schema.Schema<E, EI>
    ): Effect.Effect<A, E | ControlCallError> =>
      execute(HttpClientRequest.acceptJson(request)).pipe(
        Effect.flatMap((response) => interpret(response, success, errors)),
        Effect.scoped,
        Effect.timeoutFail({ duration: timeout, onTimeout: () => failed("Timeout", Duration.format(timeout)) })
      )

    const events: ControlClient["events"] = Effect.gen(function*() {
      const chat = yield* chatApi
      const decodeEventLine = Schema.decodeUnknownEither(Schema.parseJson(chat.ChatEventLine))
      const response = yield* execute(
        HttpClientRequest.get(`${baseUrl}${ControlPaths.events}`).pipe(HttpClientRequest.accept("application/x-ndjson"))
      ).pipe(
        Effect.timeoutFail({ duration: localTimeout, onTimeout: () => failed("Timeout", Duration.format(localTimeout)) })
      )
      if (response.status !== 200) {
        // Not a stream: an error document, decoded like any other answer.
        return yield* interpret(response, Schema.Never, chat.ChatUnavailable).pipe(
          Effect.flatMap(() => Effect.fail(failed("BadResponse", `HTTP ${response.status} on the event stream`)))
        )
      }
      return response.stream.pipe(
        Stream.mapError((error) => failed("Transport", error.message)),
        Stream.decodeText(),
        Stream.splitLines,
        // Heartbeats keep a healthy stream from going silent; silence means the connection is gone.
        Stream.timeoutFail(() => failed("Timeout", `no event or heartbeat for ${Duration.format(eventIdleTimeout)}`), eventIdleTimeout),
        Stream.filter((line) => line.length > 0),
        Stream.mapEffect((line) =>
          line.length > MAX_EVENT_LINE
            ? Effect.fail(failed("BadResponse", `an event line of ${line.length} characters`))
            : Either.match(decodeEventLine(line), {
              onLeft: () => Effect.fail(failed("BadResponse", "an event line that does not match the API")),
              onRight: Effect.succeed
            })
        ),
        Stream.filterMap((line): Option.Option<ChatEvent> => (line._tag === "Heartbeat" ? Option.none() : Option.some(line)))
      )
    })

    const attachWindow: ControlClient["attachWindow"] = Effect.gen(function*() {
      const { WindowLine } = yield* windowsApi
      const decodeLine = Schema.decodeUnknownEither(Schema.parseJson(WindowLine))
      const response = yield* execute(
        HttpClientRequest.get(`${baseUrl}${ControlPaths.windows}`).pipe(HttpClientRequest.accept("application/x-ndjson"))
      ).pipe(
        Effect.timeoutFail({ duration: localTimeout, onTimeout: () => failed("Timeout", Duration.format(localTimeout)) })
      )
      if (response.status !== 200) {
        return yield* interpret(response, Schema.Never, Schema.Never).pipe(
          Effect.flatMap(() => Effect.fail(failed("BadResponse", `HTTP ${response.status} on the window attachment`)))
        )
      }
      const first = yield* Deferred.make<WindowAttachment["attached"], ControlCallError>()
      const ended = yield* Deferred.make<void>()
      // The stream is read to its end: the first line says how the node counts this window, the rest are heartbeats.
      yield* Effect.forkScoped(
        response.stream.pipe(
          Stream.mapError((error) => failed("Transport", error.message)),
          Stream.decodeText(),
          Stream.splitLines,
          Stream.filter((line) => line.length > 0 && line.length <= MAX_EVENT_LINE),
          Stream.runForEach((line) =>
            Either.match(decodeLine(line), {
              onLeft: () => Effect.fail(failed("BadResponse", "a window line that does not match the API")),
              onRight: (decoded) => (decoded._tag === "Attached" ? Deferred.succeed(first, decoded) : Effect.void)
            })
          ),
          Effect.catchAll((error) => Deferred.fail(first, error)),
          Effect.ensuring(
            Deferred.fail(first, failed("BadResponse", "the window attachment ended before it began")).pipe(
              Effect.zipRight(Deferred.succeed(ended, undefined))
            )
          )
        )
      )
      const attached = yield* Deferred.await(first).pipe(
        Effect.timeoutFail({ duration: localTimeout, onTimeout: () => failed("Timeout", Duration.format(localTimeout)) })
      )
      return { attached, ended: Deferred.await(ended) }
    })

    // Longer inputs cannot be usernames; the server refuses them, so say why here.
    const checkLength = (username: string): Effect.Effect<void, InvalidUsername> =>
      username.length > MAX_USERNAME_INPUT
        ? Effect.fail(new InvalidUsername({ input: username, reason: "TooLong" }))
        : Effect.void

    return {
      info,
      status: call(HttpClientRequest.get(`${baseUrl}${ControlPaths.status}`), localTimeout, NodeStatus, NoDomainError),
      peers: call(HttpClientRequest.get(`${baseUrl}${ControlPaths.peers}`), localTimeout, Schema.Array(PeerEntry), NoDomainError),
      register: (username) =>
        Effect.zipRight(
          checkLength(username),
          call(
            HttpClientRequest.post(`${baseUrl}${ControlPaths.register}`).pipe(HttpClientRequest.bodyUnsafeJson({ username })),
            networkTimeout,
            WhoisAnswer,
            RegisterErrors
          )
        ),
      whois: (username) =>
        Effect.zipRight(
          checkLength(username),
          // `encodeURIComponent` keeps `name@fingerprint` one path segment (`@` travels as %40).
          call(HttpClientRequest.get(`${baseUrl}${ControlPaths.whois(username)}`), networkTimeout, WhoisAnswer, WhoisErrors)
        ),
      stop: call(HttpClientRequest.post(`${baseUrl}${ControlPaths.stop}`), localTimeout, StopAnswer, NoDomainError),
      send: (to, text) =>
        Effect.flatMap(chatApi, (chat) =>
          Effect.zipRight(
            Effect.zipRight(checkLength(to), chat.parseOutgoingText(text)),
            call(
              HttpClientRequest.post(`${baseUrl}${ControlPaths.messages}`).pipe(HttpClientRequest.bodyUnsafeJson({ to, text })),
              // Sending looks the recipient up in the network first.
              networkTimeout,
              chat.SentMessageAnswer,
              chat.SendErrors
            )
          )),
      awaitDelivery: (id, timeout) =>
        Effect.gen(function*() {
          const chat = yield* chatApi
          const totalMs = Math.max(0, Math.min(Duration.toMillis(timeout), Duration.toMillis(MAX_DELIVERY_WAIT)))
          const deadline = (yield* Clock.currentTimeMillis) + totalMs
          // Every poll but the last waits `deliveryPollMs`; the count is capped too, so a node that
          // answered early would not be asked again and again until the deadline.
          const maxPolls = Math.ceil(totalMs / deliveryPollMs) + 1
          for (let poll = 1;; poll++) {
            // The first poll asks for the whole wait (a millisecond spent before it is no reason to shorten it).
            const remaining = poll === 1 ? totalMs : Math.max(0, deadline - (yield* Clock.currentTimeMillis))
            const pollMs = Math.min(remaining, deliveryPollMs)
            const answer = yield* call(
              HttpClientRequest.get(`${baseUrl}${ControlPaths.delivery(id)}`).pipe(
                HttpClientRequest.setUrlParam("timeoutMs", String(Math.ceil(pollMs)))
              ),
              Duration.sum(Duration.millis(pollMs), DELIVERY_POLL_SLACK),
              chat.DeliveryAnswer,
              chat.DeliveryErrors
            )
            if (answer.status === "delivered" || pollMs >= remaining || poll >= maxPolls) return answer
          }
        }),
      history: (name, historyOptions) =>
        Effect.zipRight(
          checkLength(name),
          Effect.flatMap(chatApi, (chat) =>
            call(
              HttpClientRequest.get(`${baseUrl}${ControlPaths.conversationMessages(name)}`).pipe(
                historyOptions?.limit === undefined
                  ? (request) => request
                  : HttpClientRequest.setUrlParam("limit", String(historyOptions.limit)),
                historyOptions?.before === undefined
                  ? (request) => request
                  : HttpClientRequest.setUrlParam("before", chat.formatHistoryCursor(historyOptions.before))
              ),
              localTimeout,
              chat.HistoryAnswer,
              chat.ConversationErrors
            ))
        ),
      inbox: Effect.flatMap(chatApi, (chat) =>
        call(HttpClientRequest.get(`${baseUrl}${ControlPaths.conversations}`), localTimeout, chat.InboxAnswer, chat.InboxErrors)),
      markRead: (name) =>
        Effect.zipRight(
          checkLength(name),
          Effect.flatMap(chatApi, (chat) =>
            Effect.map(
              call(
                HttpClientRequest.post(`${baseUrl}${ControlPaths.markRead(name)}`),
                localTimeout,
                chat.MarkReadAnswer,
                chat.ConversationErrors
              ),
              (answer) => answer.unread
            ))
        ),
      events,
      attachWindow,
      detachWindow: (window) =>
        Effect.flatMap(windowsApi, ({ DetachAnswer }) =>
          call(HttpClientRequest.post(`${baseUrl}${ControlPaths.detachWindow(window)}`), localTimeout, DetachAnswer, NoDomainError)),
      id: Effect.flatMap(chatApi, (chat) =>
        call(HttpClientRequest.get(`${baseUrl}${ControlPaths.id}`), localTimeout, chat.IdentityAnswer, chat.IdErrors)),
      contacts: Effect.flatMap(chatApi, (chat) =>
        call(HttpClientRequest.get(`${baseUrl}${ControlPaths.contacts}`), localTimeout, chat.ContactsAnswer, chat.ContactsErrors)),
      verify: (name, confirm) =>
        Effect.zipRight(
          checkLength(name),
          Effect.flatMap(chatApi, (chat) =>
            call(
              HttpClientRequest.post(`${baseUrl}${ControlPaths.verify}`).pipe(HttpClientRequest.bodyUnsafeJson({ name, confirm })),
              // A key not pinned yet is looked up in the network first.
              networkTimeout,
              chat.VerifyAnswer,
              chat.VerifyErrors
            ))
        ),
      trust: (name, fingerprint) =>
        Effect.zipRight(
          Effect.zipRight(
            checkLength(name),
            // Far longer than any fingerprint, grouped or not; the server would refuse the body.
            fingerprint.length > MAX_USERNAME_INPUT
              ? Effect.fail(new InvalidFingerprint({ input: `${fingerprint.slice(0, 64)}…`, reason: "WrongLength" }))
              : Effect.void
          ),
          Effect.flatMap(chatApi, (chat) =>
            call(
              HttpClientRequest.post(`${baseUrl}${ControlPaths.trust}`).pipe(
                HttpClientRequest.bodyUnsafeJson({ name, fingerprint })
              ),
              // The key must be one that claims the name now: a network lookup.
              networkTimeout,
              chat.TrustAnswer,
              chat.TrustErrors
            ))
        )
    }
  })
