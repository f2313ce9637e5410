/**
 * The chat windows attached to a node (`ChatWindows`): the rule that says
 * when a node the chat started stops (pure), the count under the TestClock,
 * and the same over the control API's real loopback HTTP routes, where a
 * window that closes its connection without a goodbye (a crash) is
 * detached all the same.
 */
import { NodeContext, NodeHttpClient } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Exit, Layer, Scope, TestClock } from "effect"
import type { NodeId } from "../../src/core/Id.js"
import { ChatWindows, FIRST_WINDOW_WITHIN, NodeStopping, stopsNow } from "../../src/node/ChatWindows.js"
import { NodeControl } from "../../src/node/Control.js"
import * as ControlServer from "../../src/platform/ControlServer.js"
import { makeControlClient } from "../../src/platform/ControlClient.js"
import { createApiToken, writeRuntimeInfoScoped } from "../../src/platform/RuntimeFiles.js"
import { scopedTempDir } from "../support/tempDir.js"

/** Whether `effect` has completed already (it is not waited for). */
const isDone = (effect: Effect.Effect<void>) => Effect.raceFirst(Effect.as(effect, true), Effect.as(Effect.yieldNow(), false))

describe("when a node stops for its windows", () => {
  it("only a node a chat started, once no window is attached, after one was or none came in time", () => {
    const base = { stopsWithLastWindow: true, attached: 0, everAttached: true, firstWindowOverdue: false }
    expect(stopsNow(base)).toBe(true)
    expect(stopsNow({ ...base, attached: 1 })).toBe(false)
    expect(stopsNow({ ...base, stopsWithLastWindow: false })).toBe(false)
    expect(stopsNow({ ...base, everAttached: false })).toBe(false)
    expect(stopsNow({ ...base, everAttached: false, firstWindowOverdue: true })).toBe(true)
  })
})

describe("ChatWindows", () => {
  it.scoped("counts windows; the last one leaving stops a node the chat started", () =>
    Effect.gen(function*() {
      const windows = Context.get(yield* Layer.build(ChatWindows.layer({ stopsWithLastWindow: true })), ChatWindows)
      const first = yield* Scope.make()
      const second = yield* Scope.make()
      expect(yield* Scope.extend(windows.attach, first)).toEqual({ window: 1, windows: 1 })
      expect(yield* Scope.extend(windows.attach, second)).toEqual({ window: 2, windows: 2 })
      expect(yield* windows.detach(1)).toEqual({ windows: 1, stopping: false })
      // Closing the first window's scope after its goodbye changes nothing.
      yield* Scope.close(first, Exit.void)
      expect(yield* isDone(windows.lastWindowGone)).toBe(false)
      // The second goes without a goodbye (a crash): the node stops all the same.
      yield* Scope.close(second, Exit.void)
      expect(yield* isDone(windows.lastWindowGone)).toBe(true)
      expect(yield* windows.detach(2)).toEqual({ windows: 0, stopping: true })
    }))

  it.scoped("a window that comes just after the last one left is refused: the node is on its way out", () =>
    Effect.gen(function*() {
      const windows = Context.get(yield* Layer.build(ChatWindows.layer({ stopsWithLastWindow: true })), ChatWindows)
      const only = yield* Effect.scoped(windows.attach)
      expect(yield* windows.detach(only.window)).toEqual({ windows: 0, stopping: true })
      expect(yield* windows.stopping).toBe(true)
      // Before, it was counted as attached (1 window) while the node went on stopping under it.
      const late = yield* Effect.flip(Effect.scoped(windows.attach))
      expect(late).toBeInstanceOf(NodeStopping)
      expect(late.message).toBe("the node is stopping: its last chat window has gone")
      expect(yield* isDone(windows.lastWindowGone)).toBe(true)
    }))

  it.scoped("a node the chat started stops when no window comes within the first wait", () =>
    Effect.gen(function*() {
      const windows = Context.get(yield* Layer.build(ChatWindows.layer({ stopsWithLastWindow: true })), ChatWindows)
      yield* TestClock.adjust(FIRST_WINDOW_WITHIN)
      expect(yield* isDone(windows.lastWindowGone)).toBe(true)
    }))

  it.scoped("a node the user started counts windows but never stops for them", () =>
    Effect.gen(function*() {
      const windows = Context.get(yield* Layer.build(ChatWindows.layer({ stopsWithLastWindow: false })), ChatWindows)
      yield* TestClock.adjust(FIRST_WINDOW_WITHIN)
      const attachment = yield* Effect.scoped(windows.attach)
      expect(attachment.windows).toBe(1)
      expect(yield* windows.detach(attachment.window)).toEqual({ windows: 0, stopping: false })
      expect(yield* isDone(windows.lastWindowGone)).toBe(false)
    }))
})

/**
 * A control API on loopback with a window count (`stopsWithLastWindow`) or
 * none (null) behind the window routes; the node control is not asked.
 */
const startApi = (stopsWithLastWindow: boolean | null) =>
  Effect.gen(function*() {
    const dataDir = yield* scopedTempDir("windows")
    const token = yield* createApiToken(dataDir)
    const unused = Effect.die(new Error("the window routes do not ask the node"))
    const control = Layer.succeed(NodeControl, { status: unused, peers: unused, register: () => unused, whois: () => unused })
    const windows = stopsWithLastWindow === null
      ? null
      : Context.get(yield* Layer.build(ChatWindows.layer({ stopsWithLastWindow })), ChatWindows)
    const context = yield* Layer.build(
      ControlServer.layer({ host: "127.0.0.1", port: 0, token }).pipe(
        Layer.provide(windows === null ? control : Layer.merge(control, Layer.succeed(ChatWindows, windows)))
      )
    )
    yield* writeRuntimeInfoScoped(dataDir, {
      nodeId: "22".repeat(32) as NodeId,
      listen: { host: "127.0.0.1", port: 4000 },
      api: Context.get(context, ControlServer.ControlServer).address
    })
    return { dataDir, windows }
  })

describe("the window routes", () => {
  it.scopedLive("attach and detach over HTTP; a dropped connection detaches; a node without windows says so", () =>
    Effect.gen(function*() {
      const { dataDir, windows } = yield* startApi(true)
      if (windows === null) return expect.unreachable()
      const client = yield* makeControlClient(dataDir)
      const first = yield* Scope.make()
      const second = yield* Scope.make()
      const one = yield* Scope.extend(client.attachWindow, first)
      expect(one.attached).toEqual({ _tag: "Attached", window: 1, windows: 1, stopsWithLastWindow: true })
      const two = yield* Scope.extend(client.attachWindow, second)
      expect(two.attached).toMatchObject({ window: 2, windows: 2 })

      expect(yield* client.detachWindow(1)).toEqual({ windows: 1, stopping: false })
      yield* Scope.close(first, Exit.void)
      // The second window's connection closes without a goodbye: the node learns it from the socket.
      yield* Scope.close(second, Exit.void)
      yield* windows.lastWindowGone.pipe(Effect.timeout("5 seconds"))
      expect(yield* client.detachWindow(2)).toEqual({ windows: 0, stopping: true })
      // A window that comes now is told the node is stopping, not attached to it.
      const late = yield* Effect.flip(Effect.scoped(client.attachWindow))
      expect(late).toMatchObject({ _tag: "ControlRequestFailed", reason: "Stopping" })
      expect(late.message).toMatch(/takes no new window: the node is stopping: its last chat window has gone$/)

      const older = yield* startApi(null)
      const refused = yield* Effect.flip(Effect.scoped((yield* makeControlClient(older.dataDir)).attachWindow))
      expect(refused).toMatchObject({ _tag: "ControlRequestFailed", reason: "Rejected" })
      expect(refused.message).toMatch(/does not keep track of chat windows/)
    }).pipe(Effect.provide(Layer.merge(NodeContext.layer, NodeHttpClient.layer))))

  it.scopedLive("the attachment ends when the node stops", () =>
    Effect.gen(function*() {
      const apiScope = yield* Scope.make()
      const { dataDir } = yield* Scope.extend(startApi(false), apiScope)
      const attachment = yield* (yield* makeControlClient(dataDir)).attachWindow
      expect(attachment.attached.stopsWithLastWindow).toBe(false)
      yield* Scope.close(apiScope, Exit.void)
      yield* attachment.ended.pipe(Effect.timeout("5 seconds"))
    }).pipe(Effect.provide(Layer.merge(NodeContext.layer, NodeHttpClient.layer))))
})
