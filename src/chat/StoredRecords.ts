/**
 * The DHT records a node stores for the directory, kept in the chat store so
 * they survive a restart: a `RecordStore` over `ChatStore`'s record rows.
 * Each row holds a record as the JSON of the `UserRecord` schema and expires
 * when the record does. Writes follow the same acceptance rules and bound as
 * the in-memory store (`putUserRecord`, with `NodeConfig.maxStoredRecords`;
 * the chat store's own `maxRecords` refuses too, whichever is lower). The
 * storage never fails the node: a row that does not decode is logged and
 * treated as absent (a new record for its key replaces it), a failed read is
 * logged and reads as nothing, and a failed write is logged and refused to
 * the caller as `RequestRefused` (Overloaded), as a busy node would.
 *
 * @since 0.1.0
 */
import { Array as Arr, Effect, Layer, Option, ParseResult, Schema } from "effect"
import type { Key } from "../core/Id.js"
import { UserRecord } from "../core/UserRecord.js"
import { rivalSlotKey } from "../core/NameResolution.js"
import { userKey } from "../core/Username.js"
import type { Signatures } from "../node/Identity.js"
import type { NodeConfig } from "../node/NodeConfig.js"
import { RequestRefused } from "../node/Protocol.js"
import { type ClaimCheckGate, putUserRecord, RecordStore, type RecordStoreService, recordRules } from "../node/RecordStore.js"
import { ChatStore, type StorageError, type StoredRecord } from "./ChatStore.js"

const RecordJson = Schema.parseJson(UserRecord)
const encodeRecord = Schema.encode(RecordJson)
const decodeRecord = Schema.decode(RecordJson)

/** Logs a storage failure of `operation` as a warning and succeeds with `fallback`. */
const orLogged = <A>(operation: string, fallback: A) => (error: StorageError): Effect.Effect<A> =>
  Effect.as(Effect.logWarning(`record store: ${operation} failed: ${error.message}`), fallback)

/** The record of a row, or none (logged) when the row does not decode. */
const recordOfRow = (row: StoredRecord): Effect.Effect<Option.Option<UserRecord>> =>
  decodeRecord(row.recordJson).pipe(
    Effect.map(Option.some),
    Effect.catchAll((error) =>
      Effect.as(
        Effect.logWarning(
          `record store: ignoring the stored record under ${row.key.slice(0, 16)}…, which does not decode: ` +
            ParseResult.TreeFormatter.formatErrorSync(error)
        ),
        Option.none<UserRecord>()
      )
    )
  )

/** A record store over the chat store; bound: `maxStoredRecords` (and the chat store's `maxRecords`). */
export const make: Effect.Effect<RecordStoreService, never, ChatStore | NodeConfig | Signatures> = Effect.gen(function*() {
  const chat = yield* ChatStore
  const rules = yield* recordRules
  // A put reads, decides, then writes in separate statements: puts take turns, so two
  // concurrent updates of one name cannot both pass the sequence check.
  const writeLock = yield* Effect.makeSemaphore(1)

  const get = (key: Key, now: number): Effect.Effect<Option.Option<UserRecord>, StorageError> =>
    chat.getRecord(key, now).pipe(
      Effect.flatMap(Option.match({ onNone: () => Effect.succeed(Option.none()), onSome: recordOfRow }))
    )

  // Counting every table is cheap next to reading every record back, and only new keys ask.
  const size = Effect.map(chat.stats, (stats) => stats.records)

  /** Stores `record` in the slot `key` (its name's own, or the name's rival slot). */
  const putAt = (key: Key, record: UserRecord, now: number, gate: ClaimCheckGate | undefined) =>
    Effect.gen(function*() {
      const json = yield* encodeRecord(record).pipe(
        Effect.mapError((error) =>
          new RequestRefused({ reason: "NotAccepted", detail: `the record does not encode: ${error.message}`.slice(0, 500) })
        )
      )
      return yield* putUserRecord(record, now, rules, {
        stored: Effect.map(get(key, now), Option.getOrUndefined),
        size,
        keyNames: chat.countRecordsOf(record.signingKey, now, key),
        expire: chat.expireRecords(now),
        write: chat.putRecord(key, json, record.expiresAt, record.signingKey)
      }, gate)
    }).pipe(
      writeLock.withPermits(1),
      Effect.catchTags({
        RecordsFull: (full) => Effect.fail(new RequestRefused({ reason: "QuotaExceeded", detail: full.message })),
        StorageError: (error) =>
          Effect.zipRight(
            Effect.logError(`record store: storing the record of ${JSON.stringify(record.username)} failed: ${error.message}`),
            Effect.fail(new RequestRefused({ reason: "Overloaded", detail: "this node could not store the record" }))
          )
      })
    )

  return {
    get: (key, now) => Effect.catchAll(get(key, now), orLogged("get", Option.none())),
    getRival: (key, now) => Effect.catchAll(get(rivalSlotKey(key), now), orLogged("get", Option.none())),
    put: (record, now, gate) => putAt(userKey(record.username), record, now, gate),
    putRival: (record, now, gate) => putAt(rivalSlotKey(userKey(record.username)), record, now, gate),
    expire: (now) => Effect.catchAll(chat.expireRecords(now), orLogged("expire", 0)),
    remove: (record) =>
      writeLock.withPermits(1)(Effect.gen(function*() {
        const own = userKey(record.username)
        for (const key of [own, rivalSlotKey(own)]) {
          const row = yield* chat.getRecord(key, 0)
          const held = Option.isSome(row) ? yield* recordOfRow(row.value) : Option.none<UserRecord>()
          if (Option.isSome(held) && held.value.signingKey === record.signingKey && held.value.sequence === record.sequence) {
            return yield* chat.removeRecord(key)
          }
        }
        return false
      })).pipe(Effect.catchAll(orLogged("remove", false))),
    all: chat.allRecords.pipe(
      Effect.flatMap((rows) => Effect.forEach(rows, recordOfRow)),
      Effect.map(Arr.getSomes),
      Effect.catchAll(orLogged("all", []))
    ),
    size: Effect.catchAll(size, orLogged("size", 0))
  }
})

/** The chat store's records as the node's `RecordStore`. */
export const layer: Layer.Layer<RecordStore, never, ChatStore | NodeConfig | Signatures> = Layer.effect(RecordStore, make)
