/**
 * Text every command prints, as pure functions: local times, and text typed
 * by other users made safe to print (no control characters, so no escape
 * sequence can move the cursor, retitle the window or disguise a message).
 * Apart from `Text.ts` (widths and wrapping) because measuring widths loads
 * `string-width`, which builds an `Intl.Segmenter` as it loads, and that
 * pages in part of the runtime's Unicode data: 0.8 MB of the `node`
 * binary's pages in every process that loads it, the node's included
 * (`peerchat start` loads the commands, which print with these).
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

/** Text of several lines, each made printable (`printableText`), its line breaks kept. */
export const printableLines = (value: string): string => value.split("\n").map(printableText).join("\n")
