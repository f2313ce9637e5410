/**
 * The simulator with most nodes behind NATs (`--nat 0.7`): nodes learn that
 * they cannot be dialled from their peers' dial-backs (nothing sets it for
 * them), stay out of every routing table, hold nothing for others, still
 * look names up, and are reached through relay circuits that the relays'
 * own handlers open, or through their mailboxes when offline. A seed
 * replays the whole scenario exactly.
 */
import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Exit, Logger, LogLevel, Random, Stream } from "effect"
import { userKey } from "../../src/core/Username.js"
import type { ChatEvent } from "../../src/chat/Messenger.js"
import { validRecordAt } from "../../src/node/Lookups.js"
import { verifyEd25519 } from "../../src/platform/NodeCrypto.js"
import { NodeConfig } from "../../src/node/NodeConfig.js"
import { makeSimLinks } from "../../src/sim/LinkModel.js"
import { buildNetwork, checkInvariants, measureLoad, type SimNetwork } from "../../src/sim/Simulation.js"
import { type SimNode, simSignatures } from "../../src/sim/SimNode.js"
import { makeVirtualTime } from "../../src/sim/VirtualTime.js"

const claimRules = { minDifficulty: NodeConfig.defaults.minClaimDifficulty, hash: simSignatures.claimHash }

const node = (net: SimNetwork, index: number): SimNode => {
  const session = net.sessions[index]
  if (session === undefined) throw new Error(`node ${index} is offline`)
  return session
}

/** Sends `text` from `from` to `to` (both online) and reports whether it arrived and which way the sender delivered it. */
const deliver = (net: SimNetwork, from: number, to: number, text: string) =>
  Effect.scoped(Effect.gen(function*() {
    const toName = net.users.find((user) => user.index === to)?.username ?? ""
    let received = false
    const events: Array<ChatEvent> = []
    yield* node(net, to).messenger.events.pipe(
      Stream.runForEach((event) =>
        Effect.sync(() => {
          if (event._tag === "Received" && event.entry.text === text) received = true
        })
      ),
      Effect.forkScoped
    )
    yield* node(net, from).messenger.events.pipe(Stream.runForEach((event) => Effect.sync(() => void events.push(event))), Effect.forkScoped)
    const sent = yield* Effect.orDie(node(net, from).messenger.send(toName, text))
    yield* Effect.sleep(Duration.seconds(10))
    const delivered = events.find((event) => event._tag === "StatusChanged" && event.id === sent.id && event.status === "delivered")
    return { received, via: delivered?._tag === "StatusChanged" ? delivered.via : undefined }
  }))

/** The scenario, as plain values: run twice, it must give the same ones. */
const scenario = (seed: number) =>
  Effect.gen(function*() {
    const links = yield* makeSimLinks()
    const net = yield* buildNetwork(links.network, { nodes: 20, seed, k: 6, alpha: 3, users: 10, join: "seeded", nat: 0.7 })
    // Reachability is checked on joining (an empty table: unknown) and a minute later; relays follow.
    yield* Effect.sleep(Duration.seconds(80))
    const natted = [...net.natted]
    const reachability = yield* Effect.forEach(net.online(), (peer) =>
      Effect.map(peer.dht.status, (status) => ({ index: peer.index, natted: net.natted.has(peer.index), reachability: status.reachability })))

    // Lookups from every NAT'd node for a user's record.
    const target = net.users[0]
    if (target === undefined) return yield* Effect.die("no users")
    const key = userKey(target.username)
    const lookups = yield* Effect.forEach(natted, (index) =>
      Effect.map(
        node(net, index).lookups.findValue(key, validRecordAt(key, verifyEd25519, claimRules)),
        (result) => result.value !== undefined
      ))

    // Live messages to NAT'd users, from a reachable user and from a NAT'd one.
    const nattedUsers = net.users.filter((user) => net.natted.has(user.index))
    const reachableUsers = net.users.filter((user) => !net.natted.has(user.index))
    const [alice, bob, carol] = [reachableUsers[0], nattedUsers[0], nattedUsers[1]]
    if (alice === undefined || bob === undefined || carol === undefined) return yield* Effect.die("the seed gave too few users of a kind")
    const live = [
      yield* deliver(net, alice.index, bob.index, "from a reachable user"),
      yield* deliver(net, carol.index, bob.index, "between two users behind NATs"),
      yield* deliver(net, bob.index, alice.index, "back to the reachable user")
    ]

    // Offline: carol is away, alice writes, carol comes back behind her NAT and pulls her mail.
    yield* net.stop(carol.index)
    yield* Effect.orDie(node(net, alice.index).messenger.send(carol.username, "while you were away"))
    yield* Effect.sleep(Duration.minutes(1))
    const back = yield* net.start(carol.index)
    yield* Effect.sleep(Duration.seconds(30))
    const pulled = (yield* Effect.orDie(back.messenger.history(alice.username))).map((entry) => entry.text)

    const violations = yield* checkInvariants(net)
    const load = yield* measureLoad(net)
    const recordOfBob = yield* Effect.map(
      node(net, alice.index).directory.resolve(bob.username),
      (answer) => (answer._tag === "Owner" ? { addresses: answer.record.addresses.length, relays: answer.record.relays?.length ?? 0 } : undefined)
    ).pipe(Effect.orElseSucceed(() => undefined))
    return { natted, reachability, lookups, live, pulled, violations, load, recordOfBob }
  }).pipe(Effect.scoped)

const run = async (seed: number) => {
  const exit = await makeVirtualTime(Date.UTC(2026, 0, 1)).runPromise(
    scenario(seed).pipe(Effect.withRandom(Random.make(seed)), Logger.withMinimumLogLevel(LogLevel.None)),
    { limitMs: 24 * 3_600_000 }
  )
  if (Exit.isFailure(exit)) throw new Error(`the simulation failed (seed ${seed}): ${String(exit.cause)}`)
  return exit.value
}

describe("the simulator with 70 % of the nodes behind NATs", () => {
  it("keeps NAT'd nodes out of tables and stores, and still finds and reaches them; a seed replays it", async () => {
    const outcome = await run(31)
    expect(outcome.natted.length).toBe(Math.round(0.7 * 20))
    // Every node judged itself from dial-backs: NAT'd ones private, the others public.
    for (const { natted, reachability } of outcome.reachability) expect(reachability).toBe(natted ? "Private" : "Public")
    // In no routing table, holding no record or mail for others (checkInvariants says which).
    expect(outcome.violations).toEqual([])
    const nattedLoad = outcome.load.find((side) => side.side === "natted")
    expect(nattedLoad).toMatchObject({ records: 0, mail: 0, reservations: 0, relayed: 0 })
    expect(outcome.load.find((side) => side.side === "reachable")?.relayed).toBeGreaterThan(0)
    // Lookups from behind NATs find the record.
    expect(outcome.lookups.length).toBe(outcome.natted.length)
    expect(outcome.lookups.every((found) => found)).toBe(true)
    // A NAT'd user's record lists relays, not an address nobody can dial; messages to it go through them.
    expect(outcome.recordOfBob).toEqual({ addresses: 0, relays: 2 })
    expect(outcome.live).toEqual([
      { received: true, via: "relay" },
      { received: true, via: "relay" },
      { received: true, via: "direct" }
    ])
    expect(outcome.pulled).toContain("while you were away")

    expect(JSON.stringify(await run(31))).toBe(JSON.stringify(outcome))
  }, 60_000)
})
