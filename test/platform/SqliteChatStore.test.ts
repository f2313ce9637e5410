import * as Reactivity from "@effect/experimental/Reactivity"
import * as Migrator from "@effect/sql/Migrator"
import * as SqlClient from "@effect/sql/SqlClient"
import * as SqliteClient from "@effect/sql-sqlite-node/SqliteClient"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Option } from "effect"
import { spawn } from "node:child_process"
import { stat, writeFile } from "node:fs/promises"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import {
  ChatStoreConfig,
  type ChatStoreConfigShape,
  type ChatStoreService,
  type HistoryEntry
} from "../../src/chat/ChatStore.js"
import type { Key, NodeId } from "../../src/core/Id.js"
import { fingerprintOf, makePin } from "../../src/core/Pinning.js"
import type { PublicKeyHex } from "../../src/core/UserRecord.js"
import type { Username } from "../../src/core/Username.js"
import * as SqliteChatStore from "../../src/platform/SqliteChatStore.js"
import { chatStoreContract } from "../chat/ChatStoreContract.js"
import { messageIdOf as mid } from "../support/messageIds.js"
import { scopedTempDir } from "../support/tempDir.js"

/** A store in a fresh temporary directory, removed after the database is closed. */
const freshDatabase = Layer.unwrapScoped(
  Effect.map(scopedTempDir("chatstore"), (dir) => SqliteChatStore.layer({ filename: join(dir, "chat.db") }))
)

chatStoreContract("SQLite", freshDatabase)

const user = (name: string) => name as Username
const key = (n: number) => n.toString(16).padStart(64, "0") as Key
const signingKey = (n: number) => n.toString(16).padStart(64, "5") as PublicKeyHex
/** A `send` builder that names the message `id` and seals the sequence into its envelope. */
const sealedAs = (id: string) => (sequence: number) => Effect.succeed({ id: mid(id), envelope: JSON.stringify({ sequence }) })
const modeOf = (path: string) => Effect.promise(async () => (await stat(path)).mode & 0o777)
const posixOnly = process.platform === "win32" ? it.scoped.skip : it.scoped

const open = (filename: string, overrides: Partial<ChatStoreConfigShape> = {}) =>
  SqliteChatStore.make({ filename }).pipe(Effect.provide(ChatStoreConfig.layer(overrides)))

/** Every entry of a conversation, paging backwards through `history`. */
const wholeHistory = (store: ChatStoreService, conversation: Username) =>
  Effect.gen(function*() {
    let entries: ReadonlyArray<HistoryEntry> = []
    for (;;) {
      const [first] = entries
      const page = yield* store.history(conversation, first === undefined ? { limit: 1000 } : { limit: 1000, before: first })
      if (page.length === 0) return entries
      entries = [...page, ...entries]
    }
  })

describe("SqliteChatStore", () => {
  it.scoped("everything survives closing and reopening the database", () =>
    Effect.gen(function*() {
      const filename = join(yield* scopedTempDir("chatstore"), "chat.db")
      yield* Effect.scoped(Effect.gen(function*() {
        const { store } = yield* open(filename)
        yield* store.recordReceived({
          id: mid("in1"), from: user("bob"), to: user("alice"), sequence: 4, sentAt: 10, text: "hi", receivedAt: 11
        })
        yield* store.send({ from: user("alice"), to: user("bob"), sentAt: 12, text: "hello" }, sealedAs("out1"), 100)
        yield* store.send({ from: user("alice"), to: user("bob"), sentAt: 13, text: "again" }, sealedAs("out2"), 100)
        yield* store.complete(mid("out1"), "delivered")
        yield* store.reschedule(mid("out2"), 200, 3)
        yield* store.storeMail({ id: mid("mail1"), recipientKey: key(1), envelopeJson: "{}", size: 2, storedAt: 5, expiresAt: 500 })
        yield* store.markForwarded(mid("mail1"))
        yield* store.markSeen(mid("seen1"), 7)
        yield* store.putRecord(key(2), "{\"record\":true}", 900, "signer")
        yield* store.saveRoutingSnapshot([{ nodeId: key(3) as string as NodeId, host: "127.0.0.3", port: 4003, lastSeen: 8 }])
      }))

      const { migrationsApplied, store } = yield* open(filename)
      expect(migrationsApplied).toEqual([])
      expect((yield* store.history(user("bob"), { limit: 10 })).map((entry) => [entry.id, entry.status, entry.read])).toEqual([
        [mid("in1"), "received", false],
        [mid("out1"), "delivered", true],
        [mid("out2"), "queued", true]
      ])
      expect(yield* store.conversations()).toEqual([{ conversation: "bob", lastAt: 13, unread: 1 }])
      expect(yield* store.due(1000, 10)).toEqual([{
        id: mid("out2"), recipient: "bob", sequence: 2, envelopeJson: "{\"sequence\":2}", enqueuedAt: 13, nextAttemptAt: 200, attempts: 3
      }])
      expect(yield* store.send({ from: user("alice"), to: user("bob"), sentAt: 14, text: "" }, sealedAs("out3"), 0))
        .toEqual({ id: mid("out3"), sequence: 3 })
      expect(yield* store.mailFor(key(1), 10)).toEqual([
        {
          id: mid("mail1"),
          recipientKey: key(1),
          envelopeJson: "{}",
          size: 2,
          storedAt: 5,
          expiresAt: 500,
          forwarded: true,
          senderKey: "",
          source: "",
          postageJson: "",
          fullExpiresAt: 500
        }
      ])
      expect(yield* store.isSeen(mid("seen1"))).toBe(true)
      expect(yield* store.isSeen(mid("in1"))).toBe(true)
      expect(Option.map(yield* store.getRecord(key(2), 0), (record) => record.recordJson)).toEqual(Option.some("{\"record\":true}"))
      expect(yield* store.loadRoutingSnapshot).toEqual([{ nodeId: key(3), host: "127.0.0.3", port: 4003, lastSeen: 8 }])
    }))

  it.scoped("migrations run once and are recorded in the database", () =>
    Effect.gen(function*() {
      const filename = join(yield* scopedTempDir("chatstore"), "chat.db")
      const first = yield* Effect.scoped(Effect.map(open(filename), (handle) => handle.migrationsApplied))
      expect(first).toEqual([[1, "initial"], [2, "contact_pins"], [3, "mail_shares"], [4, "record_signers"]])
      const { diagnostics, migrationsApplied } = yield* open(filename)
      expect(migrationsApplied).toEqual([])
      expect((yield* diagnostics).migrations).toEqual([
        { id: 1, name: "initial" },
        { id: 2, name: "contact_pins" },
        { id: 3, name: "mail_shares" },
        { id: 4, name: "record_signers" }
      ])
    }))

  it.scoped("a database of before fair shares is migrated: its mail counted for nobody with its expiry kept, its records' signers filled in", () =>
    Effect.gen(function*() {
      const filename = join(yield* scopedTempDir("chatstore"), "chat.db")
      // The schema as the previous version left it (migrations 1 and 2), with a mail and two records.
      yield* Effect.scoped(Effect.gen(function*() {
        const sql = yield* SqliteClient.make({ filename }).pipe(Effect.provide(Reactivity.layer))
        const previous = Object.fromEntries(
          Object.entries(SqliteChatStore.migrations).filter(([id]) => id.startsWith("1_") || id.startsWith("2_"))
        )
        yield* Migrator.make({})({ loader: Migrator.fromRecord(previous) }).pipe(Effect.provideService(SqlClient.SqlClient, sql))
        yield* sql`INSERT INTO mail (id, recipient_key, envelope_json, size, stored_at, expires_at, forwarded)
                   VALUES (${mid("old")}, ${key(1)}, '{}', 2, 5, 500, 0)`
        yield* sql`INSERT INTO dht_records (key, record_json, expires_at) VALUES (${key(2)}, '{"signingKey":"abc"}', 900)`
        yield* sql`INSERT INTO dht_records (key, record_json, expires_at) VALUES (${key(3)}, 'not json', 900)`
      }))

      const { migrationsApplied, store } = yield* open(filename)
      expect(migrationsApplied).toEqual([[3, "mail_shares"], [4, "record_signers"]])
      expect(yield* store.mailFor(key(1), 10)).toEqual([{
        id: mid("old"),
        recipientKey: key(1),
        envelopeJson: "{}",
        size: 2,
        storedAt: 5,
        expiresAt: 500,
        forwarded: false,
        senderKey: "",
        source: "",
        postageJson: "",
        fullExpiresAt: 500
      }])
      expect(yield* store.countRecordsOf("abc", 0, key(9))).toBe(1)
      expect(yield* store.countRecordsOf("", 0, key(9))).toBe(1)
      expect((yield* store.allRecords).length).toBe(2)
    }))

  it.scoped("pinned keys survive closing and reopening the database", () =>
    Effect.gen(function*() {
      const filename = join(yield* scopedTempDir("chatstore"), "chat.db")
      const bob = makePin({ username: user("bob"), signingKey: signingKey(2), pinnedAt: 20, source: "verified" })
      const carol = makePin({ username: user("carol"), signingKey: signingKey(3), pinnedAt: 30, source: "first-use" })
      yield* Effect.scoped(Effect.gen(function*() {
        const { store } = yield* open(filename)
        yield* store.pin(carol)
        yield* store.pin(makePin({ username: user("bob"), signingKey: signingKey(1), pinnedAt: 10, source: "first-use" }))
        yield* store.pin(bob)
      }))

      const { store } = yield* open(filename, { maxPins: 2 })
      expect(yield* store.pins).toEqual([bob, carol])
      expect(yield* store.pinOf(user("bob"))).toEqual(Option.some(bob))
      // The bound counts the pins already on disk.
      const refused = yield* Effect.flip(store.pin(makePin({ username: user("dave"), signingKey: signingKey(4), pinnedAt: 40, source: "first-use" })))
      expect(refused).toMatchObject({ _tag: "PinsFull", limit: 2 })
    }))

  it.scoped("a pin edited behind the store's back (a key swapped without its fingerprint) is a CorruptRow", () =>
    Effect.gen(function*() {
      const filename = join(yield* scopedTempDir("chatstore"), "chat.db")
      const { store } = yield* open(filename)
      yield* store.pin(makePin({ username: user("bob"), signingKey: signingKey(1), pinnedAt: 1, source: "verified" }))
      const raw = yield* SqliteClient.make({ filename }).pipe(Effect.provide(Reactivity.layer))
      yield* raw`UPDATE contact_pins SET signing_key = ${signingKey(2)} WHERE username = 'bob'`
      const error = yield* Effect.flip(store.pinOf(user("bob")))
      expect(error).toMatchObject({ _tag: "StorageError", operation: "pinOf", reason: "CorruptRow" })
      expect(error.message).toContain("fingerprint")
      expect(yield* Effect.flip(store.pins)).toMatchObject({ _tag: "StorageError", operation: "pins", reason: "CorruptRow" })
      // Written together with its own fingerprint, the swapped key reads back.
      yield* raw`UPDATE contact_pins SET fingerprint = ${fingerprintOf(signingKey(2))} WHERE username = 'bob'`
      expect(Option.map(yield* store.pinOf(user("bob")), (pin) => pin.signingKey)).toEqual(Option.some(signingKey(2)))
    }))

  it.scoped("the connection runs in WAL mode with synchronous=FULL, foreign keys and a busy timeout", () =>
    Effect.gen(function*() {
      const filename = join(yield* scopedTempDir("chatstore"), "chat.db")
      const { diagnostics } = yield* open(filename)
      expect(yield* diagnostics).toMatchObject({
        journalMode: "wal",
        synchronous: 2,
        foreignKeys: true,
        busyTimeoutMs: 5000,
        integrity: "ok"
      })
    }))

  posixOnly("the database and its WAL files are readable by the owner only", () =>
    Effect.gen(function*() {
      const dir = yield* scopedTempDir("chatstore")
      const fresh = join(dir, "fresh.db")
      const { store } = yield* open(fresh)
      yield* store.markSeen(mid("x"), 1)
      expect(yield* modeOf(fresh)).toBe(0o600)
      expect(yield* modeOf(`${fresh}-wal`)).toBe(0o600)
      expect(yield* modeOf(`${fresh}-shm`)).toBe(0o600)

      // An existing (here empty) file that others could read is tightened.
      const loose = join(dir, "loose.db")
      yield* Effect.promise(() => writeFile(loose, "", { mode: 0o644 }))
      yield* open(loose)
      expect(yield* modeOf(loose)).toBe(0o600)
    }))

  it.scoped("a damaged row is a typed StorageError, not a crash", () =>
    Effect.gen(function*() {
      const filename = join(yield* scopedTempDir("chatstore"), "chat.db")
      const { store } = yield* open(filename)
      yield* store.recordReceived({
        id: mid("m1"), from: user("bob"), to: user("alice"), sequence: 1, sentAt: 1, text: "hi", receivedAt: 1
      })
      // Another connection edits the file behind the store's back.
      const raw = yield* SqliteClient.make({ filename }).pipe(Effect.provide(Reactivity.layer))
      yield* raw`UPDATE history SET from_user = 'Not A Name!' WHERE id = ${mid("m1")}`
      const error = yield* Effect.flip(store.history(user("bob"), { limit: 10 }))
      expect(error).toMatchObject({ _tag: "StorageError", operation: "history", reason: "CorruptRow" })
      // The rest of the store keeps working.
      expect(yield* store.markSeen(mid("m2"), 2)).toBe(false)
    }))

  it.scoped("a database that cannot be opened is a typed StorageError", () =>
    Effect.gen(function*() {
      const dir = yield* scopedTempDir("chatstore")
      const missing = yield* Effect.flip(Effect.scoped(open(join(dir, "missing", "chat.db"))))
      expect(missing).toMatchObject({ _tag: "StorageError", operation: "open", reason: "Unavailable" })
      const garbage = join(dir, "garbage.db")
      yield* Effect.promise(() => writeFile(garbage, "this is not a database, just some text that is long enough".repeat(100)))
      const notDatabase = yield* Effect.flip(Effect.scoped(open(garbage)))
      expect(notDatabase).toMatchObject({ _tag: "StorageError", reason: "Unavailable" })
    }))

  it.live("a writer killed mid-run loses none of the writes it reported as committed", () =>
    Effect.gen(function*() {
      const filename = join(yield* scopedTempDir("chatstore-crash"), "chat.db")
      const reported = yield* runWriterUntilKilled(filename, 300)
      expect(reported.length).toBeGreaterThanOrEqual(300)

      const { diagnostics, store } = yield* open(filename)
      expect((yield* diagnostics).integrity).toBe("ok")
      const sent = yield* wholeHistory(store, user("bob"))
      const received = yield* wholeHistory(store, user("carol"))
      const stored = new Set<string>([...sent, ...received].map((entry) => entry.id))
      expect(reported.filter((id) => !stored.has(id))).toEqual([])
      // At most the one write in flight at the kill may be stored without having been reported.
      expect(stored.size - reported.length).toBeLessThanOrEqual(1)
      // Sends are atomic: sequences without gaps, and an outbox row for every sent message.
      expect(sent.map((entry) => entry.sequence)).toEqual(sent.map((_, index) => index + 1))
      expect((yield* store.stats).outbox).toBe(sent.length)
    }).pipe(Effect.scoped))
})

const projectRoot = fileURLToPath(new URL("../../", import.meta.url))
const writerScript = fileURLToPath(new URL("./fixtures/chatStoreWriter.ts", import.meta.url))

/**
 * Runs the writer fixture on `filename` and kills it with SIGKILL as soon as it
 * has reported `atLeast` committed ids; returns every id it reported (lines
 * that arrived complete before its pipes closed).
 */
const runWriterUntilKilled = (filename: string, atLeast: number) =>
  Effect.async<ReadonlyArray<string>, Error>((resume) => {
    const child = spawn(process.execPath, ["--import", "tsx", writerScript, filename], {
      cwd: projectRoot,
      stdio: ["ignore", "pipe", "pipe"]
    })
    const reported: Array<string> = []
    let partial = ""
    let stderr = ""
    let killed = false
    const timer = setTimeout(() => child.kill("SIGKILL"), 20_000)
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
      const lines = (partial + chunk).split("\n")
      partial = lines.pop() ?? ""
      reported.push(...lines)
      if (!killed && reported.length >= atLeast) {
        killed = true
        child.kill("SIGKILL")
      }
    })
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => {
      stderr += chunk
    })
    child.on("close", (code, signal) => {
      clearTimeout(timer)
      if (killed && signal === "SIGKILL") resume(Effect.succeed(reported))
      else resume(Effect.fail(new Error(`the writer stopped by itself (${code ?? signal}) after ${reported.length} writes: ${stderr}`)))
    })
    return Effect.sync(() => {
      clearTimeout(timer)
      child.kill("SIGKILL")
    })
  })
