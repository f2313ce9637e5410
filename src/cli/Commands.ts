/**
 * The `peerchat` commands: `start` runs a node; `register`, `whois`, `status`
 * and `peers` talk to the running node of a data directory through its
 * control API. Every command takes `--data-dir` and `--json`; failures print
 * one line on stderr and exit non-zero.
 */
import { Args, Command, Options } from "@effect/cli"
import { NodeHttpClient } from "@effect/platform-node"
import { Console, Duration, Effect, Option, Schema } from "effect"
import { networkInterfaces } from "node:os"
import { type Address, AddressFromString } from "../core/Contact.js"
import type { BootstrapState, NodeStatus, PeerEntry, WhoisAnswer } from "../node/Control.js"
import { makeControlClient } from "../platform/ControlClient.js"
import { resolveDataDir } from "../platform/RuntimeFiles.js"
import { runNode } from "./NodeProgram.js"

const dataDir = Options.text("data-dir").pipe(
  Options.withDescription("the node's data directory (default: $PEERCHAT_DATA_DIR, else ~/.peerchat)"),
  Options.optional
)
const json = Options.boolean("json").pipe(Options.withDescription("print machine-readable JSON"))

const address = (name: string, description: string) =>
  Options.text(name).pipe(Options.withSchema(AddressFromString), Options.withDescription(description))

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
      Options.withSchema(Schema.mutable(Schema.Array(AddressFromString)))
    ),
    api: address("api", "where the local control API listens (loopback only; default 127.0.0.1:0)").pipe(
      Options.withDefault({ host: "127.0.0.1", port: 0 })
    ),
    k: Options.integer("k").pipe(
      Options.withDescription("bucket size and replication factor (default 20)"),
      Options.withSchema(Schema.Int.pipe(Schema.between(1, 64))),
      Options.withDefault(20)
    ),
    alpha: Options.integer("alpha").pipe(
      Options.withDescription("parallel queries per lookup (default 3)"),
      Options.withSchema(Schema.Int.pipe(Schema.between(1, 32))),
      Options.withDefault(3)
    ),
    callTimeout: Options.integer("timeout-ms").pipe(
      Options.withDescription("time limit of one call to a peer, in ms (default 2000)"),
      Options.withSchema(Schema.Int.pipe(Schema.between(50, 60_000))),
      Options.withDefault(2000)
    )
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

/** The `peerchat` command and its subcommands. */
export const peerchat = Command.make("peerchat").pipe(
  Command.withDescription("Peerchat: serverless peer-to-peer chat on a Kademlia DHT"),
  Command.withSubcommands([start, register, whois, status, peers])
)


