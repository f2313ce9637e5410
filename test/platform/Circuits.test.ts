/**
 * Relayed connections on real sockets: a relay's transport splices two legs
 * that present a token its gate knows, and the two ends run their own secure
 * channel through it. The relay here is the transport with a gate over the
 * core `CircuitTable` and an `OpenCircuit` handler (what the node's
 * `Circuits` service installs), so each rule can be attacked on its own:
 * unknown and replayed tokens, a third leg, a leg that never pairs, a caller
 * that asks for a node holding no reservation, a relay that splices the
 * caller to someone else, and the byte bound of a circuit.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Either, Exit, Queue, Schedule, Scope } from "effect"
import * as net from "node:net"
import { fromHex } from "../../src/core/Bytes.js"
import type { Address } from "../../src/core/Contact.js"
import type { NodeId } from "../../src/core/Id.js"
import { Ping } from "../../src/node/Protocol.js"
import { relayedTarget, sendByRoutes, TransportError } from "../../src/node/Transport.js"
import { circuitOpening } from "../../src/platform/CircuitSplicer.js"
import { answerPings, relayedPair, startNode, startRelay, targetBehind, testIdentity } from "../support/relay.js"

/** A raw TCP connection that sends `bytes` and reports whether the peer closed it (true) within `ms`. */
const closedAfterSending = (address: Address, bytes: Uint8Array, ms = 3000) =>
  Effect.async<boolean>((resume) => {
    const socket = net.connect({ host: address.host, port: address.port }, () => socket.write(bytes))
    const timer = setTimeout(() => {
      socket.destroy()
      resume(Effect.succeed(false))
    }, ms)
    socket.on("error", () => {})
    socket.on("close", () => {
      clearTimeout(timer)
      resume(Effect.succeed(true))
    })
  })

/** Waits (polling the relay's counters) until `count` circuits are spliced. */
const untilSpliced = (relay: { readonly stats: Effect.Effect<{ readonly circuits: { readonly spliced: number } }> }, count: number) =>
  relay.stats.pipe(
    Effect.repeat({ until: (stats) => stats.circuits.spliced >= count, schedule: Schedule.spaced("10 millis") }),
    Effect.timeoutFail({ duration: "5 seconds", onTimeout: () => new Error(`fewer than ${count} circuits spliced`) })
  )

/** A TCP listener that accepts every connection and never writes a byte (closed with the scope). */
const silentListener = Effect.acquireRelease(
  Effect.async<{ readonly server: net.Server; readonly sockets: Array<net.Socket> }>((resume) => {
    const sockets: Array<net.Socket> = []
    const server = net.createServer((socket) => {
      socket.on("error", () => {})
      sockets.push(socket)
    })
    server.listen(0, "127.0.0.1", () => resume(Effect.succeed({ server, sockets })))
  }),
  ({ server, sockets }) => Effect.async<void>((resume) => {
    sockets.forEach((socket) => socket.destroy())
    server.close(() => resume(Effect.void))
  })
).pipe(Effect.map(({ server }): Address => ({ host: "127.0.0.1", port: (server.address() as net.AddressInfo).port })))

describe("relayed connections (circuits through a relay)", () => {
  it.scopedLive("a caller reaches a node through a relay; both ends prove their ids through it, and the callee sees the call as relayed", () =>
    Effect.gen(function*() {
      const { caller, relay, targetId } = yield* relayedPair({ relay: 1, target: 2, caller: 3 })
      const answer = yield* caller.send(relayedTarget(targetId, relay.hint), new Ping({}))
      expect(answer.value.observedHost).toBe("relayed")
      expect(answer.peer).toMatchObject({ nodeId: targetId, relayedBy: relay.hint.relayId, address: relay.hint.address })
      // The circuit is pooled: the next call reuses it (no second offer).
      yield* caller.send(relayedTarget(targetId, relay.hint), new Ping({}))
      expect(relay.table.counts(Date.now()).circuits).toBe(1)
      // sendByRoutes goes through the relay when a record lists no address.
      const routed = yield* sendByRoutes(caller, { nodeId: targetId, addresses: [], relays: [relay.hint] }, new Ping({}))
      expect(routed.peer.nodeId).toBe(targetId)
    }))

  it.scopedLive("a spliced circuit outlives the offer's deadline (which bounds only the wait for the second leg)", () =>
    Effect.gen(function*() {
      const { caller, relay, via } = yield* relayedPair({ relay: 17, target: 18, caller: 19 }, { offerTtlMs: 300 })
      yield* caller.send(via, new Ping({}))
      // Time passing is what is tested here: three offer lifetimes.
      yield* Effect.sleep("900 millis")
      yield* caller.send(via, new Ping({}))
      expect((yield* relay.transport.stats).circuits).toMatchObject({ spliced: 1, splicedTotal: 1 })
    }))

  it.scopedLive("when a relay dies mid-conversation, the next message goes through the node's other relay", () =>
    Effect.gen(function*() {
      const target = yield* startNode(20)
      const caller = yield* startNode(21)
      yield* answerPings(target)
      const targetId = testIdentity(20).nodeId
      // Two relays, the first in a scope of its own so the test can kill it.
      const firstScope = yield* Scope.make()
      const first = yield* Scope.extend(startRelay(22), firstScope)
      const second = yield* startRelay(23)
      for (const relay of [first, second]) {
        relay.table.reserve(targetId, target.localAddress.host, Date.now())
        yield* Effect.forkScoped(Effect.forever(Effect.flatMap(Queue.take(relay.offers), (offer) =>
          target.acceptCircuit(relay.hint, offer.token, offer.caller).pipe(Effect.ignore))))
      }
      const record = { nodeId: targetId, addresses: [], relays: [first.hint, second.hint] }
      const before = yield* sendByRoutes(caller, record, new Ping({}))
      expect(before.peer.relayedBy).toBe(first.hint.relayId)
      yield* Scope.close(firstScope, Exit.void)
      const after = yield* sendByRoutes(caller, record, new Ping({}))
      expect(after.peer.relayedBy).toBe(second.hint.relayId)
    }))

  it.scopedLive("a caller asking for a node that holds no reservation gets no circuit (Unreachable), and nothing is offered", () =>
    Effect.gen(function*() {
      const relay = yield* startRelay(4)
      const caller = yield* startNode(5)
      const stranger = testIdentity(6).nodeId
      const failed = yield* Effect.either(caller.send(relayedTarget(stranger, relay.hint), new Ping({})))
      expect(Either.isLeft(failed) && failed.left instanceof TransportError && failed.left.reason).toBe("Unreachable")
      expect(Either.isLeft(failed) && failed.left.message).toMatch(/NoReservation/)
      expect(yield* Queue.size(relay.offers)).toBe(0)
    }))

  it.scopedLive("a leg with an unknown token, a replayed token, or a third leg is closed at once; a lone leg is closed at the offer's deadline", () =>
    Effect.gen(function*() {
      const relay = yield* startRelay(7, { offerTtlMs: 300 })
      const targetId = testIdentity(8).nodeId
      const callerId = testIdentity(9).nodeId
      relay.table.reserve(targetId, "127.9.9.9", Date.now())
      // Unknown token.
      expect(yield* closedAfterSending(relay.transport.localAddress, circuitOpening(new Uint8Array(16).fill(0xee)))).toBe(true)

      // A valid token whose legs pair, then a third leg with the same token.
      const token = "000000000000000000000000000000ab"
      expect(relay.table.open(callerId, targetId, token, Date.now())._tag).toBe("Opened")
      const bytes = circuitOpening(fromHex(token) as Uint8Array)
      const sockets: Array<net.Socket> = []
      yield* Effect.addFinalizer(() => Effect.sync(() => sockets.forEach((socket) => socket.destroy())))
      for (let i = 0; i < 2; i++) {
        const socket = net.connect(relay.transport.localAddress, () => socket.write(bytes))
        socket.on("error", () => {})
        sockets.push(socket)
      }

      yield* untilSpliced(relay.transport, 1)

      expect(yield* closedAfterSending(relay.transport.localAddress, bytes)).toBe(true)
      expect((yield* relay.transport.stats).circuits).toMatchObject({ spliced: 1, waiting: 0 })
      // A lone leg waits no longer than its offer lives.
      const lonely = "000000000000000000000000000000cd"
      relay.table.open(callerId, targetId, lonely, Date.now())
      expect(yield* closedAfterSending(relay.transport.localAddress, circuitOpening(fromHex(lonely) as Uint8Array), 3000)).toBe(true)
    }))

  it.scopedLive("a relay that splices the caller to another node cannot pass it off as the target: IdentityMismatch", () =>
    Effect.gen(function*() {
      const relay = yield* startRelay(10)
      const impostor = yield* startNode(11)
      const caller = yield* startNode(12)
      yield* answerPings(impostor)
      const targetId = testIdentity(13).nodeId
      relay.table.reserve(targetId, "127.9.9.9", Date.now())
      // The impostor takes the offers meant for the target (a relay in league with it would hand them over).
      yield* Effect.forkScoped(Effect.forever(Effect.flatMap(Queue.take(relay.offers), (offer) =>
        impostor.acceptCircuit(relay.hint, offer.token, offer.caller).pipe(Effect.ignore))))
      const failed = yield* Effect.either(caller.send(relayedTarget(targetId, relay.hint), new Ping({})))
      expect(Either.isLeft(failed) && failed.left instanceof TransportError && failed.left.reason).toBe("IdentityMismatch")
    }))

  it.scopedLive("ATTACK: circuits accepted through a relay take at most half the outbound budget, and give way when idle", () =>
    Effect.gen(function*() {
      // The target's outbound budget holds 4; each circuit it accepts takes a place (it dials the
      // relay). Four callers reach it through its relay, then stay idle. Before: the four circuits
      // held the whole budget, and the target's own next call failed Overloaded.
      const relay = yield* startRelay(40)
      const { target, via } = yield* targetBehind(relay, 41, { limits: { maxOutbound: 4 } })
      const callers = yield* Effect.all([startNode(42), startNode(43), startNode(44), startNode(45)])
      for (const caller of callers) yield* caller.send(via, new Ping({}))
      // Every caller was served, but at most 2 circuits at once: a new one replaced the idlest.
      expect((yield* target.stats).inbound).toBe(2)
      // The target's own calls find room: two fill the budget, a third replaces the idlest connection.
      const peers = yield* Effect.forEach([46, 47, 48], (seed) => Effect.tap(startNode(seed), answerPings))
      for (const [index, peer] of peers.entries()) {
        const answer = yield* target.send({ address: peer.localAddress, nodeId: testIdentity(46 + index).nodeId }, new Ping({}))
        expect(answer.peer.nodeId).toBe(testIdentity(46 + index).nodeId)
      }
      // A caller whose circuit was closed simply opens a new one on its next call.
      yield* callers[0].send(via, new Ping({}))
      const stats = yield* target.stats
      expect(stats.refusedBy.OutboundFull).toBe(0)
      expect(stats.inbound + stats.outbound).toBeLessThanOrEqual(4)
    }))

  /** Starts `count` circuit setups of `target` through `relay`, the i-th from `callerOf(i)`; how many were refused at once. */
  const offerCircuits = (
    target: Effect.Effect.Success<ReturnType<typeof startNode>>,
    relay: { readonly relayId: NodeId; readonly address: Address },
    count: number,
    callerOf: (index: number) => NodeId,
    firstToken: number
  ) =>
    Effect.gen(function*() {
      const outcomes = yield* Effect.forEach(
        Array.from({ length: count }, (_, index) => index),
        (index) =>
          Effect.forkScoped(Effect.flip(target.acceptCircuit(relay, (firstToken + index).toString(16).padStart(32, "0"), callerOf(index))))
      )
      // The refused ones fail at once; the others wait for their handshake.
      yield* Effect.repeatN(Effect.yieldNow(), 10)
      return outcomes.filter((fiber) => fiber.unsafePoll() !== null).length
    })

  it.scopedLive("ATTACK: relays that offer circuits and never speak on them hold half the circuits' share each, never the node's own calls", () =>
    Effect.gen(function*() {
      // Three "relays" accept every leg the target dials and never answer, so each setup holds an
      // outbound place until its 8 s timeout; each offers 10 circuits at once, from 10 callers. Before:
      // every offer started a setup (setups did not count as circuits), all 16 places were taken, and
      // the target's own next call failed Overloaded.
      const target = yield* startNode(50, { limits: { maxOutbound: 16 } })
      const relays = yield* Effect.forEach([51, 52, 53], (seed) =>
        Effect.map(silentListener, (address) => ({ relayId: testIdentity(seed).nodeId, address })))
      const refusals: Array<number> = []
      for (const [index, relay] of relays.entries()) {
        refusals.push(yield* offerCircuits(target, relay, 10, (caller) => testIdentity(100 + caller).nodeId, 0x100 * (index + 1)))
      }
      // The circuits' share is 8 (half of 16): 4 setups for each of the first two relays; the third finds them taken.
      expect(refusals).toEqual([6, 6, 10])
      const peer = yield* startNode(55)
      yield* answerPings(peer)
      const answer = yield* target.send({ address: peer.localAddress, nodeId: testIdentity(55).nodeId }, new Ping({}))
      expect(answer.peer.nodeId).toBe(testIdentity(55).nodeId)
      expect((yield* target.stats).refusedBy.OutboundFull).toBe(0)
    }))

  it.scopedLive("ATTACK: a caller whose legs never come holds two setups through a relay; other callers still get through it", () =>
    Effect.gen(function*() {
      // A caller asks an honest relay for circuits to the target again and again and never connects
      // its own leg: each setup waits for its handshake. It may hold 2; another caller is still taken.
      const target = yield* startNode(56)
      const relay = { relayId: testIdentity(57).nodeId, address: yield* silentListener }
      expect(yield* offerCircuits(target, relay, 5, () => testIdentity(58).nodeId, 0x500)).toBe(3)
      expect(yield* offerCircuits(target, relay, 1, () => testIdentity(59).nodeId, 0x600)).toBe(0)
    }))

  it.scopedLive("ATTACK: a caller flooding through a relay spends the budget of its own host, not that of every caller of the relay", () =>
    Effect.gen(function*() {
      // Every circuit comes from the relay's host. Before: the per-IP budget was the relay's, so one
      // caller spending it had every other caller through that relay refused IpRate.
      const relay = yield* startRelay(60)
      const { via } = yield* targetBehind(relay, 61, { requestLimits: { perIpBurst: 30, perIpRate: 0.001 } })
      const flooder = yield* startNode(62)
      for (let i = 0; i < 30; i++) yield* flooder.send(via, new Ping({}))
      const refused = yield* Effect.flip(flooder.send(via, new Ping({})))
      expect(refused).toMatchObject({ _tag: "RequestRefused", reason: "Overloaded", detail: expect.stringContaining("IpRate") })
      const other = yield* startNode(63)
      expect((yield* other.send(via, new Ping({}))).value.observedHost).toBe("relayed")
    }))

  it.scopedLive("a circuit is closed once it carried its byte bound one way; the next call opens another", () =>
    Effect.gen(function*() {
      const { caller, relay, via } = yield* relayedPair({ relay: 14, target: 15, caller: 16 }, { circuitBytes: 4096 })
      // The handshake and a few pings fit in 4 KiB; then the relay closes the circuit, the call on it
      // fails, and the next call opens a new one.
      let failures = 0
      let successes = 0
      for (let i = 0; i < 60; i++) {
        const exit = yield* Effect.exit(caller.send(via, new Ping({})))
        if (Exit.isSuccess(exit)) successes++
        else failures++
      }
      const stats = (yield* relay.transport.stats).circuits
      expect(successes).toBeGreaterThan(30)
      expect(failures).toBeGreaterThan(0)
      expect(stats.splicedTotal).toBeGreaterThan(1)
      expect(stats.splicedTotal).toBeLessThanOrEqual(failures + 1)
    }), { timeout: 60_000 })
})
