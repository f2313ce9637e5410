/**
 * Things that move under a conversation across NATs, on the test internet
 * with real `peerchat start` processes:
 *
 * - **A relay dies mid-conversation.** Four public nodes (so a user behind a
 *   NAT has spares to move to) and two users behind NATs (carol behind a
 *   port-preserving NAT, dave behind a symmetric one) chat through circuits.
 *   The relay of dave's record that carried carol's message is killed with
 *   SIGKILL, like a crash; the next messages both ways are delivered at once
 *   (a sender whose copy of the record still lists the dead relay moves on
 *   to the other), dave re-publishes a record with a higher sequence that
 *   lists live relays instead of the dead one, and each history holds every
 *   message exactly once.
 * - **A user moves homes.** Carol registers and chats with bob (public) from
 *   home A (port-preserving NAT), stops, and starts again from the same data
 *   directory in home B (symmetric NAT), then on a public host: each time the
 *   same name and key (registering again is no conflict) with a higher record
 *   sequence and her new route (relays, then her own address); the message
 *   bob wrote while she moved waits with her mailbox and reaches her once
 *   she is back (pulled behind the NAT, pushed to her public address), new
 *   messages go both ways, and her history holds everything once, in order.
 *
 * Both log their phases and the times measured (kill → record re-published,
 * start at the new home → first delivery).
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Schema } from "effect"
import { join } from "node:path"
import { WhoisAnswer } from "../../src/node/Control.js"
import { scopedTempDir } from "../support/tempDir.js"
import { canCreateNamespaces } from "./Netns.js"
import { type HostNode, peerchat, peerchatJson, startPeerchat } from "./Peerchat.js"
import { eventually, type Host, makeNetwork } from "./Topology.js"

const skip = canCreateNamespaces()
const title = (name: string) => (skip === undefined ? name : `${name} (skipped: ${skip})`)

/** `peerchat history NAME --json`, the fields used here. */
const History = Schema.Array(Schema.Struct({ from: Schema.String, to: Schema.String, text: Schema.String, status: Schema.String }))

/** `peerchat status --json`, the fields used here. */
const NodeStatus = Schema.Struct({
  reachability: Schema.String,
  circuits: Schema.optional(Schema.Struct({
    relays: Schema.Array(Schema.String),
    reservationsServed: Schema.Number,
    circuitsRelayed: Schema.Number
  }))
})

/** `peerchat send --wait --json`, the fields used here. */
const SendOutcome = Schema.Struct({ to: Schema.String, status: Schema.Literal("delivered", "stored-offline", "queued") })

const whoisFrom = (node: HostNode, name: string) =>
  Effect.map(peerchatJson(node.host, ["whois", name, "--data-dir", node.dataDir]), Schema.decodeUnknownSync(WhoisAnswer))

const statusOf = (node: HostNode) =>
  Effect.map(peerchatJson(node.host, ["status", "--data-dir", node.dataDir]), Schema.decodeUnknownSync(NodeStatus))

const historyOf = (node: HostNode, name: string) =>
  Effect.map(peerchatJson(node.host, ["history", name, "--data-dir", node.dataDir]), Schema.decodeUnknownSync(History))

/** `peerchat send TO TEXT --wait` from `node`: the exit code and the final status (at most `timeout`). */
const sendAndWait = (node: HostNode, to: string, text: string, timeout = "20s") =>
  Effect.map(
    peerchat(node.host, ["send", to, text, "--wait", "--timeout", timeout, "--json", "--data-dir", node.dataDir]),
    (outcome) => {
      expect(outcome.stdout, `send ${to} "${text}": ${outcome.stderr}`).not.toBe("")
      return { code: outcome.code, status: Schema.decodeUnknownSync(SendOutcome)(JSON.parse(outcome.stdout)).status }
    }
  )

/** Sends and expects a receipt within the wait. */
const deliver = (node: HostNode, to: string, text: string) =>
  Effect.map(sendAndWait(node, to, text), (outcome) => {
    expect(outcome, `${node.host.label} → ${to}: "${text}"`).toEqual({ code: 0, status: "delivered" })
  })

/** The texts of a conversation, each with how often it occurs. */
const countTexts = (history: typeof History.Type) => {
  const counts = new Map<string, number>()
  for (const entry of history) counts.set(entry.text, (counts.get(entry.text) ?? 0) + 1)
  return counts
}

/** A clock for a test's log: seconds since it began, and since a mark. */
const stopwatch = () => {
  const began = Date.now()
  const seconds = (since: number) => `${((Date.now() - since) / 1000).toFixed(1)} s`
  return {
    phase: (what: string) => Effect.logInfo(`+${seconds(began)}: ${what}`),
    since: seconds
  }
}

/** The node listening at `hostPort` (a relay as a record or a status lists it: `[prefix@]host:port`). */
const nodeAt = (nodes: ReadonlyArray<HostNode>, route: string): HostNode => {
  const found = nodes.find((node) => route.endsWith(`@${node.ready.listen}`) || route === node.ready.listen)
  if (found === undefined) throw new Error(`no public node listens at ${route}`)
  return found
}

describe.skipIf(skip !== undefined)(title("roaming across NATs"), () => {
  it.scopedLive("a relay is killed mid-conversation and the conversation continues through another", () =>
    Effect.gen(function*() {
      const clock = stopwatch()
      const net = yield* makeNetwork
      const [eastHost, ...otherPublicHosts] = yield* Effect.all([
        net.addPublicHost("east"),
        net.addPublicHost("west"),
        net.addPublicHost("north"),
        net.addPublicHost("south")
      ])
      const [home, flat] = [yield* net.addHome("home", "port-preserving-nat"), yield* net.addHome("flat", "symmetric-nat")]
      const [laptop, phone] = [yield* home.addHost("laptop"), yield* flat.addHost("phone")]
      const root = yield* scopedTempDir("roaming-relay")

      const alice = yield* startPeerchat(eastHost, join(root, "alice"))
      const bootstrap = ["--bootstrap", alice.ready.listen]
      const others = yield* Effect.all(
        otherPublicHosts.map((host) => startPeerchat(host, join(root, host.label), bootstrap)),
        { concurrency: "unbounded" }
      )
      const publicNodes = [alice, ...others]
      const [carol, dave] = yield* Effect.all([
        startPeerchat(laptop, join(root, "carol"), bootstrap),
        startPeerchat(phone, join(root, "dave"), bootstrap)
      ], { concurrency: "unbounded" })
      yield* Effect.all([
        peerchatJson(laptop, ["register", "carol", "--data-dir", carol.dataDir]),
        peerchatJson(phone, ["register", "dave", "--data-dir", dave.dataDir])
      ], { concurrency: "unbounded" })
      yield* clock.phase("four public nodes and two behind NATs running; carol and dave registered")

      // Each holds reservations with two relays (a spare), and the other sees a record that lists both.
      const holdsTwoRelays = (node: HostNode, name: string, seenBy: HostNode) =>
        Effect.gen(function*() {
          const status = yield* statusOf(node)
          expect(status.reachability).toBe("Private")
          expect(status.circuits?.relays).toHaveLength(2)
          const record = yield* whoisFrom(seenBy, name)
          expect(record.addresses).toEqual([])
          expect(record.relays).toHaveLength(2)
          return record
        })
      const [carolRecord, daveRecord] = yield* Effect.all([
        eventually(holdsTwoRelays(carol, "carol", dave), "60 seconds", "1 second"),
        eventually(holdsTwoRelays(dave, "dave", carol), "60 seconds", "1 second")
      ], { concurrency: "unbounded" })
      yield* clock.phase(`records list two relays each: carol ${carolRecord.relays?.join(", ")}; dave ${daveRecord.relays?.join(", ")}`)

      const conversation: Array<readonly [HostNode, string, string]> = []
      const say = (from: HostNode, to: string, text: string) =>
        Effect.zipRight(Effect.sync(() => conversation.push([from, to, text])), deliver(from, to, text))
      yield* Effect.all([
        say(carol, "dave", "1. hi dave, through a relay"),
        say(dave, "carol", "2. hi carol, through one too")
      ], { concurrency: "unbounded" })
      yield* clock.phase("carol and dave chatted both ways")

      // Which public nodes hold reservations and carried the circuits: carol's message to dave went through
      // one of the relays of dave's record (senders try them in order). That one dies.
      const circuitsBefore = yield* Effect.forEach(publicNodes, statusOf, { concurrency: "unbounded" })
      yield* Effect.logInfo(
        `relays: ${
          publicNodes.map((node, index) =>
            `${node.host.label} (${circuitsBefore[index]?.reachability}) ${JSON.stringify(circuitsBefore[index]?.circuits)}`
          ).join("; ")
        }`
      )
      const relayedFor = (node: HostNode) => circuitsBefore[publicNodes.indexOf(node)]?.circuits
      const daveRelays = (daveRecord.relays ?? []).map((route) => nodeAt(publicNodes, route))
      for (const relay of daveRelays) expect(relayedFor(relay)?.reservationsServed).toBeGreaterThanOrEqual(1)
      const victim = daveRelays.find((relay) => (relayedFor(relay)?.circuitsRelayed ?? 0) > 0)
      if (victim === undefined) throw new Error("no relay of dave's record carried a circuit")
      yield* victim.kill
      const killedAt = Date.now()
      yield* clock.phase(
        `killed the relay ${victim.host.label} (${victim.ready.listen}, ${
          daveRelays.indexOf(victim) === 0 ? "first" : "second"
        } in dave's record) with SIGKILL`
      )

      // The conversation goes on at once (the record still lists the dead relay first: senders move on to the next).
      yield* Effect.all([
        say(carol, "dave", "3. are you still there?"),
        say(dave, "carol", "4. yes, still here")
      ], { concurrency: "unbounded" })
      yield* clock.phase(`both ways delivered ${clock.since(killedAt)} after the kill`)

      // Dave notices, drops the dead relay, reserves with a spare, and re-publishes: a record with a higher
      // sequence that lists two live relays and not the dead one.
      const live = (route: string) => !route.endsWith(`@${victim.ready.listen}`)
      const withoutVictim = eventually(
        Effect.gen(function*() {
          const record = yield* whoisFrom(carol, "dave")
          expect(record.sequence).toBeGreaterThan(daveRecord.sequence)
          expect(record.relays?.length).toBeGreaterThanOrEqual(1)
          expect((record.relays ?? []).every(live)).toBe(true)
          return record
        }),
        "60 seconds",
        "200 millis"
      )
      const republished = yield* withoutVictim
      yield* clock.phase(
        `dave's record lists no dead relay ${clock.since(killedAt)} after the kill: ${republished.relays?.join(", ")} (sequence ${republished.sequence})`
      )
      const replaced = yield* eventually(
        Effect.gen(function*() {
          const record = yield* whoisFrom(carol, "dave")
          expect(record.relays).toHaveLength(2)
          expect((record.relays ?? []).every(live)).toBe(true)
          return record
        }),
        "60 seconds",
        "200 millis"
      )
      yield* clock.phase(
        `dave's record lists two live relays again ${clock.since(killedAt)} after the kill: ${replaced.relays?.join(", ")} (sequence ${replaced.sequence})`
      )
      const daveNow = yield* statusOf(dave)
      expect(daveNow.circuits?.relays).toHaveLength(2)
      expect(daveNow.circuits?.relays).not.toContain(victim.ready.listen)

      yield* Effect.all([
        say(carol, "dave", "5. the new relay works"),
        say(dave, "carol", "6. it does")
      ], { concurrency: "unbounded" })
      yield* clock.phase("carol and dave chatted both ways through the new relays")

      // Nothing lost, nothing twice: each history holds every message of the conversation exactly once.
      const [carolHistory, daveHistory] = yield* Effect.all([historyOf(carol, "dave"), historyOf(dave, "carol")], {
        concurrency: "unbounded"
      })
      const expected = new Map(conversation.map(([, , text]) => [text, 1]))
      expect(countTexts(carolHistory)).toEqual(expected)
      expect(countTexts(daveHistory)).toEqual(expected)
    }), { timeout: 240_000 })

  it.scopedLive("a user moves from one home to another and keeps her name and history", () =>
    Effect.gen(function*() {
      const clock = stopwatch()
      const net = yield* makeNetwork
      const [east, west, north, office] = yield* Effect.all([
        net.addPublicHost("east"),
        net.addPublicHost("west"),
        net.addPublicHost("north"),
        net.addPublicHost("office")
      ])
      const [homeA, homeB] = [yield* net.addHome("homea", "port-preserving-nat"), yield* net.addHome("homeb", "symmetric-nat")]
      const [laptop, cafe] = [yield* homeA.addHost("laptop"), yield* homeB.addHost("cafe")]
      const root = yield* scopedTempDir("roaming-move")
      const carolData = join(root, "carol")

      const alice = yield* startPeerchat(east, join(root, "alice"))
      const bootstrap = ["--bootstrap", alice.ready.listen]
      const [bob, , carolAtHome] = yield* Effect.all([
        startPeerchat(west, join(root, "bob"), bootstrap),
        startPeerchat(north, join(root, "erin"), bootstrap),
        startPeerchat(laptop, carolData, bootstrap)
      ], { concurrency: "unbounded" })
      yield* Effect.all([
        peerchatJson(west, ["register", "bob", "--data-dir", bob.dataDir]),
        peerchatJson(laptop, ["register", "carol", "--data-dir", carolData])
      ], { concurrency: "unbounded" })
      const atHome = yield* eventually(
        Effect.gen(function*() {
          const record = yield* whoisFrom(bob, "carol")
          expect(record.addresses).toEqual([])
          expect(record.relays?.length).toBeGreaterThanOrEqual(1)
          return record
        }),
        "60 seconds",
        "1 second"
      )
      yield* clock.phase(`carol registered in home A; her record lists relays ${atHome.relays?.join(", ")} (sequence ${atHome.sequence})`)

      const sent: Array<string> = []
      const say = (from: HostNode, to: string, text: string) => Effect.zipRight(Effect.sync(() => sent.push(text)), deliver(from, to, text))
      yield* say(bob, "carol", "1. hello carol at home")
      yield* say(carolAtHome, "bob", "2. hello bob, from home A")
      yield* clock.phase("carol and bob chatted while she was in home A")

      /**
       * Carol stops, bob writes while she is between homes, and she starts from the same data directory
       * on `host` once his node has left that message with her mailbox: her node re-publishes her name
       * with a higher sequence and the route `routeIs` expects, gets the message from her mailbox (she
       * pulls it; holders push it to an owner they can dial), and takes new ones live.
       */
      const move = (
        from: HostNode,
        host: Host,
        previous: typeof WhoisAnswer.Type,
        step: number,
        routeIs: (record: typeof WhoisAnswer.Type, node: HostNode) => void
      ) =>
        Effect.gen(function*() {
          yield* from.stop
          const away = `${step}. written while you were moving to ${host.label}`
          sent.push(away)
          const stoppedAt = Date.now()
          const waiting = yield* sendAndWait(bob, "carol", away, "3s")
          expect(waiting.code).toBe(2)
          expect(waiting.status).toMatch(/^(stored-offline|queued)$/)
          // Bob's node first tries her relays (they dropped her reservation when her connection closed,
          // so they refuse at once), then leaves the message with her mailbox: the nodes closest to her
          // user key. Waiting for that keeps the test about the mailbox: a message sent after her start
          // would reach her directly through her new relays.
          yield* eventually(
            Effect.flatMap(historyOf(bob, "carol"), (history) =>
              history.some((entry) => entry.text === away && entry.status === "stored-offline")
                ? Effect.void
                : Effect.fail(`not stored offline yet: ${JSON.stringify(history.at(-1))}`)),
            "60 seconds",
            "200 millis"
          )
          yield* clock.phase(`bob's message to carol, away, held by her mailbox ${clock.since(stoppedAt)} after she stopped`)
          const startedAt = Date.now()
          const carol = yield* startPeerchat(host, carolData, bootstrap)
          yield* clock.phase(`carol started on ${host.label} (${carol.ready.listen})`)
          // Registering again from the new home is no conflict: the name is her key's, wherever she is.
          const again = Schema.decodeUnknownSync(WhoisAnswer)(
            yield* peerchatJson(host, ["register", "carol", "--data-dir", carolData])
          )
          expect(again.warning).toBeUndefined()
          expect(again.fingerprint).toBe(previous.fingerprint)
          const [record, pulledIn] = yield* Effect.all([
            eventually(
              Effect.gen(function*() {
                const found = yield* whoisFrom(bob, "carol")
                expect(found.nodeId).toBe(previous.nodeId)
                expect(found.fingerprint).toBe(previous.fingerprint)
                expect(found.sequence).toBeGreaterThan(previous.sequence)
                routeIs(found, carol)
                return { ...found, after: clock.since(startedAt) }
              }),
              "60 seconds",
              "200 millis"
            ),
            eventually(
              Effect.flatMap(historyOf(carol, "bob"), (history) =>
                history.some((entry) => entry.text === away) ? Effect.succeed(clock.since(startedAt)) : Effect.fail("not pulled yet")),
              "60 seconds",
              "200 millis"
            )
          ], { concurrency: "unbounded" })
          yield* clock.phase(
            `on ${host.label}: record with her new route ${record.after} after starting (${record.address}, sequence ${record.sequence}); ` +
              `the message written while she moved reached her (from her mailbox) ${pulledIn} after starting`
          )
          yield* say(bob, "carol", `${step + 1}. welcome to ${host.label}`)
          yield* say(carol, "bob", `${step + 2}. thanks, from ${host.label}`)
          yield* clock.phase(`bob and carol chatted both ways ${clock.since(startedAt)} after she started on ${host.label}`)
          // Her name is still hers alone: no conflict, no warning about a rival claim.
          expect(carol.messages.filter((message) => /someone else claims your name/.test(message))).toEqual([])
          return { carol, record }
        })

      // Home A (port-preserving NAT) → home B (symmetric NAT): again reached through relays.
      const inB = yield* move(carolAtHome, cafe, atHome, 3, (record) => {
        expect(record.addresses).toEqual([])
        expect(record.relays?.length).toBeGreaterThanOrEqual(1)
      })
      // Home B → a public host: now her record lists her own address, and bob reaches her directly.
      const inOffice = yield* move(inB.carol, office, inB.record, 6, (record, node) => {
        expect(record.addresses).toEqual([node.ready.listen])
        expect(record.relays ?? []).toEqual([])
      })

      // Her history went with her data directory: every message once, in the order written.
      const history = yield* historyOf(inOffice.carol, "bob")
      expect(history.map((entry) => entry.text)).toEqual(sent)
    }), { timeout: 240_000 })
})
