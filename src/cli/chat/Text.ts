/**
 * Text for the terminal's layout, as pure functions: the width a string takes
 * on screen, grapheme clusters, and word wrapping to a width, for the terminal
 * chat. Widths are `string-width`'s, the measure Ink lays its rows out with;
 * wrapping and cutting are ours, by whole grapheme clusters, because
 * `wrap-ansi` and `cli-truncate` split emoji sequences and overrun wide
 * characters (docs/decisions.md, "Terminal text widths"). What the one-shot
 * commands print too (local times, text made safe to print) is in
 * `PlainText.ts`, so that they do not load `string-width`.
 */
import stringWidth from "string-width"
import { printableText } from "./PlainText.js"

/**
 * The lines of a message text as the chat shows them: split at line breaks,
 * tabs as spaces (their width depends on the column), every other control
 * character escaped as by `printableText`.
 */
export const displayLines = (value: string): ReadonlyArray<string> =>
  value.split(/\r\n|\n|\r/).map((line) => printableText(line.replaceAll("\t", "    ")))

// Grapheme clusters (what a terminal draws as one character: an emoji with its skin tone or
// its family joined by ZWJs, a letter with its accents). Made on first use.
let graphemeSegmenter: Intl.Segmenter | undefined
const segmentGraphemes = (text: string): Intl.Segments =>
  (graphemeSegmenter ??= new Intl.Segmenter(undefined, { granularity: "grapheme" })).segment(text)

/**
 * Text is segmented this many UTF-16 units at a time (plus `CLUSTER_REACH`
 * to find where the next piece starts). `Intl.Segmenter`'s cost grows far
 * faster than the text in Node 20: walking a 16,384-unit string with one
 * emoji took 83 ms here, a 65,536-unit one 42 s, and the chat walked the
 * whole input at every key press and every render of a long paste.
 */
const SEGMENT_CHUNK = 512

/**
 * How far past a piece the next cluster start is looked for. A cluster
 * longer than this (hundreds of combining marks on one letter) is cut there.
 */
const CLUSTER_REACH = 256

/**
 * Where the grapheme clusters of `text` start, in order (0 first, unless
 * `text` is empty), segmented a piece at a time. Exact: each piece starts
 * at a cluster start, and no rule of UAX #29 looks back across one (a run
 * of regional indicators is cut between pairs, an emoji ZWJ sequence is one
 * cluster), so a piece segments as the whole text would.
 */
const clusterStarts = function*(text: string): Generator<number> {
  let piece = 0
  while (piece < text.length) {
    const end = Math.min(text.length, piece + SEGMENT_CHUNK + CLUSTER_REACH)
    const last = end === text.length
    // Where the next piece starts: the first cluster start past this piece's share, else (a cluster
    // longer than the reach) the end of what was segmented.
    let next = end
    for (const { index } of segmentGraphemes(text.slice(piece, end))) {
      const at = piece + index
      if (!last && at >= piece + SEGMENT_CHUNK) {
        next = at
        break
      }
      yield at
    }
    piece = next
  }
}

/** The grapheme clusters of `text`, in order. */
export const graphemes = (text: string): ReadonlyArray<string> => {
  const clusters: Array<string> = []
  let previous: number | undefined
  for (const start of clusterStarts(text)) {
    if (previous !== undefined) clusters.push(text.slice(previous, start))
    previous = start
  }
  if (previous !== undefined) clusters.push(text.slice(previous))
  return clusters
}

/** The last start of a grapheme cluster of `text` at or before `position` (0 when none). */
const clusterStartAtOrBefore = (text: string, position: number): number => {
  let start = 0
  for (const index of clusterStarts(text)) {
    if (index > position) break
    start = index
  }
  return start
}

/**
 * Where one step left (or a backspace) from `cursor` lands in `text`: the
 * start of the grapheme cluster before it, so 👍🏽 or 👨‍👩‍👧 is stepped over
 * and deleted whole, never split into code points a terminal draws apart.
 */
export const previousClusterStart = (text: string, cursor: number): number =>
  cursor <= 0 ? 0 : clusterStartAtOrBefore(text, cursor - 1)

/** Where one step right from `cursor` lands in `text`: the end of the grapheme cluster at it (`text.length` at the end). */
export const nextClusterEnd = (text: string, cursor: number): number => {
  for (const index of clusterStarts(text)) if (index > cursor) return index
  return text.length
}

/** The longest prefix of `text` at most `length` UTF-16 units long that does not cut a grapheme cluster. */
export const clusterPrefix = (text: string, length: number): string =>
  length >= text.length ? text : text.slice(0, clusterStartAtOrBefore(text, length))

/**
 * Columns `text` takes in a terminal (text without control characters), as
 * Ink measures it: `string-width`, whole grapheme clusters at a time (✅,
 * 👍🏽 and 👨‍👩‍👧 take two columns each).
 */
export const displayWidth = (text: string): number => {
  // string-width segments its whole argument (see SEGMENT_CHUNK): long text is measured a piece at a time.
  if (text.length <= SEGMENT_CHUNK) return stringWidth(text)
  let width = 0
  let pieceStart = 0
  for (const start of clusterStarts(text)) {
    if (start - pieceStart >= SEGMENT_CHUNK) {
      width += stringWidth(text.slice(pieceStart, start))
      pieceStart = start
    }
  }
  return width + stringWidth(text.slice(pieceStart))
}

/** Columns one character takes in a terminal: best given a whole grapheme cluster (see `graphemes`). */
export const charWidth = (character: string): number => stringWidth(character)

/** The longest prefix of `text` that fits in `width` columns, never cutting a grapheme cluster. */
export const fitWidth = (text: string, width: number): string => {
  if (displayWidth(text) <= width) return text
  let used = 0
  let end = 0
  for (const cluster of graphemes(text)) {
    const next = stringWidth(cluster)
    if (used + next > width) break
    used += next
    end += cluster.length
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
 * can, inside a word only when the word alone is wider than a line, and never
 * inside a grapheme cluster. Always returns at least one (possibly empty)
 * line. One pass over the clusters, so a 16 KiB paste wraps in linear time.
 */
export const wrapLine = (text: string, width: number): ReadonlyArray<string> => {
  const limit = Math.max(1, width)
  // Printable ASCII, most of what is typed, is one column a character: no segmenting, no widths to look up
  // (a 16 KiB paste wraps in 2 ms instead of 24).
  if (PRINTABLE_ASCII.test(text)) {
    return text.length <= limit ? [text] : wrapClusters(text.split(""), new Array<number>(text.length).fill(1), limit)
  }
  if (displayWidth(text) <= limit) return [text]
  const clusters = graphemes(text)
  return wrapClusters(clusters, clusters.map((cluster) => stringWidth(cluster)), limit)
}

/** Text made only of printable ASCII characters (space to tilde): each is a grapheme cluster one column wide. */
const PRINTABLE_ASCII = /^[\x20-\x7e]*$/

/** `wrapLine` over text already split into grapheme clusters and their widths. */
export const wrapClusters = (
  clusters: ReadonlyArray<string>,
  widths: ReadonlyArray<number>,
  limit: number
): ReadonlyArray<string> => {
  const lines: Array<string> = []
  let start = 0
  for (;;) {
    let used = 0
    let end = start
    while (end < clusters.length && used + (widths[end] as number) <= limit) used += widths[end++] as number
    if (end === clusters.length) break
    // Break after the last space that leaves something on this line; a word longer than a line is cut.
    let space = end - 1
    while (space > start && clusters[space] !== " ") space--
    const wordCut = space > start && clusters[end] !== " " ? space : end
    // A cluster wider than the whole line still takes a line of its own, so the loop always advances.
    const cut = wordCut > start ? wordCut : start + 1
    lines.push(clusters.slice(start, cut).join("").trimEnd())
    start = cut
    while (start < clusters.length && clusters[start] === " ") start++
  }
  const rest = clusters.slice(start).join("")
  if (rest !== "" || lines.length === 0) lines.push(rest)
  return lines
}
