/**
 * The server half of the RPC adapter: the requests of one inbound
 * connection that are in their handlers, each answered by id when its
 * handler ends. It speaks `@effect/rpc`'s wire messages with the schemas of
 * the protocol's `RpcGroup` (a payload decoded with its request's schema, an
 * `Exit` encoded with its exit schema), so the client half (`RpcCalls.ts`)
 * and every request definition stay `@effect/rpc`'s.
 *
 * Why not the stock `RpcServer`: it runs a fiber per request inside a server
 * fiber per client with a context, a middleware chain and a mailbox round
 * each way, which took more CPU than the handlers of the DHT's small
 * requests (see "`@effect/rpc`'s messages and schemas, our own dispatch" in
 * `docs/decisions.md`). Here a request is decoded once, its handler runs as
 * one fiber of the transport's, and the fiber's observer writes the answer.
 * The caller's authenticated identity is handed to the handler by the
 * transport with the request, from the connection it came on, never from
 * anything the peer sent.
 *
 * @since 0.6.0
 */
import type { Rpc, RpcGroup, RpcMessage } from "@effect/rpc"
import { type Effect, Either, Exit, type Fiber, FiberId, type ParseResult, Schema } from "effect"
import { requestSchemasOf } from "./RpcSchemas.js"

/** How one request kind arrives and its answer leaves: compiled once per protocol. */
export interface ServeCodec {
  /** The request from its encoded payload, every refinement checked. */
  readonly decodeRequest: (payload: unknown) => Either.Either<unknown, ParseResult.ParseError>
  /** The handler's exit, encoded with the request's success, failure and defect schemas. */
  readonly encodeExit: (exit: Exit.Exit<unknown, unknown>) => Either.Either<unknown, ParseResult.ParseError>
}

/** The codecs of every request of a group, by tag. */
export type ServeCodecs = ReadonlyMap<string, ServeCodec>

/**
 * Compiles the codecs of every request of `group` (once per protocol, not per
 * request). A success, nearly every answer, is encoded with the success
 * schema directly into the shape `Schema.Exit` gives it
 * (`{ "_tag": "Success", "value": … }`), without the exit schema's union
 * around it.
 */
export const serveCodecsOf = <R extends Rpc.Any>(group: RpcGroup.RpcGroup<R>): ServeCodecs =>
  new Map(requestSchemasOf(group).map(({ exit, payload, success, tag }): [string, ServeCodec] => {
    const encodeSuccess = Schema.encodeEither(success)
    const encodeAnyExit = Schema.encodeEither(exit)
    return [tag, {
      decodeRequest: Schema.decodeUnknownEither(payload),
      encodeExit: (result) =>
        Exit.isSuccess(result)
          ? Either.map(encodeSuccess(result.value), (value) => ({ _tag: "Success", value }))
          : encodeAnyExit(result)
    }]
  }))

/** Starts a handler as a fiber of the transport's (closed with it). */
export type RunHandler = (handling: Effect.Effect<unknown, unknown>) => Fiber.RuntimeFiber<unknown, unknown>

/** What a handler's end puts on the connection: its answer, or a failure in its place when that does not encode. */
const exitMessage = (requestId: string, codec: ServeCodec, exit: Exit.Exit<unknown, unknown>): RpcMessage.ResponseExitEncoded => {
  const encoded = codec.encodeExit(exit)
  return {
    _tag: "Exit",
    requestId,
    // An answer that does not match its own schema is this node's bug: the caller learns only that.
    exit: encoded._tag === "Right"
      ? encoded.right as RpcMessage.ResponseExitEncoded["exit"] // the encoded side of an Exit schema
      : { _tag: "Failure", cause: { _tag: "Die", defect: "the answer does not match its schema" } }
  }
}

/**
 * The requests of one connection in their handlers. Bound: the transport
 * reads no further request while `size` is at its per-connection cap.
 */
export class ServedCalls {
  private readonly running = new Map<string, Fiber.RuntimeFiber<unknown, unknown>>()

  constructor(
    private readonly run: RunHandler,
    /** Puts an answer on the connection (the transport handles frames too large and closed connections). */
    private readonly answer: (message: RpcMessage.ResponseExitEncoded) => void
  ) {}

  /** Requests in their handlers. */
  get size(): number {
    return this.running.size
  }

  /** Whether request `id` is in its handler (an id may not be reused while it is). */
  has(id: string): boolean {
    return this.running.has(id)
  }

  /** Runs `handling` for request `id`, answering with its exit when it ends (unless interrupted first). */
  start(id: string, codec: ServeCodec, handling: Effect.Effect<unknown, unknown>): void {
    const fiber = this.run(handling)
    this.running.set(id, fiber)
    fiber.addObserver((exit) => {
      // Interrupted by the caller or by the connection's end: nobody waits for an answer.
      if (this.running.get(id) !== fiber) return
      this.running.delete(id)
      this.answer(exitMessage(id, codec, exit))
    })
  }

  /** Stops request `id`'s handler: the caller gave up on it. */
  interrupt(id: string): void {
    const fiber = this.running.get(id)
    if (fiber === undefined) return
    this.running.delete(id)
    fiber.unsafeInterruptAsFork(FiberId.none)
  }

  /** Stops every handler: the connection ended. */
  interruptAll(): void {
    const fibers = Array.from(this.running.values())
    this.running.clear()
    for (const fiber of fibers) fiber.unsafeInterruptAsFork(FiberId.none)
  }
}
