/**
 * Listening probes over real loopback sockets (`TcpTransport.proveListening`
 * and the listener's answer): a node proves it listens with one signature,
 * and hostile listeners (replaying, impersonating, silent, talking garbage)
 * and hostile probers (malformed, lingering, flooding) get nothing more than
 * the rules allow. Waits are on events, bounded by timeouts; no sleeps.
 */
import { describe, expect, it } from "@effect/vitest"
import { Deferred, Duration, Effect, Exit, Fiber, Schedule, Scope } from "effect"
import { spawn } from "node:child_process"
import * as dgram from "node:dgram"
import { readFileSync } from "node:fs"
import * as net from "node:net"
import { concatBytes } from "../../src/core/Bytes.js"
import { type Address } from "../../src/core/Contact.js"
import { type Datagram, helloPacket, parseDatagram, welcomePacket } from "../../src/core/Datagram.js"
import {
  judgeProbeAnswer,
  PAIR_PROBE_ANSWER_BYTES,
  PAIR_PROBE_PREAMBLE,
  pairProbeOf,
  pairProbeOpening,
  PROBE_ANSWER_BYTES,
  PROBE_CHALLENGE_BYTES,
  PROBE_OPENING_BYTES,
  PROBE_PREAMBLE,
  probeAnswer,
  probeOpening
} from "../../src/core/ListeningProbe.js"
import { Identity, type IdentityService, Signatures } from "../../src/node/Identity.js"
import { Ping } from "../../src/node/Protocol.js"
import type { TransportError } from "../../src/node/Transport.js"
import { sha256 } from "../../src/core/Sha256.js"
import { sha256Native, verifyEd25519 } from "../../src/platform/NodeCrypto.js"
import { staticKeyStatement } from "../../src/platform/SecureChannel.js"
import { TcpTransport, type TcpTransportConfig } from "../../src/platform/TcpTransport.js"
import { seededRandomBytes } from "../support/arbitraries.js"
import { freshLoopbackHost } from "../support/loopback.js"
import { startNode, testIdentity } from "../support/relay.js"

const random = seededRandomBytes(41)

/**
 * A raw listener on a fresh loopback host that runs `onSocket` for every
 * connection (a hostile node's listener), closed with the scope.
 */
const rawListener = (
  onSocket: (socket: net.Socket) => void,
  host: string = freshLoopbackHost()
): Effect.Effect<Address, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.async<{ readonly server: net.Server; readonly address: Address }>((resume) => {
      const server = net.createServer((socket) => {
        socket.on("error", () => {})
        onSocket(socket)
      })
      server.listen(0, host, () => {
        const bound = server.address()
        resume(Effect.succeed({ server, address: { host, port: typeof bound === "object" && bound !== null ? bound.port : 0 } }))
      })
    }),
    ({ server }) => Effect.sync(() => server.close())
  ).pipe(Effect.map(({ address }) => address))

/**
 * A raw listener that answers each probe with `identity`'s key and signature
 * over the challenge, handed to `send` (by default all at once, then closed).
 */
const answeringListener = (
  identity: IdentityService,
  send: (socket: net.Socket, answer: Uint8Array) => void = (socket, answer) => socket.end(answer),
  host: string = freshLoopbackHost()
) =>
  rawListener((socket) =>
    socket.once("data", (opening: Buffer) =>
      send(socket, probeAnswer(identity.signingPublicKey, identity.sign, opening.subarray(PROBE_PREAMBLE.length, PROBE_OPENING_BYTES)))), host)

/**
 * What a raw prober received: a whole answer (it then hangs up, as a prober
 * does), or whatever came before the listener closed (fails after 3 s).
 */
const rawProbe = (address: Address, bytes: Uint8Array): Effect.Effect<Uint8Array, string> =>
  Effect.async<Uint8Array, string>((resume) => {
    const chunks: Array<Uint8Array> = []
    const received = () => concatBytes(...chunks)
    const socket = net.connect(address.port, address.host, () => socket.write(bytes))
    socket.on("error", () => {})
    socket.on("data", (chunk: Buffer) => {
      chunks.push(chunk)
      if (received().length < PROBE_ANSWER_BYTES) return
      socket.destroy()
      resume(Effect.succeed(received()))
    })
    socket.on("close", () => resume(Effect.succeed(received())))
    return Effect.sync(() => socket.destroy())
  }).pipe(Effect.timeoutFail({ duration: "3 seconds", onTimeout: () => "the listener did not close the connection" }))

/** Waits until `node` holds no inbound connection (fails after 3 s). */
const untilNoInbound = (node: { readonly stats: Effect.Effect<{ readonly inbound: number }> }) =>
  node.stats.pipe(
    Effect.repeat({ until: (stats) => stats.inbound === 0, schedule: Schedule.spaced("10 millis") }),
    Effect.timeoutFail({ duration: "3 seconds", onTimeout: () => "the listener kept the connection" })
  )

/** The reason of a failed probe. */
const failureOf = <A>(exit: Exit.Exit<A, TransportError>): TransportError["reason"] | "succeeded" =>
  Exit.isSuccess(exit) ? "succeeded" : exit.cause._tag === "Fail" ? exit.cause.error.reason : "succeeded"

describe("listening probes", () => {
  it.live("a node proves it listens at its address: the prober learns its id there, verified", () =>
    Effect.gen(function*() {
      const prober = yield* startNode(1)
      const listener = yield* startNode(2)
      const nodeId = testIdentity(2).nodeId
      const peer = yield* prober.proveListening({ address: listener.localAddress, nodeId })
      expect(peer).toEqual({ nodeId, address: listener.localAddress })
      // No secure channel and no call: the listener lets the connection go once answered.
      yield* untilNoInbound(listener)
    }).pipe(Effect.scoped))

  it.live("an answer or an opening split across several writes is read whole", () =>
    Effect.gen(function*() {
      const prober = yield* startNode(1)
      const owner = testIdentity(2)
      // A listener that sends the key, then the signature in two parts, a turn of the event loop apart.
      const slow = yield* answeringListener(owner, (socket, answer) => {
        socket.write(answer.subarray(0, 32))
        setImmediate(() => {
          socket.write(answer.subarray(32, 64))
          setImmediate(() => socket.end(answer.subarray(64)))
        })
      })
      expect(yield* prober.proveListening({ address: slow, nodeId: owner.nodeId })).toEqual({ nodeId: owner.nodeId, address: slow })
      const listener = yield* startNode(2)
      const challenge = random(PROBE_CHALLENGE_BYTES)
      const opening = probeOpening(challenge)
      const answer = yield* Effect.async<Uint8Array, string>((resume) => {
        const chunks: Array<Uint8Array> = []
        const socket = net.connect(listener.localAddress.port, listener.localAddress.host, () => {
          socket.write(opening.subarray(0, 3))
          setImmediate(() => socket.write(opening.subarray(3)))
        })
        socket.on("error", () => {})
        socket.on("data", (chunk: Buffer) => chunks.push(chunk))
        socket.on("close", () => resume(Effect.succeed(concatBytes(...chunks))))
        return Effect.sync(() => socket.destroy())
      })
      const verdict = judgeProbeAnswer({ expected: owner.nodeId, challenge, answer, verify: verifyEd25519, hash: sha256Native })
      expect(verdict._tag).toBe("Proven")
    }).pipe(Effect.scoped))

  it.live("ATTACK: a port that drops SYNs costs the prober its timeout and no socket after it", () =>
    Effect.gen(function*() {
      const prober = yield* startNode(1)
      const host = freshLoopbackHost()
      // A listener whose accept queue is full: a stopped process listening with a backlog of 1 (Node
      // takes 0 for its default) and two connections queued. Linux drops further SYNs, so a dial
      // stays unanswered (the kernel retries it for about two minutes).
      const child = yield* Effect.acquireRelease(
        Effect.sync(() =>
          spawn(process.execPath, [
            "-e",
            `const s = require("node:net").createServer(); s.listen({ host: "${host}", port: 0, backlog: 1 }, () => console.log(s.address().port))`
          ], { stdio: ["ignore", "pipe", "inherit"] })
        ),
        (child) => Effect.sync(() => {
          child.kill("SIGCONT")
          child.kill("SIGKILL")
        })
      )
      const port = yield* Effect.async<number>((resume) => {
        child.stdout?.once("data", (chunk: Buffer) => resume(Effect.succeed(Number(chunk.toString("utf8").trim()))))
      })
      child.kill("SIGSTOP")
      yield* Effect.sync(() => readFileSync(`/proc/${child.pid}/stat`, "utf8").split(") ")[1]?.[0]).pipe(
        Effect.repeat({ until: (state) => state === "T", schedule: Schedule.spaced("5 millis") })
      )
      const queued = yield* Effect.forEach([1, 2], () =>
        Effect.acquireRelease(
          Effect.async<net.Socket>((resume) => {
            const socket = net.connect(port, host, () => resume(Effect.succeed(socket)))
            socket.on("error", () => {})
          }),
          (socket) => Effect.sync(() => socket.destroy())
        ))
      expect(queued.map((socket) => socket.readyState)).toEqual(["open", "open"])
      const sockets = () => process.getActiveResourcesInfo().filter((name) => name === "TCPSocketWrap").length
      const before = sockets()
      const exit = yield* Effect.exit(prober.proveListening({ address: { host, port }, nodeId: testIdentity(2).nodeId }, { timeout: Duration.millis(200) }))
        .pipe(
          // A dial that cannot be cancelled would hold the probe for the kernel's retries: fail clearly instead.
          Effect.disconnect,
          Effect.timeoutFail({ duration: "2 seconds", onTimeout: () => "the probe outlived its timeout" })
        )
      expect(failureOf(exit)).toBe("Timeout")
      // The dial was cancelled with the probe: its socket is gone at once, not after the kernel's retries.
      yield* Effect.sync(sockets).pipe(
        Effect.repeat({ until: (count) => count <= before, schedule: Schedule.spaced("5 millis") }),
        Effect.timeoutFail({ duration: "1 second", onTimeout: () => "the probe's socket outlived its timeout" })
      )
    }).pipe(Effect.scoped))

  it.live("another node listening there is an identity mismatch; nobody listening is unreachable", () =>
    Effect.gen(function*() {
      const prober = yield* startNode(1)
      const listener = yield* startNode(2)
      const mismatch = yield* Effect.exit(prober.proveListening({ address: listener.localAddress, nodeId: testIdentity(3).nodeId }))
      expect(failureOf(mismatch)).toBe("IdentityMismatch")
      const closedPort = yield* Effect.scoped(rawListener((socket) => socket.destroy()))
      const nobody = yield* Effect.exit(prober.proveListening({ address: closedPort, nodeId: testIdentity(2).nodeId }))
      expect(failureOf(nobody)).toBe("Unreachable")
    }).pipe(Effect.scoped))

  it.live("ATTACK: a listener replaying the real node's answer to an earlier probe proves nothing", () =>
    Effect.gen(function*() {
      const prober = yield* startNode(1)
      const victim = yield* startNode(2)
      const victimId = testIdentity(2).nodeId
      // The attacker probes the victim itself with a challenge of its own and keeps the answer...
      const captured = yield* rawProbe(victim.localAddress, probeOpening(random(PROBE_CHALLENGE_BYTES)))
      expect(captured.length).toBe(PROBE_ANSWER_BYTES)
      // ...and answers every probe at its own address with it, to be taken for the victim there.
      const attacker = yield* rawListener((socket) => socket.once("data", () => socket.end(captured)))
      const exit = yield* Effect.exit(prober.proveListening({ address: attacker, nodeId: victimId }))
      expect(failureOf(exit)).toBe("ProtocolViolation")
    }).pipe(Effect.scoped))

  it.live("ATTACK: a listener signing with its own key is not taken for the node it names", () =>
    Effect.gen(function*() {
      const prober = yield* startNode(1)
      const impostor = testIdentity(5)
      const attacker = yield* answeringListener(impostor)
      const exit = yield* Effect.exit(prober.proveListening({ address: attacker, nodeId: testIdentity(2).nodeId }))
      expect(failureOf(exit)).toBe("IdentityMismatch")
    }).pipe(Effect.scoped))

  it.live("ATTACK: a silent listener costs the prober its timeout, garbage a protocol violation, a short answer a close", () =>
    Effect.gen(function*() {
      const prober = yield* startNode(1)
      const nodeId = testIdentity(2).nodeId
      const silent = yield* rawListener(() => {})
      const quiet = yield* Effect.exit(prober.proveListening({ address: silent, nodeId }, { timeout: Duration.millis(300) }))
      expect(failureOf(quiet)).toBe("Timeout")
      const garbage = yield* rawListener((socket) => socket.once("data", () => socket.write(new Uint8Array(4096).fill(7))))
      expect(failureOf(yield* Effect.exit(prober.proveListening({ address: garbage, nodeId })))).toBe("ProtocolViolation")
      const short = yield* rawListener((socket) => socket.once("data", () => socket.end(new Uint8Array(40))))
      expect(failureOf(yield* Effect.exit(prober.proveListening({ address: short, nodeId })))).toBe("Closed")
    }).pipe(Effect.scoped))

  it.live("the listener answers a well-formed probe once, and nothing else: malformed or trailing bytes get no signature", () =>
    Effect.gen(function*() {
      const listener = yield* startNode(2, { handshakeTimeout: Duration.millis(300) })
      const challenge = random(PROBE_CHALLENGE_BYTES)
      const answer = yield* rawProbe(listener.localAddress, probeOpening(challenge))
      const verdict = judgeProbeAnswer({ expected: testIdentity(2).nodeId, challenge, answer, verify: verifyEd25519, hash: sha256Native })
      expect(verdict._tag).toBe("Proven")
      // Trailing bytes with the opening: closed unanswered.
      expect((yield* rawProbe(listener.localAddress, concatBytes(probeOpening(challenge), Uint8Array.of(1, 2, 3)))).length).toBe(0)
      // A short opening: closed unanswered when the handshake's time is up.
      expect((yield* rawProbe(listener.localAddress, probeOpening(challenge).subarray(0, 20))).length).toBe(0)
      // The listener still serves probes afterwards.
      expect((yield* rawProbe(listener.localAddress, probeOpening(random(PROBE_CHALLENGE_BYTES)))).length).toBe(PROBE_ANSWER_BYTES)
    }).pipe(Effect.scoped))

  it.live("ATTACK: a prober that never hangs up loses its place at the handshake's deadline", () =>
    Effect.gen(function*() {
      const listener = yield* startNode(2, { handshakeTimeout: Duration.millis(300) })
      const answered = yield* Deferred.make<number>()
      const ended = yield* Deferred.make<void>()
      yield* Effect.acquireRelease(
        Effect.sync(() => {
          // Half-open allowed: the listener's FIN after its answer does not close this end.
          const socket = net.connect({ port: listener.localAddress.port, host: listener.localAddress.host, allowHalfOpen: true }, () =>
            socket.write(probeOpening(random(PROBE_CHALLENGE_BYTES))))
          socket.on("error", () => {})
          socket.on("data", (chunk: Buffer) => Deferred.unsafeDone(answered, Exit.succeed(chunk.length)))
          socket.on("end", () => Deferred.unsafeDone(ended, Exit.void))
          return socket
        }),
        (socket) => Effect.sync(() => socket.destroy())
      )
      // The listener answers and closes its side first (its TIME_WAIT, not the prober's)...
      expect(yield* Deferred.await(answered)).toBe(PROBE_ANSWER_BYTES)
      yield* Deferred.await(ended)
      expect((yield* listener.stats).inbound).toBe(1)
      // ...and lets the connection go at the deadline although this end never closes.
      yield* untilNoInbound(listener)
      expect((yield* listener.stats).pending).toBe(0)
    }).pipe(Effect.scoped))

  it.live("probes under way are bounded: beyond 64 a probe fails at once as this node's overload", () =>
    Effect.gen(function*() {
      const prober = yield* startNode(1)
      const nodeId = testIdentity(2).nodeId
      const accepted = yield* Deferred.make<void>()
      let connections = 0
      const silent = yield* rawListener(() => {
        if (++connections === 64) Deferred.unsafeDone(accepted, Exit.void)
      })
      const slow = yield* Effect.forkScoped(Effect.forEach(
        Array.from({ length: 64 }, () => silent),
        (address) => Effect.exit(prober.proveListening({ address, nodeId }, { timeout: Duration.seconds(10) })),
        { concurrency: "unbounded" }
      ))
      // A probe counts from before its dial: once the listener accepted 64, all 64 are under way.
      yield* Deferred.await(accepted)
      const refused = yield* Effect.exit(prober.proveListening({ address: silent, nodeId }))
      expect(failureOf(refused)).toBe("Overloaded")
      yield* Fiber.interrupt(slow)
      // Interrupted probes give their places back.
      const after = yield* Effect.exit(prober.proveListening({ address: silent, nodeId }, { timeout: Duration.millis(100) }))
      expect(failureOf(after)).toBe("Timeout")
    }).pipe(Effect.scoped))
})

/**
 * A transport of the identity of `seed` that counts the signatures it makes
 * and checks, so a test sees which proof a probe took.
 */
const countingNode = (seed: number, config: Partial<TcpTransportConfig> = {}) =>
  Effect.gen(function*() {
    const counts = { signed: 0, checked: 0 }
    const identity = testIdentity(seed)
    const transport = yield* TcpTransport.make({ listen: { host: freshLoopbackHost(), port: 0 }, ...config }).pipe(
      Effect.provideService(Identity, {
        ...identity,
        sign: (message) => {
          counts.signed++
          return identity.sign(message)
        }
      }),
      Effect.provideService(Signatures, {
        verify: (key, message, signature) => {
          counts.checked++
          return verifyEd25519(key, message, signature)
        },
        claimHash: sha256
      })
    )
    yield* transport.serve({ Ping: () => Effect.succeed({ observedHost: "" }) })
    return { transport, counts, nodeId: identity.nodeId }
  })

/** Nodes 1 and 2, node 2 having called node 1 by datagram: node 1 holds a session of node 2's, a pair. */
const metByDatagram = Effect.gen(function*() {
  const prober = yield* countingNode(1)
  const peer = yield* countingNode(2)
  yield* peer.transport.send({ address: prober.transport.localAddress, nodeId: prober.nodeId }, new Ping({}))
  return { prober, peer }
})

/** A pair probe's opening naming `proberStaticKey`, with a MAC nobody made under any pair (a stranger's). */
const strangersPairProbe = (challenge: Uint8Array, proberStaticKey: Uint8Array) =>
  pairProbeOpening({
    challenge,
    prober: { staticKey: proberStaticKey, nodeId: testIdentity(8).nodeId },
    listener: { staticKey: random(32), nodeId: testIdentity(9).nodeId }
  }, () => random(32))

/** The static key a node shows in its `Welcome` to anyone's `Hello` (public). */
const staticKeyOf = (address: Address) =>
  Effect.async<Uint8Array>((resume) => {
    const socket = dgram.createSocket("udp4")
    socket.on("message", (packet: Buffer) => {
      const datagram = parseDatagram(new Uint8Array(packet))
      if (datagram?.kind !== "Welcome") return
      socket.close()
      resume(Effect.succeed(Uint8Array.from(datagram.staticKey)))
    })
    socket.send(helloPacket(random(16)), address.port, address.host)
    return Effect.sync(() => socket.close())
  }).pipe(Effect.timeoutFail({ duration: "3 seconds", onTimeout: () => "no Welcome" }), Effect.orDie)

describe("pair probes (nodes met by datagram)", () => {
  it.live("a node met by datagram proves it listens with the pair's MAC, both ways: no signature made or checked", () =>
    Effect.gen(function*() {
      const a = yield* countingNode(1)
      const b = yield* countingNode(2)
      // a calls b by datagram: a holds a link to b (answered), b a session of a's; both hold the pair's key.
      yield* a.transport.send({ address: b.transport.localAddress, nodeId: b.nodeId }, new Ping({}))
      expect((yield* a.transport.stats).datagrams?.queriesSent).toBe(1)
      const before = { a: { ...a.counts }, b: { ...b.counts } }
      // The server probes its client (as a join's peers probe the newcomer), and the client its server.
      expect(yield* b.transport.proveListening({ address: a.transport.localAddress, nodeId: a.nodeId }))
        .toEqual({ nodeId: a.nodeId, address: a.transport.localAddress })
      expect(yield* a.transport.proveListening({ address: b.transport.localAddress, nodeId: b.nodeId }))
        .toEqual({ nodeId: b.nodeId, address: b.transport.localAddress })
      expect({ a: a.counts, b: b.counts }).toEqual(before)
      // A node never met still proves itself by signature: one made, one checked.
      const c = yield* countingNode(3)
      expect(yield* c.transport.proveListening({ address: a.transport.localAddress, nodeId: a.nodeId }))
        .toEqual({ nodeId: a.nodeId, address: a.transport.localAddress })
      expect(a.counts.signed).toBe(before.a.signed + 1)
      expect(c.counts.checked).toBe(1)
    }).pipe(Effect.scoped))

  it.live("ATTACK: a pair probe reflected to the prober's own listener proves nothing: the prober signs as itself", () =>
    Effect.gen(function*() {
      const { peer: victim, prober: prober } = yield* metByDatagram
      const victimStatic = yield* staticKeyOf(victim.transport.localAddress)
      // The attacker, on the victim's host (a shared address, as behind a carrier-grade NAT) and asked to
      // prove the victim at its own port there, hands the prober's opening back to the prober itself as if
      // the victim were probing it, and passes on whatever the prober answers.
      let reflectedBytes = -1
      const reflecting = yield* rawListener((socket) =>
        socket.once("data", (bytes: Buffer) => {
          const opening = pairProbeOf(new Uint8Array(bytes))
          if (opening === undefined) return socket.destroy()
          const reflected = concatBytes(PAIR_PROBE_PREAMBLE, opening.challenge, victimStatic, opening.proberMac)
          Effect.runPromise(rawProbe(prober.transport.localAddress, reflected)).then(
            (answer) => {
              reflectedBytes = answer.length
              socket.end(answer)
            },
            () => socket.destroy()
          )
        }), victim.transport.localAddress.host)
      const exit = yield* Effect.exit(prober.transport.proveListening({ address: reflecting, nodeId: victim.nodeId }))
      // The prober's listener found no good MAC for that direction and signed with its own key.
      expect(reflectedBytes).toBe(PROBE_ANSWER_BYTES)
      expect(failureOf(exit)).toBe("IdentityMismatch")
    }).pipe(Effect.scoped))

  it.live("ATTACK: an impostor at an address cannot answer a pair probe for the node it names: a signature over its own challenge, or a forged MAC", () =>
    Effect.gen(function*() {
      const { peer: victim, prober: prober } = yield* metByDatagram
      // The impostor, on the victim's host, reads the prober's opening, asks the victim about a challenge of
      // its own under the prober's name (its MAC does not fit that challenge, so the victim signs), and
      // answers with that.
      const replaying = yield* rawListener((socket) =>
        socket.once("data", (bytes: Buffer) => {
          const opening = pairProbeOf(new Uint8Array(bytes))
          if (opening === undefined) return socket.destroy()
          const own = concatBytes(PAIR_PROBE_PREAMBLE, random(PROBE_CHALLENGE_BYTES), opening.proberStaticKey, opening.proberMac)
          Effect.runPromise(rawProbe(victim.transport.localAddress, own)).then((answer) => socket.end(answer), () => socket.destroy())
        }), victim.transport.localAddress.host)
      expect(failureOf(yield* Effect.exit(prober.transport.proveListening({ address: replaying, nodeId: victim.nodeId })))).toBe(
        "ProtocolViolation"
      )
      // 32 bytes of its own: no better.
      const forging = yield* rawListener(
        (socket) => socket.once("data", () => socket.end(random(PAIR_PROBE_ANSWER_BYTES))),
        victim.transport.localAddress.host
      )
      expect(failureOf(yield* Effect.exit(prober.transport.proveListening({ address: forging, nodeId: victim.nodeId })))).toBe(
        "ProtocolViolation"
      )
      // Signing with its own key is another node, as with a plain probe.
      const signing = yield* answeringListener(testIdentity(5), undefined, victim.transport.localAddress.host)
      expect(failureOf(yield* Effect.exit(prober.transport.proveListening({ address: signing, nodeId: victim.nodeId })))).toBe(
        "IdentityMismatch"
      )
      // The victim itself, where it listens, is proven as before.
      expect(yield* prober.transport.proveListening({ address: victim.transport.localAddress, nodeId: victim.nodeId }))
        .toEqual({ nodeId: victim.nodeId, address: victim.transport.localAddress })
    }).pipe(Effect.scoped))

  it.live("ATTACK: a stranger learns nothing of a node's pairs: a pair probe naming a peer's static key draws the signature, as any other", () =>
    Effect.gen(function*() {
      const { peer: peer, prober: met } = yield* metByDatagram
      const peerStatic = yield* staticKeyOf(peer.transport.localAddress)
      for (const named of [peerStatic, random(32)]) {
        const challenge = random(PROBE_CHALLENGE_BYTES)
        const answer = yield* rawProbe(met.transport.localAddress, strangersPairProbe(challenge, named))
        expect(answer.length).toBe(PROBE_ANSWER_BYTES)
        expect(judgeProbeAnswer({ expected: met.nodeId, challenge, answer, verify: verifyEd25519, hash: sha256Native })._tag).toBe("Proven")
      }
      // A pair probe with bytes after it draws nothing.
      const opening = strangersPairProbe(random(PROBE_CHALLENGE_BYTES), peerStatic)
      expect((yield* rawProbe(met.transport.localAddress, concatBytes(opening, Uint8Array.of(9)))).length).toBe(0)
    }).pipe(Effect.scoped))

  it.live("a node that restarted (a new static key) and holds another pair with the prober is proven by its signature", () =>
    Effect.gen(function*() {
      // The prober takes one new datagram client, so the restarted node's query is turned away (Busy) and it
      // holds a link the prober has no session for.
      const prober = yield* countingNode(1, { datagramLimits: { newClientBurstTotal: 1, newClientsPerSecondTotal: 0.001 } })
      const before = yield* Scope.make()
      const old = yield* Scope.extend(startNode(2), before)
      yield* old.send({ address: prober.transport.localAddress, nodeId: prober.nodeId }, new Ping({}))
      yield* Scope.close(before, Exit.void)
      const restarted = yield* countingNode(2)
      yield* restarted.transport.send({ address: prober.transport.localAddress, nodeId: prober.nodeId }, new Ping({}))
      expect((yield* restarted.transport.stats).datagrams?.fellBack).toBe(1)
      // The prober still holds the old process's pair and sends a pair probe; the new process signs.
      const signedBefore = restarted.counts.signed
      expect(yield* prober.transport.proveListening({ address: restarted.transport.localAddress, nodeId: restarted.nodeId }))
        .toEqual({ nodeId: restarted.nodeId, address: restarted.transport.localAddress })
      expect(restarted.counts.signed).toBe(signedBefore + 1)
    }).pipe(Effect.scoped))

  it.live("ATTACK: a Welcome replayed from another address makes no pair: the link to it is used for pair probes only once an answer opens", () =>
    Effect.gen(function*() {
      const victim = yield* countingNode(2)
      const prober = yield* countingNode(1)
      // The victim's Welcome, as anyone's Hello draws it.
      const welcome = yield* Effect.async<Uint8Array>((resume) => {
        const socket = dgram.createSocket("udp4")
        socket.on("message", (packet: Buffer) => {
          socket.close()
          resume(Effect.succeed(new Uint8Array(packet)))
        })
        socket.send(helloPacket(random(16)), victim.transport.localAddress.port, victim.transport.localAddress.host)
        return Effect.sync(() => socket.close())
      })
      // The attacker answers Hellos at its own address with it (the Hello's token put in), never a query,
      // and listens for TCP on the same port to see which probe comes.
      const host = freshLoopbackHost()
      const queried = yield* Deferred.make<void>()
      const udp = yield* Effect.acquireRelease(
        Effect.async<dgram.Socket>((resume) => {
          const socket = dgram.createSocket("udp4")
          socket.on("message", (packet: Buffer, from: dgram.RemoteInfo) => {
            const datagram = parseDatagram(new Uint8Array(packet))
            if (datagram?.kind === "Query") Deferred.unsafeDone(queried, Exit.void)
            if (datagram?.kind !== "Hello") return
            const replayed = Uint8Array.from(welcome)
            replayed.set(datagram.token, 4)
            socket.send(replayed, from.port, from.address)
          })
          socket.bind(0, host, () => resume(Effect.succeed(socket)))
        }),
        (socket) => Effect.sync(() => socket.close())
      )
      const port = udp.address().port
      const openings: Array<number> = []
      yield* Effect.acquireRelease(
        Effect.async<net.Server>((resume) => {
          const server = net.createServer((socket) => {
            socket.on("error", () => {})
            socket.once("data", (bytes: Buffer) => {
              openings.push(bytes[0] as number)
              socket.destroy()
            })
          })
          server.listen(port, host, () => resume(Effect.succeed(server)))
        }),
        (server) => Effect.sync(() => server.close())
      )
      const attacker = { host, port }
      // The prober believes the Welcome (the victim's own signature) and sends its query, which nobody opens.
      yield* Effect.forkScoped(Effect.exit(prober.transport.send({ address: attacker, nodeId: victim.nodeId }, new Ping({}), { timeout: "2 seconds" })))
      yield* Deferred.await(queried)
      const exit = yield* Effect.exit(prober.transport.proveListening({ address: attacker, nodeId: victim.nodeId }))
      expect(failureOf(exit)).toBe("Closed")
      // A plain probe went there, not a pair probe keyed on a pair nobody proved.
      expect(openings).toEqual([PROBE_PREAMBLE[0]])
    }).pipe(Effect.scoped))

  it.live("ATTACK: a node claiming another's static key in its Welcome and relaying its datagrams is proven by neither that node's MAC nor the prober's own", () =>
    Effect.gen(function*() {
      const prober = yield* countingNode(1)
      const victim = yield* countingNode(2)
      const attacker = testIdentity(9)
      for (const oracle of [victim.transport.localAddress, prober.transport.localAddress]) {
        // The attacker's address: UDP and TCP on one port.
        const host = freshLoopbackHost()
        const udp = yield* Effect.acquireRelease(
          Effect.async<dgram.Socket>((resume) => {
            const socket = dgram.createSocket("udp4")
            socket.bind(0, host, () => resume(Effect.succeed(socket)))
          }),
          (socket) => Effect.sync(() => socket.close())
        )
        const port = udp.address().port
        // The oracle's Welcome to the attacker's Hello: its static key, and its cookie for the attacker's address.
        const oracleWelcome = yield* Effect.async<Extract<Datagram, { readonly kind: "Welcome" }>>((resume) => {
          udp.once("message", (packet: Buffer) => {
            const datagram = parseDatagram(new Uint8Array(packet))
            if (datagram?.kind === "Welcome") resume(Effect.succeed(datagram))
          })
          udp.send(helloPacket(random(16)), oracle.port, oracle.host)
        })
        // Its own Welcome names the oracle's static key, signed by its own identity key (anyone can sign any
        // key); queries go on to the oracle, whose answers come back to the prober through it.
        const claimed = {
          signingKey: attacker.signingPublicKey,
          staticKey: Uint8Array.from(oracleWelcome.staticKey),
          staticSignature: attacker.sign(staticKeyStatement(oracleWelcome.staticKey))
        }
        const proberAddress = prober.transport.localAddress
        udp.on("message", (packet: Buffer, from: dgram.RemoteInfo) => {
          const datagram = parseDatagram(new Uint8Array(packet))
          if (datagram?.kind === "Hello") udp.send(welcomePacket(datagram.token, claimed, oracleWelcome.cookie), from.port, from.address)
          else if (datagram?.kind === "Query") udp.send(packet, oracle.port, oracle.host)
          else if (datagram !== undefined) udp.send(packet, proberAddress.port, proberAddress.host)
        })
        // TCP at its address: a pipe to the oracle's listener.
        yield* Effect.acquireRelease(
          Effect.async<net.Server>((resume) => {
            const server = net.createServer((socket) => {
              const onward = net.connect(oracle.port, oracle.host)
              socket.pipe(onward)
              onward.pipe(socket)
              socket.on("error", () => {})
              onward.on("error", () => {})
            })
            server.listen(port, host, () => resume(Effect.succeed(server)))
          }),
          (server) => Effect.sync(() => server.close())
        )
        const address = { host, port }
        // The prober calls the attacker by datagram, as a contact it learned of, and probes it.
        yield* Effect.exit(prober.transport.send({ address, nodeId: attacker.nodeId }, new Ping({}), { timeout: "2 seconds" }))
        const exit = yield* Effect.exit(prober.transport.proveListening({ address, nodeId: attacker.nodeId }))
        // Whoever answers at the end of the pipe signs as itself: never taken for the attacker.
        expect(failureOf(exit)).toBe("IdentityMismatch")
      }
      // The prober never made a pair with itself: a Welcome naming its own static key is dropped unbelieved.
      expect((yield* prober.transport.stats).datagrams?.dropped["OwnStaticKey"]).toBeGreaterThanOrEqual(1)
    }).pipe(Effect.scoped))

  it.live("a session is a pair only at the host its queries came from: another host of that node id gets a plain probe", () =>
    Effect.gen(function*() {
      const { peer: met, prober: prober } = yield* metByDatagram
      const openings: Array<number> = []
      const elsewhere = yield* rawListener((socket) =>
        socket.once("data", (bytes: Buffer) => {
          openings.push(bytes[0] as number)
          socket.destroy()
        })
      )
      const sameHost = yield* rawListener((socket) =>
        socket.once("data", (bytes: Buffer) => {
          openings.push(bytes[0] as number)
          socket.destroy()
        }), met.transport.localAddress.host)
      yield* Effect.exit(prober.transport.proveListening({ address: elsewhere, nodeId: met.nodeId }))
      yield* Effect.exit(prober.transport.proveListening({ address: sameHost, nodeId: met.nodeId }))
      expect(openings).toEqual([PROBE_PREAMBLE[0], PAIR_PROBE_PREAMBLE[0]])
    }).pipe(Effect.scoped))
})
