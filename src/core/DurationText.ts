/**
 * Durations as people write them on a command line: a number and a unit
 * (`500ms`, `45s`, `30m`, `2 min`, `2h`, `1.5d`, or Effect's long names:
 * `45 seconds`), several of them summed (`1h 30m`, as `Duration.format`
 * writes a duration, so what is printed can be typed back), or a bare
 * number of seconds (`45`, `2.5`). Rounded to whole milliseconds. One
 * reader for `peerchat send --timeout` and the simulator's options; each
 * caller sets its own bounds and says what went wrong in its own words.
 *
 * @since 0.1.0
 */
import { Duration, Option } from "effect"

/** Milliseconds in one of each unit, by every name it may be written with. */
const MILLIS_PER_UNIT: ReadonlyMap<string, number> = new Map([
  ...["ms", "milli", "millis"].map((name) => [name, 1] as const),
  ...["s", "second", "seconds"].map((name) => [name, 1000] as const),
  ...["m", "min", "minute", "minutes"].map((name) => [name, 60_000] as const),
  ...["h", "hour", "hours"].map((name) => [name, 3_600_000] as const),
  ...["d", "day", "days"].map((name) => [name, 86_400_000] as const)
])

/** A whole duration in seconds, with no unit: `45`, `2.5`. */
const BARE_SECONDS = /^[0-9]+(?:\.[0-9]+)?$/

/** One term: a non-negative decimal number and a unit, blanks allowed around and between them. */
const TERM = /\s*([0-9]+(?:\.[0-9]+)?)\s*([a-z]+)/y

const wholeMillis = (millis: number): Option.Option<Duration.Duration> =>
  Number.isFinite(millis) ? Option.some(Duration.millis(Math.round(millis))) : Option.none()

/** Reads a duration (see the module's description); `None` for anything else, such as `-1s`, `1e3`, `2x` or `1h 30`. */
export const parseDurationText = (text: string): Option.Option<Duration.Duration> => {
  const input = text.trim()
  if (BARE_SECONDS.test(input)) return wholeMillis(Number(input) * 1000)
  if (input === "") return Option.none()
  // A copy, so the position of one reading is not shared with another.
  const term = new RegExp(TERM)
  let millis = 0
  while (term.lastIndex < input.length) {
    const match = term.exec(input)
    const factor = match === null ? undefined : MILLIS_PER_UNIT.get(match[2] ?? "")
    if (match === null || factor === undefined) return Option.none()
    millis += Number(match[1]) * factor
  }
  return wholeMillis(millis)
}
