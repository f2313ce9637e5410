/**
 * The log of a node started by the terminal chat: `logs/node.log`, appended
 * to across runs (the previous run's lines are kept), rotated by size into
 * `node.log.1` … `node.log.N` with only N kept, owner-only, one timestamp a line.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, FiberRef, HashSet, Logger } from "effect"
import { readdir, readFile, stat } from "node:fs/promises"
import { join } from "node:path"
import { Writable } from "node:stream"
import { boundedLogWriter, LOG_DIR, NODE_LOG_FILE, withRotatingFileLogger } from "../../src/cli/Logging.js"
import { scopedTempDir } from "../support/tempDir.js"

const logLines = (dataDir: string, file = NODE_LOG_FILE) =>
  Effect.promise(() => readFile(join(dataDir, LOG_DIR, file), "utf8")).pipe(
    Effect.map((text) => text.split("\n").filter((line) => line !== ""))
  )

describe("the rotating node log", () => {
  it.scoped("keeps the previous run's lines, one timestamp a line, owner-only", () =>
    Effect.gen(function*() {
      const dataDir = yield* scopedTempDir("log")
      yield* Effect.logInfo("first run").pipe(withRotatingFileLogger(dataDir))
      yield* Effect.logWarning("second run", { peers: 2 }).pipe(withRotatingFileLogger(dataDir))
      const lines = yield* logLines(dataDir)
      expect(lines).toHaveLength(2)
      expect(lines[0]).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO {2}first run$/)
      expect(lines[1]).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z WARN {2}second run \{"peers":2\}$/)
      // One timestamp: nothing after the first looks like a time.
      expect(lines.every((line) => !/\d\d:\d\d:\d\d/.test(line.slice(24)))).toBe(true)
      expect((yield* Effect.promise(() => stat(join(dataDir, LOG_DIR, NODE_LOG_FILE)))).mode & 0o777).toBe(0o600)
      expect((yield* Effect.promise(() => stat(join(dataDir, LOG_DIR)))).mode & 0o777).toBe(0o700)
    }))

  it.scoped("rotates by size and keeps only the newest rotated files", () =>
    Effect.gen(function*() {
      const dataDir = yield* scopedTempDir("log-rotate")
      const filler = "x".repeat(200)
      // About 250 bytes a line against a 1 KiB limit: several rotations, of which two files are kept.
      for (let run = 0; run < 4; run++) {
        yield* Effect.forEach(
          Array.from({ length: 6 }, (_, i) => `run ${run} line ${i} ${filler}`),
          (line) => Effect.logInfo(line),
          { discard: true }
        ).pipe(withRotatingFileLogger(dataDir, { size: "1K", kept: 2 }))
      }
      const files = (yield* Effect.promise(() => readdir(join(dataDir, LOG_DIR)))).sort()
      expect(files).toEqual([NODE_LOG_FILE, `${NODE_LOG_FILE}.1`, `${NODE_LOG_FILE}.2`])
      // The newest lines are in node.log; node.log.1 holds what came just before them.
      const current = yield* logLines(dataDir)
      expect(current.at(-1)).toContain("run 3 line 5")
      const previous = yield* logLines(dataDir, `${NODE_LOG_FILE}.1`)
      const lastPrevious = previous.at(-1) ?? ""
      const firstCurrent = current[0] ?? ""
      const order = (line: string) => {
        const match = /run (\d) line (\d)/.exec(line)
        return match === null ? -1 : Number(match[1]) * 6 + Number(match[2])
      }
      expect(order(firstCurrent)).toBe(order(lastPrevious) + 1)
    }))

  it.effect("a disk that stalls holds at most the buffer limit; the dropped lines are counted once it catches up", () =>
    Effect.gen(function*() {
      // A disk that takes lines and never finishes writing them until released.
      const written: Array<string> = []
      const stalled: Array<() => void> = []
      const disk = new Writable({
        highWaterMark: 16,
        write(chunk: Buffer, _encoding, done) {
          written.push(chunk.toString("utf8"))
          stalled.push(done)
        }
      })
      const limit = 2048
      const logger = Logger.make(boundedLogWriter(disk, limit))
      const log = (text: string) => Effect.locally(Effect.logInfo(text), FiberRef.currentLoggers, HashSet.make(logger))
      let mostBuffered = 0
      for (let i = 0; i < 100; i++) {
        yield* log(`line ${i} ${"x".repeat(200)}`)
        mostBuffered = Math.max(mostBuffered, disk.writableLength)
      }
      // Without the bound all 100 lines (about 24 KB) would wait in memory.
      expect(mostBuffered).toBeLessThanOrEqual(limit)
      const kept = Math.floor(limit / 240)
      expect(disk.writableLength).toBeGreaterThan(0)
      // The disk catches up: it finishes each write as the stream hands it the next.
      const catchUp = Effect.gen(function*() {
        while (disk.writableLength > 0) {
          stalled.shift()?.()
          yield* Effect.promise(() => new Promise<void>((resolve) => setImmediate(resolve)))
        }
      })
      yield* catchUp
      yield* log("after")
      yield* catchUp
      const lines = written.join("").split("\n").filter((line) => line !== "")
      expect(lines.slice(0, kept).every((line, i) => line.includes(`line ${i} `))).toBe(true)
      expect(lines.at(-2)).toMatch(new RegExp(`WARN {2}${100 - lines.length + 2} log lines dropped: the disk did not keep up$`))
      expect(lines.at(-1)).toMatch(/INFO {2}after$/)
    }))
})
