/**
 * `peerchat --help` and `peerchat COMMAND --help`. The text is drawn from the
 * command definitions themselves (`@effect/cli`'s usage tree and help
 * document), so an option cannot exist without being listed, but it is laid
 * out here: one line per option with the description given to
 * `Options.withDescription` (not `@effect/cli`'s generic "A user-defined piece
 * of text." and "This setting is optional."), a usage line that shows what
 * is optional and what repeats, and bold headings only on a terminal that
 * wants colour (`NO_COLOR` unset).
 */
import * as CliConfig from "@effect/cli/CliConfig"
import * as Descriptor from "@effect/cli/CommandDescriptor"
import type * as HelpDoc from "@effect/cli/HelpDoc"
import type * as Span from "@effect/cli/HelpDoc/Span"
import type * as Usage from "@effect/cli/Usage"
import { wrapWords } from "../core/WordWrap.js"

/** The program as help shows it: its name, version and commands. */
export interface HelpProgram {
  readonly name: string
  readonly version: string
  /** The root command: the options it takes alone and its description. */
  readonly root: Descriptor.Command<unknown>
  /** The subcommands in the order they are listed. */
  readonly commands: ReadonlyArray<{ readonly name: string; readonly descriptor: Descriptor.Command<unknown> }>
}

/** The help document of a command without the built-in options, which `rootHelp` lists itself. */
const helpOf = (descriptor: Descriptor.Command<unknown>): HelpDoc.HelpDoc =>
  Descriptor.getHelp(descriptor, CliConfig.make({ showBuiltIns: false }))

/** How the text is written: bold headings or none, and the width to wrap at. */
export interface HelpStyle {
  readonly color: boolean
  readonly width: number
}

/** Colour only on a terminal, and never when `NO_COLOR` is set to anything (https://no-color.org). */
export const helpStyleFor = (stream: { readonly isTTY?: boolean; readonly columns?: number }, env: NodeJS.ProcessEnv): HelpStyle => ({
  color: stream.isTTY === true && (env["NO_COLOR"] ?? "") === "" && env["TERM"] !== "dumb",
  width: Math.max(60, Math.min(stream.columns ?? 80, 100))
})

/** The plain text of a span. */
export const spanText = (span: Span.Span): string => {
  switch (span._tag) {
    case "Text":
    case "URI":
      return span.value
    case "Sequence":
      return spanText(span.left) + spanText(span.right)
    case "Highlight":
    case "Strong":
    case "Weak":
      return spanText(span.value)
  }
}

/** The blocks of a help document in order, sequences flattened. */
const blocksOf = (doc: HelpDoc.HelpDoc): ReadonlyArray<Exclude<HelpDoc.HelpDoc, HelpDoc.Sequence | HelpDoc.Empty>> => {
  switch (doc._tag) {
    case "Empty":
      return []
    case "Sequence":
      return [...blocksOf(doc.left), ...blocksOf(doc.right)]
    default:
      return [doc]
  }
}

/** Every paragraph of a document, in order, as plain text. */
export const paragraphsOf = (doc: HelpDoc.HelpDoc): ReadonlyArray<string> =>
  blocksOf(doc).flatMap((block) => {
    switch (block._tag) {
      case "Paragraph":
        return [spanText(block.value)]
      case "Enumeration":
        return block.elements.flatMap(paragraphsOf)
      case "DescriptionList":
        return block.definitions.flatMap(([term, description]) => [spanText(term), ...paragraphsOf(description)])
      case "Header":
        return [spanText(block.value)]
    }
  })

/** One option or argument: how it is written and what it means. */
export interface HelpEntry {
  readonly term: string
  readonly description: string
}

/**
 * The entries of the section under the heading `title` ("OPTIONS",
 * "ARGUMENTS"). In `@effect/cli`'s document an entry's first paragraph names
 * the value's type and the second is the description the command gave; what
 * follows ("This setting is optional.") says what the usage line shows.
 */
export const sectionEntries = (doc: HelpDoc.HelpDoc, title: string): ReadonlyArray<HelpEntry> => {
  const blocks = blocksOf(doc)
  const start = blocks.findIndex((block) => block._tag === "Header" && spanText(block.value) === title)
  if (start < 0) return []
  const entries: Array<HelpEntry> = []
  for (const block of blocks.slice(start + 1)) {
    if (block._tag === "Header") break
    if (block._tag !== "DescriptionList") continue
    for (const [term, description] of block.definitions) {
      entries.push({ term: termText(spanText(term)), description: paragraphsOf(description)[1] ?? "" })
    }
  }
  return entries
}

/** `-k N` is documented as `--k N`; `<NAME>` as `NAME`; a repeated option is written once. */
const termText = (term: string): string =>
  term.replace(/^-([a-z])\b/, "--$1").replace(/^<(.*)>$/, "$1").replace(/\.\.\.$/, "")

/** The description paragraph of a command. */
export const commandDescription = (doc: HelpDoc.HelpDoc): string => {
  const blocks = blocksOf(doc)
  const start = blocks.findIndex((block) => block._tag === "Header" && spanText(block.value) === "DESCRIPTION")
  const paragraph = blocks[start + 1]
  return start >= 0 && paragraph?._tag === "Paragraph" ? spanText(paragraph.value) : ""
}

/** The positional arguments of a usage tree as the usage line writes them: `NAME`, `[NAME]`, `NAME...`. */
export const argumentsOf = (usage: Usage.Usage): ReadonlyArray<string> => {
  switch (usage._tag) {
    case "Empty":
    case "Mixed":
      return []
    case "Named": {
      const [first = ""] = usage.names
      return /^<.*>$/.test(first) ? [first.slice(1, -1)] : []
    }
    case "Optional":
      return argumentsOf(usage.usage).map((argument) => `[${argument}]`)
    case "Repeated":
      return argumentsOf(usage.usage).map((argument) => `${argument}...`)
    case "Alternation":
      return [[...argumentsOf(usage.left), ...argumentsOf(usage.right)].join(" | ")].filter((text) => text !== "")
    case "Concat":
      return [...argumentsOf(usage.left), ...argumentsOf(usage.right)]
  }
}

/** A two-column list: terms padded to one width (at most 28), descriptions wrapped beside them. */
const table = (entries: ReadonlyArray<HelpEntry>, width: number): string => {
  const column = Math.min(28, Math.max(...entries.map((entry) => entry.term.length)) + 2)
  return entries
    .map(({ description, term }) => {
      const lead = `  ${term}`
      const gap = lead.length + 1 > column + 2 ? `\n${" ".repeat(column + 2)}` : " ".repeat(column + 2 - lead.length)
      return `${lead}${gap}${wrapWords(description, column + 2, width - column - 2)}`
    })
    .join("\n")
}

const heading = (text: string, style: HelpStyle): string => (style.color ? `\u001b[1m${text}\u001b[22m` : text)

const HELP_ENTRY: HelpEntry = { term: "-h, --help", description: "show this help" }

/** `peerchat --help`: usage, the commands with their arguments, the options of `peerchat` alone. */
export const rootHelp = (program: HelpProgram, style: HelpStyle): string => {
  const doc = helpOf(program.root)
  const commands = program.commands.map(({ descriptor, name }) => ({
    term: [name, ...argumentsOf(Descriptor.getUsage(descriptor))].join(" "),
    description: commandDescription(helpOf(descriptor))
  }))
  return [
    `${program.name} ${program.version}: ${commandDescription(doc)}`,
    "",
    heading("Usage:", style),
    `  ${program.name} [OPTIONS]`,
    `  ${program.name} COMMAND [ARGUMENTS] [OPTIONS]`,
    "",
    heading("Commands:", style),
    table(commands, style.width),
    "",
    heading(`Options of ${program.name} alone (the terminal chat):`, style),
    table(
      [
        ...sectionEntries(doc, "OPTIONS"),
        { term: "-h, --help", description: `show this help; ${program.name} COMMAND --help shows a command's options` },
        { term: "-v, --version", description: "print the version" },
        {
          term: "--completions SHELL",
          description: "print a completion script for bash, zsh or fish (see the user guide to install it)"
        }
      ],
      style.width
    ),
    ""
  ].join("\n")
}

/** `peerchat COMMAND --help`: usage, description, arguments and options of one command. */
export const commandHelp = (program: HelpProgram, name: string, style: HelpStyle): string | undefined => {
  const command = program.commands.find((candidate) => candidate.name === name)
  if (command === undefined) return undefined
  const doc = helpOf(command.descriptor)
  const args = argumentsOf(Descriptor.getUsage(command.descriptor))
  const argumentEntries = sectionEntries(doc, "ARGUMENTS")
  return [
    `${heading("Usage:", style)} ${[program.name, name, ...args, "[OPTIONS]"].join(" ")}`,
    "",
    wrapWords(commandDescription(doc), 0, style.width),
    "",
    ...(argumentEntries.length === 0 ? [] : [heading("Arguments:", style), table(argumentEntries, style.width), ""]),
    heading("Options:", style),
    table([...sectionEntries(doc, "OPTIONS"), HELP_ENTRY], style.width),
    ""
  ].join("\n")
}
