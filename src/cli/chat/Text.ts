/**
 * Text for the terminal, as pure functions: local times, text typed by other
 * users made safe to print (no control characters, so no escape sequence can
 * move the cursor, retitle the window or disguise a message), the width a
 * string takes on screen, and word wrapping to a width. Shared by the
 * one-shot commands (`peerchat history`) and the terminal chat.
 */

const pad2 = (value: number): string => String(value).padStart(2, "0")

/** `YYYY-MM-DD HH:MM:SS` in the local time zone. */
export const formatLocalTime = (ms: number): string => `${formatLocalDay(ms)} ${formatClock(ms, true)}`

/** `YYYY-MM-DD` in the local time zone. */
export const formatLocalDay = (ms: number): string => {
  const date = new Date(ms)
  return `${date.getFullYear()}-${pad2(date.getMonth() + 1)}-${pad2(date.getDate())}`
}

/** `HH:MM` (or `HH:MM:SS`) in the local time zone. */
export const formatClock = (ms: number, seconds = false): string => {
  const date = new Date(ms)
  const clock = `${pad2(date.getHours())}:${pad2(date.getMinutes())}`
  return seconds ? `${clock}:${pad2(date.getSeconds())}` : clock
}

// Line breaks would split a message over lines; control and bidirectional-override characters
// from another user could rewrite the terminal or disguise the text.
const UNPRINTABLE = /\p{Cc}|[\u2028\u2029\u202a-\u202e\u2066-\u2069]/gu

/** A message text on one terminal line: line breaks as `\n`, other control characters (but tabs) as `\uXXXX`. */
export const printableText = (value: string): string =>
  value.replace(UNPRINTABLE, (character) => {
    if (character === "\t") return character
    if (character === "\n") return "\\n"
    if (character === "\r") return "\\r"
    return `\\u${character.charCodeAt(0).toString(16).padStart(4, "0")}`
  })

/**
 * The lines of a message text as the chat shows them: split at line breaks,
 * tabs as spaces (their width depends on the column), every other control
 * character escaped as by `printableText`.
 */
export const displayLines = (value: string): ReadonlyArray<string> =>
  value.split(/\r\n|\n|\r/).map((line) => printableText(line.replaceAll("\t", "    ")))

// Zero width: combining marks (variation selectors among them), zero-width spaces and joiners.
const ZERO_WIDTH = /^(?:\p{Mn}|\p{Me}|\u200b|\u200c|\u200d)$/u
// Two columns: East Asian wide and full-width characters and emoji.
const WIDE = /^[\u1100-\u115f\u2e80-\u303e\u3041-\u33ff\u3400-\u4dbf\u4e00-\u9fff\ua000-\ua4cf\uac00-\ud7a3\uf900-\ufaff\ufe30-\ufe4f\uff00-\uff60\uffe0-\uffe6\u{1f300}-\u{1f64f}\u{1f900}-\u{1f9ff}\u{20000}-\u{3fffd}]$/u

/** Columns one character (a code point) takes in a terminal. */
export const charWidth = (character: string): number => {
  if (ZERO_WIDTH.test(character)) return 0
  return WIDE.test(character) ? 2 : 1
}

/** Columns `text` takes in a terminal (text without control characters). */
export const displayWidth = (text: string): number => {
  let width = 0
  for (const character of text) width += charWidth(character)
  return width
}

/** The longest prefix of `text` that fits in `width` columns. */
export const fitWidth = (text: string, width: number): string => {
  let used = 0
  let end = 0
  for (const character of text) {
    const next = charWidth(character)
    if (used + next > width) break
    used += next
    end += character.length
  }
  return text.slice(0, end)
}

/** `text` cut to `width` columns (with `…` when cut) and padded with spaces to exactly `width`. */
export const fixWidth = (text: string, width: number): string => {
  if (width <= 0) return ""
  const fits = displayWidth(text) <= width
  const cut = fits ? text : `${fitWidth(text, width - 1)}…`
  return cut + " ".repeat(Math.max(0, width - displayWidth(cut)))
}

/**
 * Word-wraps one line of text to `width` columns: breaks at spaces where it
 * can, inside a word only when the word alone is wider than a line. Always
 * returns at least one (possibly empty) line.
 */
export const wrapLine = (text: string, width: number): ReadonlyArray<string> => {
  const limit = Math.max(1, width)
  const lines: Array<string> = []
  let rest = text
  while (displayWidth(rest) > limit) {
    const head = fitWidth(rest, limit)
    const space = head.lastIndexOf(" ")
    // Break after the last space that leaves something on this line; a word longer than a line is cut.
    const wordCut = space > 0 && rest.charAt(head.length) !== " " ? space : head.length
    // A character wider than the whole line still takes a line of its own, so the loop always advances.
    const cut = wordCut > 0 ? wordCut : (rest.codePointAt(0) ?? 0) > 0xffff ? 2 : 1
    lines.push(rest.slice(0, cut).trimEnd())
    rest = rest.slice(cut).replace(/^ +/, "")
  }
  if (rest !== "" || lines.length === 0) lines.push(rest)
  return lines
}
