/**
 * Crash safety of chat with real processes: three nodes on loopback (a relay,
 * alice and bob); alice sends a burst of messages to bob through her control
 * API, bob is killed with SIGKILL in the middle of it and started again on
 * the same data directory (a new port). Every message must end up delivered,
 * and bob's history must hold each of them exactly once.
 */
import { NodeContext, NodeHttpClient } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Layer } from "effect"
import { join } from "node:path"
import type { MessageId } from "../../src/chat/ChatStore.js"
import { makeControlClient } from "../../src/platform/ControlClient.js"
import { runCli, runJson, startNodeProcess } from "../support/cliProcess.js"
import { scopedTempDir } from "../support/tempDir.js"

const BURST = 60
const KILL_AFTER = 20

describe("chat survives kill -9", () => {
  it.scopedLive("a recipient killed mid-burst and restarted holds every delivered message exactly once", () =>
    Effect.gen(function*() {
      const root = yield* scopedTempDir("chat-crash")
      const relayDir = join(root, "relay")
      const aliceDir = join(root, "alice")
      const bobDir = join(root, "bob")
      const relay = yield* startNodeProcess(relayDir, [])
      yield* startNodeProcess(aliceDir, ["--bootstrap", relay.ready.listen])
      const bob = yield* startNodeProcess(bobDir, ["--bootstrap", relay.ready.listen])
      yield* runJson(["register", "alice", "--data-dir", aliceDir])
      yield* runJson(["register", "bob", "--data-dir", bobDir])

      const alice = yield* makeControlClient(aliceDir)
      const sent: Array<MessageId> = []
      for (let i = 0; i < BURST; i++) {
        if (i === KILL_AFTER) bob.child.kill("SIGKILL")
        sent.push((yield* alice.send("bob", `message ${i}`)).id)
      }
      // Bob comes back on the same data directory (on another port).
      const restarted = yield* startNodeProcess(bobDir, ["--bootstrap", relay.ready.listen])
      expect(restarted.ready.nodeId).toBe(bob.ready.nodeId)

      for (const id of sent) {
        const delivery = yield* alice.awaitDelivery(id, Duration.seconds(60))
        expect(delivery.status, `message ${sent.indexOf(id)}`).toBe("delivered")
      }
      const history = (yield* runJson(["history", "alice", "--limit", "1000", "--data-dir", bobDir])) as ReadonlyArray<{
        readonly id: string
        readonly text: string
        readonly status: string
      }>
      const ids = history.map((entry) => entry.id)
      expect(new Set(ids).size).toBe(ids.length)
      expect([...ids].sort()).toEqual([...sent].sort())
      expect(history.every((entry) => entry.status === "received")).toBe(true)
      expect(history.map((entry) => entry.text)).toEqual(sent.map((_, i) => `message ${i}`))
      expect(Object.keys(history[0] ?? {}).sort()).toEqual(["direction", "from", "id", "sentAt", "status", "text", "to"])

      // The commands a user types: a reply that waits for its receipt, and the inbox with unread counts.
      const reply = yield* runCli(["send", "alice", "got them all", "--wait", "--data-dir", bobDir])
      expect(reply.stderr).toBe("")
      expect(reply.code).toBe(0)
      expect(reply.stdout).toMatch(/^[0-9a-f]{64}\ndelivered to alice\n$/)
      const inbox = yield* runJson(["inbox", "--data-dir", aliceDir])
      expect(inbox).toEqual([{ conversation: "bob", unread: 1, lastAt: expect.any(Number) }])
    }).pipe(Effect.provide(Layer.merge(NodeContext.layer, NodeHttpClient.layerUndici))), { timeout: 240_000 })
})
