/**
 * The control API over real loopback sockets: the HTTP server and client are
 * the units under test, so the node behind them is a small in-memory fake,
 * and the chat behind the chat routes is a small `Messenger` over the
 * in-memory `ChatStore` (it stores and reads real history; only the network
 * side is made up), and `Contacts` is a small fake over a map of pins with
 * made-up keys for the names it knows. Tests run with the live clock (`it.scopedLive`), because
 * socket timeouts never fire under the TestClock.
 */
import { FetchHttpClient, type FileSystem, type HttpClient, type Path } from "@effect/platform"
import { NodeContext, NodeHttpClient } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import {
  Context,
  Duration,
  Effect,
  Either,
  Exit,
  Fiber,
  Layer,
  Logger,
  LogLevel,
  Option,
  PubSub,
  Queue,
  Ref,
  Scope,
  Stream
} from "effect"
import { spawnSync } from "node:child_process"
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises"
import { createServer as createHttpServer, request as httpRequest, type Server as HttpServer } from "node:http"
import { createServer } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { ChatConfig } from "../../src/chat/ChatConfig.js"
import { ChatUnavailable, formatHistoryCursor } from "../../src/chat/ChatControl.js"
import {
  ChatStore,
  ChatStoreConfig,
  type CompletedStatus,
  type MessageId,
  OutboxFull,
  type OutgoingStatus,
  PinsFull,
  StorageError
} from "../../src/chat/ChatStore.js"
import { Contacts } from "../../src/chat/Contacts.js"
import { type ChatEvent, Messenger, NotRegistered, SelfMessage, UnknownMessage } from "../../src/chat/Messenger.js"
import { type Address, formatAddress } from "../../src/core/Contact.js"
import type { NodeId } from "../../src/core/Id.js"
import {
  InvalidRecipientKey,
  MAX_MESSAGE_TEXT_BYTES,
  MessageTextMalformed,
  MessageTooLong
} from "../../src/core/Message.js"
import { MessageEmpty, parseOutgoingText } from "../../src/core/MessageInput.js"
import {
  type ContactPin,
  FingerprintMismatch,
  fingerprintOf,
  formatFingerprint,
  formatSafetyNumber,
  KeyChanged,
  makePin,
  parseFingerprint,
  parseNameRef,
  safetyNumber
} from "../../src/core/Pinning.js"
import type { PublicKeyHex } from "../../src/core/UserRecord.js"
import { parseUsername, type Username } from "../../src/core/Username.js"
import {
  AlreadyRegistered,
  NameConflict,
  NameTaken,
  NodeControl,
  type NodeStatus,
  NotConnected,
  PublishFailed,
  UserNotFound,
  type WhoisAnswer
} from "../../src/node/Control.js"
import { type ControlClientOptions, makeControlClient } from "../../src/platform/ControlClient.js"
import * as ControlServer from "../../src/platform/ControlServer.js"
import {
  API_TOKEN_FILE,
  type ApiToken,
  createApiToken,
  RUNTIME_INFO_FILE,
  writeRuntimeInfoScoped
} from "../../src/platform/RuntimeFiles.js"
import { messageIdOf } from "../support/messageIds.js"

/** The id the test messenger gives the first message to bob. */
const BOB_1 = messageIdOf("bob-1")

const SELF = "11".repeat(32) as NodeId
const OTHER = "22".repeat(32) as NodeId
const PEER = "33".repeat(32) as NodeId

const STATUS: NodeStatus = {
  nodeId: SELF,
  listen: "127.0.0.1:4000",
  username: null,
  peers: 1,
  bootstrap: { _tag: "Joining", attempts: 2, lastError: "connection refused", nextAttemptAt: 1_700_000_000_000 },
  connections: { inbound: 3, pending: 1, outbound: 4, refusedConnections: { PendingPerIp: 26 }, rateLimited: { PeerRate: 5 } },
  reachability: "Private"
}

/** What `status` answers for STATUS: the server adds the process's memory. */
const STATUS_ANSWER = {
  ...STATUS,
  memory: expect.objectContaining({ rss: expect.any(Number), code: expect.any(Number), heapUsed: expect.any(Number) })
}

/** The fingerprint every whois answer of the fake node carries. */
const ANSWER_FINGERPRINT = "0000-1111-2222-3333-4444-5555-6666-7777"

const answerFor = (username: Username, nodeId: NodeId): WhoisAnswer => ({
  username,
  fingerprint: ANSWER_FINGERPRINT,
  nodeId,
  address: "127.0.0.1:4000",
  addresses: ["127.0.0.1:4000", "[::1]:4000"],
  sequence: 1,
  expiresAt: 1_800_000_000_000
})

/** A made-up signing key: one byte repeated. */
const keyOf = (byte: string): PublicKeyHex => byte.repeat(32) as PublicKeyHex

/** This user's key, bob's pinned key, the key that claims "bob" too, and everyone else's. */
const OWN_KEY = keyOf("a1")
const BOB_KEY = keyOf("b0")
const BOB_NEW_KEY = keyOf("b1")
const OTHERS_KEY = keyOf("e5")

/** The display fingerprint of a key. */
const grouped = (key: PublicKeyHex): string => formatFingerprint(fingerprintOf(key))

/** "twins" is claimed by two keys. */
const twinsConflict = new NameConflict({
  username: "twins" as Username,
  claimants: [
    { fingerprint: grouped(keyOf("d1")), signingKey: keyOf("d1"), nodeId: OTHER, address: "127.0.0.1:4100", holders: 12 },
    { fingerprint: grouped(keyOf("d2")), signingKey: keyOf("d2"), nodeId: PEER, address: "127.0.0.1:4200", holders: 8 }
  ]
})

/** "lonely" is asked about while no peer answers. */
const notConnected = new NotConnected({ detail: "no peer answered" })

/** "changed" resolves to another key than the one pinned for it. */
const keyChanged = new KeyChanged({
  username: "changed" as Username,
  pinnedFingerprint: fingerprintOf(BOB_KEY),
  newFingerprint: fingerprintOf(BOB_NEW_KEY)
})

/** The failures the fake network gives for the special names, whatever is asked. */
const networkFailure = (username: Username): NotConnected | NameConflict | undefined =>
  username === "lonely" ? notConnected : username === "twins" ? twinsConflict : undefined

/**
 * An in-memory node: one name per node; "taken" belongs to someone else,
 * "offline" cannot be published, "slow" never answers, "crash" is a defect,
 * "lonely" finds no peer (NotConnected), "twins" is claimed by two keys. A
 * `name@fingerprint` must name the fingerprint of the answer (all answers
 * carry `ANSWER_FINGERPRINT`).
 */
const makeFakeControlWith = (registered: Ref.Ref<Option.Option<Username>>) => Effect.gen(function*() {
  const service: typeof NodeControl.Service = {
    status: Effect.map(Ref.get(registered), (name) => ({ ...STATUS, username: Option.getOrNull(name) })),
    peers: Effect.succeed([{ nodeId: PEER, address: { host: "::1", port: 4001 } }]),
    register: (input) =>
      Effect.gen(function*() {
        const username = yield* parseUsername(input)
        if (username === "lonely") return yield* notConnected
        if (username === "taken") return yield* new NameTaken({ username, holder: OTHER })
        if (username === "offline") return yield* new PublishFailed({ username, detail: "no reachable peers" })
        const existing = yield* Ref.get(registered)
        if (Option.isSome(existing) && existing.value !== username) {
          return yield* new AlreadyRegistered({ username, existing: existing.value })
        }
        yield* Ref.set(registered, Option.some(username))
        return answerFor(username, SELF)
      }),
    whois: (input) =>
      Effect.gen(function*() {
        const { fingerprint, username } = yield* parseNameRef(input)
        if (username === "slow") return yield* Effect.never
        if (username === "crash") return yield* Effect.die(new Error("boom"))
        const failure = networkFailure(username)
        if (failure !== undefined) return yield* failure
        const mine = yield* Ref.get(registered)
        const answer = username === "taken"
          ? answerFor(username, OTHER)
          : Option.isSome(mine) && mine.value === username
          ? answerFor(username, SELF)
          : undefined
        if (answer === undefined) return yield* new UserNotFound({ username })
        const actual = Either.getOrThrow(parseFingerprint(answer.fingerprint))
        if (fingerprint !== undefined && fingerprint !== actual) {
          return yield* new FingerprintMismatch({ username, requested: fingerprint, actual })
        }
        return answer
      })
  }
  return service
})

const makeFakeControl = Effect.flatMap(Ref.make(Option.none<Username>()), makeFakeControlWith)

/** The handles a test has on the chat behind the API. */
interface TestChat {
  readonly service: typeof Messenger.Service
  /** Records an incoming message from `from` (sent at the chat's next tick). */
  readonly receive: (from: string, text: string) => Effect.Effect<void>
  /** Moves an outgoing message to `status`, as a receipt or a relay would, and wakes its waiters. */
  readonly complete: (id: MessageId, status: CompletedStatus) => Effect.Effect<void>
  /** Ids of the messages `awaitDelivery` started waiting for, in order. */
  readonly waiting: Queue.Dequeue<MessageId>
  /** Every timeout `awaitDelivery` was called with, in order. */
  readonly waits: Ref.Ref<ReadonlyArray<Duration.Duration>>
  /** Takes one item each time a subscriber of `events` has subscribed (so nothing published after it is missed). */
  readonly subscribed: Queue.Dequeue<void>
}

/** Per-recipient outbox quota of the test chat's store. */
const OUTBOX_QUOTA = 3

/** The key "the network" names for a user (bob's is `BOB_KEY`). */
const keyFor = (username: Username): PublicKeyHex => (username === "bob" ? BOB_KEY : OTHERS_KEY)

/**
 * A `Messenger` over `ChatStore`, sending as the name `registered` holds.
 * Every user exists but "nobody" (not found) and "badkey" (an unusable
 * encryption key); "lonely" finds no peer, "twins" is claimed by two keys,
 * "changed" has a new key; `name@fingerprint` must name the user's key
 * (`keyFor`); reading the conversation with "broken" fails in storage.
 * Time is a counter (1 s per message), so history order is known.
 */
const makeTestChat = (registered: Ref.Ref<Option.Option<Username>>): Effect.Effect<TestChat, never, ChatStore> =>
  Effect.gen(function*() {
    const store = yield* ChatStore
    const clock = yield* Ref.make(1_700_000_000_000)
    const tick = Ref.getAndUpdate(clock, (now) => now + 1000)
    const sentTo = new Map<string, Username>()
    const changes = yield* PubSub.unbounded<MessageId>()
    const waiting = yield* Queue.unbounded<MessageId>()
    const waits = yield* Ref.make<ReadonlyArray<Duration.Duration>>([])
    const events = yield* PubSub.unbounded<ChatEvent>()
    const subscribed = yield* Queue.unbounded<void>()
    let received = 0

    const statusOf = (id: MessageId) =>
      Effect.gen(function*() {
        const conversation = sentTo.get(id)
        if (conversation === undefined) return yield* new UnknownMessage({ id })
        const entries = yield* store.history(conversation, { limit: 1000 })
        const entry = entries.find((candidate) => candidate.id === id)
        // Outgoing entries never leave the history, and sentTo only holds ids the store accepted.
        return (entry?.status ?? "queued") as OutgoingStatus
      })

    const service: typeof Messenger.Service = {
      send: (to, text) =>
        Effect.gen(function*() {
          const self = yield* Ref.get(registered)
          if (Option.isNone(self)) return yield* new NotRegistered()
          const { fingerprint, username: recipient } = yield* parseNameRef(to)
          if (recipient === self.value) return yield* new SelfMessage({ username: recipient })
          if (recipient === "nobody") return yield* new UserNotFound({ username: recipient })
          const failure = networkFailure(recipient)
          if (failure !== undefined) return yield* failure
          if (recipient === "changed") return yield* keyChanged
          const actual = fingerprintOf(keyFor(recipient))
          if (fingerprint !== undefined && fingerprint !== actual) {
            return yield* new FingerprintMismatch({ username: recipient, requested: fingerprint, actual })
          }
          if (recipient === "badkey") return yield* new InvalidRecipientKey({ recipient, encryptionKey: "00" })
          const checked = yield* parseOutgoingText(text)
          const sentAt = yield* tick
          const sent = yield* store.send(
            { from: self.value, to: recipient, sentAt, text: checked },
            (sequence) => Effect.succeed({ id: messageIdOf(`${recipient}-${sequence}`), envelope: JSON.stringify({ recipient, sequence, text }) }),
            sentAt
          ).pipe(Effect.catchTag("DuplicateMessage", Effect.die))
          sentTo.set(sent.id, recipient)
          return { id: sent.id, from: self.value, to: recipient, sequence: sent.sequence, sentAt, status: "queued" as const }
        }),
      awaitDelivery: (id, timeout) =>
        Effect.gen(function*() {
          yield* Ref.update(waits, (all) => [...all, Duration.decode(timeout)])
          const subscription = yield* PubSub.subscribe(changes)
          if ((yield* statusOf(id)) === "delivered") return "delivered" as const
          yield* Queue.offer(waiting, id)
          const delivered = Effect.gen(function*() {
            while (true) {
              const changed = yield* Queue.take(subscription)
              if (changed === id && (yield* statusOf(id)) === "delivered") return
            }
          })
          yield* Effect.timeoutOption(delivered, timeout)
          return yield* statusOf(id)
        }).pipe(Effect.scoped),
      history: (name, options) =>
        Effect.gen(function*() {
          const username = yield* parseUsername(name)
          if (username === "broken") {
            return yield* new StorageError({ operation: "history", reason: "CorruptRow", detail: "bad row" })
          }
          return yield* store.history(username, {
            limit: options?.limit ?? 100,
            ...(options?.before === undefined ? {} : { before: options.before })
          })
        }),
      inbox: store.conversations(),
      markRead: (name) => Effect.flatMap(parseUsername(name), store.markRead),
      events: Stream.unwrapScoped(
        Effect.map(
          Effect.tap(PubSub.subscribe(events), () => Queue.offer(subscribed, undefined)),
          (subscription) => Stream.fromQueue(subscription)
        )
      )
    }

    return {
      service,
      receive: (from, text) =>
        Effect.gen(function*() {
          const self = yield* Ref.get(registered)
          const sender = yield* parseUsername(from)
          const sentAt = yield* tick
          received += 1
          const id = messageIdOf(`in-${received}`)
          yield* store.recordReceived({
            id,
            from: sender,
            to: Option.getOrElse(self, () => "alice" as Username),
            sequence: received,
            sentAt,
            text,
            receivedAt: sentAt
          })
          const entry = yield* store.message(id)
          if (Option.isSome(entry)) yield* PubSub.publish(events, { _tag: "Received", entry: entry.value })
        }).pipe(Effect.orDie),
      complete: (id, status) =>
        store.complete(id, status).pipe(
          Effect.zipRight(PubSub.publish(changes, id)),
          Effect.zipRight(
            Effect.suspend(() => {
              const conversation = sentTo.get(id)
              return conversation === undefined
                ? Effect.void
                : PubSub.publish(events, { _tag: "StatusChanged", id, conversation, status })
            })
          ),
          Effect.asVoid,
          Effect.orDie
        ),
      waiting,
      waits,
      subscribed
    }
  })

/** When the fake contacts pin (ms since the epoch). */
const PINNED_AT = 1_700_000_500_000

/**
 * A `Contacts` over a map of pins, for the user `registered` holds (key
 * `OWN_KEY`). "bob" is claimed by `BOB_KEY` and `BOB_NEW_KEY` (a known
 * contact who moved to a new key), "nobody" by no key, everyone else by
 * `OTHERS_KEY`; "lonely", "twins" and "changed" fail as in the Messenger;
 * trusting "full" finds the pin store full.
 */
const makeTestContacts = (registered: Ref.Ref<Option.Option<Username>>): Effect.Effect<typeof Contacts.Service> =>
  Effect.gen(function*() {
    const pins = yield* Ref.make<ReadonlyMap<Username, ContactPin>>(new Map())
    const claimants = (username: Username): ReadonlyArray<PublicKeyHex> =>
      username === "bob" ? [BOB_KEY, BOB_NEW_KEY] : username === "nobody" ? [] : [OTHERS_KEY]
    const keep = (pin: ContactPin) => Ref.update(pins, (all) => new Map(all).set(pin.username, pin))
    /** The claimant with `fingerprint`, or the error that says there is none. */
    const claimantWith = (username: Username, fingerprint: ContactPin["fingerprint"]) => {
      const keys = claimants(username)
      const [first] = keys
      const chosen = keys.find((key) => fingerprintOf(key) === fingerprint)
      return chosen !== undefined
        ? Effect.succeed(chosen)
        : first === undefined
        ? Effect.fail(new UserNotFound({ username }))
        : Effect.fail(new FingerprintMismatch({ username, requested: fingerprint, actual: fingerprintOf(first) }))
    }
    const failureFor = (username: Username) => {
      const failure = networkFailure(username) ?? (username === "changed" ? keyChanged : undefined)
      return failure === undefined ? Effect.void : Effect.fail(failure)
    }
    const service: typeof Contacts.Service = {
      resolve: () => Effect.die(new Error("not used by the control API")),
      recordOf: () => Effect.succeed(Option.none()),
      cached: () => Effect.succeed(undefined),
      whoAmI: Effect.map(Ref.get(registered), (name) => ({
        username: Option.getOrUndefined(name),
        fingerprint: fingerprintOf(OWN_KEY),
        signingKey: OWN_KEY
      })),
      verify: (name, confirm) =>
        Effect.gen(function*() {
          const ref = yield* parseNameRef(name)
          const self = yield* Ref.get(registered)
          if (Option.isNone(self)) return yield* new NotRegistered()
          yield* failureFor(ref.username)
          const existing = (yield* Ref.get(pins)).get(ref.username)
          const [first] = claimants(ref.username)
          const key = ref.fingerprint !== undefined
            ? yield* claimantWith(ref.username, ref.fingerprint)
            : existing?.signingKey ?? first
          if (key === undefined) return yield* new UserNotFound({ username: ref.username })
          const pin = confirm || existing === undefined
            ? makePin({ username: ref.username, signingKey: key, pinnedAt: PINNED_AT, source: confirm ? "verified" : "first-use" })
            : existing
          yield* keep(pin)
          return {
            username: ref.username,
            fingerprint: fingerprintOf(key),
            pin,
            safetyNumber: formatSafetyNumber(
              safetyNumber({ username: self.value, signingKey: OWN_KEY }, { username: ref.username, signingKey: key })
            )
          }
        }),
      trust: (name, input) =>
        Effect.gen(function*() {
          const username = yield* parseUsername(name)
          const fingerprint = yield* parseFingerprint(input)
          yield* failureFor(username)
          const key = yield* claimantWith(username, fingerprint)
          if (username === "full") return yield* new PinsFull({ username, limit: 2 })
          const pin = makePin({ username, signingKey: key, pinnedAt: PINNED_AT + 1000, source: "trusted" })
          yield* keep(pin)
          return pin
        }),
      list: Effect.map(Ref.get(pins), (all) => [...all.values()])
    }
    return service
  })

type Env = Scope.Scope | FileSystem.FileSystem | Path.Path | HttpClient.HttpClient

/** A fresh data directory under the OS temp dir, removed when the test's scope closes. */
const tempDataDir = Effect.acquireRelease(
  Effect.promise(() => mkdtemp(join(tmpdir(), "peerchat-control-"))),
  (dir) => Effect.promise(() => rm(dir, { recursive: true, force: true }))
)

interface RunningNode {
  readonly dataDir: string
  readonly token: ApiToken
  readonly api: Address
  readonly baseUrl: string
}

interface ChatNode extends RunningNode {
  readonly chat: TestChat
}

/**
 * What a node does on start: token, control API on an ephemeral loopback
 * port, then node.json. With `chat`, the server's context also holds the test
 * `Messenger` and `Contacts` (unless `contacts` is false) and `chatConfig`,
 * when given, as a node with chat would.
 */
const startNodeWith = (
  options: {
    readonly chat: boolean
    readonly contacts?: boolean
    readonly chatConfig?: Layer.Layer<ChatConfig>
    readonly eventHeartbeat?: Duration.DurationInput
  }
): Effect.Effect<RunningNode & { readonly chat: Option.Option<TestChat> }, unknown, Env> =>
  Effect.gen(function*() {
    const dataDir = yield* tempDataDir
    const token = yield* createApiToken(dataDir)
    const registered = yield* Ref.make(Option.none<Username>())
    const control = yield* makeFakeControlWith(registered)
    const chat = options.chat
      ? Option.some(
        yield* makeTestChat(registered).pipe(
          Effect.provide(ChatStore.layerMemory.pipe(Layer.provide(ChatStoreConfig.layer({ outboxMaxPerRecipient: OUTBOX_QUOTA }))))
        )
      )
      : Option.none()
    const context = yield* Layer.build(
      ControlServer.layer({ host: "127.0.0.1", port: 0, token, eventHeartbeat: options.eventHeartbeat }).pipe(
        Layer.provide(Layer.mergeAll(
          Layer.succeed(NodeControl, control),
          Option.match(chat, { onNone: () => Layer.empty, onSome: ({ service }) => Layer.succeed(Messenger, service) }),
          options.chat && options.contacts !== false ? Layer.effect(Contacts, makeTestContacts(registered)) : Layer.empty,
          options.chatConfig ?? Layer.empty
        ))
      )
    )
    const api = Context.get(context, ControlServer.ControlServer).address
    yield* writeRuntimeInfoScoped(dataDir, { nodeId: SELF, listen: { host: "127.0.0.1", port: 4000 }, api })
    return { dataDir, token, api, baseUrl: `http://${formatAddress(api)}`, chat }
  })

/** A node without chat (the chat routes answer 503). */
const startNode: Effect.Effect<RunningNode, unknown, Env> = startNodeWith({ chat: false })

/** A node with the test chat behind the chat routes. */
const startChatNode = (
  chatConfig?: Layer.Layer<ChatConfig>,
  eventHeartbeat?: Duration.DurationInput
): Effect.Effect<ChatNode, unknown, Env> =>
  Effect.flatMap(
    startNodeWith({
      chat: true,
      ...(chatConfig === undefined ? {} : { chatConfig }),
      ...(eventHeartbeat === undefined ? {} : { eventHeartbeat })
    }),
    (node) =>
      Option.match(node.chat, {
        onNone: () => Effect.die(new Error("the chat node has no chat")),
        onSome: (chat) => Effect.succeed({ ...node, chat })
      })
  )

const clientFor = (node: RunningNode, options?: ControlClientOptions) => makeControlClient(node.dataDir, options)

/** A raw request with global fetch, for what the typed client never sends. */
const rawRequest = (url: string, init: RequestInit) =>
  Effect.promise(async () => {
    const response = await fetch(url, init)
    return { status: response.status, headers: response.headers, body: (await response.json()) as unknown }
  })

/** A POST with a chunked body (no Content-Length), which fetch does not send for string bodies. */
const chunkedPost = (url: string, token: string, chunks: ReadonlyArray<string>) =>
  Effect.async<{ readonly status: number; readonly body: unknown }, Error>((resume) => {
    const req = httpRequest(url, {
      method: "POST",
      agent: false,
      headers: { authorization: `Bearer ${token}`, "transfer-encoding": "chunked" }
    }, (res) => {
      let text = ""
      res.setEncoding("utf8")
      res.on("data", (chunk: string) => (text += chunk))
      res.on("end", () => resume(Effect.succeed({ status: res.statusCode ?? 0, body: JSON.parse(text) as unknown })))
    })
    req.on("error", (error) => resume(Effect.fail(error)))
    for (const chunk of chunks) req.write(chunk)
    req.end()
  })

const TestLayer = Layer.mergeAll(NodeContext.layer, NodeHttpClient.layer)

const live = (name: string, test: () => Effect.Effect<void, unknown, Env>) =>
  it.scopedLive(name, () => test().pipe(Effect.provide(TestLayer)))

describe("control API round trips", () => {
  live("status, peers, register and whois decode", () =>
    Effect.gen(function*() {
      const node = yield* startNode
      const client = yield* clientFor(node)
      expect(client.info.api).toBe(formatAddress(node.api))
      expect(node.api.host).toBe("127.0.0.1")
      expect(node.api.port).toBeGreaterThan(0)

      expect(yield* client.status).toEqual(STATUS_ANSWER)
      expect(yield* client.peers).toEqual([{ nodeId: PEER, address: "[::1]:4001" }])
      const registered = yield* client.register("Alice")
      expect(registered).toEqual(answerFor("alice" as Username, SELF))
      expect((yield* client.status).username).toBe("alice")
      expect(yield* client.whois("alice")).toEqual(registered)
      // Full-width letters normalize to the same name: the path parameter is encoded and decoded intact.
      expect(yield* client.whois("ａｌｉｃｅ")).toEqual(registered)
    }))

  live("each domain error crosses back as the same typed error with its message", () =>
    Effect.gen(function*() {
      const node = yield* startNode
      const client = yield* clientFor(node)

      const invalid = yield* Effect.flip(client.register("a!"))
      expect(invalid._tag).toBe("InvalidUsername")
      expect(invalid.message).toBe(Either.flip(parseUsername("a!")).pipe(Either.getOrThrow).message)

      const taken = yield* Effect.flip(client.register("taken"))
      expect(taken).toBeInstanceOf(NameTaken)
      expect(taken).toEqual(new NameTaken({ username: "taken" as Username, holder: OTHER }))
      expect(taken.message).toContain(`node ${OTHER.slice(0, 16)}`)

      const offline = yield* Effect.flip(client.register("offline"))
      expect(offline).toBeInstanceOf(PublishFailed)
      expect(offline.message).toBe('could not publish "offline" to the network: no reachable peers')

      yield* client.register("alice")
      const already = yield* Effect.flip(client.register("bob"))
      expect(already).toBeInstanceOf(AlreadyRegistered)
      expect(already).toEqual(new AlreadyRegistered({ username: "bob" as Username, existing: "alice" as Username }))

      const missing = yield* Effect.flip(client.whois("nobody"))
      expect(missing).toBeInstanceOf(UserNotFound)
      expect(missing.message).toBe('no user named "nobody" was found in the network')

      const badWhois = yield* Effect.flip(client.whois("no/such name"))
      expect(badWhois._tag).toBe("InvalidUsername")
      expect(badWhois._tag === "InvalidUsername" && badWhois.input).toBe("no/such name")

      const long = "x".repeat(300)
      const tooLong = yield* Effect.flip(client.whois(long))
      expect(tooLong._tag === "InvalidUsername" && tooLong.reason).toBe("TooLong")
    }))

  live("domain errors answer with the documented HTTP status and JSON shape", () =>
    Effect.gen(function*() {
      const node = yield* startNode
      const auth = { authorization: `Bearer ${node.token}` }
      const whoisNobody = yield* rawRequest(`${node.baseUrl}/v1/whois/nobody`, { headers: auth })
      expect(whoisNobody.status).toBe(404)
      expect(whoisNobody.body).toEqual({
        error: { _tag: "UserNotFound", message: 'no user named "nobody" was found in the network', username: "nobody" }
      })
      const register = (username: string) =>
        rawRequest(`${node.baseUrl}/v1/register`, {
          method: "POST",
          headers: { ...auth, "content-type": "application/json" },
          body: JSON.stringify({ username })
        })
      expect((yield* register("x")).status).toBe(400)
      expect((yield* register("taken")).status).toBe(409)
      expect((yield* register("offline")).status).toBe(503)
      expect((yield* register("alice")).status).toBe(200)
      expect((yield* register("bob")).status).toBe(409)
      // Over the server's own 256-character bound: a malformed request, not a username.
      expect((yield* register("y".repeat(300))).status).toBe(400)
      // Names longer than the router's default parameter limit still reach the handler.
      const longWhois = yield* rawRequest(`${node.baseUrl}/v1/whois/${"w".repeat(300)}`, { headers: auth })
      expect(longWhois.status).toBe(400)
      expect(longWhois.body).toMatchObject({ error: { _tag: "InvalidUsername", reason: "TooLong" } })
    }))
})

describe("control API protocol errors", () => {
  live("a missing or wrong token gets 401 on every route, known or not", () =>
    Effect.gen(function*() {
      const node = yield* startNode
      const wrongToken = "0".repeat(64)
      const attempts: ReadonlyArray<readonly [string, RequestInit]> = [
        ["/v1/status", {}],
        ["/v1/peers", { headers: { authorization: `Bearer ${wrongToken}` } }],
        ["/v1/whois/alice", { headers: { authorization: node.token } }],
        ["/v1/register", { method: "POST", body: JSON.stringify({ username: "alice" }) }],
        ["/v1/nothing-here", { headers: { authorization: `Bearer ${node.token}x` } }]
      ]
      for (const [path, init] of attempts) {
        const answer = yield* rawRequest(`${node.baseUrl}${path}`, init)
        expect(answer.status).toBe(401)
        expect(answer.headers.get("www-authenticate")).toBe("Bearer")
        expect(answer.body).toMatchObject({ error: { _tag: "Unauthorized" } })
      }
      // Nothing was registered by the unauthorized POST.
      expect(((yield* (yield* clientFor(node)).status)).username).toBeNull()
    }))

  live("ATTACK: a web page gets nothing: a request with an Origin, or for a Host that is not loopback, is forbidden even with the token", () =>
    Effect.gen(function*() {
      // DNS rebinding: a page at evil.example rebinds its name to 127.0.0.1, so its requests reach the
      // API with `Host: evil.example:PORT` and an `Origin`. Before: only the token was checked.
      const node = yield* startNode
      const port = new URL(node.baseUrl).port
      const get = (headers: Record<string, string>) =>
        Effect.async<{ readonly status: number; readonly body: unknown }, Error>((resume) => {
          const req = httpRequest(`${node.baseUrl}/v1/status`, { agent: false, headers: { authorization: `Bearer ${node.token}`, ...headers } }, (res) => {
            let text = ""
            res.setEncoding("utf8")
            res.on("data", (chunk: string) => (text += chunk))
            res.on("end", () => resume(Effect.succeed({ status: res.statusCode ?? 0, body: JSON.parse(text) as unknown })))
          })
          req.on("error", (error) => resume(Effect.fail(error)))
          req.end()
        })
      for (const headers of [{ host: `evil.example:${port}` }, { origin: "http://evil.example" }, { host: `127.0.0.1:${port}`, origin: "null" }]) {
        const answer = yield* get(headers)
        expect(answer.status).toBe(403)
        expect(answer.body).toMatchObject({ error: { _tag: "Forbidden" } })
      }
      for (const host of [`127.0.0.1:${port}`, `localhost:${port}`, "127.0.0.1"]) expect((yield* get({ host })).status).toBe(200)
    }))

  live("a client whose token file was replaced gets a typed Unauthorized error", () =>
    Effect.gen(function*() {
      const node = yield* startNode
      yield* Effect.promise(() => writeFile(join(node.dataDir, API_TOKEN_FILE), `${"f".repeat(64)}\n`, { mode: 0o600 }))
      const error = yield* Effect.flip((yield* clientFor(node)).status)
      expect(error._tag).toBe("ControlRequestFailed")
      expect(error._tag === "ControlRequestFailed" && error.reason).toBe("Unauthorized")
      expect(error.message).toContain("restart the node")
    }))

  live("malformed and oversized bodies get 400 and 413, and the server keeps serving", () =>
    Effect.gen(function*() {
      const node = yield* startNode
      const client = yield* clientFor(node)
      const post = (body: string) =>
        rawRequest(`${node.baseUrl}/v1/register`, {
          method: "POST",
          headers: { authorization: `Bearer ${node.token}`, "content-type": "application/json" },
          body
        })
      for (const body of ["{ not json", "", "[]", JSON.stringify({ name: "alice" }), JSON.stringify({ username: 42 })]) {
        const answer = yield* post(body)
        expect(answer.status).toBe(400)
        expect(answer.body).toMatchObject({ error: { _tag: "BadRequest" } })
        expect(yield* client.status).toEqual(STATUS_ANSWER)
      }
      const huge = yield* post(JSON.stringify({ username: "z".repeat(ControlServer.MAX_BODY_BYTES) }))
      expect(huge.status).toBe(413)
      expect(huge.body).toMatchObject({ error: { _tag: "PayloadTooLarge" } })
      expect(yield* client.status).toEqual(STATUS_ANSWER)
      const chunked = yield* chunkedPost(`${node.baseUrl}/v1/register`, node.token, Array.from({ length: 40 }, () => "x".repeat(1000)))
      expect(chunked.status).toBe(411)
      expect(chunked.body).toMatchObject({ error: { _tag: "LengthRequired" } })
      expect(yield* client.status).toEqual(STATUS_ANSWER)
    }))

  live("an unknown route or method gets a 404 JSON answer", () =>
    Effect.gen(function*() {
      const node = yield* startNode
      const headers = { authorization: `Bearer ${node.token}` }
      for (const [path, method] of [["/v1/nothing", "GET"], ["/v1/status", "POST"], ["/", "GET"]] as const) {
        const answer = yield* rawRequest(`${node.baseUrl}${path}`, { method, headers })
        expect(answer.status).toBe(404)
        expect(answer.body).toMatchObject({ error: { _tag: "NotFound" } })
      }
    }))

  live("a defect in the node becomes a 500 answer and a typed client error", () =>
    Effect.gen(function*() {
      const node = yield* startNode
      const client = yield* clientFor(node)
      const error = yield* Effect.flip(client.whois("crash"))
      expect(error._tag === "ControlRequestFailed" && error.reason).toBe("Rejected")
      expect(yield* client.status).toEqual(STATUS_ANSWER)
    }).pipe(Logger.withMinimumLogLevel(LogLevel.None)))

  live("a call that takes too long fails with a typed timeout, and the server keeps serving", () =>
    Effect.gen(function*() {
      const node = yield* startNode
      const client = yield* clientFor(node, { networkTimeout: "300 millis" })
      const error = yield* Effect.flip(client.whois("slow"))
      expect(error._tag === "ControlRequestFailed" && error.reason).toBe("Timeout")
      expect(error.message).toContain(formatAddress(node.api))
      expect(yield* client.status).toEqual(STATUS_ANSWER)
    }))
})

describe("finding the node", () => {
  /** A loopback port that was just free: bound, then released. */
  const closedPort = Effect.async<number>((resume) => {
    const server = createServer()
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      const port = typeof address === "object" && address !== null ? address.port : 0
      server.close(() => resume(Effect.succeed(port)))
    })
  })

  const staleNode = Effect.gen(function*() {
    const dataDir = yield* tempDataDir
    yield* createApiToken(dataDir)
    const api = { host: "127.0.0.1", port: yield* closedPort }
    yield* writeRuntimeInfoScoped(dataDir, { nodeId: SELF, listen: { host: "127.0.0.1", port: 4000 }, api })
    return { dataDir, api }
  })

  for (const [clientName, clientLayer] of [["node:http", NodeHttpClient.layer], ["fetch", FetchHttpClient.layer]] as const) {
    it.scopedLive(`a stale node.json whose API port is closed gives NodeNotRunning (${clientName})`, () =>
      Effect.gen(function*() {
        const { dataDir, api } = yield* staleNode
        const client = yield* makeControlClient(dataDir)
        const calls: ReadonlyArray<Effect.Effect<unknown, { readonly _tag: string; readonly message: string; readonly api?: string | undefined }>> =
          [client.status, client.peers, client.whois("alice")]
        for (const call of calls) {
          const error = yield* Effect.flip(call)
          expect(error._tag).toBe("NodeNotRunning")
          expect(error.api).toBe(formatAddress(api))
          expect(error.message).toContain(`no node is running for data directory ${dataDir}`)
        }
      }).pipe(Effect.provide(Layer.mergeAll(NodeContext.layer, clientLayer))))
  }

  live("ATTACK: a node.json whose process is gone: NodeNotRunning, and whatever listens on its port is sent nothing", () =>
    Effect.gen(function*() {
      // A node killed with -9 leaves node.json; another local user binds its API port. Before: the next
      // `peerchat status` sent that listener the token in its Authorization header.
      const dataDir = yield* tempDataDir
      yield* createApiToken(dataDir)
      const heard: Array<string | undefined> = []
      const listener = yield* Effect.acquireRelease(
        Effect.async<HttpServer>((resume) => {
          const server = createHttpServer((request, response) => {
            heard.push(request.headers.authorization)
            response.end("{}")
          })
          server.listen(0, "127.0.0.1", () => resume(Effect.succeed(server)))
        }),
        (server) =>
          Effect.async<void>((resume) => {
            server.close(() => resume(Effect.void))
          })
      )
      const address = listener.address()
      const api = { host: "127.0.0.1", port: typeof address === "object" && address !== null ? address.port : 0 }
      yield* writeRuntimeInfoScoped(dataDir, { nodeId: SELF, listen: { host: "127.0.0.1", port: 4000 }, api })
      // The process it names has exited.
      const gone = spawnSync(process.execPath, ["-e", "0"]).pid
      const file = join(dataDir, RUNTIME_INFO_FILE)
      const info = JSON.parse(yield* Effect.promise(() => readFile(file, "utf8"))) as Record<string, unknown>
      yield* Effect.promise(() => writeFile(file, JSON.stringify({ ...info, pid: gone }), { mode: 0o600 }))
      const error = yield* Effect.flip(makeControlClient(dataDir))
      expect(error).toMatchObject({ _tag: "NodeNotRunning", pid: gone })
      expect(error.message).toContain(`node.json names process ${gone}`)
      expect(heard).toEqual([])
    }))

  live("no node.json: NodeNotRunning before any request", () =>
    Effect.gen(function*() {
      const dataDir = yield* tempDataDir
      const error = yield* Effect.flip(makeControlClient(dataDir))
      expect(error._tag).toBe("NodeNotRunning")
      expect(error.message).toContain(`peerchat start --data-dir ${dataDir}`)
    }))

  live("node.json disappears when the node's scope closes", () =>
    Effect.gen(function*() {
      const dataDir = yield* tempDataDir
      yield* Effect.scoped(Effect.gen(function*() {
        const token = yield* createApiToken(dataDir)
        const control = yield* makeFakeControl
        const context = yield* Layer.build(
          ControlServer.layer({ host: "127.0.0.1", port: 0, token }).pipe(Layer.provide(Layer.succeed(NodeControl, control)))
        )
        const api = Context.get(context, ControlServer.ControlServer).address
        yield* writeRuntimeInfoScoped(dataDir, { nodeId: SELF, listen: { host: "127.0.0.1", port: 4000 }, api })
        expect(yield* (yield* makeControlClient(dataDir)).status).toEqual(STATUS_ANSWER)
      }))
      const error = yield* Effect.flip(makeControlClient(dataDir))
      expect(error._tag).toBe("NodeNotRunning")
    }))

  live("the server refuses a non-loopback host and reports a busy port", () =>
    Effect.gen(function*() {
      const dataDir = yield* tempDataDir
      const token = yield* createApiToken(dataDir)
      const control = Layer.effect(NodeControl, makeFakeControl)
      const build = (host: string, port: number) =>
        Effect.flip(Layer.build(ControlServer.layer({ host, port, token }).pipe(Layer.provide(control))))
      const notLoopback = yield* build("0.0.0.0", 0)
      expect(notLoopback.reason).toBe("NotLoopback")
      const first = yield* Layer.build(ControlServer.layer({ host: "127.0.0.1", port: 0, token }).pipe(Layer.provide(control)))
      const busyPort = Context.get(first, ControlServer.ControlServer).address.port
      const busy = yield* build("127.0.0.1", busyPort)
      expect(busy.reason).toBe("ListenFailed")
      expect(busy.message).toContain(`127.0.0.1:${busyPort}`)
      expect(ControlServer.isLoopbackHost("::1")).toBe(true)
      expect(ControlServer.isLoopbackHost("127.1.2.3")).toBe(true)
      expect(ControlServer.isLoopbackHost("10.0.0.1")).toBe(false)
      expect(ControlServer.isLoopbackHost("localhost.evil.example")).toBe(false)
    }))
})

/** Takes from `chat.waiting` until `awaitDelivery` has started waiting for `id`. */
const startedWaiting = (chat: TestChat, id: MessageId) =>
  Effect.gen(function*() {
    while ((yield* Queue.take(chat.waiting)) !== id) {
      // An earlier wait for another message.
    }
  })

const jsonRequest = (node: RunningNode, method: string, path: string, body?: unknown) =>
  rawRequest(`${node.baseUrl}${path}`, {
    method,
    headers: { authorization: `Bearer ${node.token}`, "content-type": "application/json" },
    ...(body === undefined ? {} : { body: typeof body === "string" ? body : JSON.stringify(body) })
  })

describe("chat routes", () => {
  live("send, history, inbox, mark read and delivery round trip through the client", () =>
    Effect.gen(function*() {
      const node = yield* startChatNode()
      const client = yield* clientFor(node)
      yield* client.register("alice")

      const first = yield* client.send("Bob", "hello bob")
      expect(first).toEqual({ id: BOB_1, from: "alice", to: "bob", sequence: 1, sentAt: 1_700_000_000_000, status: "queued" })
      yield* node.chat.receive("bob", "hi alice")
      const second = yield* client.send("bob", "line one\nline two")
      expect(second).toMatchObject({ id: messageIdOf("bob-2"), sequence: 2, sentAt: 1_700_000_002_000 })

      const history = yield* client.history("bob")
      expect(history.map(({ direction, from, to, text, status }) => ({ direction, from, to, text, status }))).toEqual([
        { direction: "out", from: "alice", to: "bob", text: "hello bob", status: "queued" },
        { direction: "in", from: "bob", to: "alice", text: "hi alice", status: "received" },
        { direction: "out", from: "alice", to: "bob", text: "line one\nline two", status: "queued" }
      ])
      expect((yield* client.history("BOB", { limit: 2 })).map((entry) => entry.text)).toEqual(["hi alice", "line one\nline two"])
      expect(yield* client.history("carol")).toEqual([])

      expect(yield* client.inbox).toEqual([{ conversation: "bob", lastAt: 1_700_000_002_000, unread: 1 }])
      expect(yield* client.markRead("bob")).toBe(1)
      expect(yield* client.inbox).toEqual([{ conversation: "bob", lastAt: 1_700_000_002_000, unread: 0 }])
      expect(yield* client.markRead("bob")).toBe(0)

      // A wait that ends first reports the status at its end.
      expect(yield* client.awaitDelivery(first.id, "50 millis")).toEqual({ id: first.id, status: "queued" })
      yield* node.chat.complete(first.id, "stored-offline")
      expect(yield* client.awaitDelivery(first.id, 0)).toEqual({ id: first.id, status: "stored-offline" })

      // A long poll answers as soon as the receipt arrives.
      const waiter = yield* Effect.fork(client.awaitDelivery(second.id, "20 seconds"))
      yield* startedWaiting(node.chat, second.id)
      yield* node.chat.complete(second.id, "delivered")
      expect(yield* Fiber.join(waiter)).toEqual({ id: second.id, status: "delivered" })
      expect((yield* client.history("bob")).map((entry) => entry.status)).toEqual(["stored-offline", "received", "delivered"])
      expect((yield* Ref.get(node.chat.waits)).map(Duration.toMillis)).toEqual([50, 0, 20_000])
    }))

  live("a long wait is made of bounded polls and ends at the first one that sees the receipt", () =>
    Effect.gen(function*() {
      const node = yield* startChatNode()
      const client = yield* clientFor(node, { deliveryPoll: "40 millis" })
      yield* client.register("alice")
      const sent = yield* client.send("bob", "hi")

      expect(yield* client.awaitDelivery(sent.id, "200 millis")).toEqual({ id: sent.id, status: "queued" })
      // How many polls fit depends on each round trip's overhead; at least two always do.
      const polls = (yield* Ref.get(node.chat.waits)).map(Duration.toMillis)
      expect(polls.length).toBeGreaterThanOrEqual(2)
      expect(polls.every((ms) => ms <= 40)).toBe(true)
      expect(polls.reduce((sum, ms) => sum + ms, 0)).toBeLessThanOrEqual(200)

      const waiter = yield* Effect.fork(client.awaitDelivery(sent.id, "20 seconds"))
      yield* startedWaiting(node.chat, sent.id)
      yield* startedWaiting(node.chat, sent.id)
      yield* node.chat.complete(sent.id, "delivered")
      expect(yield* Fiber.join(waiter)).toEqual({ id: sent.id, status: "delivered" })
    }))

  live("answers have the documented JSON shapes", () =>
    Effect.gen(function*() {
      const node = yield* startChatNode()
      yield* (yield* clientFor(node)).register("alice")

      const sent = yield* jsonRequest(node, "POST", "/v1/messages", { to: "bob", text: "hi" })
      expect(sent.status).toBe(200)
      expect(sent.body).toEqual({ id: BOB_1, from: "alice", to: "bob", sequence: 1, sentAt: 1_700_000_000_000, status: "queued" })
      yield* node.chat.receive("bob", "hey")

      const delivery = yield* jsonRequest(node, "GET", `/v1/messages/${BOB_1}/delivery?timeoutMs=0`)
      expect(delivery).toMatchObject({ status: 200, body: { id: BOB_1, status: "queued" } })
      const inbox = yield* jsonRequest(node, "GET", "/v1/conversations")
      expect(inbox).toMatchObject({ status: 200, body: [{ conversation: "bob", lastAt: 1_700_000_001_000, unread: 1 }] })
      const history = yield* jsonRequest(node, "GET", "/v1/conversations/bob/messages?limit=10")
      expect(history.status).toBe(200)
      expect(history.body).toEqual([
        {
          id: BOB_1,
          conversation: "bob",
          direction: "out",
          from: "alice",
          to: "bob",
          sequence: 1,
          sentAt: 1_700_000_000_000,
          text: "hi",
          status: "queued",
          read: true
        },
        {
          id: messageIdOf("in-1"),
          conversation: "bob",
          direction: "in",
          from: "bob",
          to: "alice",
          sequence: 1,
          sentAt: 1_700_000_001_000,
          text: "hey",
          status: "received",
          receivedAt: 1_700_000_001_000,
          read: false
        }
      ])
      const read = yield* jsonRequest(node, "POST", "/v1/conversations/bob/read")
      expect(read).toMatchObject({ status: 200, body: { unread: 1 } })
    }))

  live("each chat error answers with its typed JSON and HTTP status", () =>
    Effect.gen(function*() {
      const node = yield* startChatNode()
      const send = (to: string, text = "hi") => jsonRequest(node, "POST", "/v1/messages", { to, text })

      const unregistered = yield* send("bob")
      expect(unregistered.status).toBe(409)
      expect(unregistered.body).toEqual({ error: { _tag: "NotRegistered", message: new NotRegistered().message } })
      yield* (yield* clientFor(node)).register("alice")

      const expectations: ReadonlyArray<readonly [Effect.Effect<{ readonly status: number; readonly body: unknown }>, number, object]> = [
        [send("bad name!"), 400, { _tag: "InvalidUsername", input: "bad name!", reason: "InvalidCharacter" }],
        [send("Alice"), 400, { _tag: "SelfMessage", username: "alice", message: '"alice" is you: pick another recipient' }],
        [send("nobody"), 404, { _tag: "UserNotFound", username: "nobody" }],
        [send("badkey"), 502, { _tag: "InvalidRecipientKey", recipient: "badkey", encryptionKey: "00" }],
        [
          send("bob", "é".repeat(MAX_MESSAGE_TEXT_BYTES / 2 + 1)),
          400,
          { _tag: "MessageTooLong", bytes: MAX_MESSAGE_TEXT_BYTES + 2, limit: MAX_MESSAGE_TEXT_BYTES }
        ],
        [send("bob", " \n "), 400, { _tag: "MessageEmpty", length: 3, message: "the message is only white space: type some text to send" }],
        // JSON can carry a lone surrogate, which has no UTF-8 form.
        [jsonRequest(node, "POST", "/v1/messages", '{"to":"bob","text":"a\\ud800"}'), 400, { _tag: "MessageTextMalformed", index: 1 }],
        [jsonRequest(node, "GET", "/v1/messages/nothing/delivery?timeoutMs=0"), 404, { _tag: "UnknownMessage", id: "nothing" }],
        [jsonRequest(node, "GET", `/v1/messages/${"f".repeat(200)}/delivery`), 404, { _tag: "UnknownMessage" }],
        [jsonRequest(node, "GET", "/v1/conversations/broken/messages"), 500, { _tag: "StorageError", reason: "CorruptRow" }],
        [jsonRequest(node, "GET", "/v1/conversations/x/messages"), 400, { _tag: "InvalidUsername", reason: "TooShort" }],
        [jsonRequest(node, "GET", `/v1/conversations/${"w".repeat(300)}/messages`), 400, { _tag: "InvalidUsername", reason: "TooLong" }],
        [jsonRequest(node, "POST", "/v1/conversations/x!y/read"), 400, { _tag: "InvalidUsername", reason: "InvalidCharacter" }]
      ]
      for (const [request, status, error] of expectations) {
        const answer = yield* request
        expect(answer.status, JSON.stringify(error)).toBe(status)
        expect(answer.body).toMatchObject({ error: { ...error, message: expect.any(String) } })
      }

      for (let i = 0; i < OUTBOX_QUOTA; i++) expect((yield* send("carol")).status).toBe(200)
      const full = yield* send("carol")
      expect(full.status).toBe(429)
      expect(full.body).toMatchObject({ error: { _tag: "OutboxFull", recipient: "carol", reason: "RecipientQuota", limit: OUTBOX_QUOTA } })
      // Nothing refused was stored.
      expect((yield* (yield* clientFor(node)).history("bob")).length).toBe(0)
    }))

  live("chat errors cross back through the client as the same typed errors", () =>
    Effect.gen(function*() {
      const node = yield* startChatNode()
      const client = yield* clientFor(node)

      expect(yield* Effect.flip(client.send("bob", "hi"))).toBeInstanceOf(NotRegistered)
      yield* client.register("alice")
      expect(yield* Effect.flip(client.send("alice", "hi"))).toEqual(new SelfMessage({ username: "alice" as Username }))
      const missing = yield* Effect.flip(client.send("nobody", "hi"))
      expect(missing).toBeInstanceOf(UserNotFound)
      expect(missing.message).toBe('no user named "nobody" was found in the network')
      expect(yield* Effect.flip(client.send("badkey", "hi"))).toBeInstanceOf(InvalidRecipientKey)
      expect((yield* Effect.flip(client.send("no such", "hi")))._tag).toBe("InvalidUsername")
      expect((yield* Effect.flip(client.send("y".repeat(300), "hi")))._tag).toBe("InvalidUsername")
      // Text limits are checked before anything is sent.
      expect(yield* Effect.flip(client.send("bob", "x".repeat(MAX_MESSAGE_TEXT_BYTES + 1)))).toEqual(
        new MessageTooLong({ bytes: MAX_MESSAGE_TEXT_BYTES + 1, limit: MAX_MESSAGE_TEXT_BYTES })
      )
      expect(yield* Effect.flip(client.send("bob", "\udc00"))).toEqual(new MessageTextMalformed({ index: 0 }))
      expect(yield* Effect.flip(client.send("bob", ""))).toEqual(new MessageEmpty({ length: 0 }))
      for (let i = 0; i < OUTBOX_QUOTA; i++) yield* client.send("carol", `m${i}`)
      expect(yield* Effect.flip(client.send("carol", "one too many"))).toBeInstanceOf(OutboxFull)

      // Not an id at all: the server answers as for an id it does not know.
      expect(yield* Effect.flip(client.awaitDelivery("nothing" as MessageId, 0))).toEqual(new UnknownMessage({ id: "nothing" }))
      const broken = yield* Effect.flip(client.history("broken"))
      expect(broken).toBeInstanceOf(StorageError)
      expect(broken.message).toBe("chat store history: CorruptRow: bad row")
      expect((yield* Effect.flip(client.markRead("x")))._tag).toBe("InvalidUsername")
      expect((yield* client.history("bob")).length).toBe(0)
    }))

  live("malformed bodies and queries get 400 (411, 413), and nothing is sent", () =>
    Effect.gen(function*() {
      const node = yield* startChatNode()
      const client = yield* clientFor(node)
      yield* client.register("alice")
      const bodies = [
        "{ not json",
        "",
        "[]",
        JSON.stringify({ to: "bob" }),
        JSON.stringify({ text: "hi" }),
        JSON.stringify({ to: 1, text: "hi" }),
        JSON.stringify({ to: "bob", text: null }),
        JSON.stringify({ to: "y".repeat(300), text: "hi" })
      ]
      for (const body of bodies) {
        const answer = yield* jsonRequest(node, "POST", "/v1/messages", body)
        expect(answer.status, body).toBe(400)
        expect(answer.body).toMatchObject({ error: { _tag: "BadRequest" } })
      }
      const huge = yield* jsonRequest(node, "POST", "/v1/messages", { to: "bob", text: "z".repeat(ControlServer.MAX_MESSAGE_BODY_BYTES) })
      expect(huge.status).toBe(413)
      expect(huge.body).toMatchObject({ error: { _tag: "PayloadTooLarge" } })
      const chunked = yield* chunkedPost(`${node.baseUrl}/v1/messages`, node.token, ['{"to":"bob",', '"text":"hi"}'])
      expect(chunked.status).toBe(411)

      yield* client.send("bob", "the only message")
      const queries = [
        "/v1/conversations/bob/messages?limit=0",
        "/v1/conversations/bob/messages?limit=1001",
        "/v1/conversations/bob/messages?limit=abc",
        "/v1/conversations/bob/messages?limit=-1",
        "/v1/conversations/bob/messages?limit=1e2",
        "/v1/conversations/bob/messages?limit=1&limit=2",
        `/v1/messages/${BOB_1}/delivery?timeoutMs=600001`,
        `/v1/messages/${BOB_1}/delivery?timeoutMs=-5`,
        `/v1/messages/${BOB_1}/delivery?timeoutMs=soon`
      ]
      for (const path of queries) {
        const answer = yield* jsonRequest(node, "GET", path)
        expect(answer.status, path).toBe(400)
        expect(answer.body).toMatchObject({ error: { _tag: "BadRequest" } })
      }
      expect((yield* client.history("bob")).map((entry) => entry.text)).toEqual(["the only message"])
      // The longest wait the API allows is accepted (the message is delivered, so it answers at once).
      yield* node.chat.complete(BOB_1, "delivered")
      const longest = yield* jsonRequest(node, "GET", `/v1/messages/${BOB_1}/delivery?timeoutMs=600000`)
      expect(longest).toMatchObject({ status: 200, body: { status: "delivered" } })
      expect((yield* Ref.get(node.chat.waits)).map(Duration.toMillis)).toEqual([600_000])
    }))

  live("a delivery wait without timeoutMs lasts the node's deliveryWaitTimeout", () =>
    Effect.gen(function*() {
      const configured = yield* startChatNode(ChatConfig.layer({ deliveryWaitTimeout: Duration.millis(60) }))
      yield* (yield* clientFor(configured)).register("alice")
      yield* jsonRequest(configured, "POST", "/v1/messages", { to: "bob", text: "hi" })
      const answer = yield* jsonRequest(configured, "GET", `/v1/messages/${BOB_1}/delivery`)
      expect(answer).toMatchObject({ status: 200, body: { id: BOB_1, status: "queued" } })
      expect((yield* Ref.get(configured.chat.waits)).map(Duration.toMillis)).toEqual([60])

      // Without a ChatConfig, the documented default of 30 s.
      const plain = yield* startChatNode()
      yield* (yield* clientFor(plain)).register("alice")
      yield* jsonRequest(plain, "POST", "/v1/messages", { to: "bob", text: "hi" })
      yield* plain.chat.complete(BOB_1, "delivered")
      expect((yield* jsonRequest(plain, "GET", `/v1/messages/${BOB_1}/delivery`)).body).toEqual({ id: BOB_1, status: "delivered" })
      expect((yield* Ref.get(plain.chat.waits)).map(Duration.toMillis)).toEqual([30_000])
    }))

  live("a node without chat answers every chat route with a typed 503", () =>
    Effect.gen(function*() {
      const node = yield* startNode
      const routes: ReadonlyArray<readonly [string, string, unknown?]> = [
        ["POST", "/v1/messages", { to: "bob", text: "hi" }],
        ["GET", `/v1/messages/${BOB_1}/delivery?timeoutMs=10`],
        ["GET", "/v1/conversations"],
        ["GET", "/v1/conversations/bob/messages"],
        ["POST", "/v1/conversations/bob/read"]
      ]
      for (const [method, path, body] of routes) {
        const answer = yield* jsonRequest(node, method, path, body)
        expect(answer.status, path).toBe(503)
        expect(answer.body).toEqual({ error: { _tag: "ChatUnavailable", message: "chat is not running on this node" } })
      }
      const client = yield* clientFor(node)
      const calls: ReadonlyArray<Effect.Effect<unknown, { readonly _tag: string }>> = [
        client.send("bob", "hi"),
        client.awaitDelivery(BOB_1, 0),
        client.inbox,
        client.history("bob"),
        client.markRead("bob")
      ]
      for (const call of calls) expect(yield* Effect.flip(call)).toBeInstanceOf(ChatUnavailable)
      // The rest of the API is unaffected.
      expect(yield* client.status).toEqual(STATUS_ANSWER)
    }))

  live("every chat route needs the bearer token", () =>
    Effect.gen(function*() {
      const node = yield* startChatNode()
      const client = yield* clientFor(node)
      yield* client.register("alice")
      yield* node.chat.receive("bob", "unread")
      const wrong = { authorization: `Bearer ${"0".repeat(64)}` }
      const attempts: ReadonlyArray<readonly [string, RequestInit]> = [
        ["/v1/messages", { method: "POST", body: JSON.stringify({ to: "bob", text: "hi" }) }],
        ["/v1/messages", { method: "POST", headers: wrong, body: JSON.stringify({ to: "bob", text: "hi" }) }],
        [`/v1/messages/${BOB_1}/delivery?timeoutMs=0`, { headers: wrong }],
        ["/v1/conversations", {}],
        ["/v1/conversations/bob/messages", { headers: wrong }],
        ["/v1/conversations/bob/read", { method: "POST", headers: { authorization: node.token } }]
      ]
      for (const [path, init] of attempts) {
        const answer = yield* rawRequest(`${node.baseUrl}${path}`, init)
        expect(answer.status, path).toBe(401)
        expect(answer.body).toMatchObject({ error: { _tag: "Unauthorized" } })
      }
      // Nothing was sent and nothing was marked read.
      expect((yield* client.history("bob")).map((entry) => entry.direction)).toEqual(["in"])
      expect(yield* client.inbox).toMatchObject([{ conversation: "bob", unread: 1 }])
    }))
})

describe("the event stream and history paging", () => {
  live("events arrive as they happen: received messages and status changes, in order", () =>
    Effect.gen(function*() {
      const node = yield* startChatNode()
      const client = yield* clientFor(node)
      yield* client.register("alice")
      const sent = yield* client.send("bob", "hi bob")
      const events = yield* client.events
      yield* Queue.take(node.chat.subscribed)
      const collected = yield* Effect.fork(Stream.runCollect(Stream.take(events, 3)))
      yield* node.chat.receive("bob", "hello \u001b[2J alice")
      yield* node.chat.complete(sent.id, "stored-offline")
      yield* node.chat.complete(sent.id, "delivered")
      const seen = [...(yield* Fiber.join(collected))]
      expect(seen.map((event) => event._tag)).toEqual(["Received", "StatusChanged", "StatusChanged"])
      expect(seen[0]).toMatchObject({ _tag: "Received", entry: { from: "bob", text: "hello \u001b[2J alice", status: "received" } })
      expect(seen.slice(1)).toEqual([
        { _tag: "StatusChanged", id: sent.id, conversation: "bob", status: "stored-offline" },
        { _tag: "StatusChanged", id: sent.id, conversation: "bob", status: "delivered" }
      ])
    }))

  live("the stream is newline-delimited JSON that starts with a heartbeat and repeats it while idle", () =>
    Effect.gen(function*() {
      const node = yield* startChatNode(undefined, "20 millis")
      const lines = yield* Effect.promise(async () => {
        const controller = new AbortController()
        const response = await fetch(`${node.baseUrl}/v1/events`, {
          headers: { authorization: `Bearer ${node.token}` },
          signal: controller.signal
        })
        const reader = response.body?.getReader()
        let text = ""
        while (reader !== undefined && text.split("\n").length < 4) {
          const chunk = await reader.read()
          if (chunk.done) break
          text += new TextDecoder().decode(chunk.value)
        }
        controller.abort()
        return { status: response.status, type: response.headers.get("content-type"), lines: text.split("\n").slice(0, 3) }
      })
      expect(lines.status).toBe(200)
      expect(lines.type).toContain("application/x-ndjson")
      expect(lines.lines).toEqual(['{"_tag":"Heartbeat"}', '{"_tag":"Heartbeat"}', '{"_tag":"Heartbeat"}'])
    }))

  live("a silent stream fails after the idle timeout, so the client reconnects", () =>
    Effect.gen(function*() {
      const node = yield* startChatNode(undefined, "1 hour")
      const client = yield* clientFor(node, { eventIdleTimeout: "100 millis" })
      const events = yield* client.events
      const error = yield* Effect.flip(Stream.runDrain(events))
      expect(error).toMatchObject({ _tag: "ControlRequestFailed", reason: "Timeout" })
      expect(error.message).toMatch(/no event or heartbeat for 100ms/)
    }))

  live("at most 8 streams are open at once; the next is refused, not queued", () =>
    Effect.gen(function*() {
      const node = yield* startChatNode()
      const client = yield* clientFor(node)
      for (let i = 0; i < 8; i++) yield* client.events
      const refused = yield* Effect.flip(client.events)
      expect(refused).toMatchObject({ _tag: "ControlRequestFailed", reason: "Rejected" })
      expect(refused.message).toMatch(/at most 8 event streams/)
    }))

  live("a node without chat refuses the stream with ChatUnavailable, and the token is required", () =>
    Effect.gen(function*() {
      const plain = yield* startNode
      expect(yield* Effect.flip((yield* clientFor(plain)).events)).toBeInstanceOf(ChatUnavailable)
      const node = yield* startChatNode()
      const answer = yield* rawRequest(`${node.baseUrl}/v1/events`, {})
      expect(answer.status).toBe(401)
    }))

  live("closing the server ends open streams instead of waiting for them", () =>
    Effect.gen(function*() {
      const dataDir = yield* tempDataDir
      const token = yield* createApiToken(dataDir)
      const registered = yield* Ref.make(Option.none<Username>())
      const control = yield* makeFakeControlWith(registered)
      const chat = yield* makeTestChat(registered).pipe(
        Effect.provide(ChatStore.layerMemory.pipe(Layer.provide(ChatStoreConfig.layer())))
      )
      const serverScope = yield* Scope.make()
      const context = yield* Layer.buildWithScope(
        ControlServer.layer({ host: "127.0.0.1", port: 0, token }).pipe(
          Layer.provide(Layer.mergeAll(Layer.succeed(NodeControl, control), Layer.succeed(Messenger, chat.service)))
        ),
        serverScope
      )
      const api = Context.get(context, ControlServer.ControlServer).address
      yield* writeRuntimeInfoScoped(dataDir, { nodeId: SELF, listen: { host: "127.0.0.1", port: 4000 }, api })
      const events = yield* (yield* makeControlClient(dataDir)).events
      const drained = yield* Effect.fork(Stream.runDrain(events).pipe(Effect.either))
      // Without ending the stream first, closing would wait for the client forever (the test would time out).
      yield* Scope.close(serverScope, Exit.void)
      expect((yield* Fiber.join(drained))._tag).toBe("Right")
    }))

  live("history pages back from a cursor, and a malformed cursor is a 400", () =>
    Effect.gen(function*() {
      const node = yield* startChatNode()
      const client = yield* clientFor(node)
      yield* client.register("alice")
      // Three messages: the test chat's outbox quota.
      for (const text of ["one", "two", "three"]) yield* client.send("bob", text)
      const latest = yield* client.history("bob", { limit: 2 })
      expect(latest.map((entry) => entry.text)).toEqual(["two", "three"])
      const oldest = latest[0]
      if (oldest === undefined) return yield* Effect.die(new Error("no history"))
      const older = yield* client.history("bob", { limit: 10, before: oldest })
      expect(older.map((entry) => entry.text)).toEqual(["one"])
      expect(yield* client.history("bob", { limit: 10, before: older[0] ?? oldest })).toEqual([])
      const cursor = formatHistoryCursor(latest[1] ?? oldest)
      const raw = yield* jsonRequest(node, "GET", `/v1/conversations/bob/messages?before=${encodeURIComponent(cursor)}&limit=1`)
      expect(raw).toMatchObject({ status: 200, body: [{ text: "two" }] })
      for (const bad of ["yesterday", "1-2-", "-1-2-x", `1-2-${"x".repeat(200)}`]) {
        const answer = yield* jsonRequest(node, "GET", `/v1/conversations/bob/messages?before=${encodeURIComponent(bad)}`)
        expect(answer.status, bad).toBe(400)
        expect(answer.body).toMatchObject({ error: { _tag: "BadRequest", message: expect.stringMatching(/malformed history query/) } })
      }
    }))
})

describe("names, fingerprints and contacts", () => {
  live("whois and register decode the new errors as the same typed errors, with their statuses", () =>
    Effect.gen(function*() {
      const node = yield* startNode
      const client = yield* clientFor(node)

      const conflict = yield* Effect.flip(client.whois("twins"))
      expect(conflict).toBeInstanceOf(NameConflict)
      expect(conflict).toEqual(twinsConflict)
      expect(conflict.message).toContain(`twins@${grouped(keyOf("d1"))}`)
      expect(conflict.message).toContain(`twins@${grouped(keyOf("d2"))}`)

      const lonely = yield* Effect.flip(client.whois("lonely"))
      expect(lonely).toBeInstanceOf(NotConnected)
      expect(lonely.message).toBe(notConnected.message)
      const lonelyRegister = yield* Effect.flip(client.register("lonely"))
      expect(lonelyRegister).toBeInstanceOf(NotConnected)

      // Not found, not connected and a conflict stay three different errors.
      const missing = yield* Effect.flip(client.whois("nobody"))
      expect([missing._tag, lonely._tag, conflict._tag]).toEqual(["UserNotFound", "NotConnected", "NameConflict"])

      const auth = { authorization: `Bearer ${node.token}` }
      const statusOf = (name: string) =>
        Effect.map(rawRequest(`${node.baseUrl}${ControlServer.ControlPaths.whois(name)}`, { headers: auth }), (answer) => answer.status)
      expect(yield* statusOf("twins")).toBe(409)
      expect(yield* statusOf("lonely")).toBe(503)
      expect(yield* statusOf("taken@1a2b")).toBe(400)
      expect(yield* statusOf(`taken@${grouped(OWN_KEY)}`)).toBe(409)
    }))

  live("name@fingerprint passes through whois and send intact", () =>
    Effect.gen(function*() {
      const node = yield* startChatNode()
      const client = yield* clientFor(node)
      yield* client.register("alice")

      // `@` is percent-encoded in the path and decoded by the server; grouped, compact and upper case all work.
      const exact = yield* client.whois(`taken@${ANSWER_FINGERPRINT}`)
      expect(exact).toEqual(answerFor("taken" as Username, OTHER))
      expect(yield* client.whois(`taken@${ANSWER_FINGERPRINT.replace(/-/g, "").toUpperCase()}`)).toEqual(exact)

      const wrong = yield* Effect.flip(client.whois(`taken@${grouped(OWN_KEY)}`))
      expect(wrong).toBeInstanceOf(FingerprintMismatch)
      expect(wrong._tag === "FingerprintMismatch" && formatFingerprint(wrong.requested)).toBe(grouped(OWN_KEY))
      const invalid = yield* Effect.flip(client.whois("taken@xyz"))
      expect(invalid._tag).toBe("InvalidFingerprint")

      const sent = yield* client.send(`bob@${grouped(BOB_KEY)}`, "exactly you")
      expect(sent).toMatchObject({ from: "alice", to: "bob" })
      const mismatch = yield* Effect.flip(client.send(`bob@${grouped(BOB_NEW_KEY)}`, "not you"))
      expect(mismatch).toBeInstanceOf(FingerprintMismatch)
    }))

  live("send reports a changed key, a conflict and a node without peers as typed errors", () =>
    Effect.gen(function*() {
      const node = yield* startChatNode()
      const client = yield* clientFor(node)
      yield* client.register("alice")

      const changed = yield* Effect.flip(client.send("changed", "hi"))
      expect(changed).toBeInstanceOf(KeyChanged)
      expect(changed).toEqual(keyChanged)
      expect(changed.message).toContain(`peerchat trust changed --key ${grouped(BOB_NEW_KEY)}`)
      expect((yield* Effect.flip(client.send("twins", "hi")))).toEqual(twinsConflict)
      expect((yield* Effect.flip(client.send("lonely", "hi")))).toBeInstanceOf(NotConnected)

      const post = (to: string) => Effect.map(jsonRequest(node, "POST", "/v1/messages", { to, text: "hi" }), (answer) => answer.status)
      expect(yield* post("changed")).toBe(409)
      expect(yield* post("twins")).toBe(409)
      expect(yield* post("lonely")).toBe(503)
      expect(yield* post("nobody")).toBe(404)
      // Nothing of these reached the outbox.
      expect(yield* client.inbox).toEqual([])
    }))

  live("id, verify, contacts and trust round trip through the client", () =>
    Effect.gen(function*() {
      const node = yield* startChatNode()
      const client = yield* clientFor(node)

      expect(yield* client.id).toEqual({ username: null, fingerprint: grouped(OWN_KEY), nameRef: null })
      expect((yield* Effect.flip(client.verify("bob", false)))._tag).toBe("NotRegistered")
      yield* client.register("alice")
      expect(yield* client.id).toEqual({ username: "alice", fingerprint: grouped(OWN_KEY), nameRef: `alice@${grouped(OWN_KEY)}` })
      expect(yield* client.contacts).toEqual([])

      const expectedNumber = formatSafetyNumber(
        safetyNumber({ username: "alice" as Username, signingKey: OWN_KEY }, { username: "bob" as Username, signingKey: BOB_KEY })
      )
      const shown = yield* client.verify("Bob", false)
      expect(shown).toEqual({
        you: { username: "alice", fingerprint: grouped(OWN_KEY) },
        contact: { username: "bob", fingerprint: grouped(BOB_KEY) },
        safetyNumber: expectedNumber,
        pin: { username: "bob", fingerprint: grouped(BOB_KEY), signingKey: BOB_KEY, pinnedAt: PINNED_AT, source: "first-use" },
        confirmed: false
      })
      expect(shown.safetyNumber).toMatch(/^[0-9]{5}( [0-9]{5}){11}$/)

      const confirmed = yield* client.verify(`bob@${grouped(BOB_KEY)}`, true)
      expect(confirmed).toMatchObject({ confirmed: true, pin: { source: "verified" }, safetyNumber: expectedNumber })
      const verifiedPin = { username: "bob", fingerprint: grouped(BOB_KEY), signingKey: BOB_KEY, pinnedAt: PINNED_AT, source: "verified" }
      expect(yield* client.contacts).toEqual([verifiedPin])

      // Accepting bob's new key on purpose says what it replaced.
      const trusted = yield* client.trust("bob", grouped(BOB_NEW_KEY))
      expect(trusted).toEqual({
        pin: { username: "bob", fingerprint: grouped(BOB_NEW_KEY), signingKey: BOB_NEW_KEY, pinnedAt: PINNED_AT + 1000, source: "trusted" },
        previous: verifiedPin
      })
      expect((yield* client.contacts).map((pin) => pin.fingerprint)).toEqual([grouped(BOB_NEW_KEY)])
      const fresh = yield* client.trust("carol", fingerprintOf(OTHERS_KEY))
      expect(fresh.previous).toBeNull()
    }))

  live("the contact routes answer every error typed, with the documented statuses", () =>
    Effect.gen(function*() {
      const node = yield* startChatNode()
      const client = yield* clientFor(node)
      yield* client.register("alice")

      expect(yield* Effect.flip(client.verify("twins", false))).toEqual(twinsConflict)
      expect(yield* Effect.flip(client.verify("changed", false))).toEqual(keyChanged)
      expect((yield* Effect.flip(client.verify("lonely", false)))._tag).toBe("NotConnected")
      expect((yield* Effect.flip(client.verify("nobody", false)))._tag).toBe("UserNotFound")
      expect((yield* Effect.flip(client.verify("bob@123", false)))._tag).toBe("InvalidFingerprint")
      expect((yield* Effect.flip(client.trust("bob", grouped(OWN_KEY))))._tag).toBe("FingerprintMismatch")
      expect((yield* Effect.flip(client.trust("bob", "not a key")))._tag).toBe("InvalidFingerprint")
      expect((yield* Effect.flip(client.trust("b!", grouped(BOB_KEY))))._tag).toBe("InvalidUsername")
      const full = yield* Effect.flip(client.trust("full", grouped(OTHERS_KEY)))
      expect(full).toBeInstanceOf(PinsFull)
      expect((yield* Effect.flip(client.trust("bob", "f".repeat(300))))._tag).toBe("InvalidFingerprint")

      const verify = (body: unknown) => Effect.map(jsonRequest(node, "POST", "/v1/contacts/verify", body), (answer) => answer.status)
      const trust = (body: unknown) => Effect.map(jsonRequest(node, "POST", "/v1/contacts/trust", body), (answer) => answer.status)
      expect(yield* verify({ name: "twins", confirm: false })).toBe(409)
      expect(yield* verify({ name: "changed", confirm: false })).toBe(409)
      expect(yield* verify({ name: "lonely", confirm: false })).toBe(503)
      expect(yield* verify({ name: "nobody", confirm: false })).toBe(404)
      expect(yield* verify({ name: "x", confirm: false })).toBe(400)
      expect(yield* trust({ name: "bob", fingerprint: grouped(OWN_KEY) })).toBe(409)
      expect(yield* trust({ name: "full", fingerprint: grouped(OTHERS_KEY) })).toBe(507)
      // A malformed body is a protocol error, not a domain one.
      const malformed = yield* jsonRequest(node, "POST", "/v1/contacts/verify", { name: "bob" })
      expect(malformed.status).toBe(400)
      expect(malformed.body).toMatchObject({ error: { _tag: "BadRequest", message: expect.stringContaining("verify request") } })
      expect((yield* jsonRequest(node, "POST", "/v1/contacts/trust", { name: "bob" })).status).toBe(400)
    }))

  live("without chat, or without contacts, the contact routes answer ChatUnavailable", () =>
    Effect.gen(function*() {
      for (const node of [yield* startNode, yield* startNodeWith({ chat: true, contacts: false })]) {
        const client = yield* clientFor(node)
        const failures = [
          yield* Effect.flip(client.id),
          yield* Effect.flip(client.contacts),
          yield* Effect.flip(client.verify("bob", false)),
          yield* Effect.flip(client.trust("bob", grouped(BOB_KEY)))
        ]
        for (const failure of failures) expect(failure).toBeInstanceOf(ChatUnavailable)
        expect((yield* jsonRequest(node, "GET", "/v1/id")).status).toBe(503)
      }
    }))
})
