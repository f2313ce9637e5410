/**
 * The `peerchat` commands: `chat` (also `peerchat` alone) is the interactive
 * terminal chat; `start` runs a node and `stop` stops it; `register`, `whois`, `status`,
 * `peers`, `send`, `history` and `inbox` talk to the running node of a data
 * directory through its control API, and so do `id`, `verify`, `trust` and
 * `contacts`, which show and manage the keys names resolve to (a name may be
 * given as `name@fingerprint` to mean exactly one key). Every command takes
 * `--data-dir`, and all but `chat` take `--json`. A command fails with its
 * typed error; `Cli.ts` prints it and picks the exit code (`Failure.ts`).
 *
 * This module is loaded by every command, so it imports only what parsing
 * the command line needs: the control client (`client/ControlSession.ts`)
 * is imported when a command that talks to a node runs, the node
 * (`NodeProgram.ts`) and the terminal chat (`chat/ChatProgram.ts`) when
 * `start` or `chat` runs.
 */
import * as Args from "@effect/cli/Args"
import * as Command from "@effect/cli/Command"
import * as HelpDoc from "@effect/cli/HelpDoc"
import * as Options from "@effect/cli/Options"
import * as ValidationError from "@effect/cli/ValidationError"
import * as Console from "effect/Console"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import { networkInterfaces } from "node:os"
import { MAX_DELIVERY_WAIT, MAX_HISTORY_LIMIT } from "../chat/ControlLimits.js"
import { ChatConfig } from "../chat/ChatConfig.js"
import type { ConversationSummary, HistoryEntry, OutgoingStatus } from "../chat/ChatStore.js"
import { type Address, parseAddress } from "../core/Contact.js"
import { parseDurationText } from "../core/DurationText.js"
import type { BootstrapState, NodeStatus, PeerEntry, WhoisAnswer } from "../node/Control.js"
import type { ControlClient } from "../platform/ControlClient.js"
import { awaitProcessExit, resolveDataDir } from "../platform/RuntimeFiles.js"
import { formatLocalTime, printableLines, printableText } from "./chat/PlainText.js"
import { DEFAULT_JOIN_TIMEOUT_MS } from "./chat/Presence.js"
import { awaitDeliveryWithProgress, progressStyleFor } from "./client/WaitProgress.js"
import { contactsLines, identityLines, nameRefOf, trustSummary, verificationLines } from "./chat/TrustText.js"
import { MAX_CLAIM_DIFFICULTY } from "../core/ClaimProof.js"
import { defaultClaimWorkConfig } from "../node/ClaimWork.js"

export { formatLocalTime, printableText }

/** `--data-dir`: taken by every command. */
const dataDir = Options.text("data-dir").pipe(
  Options.withPseudoName("DIR"),
  Options.withDescription("the node's data directory (default: $PEERCHAT_DATA_DIR, else ~/.peerchat)"),
  Options.optional
)

/** `--json`: taken by every command but `chat`. */
const json = Options.boolean("json").pipe(
  Options.withDescription("print JSON: one document on stdout; a failure as {\"error\": {\"tag\", \"message\"}} on stderr")
)

/** A one-line usage error; `Cli.ts` prints it as `peerchat: <message>` and exits with the usage code. */
const usageError = (message: string) => ValidationError.invalidValue(HelpDoc.p(message))

/** Reads `host:port`; a bad value is a one-line usage error naming the option. */
const parseAddressOption = (name: string) => (text: string) =>
  Either.match(parseAddress(text), {
    onLeft: (error) => Effect.fail(usageError(`--${name}: ${error.message}`)),
    onRight: Effect.succeed
  })

/**
 * An integer option within [min, max]. It is read as text and checked here,
 * so every wrong value (not a number, a fraction, out of range) gets the same
 * one-line message naming the option and the range.
 */
const boundedInteger = (name: string, min: number, max: number, fallback: number, description: string) =>
  Options.text(name).pipe(
    Options.withPseudoName("N"),
    Options.withDescription(`${description} (${min}..${max}, default ${fallback})`),
    Options.mapEffect((text) => {
      const value = /^-?[0-9]+$/.test(text.trim()) ? Number(text.trim()) : Number.NaN
      return Number.isSafeInteger(value) && value >= min && value <= max
        ? Effect.succeed(value)
        : Effect.fail(usageError(`--${name} must be an integer between ${min} and ${max}, got ${JSON.stringify(text)}`))
    }),
    Options.withDefault(fallback)
  )

/** `--claim-difficulty`: the name-claim proof of work a node solves, and the least it accepts. */
const claimDifficulty = boundedInteger(
  "claim-difficulty",
  0,
  MAX_CLAIM_DIFFICULTY,
  defaultClaimWorkConfig.claimDifficulty,
  "proof-of-work bits of a name claim (about 2^N scrypt hashes; 10 is about 2 s of one core) and the least " +
    "accepted from others; every node of a network should use the same value"
)

const address = (name: string, description: string) =>
  Options.text(name).pipe(
    Options.withPseudoName("HOST:PORT"),
    Options.withDescription(description),
    Options.mapEffect(parseAddressOption(name))
  )

/** `--bootstrap`, repeatable: the peers to join through. */
const bootstrap = (description: string) =>
  Options.text("bootstrap").pipe(
    Options.withPseudoName("HOST:PORT"),
    Options.withDescription(description),
    Options.repeated,
    Options.mapEffect((texts) => Effect.forEach(texts, parseAddressOption("bootstrap")))
  )

/**
 * Raised by `send --wait` after printing the status of a message that was not
 * delivered in time: it exits with the timeout code (2), with nothing on stderr.
 */
export class DeliveryPending extends Schema.TaggedError<DeliveryPending>()("DeliveryPending", {
  to: Schema.String,
  status: Schema.String
}) {
  override get message(): string {
    return `the message to ${this.to} is ${this.status}, not delivered yet`
  }
}

const isWildcardHost = (host: string): boolean => host === "0.0.0.0" || host === "::" || host === ""

/**
 * The address to publish when none is given: the listen address, or, for a
 * wildcard listen address, this machine's first non-loopback IPv4 address
 * (loopback when it has none). Port 0 stands for the port actually bound.
 */
const defaultAdvertise = (listen: Address): Address | undefined => {
  if (!isWildcardHost(listen.host)) return undefined
  const external = Object.values(networkInterfaces())
    .flatMap((entries) => entries ?? [])
    .find((entry) => entry.family === "IPv4" && !entry.internal)
  return { host: external?.address ?? "127.0.0.1", port: listen.port }
}

const start = Command.make(
  "start",
  {
    dataDir,
    json,
    listen: address("listen", "where to accept peers (default 0.0.0.0:4242; port 0 picks a free port)").pipe(
      Options.withDefault({ host: "0.0.0.0", port: 4242 })
    ),
    advertise: address("advertise", "the address to publish to peers (default: the listen address)").pipe(Options.optional),
    noPortMapping: Options.boolean("no-port-mapping").pipe(
      Options.withDescription(
        "do not ask the home router to forward a port (NAT-PMP, else UPnP IGD); by default a node on a private address asks, " +
          "and publishes the router's address once it does (never with --advertise)"
      )
    ),
    bootstrap: bootstrap("a peer to join through; repeat the option for more; none starts a new network"),
    api: address("api", "where the local control API listens (loopback only; default 127.0.0.1:0, a free port)").pipe(
      Options.withDefault({ host: "127.0.0.1", port: 0 })
    ),
    k: boundedInteger("k", 1, 64, 20, "bucket size and replication factor"),
    alpha: boundedInteger("alpha", 1, 32, 3, "parallel queries per lookup"),
    callTimeout: boundedInteger("timeout-ms", 50, 60_000, 2000, "time limit of one call to a peer, in ms"),
    claimDifficulty
  },
  (options) =>
    Effect.gen(function*() {
      const dir = yield* resolveDataDir(options.dataDir)
      const advertise = Option.getOrUndefined(options.advertise) ?? defaultAdvertise(options.listen)
      // Loaded on demand: the client commands start without the node.
      const { runNode } = yield* Effect.promise(() => import("./NodeProgram.js"))
      return yield* runNode({
        dataDir: dir,
        listen: options.listen,
        advertise,
        // An address given by hand (a port forwarded by hand) is what peers are told; nothing to map then.
        portMapping: !options.noPortMapping && Option.isNone(options.advertise),
        bootstrap: options.bootstrap,
        api: options.api,
        k: options.k,
        alpha: options.alpha,
        callTimeout: Duration.millis(options.callTimeout),
        claimDifficulty: options.claimDifficulty,
        json: options.json
      })
    })
).pipe(Command.withDescription("run a Peerchat node in the foreground until interrupted (Ctrl-C or SIGTERM)"))

/**
 * Runs `use` with a control client for the data directory. The client and
 * the schemas it decodes with are loaded here, when the command runs
 * (`client/ControlSession.ts`).
 */
const withClient = <A, E>(dir: Option.Option<string>, use: (client: ControlClient) => Effect.Effect<A, E>) =>
  Effect.gen(function*() {
    const resolved = yield* resolveDataDir(dir)
    const { withControlClient } = yield* Effect.promise(() => import("./client/ControlSession.js"))
    return yield* withControlClient(resolved, use)
  })

/**
 * Prints `value` as JSON, or `human`, each of its lines made printable: it
 * carries text other nodes wrote (a refusal's detail, a router's fault), which
 * must not reach the terminal as escape sequences.
 */
const printJsonOr = (asJson: boolean, value: unknown, human: string) =>
  Console.log(asJson ? JSON.stringify(value) : printableLines(human))

const describeBootstrap = (state: BootstrapState): string => {
  switch (state._tag) {
    case "Standalone":
      return "standalone (a new network; others join through this node)"
    case "Joining":
      return state.lastError === null
        ? "joining (first attempt in progress)"
        : `joining (attempt ${state.attempts} failed: ${state.lastError})`
    case "Joined":
      return "joined"
  }
}

const describeCounts = (counts: Readonly<Record<string, number>>): string => {
  const entries = Object.entries(counts)
  const total = entries.reduce((sum, [, count]) => sum + count, 0)
  return entries.length === 0 ? "0" : `${total} (${entries.map(([reason, count]) => `${reason} ${count}`).join(", ")})`
}

/** Whether others can call this node, in words, and the relays it is reached through (behind a NAT). */
const describeReachability = (status: NodeStatus): string => {
  const relays = status.circuits?.relays ?? []
  const mapping = status.connections.portMapping
  switch (status.reachability) {
    case "Public":
      return mapping?._tag === "Mapped"
        ? `reachable: public, through a port mapping on the router (${mapping.protocol}) ${mapping.external}`
        : "reachable: peers can call this node at its address"
    case "Private": {
      // Why the router did not help, when it was asked (a node on a public address never asks).
      const unmapped = mapping?._tag === "Unavailable" ? ` (${mapping.reason})` : ""
      return (relays.length === 0
        ? "not reachable: peers cannot call this node (behind a NAT or a firewall); it can still call out; no relay yet"
        : `behind a NAT or a firewall: reached through ${relays.length} relay${relays.length === 1 ? "" : "s"} (${relays.join(", ")})`) +
        unmapped
    }
    case "Unknown":
      return "unknown (not checked yet, or peers disagree)"
  }
}

/** What this node relays for nodes behind NATs, when it does. */
const describeRelaying = (circuits: NonNullable<NodeStatus["circuits"]>): string =>
  `${circuits.reservationsServed} reservation${circuits.reservationsServed === 1 ? "" : "s"} held for nodes behind NATs, ` +
  `${circuits.circuitsServed} circuit${circuits.circuitsServed === 1 ? "" : "s"} open, ${circuits.circuitsRelayed} relayed since start`

type HolePunches = NonNullable<NonNullable<NodeStatus["circuits"]>["holePunches"]>

const holePunchCount = (punches: HolePunches): number => punches.succeeded + punches.failed + punches.answered + punches.refused

/** Relayed conversations moved to direct connections (hole punching), as caller and as callee. */
const describeHolePunches = (punches: HolePunches): string =>
  `${punches.succeeded} of ${punches.succeeded + punches.failed} relayed peers now reached directly (hole punched); ` +
  `${punches.answered} peers' punches answered, ${punches.refused} turned down`

/** Open connections, and what the resource limits refused (how a node under a flood shows it). */
const describeConnections = (health: NodeStatus["connections"]): string =>
  `${health.inbound} in (${health.pending} in handshake), ${health.outbound} out; ` +
  `refused ${describeConnectionsRefused(health)}; rate-limited ${describeCounts(health.rateLimited)}`

const describeConnectionsRefused = (health: NodeStatus["connections"]): string => describeCounts(health.refusedConnections)

const megabytes = (bytes: number): string => `${(bytes / 2 ** 20).toFixed(1)} MB`

/** The node process's resident memory and where it goes. */
const describeMemory = (memory: NonNullable<NodeStatus["memory"]>): string =>
  `${megabytes(memory.rss)} resident: code ${megabytes(memory.code)} (shared), heap ${megabytes(memory.heapUsed)} ` +
  `(of ${megabytes(memory.heapCommitted)} committed), buffers ${megabytes(memory.buffers)}, native ${megabytes(memory.native)}`

/** `peerchat status`: one field a line, and the warning about the user's own name when there is one. */
export const describeStatus = (status: NodeStatus): string =>
  [
    `node      ${status.nodeId}`,
    `listen    ${status.listen}`,
    `username  ${status.username ?? "(not registered)"}`,
    // Live: heard from in the last 2 minutes (core PeerLiveness); known: the routing table, live or not.
    `peers     ${status.livePeers === undefined ? status.peers : `${status.livePeers} live, ${status.peers} known`}`,
    `network   ${describeBootstrap(status.bootstrap)}`,
    `reach     ${describeReachability(status)}`,
    ...(status.circuits === undefined || status.circuits.reservationsServed + status.circuits.circuitsRelayed === 0
      ? []
      : [`relaying  ${describeRelaying(status.circuits)}`]),
    ...(status.circuits?.holePunches === undefined || holePunchCount(status.circuits.holePunches) === 0
      ? []
      : [`punched   ${describeHolePunches(status.circuits.holePunches)}`]),
    `links     ${describeConnections(status.connections)}`,
    ...(status.memory === undefined ? [] : [`memory    ${describeMemory(status.memory)}`]),
    ...(status.nameWarning === undefined ? [] : [`warning   ${status.nameWarning}`])
  ].join("\n")

/** The documented `network` field of `status --json`: the join state, named `state`, and its own fields. */
const networkJson = (state: BootstrapState) => {
  switch (state._tag) {
    case "Standalone":
      return { state: state._tag }
    case "Joining":
      return { state: state._tag, attempts: state.attempts, lastError: state.lastError, nextAttemptAt: state.nextAttemptAt }
    case "Joined":
      return { state: state._tag, joinedAt: state.joinedAt }
  }
}

/**
 * The documented `status --json` document (docs/user-guide.md): every field
 * always present (`null` when unset), the join state as `network.state`.
 * Fields the node adds to its status later are passed through as they are.
 */
export const statusJson = (status: NodeStatus) => {
  const { bootstrap: joinState, nameWarning, connections, reachability, ...rest } = status
  return {
    ...rest,
    network: networkJson(joinState),
    reachability,
    connections: {
      inbound: connections.inbound,
      pending: connections.pending,
      outbound: connections.outbound,
      refused: connections.refusedConnections,
      rateLimited: connections.rateLimited,
      bytesRelayed: connections.bytesRelayed ?? 0
    },
    // The port mapping on the home router (null: not asked, as on a public or loopback address).
    portMapping: connections.portMapping ?? null,
    nameWarning: nameWarning ?? null
  }
}

/** `peerchat whois` (and `register`): where the user is, the fingerprint of their key, and any warning. */
export const describeUser = (answer: WhoisAnswer): string =>
  [
    `${answer.username} is at ${
      answer.addresses.length > 0 ? answer.addresses.join(", ") : `relays ${(answer.relays ?? []).join(", ")}`
    } (node ${answer.nodeId})`,
    `fingerprint ${answer.fingerprint}  (exactly this key: ${nameRefOf(answer)})`,
    ...(answer.warning === undefined ? [] : [`warning: ${answer.warning}`])
  ].join("\n")

const describePeers = (peers: ReadonlyArray<PeerEntry>): string =>
  peers.length === 0 ? "no peers yet" : peers.map((peer) => `${peer.nodeId}  ${peer.address}`).join("\n")

const name = Args.text({ name: "NAME" }).pipe(Args.withDescription("a username (3 to 32 letters, digits, - or _)"))

/** A contact as users name one: `name`, or `name@fingerprint` for exactly one key. */
const nameRef = Args.text({ name: "NAME" }).pipe(
  Args.withDescription("a username, or NAME@FINGERPRINT to mean exactly one key (see peerchat id)")
)

const register = Command.make("register", { dataDir, json, name }, (options) =>
  withClient(options.dataDir, (client) =>
    Effect.flatMap(client.register(options.name), (answer) =>
      printJsonOr(options.json, answer, `registered ${answer.username}: ${describeUser(answer)}`)))
).pipe(Command.withDescription("claim NAME for this node's user and publish it (solves the claim's proof of work)"))

const whois = Command.make("whois", { dataDir, json, name: nameRef }, (options) =>
  withClient(options.dataDir, (client) =>
    Effect.flatMap(client.whois(options.name), (answer) => printJsonOr(options.json, answer, describeUser(answer))))
).pipe(Command.withDescription("find a user in the network: their address, node and the fingerprint of their key"))

const id = Command.make("id", { dataDir, json }, (options) =>
  withClient(options.dataDir, (client) =>
    Effect.flatMap(client.id, (answer) => printJsonOr(options.json, answer, identityLines(answer).join("\n"))))
).pipe(Command.withDescription("print how others name exactly you: NAME@FINGERPRINT"))

const verify = Command.make("verify", {
  dataDir,
  json,
  name: nameRef,
  confirm: Options.boolean("confirm").pipe(
    Options.withDescription("record that the safety numbers matched (the contact's key becomes verified)")
  )
}, (options) =>
  withClient(options.dataDir, (client) =>
    Effect.flatMap(client.verify(options.name, options.confirm), (answer) =>
      printJsonOr(
        options.json,
        answer,
        verificationLines(answer, `peerchat verify ${answer.contact.username} --confirm`).join("\n")
      )))
).pipe(Command.withDescription("show the safety number to compare with a contact; --confirm records a match"))

const trust = Command.make("trust", {
  dataDir,
  json,
  name,
  key: Options.text("key").pipe(
    Options.withPseudoName("FINGERPRINT"),
    Options.withDescription("the fingerprint of the key to accept for NAME (from NAME, over a channel you trust)")
  )
}, (options) =>
  withClient(options.dataDir, (client) =>
    Effect.flatMap(client.trust(options.name, options.key), (answer) =>
      printJsonOr(options.json, answer, trustSummary(answer))))
).pipe(Command.withDescription("accept a contact's key on purpose, e.g. after it changed and you compared safety numbers"))

const contacts = Command.make("contacts", { dataDir, json }, (options) =>
  withClient(options.dataDir, (client) =>
    Effect.flatMap(client.contacts, (pins) => printJsonOr(options.json, pins, contactsLines(pins).join("\n"))))
).pipe(Command.withDescription("list the contacts whose keys are pinned: name, fingerprint, how and since when"))

const status = Command.make("status", { dataDir, json }, (options) =>
  withClient(options.dataDir, (client) =>
    Effect.flatMap(client.status, (answer) => printJsonOr(options.json, statusJson(answer), describeStatus(answer))))
).pipe(Command.withDescription("show the running node: id, address, username, peers, network and reachability"))

const peers = Command.make("peers", { dataDir, json }, (options) =>
  withClient(options.dataDir, (client) =>
    Effect.flatMap(client.peers, (answer) => printJsonOr(options.json, answer, describePeers(answer))))
).pipe(Command.withDescription("list the contacts in the running node's routing table"))

const text = Args.text({ name: "TEXT" }).pipe(
  Args.withDescription("the message (quote it; at most 16 KiB in UTF-8); - reads it from standard input")
)

/** The `TEXT` of `send` that stands for standard input. */
export const STDIN_TEXT = "-"

/** Reads option `--name`'s duration: seconds (`45`, `2.5`) or a number with a unit (`500ms`, `45s`, `2m`), from `least` to `most`. */
const parseDurationOption = (
  name: string,
  input: string,
  least: Duration.Duration,
  most: Duration.Duration
): Either.Either<Duration.Duration, string> => {
  const parsed = parseDurationText(input)
  if (Option.isNone(parsed)) {
    return Either.left(`--${name}: expected seconds or a duration like 500ms, 45s or 2m, got ${JSON.stringify(input)}`)
  }
  if (Duration.lessThan(parsed.value, least)) return Either.left(`--${name} must be at least ${Duration.format(least)}, got ${input}`)
  if (Duration.greaterThan(parsed.value, most)) return Either.left(`--${name} must be at most ${Duration.format(most)}, got ${input}`)
  return Either.right(parsed.value)
}

/** Reads `--timeout`: at most 10 minutes. */
export const parseWaitTimeout = (input: string): Either.Either<Duration.Duration, string> =>
  parseDurationOption("timeout", input, Duration.zero, MAX_DELIVERY_WAIT)

/** Reads `--join-timeout`: from 1 s to 10 minutes. */
export const parseJoinTimeout = (input: string): Either.Either<Duration.Duration, string> =>
  parseDurationOption("join-timeout", input, Duration.seconds(1), Duration.minutes(10))

/** An option whose text `parse` reads, its error a usage error. */
const durationOption = (
  name: string,
  description: string,
  parse: (input: string) => Either.Either<Duration.Duration, string>
) =>
  Options.text(name).pipe(
    Options.withPseudoName("DURATION"),
    Options.withDescription(description),
    Options.mapEffect((input) =>
      Either.match(parse(input), {
        onLeft: (message) => Effect.fail(usageError(message)),
        onRight: Effect.succeed
      })
    )
  )

const wait = Options.boolean("wait").pipe(
  Options.withDescription("wait for the delivery receipt (see --timeout); exit 2 if it does not arrive in time")
)

const waitTimeout = durationOption(
  "timeout",
  `how long --wait waits: seconds, or 500ms / 45s / 2m; at most 10m (default ${Duration.format(ChatConfig.defaults.deliveryWaitTimeout)}; implies --wait)`,
  parseWaitTimeout
).pipe(Options.optional)

const describeWaitOutcome = (to: string, status: OutgoingStatus, waited: Duration.Duration): string => {
  switch (status) {
    case "delivered":
      return `delivered to ${to}`
    case "stored-offline":
      return `not delivered after ${Duration.format(waited)}: ${to} is offline, relays hold the message until they come back`
    case "queued":
      return `still queued after ${Duration.format(waited)}: delivery goes on in the background while the node runs`
  }
}

/**
 * The text of `send`: as given, or read from standard input for `-`
 * (`client/StdinText.ts`). Typed at a terminal, it ends with Ctrl-D, which
 * the user is told, as nothing else would show the command is reading.
 */
const messageText = (given: string) =>
  given === STDIN_TEXT
    ? Effect.gen(function*() {
      const { readMessageText } = yield* Effect.promise(() => import("./client/StdinText.js"))
      if (process.stdin.isTTY) process.stderr.write("type the message, then Ctrl-D on a line of its own to send it\n")
      return yield* readMessageText(process.stdin)
    })
    : Effect.succeed(given)

const send = Command.make("send", { dataDir, json, name: nameRef, text, wait, timeout: waitTimeout }, (options) =>
  withClient(options.dataDir, (client) =>
    Effect.gen(function*() {
      const sent = yield* client.send(options.name, yield* messageText(options.text))
      const waitFor = Option.isSome(options.timeout) || options.wait
        ? Option.some(Option.getOrElse(options.timeout, () => ChatConfig.defaults.deliveryWaitTimeout))
        : Option.none()
      if (Option.isNone(waitFor)) return yield* printJsonOr(options.json, sent, sent.id)
      // The id first, so it is known even when the wait is cut short.
      if (!options.json) yield* Console.log(sent.id)
      // On a terminal, a line on stderr shows the wait going on (`client/WaitProgress.ts`); elsewhere, nothing extra.
      const progress = options.json ? undefined : progressStyleFor(process.stderr, process.env)
      const { status } = yield* (progress === undefined
        ? client.awaitDelivery(sent.id, waitFor.value)
        : awaitDeliveryWithProgress(client, sent, waitFor.value, process.stderr, progress))
      yield* printJsonOr(options.json, { ...sent, status }, describeWaitOutcome(sent.to, status, waitFor.value))
      if (status !== "delivered") return yield* new DeliveryPending({ to: sent.to, status })
    }))
).pipe(
  Command.withDescription("send a message; prints its id once it is safely in the outbox (--wait: also wait for delivery)")
)

/**
 * Who wrote a message and to whom, from the user's side: `you → bob` for one
 * the user sent, `bob → you` for one they received. The user's own name is
 * never shown alone, which read as "sent to" them.
 */
export const historyParties = (entry: Pick<HistoryEntry, "direction" | "from" | "to">): string =>
  entry.direction === "out" ? `you → ${entry.to}` : `${entry.from} → you`

/** One history line: local time, author → recipient, [status], text. */
export const describeHistoryEntry = (entry: HistoryEntry): string =>
  `${formatLocalTime(entry.sentAt)} ${historyParties(entry)} [${entry.status}] ${printableText(entry.text)}`

/** The documented `history --json` element: exactly these fields, `direction` from the user's side. */
export const historyJson = (entry: HistoryEntry) => ({
  id: entry.id,
  direction: entry.direction === "out" ? "sent" as const : "received" as const,
  from: entry.from,
  to: entry.to,
  text: entry.text,
  sentAt: entry.sentAt,
  status: entry.status
})

const history = Command.make("history", {
  dataDir,
  json,
  name,
  limit: boundedInteger("limit", 1, MAX_HISTORY_LIMIT, 100, "how many of the latest messages to show"),
  markRead: Options.boolean("mark-read").pipe(
    Options.withDescription("also mark the whole conversation read (history alone leaves unread counts as they are)")
  )
}, (options) =>
  withClient(options.dataDir, (client) =>
    Effect.gen(function*() {
      // Marking first: everything marked read is in the history shown below (within --limit).
      if (options.markRead) yield* client.markRead(options.name)
      const entries = yield* client.history(options.name, { limit: options.limit })
      yield* printJsonOr(
        options.json,
        entries.map(historyJson),
        entries.length === 0 ? `no messages with ${options.name} yet` : entries.map(describeHistoryEntry).join("\n")
      )
    }))
).pipe(Command.withDescription("show the latest messages of the conversation with NAME, oldest first"))

/** How long `stop` waits for the node's process to exit after it accepted to stop. */
export const STOP_WAIT: Duration.Duration = Duration.seconds(30)

/** Time between two checks of whether the stopping node's process is gone. */
const STOP_CHECK_EVERY: Duration.Duration = Duration.millis(50)

/** The node accepted to stop, but its process was still running when `stop` gave up waiting. */
export class NodeStillRunning extends Schema.TaggedError<NodeStillRunning>()("NodeStillRunning", {
  pid: Schema.Number,
  waited: Schema.String
}) {
  override get message(): string {
    return `the node (pid ${this.pid}) is shutting down but still running after ${this.waited}; ` +
      `check again with "peerchat status", or end it with "kill ${this.pid}"`
  }
}

/** Completes once process `pid` has exited; fails with `NodeStillRunning` after `STOP_WAIT`. */
const awaitProcessExitOrFail = (pid: number) =>
  Effect.flatMap(
    awaitProcessExit(pid, STOP_CHECK_EVERY, STOP_WAIT),
    (exited) => exited ? Effect.void : Effect.fail(new NodeStillRunning({ pid, waited: Duration.format(STOP_WAIT) }))
  )

const stop = Command.make("stop", { dataDir, json }, (options) =>
  Effect.gen(function*() {
    const dir = yield* resolveDataDir(options.dataDir)
    const stopped = yield* withClient(Option.some(dir), (client) =>
      Effect.map(client.stop, ({ pid }) => ({ stopped: true, nodeId: client.info.nodeId, pid, dataDir: dir })))
    // The node answers before it shuts down; it is stopped once its process is gone (node.json removed by then).
    yield* awaitProcessExitOrFail(stopped.pid)
    yield* printJsonOr(
      options.json,
      stopped,
      `stopped the node ${stopped.nodeId.slice(0, 16)}… (pid ${stopped.pid}) of data directory ${dir}`
    )
  })).pipe(Command.withDescription("stop the running node of the data directory and wait until its process has exited"))

/** One inbox line: the other user, the unread count, the time of the latest activity. */
export const describeConversation = (summary: ConversationSummary): string =>
  `${summary.conversation}  ${summary.unread === 0 ? "no unread" : `${summary.unread} unread`}  (last ${formatLocalTime(summary.lastAt)})`

const inbox = Command.make("inbox", { dataDir, json }, (options) =>
  withClient(options.dataDir, (client) =>
    Effect.flatMap(client.inbox, (conversations) =>
      printJsonOr(
        options.json,
        conversations.map(({ conversation, unread, lastAt }) => ({ conversation, unread, lastAt })),
        conversations.length === 0 ? "no conversations yet" : conversations.map(describeConversation).join("\n")
      )))
).pipe(Command.withDescription("list conversations, latest first, with their unread counts"))

/**
 * `@effect/cli` spells one-letter options with a single dash (`-k`); the
 * documented spelling is `--k`, so both are accepted. `-v` is `--version`.
 */
export const normalizeArguments = (argv: ReadonlyArray<string>): Array<string> =>
  argv.flatMap((argument) => {
    if (argument === "-v") return ["--version"]
    const match = /^--([a-z])(?:=(.*))?$/.exec(argument)
    if (match === null) return [argument]
    const [, letter = "", value] = match
    return value === undefined ? [`-${letter}`] : [`-${letter}`, value]
  })

const chatOptions = {
  dataDir,
  listen: address("listen", "where a node started by the chat accepts peers (default 0.0.0.0:4242)").pipe(
    Options.withDefault({ host: "0.0.0.0", port: 4242 })
  ),
  advertise: address("advertise", "the address a node started by the chat publishes (default: the listen address)").pipe(
    Options.optional
  ),
  bootstrap: bootstrap("join the network through this peer (remembered for the next start); repeat the option for more"),
  api: address("api", "where the control API of a node started by the chat listens (loopback; default 127.0.0.1:0)").pipe(
    Options.withDefault({ host: "127.0.0.1", port: 0 })
  ),
  claimDifficulty,
  joinTimeout: durationOption(
    "join-timeout",
    `how long the first run waits for the network before offering to retry, change the address or start a new network: seconds, or 30s / 2m; 1s to 10m (default ${DEFAULT_JOIN_TIMEOUT_MS / 1000}s)`,
    parseJoinTimeout
  ).pipe(Options.withDefault(Duration.millis(DEFAULT_JOIN_TIMEOUT_MS)))
}

/** Runs the terminal chat with the parsed options. */
const chatWith = (
  options: {
    readonly dataDir: Option.Option<string>
    readonly listen: Address
    readonly advertise: Option.Option<Address>
    readonly bootstrap: ReadonlyArray<Address>
    readonly api: Address
    readonly claimDifficulty: number
    readonly joinTimeout: Duration.Duration
  },
  name: Option.Option<string>
) =>
  Effect.gen(function*() {
    const dir = yield* resolveDataDir(options.dataDir)
    // Loaded on demand: the other commands start without the terminal UI library and the node.
    const { runChat } = yield* Effect.promise(() => import("./chat/ChatProgram.js"))
    return yield* runChat({
      dataDir: dir,
      name: Option.getOrNull(name),
      listen: options.listen,
      advertise: Option.getOrUndefined(options.advertise) ?? defaultAdvertise(options.listen),
      api: options.api,
      bootstrap: options.bootstrap,
      claimDifficulty: options.claimDifficulty,
      joinTimeoutMs: Duration.toMillis(options.joinTimeout)
    })
  })

const chat = Command.make(
  "chat",
  {
    ...chatOptions,
    name: Args.text({ name: "NAME" }).pipe(
      Args.withDescription("open the conversation with NAME (NAME@FINGERPRINT: with exactly that key)"),
      Args.optional
    )
  },
  (options) => chatWith(options, options.name)
).pipe(
  Command.withDescription(
    "the interactive terminal chat (the default command); starts a node in the background when none is running"
  )
)

/** The subcommands, in the order `peerchat --help` lists them. */
export const subcommands = [
  chat,
  start,
  stop,
  register,
  whois,
  status,
  peers,
  send,
  history,
  inbox,
  id,
  verify,
  trust,
  contacts
] as const

/** The `peerchat` command and its subcommands; alone, it opens the terminal chat. */
export const peerchat = Command.make("peerchat", chatOptions, (options) => chatWith(options, Option.none())).pipe(
  Command.withDescription("serverless peer-to-peer chat on a Kademlia DHT; alone, it opens the terminal chat"),
  Command.withSubcommands(subcommands)
)
