/**
 * The outbound pool on its own, over the real `ConnectionLedger` and
 * connections made in memory (the pool is generic over how a connection is
 * made; TcpTransport.test.ts covers it over TCP). What the transport tests
 * cannot pin down without timing: which idle connection is evicted when the
 * budget is full (the least recently used, never one with a call in flight,
 * whatever order they were opened in), that a connection which ended is
 * replaced at once while its cleanup cannot remove the replacement, that a
 * failed dial gives its place back, `reserve` (and the eviction of the
 * connections served on its places) and `closeAll`.
 */
import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Either, Exit, Fiber, FiberId, FiberSet, TestClock } from "effect"
import { ConnectionLedger, type ConnectionLimits } from "../../src/core/ConnectionLimits.js"
import { TransportError } from "../../src/node/Transport.js"
import type { StreamEnd } from "../../src/platform/ByteStream.js"
import {
  type EndableConnection,
  makeOutboundPool,
  type PooledConnection,
  type PooledLink,
  type ServedDialled
} from "../../src/platform/OutboundPool.js"

/** A connection held in memory: closing it ends its link's `serve`. */
class MemoryConnection implements EndableConnection {
  closed = false
  readonly ended = Deferred.unsafeMake<string>(FiberId.none)
  close(_reason: StreamEnd["reason"], detail: string): void {
    if (this.closed) return
    this.closed = true
    Deferred.unsafeDone(this.ended, Exit.succeed(detail))
  }
}

interface MemoryLink extends PooledLink {
  readonly pooled: PooledConnection
  readonly connection: MemoryConnection
  /** The error the pool failed the link's calls with, once it closed. */
  readonly failed: Deferred.Deferred<TransportError>
}

/** How a test connection opens: at once, once `gate` is done, or failing with `failure`. */
interface MemoryDial {
  readonly gate?: Deferred.Deferred<void> | undefined
  readonly failure?: TransportError | undefined
  /** Dear to open again (a circuit, a punched link): never closed to keep idle connections few. */
  readonly dear?: boolean | undefined
}

const unreachable = (key: string) => new TransportError({ peer: key, reason: "Unreachable", detail: "refused" })

/** A pool over a fresh ledger with `limits`, its clock stepped by the test; `connects` counts dials by key. */
const makePool = (limits: Partial<ConnectionLimits>, served: ReadonlyArray<ServedDialled> = []) =>
  Effect.gen(function*() {
    // No linger unless a test asks for one: most tests look at what closes when a call ends.
    const ledger = new ConnectionLedger({ idleLingerMs: 0, ...limits })
    const runFork = yield* FiberSet.makeRuntime<never>()
    const clock = { now: 0 }
    const connects = new Map<string, number>()
    const pool = makeOutboundPool<MemoryDial, MemoryLink>({
      ledger,
      runFork,
      now: () => clock.now,
      // The test moves both clocks: `clock.now` for the pool's reading, TestClock for its waits.
      sleep: (millis) => Effect.sleep(millis),
      servedDialled: () => served,
      closesWhenIdle: (dial) => dial.dear !== true,
      connect: (dial, pooled) =>
        Effect.gen(function*() {
          connects.set(pooled.key, (connects.get(pooled.key) ?? 0) + 1)
          if (dial.gate !== undefined) yield* Deferred.await(dial.gate)
          if (dial.failure !== undefined) return yield* dial.failure
          const connection = new MemoryConnection()
          pooled.holdConnection(connection)
          const failed = yield* Deferred.make<TransportError>()
          return {
            pooled,
            connection,
            failed,
            failCalls: (error: TransportError) => Deferred.succeed(failed, error)
          }
        }),
      serve: (_dial, link) =>
        Effect.flatMap(
          Deferred.await(link.connection.ended),
          (detail) => new TransportError({ peer: link.pooled.key, reason: "Closed", detail })
        )
    })
    /** Sets the clock to `at`, takes the connection of `key` and runs one call on it: idle from `at`. */
    const callAt = (key: string, at: number) =>
      Effect.gen(function*() {
        clock.now = at
        const link = yield* pool.acquire(key, {})
        yield* link.pooled.track(Effect.void)
        return link
      })
    return { pool, ledger, clock, connects, callAt }
  })

describe("OutboundPool", () => {
  it.scoped("a full budget evicts the least recently used idle connection, never one with a call in flight", () =>
    Effect.gen(function*() {
      const { clock, ledger, pool } = yield* makePool({ maxOutbound: 2 })
      clock.now = 10
      const a = yield* pool.acquire("a", {})
      clock.now = 20
      const b = yield* pool.acquire("b", {})
      // `a` was opened first but used last: `b` is the least recently used.
      clock.now = 30
      yield* a.pooled.track(Effect.void)

      clock.now = 40
      const c = yield* pool.acquire("c", {})
      expect(b.connection.closed).toBe(true)
      expect(yield* Deferred.await(b.connection.ended)).toBe("evicted to make room for another connection")
      expect(a.connection.closed).toBe(false)
      expect(pool.has("b")).toBe(false)
      expect(ledger.snapshot().outbound).toBe(2)
      // Room made by an eviction is no refusal.
      expect(ledger.snapshot().byReason.OutboundFull).toBe(0)

      // `a` is now the least recently used, but busy: `c` goes instead, and with both busy nothing is admitted.
      const release = yield* Deferred.make<void>()
      const call = yield* Effect.fork(a.pooled.track(Deferred.await(release)))
      yield* Effect.yieldNow()
      expect(a.pooled.inUse()).toBe(true)
      clock.now = 50
      const d = yield* pool.acquire("d", {})
      expect(c.connection.closed).toBe(true)
      expect(a.connection.closed).toBe(false)
      const busy = yield* Effect.fork(d.pooled.track(Deferred.await(release)))
      yield* Effect.yieldNow()
      const refused = yield* Effect.flip(pool.acquire("e", {}))
      expect(refused).toMatchObject({ reason: "Overloaded", peer: "e" })
      expect(ledger.snapshot().outbound).toBe(2)
      expect(ledger.snapshot().byReason.OutboundFull).toBe(1)

      yield* Deferred.succeed(release, undefined)
      yield* Fiber.join(call)
      yield* Fiber.join(busy)
      expect(a.pooled.inUse()).toBe(false)
      yield* pool.acquire("e", {})
      expect(pool.stats()).toEqual({ open: 2, dialled: 5 })
    }))

  it.scoped("at most maxIdleOutbound connections stay open idle: when a call ends past it, the least recently used idle ones close", () =>
    Effect.gen(function*() {
      const { clock, ledger, pool } = yield* makePool({ maxOutbound: 10, maxIdleOutbound: 2 })
      const links = []
      for (const [key, at] of [["a", 10], ["b", 20], ["c", 30]] as const) {
        clock.now = at
        const link = yield* pool.acquire(key, {})
        yield* link.pooled.track(Effect.void)
        links.push(link)
      }
      const [a, b, c] = links as [MemoryLink, MemoryLink, MemoryLink]
      // The third idle connection closed the least recently used of the three, the dialler's own.
      expect(a.connection.closed).toBe(true)
      expect(yield* Deferred.await(a.connection.ended)).toBe("idle, and 2 more recently used idle connections stay open")
      expect([b.connection.closed, c.connection.closed]).toEqual([false, false])
      expect(pool.has("a")).toBe(false)

      // A connection with a call in flight is neither closed nor counted: `b` is busy, so `d` ending keeps `c` and `d`.
      const release = yield* Deferred.make<void>()
      const call = yield* Effect.fork(b.pooled.track(Deferred.await(release)))
      yield* Effect.yieldNow()
      clock.now = 40
      const d = yield* pool.acquire("d", {})
      yield* d.pooled.track(Effect.void)
      expect([b.connection.closed, c.connection.closed, d.connection.closed]).toEqual([false, false, false])

      // Once `b`'s call ends, three are idle again: the least recently used of them (`c`) closes, not `b`.
      clock.now = 50
      yield* Deferred.succeed(release, undefined)
      yield* Fiber.join(call)
      expect([b.connection.closed, c.connection.closed, d.connection.closed]).toEqual([false, true, false])
      // A connection handed out to a caller counts as used from then on: the call that is about to run on
      // it keeps it, and another idle one closes when the next call ends.
      clock.now = 60
      // `d` (last used at 40) is the least recently used until it is handed out at 60; then `b` (50) is.
      const handedOut = yield* pool.acquire("d", {})
      expect(handedOut).toBe(d)
      clock.now = 70
      const e = yield* pool.acquire("e", {})
      yield* e.pooled.track(Effect.void)
      expect([b.connection.closed, d.connection.closed, e.connection.closed]).toEqual([true, false, false])
      // Closing idle connections is no refusal, and the closed ones give their places back.
      yield* Effect.yieldNow()
      expect(ledger.snapshot().byReason.OutboundFull).toBe(0)
      expect(ledger.snapshot().outbound).toBe(2)
    }))

  it.scoped("an idle connection beyond the cap lingers idleLingerMs after its call, then closes without another call ending", () =>
    Effect.gen(function*() {
      const { callAt, clock } = yield* makePool({ maxOutbound: 10, maxIdleOutbound: 1, idleLingerMs: 1_000 })
      const links = yield* Effect.forEach([["a", 10], ["b", 20]] as const, ([key, at]) => callAt(key, at))
      const [a, b] = links as [MemoryLink, MemoryLink]
      // Two idle, one allowed: `a` is beyond the cap but lingers, so a call to it now finds it open.
      expect([a.connection.closed, b.connection.closed]).toEqual([false, false])
      yield* TestClock.adjust("989 millis")
      expect(a.connection.closed).toBe(false)
      // Its linger ends at 1,010 (its call ended at 10): the sweep closes it though no call ended since.
      clock.now = 1_010
      yield* TestClock.adjust("1 millis")
      expect(a.connection.closed).toBe(true)
      expect(yield* Deferred.await(a.connection.ended)).toBe("idle, and 1 more recently used idle connections stay open")
      expect(b.connection.closed).toBe(false)
    }))

  it.scoped("lingering connections close one after another as each linger ends, and a call meanwhile takes the open one", () =>
    Effect.gen(function*() {
      const { callAt, clock, connects, pool } = yield* makePool({ maxOutbound: 10, maxIdleOutbound: 0, idleLingerMs: 1_000 })
      /** Moves both clocks (the pool's reading, and TestClock for its waits) to `time`; lets woken fibers run. */
      const advanceTo = (time: number) =>
        Effect.gen(function*() {
          const step = time - clock.now
          clock.now = time
          yield* TestClock.adjust(step)
          yield* Effect.yieldNow()
        })
      const links = yield* Effect.forEach([["a", 10], ["b", 20], ["c", 30]] as const, ([key, at]) => Effect.zipRight(advanceTo(at), callAt(key, at)))
      const [, b] = links as [MemoryLink, MemoryLink, MemoryLink]
      const closedAt = (time: number) => Effect.map(advanceTo(time), () => links.map((link) => link.connection.closed))
      expect(yield* closedAt(30)).toEqual([false, false, false])
      // Within its linger, a call to `b` takes its connection again: no second dial, and its linger starts over.
      yield* advanceTo(500)
      expect(yield* pool.acquire("b", {})).toBe(b)
      yield* b.pooled.track(Effect.void)
      expect(connects.get("b")).toBe(1)
      // Each closes when its own linger ends, with no call ending in between: a at 1,010, c at 1,030, b at 1,500.
      expect(yield* closedAt(1_009)).toEqual([false, false, false])
      expect(yield* closedAt(1_010)).toEqual([true, false, false])
      expect(yield* closedAt(1_030)).toEqual([true, false, true])
      expect(yield* closedAt(1_499)).toEqual([true, false, true])
      expect(yield* closedAt(1_500)).toEqual([true, true, true])
    }))

  it.scoped("a lingering direct connection gives its place before a circuit or a punched link, however long those were idle", () =>
    Effect.gen(function*() {
      const { callAt, pool } = yield* makePool({ maxOutbound: 3, maxIdleOutbound: 0, idleLingerMs: 60_000 })
      const circuit = yield* pool.acquire("circuit", { dear: true })
      yield* circuit.pooled.track(Effect.void)
      const direct = yield* Effect.forEach([["a", 6_000], ["b", 6_001], ["c", 6_002]] as const, ([key, at]) => callAt(key, at))
      // The budget of 3 was full at `c`: the circuit (idle since 0) stayed, the lingering `a` gave way.
      expect(circuit.connection.closed).toBe(false)
      expect(direct.map((link) => link.connection.closed)).toEqual([true, false, false])
    }))

  it.scoped("ATTACK: peers a node called once cannot hold its outbound budget by lingering: a new call evicts the idlest", () =>
    Effect.gen(function*() {
      const { callAt, ledger } = yield* makePool({ maxOutbound: 2, maxIdleOutbound: 0, idleLingerMs: 60_000 })
      const links = yield* Effect.forEach([["hostile-1", 10], ["hostile-2", 20]] as const, ([key, at]) => callAt(key, at))
      const [first, second] = links as [MemoryLink, MemoryLink]
      // Both linger (idle far less than 60 s) and fill the budget of 2.
      expect([first.connection.closed, second.connection.closed]).toEqual([false, false])
      yield* callAt("honest", 30)
      // The least recently used lingering one gave its place; the call was not refused.
      expect(first.connection.closed).toBe(true)
      expect(second.connection.closed).toBe(false)
      expect(ledger.snapshot().byReason.OutboundFull).toBe(0)
    }))

  it.scoped("connections dear to open again (circuits, punched links) are neither closed nor counted to keep idle ones few", () =>
    Effect.gen(function*() {
      const { clock, pool } = yield* makePool({ maxOutbound: 10, maxIdleOutbound: 1 })
      clock.now = 10
      const circuit = yield* pool.acquire("circuit", { dear: true })
      yield* circuit.pooled.track(Effect.void)
      clock.now = 20
      const a = yield* pool.acquire("a", {})
      yield* a.pooled.track(Effect.void)
      // Two idle, one allowed: the circuit is the least recently used but is not counted; `a` alone stays.
      expect([circuit.connection.closed, a.connection.closed]).toEqual([false, false])
      clock.now = 30
      const b = yield* pool.acquire("b", {})
      yield* b.pooled.track(Effect.void)
      expect([circuit.connection.closed, a.connection.closed, b.connection.closed]).toEqual([false, true, false])
    }))

  it.scoped("connections served on reserved places are evicted when idle once no direct connection is, never while busy", () =>
    Effect.gen(function*() {
      const served: Array<ServedDialled> = []
      const { clock, ledger, pool } = yield* makePool({ maxOutbound: 2 }, served)
      const evicted: Array<string> = []
      /** A connection served on a reserved place (an accepted circuit), last active at `lastActive`. */
      const serve = (key: string, lastActive: number | undefined) => {
        const ticket = Either.getOrThrow(pool.reserve(key))
        served.push({
          ticket,
          lastActive: () => lastActive,
          evict: (detail) => {
            evicted.push(`${key}: ${detail}`)
            served.splice(served.findIndex((connection) => connection.ticket === ticket), 1)
          }
        })
      }
      serve("circuit", 10)
      clock.now = 20
      const a = yield* pool.acquire("a", {})
      // Full: the direct `a`, cheap to dial again, gives its place before the served circuit, though more recently used.
      clock.now = 30
      const b = yield* pool.acquire("b", {})
      expect(a.connection.closed).toBe(true)
      expect(evicted).toEqual([])
      // With `b` busy, no direct connection is idle: the served circuit, idle since 10, gives its place.
      const release = yield* Deferred.make<void>()
      const call = yield* Effect.fork(b.pooled.track(Deferred.await(release)))
      yield* Effect.yieldNow()
      clock.now = 40
      const c = yield* pool.acquire("c", {})
      expect(evicted).toEqual(["circuit: evicted to make room for another connection"])
      expect(ledger.snapshot().outbound).toBe(2)
      // A served connection in the middle of a request (no last activity) is never the one to go: `c` makes its room.
      clock.now = 50
      serve("busy circuit", undefined)
      expect(c.connection.closed).toBe(true)
      // Nothing idle is left (`b` busy, the circuit in a request): a new dial is refused, not made by evicting a busy one.
      clock.now = 60
      const refused = yield* Effect.either(pool.acquire("d", {}))
      expect(Either.isLeft(refused) && refused.left.reason).toBe("Overloaded")
      expect([b.connection.closed, evicted.length]).toEqual([false, 1])
      yield* Deferred.succeed(release, undefined)
      yield* Fiber.join(call)
    }))

  it.scoped("calls that find a connection opening wait for it; one that ended is replaced at once", () =>
    Effect.gen(function*() {
      const { connects, pool } = yield* makePool({})
      const gate = yield* Deferred.make<void>()
      const first = yield* Effect.fork(pool.acquire("a", { gate }))
      const second = yield* Effect.fork(pool.acquire("a", { gate }))
      yield* Effect.yieldNow()
      expect(pool.established("a")).toBeUndefined()
      yield* Deferred.succeed(gate, undefined)
      const link = yield* Fiber.join(first)
      expect(yield* Fiber.join(second)).toBe(link)
      expect(connects.get("a")).toBe(1)
      expect(pool.established("a")).toBe(link)

      // Ended, but its life has not run yet: the next call dials a new one instead of waiting.
      link.connection.close("Closed", "the peer hung up")
      expect(pool.established("a")).toBeUndefined()
      const next = yield* pool.acquire("a", {})
      expect(next).not.toBe(link)
      expect(connects.get("a")).toBe(2)
      // The old connection's cleanup fails its calls and leaves the new one pooled.
      expect(yield* Deferred.await(link.failed)).toMatchObject({ reason: "Closed", detail: "the peer hung up" })
      expect(pool.established("a")).toBe(next)
      expect(pool.stats()).toEqual({ open: 1, dialled: 2 })
    }))

  it.scoped("a dial that fails gives its place back and fails every call waiting for it", () =>
    Effect.gen(function*() {
      const { ledger, pool } = yield* makePool({ maxOutbound: 1 })
      const gate = yield* Deferred.make<void>()
      const waiting = yield* Effect.fork(pool.acquire("x", { gate, failure: unreachable("x") }))
      const alsoWaiting = yield* Effect.fork(pool.acquire("x", {}))
      yield* Effect.yieldNow()
      // Opening, it holds the only place and cannot be evicted.
      expect(yield* Effect.flip(pool.acquire("y", {}))).toMatchObject({ reason: "Overloaded" })
      yield* Deferred.succeed(gate, undefined)
      expect(yield* Effect.flip(Fiber.join(waiting))).toMatchObject({ reason: "Unreachable", peer: "x" })
      expect(yield* Effect.flip(Fiber.join(alsoWaiting))).toMatchObject({ reason: "Unreachable", peer: "x" })
      expect(ledger.snapshot().outbound).toBe(0)
      expect(pool.has("x")).toBe(false)
      yield* pool.acquire("y", {})
    }))

  it.scoped("reserve takes a place outside the pool, evicting an idle connection for it", () =>
    Effect.gen(function*() {
      const { ledger, pool } = yield* makePool({ maxOutbound: 1 })
      const a = yield* pool.acquire("a", {})
      const reserved = pool.reserve("served")
      expect(Either.isRight(reserved)).toBe(true)
      expect(a.connection.closed).toBe(true)
      // The reserved place is not the pool's to evict: the budget stays full until it is given back.
      expect(pool.reserve("another")).toMatchObject({ _tag: "Left", left: { reason: "Overloaded", peer: "another" } })
      expect(yield* Effect.flip(pool.acquire("b", {}))).toMatchObject({ reason: "Overloaded" })
      if (Either.isRight(reserved)) ledger.release(reserved.right)
      yield* pool.acquire("b", {})
    }))

  it.scoped("closeAll ends every connection and refuses new dials", () =>
    Effect.gen(function*() {
      const { ledger, pool } = yield* makePool({})
      const a = yield* pool.acquire("a", {})
      pool.closeAll({ reason: "Closed", detail: "the transport is closing" })
      expect(a.connection.closed).toBe(true)
      expect(yield* Effect.flip(pool.acquire("b", {}))).toMatchObject({ reason: "Closed", peer: "b" })
      expect(yield* Effect.flip(pool.acquire("a", {}))).toMatchObject({ reason: "Closed", peer: "a" })
      expect(yield* Deferred.await(a.failed)).toMatchObject({ reason: "Closed" })
      expect(ledger.snapshot().outbound).toBe(0)
      expect(pool.stats()).toEqual({ open: 0, dialled: 1 })
    }))
})
