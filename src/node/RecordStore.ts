/**
 * The user records this node stores for the directory, keyed by user key.
 * Every write goes through the core's acceptance rules (signature, node id,
 * freshness, bounded lifetime, monotonic sequence, no takeover of a live
 * name), so a store never holds a record it could not justify. The store is
 * bounded: beyond `maxStoredRecords` live keys it refuses new names loudly
 * rather than evicting a live record. The interface is storage-agnostic
 * (every method returns an Effect); this module provides the in-memory layer,
 * and a persistent one can implement the same Tag.
 *
 * @since 0.1.0
 */
import { Context, Effect, Layer, Option } from "effect"
import type { Key } from "../core/Id.js"
import {
  acceptUserRecord,
  isRecordLive,
  type RecordAcceptance,
  type RecordRejected,
  type UserRecord
} from "../core/UserRecord.js"
import { userKey } from "../core/Username.js"
import { Signatures } from "./Identity.js"
import { NodeConfig } from "./NodeConfig.js"
import { RequestRefused } from "./Protocol.js"

/** What a record store offers. `now` is ms since the epoch, read by the caller from its `Clock`. */
export interface RecordStoreService {
  /** The live record stored under `key`, if any. */
  readonly get: (key: Key, now: number) => Effect.Effect<Option.Option<UserRecord>>
  /**
   * Stores `record` under `userKey(record.username)` if the acceptance rules
   * allow it against what is held there. A new key beyond `maxStoredRecords`
   * live records is refused with `RequestRefused` (QuotaExceeded).
   */
  readonly put: (record: UserRecord, now: number) => Effect.Effect<RecordAcceptance, RecordRejected | RequestRefused>
  /** Drops every record expired at `now`; returns how many were dropped. */
  readonly expire: (now: number) => Effect.Effect<number>
  /** Every record held (expired ones included until the next `expire`). */
  readonly all: Effect.Effect<ReadonlyArray<UserRecord>>
  /** Number of records held. */
  readonly size: Effect.Effect<number>
}

/** Storage of the user records this node holds for the directory. */
export class RecordStore extends Context.Tag("peerchat/RecordStore")<RecordStore, RecordStoreService>() {
  /** An in-memory store; bound: `maxStoredRecords` records. */
  static readonly makeMemory: Effect.Effect<RecordStoreService, never, NodeConfig | Signatures> = Effect.gen(function*() {
    const config = yield* NodeConfig
    const { verify } = yield* Signatures
    const records = new Map<Key, UserRecord>()

    const expire = (now: number): number => {
      let dropped = 0
      for (const [key, record] of records) {
        if (!isRecordLive(record, now)) {
          records.delete(key)
          dropped++
        }
      }
      return dropped
    }

    return {
      get: (key, now) =>
        Effect.sync(() => {
          const record = records.get(key)
          return record !== undefined && isRecordLive(record, now) ? Option.some(record) : Option.none()
        }),
      put: (record, now) =>
        Effect.suspend((): Effect.Effect<RecordAcceptance, RecordRejected | RequestRefused> => {
          const key = userKey(record.username)
          const stored = records.get(key)
          const decision = acceptUserRecord({ incoming: record, stored, now, verify, limits: config.recordLimits })
          if (decision._tag === "Left") return Effect.fail(decision.left)
          if (decision.right === "Unchanged") return Effect.succeed(decision.right)
          // Make room from expired records before refusing a new name.
          if (stored === undefined && records.size >= config.maxStoredRecords && expire(now) === 0) {
            return Effect.fail(
              new RequestRefused({
                reason: "QuotaExceeded",
                detail: `this node already stores ${records.size} live records (its limit)`
              })
            )
          }
          records.set(key, record)
          return Effect.succeed(decision.right)
        }),
      expire: (now) => Effect.sync(() => expire(now)),
      all: Effect.sync(() => Array.from(records.values())),
      size: Effect.sync(() => records.size)
    }
  })

  /** The in-memory store as a layer. */
  static readonly layerMemory: Layer.Layer<RecordStore, never, NodeConfig | Signatures> = Layer.effect(
    RecordStore,
    RecordStore.makeMemory
  )
}
