/**
 * The `peerchat` commands: `start` runs a node; `register`, `whois`, `status`
 * and `peers` talk to the running node of a data directory through its
 * control API. Every command takes `--data-dir` and `--json`; failures print
 * one line on stderr and exit non-zero.
 */
import { Args, Command, HelpDoc, Options, ValidationError } from "@effect/cli"
import { NodeHttpClient } from "@effect/platform-node"
import { Console, Duration, Effect, Either, Option, Schema } from "effect"
import { networkInterfaces } from "node:os"
import { type Address, parseAddress } from "../core/Contact.js"
import type { BootstrapState, NodeStatus, PeerEntry, WhoisAnswer } from "../node/Control.js"
import { makeControlClient } from "../platform/ControlClient.js"
import { resolveDataDir } from "../platform/RuntimeFiles.js"
import { runNode } from "./NodeProgram.js"

const dataDir = Options.text("data-dir").pipe(
  Options.withDescription("the node's data directory (default: $PEERCHAT_DATA_DIR, else ~/.peerchat)"),
  Options.optional
)
const json = Options.boolean("json").pipe(Options.withDescription("print machine-readable JSON"))

/** Reads `host:port`; a bad value is a one-line usage error naming the option. */
const parseAddressOption = (name: string) => (text: string) =>
  Either.match(parseAddress(text), {
    onLeft: (error) => Effect.fail(ValidationError.invalidValue(HelpDoc.p(`--${name}: ${error.message}`))),
    onRight: Effect.succeed
  })

/** An integer option within [min, max]; a value outside is a one-line usage error. */
const boundedInteger = (name: string, min: number, max: number, fallback: number, description: string) =>
  Options.integer(name).pipe(
    Options.withDescription(`${description} (${min}..${max}, default ${fallback})`),
    Options.mapEffect((value) =>
      value >= min && value <= max
        ? Effect.succeed(value)
        : Effect.fail(ValidationError.invalidValue(HelpDoc.p(`--${name} must be between ${min} and ${max}, got ${value}`)))
    ),
    Options.withDefault(fallback)
  )

const address = (name: string, description: string) =>
  Options.text(name).pipe(Options.withDescription(description), Options.mapEffect(parseAddressOption(name)))

/** Raised after a command has printed its own one-line error, so the process exits non-zero. */
export class CommandFailed extends Schema.TaggedError<CommandFailed>()("CommandFailed", {}) {}

/** Prints `peerchat: <message>` on stderr and fails, for any error with a message. */
const reportFailure = (error: { readonly message: string }) =>
  Console.error(`peerchat: ${error.message}`).pipe(Effect.zipRight(Effect.fail(new CommandFailed())))

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
    bootstrap: Options.text("bootstrap").pipe(
      Options.withDescription("a peer to join through, host:port; repeat for more; none starts a new network"),
      Options.repeated,
      Options.mapEffect((texts) => Effect.forEach(texts, parseAddressOption("bootstrap")))
    ),
    api: address("api", "where the local control API listens (loopback only; default 127.0.0.1:0)").pipe(
      Options.withDefault({ host: "127.0.0.1", port: 0 })
    ),
    k: boundedInteger("k", 1, 64, 20, "bucket size and replication factor"),
    alpha: boundedInteger("alpha", 1, 32, 3, "parallel queries per lookup"),
    callTimeout: boundedInteger("timeout-ms", 50, 60_000, 2000, "time limit of one call to a peer, in ms")
  },
  (options) =>
    Effect.gen(function*() {
      const dir = yield* resolveDataDir(options.dataDir)
      const advertise = Option.getOrUndefined(options.advertise) ?? defaultAdvertise(options.listen)
      return yield* runNode({
        dataDir: dir,
        listen: options.listen,
        advertise,
        bootstrap: options.bootstrap,
        api: options.api,
        k: options.k,
        alpha: options.alpha,
        callTimeout: Duration.millis(options.callTimeout),
        json: options.json
      })
    }).pipe(Effect.catchAll(reportFailure))
).pipe(Command.withDescription("run a Peerchat node in the foreground until interrupted"))

/** Runs `use` with a control client for the data directory, printing failures as one line. */
const withClient = <A, E extends { readonly message: string }>(
  dir: Option.Option<string>,
  use: (client: Effect.Effect.Success<ReturnType<typeof makeControlClient>>) => Effect.Effect<A, E>
) =>
  Effect.gen(function*() {
    const resolved = yield* resolveDataDir(dir)
    const client = yield* makeControlClient(resolved)
    return yield* use(client)
  }).pipe(Effect.provide(NodeHttpClient.layerUndici), Effect.catchAll(reportFailure))

const printJsonOr = (asJson: boolean, value: unknown, human: string) =>
  Console.log(asJson ? JSON.stringify(value) : human)

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

const describeStatus = (status: NodeStatus): string =>
  [
    `node      ${status.nodeId}`,
    `listen    ${status.listen}`,
    `username  ${status.username ?? "(not registered)"}`,
    `peers     ${status.peers}`,
    `network   ${describeBootstrap(status.bootstrap)}`
  ].join("\n")

const describeUser = (answer: WhoisAnswer): string =>
  `${answer.username} is at ${answer.addresses.join(", ")} (node ${answer.nodeId})`

const describePeers = (peers: ReadonlyArray<PeerEntry>): string =>
  peers.length === 0 ? "no peers yet" : peers.map((peer) => `${peer.nodeId}  ${peer.address}`).join("\n")

const name = Args.text({ name: "NAME" }).pipe(Args.withDescription("a username"))

const register = Command.make("register", { dataDir, json, name }, (options) =>
  withClient(options.dataDir, (client) =>
    Effect.flatMap(client.register(options.name), (answer) =>
      printJsonOr(options.json, answer, `registered ${answer.username}: ${describeUser(answer)}`)))
).pipe(Command.withDescription("claim a username for this node and publish it"))

const whois = Command.make("whois", { dataDir, json, name }, (options) =>
  withClient(options.dataDir, (client) =>
    Effect.flatMap(client.whois(options.name), (answer) => printJsonOr(options.json, answer, describeUser(answer))))
).pipe(Command.withDescription("find a user in the network"))

const status = Command.make("status", { dataDir, json }, (options) =>
  withClient(options.dataDir, (client) =>
    Effect.flatMap(client.status, (answer) => printJsonOr(options.json, answer, describeStatus(answer))))
).pipe(Command.withDescription("show the running node's id, address, username and peers"))

const peers = Command.make("peers", { dataDir, json }, (options) =>
  withClient(options.dataDir, (client) =>
    Effect.flatMap(client.peers, (answer) => printJsonOr(options.json, answer, describePeers(answer))))
).pipe(Command.withDescription("list the contacts in the running node's routing table"))

/**
 * `@effect/cli` spells one-letter options with a single dash (`-k`); the
 * documented spelling is `--k`, so both are accepted.
 */
export const normalizeArguments = (argv: ReadonlyArray<string>): Array<string> =>
  argv.flatMap((argument) => {
    const match = /^--([a-z])(?:=(.*))?$/.exec(argument)
    if (match === null) return [argument]
    const [, letter = "", value] = match
    return value === undefined ? [`-${letter}`] : [`-${letter}`, value]
  })

/** The `peerchat` command and its subcommands. */
export const peerchat = Command.make("peerchat").pipe(
  Command.withDescription("Peerchat: serverless peer-to-peer chat on a Kademlia DHT"),
  Command.withSubcommands([start, register, whois, status, peers])
)


