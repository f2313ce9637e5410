/**
 * The RPC adapter's two halves on their own, joined by an in-memory wire
 * that passes every message through JSON as the TCP transport does: a call
 * (`PendingCalls`) and the requests in handlers (`ServedCalls`). What the
 * TCP tests cannot pin down without timing: the exact messages, which call
 * an answer completes, that an answer nobody asked for or one that does not
 * decode completes nobody's call, that a call past its deadline tells the
 * server (which stops the handler) and drops the late answer, and that the
 * answers are the bytes `@effect/rpc`'s exit schemas give.
 */
import { describe, expect, it } from "@effect/vitest"
import { Rpc, type RpcMessage } from "@effect/rpc"
import { Deferred, Effect, Either, Exit, Fiber, FiberSet, Schema } from "effect"
import { FindNode, Ping, RequestRefused } from "../../src/node/Protocol.js"
import { TransportError } from "../../src/node/Transport.js"
import { type CallMessage, callCodecsOf, PendingCalls } from "../../src/platform/RpcCalls.js"
import { type ServeCodec, ServedCalls, serveCodecsOf } from "../../src/platform/RpcServing.js"
import { WireRpcs } from "../../src/platform/WireProtocol.js"

const callCodecs = callCodecsOf(WireRpcs)
const serveCodecs = serveCodecsOf(WireRpcs)
const throughJson = <A>(value: A): unknown => JSON.parse(JSON.stringify(value))

const NODE_A = "a".repeat(64)
const contact = { nodeId: NODE_A, address: { host: "198.51.100.7", port: 4001 } }

/**
 * A client and a server joined in memory: what the client writes is kept in
 * `sent` and, unless `hold` says otherwise, handed to the server, whose
 * handler for a request is `handle`; its answers go back through JSON.
 */
const makeWire = (handle: (request: unknown) => Effect.Effect<unknown, unknown>) =>
  Effect.gen(function*() {
    const runFork = yield* FiberSet.makeRuntime<never>()
    const sent: Array<CallMessage> = []
    const answers: Array<RpcMessage.ResponseExitEncoded> = []
    let client: PendingCalls | undefined = undefined
    const server = new ServedCalls((handling) => runFork(handling), (answer) => {
      answers.push(answer)
      const message = throughJson(answer) as RpcMessage.ResponseExitEncoded
      client?.answer(message.requestId, message.exit)
    })
    client = new PendingCalls("198.51.100.7:4001", callCodecs, (message) => {
      sent.push(message)
      const received = throughJson(message) as CallMessage
      if (received._tag === "Interrupt") {
        server.interrupt(received.requestId)
      } else {
        const codec = serveCodecs.get(received.tag) as ServeCodec
        const request = codec.decodeRequest(received.payload)
        if (request._tag === "Left") throw new Error(`the test sent a request that does not decode: ${request.left.message}`)
        server.start(received.id, codec, handle(request.right))
      }
      return undefined
    })
    return { client, server, sent, answers }
  })

describe("RpcCalls and RpcServing: calls matched to answers by id", () => {
  it.scoped("a call goes out as @effect/rpc's Request and its answer comes back decoded with the request's schemas", () =>
    Effect.gen(function*() {
      const { answers, client, sent } = yield* makeWire((request) =>
        Effect.succeed(request instanceof FindNode ? { contacts: [contact] } : { observedHost: "203.0.113.9" })
      )
      const found = yield* client.call("FindNode", new FindNode({ target: NODE_A as FindNode["target"] }))
      expect(found).toEqual({ contacts: [contact] })
      expect(sent[0]).toEqual({
        _tag: "Request",
        id: "0",
        tag: "FindNode",
        payload: { _tag: "FindNode", target: NODE_A },
        headers: []
      })
      expect(yield* client.call("Ping", new Ping({}))).toEqual({ observedHost: "203.0.113.9" })
      expect(sent[1]).toMatchObject({ id: "1", tag: "Ping" })
      expect(answers.map((answer) => answer.requestId)).toEqual(["0", "1"])
      expect(client.size).toBe(0)
    }))

  it.scoped("typed failures arrive as the request's own errors; a handler that dies fails only its call, as Closed", () =>
    Effect.gen(function*() {
      const { client } = yield* makeWire((request) =>
        request instanceof Ping
          ? Effect.fail(new RequestRefused({ reason: "Overloaded", detail: "rate limit (PeerRate); retry in 7 ms" }))
          : Effect.dieMessage("a bug")
      )
      const refused = yield* Effect.flip(client.call("Ping", new Ping({})))
      expect(refused).toBeInstanceOf(RequestRefused)
      expect(refused).toMatchObject({ reason: "Overloaded", detail: "rate limit (PeerRate); retry in 7 ms" })
      const died = yield* Effect.flip(client.call("FindNode", new FindNode({ target: NODE_A as FindNode["target"] })))
      expect(died).toBeInstanceOf(TransportError)
      expect(died).toMatchObject({ reason: "Closed", detail: "the peer's handler failed" })
    }))

  it.scoped("ATTACK: answers nobody asked for complete no call; an answer that does not decode fails its call as a ProtocolViolation", () =>
    Effect.gen(function*() {
      const writes: Array<CallMessage> = []
      const client = new PendingCalls("peer", callCodecs, (message) => {
        writes.push(message)
        return undefined
      })
      const call = yield* Effect.fork(client.call("FindNode", new FindNode({ target: NODE_A as FindNode["target"] })))
      yield* Effect.yieldNow()
      // Ids the peer guesses, and the right id answered twice: only the first answer of a call counts.
      expect(client.answer("7", { _tag: "Success", value: { contacts: [] } })).toEqual({ _tag: "Unmatched" })
      expect(client.size).toBe(1)
      // A contact whose node id is not 64 hex digits: the call fails, the transport closes the connection.
      const forged = { _tag: "Success", value: { contacts: [{ ...contact, nodeId: "not-hex" }] } }
      const outcome = client.answer("0", forged)
      expect(outcome._tag).toBe("Malformed")
      expect(client.answer("0", { _tag: "Success", value: { contacts: [] } })).toEqual({ _tag: "Unmatched" })
      const failure = yield* Effect.flip(Fiber.join(call))
      expect(failure).toMatchObject({ _tag: "TransportError", reason: "ProtocolViolation" })
      expect((failure as TransportError).detail).toMatch(/^an answer does not decode: /)
      // A failure that is not one the request declares does not decode either.
      const other = yield* Effect.fork(client.call("Ping", new Ping({})))
      yield* Effect.yieldNow()
      const undeclared = { _tag: "Failure", cause: { _tag: "Fail", error: { _tag: "RecordRejected", reason: "x" } } }
      expect(client.answer("1", undeclared)._tag).toBe("Malformed")
      expect(yield* Effect.flip(Fiber.join(other))).toMatchObject({ reason: "ProtocolViolation" })
    }))

  it.live("a call past its deadline fails as Timeout and tells the server, which stops the handler; the late answer is dropped", () =>
    Effect.gen(function*() {
      const started = yield* Deferred.make<void>()
      const stopped = yield* Deferred.make<void>()
      const { answers, client, sent, server } = yield* makeWire(() =>
        Deferred.succeed(started, undefined).pipe(
          Effect.zipRight(Effect.never),
          Effect.onInterrupt(() => Deferred.succeed(stopped, undefined))
        )
      )
      const deadline = { millis: 30, onTimeout: () => new TransportError({ peer: "peer", reason: "Timeout", detail: "no answer within 30ms" }) }
      const failure = yield* Effect.flip(client.call("Ping", new Ping({}), deadline))
      expect(failure).toMatchObject({ reason: "Timeout", detail: "no answer within 30ms" })
      yield* Deferred.await(started)
      yield* Deferred.await(stopped)
      expect(sent.map((message) => message._tag)).toEqual(["Request", "Interrupt"])
      expect(server.size).toBe(0)
      expect(answers).toEqual([])
      // The answer arriving late anyway completes nothing.
      expect(client.answer("0", { _tag: "Success", value: { observedHost: "" } })).toEqual({ _tag: "Unmatched" })
    }).pipe(Effect.scoped))

  it.scoped("interrupting a call tells the server, which stops the handler and sends no answer", () =>
    Effect.gen(function*() {
      const started = yield* Deferred.make<void>()
      const stopped = yield* Deferred.make<void>()
      const { answers, client, sent } = yield* makeWire(() =>
        Deferred.succeed(started, undefined).pipe(
          Effect.zipRight(Effect.never),
          Effect.onInterrupt(() => Deferred.succeed(stopped, undefined))
        )
      )
      const call = yield* Effect.fork(client.call("Ping", new Ping({})))
      yield* Deferred.await(started)
      yield* Fiber.interrupt(call)
      yield* Deferred.await(stopped)
      expect(sent.map((message) => message._tag)).toEqual(["Request", "Interrupt"])
      expect(answers).toEqual([])
      expect(client.size).toBe(0)
    }))

  it.scoped("the connection's end fails every call in flight and every later one; a refused write fails its call at once", () =>
    Effect.gen(function*() {
      let refuse: TransportError | undefined = undefined
      const client = new PendingCalls("peer", callCodecs, () => refuse)
      const first = yield* Effect.fork(client.call("Ping", new Ping({})))
      const second = yield* Effect.fork(client.call("Ping", new Ping({})))
      yield* Effect.yieldNow()
      expect(client.size).toBe(2)
      const gone = new TransportError({ peer: "peer", reason: "Closed", detail: "the peer hung up" })
      client.failAll(gone)
      expect(yield* Effect.flip(Fiber.join(first))).toBe(gone)
      expect(yield* Effect.flip(Fiber.join(second))).toBe(gone)
      expect(yield* Effect.flip(client.call("Ping", new Ping({})))).toBe(gone)

      const tooLarge = new TransportError({ peer: "peer", reason: "ProtocolViolation", detail: "the request exceeds the frame limit" })
      refuse = tooLarge
      const fresh = new PendingCalls("peer", callCodecs, () => refuse)
      expect(yield* Effect.flip(fresh.call("Ping", new Ping({})))).toBe(tooLarge)
      expect(fresh.size).toBe(0)
    }))

  it.scoped("ServedCalls: interruptAll stops every handler of a connection that ended, and none of them answers", () =>
    Effect.gen(function*() {
      const runFork = yield* FiberSet.makeRuntime<never>()
      const answers: Array<RpcMessage.ResponseExitEncoded> = []
      const served = new ServedCalls((handling) => runFork(handling), (answer) => answers.push(answer))
      const stopped = yield* Deferred.make<void>()
      const codec = serveCodecs.get("Ping") as ServeCodec
      let stops = 0
      const handler = Effect.never.pipe(Effect.onInterrupt(() =>
        Effect.suspend(() => ++stops === 2 ? Deferred.succeed(stopped, undefined) : Effect.void)
      ))
      served.start("1", codec, handler)
      served.start("2", codec, handler)
      expect([served.size, served.has("1"), served.has("3")]).toEqual([2, true, false])
      served.interruptAll()
      yield* Deferred.await(stopped)
      expect(served.size).toBe(0)
      expect(answers).toEqual([])
    }))

  it("answers are the bytes @effect/rpc's exit schemas give, and decode as they would", () => {
    for (const [request, value] of [[Ping, { observedHost: "203.0.113.9" }], [FindNode, { contacts: [contact] }]] as const) {
      const rpc = Rpc.fromTaggedRequest(request)
      const exitSchema = Rpc.exitSchema(rpc) as unknown as Schema.Schema<Exit.Exit<unknown, unknown>, unknown>
      const codec = serveCodecs.get(request._tag) as ServeCodec
      const decodedValue = Schema.decodeUnknownSync(request.success as unknown as Schema.Schema<unknown, unknown>)(value)
      for (const exit of [Exit.succeed(decodedValue), Exit.fail(new RequestRefused({ reason: "Overloaded", detail: "busy" }))]) {
        const encoded = codec.encodeExit(exit)
        expect(encoded).toEqual(Either.right(Schema.encodeSync(exitSchema)(exit)))
        const decoded = callCodecs.get(request._tag)?.decodeExit(throughJson(Schema.encodeSync(exitSchema)(exit)))
        expect(decoded?._tag).toBe("Right")
        expect(decoded?._tag === "Right" ? decoded.right : undefined).toEqual(Schema.decodeUnknownSync(exitSchema)(throughJson(Schema.encodeSync(exitSchema)(exit))))
      }
    }
  })
})
