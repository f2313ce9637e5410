/**
 * The schemas of each request of an `RpcGroup`, as both halves of the RPC
 * adapter compile them (`RpcCalls.ts`, `RpcServing.ts`): the payload, the
 * success, and the whole exit (`Rpc.exitSchema`: success, declared
 * failures, defect). Typed loosely, since each half picks a request's codec
 * by the tag it read off the wire; the protocol's schemas need no services,
 * so the synchronous `Schema` forms apply to all of them.
 *
 * @since 0.6.0
 */
import { Rpc, type RpcGroup } from "@effect/rpc"
import type { Exit, Schema } from "effect"

/** One request's schemas, loosely typed. */
export interface RequestSchemas {
  readonly tag: string
  readonly payload: Schema.Schema<unknown, unknown>
  readonly success: Schema.Schema<unknown, unknown>
  readonly exit: Schema.Schema<Exit.Exit<unknown, unknown>, unknown>
}

/** The schemas of every request of `group`. */
export const requestSchemasOf = <R extends Rpc.Any>(group: RpcGroup.RpcGroup<R>): ReadonlyArray<RequestSchemas> =>
  Array.from(group.requests.values(), (request) => {
    // Every member of a group has the props; the group's type only keeps the narrower `Any`.
    const rpc = request as unknown as Rpc.AnyWithProps
    return {
      tag: rpc._tag,
      payload: rpc.payloadSchema as Schema.Schema<unknown, unknown>,
      success: rpc.successSchema as Schema.Schema<unknown, unknown>,
      exit: Rpc.exitSchema(request) as unknown as Schema.Schema<Exit.Exit<unknown, unknown>, unknown>
    }
  })
