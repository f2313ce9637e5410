/**
 * The connection pool of the transport stack, between the secure channel and
 * the RPC adapter: this node's outbound connections, one per key (a peer's
 * address, a circuit to a peer through a relay, a hole-punched link), shared
 * by every call to that peer. It owns what every pooled connection has in
 * common and nothing of how one is made: the transport hands it `connect`
 * (dial, upgrade, build the link over it) and `serve` (run the link until it
 * ends), and the pool decides when to run them and what to end.
 *
 * - One dial per key at a time: calls that find a connection still opening
 *   wait for that one (`acquire`); a connection that already ended is replaced
 *   at once instead of waited for. Nothing is re-dialled in the background.
 * - The outbound budget (core `ConnectionLedger`): a connection holds a ticket
 *   from dialling until it closes. When the budget is full, the least recently
 *   used established connection with no call in flight (core
 *   `leastRecentlyActive`) is closed to make room, among pooled connections
 *   and those the transport dialled to serve (`reserve`, `servedDialled`);
 *   when all are busy the call fails as `Overloaded`.
 * - Idle connections: at most `maxIdleOutbound` pooled connections stay open
 *   with no call in flight; when a call ends past that, the least recently
 *   used idle ones close (core `idleBeyond`) once they have lingered
 *   `idleLingerMs`, so a burst of calls to the same peers dials each once.
 *   Only the dialler closes them, so no request of its own can cross the close.
 * - Closing: on any failure of `connect` or `serve`, on eviction, and when the
 *   transport closes (`closeAll`), a connection leaves the pool, gives back its
 *   ticket, fails the calls waiting for it or in flight on it, and closes its
 *   scope (what `connect` built over it). Its life is a fiber of the
 *   transport's, so closing the transport interrupts it.
 *
 * @since 0.4.0
 */
import { Deferred, Effect, Either, Exit, FiberId, Scope } from "effect"
import { type ConnectionLedger, idleBeyond, leastRecentlyActive, type OutboundTicket } from "../core/ConnectionLimits.js"
import { TransportError } from "../node/Transport.js"
import type { ByteStream, StreamEnd } from "./ByteStream.js"

/** What the pool needs of the connection over the secure stream: whether it ended, and how to end it. */
export interface EndableConnection {
  readonly closed: boolean
  readonly close: (reason: StreamEnd["reason"], detail: string) => void
}

/** What the pool needs of an established link (the RPC client over a connection). */
export interface PooledLink {
  /** Fails every call in flight on the link with `error`: its connection is gone. */
  readonly failCalls: (error: TransportError) => Effect.Effect<void>
}

/** One pooled connection as the transport's `connect` and its callers see it. */
export interface PooledConnection {
  /** Its key in the pool; errors about it name this key. */
  readonly key: string
  /** Lives as long as the connection: what is built over it (the RPC client) is closed with it. */
  readonly scope: Scope.Scope
  /** Hands the pool the raw stream once connected, so closing ends it even in the middle of the handshake. */
  readonly holdStream: (raw: ByteStream) => void
  /** Hands the pool the connection once the secure channel is up: one that ended is no longer handed out. */
  readonly holdConnection: (connection: EndableConnection) => void
  /** Whether calls are in flight on it (an idle timeout then waits for another period). */
  readonly inUse: () => boolean
  /** Runs one call on it: counted as in flight (never evicted meanwhile) and as its latest use. */
  readonly track: <A, E>(call: Effect.Effect<A, E>) => Effect.Effect<A, E>
}

/**
 * A connection holding an outbound ticket outside the pool (dialled, then
 * served as if accepted: see `reserve`), offered to the pool's eviction.
 */
export interface ServedDialled {
  readonly ticket: OutboundTicket
  /** When it last carried a request, or undefined while it may not be evicted (handshaking, or a request in flight). */
  readonly lastActive: () => number | undefined
  /** Closes it; its own life then gives back the ticket (again: releasing twice is harmless). */
  readonly evict: (detail: string) => void
}

/** How the pool makes and runs a connection of the transport's (`Dial` says what to dial). */
export interface OutboundPoolOptions<Dial, L extends PooledLink> {
  /** The transport's connection budgets; the pool takes and gives back outbound tickets. */
  readonly ledger: ConnectionLedger
  /** Runs a connection's life as a fiber of the transport's, interrupted when the transport closes. */
  readonly runFork: (life: Effect.Effect<void>) => unknown
  /** Dials `dial`, upgrades the stream and builds the link over it, bounded by its own set-up timeout. */
  readonly connect: (dial: Dial, pooled: PooledConnection) => Effect.Effect<L, TransportError>
  /** Runs an established link until its connection ends, failing with why. */
  readonly serve: (dial: Dial, link: L) => Effect.Effect<never, TransportError>
  /** Milliseconds since the epoch, for least-recently-used eviction (default `Date.now`; tests step it). */
  readonly now?: (() => number) | undefined
  /**
   * Waits `millis` on the clock `now` reads, until idle connections past
   * their linger are due to close (default: a real timer, as `Date.now` is
   * real time; tests pass Effect's sleep, which their clock drives).
   */
  readonly sleep?: ((millis: number) => Effect.Effect<void>) | undefined
  /**
   * The connections holding tickets from `reserve` that are open now, so a
   * full budget evicts the idlest of all outbound tickets, not only pooled
   * ones (otherwise accepted circuits and answered punches, once idle, would
   * hold the budget the node needs for its own calls).
   */
  readonly servedDialled?: (() => Iterable<ServedDialled>) | undefined
  /**
   * Whether an idle connection of `dial` counts toward `maxIdleOutbound` and
   * may be closed for it (default: all). A transport keeps out what is dear
   * to open again: a circuit costs a relay round trip and the peer's own leg,
   * a punched link a new punch (its NAT mapping may be gone).
   */
  readonly closesWhenIdle?: ((dial: Dial) => boolean) | undefined
}

/** Counters of the pool, for the transport's stats. */
export interface OutboundPoolStats {
  /** Open or opening connections. */
  readonly open: number
  /** Connections dialled since start. */
  readonly dialled: number
}

/** The outbound pool a transport composes (see the module comment). */
export interface OutboundPool<Dial, L> {
  /**
   * The established link under `key`, dialling `dial` when there is none (or
   * only one that just ended). Handing a connection out counts as its latest use.
   */
  readonly acquire: (key: string, dial: Dial) => Effect.Effect<L, TransportError>
  /** Dials a new connection under `key`, which the caller has checked holds none; completes once established. */
  readonly dial: (key: string, dial: Dial) => Effect.Effect<L, TransportError>
  /**
   * The link under `key` if it is established and its connection has not
   * ended; never dials. Handing it out counts as its latest use.
   */
  readonly established: (key: string) => L | undefined
  /** Whether a connection under `key` is open or opening. */
  readonly has: (key: string) => boolean
  /**
   * A place in the outbound budget for a connection this node dials but does
   * not pool (it serves it as if accepted), evicting like `acquire`; the caller
   * gives it back to the ledger when that connection closes. Synchronous, so
   * nothing can interrupt between taking the place and handing it on.
   */
  readonly reserve: (key: string) => Either.Either<OutboundTicket, TransportError>
  /** Refuses new dials and ends every connection now (their lives then close them); for the transport's close. */
  readonly closeAll: (end: StreamEnd) => void
  readonly stats: () => OutboundPoolStats
}

/** A pooled connection, from dialling until it closes. */
interface Entry<Dial, L> {
  readonly key: string
  readonly dial: Dial
  /** Its place in the outbound budget, released when it closes. */
  readonly ticket: OutboundTicket
  readonly ready: Deferred.Deferred<L, TransportError>
  scope: Scope.CloseableScope | undefined
  /** The raw stream, once connected. */
  raw: ByteStream | undefined
  /** The connection over the secure stream, once authenticated. */
  connection: EndableConnection | undefined
  link: L | undefined
  closed: boolean
  /** Calls in flight on this connection. */
  active: number
  /** Milliseconds since the epoch of its latest call's end (or of its set-up), for least-recently-used eviction. */
  lastUsed: number
}

/** Waits `millis` of real time (`Date.now`'s clock), whatever clock the Effect runtime has. */
const realSleep = (millis: number): Effect.Effect<void> =>
  Effect.async<void>((resume) => {
    const timer = setTimeout(() => resume(Effect.void), millis)
    return Effect.sync(() => clearTimeout(timer))
  })

/** The outbound pool over `options` (see the module comment); its connections live as the transport's fibers. */
export const makeOutboundPool = <Dial, L extends PooledLink>(
  options: OutboundPoolOptions<Dial, L>
): OutboundPool<Dial, L> => {
  const { ledger, runFork } = options
  const now = options.now ?? Date.now
  const sleep = options.sleep ?? realSleep
  const entries = new Map<string, Entry<Dial, L>>()
  let dialled = 0
  let closing = false

  const closedError = (key: string) => new TransportError({ peer: key, reason: "Closed", detail: "the transport is closing" })

  const fullError = (key: string) =>
    new TransportError({
      peer: key,
      reason: "Overloaded",
      detail: `${ledger.limits.maxOutbound} outbound connections are open and busy`
    })

  const EVICTED = "evicted to make room for another connection"
  const maxIdle = ledger.limits.maxIdleOutbound
  const TOO_MANY_IDLE = `idle, and ${maxIdle} more recently used idle connections stay open`

  /** An established pooled connection's last use, or undefined while it may not be closed (opening, or a call in flight). */
  const idleSince = (entry: Entry<Dial, L>): number | undefined =>
    entry.link === undefined || entry.active > 0 || entry.connection === undefined ? undefined : entry.lastUsed

  /** Out of the pool now, and closed; its life sees the connection end and cleans up (the ticket included). */
  const evictEntry = (entry: Entry<Dial, L>, detail: string): void => {
    entries.delete(entry.key)
    entry.connection?.close("Closed", detail)
  }

  const closesWhenIdle = options.closesWhenIdle ?? (() => true)
  /** An idle connection that counts toward `maxIdleOutbound`: its last use; otherwise undefined. */
  const cappedIdleSince = (entry: Entry<Dial, L>): number | undefined =>
    closesWhenIdle(entry.dial) ? idleSince(entry) : undefined

  const lingerMs = ledger.limits.idleLingerMs
  /** When a look for idle connections past their linger is due; undefined while none is. */
  let sweepAt: number | undefined = undefined

  /**
   * Closes the least recently used idle connections beyond `maxIdleOutbound`
   * that have lingered `idleLingerMs` (a sort of at most `maxOutbound`
   * entries, and nothing while the pool holds no more than the cap), and
   * looks again when the next of those still lingering is due.
   */
  const closeIdleBeyondCap = (): void => {
    if (entries.size <= maxIdle) return
    const decision = idleBeyond(entries.values(), maxIdle, cappedIdleSince, now(), lingerMs)
    for (const entry of decision.close) evictEntry(entry, TOO_MANY_IDLE)
    const due = decision.recheckAt
    if (due === undefined || closing || (sweepAt !== undefined && sweepAt <= due)) return
    sweepAt = due
    runFork(sleep(Math.max(0, due - now())).pipe(
      Effect.zipRight(Effect.sync(() => {
        if (sweepAt !== due) return
        sweepAt = undefined
        closeIdleBeyondCap()
      }))
    ))
  }

  /**
   * Every connection holding an outbound ticket that may be evicted now:
   * pooled ones, then served ones; or only the pooled ones cheap to open
   * again (`closesWhenIdle`).
   */
  function* evictable(onlyCheap: boolean): Generator<ServedDialled> {
    for (const entry of entries.values()) {
      if (onlyCheap && !closesWhenIdle(entry.dial)) continue
      yield {
        ticket: entry.ticket,
        lastActive: () => idleSince(entry),
        evict: (detail) => evictEntry(entry, detail)
      }
    }
    if (!onlyCheap && options.servedDialled !== undefined) yield* options.servedDialled()
  }

  /**
   * Closes the least recently used connection with no call in flight: one
   * cheap to open again if any is idle (idle ones linger beyond the cap, and
   * would otherwise push out circuits and punched links, whose last use is
   * older), else any, pooled or served; false if there is none.
   */
  const evictIdle = (): boolean => {
    const lastActive = (candidate: ServedDialled) => candidate.lastActive()
    const victim = leastRecentlyActive(evictable(true), lastActive) ?? leastRecentlyActive(evictable(false), lastActive)
    if (victim === undefined) return false
    // Out of the budget now, for the newcomer.
    ledger.release(victim.ticket)
    victim.evict(EVICTED)
    return true
  }

  /** A place in the outbound budget, closing the idlest connection when none is free; none when all are busy. */
  const ticketOrEvict = (): OutboundTicket | undefined => {
    // Room made by an eviction is no refusal: only a call that finds every connection busy counts as one.
    if (ledger.outboundFull) evictIdle()
    const decision = ledger.admitOutbound()
    return decision._tag === "Refuse" ? undefined : decision.ticket
  }

  /** Ends `entry` once: out of the pool and the budget, its waiters and calls failed with `error`, its scope closed. */
  const close = (entry: Entry<Dial, L>, error: TransportError): Effect.Effect<void> =>
    Effect.suspend(() => {
      if (entry.closed) return Effect.void
      entry.closed = true
      ledger.release(entry.ticket)
      if (entries.get(entry.key) === entry) entries.delete(entry.key)
      const end = { reason: error.reason === "ProtocolViolation" ? "ProtocolViolation" : "Closed", detail: error.detail } as const
      entry.connection?.close(end.reason, end.detail)
      entry.raw?.destroy(end)
      const link = entry.link
      const scope = entry.scope
      return Effect.all([
        Deferred.fail(entry.ready, error),
        link === undefined ? Effect.void : link.failCalls(error),
        scope === undefined ? Effect.void : Scope.close(scope, Exit.void)
      ], { discard: true })
    })

  const handleOf = (entry: Entry<Dial, L>, scope: Scope.Scope): PooledConnection => ({
    key: entry.key,
    scope,
    holdStream: (raw) => {
      entry.raw = raw
    },
    holdConnection: (connection) => {
      entry.connection = connection
    },
    inUse: () => entry.active > 0,
    track: (call) =>
      Effect.suspend(() => {
        entry.active++
        return Effect.ensuring(
          call,
          Effect.sync(() => {
            entry.active--
            entry.lastUsed = now()
            if (entry.active === 0) closeIdleBeyondCap()
          })
        )
      })
  })

  const life = (entry: Entry<Dial, L>): Effect.Effect<void> =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      entry.scope = scope
      const link = yield* options.connect(entry.dial, handleOf(entry, scope))
      entry.link = link
      entry.lastUsed = now()
      yield* Deferred.succeed(entry.ready, link)
      return yield* options.serve(entry.dial, link)
    }).pipe(
      Effect.catchAll((error) => close(entry, error)),
      Effect.ensuring(close(entry, closedError(entry.key)))
    )

  /** A new connection under `key`, dialling now; fails while closing or when the budget is full of busy ones. */
  const start = (key: string, dial: Dial): Entry<Dial, L> | TransportError => {
    if (closing) return closedError(key)
    const ticket = ticketOrEvict()
    if (ticket === undefined) return fullError(key)
    const entry: Entry<Dial, L> = {
      key,
      dial,
      ticket,
      ready: Deferred.unsafeMake<L, TransportError>(FiberId.none),
      scope: undefined,
      raw: undefined,
      connection: undefined,
      link: undefined,
      closed: false,
      active: 0,
      lastUsed: now()
    }
    entries.set(key, entry)
    dialled++
    runFork(life(entry))
    return entry
  }

  const awaitReady = (started: Entry<Dial, L> | TransportError): Effect.Effect<L, TransportError> =>
    started instanceof TransportError ? Effect.fail(started) : Deferred.await(started.ready)

  return {
    acquire: (key, dial) =>
      Effect.suspend(() => {
        const entry = entries.get(key)
        if (entry?.connection?.closed === true) {
          // Its life has not cleaned up yet; the next call must not wait for that.
          entries.delete(key)
        } else if (entry !== undefined) {
          // Handed out counts as used: the caller's call starts only once its fiber runs again, and in
          // between another call's end must not close this connection as the least recently used.
          entry.lastUsed = now()
          return Deferred.await(entry.ready)
        }
        return awaitReady(start(key, dial))
      }),
    dial: (key, dial) => Effect.suspend(() => awaitReady(start(key, dial))),
    established: (key) => {
      const entry = entries.get(key)
      if (entry?.link === undefined || entry.closed || entry.connection?.closed === true) return undefined
      entry.lastUsed = now()
      return entry.link
    },
    has: (key) => entries.has(key),
    reserve: (key) => {
      const ticket = ticketOrEvict()
      return ticket === undefined ? Either.left(fullError(key)) : Either.right(ticket)
    },
    closeAll: (end) => {
      closing = true
      for (const entry of entries.values()) {
        entry.connection?.close(end.reason, end.detail)
        entry.raw?.destroy(end)
      }
    },
    stats: () => ({ open: entries.size, dialled })
  }
}

