/**
 * The control API over real loopback sockets: the HTTP server and client are
 * the units under test, so the node behind them is a small in-memory fake.
 * Tests run with the live clock (`it.scopedLive`), because socket timeouts
 * never fire under the TestClock.
 */
import { FetchHttpClient, type FileSystem, type HttpClient, type Path } from "@effect/platform"
import { NodeContext, NodeHttpClient } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Either, Layer, Logger, LogLevel, Option, Ref, type Scope } from "effect"
import { mkdtemp, rm, writeFile } from "node:fs/promises"
import { request as httpRequest } from "node:http"
import { createServer } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { type Address, formatAddress } from "../../src/core/Contact.js"
import type { NodeId } from "../../src/core/Id.js"
import { parseUsername, type Username } from "../../src/core/Username.js"
import {
  AlreadyRegistered,
  NameTaken,
  NodeControl,
  type NodeStatus,
  PublishFailed,
  UserNotFound,
  type WhoisAnswer
} from "../../src/node/Control.js"
import { type ControlClientOptions, makeControlClient } from "../../src/platform/ControlClient.js"
import * as ControlServer from "../../src/platform/ControlServer.js"
import {
  API_TOKEN_FILE,
  type ApiToken,
  loadOrCreateApiToken,
  writeRuntimeInfoScoped
} from "../../src/platform/RuntimeFiles.js"

const SELF = "11".repeat(32) as NodeId
const OTHER = "22".repeat(32) as NodeId
const PEER = "33".repeat(32) as NodeId

const STATUS: NodeStatus = {
  nodeId: SELF,
  listen: "127.0.0.1:4000",
  username: null,
  peers: 1,
  bootstrap: { _tag: "Joining", attempts: 2, lastError: "connection refused", nextAttemptAt: 1_700_000_000_000 }
}

const answerFor = (username: Username, nodeId: NodeId): WhoisAnswer => ({
  username,
  nodeId,
  address: "127.0.0.1:4000",
  addresses: ["127.0.0.1:4000", "[::1]:4000"],
  sequence: 1,
  expiresAt: 1_800_000_000_000
})

/**
 * An in-memory node: one name per node; "taken" belongs to someone else,
 * "offline" cannot be published, "slow" never answers, "crash" is a defect.
 */
const makeFakeControl = Effect.gen(function*() {
  const registered = yield* Ref.make(Option.none<Username>())
  const service: typeof NodeControl.Service = {
    status: Effect.map(Ref.get(registered), (name) => ({ ...STATUS, username: Option.getOrNull(name) })),
    peers: Effect.succeed([{ nodeId: PEER, address: { host: "::1", port: 4001 } }]),
    register: (input) =>
      Effect.gen(function*() {
        const username = yield* parseUsername(input)
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
        const username = yield* parseUsername(input)
        if (username === "slow") return yield* Effect.never
        if (username === "crash") return yield* Effect.die(new Error("boom"))
        if (username === "taken") return answerFor(username, OTHER)
        const mine = yield* Ref.get(registered)
        if (Option.isSome(mine) && mine.value === username) return answerFor(username, SELF)
        return yield* new UserNotFound({ username })
      })
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

/** What a node does on start: token, control API on an ephemeral loopback port, then node.json. */
const startNode: Effect.Effect<RunningNode, unknown, Env> = Effect.gen(function*() {
  const dataDir = yield* tempDataDir
  const token = yield* loadOrCreateApiToken(dataDir)
  const control = yield* makeFakeControl
  const context = yield* Layer.build(
    ControlServer.layer({ host: "127.0.0.1", port: 0, token }).pipe(Layer.provide(Layer.succeed(NodeControl, control)))
  )
  const api = Context.get(context, ControlServer.ControlServer).address
  yield* writeRuntimeInfoScoped(dataDir, { nodeId: SELF, listen: { host: "127.0.0.1", port: 4000 }, api })
  return { dataDir, token, api, baseUrl: `http://${formatAddress(api)}` }
})

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

      expect(yield* client.status).toEqual(STATUS)
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
        expect(yield* client.status).toEqual(STATUS)
      }
      const huge = yield* post(JSON.stringify({ username: "z".repeat(ControlServer.MAX_BODY_BYTES) }))
      expect(huge.status).toBe(413)
      expect(huge.body).toMatchObject({ error: { _tag: "PayloadTooLarge" } })
      expect(yield* client.status).toEqual(STATUS)
      const chunked = yield* chunkedPost(`${node.baseUrl}/v1/register`, node.token, Array.from({ length: 40 }, () => "x".repeat(1000)))
      expect(chunked.status).toBe(411)
      expect(chunked.body).toMatchObject({ error: { _tag: "LengthRequired" } })
      expect(yield* client.status).toEqual(STATUS)
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
      expect(yield* client.status).toEqual(STATUS)
    }).pipe(Logger.withMinimumLogLevel(LogLevel.None)))

  live("a call that takes too long fails with a typed timeout, and the server keeps serving", () =>
    Effect.gen(function*() {
      const node = yield* startNode
      const client = yield* clientFor(node, { networkTimeout: "300 millis" })
      const error = yield* Effect.flip(client.whois("slow"))
      expect(error._tag === "ControlRequestFailed" && error.reason).toBe("Timeout")
      expect(error.message).toContain(formatAddress(node.api))
      expect(yield* client.status).toEqual(STATUS)
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
    yield* loadOrCreateApiToken(dataDir)
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
        const token = yield* loadOrCreateApiToken(dataDir)
        const control = yield* makeFakeControl
        const context = yield* Layer.build(
          ControlServer.layer({ host: "127.0.0.1", port: 0, token }).pipe(Layer.provide(Layer.succeed(NodeControl, control)))
        )
        const api = Context.get(context, ControlServer.ControlServer).address
        yield* writeRuntimeInfoScoped(dataDir, { nodeId: SELF, listen: { host: "127.0.0.1", port: 4000 }, api })
        expect(yield* (yield* makeControlClient(dataDir)).status).toEqual(STATUS)
      }))
      const error = yield* Effect.flip(makeControlClient(dataDir))
      expect(error._tag).toBe("NodeNotRunning")
    }))

  live("the server refuses a non-loopback host and reports a busy port", () =>
    Effect.gen(function*() {
      const dataDir = yield* tempDataDir
      const token = yield* loadOrCreateApiToken(dataDir)
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
