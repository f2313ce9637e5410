/**
 * Runs one `peerchat` command line: help and version first, then the
 * command, then its outcome as the exit code. The command line is parsed
 * once up front so a malformed one becomes a single `peerchat: …` line (or a
 * JSON error with `--json`) with the usage exit code, instead of
 * `@effect/cli`'s multi-line report; a command's typed error is printed the
 * same way with the code of its kind (`Failure.ts`). Only the file system,
 * path and terminal services are provided, from their own modules, so a
 * client command does not load the rest of `@effect/platform-node`.
 */
import * as CliConfig from "@effect/cli/CliConfig"
import * as Command from "@effect/cli/Command"
import * as Descriptor from "@effect/cli/CommandDescriptor"
import * as HelpDoc from "@effect/cli/HelpDoc"
import type * as Usage from "@effect/cli/Usage"
import * as ValidationError from "@effect/cli/ValidationError"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import * as NodePath from "@effect/platform-node/NodePath"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as NodeTerminal from "@effect/platform-node/NodeTerminal"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import { normalizeArguments, peerchat, subcommands } from "./Commands.js"
import { ExitCode, type FailureReport, failureLine, reportOfDefect, reportOfError, reportOfUsage } from "./Failure.js"
import { commandHelp, type HelpProgram, helpStyleFor, paragraphsOf, rootHelp } from "./Help.js"
import { VERSION } from "./Version.js"

const PROGRAM = "peerchat"

const helpProgram: HelpProgram = {
  name: PROGRAM,
  version: VERSION,
  root: peerchat.descriptor,
  commands: subcommands.map((command: { readonly descriptor: Descriptor.Command<unknown> }) => ({
    name: [...Descriptor.getNames(command.descriptor)][0] ?? "",
    descriptor: command.descriptor
  }))
}

/** The subcommand a usage tree belongs to (its first name), if it is one. */
const commandOfUsage = (usage: Usage.Usage): string | undefined => {
  switch (usage._tag) {
    case "Named":
      return usage.names[0]
    case "Concat":
      return commandOfUsage(usage.left)
    default:
      return undefined
  }
}

/** The subcommand named on the command line, for pointing a usage error at its help. */
const commandOfArguments = (args: ReadonlyArray<string>): string | undefined =>
  args.find((argument) => helpProgram.commands.some((command) => command.name === argument))

/** The command line is malformed; `report` is the line to print, pointing at the help of the command it was for. */
class UsageFailure extends Schema.TaggedError<UsageFailure>()("UsageFailure", {
  report: Schema.Struct({ tag: Schema.String, message: Schema.String, exitCode: Schema.Number, printed: Schema.Boolean })
}) {}

const usageFailure = (args: ReadonlyArray<string>) => (error: ValidationError.ValidationError) => {
  const command = commandOfArguments(args)
  const message = paragraphsOf(error.error).join(" ")
  return new UsageFailure({ report: reportOfUsage(message, command === undefined ? PROGRAM : `${PROGRAM} ${command}`) })
}

const write = (stream: NodeJS.WriteStream, text: string) =>
  Effect.sync(() => {
    stream.write(text.endsWith("\n") ? text : `${text}\n`)
  })

/** Parses `args` (after `node` and the script); runs the command unless help or the version was asked for. */
const program = (args: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const config = CliConfig.defaultConfig
    const directive = yield* Descriptor.parse(peerchat.descriptor, [PROGRAM, ...args], config).pipe(
      Effect.mapError(usageFailure(args))
    )
    if (directive._tag === "UserDefined") {
      const [unknown] = directive.leftover
      if (unknown !== undefined) {
        return yield* usageFailure(args)(ValidationError.invalidArgument(HelpDoc.p(`unknown argument ${JSON.stringify(unknown)}`)))
      }
    } else {
      const builtIn = directive.option
      const style = helpStyleFor(process.stdout, process.env)
      if (builtIn._tag === "ShowVersion") return yield* write(process.stdout, VERSION)
      if (builtIn._tag === "ShowHelp") {
        const name = commandOfUsage(builtIn.usage)
        return yield* write(process.stdout, (name === undefined ? undefined : commandHelp(helpProgram, name, style)) ??
          rootHelp(helpProgram, style))
      }
    }
    // Parsed again by @effect/cli, which then runs the command's handler (or a built-in such as --completions).
    yield* Command.run(peerchat, { name: PROGRAM, version: VERSION })(["node", PROGRAM, ...args])
  })

/** The one line a failure prints, and its exit code. */
const reportOf = (cause: Cause.Cause<unknown>): FailureReport | undefined => {
  const failure = Cause.failureOption(cause)
  if (Option.isSome(failure)) {
    const error = failure.value
    if (error instanceof UsageFailure) return error.report
    // A usage error found while running (an @effect/cli check after parsing) is still a usage error.
    if (ValidationError.isValidationError(error)) return usageFailure([])(error).report
    return reportOfError(error)
  }
  return Option.match(Cause.dieOption(cause), { onNone: () => undefined, onSome: reportOfDefect })
}

const Environment = Layer.mergeAll(NodeFileSystem.layer, NodePath.layer, NodeTerminal.layer)

/** Runs the `peerchat` command line `argv` (without `node` and the script) and exits with its code. */
export const runCli = (argv: ReadonlyArray<string>): void => {
  const args = normalizeArguments(argv)
  const asJson = args.includes("--json")
  program(args).pipe(
    Effect.provide(Environment),
    Effect.tapErrorCause((cause) => {
      const report = reportOf(cause)
      return report === undefined || !report.printed ? Effect.void : write(process.stderr, failureLine(report, asJson))
    }),
    NodeRuntime.runMain({
      disableErrorReporting: true,
      // Every finalizer has run by now. Exit once stdout and stderr are flushed rather than waiting for idle
      // handles (an HTTP keep-alive socket, a timer of a library) to let the event loop end.
      teardown: (exit) => {
        const code = Exit.isSuccess(exit) || Cause.isInterruptedOnly(exit.cause)
          ? ExitCode.Success
          : reportOf(exit.cause)?.exitCode ?? ExitCode.Failure
        process.stdout.write("", () => process.stderr.write("", () => process.exit(code)))
      }
    })
  )
}
