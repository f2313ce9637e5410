#!/usr/bin/env node
/**
 * The `peerchat` command: the composition root of the program. For now it
 * knows one command, `start`, which reports the protocol parameters this
 * build would run with; the node itself arrives with the networking layer.
 */
import { Command, Options } from "@effect/cli"
import { NodeContext, NodeRuntime } from "@effect/platform-node"
import { Console, Effect } from "effect"
import { defaultLookupConfig } from "../core/Lookup.js"
import { defaultRoutingTableConfig } from "../core/RoutingTable.js"

const VERSION = "0.1.0"

const json = Options.boolean("json").pipe(Options.withDescription("print machine-readable JSON"))

const start = Command.make("start", { json }, ({ json }) => {
  const summary = {
    version: VERSION,
    k: defaultRoutingTableConfig.k,
    alpha: defaultLookupConfig.alpha,
    node: "not yet available: this build contains the Kademlia core only"
  }
  return json
    ? Console.log(JSON.stringify(summary))
    : Console.log(
        `peerchat ${VERSION} (k=${summary.k}, alpha=${summary.alpha}): ${summary.node}; ` +
          "the network node is being built (see docs/architecture.md)"
      )
}).pipe(Command.withDescription("run a Peerchat node"))

const peerchat = Command.make("peerchat").pipe(
  Command.withDescription("Peerchat: serverless peer-to-peer chat on a Kademlia DHT"),
  Command.withSubcommands([start])
)

const cli = Command.run(peerchat, { name: "peerchat", version: VERSION })

cli(process.argv).pipe(Effect.provide(NodeContext.layer), NodeRuntime.runMain)
