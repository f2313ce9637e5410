/**
 * One end of hole punches, run inside a host of the namespace test network
 * by `bench/holePunch.ts` (`ip netns exec … node --import tsx bench/punchAgent.ts HOST`).
 * Each line on stdin is one try: a fresh TCP transport of the node of
 * `seed`, listening on this host, runs `Transport.punch` in `role` towards
 * `host:port` from `localPort` (the production code path, without the
 * relay that would carry the request); the initiator then sends a `Ping`
 * over the punched connection (addressed through a relay that does not
 * exist, so only that connection can carry it). One line on stdout per try:
 * `{ try, ok, ms, error? }`. A responder keeps its transport until told
 * `{ close: try }`.
 */
import { Effect, Exit, Schema, Scope } from "effect"
import { createInterface } from "node:readline"
import type { RelayHint } from "../src/core/PeerAddress.js"
import { Ping } from "../src/node/Protocol.js"
import { relayedTarget } from "../src/node/Transport.js"
import { answerPings, startNode, testIdentity } from "../test/support/relay.js"

const Command = Schema.Union(
  Schema.Struct({
    try: Schema.Int,
    seed: Schema.Int.pipe(Schema.between(1, 150)),
    peerSeed: Schema.Int.pipe(Schema.between(1, 150)),
    role: Schema.Literal("Initiator", "Responder"),
    host: Schema.String,
    port: Schema.Int.pipe(Schema.between(1024, 65535)),
    localPort: Schema.Int.pipe(Schema.between(1024, 65535)),
    withinMillis: Schema.Int.pipe(Schema.positive())
  }),
  Schema.Struct({ close: Schema.Int })
)
const decodeCommand = Schema.decodeUnknownSync(Schema.parseJson(Command))

const ownHost = process.argv[2]
if (ownHost === undefined) throw new Error("usage: punchAgent.ts HOST")

/** A relay no one runs: a call addressed through it can only take a punched connection. */
const nowhere: RelayHint = { relayId: testIdentity(150).nodeId, address: { host: "192.0.2.1", port: 9 } }

const open = new Map<number, Scope.CloseableScope>()
const report = (line: object) => process.stdout.write(`${JSON.stringify(line)}\n`)

const runTry = (command: Extract<typeof Command.Type, { readonly seed: number }>) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    open.set(command.try, scope)
    const transport = yield* Scope.extend(startNode(command.seed, { listen: { host: ownHost, port: 0 } }), scope)
    yield* Scope.extend(answerPings(transport), scope)
    const peer = testIdentity(command.peerSeed).nodeId
    const started = Date.now()
    const outcome = yield* Effect.either(Effect.gen(function*() {
      yield* transport.punch({ ...command, peer })
      if (command.role === "Initiator") yield* transport.send(relayedTarget(peer, nowhere), new Ping({}))
    }))
    report(outcome._tag === "Right"
      ? { try: command.try, ok: true, ms: Date.now() - started }
      : { try: command.try, ok: false, ms: Date.now() - started, error: outcome.left.message })
    if (command.role === "Initiator") {
      open.delete(command.try)
      yield* Scope.close(scope, Exit.void)
    }
  })

createInterface({ input: process.stdin }).on("line", (line) => {
  const command = decodeCommand(line)
  if ("close" in command) {
    const scope = open.get(command.close)
    open.delete(command.close)
    if (scope !== undefined) Effect.runFork(Scope.close(scope, Exit.void))
    return
  }
  Effect.runFork(runTry(command).pipe(Effect.catchAllCause((cause) => Effect.sync(() => report({ try: command.try, ok: false, ms: 0, error: String(cause) })))))
})
report({ event: "ready" })
