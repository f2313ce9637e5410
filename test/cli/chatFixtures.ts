/**
 * Shared values for the terminal chat's unit tests: a node status, history
 * entries, and a way to feed a sequence of messages to the reducer while
 * collecting every command it asks for.
 */
import type { HistoryEntry, MessageStatus } from "../../src/chat/ChatStore.js"
import type { NodeId } from "../../src/core/Id.js"
import type { Username } from "../../src/core/Username.js"
import type { NodeStatus } from "../../src/node/Control.js"
import { type ChatState, type Cmd, initialState, type KeyPress, type Msg, update } from "../../src/cli/chat/ChatState.js"
import { messageIdOf } from "../support/messageIds.js"

/** A username (the tests only use valid ones). */
export const user = (name: string): Username => name as Username

/** The status of a joined node registered as alice. */
export const STATUS: NodeStatus = {
  nodeId: "11".repeat(32) as NodeId,
  listen: "127.0.0.1:4242",
  username: user("alice"),
  peers: 2,
  bootstrap: { _tag: "Joined", joinedAt: 1_700_000_000_000 },
  connections: { inbound: 1, pending: 0, outbound: 2, refusedConnections: {}, rateLimited: {} },
  reachability: "Public"
}

/** 14:30 local time on 2025-03-01, plus `minutes`. */
export const at = (minutes: number): number => new Date(2025, 2, 1, 14, 30 + minutes, 0).getTime()

/** A history entry of the conversation with `peer`: `in` from them, `out` from alice. */
export const entry = (
  peer: string,
  sequence: number,
  text: string,
  options?: { readonly direction?: "in" | "out"; readonly status?: MessageStatus; readonly sentAt?: number }
): HistoryEntry => {
  const direction = options?.direction ?? "in"
  return {
    id: messageIdOf(`${peer}-${direction}-${sequence}`),
    conversation: user(peer),
    direction,
    from: direction === "in" ? user(peer) : user("alice"),
    to: direction === "in" ? user("alice") : user(peer),
    sequence,
    sentAt: options?.sentAt ?? at(sequence),
    text,
    status: options?.status ?? (direction === "in" ? "received" : "queued"),
    read: direction === "out",
    ...(direction === "in" ? { receivedAt: options?.sentAt ?? at(sequence) } : {})
  }
}

/** The state of a chat that is up, connected to a node with `STATUS`, on a 100×30 terminal. */
export const chatting = (): ChatState =>
  ({ ...initialState({ size: { columns: 100, rows: 30 }, phase: { _tag: "Chat" } }), node: { status: STATUS, error: null, live: true } })

/** The outcome of feeding `msgs` in order: the final state and every command asked for. */
export const feed = (state: ChatState, ...msgs: ReadonlyArray<Msg>): { readonly state: ChatState; readonly cmds: ReadonlyArray<Cmd> } => {
  let current = state
  const cmds: Array<Cmd> = []
  for (const msg of msgs) {
    const [next, asked] = update(current, msg)
    current = next
    cmds.push(...asked)
  }
  return { state: current, cmds }
}

/** The key messages for typing `text` (then Enter, unless `enter` is false). */
export const typed = (text: string, enter = true): ReadonlyArray<Msg> => [
  ...(text === "" ? [] : [{ _tag: "Key", key: { _tag: "Text", text } } as const]),
  ...(enter ? [{ _tag: "Key", key: { _tag: "Enter" } } as const] : [])
]

/** The message for one key press. */
export const key = (press: KeyPress): Msg => ({ _tag: "Key", key: press })
