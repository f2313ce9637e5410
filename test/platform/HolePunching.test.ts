/**
 * Hole punching on real sockets, on loopback. Loopback has no NAT: a SYN to
 * a port nobody dials from is refused at once instead of dropped, so two
 * ends dialling each other almost never meet in a simultaneous open here.
 * What is checked here is everything around it: an initiator reaching the
 * port it was told, the handshake and identity over the punched connection,
 * the pool's switch from the circuit to it, the answering end serving it,
 * giving up in time (the conversation stays on the relay), and the rules on
 * what a peer can make this node dial. The crossing of real NATs (port
 * preserving: punched; symmetric: relayed) is `test/net/HolePunch.test.ts`.
 */
import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Either, Layer, Schedule, Schema } from "effect"
import * as net from "node:net"
import { punchPort } from "../../src/core/HolePunch.js"
import type { RelayHint } from "../../src/core/PeerAddress.js"
import { HolePunch, ObservedHost } from "../../src/node/CircuitProtocol.js"
import { HolePunching } from "../../src/node/HolePunching.js"
import { Ping } from "../../src/node/Protocol.js"
import { relayedTarget, Transport } from "../../src/node/Transport.js"
import { socketStream } from "../../src/platform/ByteStream.js"
import { verifyEd25519 } from "../../src/platform/NodeCrypto.js"
import { initiate, makeSecureSelf } from "../../src/platform/SecureChannel.js"
import { freshLoopbackHost } from "../support/loopback.js"
import { answerPings, relayedPair, startNode, testIdentity } from "../support/relay.js"

type TestTransport = Effect.Effect.Success<ReturnType<typeof startNode>>

/** A relay nobody listens at: a call addressed through it can only succeed over a punched connection. */
const deadRelay = (seed: number): RelayHint => ({ relayId: testIdentity(seed).nodeId, address: { host: freshLoopbackHost(), port: 9 } })

/** The node's hole punching over `transport` for the test's scope, with `attemptMs` to punch. */
const withHolePunching = (transport: TestTransport, attemptMs = 6000) =>
  Layer.build(HolePunching.layer({ attemptMs })).pipe(
    Effect.provideService(Transport, transport),
    Effect.map((context) => Context.get(context, HolePunching))
  )

/**
 * A host that, once `dial` connects to it, runs the caller's side of the
 * handshake as the node of `seed` over that connection: the other end of a
 * responder's punch, as a simultaneous open would hand it over.
 */
const initiatorAt = (seed: number) =>
  Effect.acquireRelease(
    Effect.async<net.Server>((resume) => {
      const server = net.createServer((socket) => {
        socket.on("error", () => {})
        Effect.runFork(initiate({ stream: socketStream(socket), self: makeSecureSelf(testIdentity(seed)), verify: verifyEd25519, listenPort: 0 }))
      })
      server.listen(0, freshLoopbackHost(), () => resume(Effect.succeed(server)))
    }),
    (server) => Effect.sync(() => server.close())
  ).pipe(Effect.map((server) => server.address() as net.AddressInfo))

describe("hosts a relay reports", () => {
  it("ATTACK: a relay's answer naming a host (made of hex letters and dots) or garbage does not decode; IP addresses do", () => {
    const decode = Schema.decodeUnknownEither(ObservedHost)
    for (const host of ["bad.de", "fab.be", "x.cafe", "1.2", "1.2.3.999", "::1::2", "", "a".repeat(46)]) {
      expect(Either.isLeft(decode(host)), host).toBe(true)
    }
    for (const host of ["203.0.113.7", "2001:db8::7", "::ffff:198.51.100.1"]) expect(decode(host), host).toEqual(Either.right(host))
  })
})

describe("hole punching: the initiating end (on real sockets)", () => {
  it.scopedLive("reaching the port it was told gives a direct connection, and the initiator's calls addressed through a relay take it", () =>
    Effect.gen(function*() {
      const [a, b] = [yield* startNode(41), yield* startNode(42)]
      yield* answerPings(b)
      const bId = testIdentity(42).nodeId
      yield* a.punch({ peer: bId, ...b.localAddress, localPort: punchPort(Math.random()), role: "Initiator", withinMillis: 3000 })
      // Addressed through a relay nobody runs: only the punched connection can carry it.
      const answer = yield* a.send(relayedTarget(bId, deadRelay(43)), new Ping({}))
      expect(answer.value.observedHost).toBe(a.localAddress.host)
      // Port 0: the punched address is a NAT's mapping, which no routing table may take as the peer's.
      expect(answer.peer).toMatchObject({ nodeId: bId, address: { host: b.localAddress.host, port: 0 } })
      expect(answer.peer.relayedBy).toBeUndefined()
    }))

  it.scopedLive("ATTACK: another node at the punched address fails the identity check, and no call takes that connection", () =>
    Effect.gen(function*() {
      const [a, b] = [yield* startNode(44), yield* startNode(45)]
      const expected = testIdentity(46).nodeId
      const punched = yield* Effect.either(
        a.punch({ peer: expected, ...b.localAddress, localPort: punchPort(Math.random()), role: "Initiator", withinMillis: 3000 })
      )
      expect(Either.isLeft(punched) && punched.left.reason).toBe("IdentityMismatch")
      const later = yield* Effect.either(a.send(relayedTarget(expected, deadRelay(47)), new Ping({})))
      expect(Either.isLeft(later) && later.left._tag === "TransportError" && later.left.reason).toBe("Unreachable")
    }))

  it.scopedLive("nobody dialling back: it gives up within its time (the caller stays on the relay)", () =>
    Effect.gen(function*() {
      const a = yield* startNode(48)
      const started = Date.now()
      const outcome = yield* Effect.either(a.punch({
        peer: testIdentity(49).nodeId,
        host: freshLoopbackHost(),
        port: punchPort(Math.random()),
        localPort: punchPort(Math.random()),
        role: "Initiator",
        withinMillis: 600
      }))
      expect(Either.isLeft(outcome) && outcome.left.reason).toBe("Unreachable")
      expect(Date.now() - started).toBeLessThan(3000)
    }))
})

describe("hole punching: the answering end (on real sockets)", () => {
  it.scopedLive("serves the punched connection as an inbound one once the expected node proves its id", () =>
    Effect.gen(function*() {
      const b = yield* startNode(51)
      const other = yield* initiatorAt(50)
      yield* b.punch({
        peer: testIdentity(50).nodeId,
        host: other.address,
        port: other.port,
        localPort: punchPort(Math.random()),
        role: "Responder",
        withinMillis: 3000
      })
      expect((yield* b.stats).inbound).toBe(1)
    }))

  it.scopedLive("ATTACK: a peer punching again and again holds one served connection, not one per punch", () =>
    Effect.gen(function*() {
      const b = yield* startNode(56)
      for (let round = 0; round < 3; round++) {
        const other = yield* initiatorAt(55)
        yield* b.punch({
          peer: testIdentity(55).nodeId,
          host: other.address,
          port: other.port,
          localPort: punchPort(Math.random()),
          role: "Responder",
          withinMillis: 3000
        })
      }
      yield* b.stats.pipe(
        Effect.repeat({ until: (current) => current.inbound === 1, schedule: Schedule.spaced("10 millis") }),
        Effect.timeoutFail({ duration: "2 seconds", onTimeout: () => new Error("older punched connections stay open") })
      )
      expect((yield* b.stats).inbound).toBe(1)
    }))

  it.scopedLive("ATTACK: a name is never dialled (only IP addresses)", () =>
    Effect.gen(function*() {
      const b = yield* startNode(57)
      const outcome = yield* Effect.either(b.punch({
        peer: testIdentity(58).nodeId,
        host: "localhost",
        port: 40_000,
        localPort: punchPort(Math.random()),
        role: "Responder",
        withinMillis: 1000
      }))
      expect(Either.isLeft(outcome) && outcome.left.reason).toBe("Unreachable")
      expect((yield* b.stats).dialled).toBe(0)
    }))

  it.scopedLive("ATTACK: another node coming through the punched connection is dropped (IdentityMismatch)", () =>
    Effect.gen(function*() {
      const b = yield* startNode(53)
      const impostor = yield* initiatorAt(52)
      const outcome = yield* Effect.either(b.punch({
        peer: testIdentity(54).nodeId,
        host: impostor.address,
        port: impostor.port,
        localPort: punchPort(Math.random()),
        role: "Responder",
        withinMillis: 3000
      }))
      expect(Either.isLeft(outcome) && outcome.left.reason).toBe("IdentityMismatch")
      yield* b.stats.pipe(
        Effect.repeat({ until: (current) => current.inbound === 0, schedule: Schedule.spaced("10 millis") }),
        Effect.timeoutFail({ duration: "2 seconds", onTimeout: () => new Error("the impostor's connection stays open") })
      )
      expect((yield* b.stats).inbound).toBe(0)
    }))
})

describe("HolePunching (the node's service)", () => {
  it.scopedLive("a punch that fails leaves the conversation on the relay, and is not tried again at once", () =>
    Effect.gen(function*() {
      const { caller, relay, target, via } = yield* relayedPair({ relay: 61, target: 62, caller: 63 })
      const callerPunching = yield* withHolePunching(caller, 400)
      const targetPunching = yield* withHolePunching(target, 400)
      const first = yield* caller.send(via, new Ping({}))
      expect(first.peer.relayedBy).toBe(relay.hint.relayId)
      // The callee was asked (through the circuit) and took part; on loopback the two never meet.
      yield* callerPunching.status.pipe(
        Effect.repeat({ until: (current) => current.failed === 1, schedule: Schedule.spaced("20 millis") }),
        Effect.timeoutFail({ duration: "5 seconds", onTimeout: () => new Error("the punch did not end") })
      )
      expect(yield* callerPunching.status).toMatchObject({ succeeded: 0, failed: 1, initiating: 0 })
      expect((yield* targetPunching.status).answered).toBe(1)
      const later = yield* caller.send(via, new Ping({}))
      expect(later.peer.relayedBy).toBe(relay.hint.relayId)
      expect((yield* callerPunching.status).failed).toBe(1)
    }))

  it.scopedLive("ATTACK: HolePunch over a direct connection is refused: the node dials nobody", () =>
    Effect.gen(function*() {
      const [attacker, victim] = [yield* startNode(64), yield* startNode(65)]
      yield* withHolePunching(victim)
      const outcome = yield* Effect.either(attacker.send({ address: victim.localAddress }, new HolePunch({ port: 40_000 })))
      expect(Either.isLeft(outcome) && outcome.left._tag === "PunchRefused" && outcome.left.reason).toBe("NotRelayed")
      expect((yield* victim.stats).dialled).toBe(0)
    }))

  it.scopedLive("ATTACK: a caller behind a relay asking again and again makes the node dial at most once per interval", () =>
    Effect.gen(function*() {
      const { caller, target, via } = yield* relayedPair({ relay: 66, target: 67, caller: 68 })
      const targetPunching = yield* withHolePunching(target)
      const answers = yield* Effect.forEach(
        Array.from({ length: 10 }, (_, i) => 50_000 + i),
        (port) => Effect.either(caller.send(via, new HolePunch({ port }))),
        { concurrency: 1 }
      )
      const refusals = answers.flatMap((answer) =>
        Either.isLeft(answer) && answer.left._tag === "PunchRefused" ? [answer.left.reason] : []
      )
      expect(answers.filter(Either.isRight)).toHaveLength(1)
      expect(refusals).toHaveLength(9)
      expect(refusals.every((reason) => reason === "InProgress" || reason === "TooSoon")).toBe(true)
      expect(yield* targetPunching.status).toMatchObject({ answered: 1, refused: 9 })
    }))
})
