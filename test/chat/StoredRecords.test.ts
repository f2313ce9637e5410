import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Logger, LogLevel, Option } from "effect"
import { join } from "node:path"
import {
  ChatStore,
  ChatStoreConfig,
  type ChatStoreConfigShape,
  type ChatStoreService,
  StorageError
} from "../../src/chat/ChatStore.js"
import * as StoredKnownPeers from "../../src/chat/StoredKnownPeers.js"
import * as StoredRecords from "../../src/chat/StoredRecords.js"
import type { NodeId } from "../../src/core/Id.js"
import { userKey } from "../../src/core/Username.js"
import { KnownPeers } from "../../src/node/KnownPeers.js"
import { NodeConfig } from "../../src/node/NodeConfig.js"
import { RequestRefused } from "../../src/node/Protocol.js"
import { RecordStore } from "../../src/node/RecordStore.js"
import * as SqliteChatStore from "../../src/platform/SqliteChatStore.js"
import { recordStoreContract, HOUR, name, owner, rejection } from "../node/RecordStoreContract.js"
import { signedRecord, testSignatures } from "../support/memoryNetwork.js"
import { scopedTempDir } from "../support/tempDir.js"

const nodeLayers = (maxStoredRecords = 10) => Layer.merge(NodeConfig.layer({ maxStoredRecords }), testSignatures)

/** The record store over a fresh in-memory chat store; the chat store is exposed too. */
const overMemory = (maxStoredRecords = 10, chatConfig: Partial<ChatStoreConfigShape> = {}) =>
  StoredRecords.layer.pipe(
    Layer.provideMerge(ChatStore.layerMemory),
    Layer.provide(Layer.merge(ChatStoreConfig.layer(chatConfig), nodeLayers(maxStoredRecords)))
  )

/** The record store over `chat` as given (to inject failures). */
const overService = (chat: ChatStoreService) =>
  StoredRecords.layer.pipe(Layer.provide(Layer.merge(Layer.succeed(ChatStore, chat), nodeLayers())))

recordStoreContract("chat store", (maxStoredRecords) => overMemory(maxStoredRecords))

/** Log lines at warning level or above, captured while `layer` is provided. */
const captureWarnings = Effect.sync(() => {
  const lines: Array<string> = []
  const logger = Logger.make(({ logLevel, message }) => {
    if (LogLevel.greaterThanEqual(logLevel, LogLevel.Warning)) {
      lines.push(Array.isArray(message) ? message.join(" ") : String(message))
    }
  })
  return { lines: Effect.sync(() => lines.slice()), layer: Logger.replace(Logger.defaultLogger, logger) }
})

const storageFailure = (operation: string) =>
  Effect.fail(new StorageError({ operation, reason: "QueryFailed", detail: "disk I/O error" }))

describe("StoredRecords", () => {
  it.effect("a row that does not decode is logged, treated as absent, and replaced by the next record", () =>
    Effect.gen(function*() {
      const { layer, lines } = yield* captureWarnings
      yield* Effect.gen(function*() {
        const chat = yield* ChatStore
        const store = yield* RecordStore
        const alice = signedRecord(owner(1), name("alice"), { issuedAt: 0, expiresAt: HOUR })
        const bob = signedRecord(owner(2), name("bob"), { issuedAt: 0, expiresAt: HOUR })
        yield* store.put(bob, 0)
        yield* chat.putRecord(userKey(name("alice")), `{"username":"alice","truncated`, HOUR, alice.signingKey)
        expect(Option.isNone(yield* store.get(userKey(name("alice")), 1))).toBe(true)
        expect(yield* store.all).toEqual([bob])
        expect((yield* lines).filter((line) => line.includes("does not decode")).length).toBe(2)

        expect(yield* store.put(alice, 1)).toBe("Stored")
        expect(Option.getOrUndefined(yield* store.get(userKey(name("alice")), 1))).toEqual(alice)
        expect(yield* store.size).toBe(2)
      }).pipe(Effect.provide(layer))
    }).pipe(Effect.provide(overMemory())))

  it.effect("the chat store's own bound refuses as QuotaExceeded", () =>
    Effect.gen(function*() {
      const store = yield* RecordStore
      yield* store.put(signedRecord(owner(1), name("alice"), { issuedAt: 0, expiresAt: HOUR }), 0)
      const refused = yield* Effect.flip(store.put(signedRecord(owner(2), name("bob"), { issuedAt: 0, expiresAt: HOUR }), 0))
      expect(refused).toBeInstanceOf(RequestRefused)
      expect(rejection(refused)).toBe("QuotaExceeded")
      expect(refused.message).toContain("1 records")
    }).pipe(Effect.provide(overMemory(10, { maxRecords: 1 }))))

  it.effect("storage failures are logged: a write is refused as Overloaded, reads come back empty", () =>
    Effect.gen(function*() {
      const { layer, lines } = yield* captureWarnings
      const memory = yield* ChatStore.makeMemory(ChatStoreConfig.make())
      const broken: ChatStoreService = {
        ...memory,
        putRecord: () => storageFailure("putRecord"),
        getRecord: () => storageFailure("getRecord"),
        allRecords: storageFailure("allRecords"),
        expireRecords: () => storageFailure("expireRecords"),
        stats: storageFailure("stats")
      }
      yield* Effect.gen(function*() {
        const store = yield* RecordStore
        const refused = yield* Effect.flip(store.put(signedRecord(owner(1), name("alice"), { issuedAt: 0, expiresAt: HOUR }), 0))
        expect(refused).toBeInstanceOf(RequestRefused)
        expect(rejection(refused)).toBe("Overloaded")
        expect(Option.isNone(yield* store.get(userKey(name("alice")), 0))).toBe(true)
        expect(yield* store.all).toEqual([])
        expect(yield* store.expire(0)).toBe(0)
        expect(yield* store.size).toBe(0)
        const logged = yield* lines
        expect(logged.length).toBe(5)
        expect(logged.every((line) => line.includes("disk I/O error"))).toBe(true)
      }).pipe(Effect.provide(Layer.merge(overService(broken), layer)))
    }))

  it.effect("puts take turns, so interleaved updates of one name cannot go back in sequence", () =>
    Effect.gen(function*() {
      const memory = yield* ChatStore.makeMemory(ChatStoreConfig.make())
      // Every read yields after reading, so without turns each put would read before any of them writes.
      const slow: ChatStoreService = { ...memory, getRecord: (key, now) => Effect.zipLeft(memory.getRecord(key, now), Effect.yieldNow()) }
      yield* Effect.gen(function*() {
        const store = yield* RecordStore
        const versions = [6, 5, 4, 3, 2, 1].map((sequence) =>
          signedRecord(owner(4), name("frank"), { sequence, issuedAt: sequence, expiresAt: HOUR })
        )
        const outcomes = yield* Effect.forEach(versions, (record) => Effect.either(store.put(record, 10)), { concurrency: "unbounded" })
        expect(outcomes.filter((outcome) => outcome._tag === "Right").length).toBe(1)
        expect(Option.getOrUndefined(yield* store.get(userKey(name("frank")), 10))?.sequence).toBe(6)
      }).pipe(Effect.provide(overService(slow)))
    }))

  it.scoped("records and known peers survive a restart in the SQLite file", () =>
    Effect.gen(function*() {
      const filename = join(yield* scopedTempDir("stored-records"), "chat.db")
      const stores = SqliteChatStore.layer({ filename }).pipe(
        Layer.provide(ChatStoreConfig.layer()),
        (chat) => Layer.merge(StoredRecords.layer, StoredKnownPeers.layer).pipe(Layer.provide(chat), Layer.provide(nodeLayers()))
      )
      const alice = signedRecord(owner(1), name("alice"), { issuedAt: 0, expiresAt: HOUR })
      const peer = { contact: { nodeId: "ab".repeat(32) as NodeId, address: { host: "10.1.2.3", port: 7000 } }, lastSeen: 42 }
      yield* Effect.gen(function*() {
        expect(yield* (yield* RecordStore).put(alice, 0)).toBe("Stored")
        yield* (yield* KnownPeers).save([peer])
      }).pipe(Effect.provide(stores))

      yield* Effect.gen(function*() {
        const store = yield* RecordStore
        expect(Option.getOrUndefined(yield* store.get(userKey(name("alice")), 1))).toEqual(alice)
        expect(yield* store.all).toEqual([alice])
        expect(yield* (yield* KnownPeers).load).toEqual([peer])
        // Still the same acceptance rules against what was stored before the restart.
        const squatter = signedRecord(owner(2), name("alice"), { issuedAt: 1, expiresAt: HOUR })
        expect(rejection(yield* Effect.flip(store.put(squatter, 1)))).toBe("KeyConflict")
      }).pipe(Effect.provide(stores))
    }))
})

describe("StoredKnownPeers", () => {
  const peer = (n: number, lastSeen: number) => ({
    contact: { nodeId: n.toString(16).padStart(64, "c") as NodeId, address: { host: `10.0.0.${n}`, port: 7000 + n } },
    lastSeen
  })

  it.effect("loads what was saved last, most recently seen first", () =>
    Effect.gen(function*() {
      const known = yield* KnownPeers
      expect(yield* known.load).toEqual([])
      yield* known.save([peer(1, 10), peer(2, 30), peer(3, 20)])
      expect(yield* known.load).toEqual([peer(2, 30), peer(3, 20), peer(1, 10)])
      yield* known.save([peer(4, 40)])
      expect(yield* known.load).toEqual([peer(4, 40)])
      expect(known.remembers).toBe(true)
    }).pipe(Effect.provide(StoredKnownPeers.layer.pipe(Layer.provide(ChatStore.layerMemory), Layer.provide(ChatStoreConfig.layer())))))

  it.effect("a storage failure is logged: nothing loads, and a save changes nothing", () =>
    Effect.gen(function*() {
      const { layer, lines } = yield* captureWarnings
      const memory = yield* ChatStore.makeMemory(ChatStoreConfig.make())
      const broken: ChatStoreService = {
        ...memory,
        loadRoutingSnapshot: storageFailure("loadRoutingSnapshot"),
        saveRoutingSnapshot: () => storageFailure("saveRoutingSnapshot")
      }
      const known = yield* StoredKnownPeers.make.pipe(Effect.provideService(ChatStore, broken))
      yield* Effect.gen(function*() {
        yield* known.save([peer(1, 10)])
        expect(yield* known.load).toEqual([])
        expect(yield* lines).toHaveLength(2)
      }).pipe(Effect.provide(layer))
    }))
})
