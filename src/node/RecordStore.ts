/**
 * The user records this node stores for the directory, keyed by user key.
 * Every write goes through the core's acceptance rules (signature, node id,
 * freshness, bounded lifetime, monotonic sequence, no takeover of a live
 * name), so a store never holds a record it could not justify. The store is
 * bounded: beyond `maxStoredRecords` live keys it refuses new names loudly
 * rather than evicting a live record, and one signing key holds at most
 * `maxNamesPerKey` names in it (rival claims included), so nobody fills it
 * with a handful of keys (core `StorageQuota`). The interface is storage-agnostic
 * (every method returns an Effect) and `putUserRecord` is the one write
 * every implementation shares; this module provides the in-memory layer, and
 * `src/chat/StoredRecords.ts` the durable one over the chat store. A write
 * from a peer passes a `ClaimCheckGate`, so the claim's hash is evaluated
 * only within the node's claim-check budget, and only after every cheaper
 * check (a record identical to the one held costs no check at all).
 *
 * @since 0.1.0
 */
import { Context, Effect, Layer, Option } from "effect"
import type { Key } from "../core/Id.js"
import { bytesEqual } from "../core/Bytes.js"
import {
  acceptUserRecord,
  type ClaimRules,
  isRecordLive,
  type RecordAcceptance,
  type RecordLimits,
  type RecordRejected,
  type UserRecord,
  userRecordSigningBytes,
  type VerifySignature
} from "../core/UserRecord.js"
import { rivalSlotKey } from "../core/NameResolution.js"
import { recordQuotaBroken } from "../core/StorageQuota.js"
import { userKey } from "../core/Username.js"
import { Signatures } from "./Identity.js"
import { NodeConfig } from "./NodeConfig.js"
import { RequestRefused } from "./Protocol.js"

/**
 * Runs a pure check that may evaluate a name claim's memory-hard hash (given
 * the claim rules to check with) within a budget, failing with
 * `RequestRefused` (Overloaded) when the evaluation is over it. For records
 * that peers send, `DhtNode` passes one that draws on its claim-check budget
 * (core `ClaimCheckBudget`) on behalf of the caller.
 */
export type ClaimCheckGate = <A>(claim: ClaimRules, check: (claim: ClaimRules) => A) => Effect.Effect<A, RequestRefused>

/** What a record store offers. `now` is ms since the epoch, read by the caller from its `Clock`. */
export interface RecordStoreService {
  /** The live record stored under `key`, if any. */
  readonly get: (key: Key, now: number) => Effect.Effect<Option.Option<UserRecord>>
  /**
   * Stores `record` under `userKey(record.username)` if the acceptance rules
   * allow it against what is held there. A new key beyond `maxStoredRecords`
   * live records, or a name beyond the `maxNamesPerKey` its signing key
   * already holds here, is refused with `RequestRefused` (QuotaExceeded).
   * `gate`, when given, runs the claim's check (a record from a peer: see
   * `ClaimCheckGate`); without it the check runs unbudgeted (this node's own
   * records).
   */
  readonly put: (
    record: UserRecord,
    now: number,
    gate?: ClaimCheckGate
  ) => Effect.Effect<RecordAcceptance, RecordRejected | RequestRefused>
  /**
   * Keeps `record` as the one rival claim of its name: a valid record of
   * another key than the one the name's slot holds (two parts of a network
   * that each accepted a claim, or a squatter among the closest nodes). Readers
   * get both, so they see a conflict instead of whichever claim a storer met
   * first. One rival per name: a third key is refused (KeyConflict) while it lives.
   * `gate` as for `put`.
   */
  readonly putRival: (
    record: UserRecord,
    now: number,
    gate?: ClaimCheckGate
  ) => Effect.Effect<RecordAcceptance, RecordRejected | RequestRefused>
  /** The live rival claim kept for the name under `key`, if any. */
  readonly getRival: (key: Key, now: number) => Effect.Effect<Option.Option<UserRecord>>
  /** Drops every record expired at `now`; returns how many were dropped. */
  readonly expire: (now: number) => Effect.Effect<number>
  /**
   * Drops `record` from whichever slot of its name (its own or the rival
   * slot) holds exactly it (same signing key and sequence); true if it did.
   * For a node that handed a record to the nodes now closest to its key and
   * no longer belongs among them.
   */
  readonly remove: (record: UserRecord) => Effect.Effect<boolean>
  /** Every record held (expired ones included until the next `expire`). */
  readonly all: Effect.Effect<ReadonlyArray<UserRecord>>
  /** Number of records held. */
  readonly size: Effect.Effect<number>
}

/** What a record store checks a write against: signatures, record limits and its bound. */
export interface RecordRules {
  readonly verify: VerifySignature
  /** What a name claim must meet. */
  readonly claim: ClaimRules
  readonly limits: RecordLimits
  /** Most records held; a new key beyond it is refused (see `putUserRecord`). */
  readonly maxStoredRecords: number
  /** Most names one signing key holds (rival claims included); more are refused. */
  readonly maxNamesPerKey: number
}

/** The rules of this node's configuration. */
export const recordRules: Effect.Effect<RecordRules, never, NodeConfig | Signatures> = Effect.gen(function*() {
  const config = yield* NodeConfig
  const { claimHash, verify } = yield* Signatures
  return {
    verify,
    claim: { minDifficulty: config.minClaimDifficulty, hash: claimHash },
    limits: config.recordLimits,
    maxStoredRecords: config.maxStoredRecords,
    maxNamesPerKey: config.maxNamesPerKey
  }
})

/** The storage steps `putUserRecord` takes for one key; `E` is how the storage fails. */
export interface RecordSlot<E> {
  /** The record held under the key, if any (an expired one may be left out: it neither blocks the name nor counts as held). */
  readonly stored: Effect.Effect<UserRecord | undefined, E>
  /** How many records the store holds. */
  readonly size: Effect.Effect<number, E>
  /** How many live records of the incoming record's signing key the store holds in other slots. */
  readonly keyNames: Effect.Effect<number, E>
  /** Drops every record expired now; how many were dropped. */
  readonly expire: Effect.Effect<number, E>
  /** Stores the incoming record under the key, replacing what is there. */
  readonly write: Effect.Effect<void, E>
}

/**
 * Whether `incoming` is the very record `stored` holds, live, at a difficulty
 * still accepted: the same signed bytes and signature. Such a record was
 * checked in full when it was stored, so it is "Unchanged" without another
 * signature check or claim evaluation (a peer re-sending what a node holds,
 * as replication and republication do, costs a comparison).
 */
const isHeldAlready = (incoming: UserRecord, stored: UserRecord | undefined, now: number, rules: RecordRules): boolean =>
  stored !== undefined &&
  isRecordLive(stored, now) &&
  incoming.signature === stored.signature &&
  incoming.claim.difficulty >= rules.claim.minDifficulty &&
  bytesEqual(userRecordSigningBytes(incoming), userRecordSigningBytes(stored))

/**
 * The write every record store performs, whatever holds the records: a
 * record identical to the live one held is "Unchanged" at once; otherwise the
 * acceptance rules against the stored record (the claim's hash last, through
 * `gate` when given), then the quotas (core
 * `recordQuotaBroken`): the names of the record's signing key, then the
 * bound on new keys (making room from expired records before refusing),
 * both refused with `RequestRefused` QuotaExceeded; then the write. An
 * unchanged record is not written again. The caller must keep concurrent
 * puts to one store from interleaving.
 */
export const putUserRecord = <E>(
  record: UserRecord,
  now: number,
  rules: RecordRules,
  slot: RecordSlot<E>,
  gate?: ClaimCheckGate
): Effect.Effect<RecordAcceptance, RecordRejected | RequestRefused | E> =>
  Effect.gen(function*() {
    const stored = yield* slot.stored
    if (isHeldAlready(record, stored, now, rules)) return "Unchanged"
    const accept = (claim: ClaimRules) =>
      acceptUserRecord({ incoming: record, stored, now, verify: rules.verify, claim, limits: rules.limits })
    const decision = gate === undefined ? accept(rules.claim) : yield* gate(rules.claim, accept)
    if (decision._tag === "Left") return yield* decision.left
    if (decision.right === "Unchanged") return decision.right
    const limits = { maxStoredRecords: rules.maxStoredRecords, maxNamesPerKey: rules.maxNamesPerKey }
    const keyNames = yield* slot.keyNames
    const newSlot = stored === undefined
    let broken = recordQuotaBroken(limits, { keyNames, held: newSlot ? yield* slot.size : 0, newSlot })
    // Expired records make room before the store's bound refuses (the key's count is of live records already).
    if (broken._tag === "Some" && broken.value.scope === "total" && (yield* slot.expire) > 0) broken = Option.none()
    if (broken._tag === "Some") {
      return yield* new RequestRefused({
        reason: "QuotaExceeded",
        detail: broken.value.scope === "key"
          ? `this node already stores ${keyNames} names claimed by this signing key (its limit is ${broken.value.limit})`
          : `this node already stores ${broken.value.limit} live records (its limit)`
      })
    }
    yield* slot.write
    return decision.right
  })

/** Storage of the user records this node holds for the directory. */
export class RecordStore extends Context.Tag("peerchat/RecordStore")<RecordStore, RecordStoreService>() {
  /** An in-memory store; bound: `maxStoredRecords` records. */
  static readonly makeMemory: Effect.Effect<RecordStoreService, never, NodeConfig | Signatures> = Effect.gen(function*() {
    const rules = yield* recordRules
    const records = new Map<Key, UserRecord>()
    // A put reads, decides, then writes; the runtime may yield between steps, so puts take turns.
    const writeLock = yield* Effect.makeSemaphore(1)

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

    const get = (key: Key, now: number) =>
      Effect.sync(() => {
        const record = records.get(key)
        return record !== undefined && isRecordLive(record, now) ? Option.some(record) : Option.none()
      })
    /** Live records of `signingKey` in slots other than `except`. Bound: one pass over the store. */
    const keyNames = (signingKey: string, except: Key, now: number): number => {
      let count = 0
      for (const [key, held] of records) {
        if (key !== except && held.signingKey === signingKey && isRecordLive(held, now)) count++
      }
      return count
    }

    const putAt = (key: Key, record: UserRecord, now: number, gate: ClaimCheckGate | undefined) =>
      writeLock.withPermits(1)(putUserRecord(record, now, rules, {
        stored: Effect.sync(() => records.get(key)),
        size: Effect.sync(() => records.size),
        keyNames: Effect.sync(() => keyNames(record.signingKey, key, now)),
        expire: Effect.sync(() => expire(now)),
        write: Effect.sync(() => void records.set(key, record))
      }, gate))

    return {
      get,
      getRival: (key, now) => get(rivalSlotKey(key), now),
      putRival: (record, now, gate) => putAt(rivalSlotKey(userKey(record.username)), record, now, gate),
      put: (record, now, gate) => putAt(userKey(record.username), record, now, gate),
      expire: (now) => Effect.sync(() => expire(now)),
      remove: (record) =>
        writeLock.withPermits(1)(Effect.sync(() => {
          const own = userKey(record.username)
          for (const key of [own, rivalSlotKey(own)]) {
            const held = records.get(key)
            if (held !== undefined && held.signingKey === record.signingKey && held.sequence === record.sequence) {
              records.delete(key)
              return true
            }
          }
          return false
        })),
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
