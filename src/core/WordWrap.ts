/**
 * Word wrapping for help texts (plain ASCII prose: `peerchat --help`, the
 * simulator's and the study's `--help`), in one place for the command line
 * and the simulator, which may not import each other. Widths are counted in
 * UTF-16 units: the chat's text, where emoji and wide characters occur, is
 * measured by `src/cli/chat/Text.ts` instead.
 *
 * @since 0.5.0
 */

/** Words of `text` wrapped to lines of at most `width` columns, every line after the first indented by `indent`. */
export const wrapWords = (text: string, indent: number, width: number): string => {
  const lines: Array<string> = []
  let line = ""
  for (const word of text.split(/\s+/).filter((part) => part !== "")) {
    if (line !== "" && line.length + 1 + word.length > width) {
      lines.push(line)
      line = word
    } else {
      line = line === "" ? word : `${line} ${word}`
    }
  }
  lines.push(line)
  return lines.join(`\n${" ".repeat(indent)}`)
}
