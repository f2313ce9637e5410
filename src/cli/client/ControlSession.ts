/**
 * The control client of a command that talks to a running node, over
 * `node:http` (`NodeHttpClient.layer`, imported from its own module: the
 * module of the undici client would load undici too). `Commands.ts` imports
 * this module when such a command runs, not when the command line is parsed,
 * so `--help`, a usage error and `start` do not build the control API's
 * schemas (docs/decisions.md, "Fast client commands").
 */
import * as NodeHttpClient from "@effect/platform-node/NodeHttpClient"
import type { FileSystem } from "@effect/platform/FileSystem"
import type { Path } from "@effect/platform/Path"
import * as Effect from "effect/Effect"
import { type ControlClient, makeControlClient } from "../../platform/ControlClient.js"
import type { NodeNotRunning, RuntimeFileError } from "../../platform/RuntimeFiles.js"

/** Runs `use` with a client for the node of the data directory `dataDir`; its connections close when it is done. */
export const withControlClient = <A, E>(
  dataDir: string,
  use: (client: ControlClient) => Effect.Effect<A, E>
): Effect.Effect<A, E | NodeNotRunning | RuntimeFileError, FileSystem | Path> =>
  Effect.flatMap(makeControlClient(dataDir), use).pipe(Effect.provide(NodeHttpClient.layer))
