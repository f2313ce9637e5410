/**
 * What the terminal chat remembers in the data directory between runs:
 * `network.json`, how this data directory joins its network (the bootstrap
 * addresses chosen at the first run, none for a network of its own). The
 * chat reads it to start its node the same way next time, and writes it only
 * once its node has reached the network that way (see `ChatState`), so an
 * address that never answered is not tried again at every start; it is
 * written atomically, and a damaged file is reported rather than silently
 * replaced. `chat-settings.json` keeps the chat's preferences (the bell and
 * desktop notifications for new messages), changed with `/bell` and `/notify`.
 */
import { FileSystem, Path } from "@effect/platform"
import { Effect, Either, Option, Schema } from "effect"
import { type Address, formatAddress, parseAddress } from "../../core/Contact.js"
import { readFileIfExists, writeFileAtomic } from "../../platform/AtomicFile.js"
import { DATA_DIR_MODE, HostPort } from "../../platform/RuntimeFiles.js"

/** Name of the settings file inside the data directory. */
export const NETWORK_FILE = "network.json"

/** Most bootstrap addresses remembered. */
export const MAX_REMEMBERED_BOOTSTRAP = 8

/** Schema of `network.json`, version 1. */
export const NetworkSettings = Schema.Struct({
  version: Schema.Literal(1),
  /** Nodes to join through, `host:port`; empty for a network this data directory started. */
  bootstrap: Schema.Array(HostPort).pipe(Schema.maxItems(MAX_REMEMBERED_BOOTSTRAP))
})
/** @see NetworkSettings */
export type NetworkSettings = typeof NetworkSettings.Type

/** `network.json` cannot be read or written. */
export class SettingsError extends Schema.TaggedError<SettingsError>()("SettingsError", {
  path: Schema.String,
  reason: Schema.Literal("Unreadable", "Corrupt", "Unwritable"),
  detail: Schema.String
}) {
  override get message(): string {
    switch (this.reason) {
      case "Unreadable":
        return `cannot read ${this.path}: ${this.detail}`
      case "Corrupt":
        return this.path.endsWith(PREFERENCES_FILE)
          ? `${this.path} is damaged (${this.detail}): new messages are not announced until /bell or /notify saves it again`
          : `${this.path} is damaged (${this.detail}); remove it to choose the network again`
      case "Unwritable":
        return `cannot save ${this.path}: ${this.detail}`
    }
  }
}

const decode = Schema.decodeUnknownEither(Schema.parseJson(NetworkSettings))

/** The bootstrap addresses of `settings`. */
export const bootstrapOf = (settings: NetworkSettings): ReadonlyArray<Address> =>
  settings.bootstrap.flatMap((text) => Either.match(parseAddress(text), { onLeft: () => [], onRight: (address) => [address] }))

/** The saved settings of `dataDir`, or `None` before the first run chose a network. */
export const readSettings = (
  dataDir: string
): Effect.Effect<Option.Option<NetworkSettings>, SettingsError, FileSystem.FileSystem | Path.Path> =>
  Effect.gen(function*() {
    const path = (yield* Path.Path).join(dataDir, NETWORK_FILE)
    const bytes = yield* readFileIfExists(path).pipe(
      Effect.mapError((error) =>
        new SettingsError({ path, reason: error._tag === "BadArgument" ? "Corrupt" : "Unreadable", detail: error.message })
      )
    )
    if (Option.isNone(bytes)) return Option.none()
    return yield* Either.match(decode(new TextDecoder().decode(bytes.value)), {
      onLeft: (error) => Effect.fail(new SettingsError({ path, reason: "Corrupt", detail: error.message.split("\n")[0] ?? "" })),
      onRight: (settings) => Effect.succeed(Option.some(settings))
    })
  })

/** Saves how `dataDir` joins its network (creating the directory, owner-only, if needed). */
export const writeSettings = (
  dataDir: string,
  bootstrap: ReadonlyArray<Address>
): Effect.Effect<void, SettingsError, FileSystem.FileSystem | Path.Path> =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const path = (yield* Path.Path).join(dataDir, NETWORK_FILE)
    const settings: NetworkSettings = {
      version: 1,
      bootstrap: bootstrap.slice(0, MAX_REMEMBERED_BOOTSTRAP).map(formatAddress)
    }
    yield* fs.makeDirectory(dataDir, { recursive: true, mode: DATA_DIR_MODE }).pipe(
      Effect.zipRight(writeFileAtomic(path, `${JSON.stringify(settings, null, 2)}\n`, { mode: 0o600 })),
      Effect.mapError((error) => new SettingsError({ path, reason: "Unwritable", detail: error.message }))
    )
  })

/** Name of the chat's preferences file inside the data directory. */
export const PREFERENCES_FILE = "chat-settings.json"

/**
 * Schema of `chat-settings.json`, version 1: how the chat tells the user of
 * a new message (`/bell`, `/notify`).
 */
export const ChatPreferences = Schema.Struct({
  version: Schema.Literal(1),
  /** Ring the terminal bell when a message arrives. */
  bell: Schema.Boolean,
  /** Show a desktop notification (notify-send) when a message arrives. */
  desktop: Schema.Boolean
})
/** @see ChatPreferences */
export type ChatPreferences = typeof ChatPreferences.Type

/** The preferences before the user chose any: no bell, no notification. */
export const DEFAULT_PREFERENCES: ChatPreferences = { version: 1, bell: false, desktop: false }

const decodePreferences = Schema.decodeUnknownEither(Schema.parseJson(ChatPreferences))

/** The chat's preferences in `dataDir` (the defaults when none were saved); a damaged file is reported. */
export const readPreferences = (
  dataDir: string
): Effect.Effect<ChatPreferences, SettingsError, FileSystem.FileSystem | Path.Path> =>
  Effect.gen(function*() {
    const path = (yield* Path.Path).join(dataDir, PREFERENCES_FILE)
    const bytes = yield* readFileIfExists(path).pipe(
      Effect.mapError((error) =>
        new SettingsError({ path, reason: error._tag === "BadArgument" ? "Corrupt" : "Unreadable", detail: error.message })
      )
    )
    if (Option.isNone(bytes)) return DEFAULT_PREFERENCES
    return yield* Either.match(decodePreferences(new TextDecoder().decode(bytes.value)), {
      onLeft: (error) => Effect.fail(new SettingsError({ path, reason: "Corrupt", detail: error.message.split("\n")[0] ?? "" })),
      onRight: Effect.succeed
    })
  })

/** Saves the chat's preferences in `dataDir`, atomically and owner-only. */
export const writePreferences = (
  dataDir: string,
  preferences: ChatPreferences
): Effect.Effect<void, SettingsError, FileSystem.FileSystem | Path.Path> =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const path = (yield* Path.Path).join(dataDir, PREFERENCES_FILE)
    yield* fs.makeDirectory(dataDir, { recursive: true, mode: DATA_DIR_MODE }).pipe(
      Effect.zipRight(writeFileAtomic(path, `${JSON.stringify(preferences, null, 2)}\n`, { mode: 0o600 })),
      Effect.mapError((error) => new SettingsError({ path, reason: "Unwritable", detail: error.message }))
    )
  })
