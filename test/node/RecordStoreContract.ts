/**
 * The contract every RecordStore implementation passes: one suite, run
 * against the in-memory store (test/node/RecordStore.test.ts) and the store
 * over the chat store (test/chat/StoredRecords.test.ts). Each test builds a
 * fresh store from the given layer with the bound it needs.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, type Layer, Option } from "effect"
import type { UserRecord } from "../../src/core/UserRecord.js"
import { userKey, type Username } from "../../src/core/Username.js"
import { RequestRefused } from "../../src/node/Protocol.js"
import { RecordStore } from "../../src/node/RecordStore.js"
import { nodeAddress, nodeIdentity, signedRecord } from "../support/memoryNetwork.js"

/** One hour in ms. */
export const HOUR = 60 * 60 * 1000
/** A username (the tests use valid names only). */
export const name = (text: string) => text as Username
/** The owner of test records: test node `index`'s identity at its address. */
export const owner = (index: number) => ({ identity: nodeIdentity(index), address: nodeAddress(index) })

/** The `reason` of a refusal or rejection. */
export const rejection = (error: unknown) =>
  typeof error === "object" && error !== null && "reason" in error ? error.reason : undefined

/** Runs the contract against the store `storeLayer(maxStoredRecords)` builds. */
export const recordStoreContract = (
  implementation: string,
  storeLayer: (maxStoredRecords: number) => Layer.Layer<RecordStore>
) =>
  describe(`RecordStore (${implementation})`, () => {
    it.effect("stores an accepted record and serves it until it expires", () =>
      Effect.gen(function*() {
        const store = yield* RecordStore
        const record = signedRecord(owner(1), name("alice"), { issuedAt: 0, expiresAt: HOUR })
        expect(yield* store.put(record, 0)).toBe("Stored")
        expect(yield* store.put(record, 10)).toBe("Unchanged")
        expect(Option.getOrUndefined(yield* store.get(userKey(name("alice")), HOUR - 1))).toEqual(record)
        expect(Option.isNone(yield* store.get(userKey(name("alice")), HOUR))).toBe(true)
        expect(yield* store.size).toBe(1)
        expect(yield* store.all).toEqual([record])
        expect(yield* store.expire(HOUR)).toBe(1)
        expect(yield* store.all).toEqual([])
      }).pipe(Effect.provide(storeLayer(10))))

    it.effect("keeps one rival claim per name: its key may renew it, a third key is refused while it lives", () =>
      Effect.gen(function*() {
        const store = yield* RecordStore
        const key = userKey(name("carol"))
        const holder = signedRecord(owner(1), name("carol"), { issuedAt: 0, expiresAt: HOUR })
        const rival = signedRecord(owner(2), name("carol"), { issuedAt: 0, expiresAt: HOUR })
        const third = signedRecord(owner(3), name("carol"), { sequence: 2 ** 40, issuedAt: 0, expiresAt: HOUR })
        expect(yield* store.put(holder, 0)).toBe("Stored")
        expect(rejection(yield* Effect.flip(store.put(rival, 0)))).toBe("KeyConflict")
        expect(yield* store.putRival(rival, 0)).toBe("Stored")
        // Another key, however high its sequence, neither takes the name nor displaces the rival.
        expect(rejection(yield* Effect.flip(store.putRival(third, 0)))).toBe("KeyConflict")
        const renewed = signedRecord(owner(2), name("carol"), { sequence: 2, issuedAt: 10, expiresAt: HOUR })
        expect(yield* store.putRival(renewed, 10)).toBe("Stored")
        expect(Option.getOrUndefined(yield* store.get(key, 20))).toEqual(holder)
        expect(Option.getOrUndefined(yield* store.getRival(key, 20))).toEqual(renewed)
        // A rival slot is checked like any record: a forged or expired claim is refused.
        expect(rejection(yield* Effect.flip(store.putRival({ ...third, sequence: 3 }, 0)))).toBe("BadSignature")
        expect(Option.isNone(yield* store.getRival(key, HOUR))).toBe(true)
      }).pipe(Effect.provide(storeLayer(10))))

    it.effect("applies the acceptance rules: no takeover, no stale sequence, no forged signature", () =>
      Effect.gen(function*() {
        const store = yield* RecordStore
        const first = signedRecord(owner(1), name("bob"), { sequence: 2, issuedAt: 0, expiresAt: HOUR })
        yield* store.put(first, 0)

        const squatter = signedRecord(owner(2), name("bob"), { issuedAt: 0, expiresAt: HOUR })
        expect(rejection(yield* Effect.flip(store.put(squatter, 1)))).toBe("KeyConflict")

        const older = signedRecord(owner(1), name("bob"), { sequence: 1, issuedAt: 0, expiresAt: HOUR })
        expect(rejection(yield* Effect.flip(store.put(older, 1)))).toBe("StaleSequence")

        const forged: UserRecord = { ...signedRecord(owner(1), name("bob"), { sequence: 3, issuedAt: 0, expiresAt: HOUR }), sequence: 9 }
        expect(rejection(yield* Effect.flip(store.put(forged, 1)))).toBe("BadSignature")
        expect(Option.getOrUndefined(yield* store.get(userKey(name("bob")), 1))).toEqual(first)

        const newer = signedRecord(owner(1), name("bob"), { sequence: 3, issuedAt: 5, expiresAt: HOUR })
        expect(yield* store.put(newer, 5)).toBe("Stored")
        expect(Option.getOrUndefined(yield* store.get(userKey(name("bob")), 5))).toEqual(newer)

        // Once the holder's record has expired, the name is free for another key.
        const successor = signedRecord(owner(2), name("bob"), { issuedAt: HOUR, expiresAt: 2 * HOUR })
        expect(yield* store.put(successor, HOUR)).toBe("Stored")
        expect(Option.getOrUndefined(yield* store.get(userKey(name("bob")), HOUR))).toEqual(successor)
      }).pipe(Effect.provide(storeLayer(10))))

    it.effect("refuses new names beyond its bound without evicting live records", () =>
      Effect.gen(function*() {
        const store = yield* RecordStore
        yield* store.put(signedRecord(owner(1), name("carol"), { issuedAt: 0, expiresAt: HOUR }), 0)
        yield* store.put(signedRecord(owner(2), name("dave"), { issuedAt: 0, expiresAt: 2 * HOUR }), 0)

        const third = signedRecord(owner(3), name("erin"), { issuedAt: 0, expiresAt: 2 * HOUR })
        const refused = yield* Effect.flip(store.put(third, 1))
        expect(refused).toBeInstanceOf(RequestRefused)
        expect(rejection(refused)).toBe("QuotaExceeded")
        expect(yield* store.size).toBe(2)

        // Updating a name already held is not a new name.
        const update = signedRecord(owner(1), name("carol"), { sequence: 2, issuedAt: 1, expiresAt: HOUR })
        expect(yield* store.put(update, 1)).toBe("Stored")

        // An expired record makes room.
        expect(yield* store.put(third, HOUR)).toBe("Stored")
        expect(Option.isNone(yield* store.get(userKey(name("carol")), HOUR))).toBe(true)
        expect(Option.getOrUndefined(yield* store.get(userKey(name("erin")), HOUR))).toEqual(third)
        expect(yield* store.size).toBe(2)
      }).pipe(Effect.provide(storeLayer(2))))
  })
