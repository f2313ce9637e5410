/**
 * Issue 12's first figure on real `peerchat start` processes: while one
 * address holds 300 connections to bob's node that never say a word (each
 * re-opened the moment bob drops it), a newcomer joins through bob and a
 * direct message to bob is delivered (no other node is left to relay it). Before the resource limits, 300 such sockets cut fresh honest
 * connects to 8-13 % and sent mail to the relays (the issue's report).
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Schedule } from "effect"
import * as net from "node:net"
import { join } from "node:path"
import { parseAddress } from "../../src/core/Contact.js"
import { runCli, runJson, startNodeProcess as startNode } from "../support/cliProcess.js"
import { freshLoopbackHost } from "../support/loopback.js"
import { scopedTempDir } from "../support/tempDir.js"

/** Attack sockets held open at once. */
const HALF_OPEN = 300

/**
 * Holds `count` silent connections from `from` to `to` for the scope's
 * lifetime, each re-opened as soon as it closes; counts the connects made.
 */
const holdHalfOpen = (to: { readonly host: string; readonly port: number }, from: string, count: number) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const state = { running: true, connects: 0, sockets: new Set<net.Socket>() }
      const open = (): void => {
        if (!state.running) return
        const socket = net.connect({ host: to.host, port: to.port, localAddress: from })
        state.sockets.add(socket)
        socket.on("connect", () => state.connects++)
        socket.on("error", () => {})
        socket.on("close", () => {
          state.sockets.delete(socket)
          setImmediate(open)
        })
      }
      for (let i = 0; i < count; i++) open()
      return state
    }),
    (state) =>
      Effect.sync(() => {
        state.running = false
        for (const socket of state.sockets) socket.destroy()
      })
  )

describe("half-open flood against a real node", () => {
  it.scopedLive("ATTACK: 300 silent connections from one address; a newcomer still joins through the node and a direct message to it is delivered", () =>
    Effect.gen(function*() {
      const root = yield* scopedTempDir("half-open")
      const aliceDir = join(root, "alice")
      const bobDir = join(root, "bob")
      const carolDir = join(root, "carol")
      const alice = yield* startNode(aliceDir, [])
      const bob = yield* startNode(bobDir, ["--bootstrap", alice.ready.listen])
      yield* runJson(["register", "bob", "--data-dir", bobDir])

      const bobAddress = parseAddress(bob.ready.listen)
      if (bobAddress._tag === "Left") return yield* Effect.die(bobAddress.left)
      const flood = yield* holdHalfOpen(bobAddress.right, freshLoopbackHost(), HALF_OPEN)
      // The flood is under way: bob has refused some of it already (a few handshake slots per IP).
      const refusedByBob = Effect.map(
        runJson(["status", "--data-dir", bobDir]),
        (status) => ((status as { readonly connections: { readonly refused: Record<string, number> } }).connections.refused.PendingPerIp ?? 0)
      )
      yield* refusedByBob.pipe(
        Effect.repeat({ until: (refused) => refused >= HALF_OPEN, schedule: Schedule.spaced("200 millis") }),
        Effect.timeoutFail({ duration: "30 seconds", onTimeout: () => new Error("bob did not refuse the flood per address") })
      )

      // A newcomer joins through bob and registers: every connection it has to bob was opened during the flood.
      yield* startNode(carolDir, ["--bootstrap", bob.ready.listen])
      yield* runJson(["register", "carol", "--data-dir", carolDir])
      // With alice gone, nobody else could hold the message for bob: "delivered" can only mean bob took it himself.
      expect((yield* runCli(["stop", "--data-dir", aliceDir])).code).toBe(0)
      const refusedBefore = yield* refusedByBob
      const sent = yield* runCli(["send", "bob", "through the flood", "--wait", "--data-dir", carolDir])
      expect([sent.code, sent.stderr]).toEqual([0, ""])
      expect(sent.stdout).toMatch(/delivered to bob\n$/)
      expect((yield* runCli(["history", "carol", "--data-dir", bobDir])).stdout).toMatch(/ carol → you \[received\] through the flood\n/)
      // And the flood went on all the while: bob kept refusing it.
      expect(yield* refusedByBob).toBeGreaterThan(refusedBefore)
      expect(flood.connects).toBeGreaterThan(HALF_OPEN)
    }), { timeout: 180_000 })
})
