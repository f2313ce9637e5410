/**
 * Where this process's memory goes, for `peerchat status` and the idle
 * daemon benchmark: resident memory split into code (the node binary and
 * libraries mapped from disk, shared with every other node process), the V8
 * heap in use (JavaScript objects and the code V8 compiled), the buffers V8
 * does not hold (sockets' and the secure channel's bytes), and the rest:
 * native memory (SQLite's page cache and statements, OpenSSL, libuv, V8's own
 * tables) and heap pages V8 committed but holds free. Linux gives the
 * file-backed part of resident memory in `/proc/self/smaps_rollup`; elsewhere
 * `code` is 0 and counts as native.
 *
 * @since 0.3.0
 */
import { readFileSync } from "node:fs"
import type { ProcessMemory } from "../node/Control.js"

/**
 * The environment Peerchat starts a node process with, under what the
 * user's environment already sets (the terminal chat's node, and the idle
 * daemon benchmark, which starts its daemon the same way).
 * `MALLOC_ARENA_MAX=1`: glibc gives each thread that allocates (V8's
 * compiler and GC helpers, libuv's pool) an arena of its own, up to 8 per
 * core, and an arena keeps what its thread freed; an idle node held 21-24 MB
 * of native memory that way, 11-12 MB with one arena, at no measured cost in
 * calls a second (`docs/decisions.md`, "An idle daemon's memory"). Other C
 * libraries ignore it. It must be set before the process starts, so a node
 * started by hand (`peerchat start`, `npm start`) gets it only from its
 * environment (`docs/user-guide.md`).
 */
export const NODE_PROCESS_ENVIRONMENT: Readonly<Record<string, string>> = { MALLOC_ARENA_MAX: "1" }

/** Resident bytes of file-backed pages (code and read-only data mapped from files), when the kernel says. */
const fileBackedResident = (): number | undefined => {
  try {
    const rollup = readFileSync("/proc/self/smaps_rollup", "utf8")
    const rss = /^Rss:\s+(\d+) kB/m.exec(rollup)
    const anonymous = /^Anonymous:\s+(\d+) kB/m.exec(rollup)
    if (rss?.[1] === undefined || anonymous?.[1] === undefined) return undefined
    return (Number(rss[1]) - Number(anonymous[1])) * 1024
  } catch {
    return undefined
  }
}

/**
 * This process's memory now, split by what holds it (bytes). Only `rss` and
 * the file-backed part are counted by the kernel; the heap V8 committed need
 * not be resident, so the rest is split from what is in use: live objects
 * (`heapUsed`, compiled code included) and buffers, and `native` for all else.
 */
export const processMemory = (): ProcessMemory => {
  const usage = process.memoryUsage()
  const code = fileBackedResident() ?? 0
  return {
    rss: usage.rss,
    code,
    heapUsed: usage.heapUsed,
    heapCommitted: usage.heapTotal,
    buffers: usage.arrayBuffers,
    native: Math.max(0, usage.rss - code - usage.heapUsed - usage.arrayBuffers)
  }
}
