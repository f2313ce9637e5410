/**
 * The chat store of a real node: one SQLite database (better-sqlite3 through
 * @effect/sql) in WAL mode with `synchronous = FULL`, so a transaction that
 * returned has reached the disk and a crash at any point leaves the last
 * committed state. Foreign keys are enforced (an outbox row cannot outlive its
 * history entry), a busy timeout covers a second reader, and the file is
 * created owner-only (0600; SQLite gives its -wal and -shm files the same
 * mode). The schema is created and evolved by @effect/sql's Migrator from
 * migrations defined in this file, recorded in `effect_sql_migrations`;
 * tables are STRICT and every row read back is decoded with a Schema
 * (each query is a `SqlSchema.findAll`, `findOne` or `single`), so a
 * damaged or hand-edited row is a typed `StorageError` ("CorruptRow"), never
 * a crash. The client holds one connection and serializes all statements, so
 * every transaction sees a consistent database; a single writing process per
 * file is assumed (the CLI refuses a second node on one data directory).
 *
 * @since 0.1.0
 */
import * as Reactivity from "@effect/experimental/Reactivity"
import * as Migrator from "@effect/sql/Migrator"
import * as SqlClient from "@effect/sql/SqlClient"
import * as SqlSchema from "@effect/sql/SqlSchema"
import { SqlError } from "@effect/sql/SqlError"
import * as SqliteClient from "@effect/sql-sqlite-node/SqliteClient"
import { Cause, Effect, Layer, Option, ParseResult, Schema, type Scope } from "effect"
import { chmod, open } from "node:fs/promises"
import {
  ChatStore,
  ChatStoreConfig,
  type ChatStoreConfigShape,
  type ChatStoreService,
  checkPin,
  clampLimit,
  ConversationSummary,
  Direction,
  DuplicateMessage,
  HistoryEntry,
  heldMail,
  type MailboxFull,
  MailItem,
  mailQuotaRefusal,
  MessageStatus,
  type NewMail,
  NotFound,
  OutboxEntry,
  outboxQuotaBroken,
  type OutgoingStatus,
  outgoingStatusRank,
  PinsFull,
  RecordsFull,
  SnapshotContact,
  snapshotToKeep,
  StorageError,
  StoredRecord,
  type Received,
  type Stored,
  Timestamp
} from "../chat/ChatStore.js"
import { largestHolder, MAX_EVICTIONS_PER_MAIL, type MailboxHolder, mailboxPlaceFor, type MailHeld } from "../core/StorageQuota.js"
import { ContactPin } from "../core/Pinning.js"

/** Where the database lives. */
export interface SqliteChatStoreOptions {
  /** Path of the database file; its directory must exist. Created with mode 0600 if missing, tightened to 0600 if not. */
  readonly filename: string
  /** How long a statement waits for a lock held by another connection; default 5 s. */
  readonly busyTimeoutMs?: number
}

/** The connection settings and schema state of an open database, for diagnostics and tests. */
export interface SqliteDiagnostics {
  readonly journalMode: string
  /** 2 = FULL. */
  readonly synchronous: number
  readonly foreignKeys: boolean
  readonly busyTimeoutMs: number
  /** "ok" when SQLite's integrity check finds nothing wrong. */
  readonly integrity: string
  /** Every migration recorded in the database, oldest first. */
  readonly migrations: ReadonlyArray<{ readonly id: number; readonly name: string }>
}

/** An open SQLite chat store with what only the SQLite implementation can tell. */
export interface SqliteChatStoreHandle {
  readonly store: ChatStoreService
  /** The migrations this open applied (empty when the schema was already current). */
  readonly migrationsApplied: ReadonlyArray<readonly [id: number, name: string]>
  /** Reads the connection settings, runs `PRAGMA integrity_check` and lists the recorded migrations. */
  readonly diagnostics: Effect.Effect<SqliteDiagnostics, StorageError>
}

const DEFAULT_BUSY_TIMEOUT_MS = 5000

/** Most ids bound in one `IN (...)` list; SQLite allows 32,766 variables, this keeps statements small. */
const MAX_IDS_PER_STATEMENT = 500

// ---------------------------------------------------------------------------
// Schema
// ---------------------------------------------------------------------------

/**
 * The migrations, by id. Never edit one that has shipped: add the next.
 * Timestamps are integer ms; booleans are 0/1; `position` columns are rowids
 * that grow with every insert and give the FIFO order of the outbox and the
 * eviction order of the seen set.
 */
export const migrations: Readonly<Record<string, Effect.Effect<void, unknown, SqlClient.SqlClient>>> = {
  "1_initial": Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql`CREATE TABLE history (
      id TEXT PRIMARY KEY NOT NULL,
      conversation TEXT NOT NULL,
      direction TEXT NOT NULL CHECK (direction IN ('in', 'out')),
      from_user TEXT NOT NULL,
      to_user TEXT NOT NULL,
      sequence INTEGER NOT NULL CHECK (sequence >= 0),
      sent_at INTEGER NOT NULL,
      text TEXT NOT NULL,
      status TEXT NOT NULL CHECK (status IN ('queued', 'stored-offline', 'delivered', 'received')),
      received_at INTEGER,
      read INTEGER NOT NULL CHECK (read IN (0, 1))
    ) STRICT`
    yield* sql`CREATE INDEX history_by_time ON history (conversation, sent_at, sequence, id)`
    yield* sql`CREATE INDEX history_outgoing_sequence ON history (conversation, sequence) WHERE direction = 'out'`
    yield* sql`CREATE INDEX history_unread ON history (conversation) WHERE direction = 'in' AND read = 0`

    yield* sql`CREATE TABLE conversations (
      conversation TEXT PRIMARY KEY NOT NULL,
      last_at INTEGER NOT NULL,
      unread INTEGER NOT NULL CHECK (unread >= 0)
    ) STRICT, WITHOUT ROWID`
    yield* sql`CREATE INDEX conversations_by_activity ON conversations (last_at DESC, conversation)`

    yield* sql`CREATE TABLE outbox (
      position INTEGER PRIMARY KEY,
      id TEXT NOT NULL UNIQUE REFERENCES history (id) ON DELETE CASCADE,
      recipient TEXT NOT NULL,
      sequence INTEGER NOT NULL CHECK (sequence >= 0),
      envelope_json TEXT NOT NULL,
      enqueued_at INTEGER NOT NULL,
      next_attempt_at INTEGER NOT NULL,
      attempts INTEGER NOT NULL CHECK (attempts >= 0)
    ) STRICT`
    yield* sql`CREATE INDEX outbox_by_recipient ON outbox (recipient)`
    yield* sql`CREATE INDEX outbox_by_due ON outbox (next_attempt_at)`

    yield* sql`CREATE TABLE mail (
      id TEXT PRIMARY KEY NOT NULL,
      recipient_key TEXT NOT NULL,
      envelope_json TEXT NOT NULL,
      size INTEGER NOT NULL CHECK (size >= 0),
      stored_at INTEGER NOT NULL,
      expires_at INTEGER NOT NULL,
      forwarded INTEGER NOT NULL DEFAULT 0 CHECK (forwarded IN (0, 1))
    ) STRICT`
    yield* sql`CREATE INDEX mail_by_recipient ON mail (recipient_key, stored_at, id)`
    yield* sql`CREATE INDEX mail_by_expiry ON mail (expires_at)`

    yield* sql`CREATE TABLE seen (
      position INTEGER PRIMARY KEY,
      id TEXT NOT NULL UNIQUE,
      seen_at INTEGER NOT NULL
    ) STRICT`
    yield* sql`CREATE INDEX seen_by_time ON seen (seen_at)`

    yield* sql`CREATE TABLE dht_records (
      key TEXT PRIMARY KEY NOT NULL,
      record_json TEXT NOT NULL,
      expires_at INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID`
    yield* sql`CREATE INDEX dht_records_by_expiry ON dht_records (expires_at)`

    yield* sql`CREATE TABLE routing_snapshot (
      node_id TEXT PRIMARY KEY NOT NULL,
      host TEXT NOT NULL,
      port INTEGER NOT NULL CHECK (port BETWEEN 0 AND 65535),
      last_seen INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID`
  }),

  // The signing key pinned for each contact (trust on first use, src/core/Pinning.ts).
  "2_contact_pins": Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql`CREATE TABLE contact_pins (
      username TEXT PRIMARY KEY NOT NULL,
      signing_key TEXT NOT NULL,
      fingerprint TEXT NOT NULL,
      pinned_at INTEGER NOT NULL CHECK (pinned_at >= 0),
      source TEXT NOT NULL CHECK (source IN ('first-use', 'verified', 'trusted'))
    ) STRICT, WITHOUT ROWID`
  }),

  // Fair shares of the mailboxes (issue 12): who each mail is counted for (the postage's key, the
  // address it came from), the postage re-replication passes on, and the expiry mail for a name
  // nobody held gets back once its recipient is known. Mail held before has none of them: it is
  // counted for nobody, never re-replicated, and already has its full expiry.
  "3_mail_shares": Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql`ALTER TABLE mail ADD COLUMN sender_key TEXT NOT NULL DEFAULT ''`
    yield* sql`ALTER TABLE mail ADD COLUMN source TEXT NOT NULL DEFAULT ''`
    yield* sql`ALTER TABLE mail ADD COLUMN postage_json TEXT NOT NULL DEFAULT ''`
    yield* sql`ALTER TABLE mail ADD COLUMN full_expires_at INTEGER NOT NULL DEFAULT 0`
    yield* sql`UPDATE mail SET full_expires_at = expires_at`
    yield* sql`CREATE INDEX mail_by_sender ON mail (sender_key, recipient_key)`
    yield* sql`CREATE INDEX mail_by_source ON mail (source, recipient_key)`
  }),

  // The signing key of each stored record, for the names-per-key quota; filled in from the JSON of
  // the records already held.
  "4_record_signers": Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql`ALTER TABLE dht_records ADD COLUMN signing_key TEXT NOT NULL DEFAULT ''`
    yield* sql`UPDATE dht_records SET signing_key = json_extract(record_json, '$.signingKey')
               WHERE json_valid(record_json) AND json_type(record_json, '$.signingKey') = 'text'`
    yield* sql`CREATE INDEX dht_records_by_signer ON dht_records (signing_key, expires_at)`
  })
}

// ---------------------------------------------------------------------------
// Rows
// ---------------------------------------------------------------------------

const SqlBoolean = Schema.transformLiterals([0, false], [1, true])

// Rows are the store's own schemas, but for how SQLite spells booleans (0/1) and absent values (NULL).
const HistoryRow = Schema.Struct({
  ...HistoryEntry.fields,
  receivedAt: Schema.optionalWith(Timestamp, { nullable: true }),
  read: SqlBoolean
})
const HISTORY_COLUMNS =
  `id, conversation, direction, from_user AS "from", to_user AS "to", sequence, sent_at AS sentAt, text, status, received_at AS receivedAt, read`

const ConversationRow = ConversationSummary

const OutboxRow = OutboxEntry
const OUTBOX_COLUMNS =
  `id, recipient, sequence, envelope_json AS envelopeJson, enqueued_at AS enqueuedAt, next_attempt_at AS nextAttemptAt, attempts`

const MailRow = Schema.Struct({ ...MailItem.fields, forwarded: SqlBoolean })
const MAIL_COLUMNS = `id, recipient_key AS recipientKey, envelope_json AS envelopeJson, size, stored_at AS storedAt, ` +
  `expires_at AS expiresAt, forwarded, sender_key AS senderKey, source, postage_json AS postageJson, full_expires_at AS fullExpiresAt`

const RecordRow = StoredRecord

const SnapshotRow = SnapshotContact

// Decoding checks that the fingerprint is the key's, so a pin edited behind the store's back is "CorruptRow".
const PinRow = ContactPin
const PIN_COLUMNS = `username, signing_key AS signingKey, fingerprint, pinned_at AS pinnedAt, source`

const CountRow = Schema.Struct({ n: Schema.NonNegativeInt })
const EarliestRow = Schema.Struct({ n: Schema.NullOr(Timestamp) })
const SumRow = Schema.Struct({ n: Schema.NonNegativeInt, bytes: Schema.NonNegativeInt })
const StatusRow = Schema.Struct({ direction: Direction, status: MessageStatus })
const ForwardedRow = Schema.Struct({ forwarded: SqlBoolean })
const MigrationRow = Schema.Struct({ id: Schema.Int, name: Schema.String })
const RunResult = Schema.Struct({ changes: Schema.NonNegativeInt })

const corrupt = (operation: string, detail: string) => new StorageError({ operation, reason: "CorruptRow", detail })

/** Fails the operation with "CorruptRow" when a row does not decode (or an aggregate returned no row). */
const decoded = (operation: string) =>
<A, E, R>(
  query: Effect.Effect<A, E | ParseResult.ParseError | Cause.NoSuchElementException, R>
): Effect.Effect<A, Exclude<E, ParseResult.ParseError | Cause.NoSuchElementException> | StorageError, R> =>
  Effect.catchIf(
    query,
    (error): error is ParseResult.ParseError | Cause.NoSuchElementException =>
      ParseResult.isParseError(error) || Cause.isNoSuchElementException(error),
    (error) =>
      Effect.fail(corrupt(operation, ParseResult.isParseError(error) ? ParseResult.TreeFormatter.formatErrorSync(error) : "no row"))
  )

/** The one row an aggregate statement (`COUNT`, `SUM`, `MIN`) returns, decoded with `Result`. */
const aggregate = <A, I>(Result: Schema.Schema<A, I>) =>
(operation: string, statement: Effect.Effect<ReadonlyArray<unknown>, SqlError>) =>
  decoded(operation)(SqlSchema.single({ Request: Schema.Void, Result, execute: () => statement })(undefined))

/** Every row `statement` returns, each decoded with `Result`. */
const rows = <A, I>(Result: Schema.Schema<A, I>) =>
(operation: string, statement: Effect.Effect<ReadonlyArray<unknown>, SqlError>) =>
  decoded(operation)(SqlSchema.findAll({ Request: Schema.Void, Result, execute: () => statement })(undefined))

/** A sender key or a source and the mails it holds in one mailbox (core `MailboxHolder`). */
const HolderRow = Schema.Struct({ by: Schema.Literal("sender", "source"), key: Schema.String, count: Schema.NonNegativeInt })
const holderRows = rows(HolderRow)
const mailIdRows = rows(Schema.Struct({ id: Schema.String }))

const count = aggregate(CountRow)
const earliest = aggregate(EarliestRow)
const sums = aggregate(SumRow)
const decodeRunResult = Schema.decodeUnknown(RunResult)

/** A cursor into a conversation's history, as the history query binds it. */
const CursorRequest = Schema.Struct({ sentAt: Schema.Number, sequence: Schema.Number, id: Schema.String })

/** The store's reading queries: a request schema, the statement, and the schema every row decodes with. */
const makeQueries = (sql: SqlClient.SqlClient) => ({
  history: SqlSchema.findAll({
    Request: Schema.Struct({ conversation: Schema.String, limit: Schema.Number, before: Schema.optional(CursorRequest) }),
    Result: HistoryRow,
    execute: ({ before, conversation, limit }) =>
      before === undefined
        ? sql`SELECT ${sql.literal(HISTORY_COLUMNS)} FROM history WHERE conversation = ${conversation}
              ORDER BY sent_at DESC, sequence DESC, id DESC LIMIT ${limit}`
        : sql`SELECT ${sql.literal(HISTORY_COLUMNS)} FROM history
              WHERE conversation = ${conversation} AND (sent_at, sequence, id) < (${before.sentAt}, ${before.sequence}, ${before.id})
              ORDER BY sent_at DESC, sequence DESC, id DESC LIMIT ${limit}`
  }),
  message: SqlSchema.findOne({
    Request: Schema.String,
    Result: HistoryRow,
    execute: (id) => sql`SELECT ${sql.literal(HISTORY_COLUMNS)} FROM history WHERE id = ${id}`
  }),
  statusOf: SqlSchema.findOne({
    Request: Schema.String,
    Result: StatusRow,
    execute: (id) => sql`SELECT direction, status FROM history WHERE id = ${id}`
  }),
  conversations: SqlSchema.findAll({
    Request: Schema.Number,
    Result: ConversationRow,
    execute: (limit) =>
      sql`SELECT conversation, last_at AS lastAt, unread FROM conversations
          ORDER BY last_at DESC, conversation ASC LIMIT ${limit}`
  }),
  due: SqlSchema.findAll({
    Request: Schema.Struct({ now: Schema.Number, limit: Schema.Number }),
    Result: OutboxRow,
    execute: ({ limit, now }) =>
      sql`SELECT ${sql.literal(OUTBOX_COLUMNS)} FROM outbox WHERE next_attempt_at <= ${now}
          ORDER BY position LIMIT ${limit}`
  }),
  mailFor: SqlSchema.findAll({
    Request: Schema.Struct({ recipientKey: Schema.String, limit: Schema.Number }),
    Result: MailRow,
    execute: ({ limit, recipientKey }) =>
      sql`SELECT ${sql.literal(MAIL_COLUMNS)} FROM mail WHERE recipient_key = ${recipientKey}
          ORDER BY stored_at, id LIMIT ${limit}`
  }),
  allMail: SqlSchema.findAll({
    Request: Schema.Struct({ limit: Schema.Number, after: Schema.optional(Schema.String) }),
    Result: MailRow,
    execute: ({ after, limit }) =>
      after === undefined
        ? sql`SELECT ${sql.literal(MAIL_COLUMNS)} FROM mail ORDER BY id LIMIT ${limit}`
        : sql`SELECT ${sql.literal(MAIL_COLUMNS)} FROM mail WHERE id > ${after} ORDER BY id LIMIT ${limit}`
  }),
  forwardedOf: SqlSchema.findOne({
    Request: Schema.String,
    Result: ForwardedRow,
    execute: (id) => sql`SELECT forwarded FROM mail WHERE id = ${id}`
  }),
  record: SqlSchema.findOne({
    Request: Schema.Struct({ key: Schema.String, now: Schema.Number }),
    Result: RecordRow,
    execute: ({ key, now }) =>
      sql`SELECT key, record_json AS recordJson, expires_at AS expiresAt FROM dht_records
          WHERE key = ${key} AND expires_at > ${now}`
  }),
  allRecords: SqlSchema.findAll({
    Request: Schema.Void,
    Result: RecordRow,
    execute: () => sql`SELECT key, record_json AS recordJson, expires_at AS expiresAt FROM dht_records ORDER BY key`
  }),
  routingSnapshot: SqlSchema.findAll({
    Request: Schema.Void,
    Result: SnapshotRow,
    execute: () =>
      sql`SELECT node_id AS nodeId, host, port, last_seen AS lastSeen FROM routing_snapshot
          ORDER BY last_seen DESC, node_id ASC`
  }),
  pinOf: SqlSchema.findOne({
    Request: Schema.String,
    Result: PinRow,
    execute: (username) => sql`SELECT ${sql.literal(PIN_COLUMNS)} FROM contact_pins WHERE username = ${username}`
  }),
  pins: SqlSchema.findAll({
    Request: Schema.Void,
    Result: PinRow,
    execute: () => sql`SELECT ${sql.literal(PIN_COLUMNS)} FROM contact_pins ORDER BY username`
  }),
  migrations: SqlSchema.findAll({
    Request: Schema.Void,
    Result: MigrationRow,
    execute: () => sql`SELECT migration_id AS id, name FROM effect_sql_migrations ORDER BY migration_id`
  })
})

/** Turns a failed statement into a `StorageError`, and so does a failed COMMIT, which @effect/sql reports as a defect. */
const guard = (operation: string) => <A, E, R>(effect: Effect.Effect<A, E | SqlError, R>): Effect.Effect<A, Exclude<E, SqlError> | StorageError, R> =>
  effect.pipe(
    Effect.catchAllCause((cause): Effect.Effect<never, Exclude<E, SqlError> | StorageError> => {
      const failure = Cause.failureOption(cause)
      const sqlFailure = Option.isSome(failure) && failure.value instanceof SqlError
        ? failure
        : Option.filter(Cause.dieOption(cause), (defect) => defect instanceof SqlError)
      if (Option.isSome(sqlFailure) && !Cause.isInterrupted(cause)) {
        return Effect.fail(queryFailed(operation, sqlFailure.value))
      }
      // Not a SQL failure: the caller's own typed failure, a defect or an interruption; pass it on unchanged.
      return Effect.failCause(cause as Cause.Cause<Exclude<E, SqlError>>)
    })
  )

const describeCause = (error: unknown): string => {
  if (error instanceof SqlError) {
    const cause: unknown = error.cause
    return cause instanceof Error ? `${error.message}: ${cause.message}` : error.message
  }
  return error instanceof Error ? error.message : String(error)
}

const queryFailed = (operation: string, error: unknown) =>
  new StorageError({ operation, reason: "QueryFailed", detail: describeCause(error) })

// ---------------------------------------------------------------------------
// Opening
// ---------------------------------------------------------------------------

/** Creates the file owner-only before SQLite opens it (SQLite would use 0644), and tightens an existing one. */
const preparePrivateFile = (filename: string) =>
  Effect.tryPromise({
    try: async () => {
      const handle = await open(filename, "a", 0o600)
      await handle.close()
      if (process.platform !== "win32") await chmod(filename, 0o600)
    },
    catch: (error) => new StorageError({ operation: "open", reason: "Unavailable", detail: describeCause(error) })
  })

const openClient = (filename: string) =>
  SqliteClient.make({ filename }).pipe(
    Effect.provide(Reactivity.layer),
    // better-sqlite3 throws from its constructor (missing directory, not a database): a defect in @effect/sql.
    Effect.catchAllDefect((defect) =>
      Effect.fail(new StorageError({ operation: "open", reason: "Unavailable", detail: describeCause(defect) }))
    )
  )

const runMigrations = Migrator.make({})({ loader: Migrator.fromRecord(migrations) })

/**
 * Opens (creating if needed) the database at `options.filename`, applies the
 * connection settings and pending migrations, and returns the store; the
 * database is closed when the scope closes.
 */
export const make = (
  options: SqliteChatStoreOptions
): Effect.Effect<SqliteChatStoreHandle, StorageError, Scope.Scope | ChatStoreConfig> =>
  Effect.gen(function*() {
    const config = yield* ChatStoreConfig
    yield* preparePrivateFile(options.filename)
    const sql = yield* openClient(options.filename)
    const busyTimeoutMs = options.busyTimeoutMs ?? DEFAULT_BUSY_TIMEOUT_MS

    yield* guard("open")(Effect.gen(function*() {
      // Outside any transaction: SQLite ignores foreign_keys inside one.
      yield* sql.unsafe(`PRAGMA busy_timeout = ${Math.max(0, Math.floor(busyTimeoutMs))}`)
      yield* sql`PRAGMA synchronous = FULL`
      yield* sql`PRAGMA foreign_keys = ON`
      const [mode] = yield* sql<{ readonly journal_mode: string }>`PRAGMA journal_mode`
      if (mode?.journal_mode !== "wal") {
        return yield* new StorageError({
          operation: "open",
          reason: "Unavailable",
          detail: `the database is in journal mode ${String(mode?.journal_mode)}, not WAL`
        })
      }
    }))

    const migrationsApplied = yield* runMigrations.pipe(
      Effect.provideService(SqlClient.SqlClient, sql),
      Effect.catchAllCause((cause) =>
        Effect.fail(new StorageError({ operation: "migrate", reason: "MigrationFailed", detail: Cause.pretty(cause) }))
      )
    )

    const queries = makeQueries(sql)
    const diagnostics = guard("diagnostics")(Effect.gen(function*() {
      const pragma = <A>(name: string) =>
        Effect.map(sql.unsafe<Record<string, A>>(`PRAGMA ${name}`), (rows) => rows[0]?.[name])
      const journalMode = yield* pragma<string>("journal_mode")
      const synchronous = yield* pragma<number>("synchronous")
      const foreignKeys = yield* pragma<number>("foreign_keys")
      const busyTimeout = yield* Effect.map(sql.unsafe<{ readonly timeout: number }>("PRAGMA busy_timeout"), (rows) => rows[0]?.timeout)
      const integrity = yield* pragma<string>("integrity_check")
      const recorded = yield* decoded("diagnostics")(queries.migrations(undefined))
      return {
        journalMode: String(journalMode),
        synchronous: Number(synchronous),
        foreignKeys: foreignKeys === 1,
        busyTimeoutMs: Number(busyTimeout),
        integrity: String(integrity),
        migrations: recorded
      }
    }))

    return { store: makeService(sql, queries, config), migrationsApplied, diagnostics }
  })

/** The SQLite chat store as a layer; the database stays open for the layer's lifetime. */
export const layer = (options: SqliteChatStoreOptions): Layer.Layer<ChatStore, StorageError, ChatStoreConfig> =>
  Layer.scoped(ChatStore, Effect.map(make(options), (handle) => handle.store))

// ---------------------------------------------------------------------------
// The service
// ---------------------------------------------------------------------------

const makeService = (
  sql: SqlClient.SqlClient,
  queries: ReturnType<typeof makeQueries>,
  config: ChatStoreConfigShape
): ChatStoreService => {
  const changes = (operation: string, statement: { readonly raw: Effect.Effect<unknown, SqlError> }) =>
    Effect.flatMap(statement.raw, (result) => Effect.map(decoded(operation)(decodeRunResult(result)), (row) => row.changes))

  /** Marks `id` seen inside the caller's transaction; true if it was already seen. Evicts the earliest beyond capacity. */
  const markSeenIn = (operation: string, id: string, now: number) =>
    Effect.gen(function*() {
      const inserted = yield* changes(operation, sql`INSERT INTO seen (id, seen_at) VALUES (${id}, ${now}) ON CONFLICT (id) DO NOTHING`)
      if (inserted === 0) return true
      const { n } = yield* count(operation, sql`SELECT COUNT(*) AS n FROM seen`)
      if (n > config.seenCapacity) {
        yield* sql`DELETE FROM seen WHERE position IN (SELECT position FROM seen ORDER BY position LIMIT ${n - config.seenCapacity})`
      }
      return false
    })

  const bumpConversation = (conversation: string, activityAt: number, unread: number) =>
    sql`INSERT INTO conversations (conversation, last_at, unread) VALUES (${conversation}, ${activityAt}, ${unread})
        ON CONFLICT (conversation) DO UPDATE SET last_at = max(last_at, excluded.last_at), unread = unread + excluded.unread`

  /** Moves an outgoing message's status forward inside the caller's transaction; fails if there is no such message. */
  const advanceStatusIn = (operation: string, id: string, status: OutgoingStatus) =>
    Effect.gen(function*() {
      const rank = outgoingStatusRank[status]
      const advanced = yield* changes(
        operation,
        sql`UPDATE history SET status = ${status}
            WHERE id = ${id} AND direction = 'out'
              AND (CASE status WHEN 'queued' THEN 0 WHEN 'stored-offline' THEN 1 WHEN 'delivered' THEN 2 ELSE 99 END) < ${rank}`
      )
      if (advanced > 0) return true
      const row = yield* decoded(operation)(queries.statusOf(id))
      if (Option.isNone(row) || row.value.direction !== "out") return yield* new NotFound({ kind: "OutgoingMessage", id })
      return false
    })

  /** What is held that one more `item` would add to, inside the caller's transaction. */
  const mailHeld = (operation: string, item: MailItem) =>
    Effect.gen(function*() {
      const usage = (statement: Effect.Effect<ReadonlyArray<unknown>, SqlError>) =>
        Effect.map(sums(operation, statement), (row) => ({ count: row.n, bytes: row.bytes }))
      const key = item.recipientKey
      const held: MailHeld = {
        recipient: yield* usage(sql`SELECT COUNT(*) AS n, COALESCE(SUM(size), 0) AS bytes FROM mail WHERE recipient_key = ${key}`),
        total: yield* usage(sql`SELECT COUNT(*) AS n, COALESCE(SUM(size), 0) AS bytes FROM mail`),
        sender: item.senderKey === "" ? undefined : {
          inMailbox: yield* usage(sql`SELECT COUNT(*) AS n, COALESCE(SUM(size), 0) AS bytes FROM mail
                                      WHERE sender_key = ${item.senderKey} AND recipient_key = ${key}`),
          total: yield* usage(sql`SELECT COUNT(*) AS n, COALESCE(SUM(size), 0) AS bytes FROM mail WHERE sender_key = ${item.senderKey}`)
        },
        source: item.source === "" ? undefined : {
          inMailbox: yield* usage(sql`SELECT COUNT(*) AS n, COALESCE(SUM(size), 0) AS bytes FROM mail
                                      WHERE source = ${item.source} AND recipient_key = ${key}`),
          total: yield* usage(sql`SELECT COUNT(*) AS n, COALESCE(SUM(size), 0) AS bytes FROM mail WHERE source = ${item.source}`)
        }
      }
      return held
    })

  /** The sender key or source holding the most mails in `item`'s mailbox, ordered as core `compareHolders` orders them. */
  const largestHolderOf = (operation: string, item: MailItem) =>
    Effect.map(
      holderRows(
        operation,
        sql`SELECT 'sender' AS by, sender_key AS key, COUNT(*) AS count FROM mail
              WHERE recipient_key = ${item.recipientKey} AND sender_key <> '' GROUP BY sender_key
            UNION ALL
            SELECT 'source' AS by, source AS key, COUNT(*) AS count FROM mail
              WHERE recipient_key = ${item.recipientKey} AND source <> '' GROUP BY source`
      ),
      largestHolder
    )

  /** The id of the oldest mail (stored_at, then id) that `holder` holds in `item`'s mailbox. */
  const oldestOf = (operation: string, item: MailItem, holder: MailboxHolder) =>
    Effect.map(
      mailIdRows(
        operation,
        holder.by === "sender"
          ? sql`SELECT id FROM mail WHERE recipient_key = ${item.recipientKey} AND sender_key = ${holder.key} ORDER BY stored_at, id LIMIT 1`
          : sql`SELECT id FROM mail WHERE recipient_key = ${item.recipientKey} AND source = ${holder.key} ORDER BY stored_at, id LIMIT 1`
      ),
      (found) => found[0]?.id
    )

  /**
   * What `storeMail` answers for `item`, inside the caller's transaction: "duplicate" when held or
   * seen, else "new" or the quota it breaks, after dropping expired mail once and, in a full
   * mailbox, making room from its largest holder (core `mailboxPlaceFor`; only when `evict`, else
   * one place is enough to answer "new"). A refusal rolls the transaction back, evictions included.
   */
  const admitMail = (operation: string, item: MailItem, evict: boolean) =>
    Effect.gen(function*() {
      const held = yield* count(operation, sql`SELECT COUNT(*) AS n FROM mail WHERE id = ${item.id}`)
      const seen = yield* count(operation, sql`SELECT COUNT(*) AS n FROM seen WHERE id = ${item.id}`)
      if (held.n > 0 || seen.n > 0) return "duplicate" as Stored
      let usage = yield* mailHeld(operation, item)
      let broken = mailQuotaRefusal(config, item, usage)
      if (Option.isSome(broken)) {
        const expired = yield* changes(operation, sql`DELETE FROM mail WHERE expires_at <= ${item.storedAt}`)
        if (expired > 0) {
          usage = yield* mailHeld(operation, item)
          broken = mailQuotaRefusal(config, item, usage)
        }
      }
      for (let evicted = 0; Option.isSome(broken) && evicted < MAX_EVICTIONS_PER_MAIL; evicted++) {
        const place = mailboxPlaceFor(broken.value, usage, yield* largestHolderOf(operation, item))
        const oldest = place === undefined ? undefined : yield* oldestOf(operation, item, place)
        if (oldest === undefined) break
        if (!evict) return "new" as Stored
        yield* sql`DELETE FROM mail WHERE id = ${oldest}`
        // Forgotten as seen too: its sender, still holding it in its outbox, may store it again.
        yield* sql`DELETE FROM seen WHERE id = ${oldest}`
        usage = yield* mailHeld(operation, item)
        broken = mailQuotaRefusal(config, item, usage)
      }
      if (Option.isSome(broken)) return yield* Effect.fail<MailboxFull>(broken.value)
      return "new" as Stored
    })

  const service: ChatStoreService = {
    recordReceived: (message) =>
      guard("recordReceived")(sql.withTransaction(Effect.gen(function*() {
        // A conversation holding its most unread messages takes no new one (a duplicate is still a duplicate).
        const [held] = yield* sql<{ readonly unread: number; readonly known: number }>`
          SELECT (SELECT unread FROM conversations WHERE conversation = ${message.from}) AS unread,
                 (SELECT count(*) FROM history WHERE id = ${message.id}) AS known`
        if ((held?.known ?? 0) > 0) return "duplicate" as Received
        if ((held?.unread ?? 0) >= config.maxUnreadPerConversation) return "full" as Received
        const inserted = yield* changes(
          "recordReceived",
          sql`INSERT INTO history (id, conversation, direction, from_user, to_user, sequence, sent_at, text, status, received_at, read)
              VALUES (${message.id}, ${message.from}, 'in', ${message.from}, ${message.to}, ${message.sequence}, ${message.sentAt},
                      ${message.text}, 'received', ${message.receivedAt}, 0)
              ON CONFLICT (id) DO NOTHING`
        )
        if (inserted === 0) return "duplicate" as Received
        yield* bumpConversation(message.from, message.receivedAt, 1)
        yield* markSeenIn("recordReceived", message.id, message.receivedAt)
        return "new" as Received
      }))),

    history: (conversation, page) => {
      const limit = clampLimit(page.limit, config.maxPageSize)
      if (limit === 0) return Effect.succeed([])
      return guard("history")(Effect.map(
        decoded("history")(queries.history({ conversation, limit, before: page.before })),
        (rows) => rows.slice().reverse()
      ))
    },

    conversations: (options) => {
      const limit = clampLimit(options?.limit ?? config.maxPageSize, config.maxPageSize)
      return guard("conversations")(decoded("conversations")(queries.conversations(limit)))
    },

    markRead: (conversation) =>
      guard("markRead")(sql.withTransaction(Effect.gen(function*() {
        const marked = yield* changes(
          "markRead",
          sql`UPDATE history SET read = 1 WHERE conversation = ${conversation} AND direction = 'in' AND read = 0`
        )
        yield* sql`UPDATE conversations SET unread = 0 WHERE conversation = ${conversation}`
        return marked
      }))),

    nextDueAt: guard("nextDueAt")(
      Effect.map(earliest("nextDueAt", sql`SELECT MIN(next_attempt_at) AS n FROM outbox`), (row) => Option.fromNullable(row.n))
    ),

    message: (id) => guard("message")(decoded("message")(queries.message(id))),

    setStatus: (id, status) =>
      guard("setStatus")(sql.withTransaction(
        Effect.map(advanceStatusIn("setStatus", id, status), (advanced) => advanced ? "advanced" as const : "unchanged" as const)
      )),

    send: (draft, build, nextAttemptAt) =>
      guard("send")(sql.withTransaction(Effect.gen(function*() {
        const forRecipient = yield* count("send", sql`SELECT COUNT(*) AS n FROM outbox WHERE recipient = ${draft.to}`)
        const total = yield* count("send", sql`SELECT COUNT(*) AS n FROM outbox`)
        const refused = outboxQuotaBroken(config, draft.to, { recipientCount: forRecipient.n, totalCount: total.n })
        if (Option.isSome(refused)) return yield* refused.value
        const { n: sequence } = yield* count(
          "send",
          sql`SELECT COALESCE(MAX(sequence), 0) + 1 AS n FROM history WHERE conversation = ${draft.to} AND direction = 'out'`
        )
        // The id is known only once the envelope is sealed with the sequence; the transaction keeps the
        // sequence and the quota counts valid meanwhile, and a builder that fails, dies or is interrupted
        // rolls back a transaction that has written nothing.
        const { id, envelope } = yield* build(sequence)
        const inserted = yield* changes(
          "send",
          sql`INSERT INTO history (id, conversation, direction, from_user, to_user, sequence, sent_at, text, status, received_at, read)
              VALUES (${id}, ${draft.to}, 'out', ${draft.from}, ${draft.to}, ${sequence}, ${draft.sentAt}, ${draft.text}, 'queued', NULL, 1)
              ON CONFLICT (id) DO NOTHING`
        )
        if (inserted === 0) return yield* new DuplicateMessage({ id })
        yield* sql`INSERT INTO outbox (id, recipient, sequence, envelope_json, enqueued_at, next_attempt_at, attempts)
                   VALUES (${id}, ${draft.to}, ${sequence}, ${envelope}, ${draft.sentAt}, ${nextAttemptAt}, 0)`
        yield* bumpConversation(draft.to, draft.sentAt, 0)
        return { id, sequence }
      }))),

    due: (now, limit) => {
      return guard("due")(decoded("due")(queries.due({ now, limit: clampLimit(limit, config.maxPageSize) })))
    },

    reschedule: (id, nextAttemptAt, attempts) =>
      guard("reschedule")(Effect.gen(function*() {
        const updated = yield* changes(
          "reschedule",
          sql`UPDATE outbox SET next_attempt_at = ${nextAttemptAt}, attempts = ${attempts} WHERE id = ${id}`
        )
        if (updated === 0) return yield* new NotFound({ kind: "OutboxEntry", id })
      })),

    keepAsStoredOffline: (id, nextAttemptAt, attempts) =>
      guard("keepAsStoredOffline")(sql.withTransaction(Effect.gen(function*() {
        const updated = yield* changes(
          "keepAsStoredOffline",
          sql`UPDATE outbox SET next_attempt_at = ${nextAttemptAt}, attempts = ${attempts} WHERE id = ${id}`
        )
        if (updated === 0) return yield* new NotFound({ kind: "OutboxEntry", id })
        yield* advanceStatusIn("keepAsStoredOffline", id, "stored-offline")
      }))),

    complete: (id, status) =>
      guard("complete")(sql.withTransaction(Effect.gen(function*() {
        const removed = yield* changes("complete", sql`DELETE FROM outbox WHERE id = ${id}`)
        yield* advanceStatusIn("complete", id, status)
        return removed > 0 ? "completed" as const : "not-pending" as const
      }))),

    storeMail: (mail: NewMail) =>
      guard("storeMail")(sql.withTransaction(Effect.gen(function*() {
        const item = heldMail(mail)
        const outcome = yield* admitMail("storeMail", item, true)
        if (outcome === "duplicate") return outcome
        yield* sql`INSERT INTO mail (id, recipient_key, envelope_json, size, stored_at, expires_at, forwarded,
                                     sender_key, source, postage_json, full_expires_at)
                   VALUES (${item.id}, ${item.recipientKey}, ${item.envelopeJson}, ${item.size}, ${item.storedAt},
                           ${item.expiresAt}, 0, ${item.senderKey}, ${item.source}, ${item.postageJson}, ${item.fullExpiresAt})`
        yield* markSeenIn("storeMail", item.id, item.storedAt)
        return outcome
      }))),

    checkMail: (mail) => guard("checkMail")(sql.withTransaction(admitMail("checkMail", heldMail(mail), false))),

    extendMail: (recipientKey) =>
      guard("extendMail")(
        changes(
          "extendMail",
          sql`UPDATE mail SET expires_at = full_expires_at WHERE recipient_key = ${recipientKey} AND expires_at < full_expires_at`
        )
      ),

    mailFor: (recipientKey, limit) =>
      guard("mailFor")(decoded("mailFor")(queries.mailFor({ recipientKey, limit: clampLimit(limit, config.maxPageSize) }))),

    removeMail: (recipientKey, ids) => {
      if (ids.length === 0) return Effect.succeed(0)
      const chunks: Array<ReadonlyArray<string>> = []
      for (let start = 0; start < ids.length; start += MAX_IDS_PER_STATEMENT) {
        chunks.push(ids.slice(start, start + MAX_IDS_PER_STATEMENT))
      }
      return guard("removeMail")(sql.withTransaction(
        Effect.reduce(chunks, 0, (removed, chunk) =>
          Effect.map(
            changes("removeMail", sql`DELETE FROM mail WHERE recipient_key = ${recipientKey} AND id IN ${sql.in(chunk)}`),
            (n) => removed + n
          ))
      ))
    },

    expireMail: (now) => guard("expireMail")(changes("expireMail", sql`DELETE FROM mail WHERE expires_at <= ${now}`)),

    markForwarded: (id) =>
      guard("markForwarded")(sql.withTransaction(Effect.gen(function*() {
        const row = yield* decoded("markForwarded")(queries.forwardedOf(id))
        if (Option.isNone(row)) return yield* new NotFound({ kind: "Mail", id })
        if (row.value.forwarded) return false
        yield* sql`UPDATE mail SET forwarded = 1 WHERE id = ${id}`
        return true
      }))),

    allMail: (limit, after) =>
      guard("allMail")(decoded("allMail")(queries.allMail({ limit: clampLimit(limit, config.maxPageSize), after }))),

    markSeen: (id, now) => guard("markSeen")(sql.withTransaction(markSeenIn("markSeen", id, now))),

    isSeen: (id) =>
      guard("isSeen")(
        Effect.map(count("isSeen", sql`SELECT COUNT(*) AS n FROM seen WHERE id = ${id}`), ({ n }) => n > 0)
      ),

    pruneSeen: (olderThan) => guard("pruneSeen")(changes("pruneSeen", sql`DELETE FROM seen WHERE seen_at < ${olderThan}`)),

    putRecord: (key, recordJson, expiresAt, signingKey) =>
      guard("putRecord")(sql.withTransaction(Effect.gen(function*() {
        const updated = yield* changes(
          "putRecord",
          sql`UPDATE dht_records SET record_json = ${recordJson}, expires_at = ${expiresAt}, signing_key = ${signingKey}
              WHERE key = ${key}`
        )
        if (updated > 0) return
        const { n } = yield* count("putRecord", sql`SELECT COUNT(*) AS n FROM dht_records`)
        if (n >= config.maxRecords) return yield* new RecordsFull({ limit: config.maxRecords })
        yield* sql`INSERT INTO dht_records (key, record_json, expires_at, signing_key)
                   VALUES (${key}, ${recordJson}, ${expiresAt}, ${signingKey})`
      }))),

    countRecordsOf: (signingKey, now, except) =>
      guard("countRecordsOf")(
        Effect.map(
          count(
            "countRecordsOf",
            sql`SELECT COUNT(*) AS n FROM dht_records WHERE signing_key = ${signingKey} AND expires_at > ${now} AND key <> ${except}`
          ),
          ({ n }) => n
        )
      ),

    removeRecord: (key) =>
      guard("removeRecord")(Effect.map(changes("removeRecord", sql`DELETE FROM dht_records WHERE key = ${key}`), (n) => n > 0)),

    getRecord: (key, now) => guard("getRecord")(decoded("getRecord")(queries.record({ key, now }))),

    expireRecords: (now) =>
      guard("expireRecords")(changes("expireRecords", sql`DELETE FROM dht_records WHERE expires_at <= ${now}`)),

    allRecords: guard("allRecords")(decoded("allRecords")(queries.allRecords(undefined))),

    saveRoutingSnapshot: (contacts) =>
      guard("saveRoutingSnapshot")(sql.withTransaction(Effect.gen(function*() {
        yield* sql`DELETE FROM routing_snapshot`
        for (const contact of snapshotToKeep(contacts, config.maxSnapshotContacts)) {
          yield* sql`INSERT INTO routing_snapshot (node_id, host, port, last_seen)
                     VALUES (${contact.nodeId}, ${contact.host}, ${contact.port}, ${contact.lastSeen})`
        }
      }))),

    loadRoutingSnapshot: guard("loadRoutingSnapshot")(decoded("loadRoutingSnapshot")(queries.routingSnapshot(undefined))),

    pinOf: (username) => guard("pinOf")(decoded("pinOf")(queries.pinOf(username))),

    pin: (pin) =>
      Effect.zipRight(
        checkPin(pin),
        guard("pin")(sql.withTransaction(Effect.gen(function*() {
          const updated = yield* changes(
            "pin",
            sql`UPDATE contact_pins SET signing_key = ${pin.signingKey}, fingerprint = ${pin.fingerprint},
                  pinned_at = ${pin.pinnedAt}, source = ${pin.source}
                WHERE username = ${pin.username}`
          )
          if (updated > 0) return
          const { n } = yield* count("pin", sql`SELECT COUNT(*) AS n FROM contact_pins`)
          if (n >= config.maxPins) return yield* new PinsFull({ username: pin.username, limit: config.maxPins })
          yield* sql`INSERT INTO contact_pins (username, signing_key, fingerprint, pinned_at, source)
                     VALUES (${pin.username}, ${pin.signingKey}, ${pin.fingerprint}, ${pin.pinnedAt}, ${pin.source})`
        })))
      ),

    pins: guard("pins")(decoded("pins")(queries.pins(undefined))),

    // One transaction, so the counts describe one moment.
    stats: guard("stats")(sql.withTransaction(Effect.gen(function*() {
      const countOf = (table: string) =>
        Effect.map(count("stats", sql`SELECT COUNT(*) AS n FROM ${sql(table)}`), ({ n }) => n)
      const mailTotals = yield* sums("stats", sql`SELECT COUNT(*) AS n, COALESCE(SUM(size), 0) AS bytes FROM mail`)
      return {
        messages: yield* countOf("history"),
        conversations: yield* countOf("conversations"),
        outbox: yield* countOf("outbox"),
        mail: mailTotals.n,
        mailBytes: mailTotals.bytes,
        seen: yield* countOf("seen"),
        records: yield* countOf("dht_records"),
        snapshotContacts: yield* countOf("routing_snapshot"),
        pins: yield* countOf("contact_pins")
      }
    })))
  }
  return service
}
