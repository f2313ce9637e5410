/**
 * The command lines of `npm run sim` and `npm run study`, read with
 * `@effect/cli` as `peerchat`'s are: every option carries the description
 * that `--help` lists, every value is checked as it is read, and a malformed
 * command line ends in one line on stderr (`peerchat sim: …`) and exit code
 * 2, never a stack trace. The help is laid out here, from the same option
 * definitions the parser uses, because the simulator does not import
 * `src/cli` (docs/architecture.md).
 */
import * as CliConfig from "@effect/cli/CliConfig"
import * as Descriptor from "@effect/cli/CommandDescriptor"
import * as HelpDoc from "@effect/cli/HelpDoc"
import * as Options from "@effect/cli/Options"
import * as ValidationError from "@effect/cli/ValidationError"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import * as NodePath from "@effect/platform-node/NodePath"
import * as NodeTerminal from "@effect/platform-node/NodeTerminal"
import { Duration, Effect, Either, Layer, Option } from "effect"
import { spanText } from "../cli/Help.js"
import { parseDurationText } from "../core/DurationText.js"
import { wrapWords } from "../core/WordWrap.js"

/** The exit code of a malformed command line (the simulator's programs used 2 before `@effect/cli`, and still do). */
export const USAGE_EXIT_CODE = 2

/** One option: how `--help` lists it, and how `@effect/cli` reads it. */
export interface SimOption<A> {
  /** `--nodes N`, `--json`. */
  readonly term: string
  readonly description: string
  readonly options: Options.Options<A>
}

/** Reads an option's text: its value, or what is wrong with it, worded to follow `--name` ("must be …"). */
export type Reader<A> = (text: string) => Either.Either<A, string>

/**
 * `--name VALUE`, which may be left out. A value `read` refuses ends the
 * parse with `--name <what is wrong>, got "<text>"`.
 */
export const valueOption = <A>(
  name: string,
  pseudoName: string,
  description: string,
  read: Reader<A>
): SimOption<Option.Option<A>> => ({
  term: `--${name} ${pseudoName}`,
  description,
  options: Options.text(name).pipe(
    Options.withPseudoName(pseudoName),
    Options.withDescription(description),
    Options.mapEffect((text) =>
      Either.match(read(text), {
        onLeft: (problem) => Effect.fail(ValidationError.invalidValue(HelpDoc.p(`--${name} ${problem}, got ${JSON.stringify(text)}`))),
        onRight: Effect.succeed
      })
    ),
    Options.optional
  )
})

/** `--name`, a switch: true when given. */
export const switchOption = (name: string, description: string): SimOption<boolean> => ({
  term: `--${name}`,
  description,
  options: Options.boolean(name).pipe(Options.withDescription(description))
})

/** An integer from `min` to `max`, written in decimal digits. */
export const integerIn = (min: number, max: number): Reader<number> => (text) => {
  const value = /^[0-9]+$/.test(text.trim()) ? Number(text) : Number.NaN
  return Number.isSafeInteger(value) && value >= min && value <= max
    ? Either.right(value)
    : Either.left(`must be an integer from ${min} to ${max}`)
}

/** Integers from `min` to `max`, separated by commas: `100,1000`. */
export const integerListIn = (min: number, max: number): Reader<ReadonlyArray<number>> => (text) => {
  const values = text.split(",").map((item) => integerIn(min, max)(item))
  return values.every(Either.isRight)
    ? Either.right(values.map((value) => value.right))
    : Either.left(`must be integers from ${min} to ${max}, separated by commas`)
}

/**
 * A fraction from 0 to `max` (to below `max` unless `inclusive`), written as
 * a number (`0.3`) or a percentage (`30%`).
 */
export const fractionUpTo = (max: number, inclusive: boolean): Reader<number> => (text) => {
  const written = text.trim()
  const match = /^([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(%?)$/.exec(written)
  const value = match === null ? Number.NaN : Number(match[1]) / (match[2] === "%" ? 100 : 1)
  const inRange = value >= 0 && (inclusive ? value <= max : value < max)
  return inRange
    ? Either.right(value)
    : Either.left(
      inclusive
        ? `must be a fraction from 0 to ${max} (or a percentage from 0% to ${max * 100}%)`
        : `must be a fraction from 0 to below ${max} (or a percentage below ${max * 100}%)`
    )
}

/** A duration (`90s`, `30m`, `2h`, `50ms`; a bare number is seconds), in milliseconds. */
export const durationMillis: Reader<number> = (text) =>
  Option.match(parseDurationText(text), {
    onNone: () => Either.left("must be a duration like 50ms, 90s, 30m or 2h (a bare number is seconds)"),
    onSome: (duration) => Either.right(Duration.toMillis(duration))
  })

/** One of the words in `choices`. */
export const oneOf = <const Choice extends string>(choices: ReadonlyArray<Choice>): Reader<Choice> => (text) => {
  const choice = choices.find((candidate) => candidate === text)
  return choice === undefined ? Either.left(`must be ${choices.map((word) => JSON.stringify(word)).join(" or ")}`) : Either.right(choice)
}

/** The options of a program, by the key its value is read into. */
type SimOptions = { readonly [key: string]: SimOption<unknown> }

/** The values a command line gives for `O`. */
export type ValuesOf<O extends SimOptions> = { readonly [K in keyof O]: O[K] extends SimOption<infer A> ? A : never }

/** One of the simulator's programs: `npm run <name> -- [OPTIONS]`. */
export interface SimCommand<O extends SimOptions> {
  /** `sim` or `study`: the npm script, and the prefix of error lines (`peerchat sim: …`). */
  readonly name: string
  /** What it does and prints, the first paragraph of `--help`. */
  readonly description: string
  readonly options: O
  /** Command lines worth copying, shown at the end of `--help`. */
  readonly examples: ReadonlyArray<string>
}

const HELP_TERM = "-h, --help"

/** `npm run <name> -- --help`: usage, description, every option with its description, examples. */
export const helpText = <O extends SimOptions>(command: SimCommand<O>, width = 80): string => {
  const entries = [
    ...Object.values(command.options).map(({ description, term }) => ({ term, description })),
    { term: HELP_TERM, description: "show this help" }
  ]
  const column = Math.max(...entries.map((entry) => entry.term.length)) + 4
  return [
    `Usage: npm run ${command.name} -- [OPTIONS]`,
    "",
    wrapWords(command.description, 0, width),
    "",
    "Options:",
    ...entries.map(({ description, term }) => `  ${term.padEnd(column - 2)}${wrapWords(description, column, width - column)}`),
    "",
    "Examples:",
    ...command.examples.map((example) => `  ${example}`),
    ""
  ].join("\n")
}

/** The plain text of a help document (one of `@effect/cli`'s error messages). */
const plainText = (doc: HelpDoc.HelpDoc): string => {
  switch (doc._tag) {
    case "Empty":
      return ""
    case "Header":
    case "Paragraph":
      return spanText(doc.value)
    case "Sequence":
      return [plainText(doc.left), plainText(doc.right)].filter((text) => text !== "").join(" ")
    case "Enumeration":
      return doc.elements.map(plainText).join(" ")
    case "DescriptionList":
      return doc.definitions.map(([term, description]) => `${spanText(term)} ${plainText(description)}`).join(" ")
  }
}

/**
 * `@effect/cli` spells one-letter options with a single dash (`-k`); the
 * simulator's are documented as `--k`, so that is read too (`--k=3` as well).
 */
const withOneLetterOptions = (argv: ReadonlyArray<string>): Array<string> =>
  argv.flatMap((argument) => {
    const match = /^--([a-z])(?:=(.*))?$/.exec(argument)
    if (match === null) return [argument]
    const [, letter = "", value] = match
    return value === undefined ? [`-${letter}`] : [`-${letter}`, value]
  })

/** How an option is written in messages: `--k`, not `-k`. */
const documented = (flag: string): string => flag.replace(/^-([a-z])$/, "--$1")

/** What is wrong when the parser left `leftover` unread from `args`. */
const leftoverProblem = (leftover: ReadonlyArray<string>, args: ReadonlyArray<string>, known: ReadonlySet<string>): string => {
  const [first = ""] = leftover
  if (!first.startsWith("-")) return `unexpected argument ${JSON.stringify(first)}`
  const flag = documented(first.replace(/=.*$/, ""))
  if (!known.has(flag)) return `unknown option ${JSON.stringify(first)}`
  const times = args.filter((argument) => documented(argument.replace(/=.*$/, "")) === flag).length
  return times > 1 ? `${flag} is given more than once` : `${flag} needs a value`
}

/** What the parser needs from the platform (it prompts only in `--wizard`, which these programs refuse). */
const Environment = Layer.mergeAll(NodeFileSystem.layer, NodePath.layer, NodeTerminal.layer)

/** Ends the process with one line on stderr and the usage exit code. */
const usageFailure = (command: { readonly name: string }, problem: string): never => {
  process.stderr.write(`peerchat ${command.name}: ${problem} (see npm run ${command.name} -- --help)\n`)
  return process.exit(USAGE_EXIT_CODE)
}

/**
 * Reads `argv` (after `node` and the script) for `command`. `--help` prints
 * the help and exits 0; a malformed command line prints one line and exits
 * with `USAGE_EXIT_CODE`. Otherwise it returns every option's value.
 */
export const readCommandLine = async <O extends SimOptions>(command: SimCommand<O>, argv: ReadonlyArray<string>): Promise<ValuesOf<O>> => {
  const args = withOneLetterOptions(argv)
  const record: { [key: string]: Options.Options<unknown> } = {}
  for (const [key, option] of Object.entries(command.options)) record[key] = option.options
  const descriptor = Descriptor.make(command.name, Options.all(record))
  const parsed = await Effect.runPromise(
    Descriptor.parse(descriptor, [command.name, ...args], CliConfig.defaultConfig).pipe(Effect.either, Effect.provide(Environment))
  )
  if (Either.isLeft(parsed)) return usageFailure(command, plainText(parsed.left.error))
  const directive = parsed.right
  if (directive._tag === "BuiltIn") {
    if (directive.option._tag !== "ShowHelp") {
      const builtIn = args.find((argument) => /^--(version|wizard|completions|log-level)\b/.test(argument)) ?? directive.option._tag
      return usageFailure(command, `unknown option ${JSON.stringify(builtIn)}`)
    }
    process.stdout.write(helpText(command, Math.max(60, Math.min(process.stdout.columns ?? 80, 100))))
    return process.exit(0)
  }
  if (directive.leftover.length > 0) {
    const known = new Set(Object.values(command.options).map((option) => option.term.split(" ")[0] ?? ""))
    return usageFailure(command, leftoverProblem(directive.leftover, args, known))
  }
  // `Options.all` of `record` reads exactly the keys of `command.options`, each with its option's value.
  return directive.value.options as ValuesOf<O>
}
