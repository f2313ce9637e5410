#!/usr/bin/env node
/** Entry point of the `peerchat` command: parses the arguments and runs the chosen command. */
import { Command } from "@effect/cli"
import { NodeContext, NodeRuntime } from "@effect/platform-node"
import { Effect } from "effect"
import { exitCodeOf, normalizeArguments, peerchat } from "./Commands.js"
import { VERSION } from "./Version.js"

Command.run(peerchat, { name: "peerchat", version: VERSION })(normalizeArguments(process.argv)).pipe(
  Effect.provide(NodeContext.layer),
  // Commands print their own one-line errors; the runtime only sets the exit code (2: `send --wait` not delivered in time).
  NodeRuntime.runMain({ disableErrorReporting: true, teardown: (exit, onExit) => onExit(exitCodeOf(exit)) })
)
