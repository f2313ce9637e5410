/**
 * The chat driver over an in-memory `ChatIO`, in virtual time: it connects
 * and loads the inbox, turns the node's events into state, reconnects a
 * broken event stream with backoff, sends typed messages one at a time in
 * order, reports failures (defects included) as one line, starts a node
 * when asked to, and completes `done` on quit.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, Queue, Ref, Stream, TestClock } from "effect"
import type { ChatEvent, SentMessageInfo } from "../../src/chat/Messenger.js"
import { type ChatHost, makeChatDriver, type ChatStore } from "../../src/cli/chat/ChatDriver.js"
import { messageIdOf } from "../support/messageIds.js"
import { ChatFailure, type ChatIO } from "../../src/cli/chat/ChatIO.js"
import { type ChatState, initialState } from "../../src/cli/chat/ChatState.js"
import { entry, key, STATUS, typed, user } from "./chatFixtures.js"

const ALICE_KEY = "1a2b-3c4d-5e6f-7a8b-9c0d-1e2f-3a4b-5c6d"

/** An in-memory node: `sends` records every send as it starts; `streams` hands out one event queue per subscription. */
const makeIo = Effect.gen(function*() {
  const streams = yield* Queue.unbounded<Queue.Queue<ChatEvent | "break">>()
  const sends = yield* Ref.make<ReadonlyArray<string>>([])
  const inFlight = yield* Ref.make(0)
  const maxInFlight = yield* Ref.make(0)
  const io: ChatIO = {
    status: Effect.succeed(STATUS),
    peers: Effect.succeed([]),
    whois: (name) =>
      name === "boom"
        ? Effect.die(new Error("kaboom\n    at somewhere (file.ts:1:1)"))
        : Effect.fail(new ChatFailure({ kind: "UserNotFound", message: `no user named "${name}" was found in the network` })),
    register: () => Effect.die(new Error("not used")),
    send: (to, text) =>
      Effect.gen(function*() {
        yield* Ref.update(sends, (all) => [...all, text])
        const now = yield* Ref.updateAndGet(inFlight, (n) => n + 1)
        yield* Ref.update(maxInFlight, (max) => Math.max(max, now))
        // Each send takes a while, so overlapping sends would show.
        yield* Effect.sleep("10 millis")
        yield* Ref.update(inFlight, (n) => n - 1)
        const sequence = (yield* Ref.get(sends)).indexOf(text) + 1
        const info: SentMessageInfo = { id: messageIdOf(`id-${text}`), from: user("alice"), to: user(to), sequence, sentAt: 0, status: "queued" }
        return info
      }),
    history: () => Effect.succeed([]),
    inbox: Effect.succeed([{ conversation: user("bob"), unread: 2, lastAt: 1 }]),
    markRead: () => Effect.succeed(0),
    id: Effect.succeed({ username: user("alice"), fingerprint: ALICE_KEY, nameRef: `alice@${ALICE_KEY}` }),
    verify: () => Effect.die(new Error("not used")),
    events: Effect.gen(function*() {
      const queue = yield* Queue.unbounded<ChatEvent | "break">()
      yield* Queue.offer(streams, queue)
      return Stream.fromQueue(queue).pipe(
        Stream.mapEffect((item) =>
          item === "break" ? Effect.fail(new ChatFailure({ kind: "Other", message: "connection reset" })) : Effect.succeed(item)
        )
      )
    })
  }
  return { io, streams, sends, maxInFlight }
})

/** A host that announces nothing and keeps no preferences (the tests that need them make their own). */
const silent: Pick<ChatHost, "alert" | "savePreferences"> = {
  alert: () => Effect.void,
  savePreferences: () => Effect.die(new Error("no preferences to save"))
}

const noHost: ChatHost = {
  ...silent,
  startNode: () => Effect.die(new Error("no node to start")),
  saveNetwork: () => Effect.die(new Error("no network to save"))
}

/** Lets the driver's fibers run until `check` holds (bounded: no real time passes). */
const until = (store: ChatStore, check: (state: ChatState) => boolean) =>
  Effect.gen(function*() {
    for (let i = 0; i < 1000 && !check(store.getState()); i++) yield* Effect.yieldNow()
    const state = store.getState()
    expect(check(state), JSON.stringify({ phase: state.phase, open: state.open, notice: state.notice })).toBe(true)
  })

const starting = initialState({ size: { columns: 100, rows: 30 }, phase: { _tag: "Starting", message: "" } })

describe("the chat driver", () => {
  it.scoped("connects, follows events, and reconnects a broken stream with backoff", () =>
    Effect.gen(function*() {
      const node = yield* makeIo
      const store = yield* makeChatDriver({ initial: starting, io: node.io, host: noHost })
      yield* until(store, (state) => state.phase._tag === "Chat" && state.conversations.length === 1 && state.node.live)
      const first = yield* Queue.take(node.streams)

      yield* Queue.offer(first, { _tag: "Received", entry: entry("carol", 1, "hey") })
      yield* until(store, (state) => state.conversations[0]?.conversation === "carol")
      expect(store.getState().conversations[0]).toMatchObject({ unread: 1 })

      yield* Queue.offer(first, "break")
      yield* until(store, (state) => !state.node.live)
      // Reconnects after 1 s, not before.
      yield* TestClock.adjust("900 millis")
      expect(yield* Queue.size(node.streams)).toBe(0)
      yield* TestClock.adjust("100 millis")
      const second = yield* Queue.take(node.streams)
      yield* until(store, (state) => state.node.live)
      yield* Queue.offer(second, { _tag: "Received", entry: entry("dave", 1, "yo") })
      yield* until(store, (state) => state.conversations[0]?.conversation === "dave")
    }))

  it.scoped("announces a message that arrives once /bell is on, and remembers the choice", () =>
    Effect.gen(function*() {
      const node = yield* makeIo
      const alerts = yield* Ref.make<ReadonlyArray<string>>([])
      const saved = yield* Ref.make<ReadonlyArray<string>>([])
      const host: ChatHost = {
        ...noHost,
        alert: (alert) => Ref.update(alerts, (all) => [...all, `${alert.from} bell=${alert.bell} desktop=${alert.desktop}`]),
        savePreferences: (preferences) => Ref.update(saved, (all) => [...all, JSON.stringify(preferences)])
      }
      const store = yield* makeChatDriver({ initial: starting, io: node.io, host })
      yield* until(store, (state) => state.phase._tag === "Chat" && state.node.live)
      const events = yield* Queue.take(node.streams)
      yield* Queue.offer(events, { _tag: "Received", entry: entry("carol", 1, "before the bell") })
      yield* until(store, (state) => state.conversations[0]?.conversation === "carol")
      expect(yield* Ref.get(alerts)).toEqual([])

      for (const msg of typed("/bell on")) store.dispatch(msg)
      yield* until(store, (state) => state.alerts.bell)
      yield* Queue.offer(events, { _tag: "Received", entry: entry("dave", 1, "ring") })
      yield* until(store, (state) => state.conversations[0]?.conversation === "dave")
      for (let i = 0; i < 20; i++) yield* Effect.yieldNow()
      expect(yield* Ref.get(alerts)).toEqual(["dave bell=true desktop=false"])
      expect(yield* Ref.get(saved)).toEqual([JSON.stringify({ bell: true, desktop: false })])
    }))

  it.scoped("sends typed lines one at a time, in order", () =>
    Effect.gen(function*() {
      const node = yield* makeIo
      const store = yield* makeChatDriver({ initial: starting, io: node.io, host: noHost })
      yield* until(store, (state) => state.phase._tag === "Chat" && state.conversations.length === 1)
      for (const msg of typed("/chat bob")) store.dispatch(msg)
      for (const line of ["one", "two", "three", "four"]) for (const msg of typed(line)) store.dispatch(msg)
      yield* until(store, (state) => state.open?.pending.length === 4)
      // Each send takes 10 ms of virtual time; four in a row need at least four steps of it.
      for (let i = 0; i < 20 && (store.getState().open?.pending.length ?? 0) > 0; i++) {
        for (let j = 0; j < 20; j++) yield* Effect.yieldNow()
        yield* TestClock.adjust("10 millis")
      }
      yield* until(store, (state) => state.open?.pending.length === 0)
      expect(yield* Ref.get(node.sends)).toEqual(["one", "two", "three", "four"])
      expect(yield* Ref.get(node.maxInFlight)).toBe(1)
      expect(store.getState().open?.messages.map((message) => message.text)).toEqual(["one", "two", "three", "four"])
    }))

  it.scoped("failures and defects become one line on screen; quitting completes done", () =>
    Effect.gen(function*() {
      const node = yield* makeIo
      const store = yield* makeChatDriver({ initial: starting, io: node.io, host: noHost })
      yield* until(store, (state) => state.phase._tag === "Chat")
      for (const msg of typed("/chat nobody")) store.dispatch(msg)
      yield* until(store, (state) => state.notice?.text === 'no user named "nobody" was found in the network')
      for (const msg of typed("/whois boom")) store.dispatch(msg)
      yield* until(store, (state) => state.notice?.tone === "error" && state.notice.text.startsWith("unexpected error"))
      expect(store.getState().notice?.text).not.toContain("\n")
      expect(store.getState().notice?.text).not.toContain("at somewhere")

      const done = yield* Effect.fork(store.done)
      store.dispatch(key({ _tag: "Ctrl", letter: "c" }))
      yield* Fiber.join(done)
    }))

  it.scoped("passes a failure's kind and details to the screen, and sends to the key a conversation was opened for", () =>
    Effect.gen(function*() {
      const node = yield* makeIo
      const recipients = yield* Ref.make<ReadonlyArray<string>>([])
      const conflict = new ChatFailure({
        kind: "NameConflict",
        message: "claimed by two keys",
        detail: { _tag: "NameConflict", username: "twins", choices: [
          { ref: `twins@${ALICE_KEY}`, address: "192.0.2.1:4242", holders: 3 },
          { ref: "twins@0000-1111-2222-3333-4444-5555-6666-7777", address: "192.0.2.9:4242", holders: 2 }
        ] }
      })
      const io: ChatIO = {
        ...node.io,
        whois: (name) =>
          name === "twins"
            ? Effect.fail(conflict)
            : Effect.succeed({
              username: user(name.split("@")[0] ?? name),
              fingerprint: ALICE_KEY,
              nodeId: "22".repeat(32) as typeof STATUS.nodeId,
              address: "192.0.2.2:4242",
              addresses: ["192.0.2.2:4242"],
              sequence: 1,
              expiresAt: 0
            }),
        send: (to, text) => Effect.zipRight(Ref.update(recipients, (all) => [...all, to]), node.io.send(to.split("@")[0] ?? to, text))
      }
      const store = yield* makeChatDriver({ initial: starting, io, host: noHost })
      yield* until(store, (state) => state.phase._tag === "Chat")
      for (const msg of typed("/chat twins")) store.dispatch(msg)
      yield* until(store, (state) => state.panel?.title === '"twins" is claimed by 2 keys')
      expect(store.getState().notice?.text).toContain(`twins@${ALICE_KEY}`)

      for (const msg of typed(`/chat carol@${ALICE_KEY}`)) store.dispatch(msg)
      yield* until(store, (state) => state.open?.ref === `carol@${ALICE_KEY}`)
      for (const msg of typed("just you")) store.dispatch(msg)
      yield* TestClock.adjust("10 millis")
      yield* until(store, (state) => state.open?.pending.length === 0)
      expect(yield* Ref.get(recipients)).toEqual([`carol@${ALICE_KEY}`])

      for (const msg of typed("/id")) store.dispatch(msg)
      yield* until(store, (state) => state.panel?.title === "You")
    }))

  it.scoped("a name several keys claim is not free to register", () =>
    Effect.gen(function*() {
      const node = yield* makeIo
      const unregistered = { ...STATUS, username: null }
      const io: ChatIO = {
        ...node.io,
        status: Effect.succeed(unregistered),
        whois: () => Effect.fail(new ChatFailure({ kind: "NameConflict", message: "claimed by two keys" }))
      }
      const store = yield* makeChatDriver({ initial: starting, io, host: noHost })
      yield* until(store, (state) => state.phase._tag === "ChooseName")
      for (const msg of typed("twins")) store.dispatch(msg)
      yield* until(store, (state) => state.notice?.text === '"twins" is already taken by someone else: choose another name')
    }))

  it.scoped("starts a node when asked, or says why it could not", () =>
    Effect.gen(function*() {
      const node = yield* makeIo
      const started = yield* Ref.make<ReadonlyArray<string>>([])
      const saved = yield* Ref.make<ReadonlyArray<string>>([])
      const host: ChatHost = {
        ...silent,
        startNode: (bootstrap) =>
          Effect.as(Ref.update(started, (all) => [...all, bootstrap.map((a) => `${a.host}:${a.port}`).join(",")]), node.io),
        saveNetwork: (bootstrap) => Ref.update(saved, (all) => [...all, bootstrap.map((a) => `${a.host}:${a.port}`).join(",")])
      }
      const setup = initialState({ size: { columns: 100, rows: 30 }, phase: { _tag: "ChooseNetwork" } })
      const store = yield* makeChatDriver({ initial: setup, io: null, host })
      for (const msg of typed("192.0.2.1:4242")) store.dispatch(msg)
      yield* until(store, (state) => state.phase._tag === "Chat")
      expect(yield* Ref.get(started)).toEqual(["192.0.2.1:4242"])
      // The node answered with peers: the address worked, so it is remembered.
      expect(yield* Ref.get(saved)).toEqual(["192.0.2.1:4242"])

      const failing: ChatHost = {
        ...silent,
        startNode: () => Effect.fail(new ChatFailure({ kind: "Other", message: "cannot listen on 0.0.0.0:4242: in use" })),
        saveNetwork: () => Effect.die(new Error("nothing started, nothing to save"))
      }
      const other = yield* makeChatDriver({ initial: setup, io: null, host: failing })
      for (const msg of typed("new")) other.dispatch(msg)
      yield* until(other, (state) => state.phase._tag === "Fatal")
      expect(other.getState().phase).toEqual({ _tag: "Fatal", message: "cannot listen on 0.0.0.0:4242: in use" })
    }))

  it.scoped("restarts the node with another address after the join timed out, follows the new node, and saves only what worked", () =>
    Effect.gen(function*() {
      const unreachable = yield* makeIo
      const reachable = yield* makeIo
      const unregistered = { ...STATUS, username: null }
      const stuck: ChatIO = {
        ...unreachable.io,
        status: Effect.succeed({
          ...unregistered,
          peers: 0,
          livePeers: 0,
          bootstrap: { _tag: "Joining", attempts: 3, lastError: "connection refused", nextAttemptAt: null, addresses: ["192.0.2.1:4242"] }
        })
      }
      const joined: ChatIO = { ...reachable.io, status: Effect.succeed(unregistered) }
      const started = yield* Ref.make<ReadonlyArray<string>>([])
      const saved = yield* Ref.make<ReadonlyArray<string>>([])
      const text = (bootstrap: ReadonlyArray<{ readonly host: string; readonly port: number }>) =>
        bootstrap.map((a) => `${a.host}:${a.port}`).join(",")
      const host: ChatHost = {
        ...silent,
        startNode: (bootstrap) =>
          Effect.as(Ref.update(started, (all) => [...all, text(bootstrap)]), text(bootstrap) === "192.0.2.1:4242" ? stuck : joined),
        saveNetwork: (bootstrap) =>
          text(bootstrap) === "192.0.2.2:4242"
            ? Effect.fail(new ChatFailure({ kind: "Other", message: "cannot save network.json: disk full" }))
            : Ref.update(saved, (all) => [...all, text(bootstrap)])
      }
      const setup = initialState({ size: { columns: 100, rows: 30 }, phase: { _tag: "ChooseNetwork" } })
      const store = yield* makeChatDriver({ initial: setup, io: null, host })
      for (const msg of typed("192.0.2.1:4242")) store.dispatch(msg)
      yield* until(store, (state) => state.phase._tag === "ChooseName" && state.node.live)
      expect(yield* Queue.size(unreachable.streams)).toBe(1)

      // Twenty seconds of the driver's clock without the network: the choice.
      for (let i = 0; i < 20 && store.getState().phase._tag !== "JoinTimedOut"; i++) {
        yield* TestClock.adjust("1 second")
        for (let j = 0; j < 20; j++) yield* Effect.yieldNow()
      }
      yield* until(store, (state) => state.phase._tag === "JoinTimedOut")
      expect(yield* Ref.get(saved)).toEqual([])

      // Another address: a new node, and the event stream follows it.
      for (const msg of typed("192.0.2.3:4242")) store.dispatch(msg)
      yield* until(store, (state) => state.phase._tag === "ChooseName" && state.node.status?.peers === 2)
      expect(yield* Ref.get(started)).toEqual(["192.0.2.1:4242", "192.0.2.3:4242"])
      yield* until(store, () => store.getState().unsavedNetwork === false)
      expect(yield* Ref.get(saved)).toEqual(["192.0.2.3:4242"])
      const first = yield* Queue.take(unreachable.streams)
      yield* Queue.offer(first, "break")
      yield* TestClock.adjust("1 second")
      const second = yield* Queue.take(reachable.streams)
      yield* until(store, (state) => state.node.live)
      yield* Queue.offer(second, { _tag: "Received", entry: entry("carol", 1, "from the new node") })
      yield* until(store, (state) => state.reach.some((reach) => reach.name === "carol"))

      // A settings file that cannot be written is one line on screen.
      const other = yield* makeChatDriver({ initial: setup, io: null, host })
      for (const msg of typed("192.0.2.2:4242")) other.dispatch(msg)
      yield* until(other, (state) => state.notice?.text === "cannot save network.json: disk full")
    }))
})
