import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Option } from "effect"
import type { UserRecord } from "../../src/core/UserRecord.js"
import { userKey, type Username } from "../../src/core/Username.js"
import { NodeConfig } from "../../src/node/NodeConfig.js"
import { RequestRefused } from "../../src/node/Protocol.js"
import { RecordStore } from "../../src/node/RecordStore.js"
import { nodeAddress, nodeIdentity, signedRecord, testSignatures } from "../support/memoryNetwork.js"

const HOUR = 60 * 60 * 1000
const name = (text: string) => text as Username
const owner = (index: number) => ({ identity: nodeIdentity(index), address: nodeAddress(index) })

const storeLayer = (maxStoredRecords = 10) =>
  RecordStore.layerMemory.pipe(Layer.provide(Layer.merge(NodeConfig.layer({ maxStoredRecords }), testSignatures)))

const rejection = (error: unknown) =>
  typeof error === "object" && error !== null && "reason" in error ? error.reason : undefined

describe("RecordStore (memory)", () => {
  it.effect("stores an accepted record and serves it until it expires", () =>
    Effect.gen(function*() {
      const store = yield* RecordStore
      const record = signedRecord(owner(1), name("alice"), { issuedAt: 0, expiresAt: HOUR })
      expect(yield* store.put(record, 0)).toBe("Stored")
      expect(yield* store.put(record, 10)).toBe("Unchanged")
      expect(Option.getOrUndefined(yield* store.get(userKey(name("alice")), HOUR - 1))).toEqual(record)
      expect(Option.isNone(yield* store.get(userKey(name("alice")), HOUR))).toBe(true)
      expect(yield* store.size).toBe(1)
      expect(yield* store.expire(HOUR)).toBe(1)
      expect(yield* store.all).toEqual([])
    }).pipe(Effect.provide(storeLayer())))

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

      const newer = signedRecord(owner(1), name("bob"), { sequence: 3, issuedAt: 5, expiresAt: HOUR })
      expect(yield* store.put(newer, 5)).toBe("Stored")
      expect(Option.getOrUndefined(yield* store.get(userKey(name("bob")), 5))).toEqual(newer)

      // Once the holder's record has expired, the name is free for another key.
      const successor = signedRecord(owner(2), name("bob"), { issuedAt: HOUR, expiresAt: 2 * HOUR })
      expect(yield* store.put(successor, HOUR)).toBe("Stored")
    }).pipe(Effect.provide(storeLayer())))

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
      expect(yield* store.size).toBe(2)
    }).pipe(Effect.provide(storeLayer(2))))
})
