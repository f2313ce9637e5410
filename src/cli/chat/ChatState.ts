/**
 * The terminal chat's logic as a pure state machine: `update(state, msg)`
 * returns the next state and the commands to run (load a page of history,
 * send a message, look a user up, start the node, quit). Messages are key
 * presses, terminal resizes, and the outcomes of commands and of the node's
 * event stream; nothing here touches a terminal, a clock or the network, so
 * every behaviour (the first-run setup, typing and sending, unread counts,
 * paging back through history, Tab completion, the slash commands and their
 * errors, and the explanations of a name several keys claim, a contact whose
 * key changed and a node without peers) is tested by feeding messages in;
 * time comes in with the messages (`Connected`, `Refresh`, `Event`), so the
 * timeout of the first-run join and "reached 2 min ago" are tested the same
 * way. A conversation is kept by name; one opened as `name@fingerprint` sends
 * to exactly that key. `ChatDriver.ts` runs the commands, `ChatView.ts` draws
 * the state.
 *
 * The first run: the user chooses a network (a friend's address, or a new
 * one), the chat starts its node with it and asks for a name. Until the node
 * reaches the network the setup screen says what it tries (the address, the
 * attempts, the last error); after `joinTimeoutMs` without an answer it
 * offers a choice: try again, change the address, or start a new network
 * (each restarts the chat's node). The chosen address is saved in
 * `network.json` only once the node has reached the network through it, so
 * a mistyped address is never what the next start tries again.
 *
 * Bounds: the input holds at most 65,536 characters (four messages: a longer
 * line is sent as several, see `splitMessageText`, and a longer paste is cut
 * with a notice that says so); an open conversation keeps at most 10,000
 * messages in memory (paging back stops there); the names offered by Tab
 * completion, and the contacts whose last reach is remembered, are at most 200.
 */
import { Either } from "effect"
import type { IdentityAnswer, VerifyAnswer } from "../../chat/ChatControl.js"
import type { ConversationSummary, HistoryCursor, HistoryEntry, MessageStatus } from "../../chat/ChatStore.js"
import type { ChatEvent, SentMessageInfo } from "../../chat/Messenger.js"
import { type Address, formatAddress, parseAddress } from "../../core/Contact.js"
import { MAX_MESSAGE_TEXT_BYTES } from "../../core/Message.js"
import { isBlankText, splitMessageText } from "../../core/MessageInput.js"
import { formatNameRef, parseNameRef } from "../../core/Pinning.js"
import { parseUsername, type Username } from "../../core/Username.js"
import type { NodeStatus, PeerEntry, WhoisAnswer } from "../../node/Control.js"
import type { FailureDetail, FailureKind } from "./ChatIO.js"
import { conversationLines, entryHeight, layoutOf, messageRows, networkHealth, panelWindow } from "./ChatView.js"
import { type ContactReach, DEFAULT_JOIN_TIMEOUT_MS, livePeersOf, networkReady } from "./Presence.js"
import { clusterPrefix, nextClusterEnd, previousClusterStart } from "./Text.js"
import { nameRefOf, verificationPanelLines } from "./TrustText.js"

/** Messages asked for per history page. */
export const HISTORY_PAGE = 100

/** Most messages of one conversation kept in memory. */
export const MAX_LOADED_MESSAGES = 10_000

/** Most messages one input line is split into (see `splitMessageText`). */
export const MAX_PIECES = 4

/**
 * Longest input line, in UTF-16 units: room for `MAX_PIECES` messages of
 * ASCII (a message is at most 16 KiB of UTF-8). Longer pastes are cut, and
 * the chat says so.
 */
export const MAX_INPUT = MAX_PIECES * MAX_MESSAGE_TEXT_BYTES

/** Most names remembered for Tab completion beside the conversation list. */
export const MAX_KNOWN_NAMES = 200

/** The terminal's size in character cells. */
export interface Size {
  readonly columns: number
  readonly rows: number
}

/** A one-line message under the conversation: an error, a warning (a changed key), a success or a hint. */
export interface Notice {
  readonly text: string
  readonly tone: "info" | "error" | "warning" | "success"
}

/**
 * Output of a command (`/help`, `/peers`, `/whois`, `/status`, `/id`,
 * `/verify`) or the explanation of a failure that needs more than a line (a
 * name conflict, a changed key), shown above the input until Esc.
 */
export interface Panel {
  readonly title: string
  readonly lines: ReadonlyArray<string>
  /** The first (wrapped) line shown, when the panel is longer than its rows (absent: 0). */
  readonly scroll?: number | undefined
}

/** A message typed and handed to the node, before the node confirmed it is in the outbox. */
export interface PendingMessage {
  readonly localId: number
  readonly text: string
}

/** The conversation on screen. */
export interface OpenConversation {
  readonly name: Username
  /** What messages are sent to: the name, or `name@fingerprint` when the conversation was opened for exactly one key. */
  readonly ref: string
  /** Loaded history, oldest first, each id once. */
  readonly messages: ReadonlyArray<HistoryEntry>
  readonly pending: ReadonlyArray<PendingMessage>
  /** The latest page has arrived. */
  readonly loaded: boolean
  /** Older messages may exist on the node (the last page asked for was full). */
  readonly hasOlder: boolean
  readonly loadingOlder: boolean
  /** Rows scrolled up from the newest message (0: following new messages). */
  readonly scroll: number
}

/** Where the chat is: starting, one of the first-run steps, chatting, or stopped by an error. */
export type Phase =
  | { readonly _tag: "Starting"; readonly message: string }
  | { readonly _tag: "ChooseNetwork" }
  | {
    readonly _tag: "ChooseName"
    /** The name being checked and registered, if any. */
    readonly checking: Username | null
    /** The check waits until the node reaches the network. */
    readonly waitingForNetwork: boolean
  }
  /** The node did not reach the network in `joinTimeoutMs`: retry, change the address, or start a new network. */
  | { readonly _tag: "JoinTimedOut" }
  | { readonly _tag: "Chat" }
  | { readonly _tag: "Fatal"; readonly message: string }

/** What the chat knows about its node. */
export interface NodeView {
  readonly status: NodeStatus | null
  /** Why the last status request failed; null once one succeeds. */
  readonly error: string | null
  /** The event stream is connected. */
  readonly live: boolean
}

/** The whole state of the terminal chat. */
export interface ChatState {
  readonly size: Size
  readonly phase: Phase
  readonly node: NodeView
  readonly conversations: ReadonlyArray<ConversationSummary>
  readonly open: OpenConversation | null
  readonly input: { readonly text: string; readonly cursor: number }
  readonly notice: Notice | null
  readonly panel: Panel | null
  /** Names met outside the conversation list (`/whois`, `/chat`), for Tab completion. */
  readonly known: ReadonlyArray<Username>
  readonly nextLocalId: number
  /** The conversation to open once chatting (`peerchat chat NAME`). */
  readonly openOnStart: string | null
  readonly quitting: boolean
  /** The driver's clock (ms) when the last timed message came; null before the first. */
  readonly clock: number | null
  /**
   * The bootstrap addresses the chat started its node with (empty: a new
   * network); null when it has not started one (the node runs in another
   * process, and the chat cannot restart it with other addresses).
   */
  readonly bootstrap: ReadonlyArray<Address> | null
  /** `bootstrap` still has to be saved in network.json: it is, once the node has reached the network. */
  readonly unsavedNetwork: boolean
  /** Since when (the driver's clock) the node has tried to reach the network without success; null once it has. */
  readonly joiningSince: number | null
  /** How long the setup waits for the network before it offers a choice (ms). */
  readonly joinTimeoutMs: number
  /** The last reach of each contact heard of, most recent change first (at most `MAX_KNOWN_NAMES`). */
  readonly reach: ReadonlyArray<ContactReach>
  /** How a new message is announced (`/bell`, `/notify`), and when it last was. */
  readonly alerts: Alerts
}

/** How the chat announces a message that arrives: the terminal bell, a desktop notification. */
export interface Alerts {
  readonly bell: boolean
  readonly desktop: boolean
  /** A desktop notifier (notify-send) is installed: `/notify on` is refused without one. */
  readonly desktopAvailable: boolean
  /** The driver's clock when the last alert went out (null: none yet). */
  readonly lastAt: number | null
}

/** Least time between two alerts: a burst of messages rings once, not once a message. */
export const ALERT_INTERVAL_MS = 3_000

/** What to do for a message that arrived: ring the bell, notify the desktop, naming the sender. */
export interface Alert {
  readonly bell: boolean
  readonly desktop: boolean
  readonly from: Username
}

/** A key press, as the UI reports it. */
export type KeyPress =
  | { readonly _tag: "Text"; readonly text: string }
  | {
    readonly _tag:
      | "Enter"
      | "Backspace"
      | "Tab"
      | "Escape"
      | "Left"
      | "Right"
      | "Home"
      | "End"
      | "Up"
      | "Down"
      | "PageUp"
      | "PageDown"
  }
  | { readonly _tag: "Ctrl"; readonly letter: string }

/** Everything that can happen to the chat. */
export type Msg =
  | { readonly _tag: "Key"; readonly key: KeyPress }
  | { readonly _tag: "Resize"; readonly size: Size }
  /** The node answers (after it was found or started); `now` is the driver's clock. */
  | { readonly _tag: "Connected"; readonly status: NodeStatus; readonly now: number }
  | { readonly _tag: "StartFailed"; readonly message: string }
  /** Time to re-read status, inbox and the open conversation (events may have been dropped); `now` is the driver's clock. */
  | { readonly _tag: "Refresh"; readonly now: number }
  | { readonly _tag: "StatusLoaded"; readonly status: NodeStatus; readonly show: boolean }
  | { readonly _tag: "StatusFailed"; readonly message: string }
  | { readonly _tag: "InboxLoaded"; readonly conversations: ReadonlyArray<ConversationSummary> }
  | {
    readonly _tag: "HistoryLoaded"
    readonly name: Username
    readonly entries: ReadonlyArray<HistoryEntry>
    /** A page before the oldest loaded message (else the latest page). */
    readonly older: boolean
    readonly limit: number
  }
  /** An event of the node, and when (the driver's clock) it arrived. */
  | { readonly _tag: "Event"; readonly event: ChatEvent; readonly at: number }
  | { readonly _tag: "EventsConnected" }
  | { readonly _tag: "EventsLost"; readonly message: string }
  | { readonly _tag: "Sent"; readonly localId: number; readonly message: SentMessageInfo }
  | ({ readonly _tag: "SendFailed"; readonly localId: number; readonly text: string } & Failure)
  | { readonly _tag: "NameChecked"; readonly name: Username; readonly free: boolean }
  | { readonly _tag: "Registered"; readonly answer: WhoisAnswer }
  | {
    readonly _tag: "WhoisAnswered"
    readonly answer: WhoisAnswer
    readonly open: boolean
    /** The look-up named the key (`name@fingerprint`): a conversation it opens sends to exactly that key. */
    readonly exact?: boolean | undefined
  }
  | { readonly _tag: "PeersLoaded"; readonly peers: ReadonlyArray<PeerEntry> }
  | { readonly _tag: "IdLoaded"; readonly id: IdentityAnswer }
  | { readonly _tag: "Verified"; readonly answer: VerifyAnswer }
  | ({
    readonly _tag: "Failed"
    readonly action: "check" | "register" | "whois" | "peers" | "status" | "history" | "id" | "verify" | "other"
  } & Failure)

/** Why a call failed: the node's one-line message and, when it says more, its kind and details (see `ChatFailure`). */
export interface Failure {
  readonly message: string
  /** Absent: "Other". */
  readonly kind?: FailureKind | undefined
  readonly detail?: FailureDetail | undefined
}

/** What the reducer asks the driver to do. */
export type Cmd =
  /** Start the chat's node joining through `bootstrap` (stopping the one it started before, if any). */
  | { readonly _tag: "StartNode"; readonly bootstrap: ReadonlyArray<Address> }
  /** Remember `bootstrap` in network.json: the node has reached the network through it. */
  | { readonly _tag: "SaveNetwork"; readonly bootstrap: ReadonlyArray<Address> }
  | { readonly _tag: "LoadStatus"; readonly show: boolean }
  | { readonly _tag: "LoadInbox" }
  | { readonly _tag: "LoadHistory"; readonly name: Username; readonly before: HistoryCursor | null; readonly limit: number }
  | { readonly _tag: "MarkRead"; readonly name: Username }
  /** `to` is the conversation's `ref`: a name, or `name@fingerprint`. */
  | { readonly _tag: "Send"; readonly localId: number; readonly to: string; readonly text: string }
  | { readonly _tag: "CheckName"; readonly name: Username }
  | { readonly _tag: "Register"; readonly name: Username }
  /** `name` is a name or `name@fingerprint` (normalized). */
  | { readonly _tag: "Whois"; readonly name: string; readonly open: boolean }
  | { readonly _tag: "LoadPeers" }
  | { readonly _tag: "LoadId" }
  | { readonly _tag: "Verify"; readonly name: string; readonly confirm: boolean }
  | { readonly _tag: "Quit" }
  /** Announce a message that arrived (bell, desktop notification). */
  | ({ readonly _tag: "Alert" } & Alert)
  /** Remember the announcement preferences (chat-settings.json). */
  | { readonly _tag: "SavePreferences"; readonly bell: boolean; readonly desktop: boolean }

/** The next state and the commands to run. */
export type Update = readonly [ChatState, ReadonlyArray<Cmd>]

/** The state before anything happened: `phase` says where the chat starts. */
export const initialState = (options: {
  readonly size: Size
  readonly phase: Phase
  readonly openOnStart?: string | null | undefined
  /** The addresses the chat starts its node with (see `ChatState.bootstrap`); null by default. */
  readonly bootstrap?: ReadonlyArray<Address> | null | undefined
  /** They are not saved yet (given on the command line): saved once they work. */
  readonly unsavedNetwork?: boolean | undefined
  /** How new messages are announced (default: not at all). */
  readonly alerts?: Partial<Omit<Alerts, "lastAt">> | undefined
  /** A notice to show at once (a damaged preferences file, say). */
  readonly notice?: Notice | null | undefined
  /** How long the setup waits for the network before offering a choice (default `DEFAULT_JOIN_TIMEOUT_MS`). */
  readonly joinTimeoutMs?: number | undefined
}): ChatState => ({
  size: options.size,
  phase: options.phase,
  node: { status: null, error: null, live: false },
  conversations: [],
  open: null,
  input: { text: "", cursor: 0 },
  notice: options.notice ?? null,
  panel: null,
  known: [],
  nextLocalId: 1,
  openOnStart: options.openOnStart ?? null,
  quitting: false,
  clock: null,
  bootstrap: options.bootstrap ?? null,
  unsavedNetwork: options.unsavedNetwork ?? false,
  joiningSince: null,
  joinTimeoutMs: options.joinTimeoutMs ?? DEFAULT_JOIN_TIMEOUT_MS,
  reach: [],
  alerts: {
    bell: options.alerts?.bell ?? false,
    desktop: options.alerts?.desktop ?? false,
    desktopAvailable: options.alerts?.desktopAvailable ?? false,
    lastAt: null
  }
})

/** The slash commands, with their one-line help. */
export const COMMANDS: ReadonlyArray<readonly [name: string, usage: string, help: string]> = [
  ["/chat", "/chat NAME", "open the conversation with NAME (Tab completes names; NAME@FINGERPRINT: exactly that key)"],
  ["/whois", "/whois NAME", "look a user up in the network: address and key fingerprint"],
  ["/verify", "/verify NAME", "the safety number to compare with NAME (add --confirm once it matched)"],
  ["/id", "/id", "how others name exactly you: NAME@FINGERPRINT"],
  ["/peers", "/peers", "the nodes your node is connected to"],
  ["/status", "/status", "your name, address, peers and network health"],
  ["/bell", "/bell on|off", "ring the terminal bell when a message arrives (remembered)"],
  ["/notify", "/notify on|off", "show a desktop notification when a message arrives (needs notify-send; remembered)"],
  ["/help", "/help", "this help"],
  ["/quit", "/quit", "leave (your node stops with the last chat window, unless you started it with peerchat start)"]
]

const HELP_LINES: ReadonlyArray<string> = [
  ...COMMANDS.map(([, usage, help]) => `${usage.padEnd(15)} ${help}`),
  "",
  "Type a message and press Enter to send it to the open conversation (start it with // to send a leading /).",
  "Tab completes commands and names · Ctrl-N / Ctrl-P next / previous conversation",
  "PageUp / PageDown and ↑ / ↓ scroll (a long panel like this one first) · Esc closes this panel · Ctrl-C quits"
]

/** The keys of a key press as the terminal library reports them (Ink's `Key`). */
export interface RawKey {
  readonly upArrow: boolean
  readonly downArrow: boolean
  readonly leftArrow: boolean
  readonly rightArrow: boolean
  readonly pageUp: boolean
  readonly pageDown: boolean
  readonly home: boolean
  readonly end: boolean
  readonly return: boolean
  readonly escape: boolean
  readonly ctrl: boolean
  readonly meta: boolean
  readonly tab: boolean
  readonly backspace: boolean
  readonly delete: boolean
}

/**
 * The key presses for what the terminal library reported (none for keys the
 * chat does not use). Terminals send Backspace as DEL, which Ink reports as
 * `delete`, so both erase backwards. Several keys that arrive in one piece
 * (typed faster than they are read, or pasted) reach us as one string: its
 * control characters are the keys they stand for (CR or LF Enter, TAB Tab,
 * DEL or BS Backspace, ^A to ^Z Ctrl-letters) and the runs between are text.
 */
export const keyPressesOf = (input: string, key: RawKey): ReadonlyArray<KeyPress> => {
  if (key.return) return [{ _tag: "Enter" }]
  if (key.tab) return [{ _tag: "Tab" }]
  if (key.backspace || key.delete) return [{ _tag: "Backspace" }]
  if (key.upArrow) return [{ _tag: "Up" }]
  if (key.downArrow) return [{ _tag: "Down" }]
  if (key.leftArrow) return [{ _tag: "Left" }]
  if (key.rightArrow) return [{ _tag: "Right" }]
  if (key.pageUp) return [{ _tag: "PageUp" }]
  if (key.pageDown) return [{ _tag: "PageDown" }]
  if (key.home) return [{ _tag: "Home" }]
  if (key.end) return [{ _tag: "End" }]
  if (key.escape) return [{ _tag: "Escape" }]
  if (key.ctrl) return input.length === 1 ? [{ _tag: "Ctrl", letter: input.toLowerCase() }] : []
  if (key.meta) return []
  const presses: Array<KeyPress> = []
  let text = ""
  const flush = () => {
    if (text !== "") presses.push({ _tag: "Text", text })
    text = ""
  }
  for (let i = 0; i < input.length; i++) {
    const code = input.charCodeAt(i)
    if (code >= 0x20 && code !== 0x7f && !(code >= 0x80 && code < 0xa0)) {
      text += input.charAt(i)
      continue
    }
    flush()
    if (code === 0x0d || code === 0x0a) {
      // CR LF is one Enter.
      if (code === 0x0d && input.charCodeAt(i + 1) === 0x0a) i++
      presses.push({ _tag: "Enter" })
    } else if (code === 0x09) presses.push({ _tag: "Tab" })
    else if (code === 0x7f || code === 0x08) presses.push({ _tag: "Backspace" })
    else if (code >= 0x01 && code <= 0x1a) presses.push({ _tag: "Ctrl", letter: String.fromCharCode(code + 0x60) })
    // Any other control character stands for no key the chat uses.
  }
  flush()
  return presses
}

// ---------------------------------------------------------------------------
// Small pieces
// ---------------------------------------------------------------------------

const error = (text: string): Notice => ({ text, tone: "error" })
const warning = (text: string): Notice => ({ text, tone: "warning" })
const info = (text: string): Notice => ({ text, tone: "info" })

const STATUS_RANK: { readonly [Status in MessageStatus]: number } = {
  queued: 0,
  "stored-offline": 1,
  delivered: 2,
  received: 0
}

/** History order: (sentAt, sequence, id). */
const compareEntries = (a: HistoryEntry, b: HistoryEntry): number =>
  a.sentAt - b.sentAt || a.sequence - b.sequence || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)

/** `current` and `incoming` as one history: each id once (its most advanced status), in history order. */
export const mergeEntries = (
  current: ReadonlyArray<HistoryEntry>,
  incoming: ReadonlyArray<HistoryEntry>
): ReadonlyArray<HistoryEntry> => {
  if (incoming.length === 0) return current
  const byId = new Map<string, HistoryEntry>()
  for (const entry of current) byId.set(entry.id, entry)
  for (const entry of incoming) {
    const known = byId.get(entry.id)
    // Statuses only move forward; a page read before a receipt must not move one back.
    byId.set(entry.id, known !== undefined && STATUS_RANK[known.status] > STATUS_RANK[entry.status] ? known : entry)
  }
  return [...byId.values()].sort(compareEntries)
}

const self = (state: ChatState): Username | null => state.node.status?.username ?? null

/** `summary` at the top of the list (replacing the old line of its conversation). */
const touchConversation = (
  list: ReadonlyArray<ConversationSummary>,
  name: Username,
  change: (summary: ConversationSummary) => ConversationSummary,
  lastAt: number
): ReadonlyArray<ConversationSummary> => {
  const existing = list.find((summary) => summary.conversation === name) ?? { conversation: name, unread: 0, lastAt }
  return [change({ ...existing, lastAt: Math.max(existing.lastAt, lastAt) }), ...list.filter((summary) => summary.conversation !== name)]
}

const remember = (known: ReadonlyArray<Username>, name: Username): ReadonlyArray<Username> =>
  known.includes(name) ? known : [name, ...known].slice(0, MAX_KNOWN_NAMES)

/** When `entry`, a message the contact sent, shows them online: when they sent it, at the latest when it arrived. */
const answeredAt = (entry: HistoryEntry, arrived: number): number => Math.min(entry.sentAt, entry.receivedAt ?? arrived)

/** `reach` with `name` reached at `at` (kept when something later was known already). */
const noteReach = (
  reach: ReadonlyArray<ContactReach>,
  name: Username,
  at: number,
  how: ContactReach["how"]
): ReadonlyArray<ContactReach> => {
  const known = reach.find((item) => item.name === name)
  if (known !== undefined && known.at >= at) return reach
  return [{ name, at, how }, ...reach.filter((item) => item.name !== name)].slice(0, MAX_KNOWN_NAMES)
}

/**
 * The latest reach a page of history shows: a message they sent, or one of
 * ours that was delivered (its receipt came at or after it was sent, so its
 * sending time is a safe lower bound).
 */
const reachInHistory = (entries: ReadonlyArray<HistoryEntry>): Omit<ContactReach, "name"> | undefined => {
  let latest: Omit<ContactReach, "name"> | undefined
  for (const entry of entries) {
    const candidate = entry.direction === "in"
      ? { at: answeredAt(entry, entry.sentAt), how: "answered" as const }
      : entry.status === "delivered"
      ? { at: entry.sentAt, how: "delivered" as const }
      : undefined
    if (candidate !== undefined && (latest === undefined || candidate.at > latest.at)) latest = candidate
  }
  return latest
}

/** The names the conversation list shows, in its order. */
export const listedNames = (state: ChatState): ReadonlyArray<Username> => {
  const names = state.conversations.map((summary) => summary.conversation)
  const open = state.open?.name
  return open !== undefined && !names.includes(open) ? [open, ...names] : names
}

const setInput = (state: ChatState, text: string, cursor = text.length): ChatState => ({
  ...state,
  input: { text, cursor: Math.max(0, Math.min(cursor, text.length)) }
})

/** Typed or pasted text as the input takes it: line breaks become spaces, other control characters are dropped. */
const cleanInput = (text: string): string =>
  text.replace(/\r\n|\r|\n/g, " ").replace(/\p{Cc}/gu, (character) => (character === "\t" ? " " : ""))

// ---------------------------------------------------------------------------
// Conversations
// ---------------------------------------------------------------------------

const emptyConversation = (name: Username, ref: string): OpenConversation => ({
  name,
  ref,
  messages: [],
  pending: [],
  loaded: false,
  hasOlder: false,
  loadingOlder: false,
  scroll: 0
})

/**
 * Opens the conversation with `name`: loads its latest page and marks it
 * read. With a `ref` naming one key, messages go to exactly that key (an open
 * conversation keeps the key it was opened for when opened again by name).
 */
const openConversation = (state: ChatState, name: Username, ref: string = name): Update => {
  if (state.open?.name === name) {
    return [{ ...state, open: { ...state.open, scroll: 0, ref: ref === name ? state.open.ref : ref } }, [{ _tag: "MarkRead", name }]]
  }
  return [
    {
      ...state,
      open: emptyConversation(name, ref),
      known: remember(state.known, name),
      conversations: state.conversations.map((summary) => (summary.conversation === name ? { ...summary, unread: 0 } : summary))
    },
    [{ _tag: "LoadHistory", name, before: null, limit: HISTORY_PAGE }, { _tag: "MarkRead", name }]
  ]
}

/**
 * `/chat NAME`: a listed conversation opens at once; another name, or any
 * `name@fingerprint`, is looked up first, so a typo or a wrong key is caught.
 */
const requestConversation = (state: ChatState, input: string): Update => {
  const parsed = parseNameRef(input)
  if (Either.isLeft(parsed)) return [{ ...state, notice: error(parsed.left.message) }, []]
  const { username: name, fingerprint } = parsed.right
  if (name === self(state)) return [{ ...state, notice: error(`"${name}" is you: pick someone else to talk to`) }, []]
  if (fingerprint === undefined && listedNames(state).includes(name)) return openConversation(state, name)
  const ref = formatNameRef(parsed.right)
  return [{ ...state, notice: info(`looking up ${ref}…`) }, [{ _tag: "Whois", name: ref, open: true }]]
}

const switchConversation = (state: ChatState, step: 1 | -1): Update => {
  const names = listedNames(state)
  if (names.length === 0) return [{ ...state, notice: info("no conversations yet: /chat NAME starts one") }, []]
  const current = state.open === null ? -1 : names.indexOf(state.open.name)
  const next = current === -1 ? (step === 1 ? 0 : names.length - 1) : (current + step + names.length) % names.length
  const name = names[next]
  return name === undefined ? [state, []] : openConversation(state, name)
}

/** Scrolls the open conversation by `delta` rows (positive: back in time), asking for older messages at the top. */
const scroll = (state: ChatState, delta: number): Update => {
  const open = state.open
  if (open === null) return [state, []]
  const layout = layoutOf(state)
  const visible = messageRows(layout)
  const total = conversationLines(open, self(state) ?? "you", layout.mainWidth, Infinity).length
  const maxScroll = Math.max(0, total - visible)
  const wanted = Math.max(0, open.scroll + delta)
  if (delta <= 0 || wanted <= maxScroll) return [{ ...state, open: { ...open, scroll: Math.min(wanted, maxScroll) } }, []]
  const atTop: OpenConversation = { ...open, scroll: maxScroll }
  const oldest = open.messages[0]
  if (!open.hasOlder || open.loadingOlder || !open.loaded || oldest === undefined) return [{ ...state, open: atTop }, []]
  if (open.messages.length >= MAX_LOADED_MESSAGES) {
    return [{
      ...state,
      open: atTop,
      notice: info(`only the latest ${MAX_LOADED_MESSAGES} messages are shown here; peerchat history shows more`)
    }, []]
  }
  return [
    { ...state, open: { ...atTop, loadingOlder: true } },
    [{
      _tag: "LoadHistory",
      name: open.name,
      before: { sentAt: oldest.sentAt, sequence: oldest.sequence, id: oldest.id },
      limit: HISTORY_PAGE
    }]
  ]
}

const pageSize = (state: ChatState): number => Math.max(1, messageRows(layoutOf(state)) - 1)

/**
 * Scrolls the panel by `lines` (positive: down), when it is open and longer
 * than its rows; `undefined` when there is no such panel, so the keys scroll
 * the conversation instead.
 */
const scrollPanel = (state: ChatState, lines: number): Update | undefined => {
  const panel = state.panel
  const { first, maxFirst } = panelWindow(state)
  if (panel === null || maxFirst === 0) return undefined
  const next = Math.max(0, Math.min(maxFirst, first + lines))
  return [{ ...state, panel: { ...panel, scroll: next } }, []]
}

/** A page of the panel: its rows less one, so one line stays in sight. */
const panelPage = (state: ChatState): number => Math.max(1, panelWindow(state).room - 1)

// ---------------------------------------------------------------------------
// Input: editing, completion, submitting
// ---------------------------------------------------------------------------

/** What the input cannot take: said, never cut silently. */
const inputFullText = (dropped: number): string =>
  `the input holds at most ${MAX_INPUT.toLocaleString("en-US")} characters (${MAX_PIECES} messages): ` +
  `${dropped.toLocaleString("en-US")} more were not taken; send this first, then paste the rest`

const insertText = (state: ChatState, raw: string): Update => {
  const text = cleanInput(raw)
  if (text === "") return [state, []]
  const { cursor, text: current } = state.input
  const room = MAX_INPUT - current.length
  if (room <= 0) return [{ ...state, notice: error(inputFullText(text.length)) }, []]
  // Never half a character: a grapheme cluster (an emoji with its skin tone, a letter with its
  // accents) cut at the limit is left out whole.
  const added = clusterPrefix(text, room)
  const next = setInput(state, current.slice(0, cursor) + added + current.slice(cursor), cursor + added.length)
  return [added.length < text.length ? { ...next, notice: error(inputFullText(text.length - added.length)) } : next, []]
}

const deleteBack = (state: ChatState, toWordStart: boolean): ChatState => {
  const { cursor, text } = state.input
  if (cursor === 0) return state
  const start = toWordStart ? text.slice(0, cursor).replace(/\S+\s*$/, "").length : previousClusterStart(text, cursor)
  return setInput(state, text.slice(0, start) + text.slice(cursor), start)
}

const moveCursor = (state: ChatState, to: number): ChatState => setInput(state, state.input.text, to)

const commonPrefix = (words: ReadonlyArray<string>): string => {
  const [first = "", ...rest] = words
  let prefix = first
  for (const word of rest) {
    while (!word.startsWith(prefix)) prefix = prefix.slice(0, -1)
  }
  return prefix
}

/** The names Tab offers: conversations, then names met otherwise; never the user's own. */
export const completionNames = (state: ChatState): ReadonlyArray<Username> => {
  const me = self(state)
  return [...new Set([...listedNames(state), ...state.known])].filter((name) => name !== me)
}

/** Tab: completes the word before the cursor (a command as the first word, else a username). */
const complete = (state: ChatState): Update => {
  const { text, cursor } = state.input
  const before = text.slice(0, cursor)
  const start = before.lastIndexOf(" ") + 1
  const word = before.slice(start)
  const candidates: ReadonlyArray<string> = start === 0 && word.startsWith("/")
    ? COMMANDS.map(([name]) => name)
    : state.phase._tag === "Chat"
    ? completionNames(state)
    : []
  const lower = word.toLowerCase()
  const matches = candidates.filter((candidate) => candidate.startsWith(lower))
  if (matches.length === 0) {
    return [{ ...state, notice: info(word === "" ? "nothing to complete yet" : `no name or command starts with "${word}"`) }, []]
  }
  const completed = matches.length === 1 ? `${matches[0] ?? ""} ` : commonPrefix(matches)
  const next = setInput(state, text.slice(0, start) + completed + text.slice(cursor), start + completed.length)
  return [{ ...next, notice: matches.length === 1 ? null : info(matches.slice(0, 12).join("  ") + (matches.length > 12 ? "  …" : "")) }, []]
}

const statusPanel = (status: NodeStatus, clock: number | null): Panel => {
  const live = livePeersOf(status)
  const health = networkHealth(status.bootstrap, live)
  const bootstrap = status.bootstrap
  const through = bootstrap._tag === "Joining" && bootstrap.addresses !== undefined && bootstrap.addresses.length > 0
    ? ` through ${bootstrap.addresses.join(", ")}`
    : ""
  const network = bootstrap._tag === "Standalone"
    ? "you started this network"
    : bootstrap._tag === "Joined"
    ? "joined"
    : bootstrap.lastError === null
    ? `joining${through}`
    : `joining${through}: attempt ${bootstrap.attempts} failed (${bootstrap.lastError})` +
      (bootstrap.nextAttemptAt !== null && clock !== null
        ? `; next in ${Math.max(0, Math.ceil((bootstrap.nextAttemptAt - clock) / 1000))} s`
        : "")
  return {
    title: "Status",
    lines: [
      `username  ${status.username ?? "(none yet)"}`,
      `address   ${status.listen}   (a friend joins your network through it)`,
      `node id   ${status.nodeId}`,
      status.livePeers === undefined
        ? `peers     ${status.peers}`
        : `peers     ${status.livePeers} heard from in the last 2 minutes, ${status.peers} known`,
      `network   ${health.text}; ${network}`,
      ...(status.nameWarning === undefined ? [] : [`warning   ${status.nameWarning}`])
    ]
  }
}

const whoisPanel = (answer: WhoisAnswer): Panel => ({
  title: `whois ${answer.username}`,
  lines: [
    `username  ${answer.username}`,
    `key       ${answer.fingerprint}   (exactly this key: ${nameRefOf(answer)})`,
    `address   ${answer.addresses.join(", ")}`,
    `node id   ${answer.nodeId}`,
    `record    version ${answer.sequence}`,
    ...(answer.warning === undefined ? [] : [`warning   ${answer.warning}`])
  ]
})

const idPanel = (id: IdentityAnswer): Panel => ({
  title: "You",
  lines: id.nameRef === null
    ? [`key       ${id.fingerprint}`, "no name yet"]
    : [
      `you are  ${id.nameRef}`,
      `Others can name exactly you as ${id.nameRef} (/chat, peerchat send), even if another key claims "${id.username ?? ""}".`,
      "Compare safety numbers with a contact: /verify NAME"
    ]
})

/** What the node says when it has no peer to ask: names cannot be looked up, so nothing is "not found" yet. */
export const NOT_CONNECTED_TEXT =
  "your node has no peers yet, so nobody can be looked up: try again once it has joined the network (/status shows how it goes)"

/**
 * The notice, and for a conflict or a changed key the panel, that explain a
 * failed call; `prefix` says what was not done ("not sent: ").
 */
const explainFailure = (state: ChatState, failure: Failure, prefix: string): ChatState => {
  const detail = failure.detail
  switch (detail?._tag) {
    case "NameConflict": {
      const { username, choices } = detail
      const width = Math.max(0, ...choices.map((choice) => choice.ref.length))
      return {
        ...state,
        notice: error(`${prefix}"${username}" is claimed by ${choices.length} different keys: ${choices.map((choice) => choice.ref).join(" or ")}`),
        panel: {
          title: `"${username}" is claimed by ${choices.length} keys`,
          lines: [
            ...choices.map((choice) =>
              `${choice.ref.padEnd(width)}  at ${choice.address === "" ? "(no address)" : choice.address}, held by ${choice.holders} of the name's nodes`
            ),
            `Nothing was sent. The network cannot tell which one is the ${username} you mean: ask them for their`,
            `fingerprint (their /id or peerchat id) over a channel you trust, then use /chat ${username}@FINGERPRINT`
          ]
        }
      }
    }
    case "KeyChanged": {
      const { username, pinned, found } = detail
      return {
        ...state,
        notice: warning(`⚠ ${prefix}${username}'s key has changed: nothing went to the new key; read the panel before you trust it`),
        panel: {
          title: `⚠ ${username}'s key has changed`,
          lines: [
            `pinned  ${username}@${pinned}`,
            `now     ${username}@${found}`,
            `Nothing was sent: the name ${username} now resolves to another key than the one you pinned.`,
            `This happens when ${username} reinstalls or moves to a new device, and it is also what an impostor looks like.`,
            `Compare safety numbers with ${username} in person or over another channel you trust (/verify ${username});`,
            `only if they match, accept the new key: peerchat trust ${username} --key ${found}`
          ]
        }
      }
    }
    case "FingerprintMismatch": {
      const { actual, requested, username } = detail
      return {
        ...state,
        notice: error(
          `${prefix}${username}@${requested} is not the key ${username} has now (${username}@${actual}): check the fingerprint with ${username}`
        )
      }
    }
    case undefined:
      return { ...state, notice: error(prefix + (failure.kind === "NotConnected" ? NOT_CONNECTED_TEXT : failure.message)) }
  }
}

/** `/verify NAME [--confirm]`: asks for the safety number (and records a match with --confirm). */
const requestVerify = (state: ChatState, args: ReadonlyArray<string>): Update => {
  const confirm = args.includes("--confirm")
  const names = args.filter((arg) => arg !== "--confirm" && arg !== "")
  const [input] = names
  if (input === undefined || names.length > 1) return [{ ...state, notice: error("usage: /verify NAME [--confirm]") }, []]
  const parsed = parseNameRef(input)
  if (Either.isLeft(parsed)) return [{ ...state, notice: error(parsed.left.message) }, []]
  if (parsed.right.username === self(state)) {
    return [{ ...state, notice: error(`"${parsed.right.username}" is you: verify someone else's key`) }, []]
  }
  const name = formatNameRef(parsed.right)
  return [
    { ...state, notice: info(confirm ? `recording ${name} as verified…` : `computing the safety number with ${name}…`) },
    [{ _tag: "Verify", name, confirm }]
  ]
}

/** `/bell on|off` and `/notify on|off`: changes and remembers how new messages are announced; alone, says how it is. */
const setAlert = (state: ChatState, kind: "bell" | "desktop", argument: string): Update => {
  const name = kind === "bell" ? "the terminal bell" : "desktop notifications"
  const usage = kind === "bell" ? "/bell on|off" : "/notify on|off"
  const current = state.alerts[kind]
  if (argument === "") return [{ ...state, notice: info(`${name}: ${current ? "on" : "off"} for new messages (${usage})`) }, []]
  if (argument !== "on" && argument !== "off") return [{ ...state, notice: error(`usage: ${usage}`) }, []]
  const on = argument === "on"
  if (on && kind === "desktop" && !state.alerts.desktopAvailable) {
    return [{ ...state, notice: error("desktop notifications need notify-send, which is not installed (package libnotify-bin); /bell on rings the terminal instead") }, []]
  }
  const alerts: Alerts = { ...state.alerts, [kind]: on }
  return [
    { ...state, alerts, notice: { text: `${name}: ${on ? "on" : "off"} for new messages`, tone: "success" } },
    [{ _tag: "SavePreferences", bell: alerts.bell, desktop: alerts.desktop }]
  ]
}

/**
 * Whether a chat event is announced, and how: only a message someone sent
 * this user, new to the chat (not one already shown), while chatting, with
 * the bell or notifications on, and at most once per `ALERT_INTERVAL_MS`
 * (`at`, the driver's clock).
 */
export const alertFor = (state: ChatState, event: ChatEvent, at: number): Alert | null => {
  const { alerts } = state
  if (!alerts.bell && !alerts.desktop) return null
  if (event._tag !== "Received" || event.entry.direction !== "in" || state.phase._tag !== "Chat") return null
  const { entry } = event
  if (state.open?.name === entry.conversation && state.open.messages.some((message) => message.id === entry.id)) return null
  if (alerts.lastAt !== null && at - alerts.lastAt < ALERT_INTERVAL_MS) return null
  return { bell: alerts.bell, desktop: alerts.desktop && alerts.desktopAvailable, from: entry.from }
}

const runCommand = (state: ChatState, line: string): Update => {
  const [command = "", ...args] = line.split(/\s+/)
  const argument = args.join(" ").trim()
  const needsName = (usage: string, then: (name: string) => Update): Update =>
    argument === "" ? [{ ...state, notice: error(`usage: ${usage}`) }, []] : then(argument)
  switch (command.toLowerCase()) {
    case "/chat":
    case "/c":
      return needsName("/chat NAME", (name) => requestConversation(state, name))
    case "/whois":
      return needsName("/whois NAME", (input) => {
        const parsed = parseNameRef(input)
        if (Either.isLeft(parsed)) return [{ ...state, notice: error(parsed.left.message) }, []]
        const name = formatNameRef(parsed.right)
        return [{ ...state, notice: info(`looking up ${name}…`) }, [{ _tag: "Whois", name, open: false }]]
      })
    case "/verify":
      return requestVerify(state, args)
    case "/id":
      return [{ ...state, notice: info("asking your node for your fingerprint…") }, [{ _tag: "LoadId" }]]
    case "/peers":
      return [{ ...state, notice: info("asking your node for its peers…") }, [{ _tag: "LoadPeers" }]]
    case "/status":
      return [state, [{ _tag: "LoadStatus", show: true }]]
    case "/bell":
    case "/notify":
      return setAlert(state, command.toLowerCase() === "/bell" ? "bell" : "desktop", argument.toLowerCase())
    case "/help":
    case "/?":
      return [{ ...state, panel: { title: "Help", lines: HELP_LINES } }, []]
    case "/quit":
    case "/exit":
    case "/q":
      return [{ ...state, quitting: true }, [{ _tag: "Quit" }]]
    default:
      return [{ ...state, notice: error(`unknown command ${command}: /help lists the commands`) }, []]
  }
}

/**
 * Sends `text` to the open conversation: as one message, or, when it is
 * longer than a message holds, as several (core `splitMessageText`), in
 * order, saying so. A text with nothing to read is refused (the node would
 * refuse it too: core `parseOutgoingText`).
 */
const sendMessage = (state: ChatState, text: string): Update => {
  const open = state.open
  if (open === null) return [{ ...state, notice: error("no conversation is open: /chat NAME opens one") }, []]
  if (isBlankText(text)) return [{ ...state, notice: error("not sent: the message has no text") }, []]
  const pieces = splitMessageText(text)
  const first = state.nextLocalId
  const pending = pieces.map((piece, index) => ({ localId: first + index, text: piece }))
  return [
    {
      ...setInput(state, ""),
      nextLocalId: first + pieces.length,
      open: { ...open, pending: [...open.pending, ...pending], scroll: 0 },
      notice: pieces.length > 1
        ? info(`sent as ${pieces.length} messages: one message holds at most 16 KiB`)
        : state.notice
    },
    pending.map(({ localId, text: piece }): Cmd => ({ _tag: "Send", localId, to: open.ref, text: piece }))
  ]
}

const submitChat = (state: ChatState): Update => {
  const line = state.input.text
  const trimmed = line.trim()
  const cleared = { ...state, notice: null }
  // Enter on an empty line does nothing, as in any chat; a line of only spaces is refused with a reason.
  if (line === "") return [cleared, []]
  if (isBlankText(line)) return sendMessage(cleared, line)
  if (trimmed.startsWith("//")) return sendMessage(cleared, line.trimStart().slice(1))
  if (trimmed.startsWith("/")) {
    const [next, cmds] = runCommand(setInput(cleared, ""), trimmed)
    return [next, cmds]
  }
  return sendMessage(cleared, line)
}


/**
 * After a fresh status: since when the node has been trying to reach the
 * network (or null once it has), and, the first time it has, the command that
 * saves how it got there. Saving only then (not when the user typed the
 * address) is on purpose: an address that never answered, a typo say, would
 * otherwise be what every later start waits on again.
 */
const followNetwork = (state: ChatState, status: NodeStatus, now: number | null): Update => {
  const ready = networkReady(status)
  const joiningSince = ready ? null : state.joiningSince ?? now
  const save = ready && state.unsavedNetwork && state.bootstrap !== null
  return [
    { ...state, joiningSince, unsavedNetwork: state.unsavedNetwork && !save },
    save && state.bootstrap !== null ? [{ _tag: "SaveNetwork", bootstrap: state.bootstrap }] : []
  ]
}

/** The setup gives up waiting for the network once `joinTimeoutMs` passed without reaching it: the choice. */
const checkJoinTimeout = (state: ChatState): ChatState =>
  state.phase._tag === "ChooseName" && state.joiningSince !== null && state.clock !== null &&
    state.clock - state.joiningSince >= state.joinTimeoutMs && !networkReady(state.node.status)
    ? { ...setInput(state, ""), phase: { _tag: "JoinTimedOut" }, notice: null }
    : state

/**
 * (Re)starts the chat's node joining through `bootstrap`: what was known of
 * the node before is dropped, so the screen says "starting" and nothing is
 * asked of the old node while it stops.
 */
const startNodeWith = (state: ChatState, bootstrap: ReadonlyArray<Address>, message: string): Update => [{
  ...state,
  phase: { _tag: "Starting", message },
  node: { ...state.node, status: null, error: null },
  bootstrap,
  unsavedNetwork: true,
  joiningSince: null
}, [{ _tag: "StartNode", bootstrap }]]

const addressList = (addresses: ReadonlyArray<Address>): string => addresses.map(formatAddress).join(", ")

/** What the user typed at the network question (or the timeout's choice): `new`, or an address to join through. */
const chooseNetwork = (state: ChatState, text: string): Update | undefined => {
  if (/^(new|n)$/i.test(text)) return startNodeWith(state, [], "Starting your node on a new network…")
  const address = parseAddress(text)
  return Either.isRight(address)
    ? startNodeWith(state, [address.right], `Starting your node and joining the network through ${formatAddress(address.right)}…`)
    : undefined
}

/** The choice offered when the node did not reach the network in time. */
const submitJoinChoice = (state: ChatState, text: string): Update => {
  const cleared = { ...setInput(state, ""), notice: null }
  const choice = text.toLowerCase()
  const bootstrap = state.bootstrap
  if (choice === "" || choice === "r" || choice === "retry") {
    // A node another terminal or window started keeps trying by itself: this window can only wait for it again.
    if (bootstrap === null) {
      return [{
        ...cleared,
        phase: { _tag: "ChooseName", checking: null, waitingForNetwork: false },
        joiningSince: state.clock,
        notice: info("waiting for your node to reach the network again…")
      }, []]
    }
    return startNodeWith(
      cleared,
      bootstrap,
      bootstrap.length === 0
        ? "Restarting your node…"
        : `Restarting your node and trying ${addressList(bootstrap)} again…`
    )
  }
  if (bootstrap === null) {
    return [{
      ...state,
      notice: error(
        "your node runs in another terminal (peerchat start) or chat window, which started it: stop it and start it with --bootstrap HOST:PORT, or type r to keep waiting"
      )
    }, []]
  }
  if (choice === "c" || choice === "change") {
    return [{ ...cleared, phase: { _tag: "ChooseNetwork" }, notice: info("type the address again (host:port), or new") }, []]
  }
  return chooseNetwork(cleared, text) ??
    [{ ...state, notice: error(`"${text}" is not a choice: type r (try again), c (change the address), an address (host:port), or new`) }, []]
}

const checkName = (state: ChatState, name: Username): Update =>
  networkReady(state.node.status)
    ? [{ ...state, phase: { _tag: "ChooseName", checking: name, waitingForNetwork: false } }, [{ _tag: "CheckName", name }]]
    : [{
      ...state,
      phase: { _tag: "ChooseName", checking: name, waitingForNetwork: true },
      notice: info("waiting for your node to reach the network before checking the name…")
    }, []]

const submitSetup = (state: ChatState): Update => {
  const text = state.input.text.trim()
  const cleared = { ...setInput(state, ""), notice: null }
  switch (state.phase._tag) {
    case "ChooseNetwork": {
      if (text === "") return [{ ...state, notice: error("type the address of a friend's node (host:port), or new") }, []]
      return chooseNetwork(cleared, text) ?? [{
        ...state,
        notice: error(`"${text}" is not an address: expected host:port, for example 192.0.2.10:4242 (or type new)`)
      }, []]
    }
    case "JoinTimedOut":
      return submitJoinChoice(state, text)
    case "ChooseName": {
      if (state.phase.checking !== null) return [state, []]
      const parsed = parseUsername(text)
      if (Either.isLeft(parsed)) return [{ ...state, notice: error(parsed.left.message) }, []]
      return checkName(cleared, parsed.right)
    }
    case "Fatal":
      return [{ ...state, quitting: true }, [{ _tag: "Quit" }]]
    default:
      return [state, []]
  }
}

const onKey = (state: ChatState, key: KeyPress): Update => {
  if (key._tag === "Ctrl" && (key.letter === "c" || (key.letter === "d" && state.input.text === ""))) {
    return [{ ...state, quitting: true }, [{ _tag: "Quit" }]]
  }
  const chatting = state.phase._tag === "Chat"
  const editing = chatting || state.phase._tag === "ChooseNetwork" || state.phase._tag === "JoinTimedOut" ||
    (state.phase._tag === "ChooseName" && state.phase.checking === null)
  switch (key._tag) {
    case "Text":
      return editing ? insertText(state, key.text) : [state, []]
    case "Enter":
      return chatting ? submitChat(state) : submitSetup(state)
    case "Backspace":
      return [deleteBack(state, false), []]
    case "Left":
      return [moveCursor(state, previousClusterStart(state.input.text, state.input.cursor)), []]
    case "Right":
      return [moveCursor(state, nextClusterEnd(state.input.text, state.input.cursor)), []]
    case "Home":
      return [moveCursor(state, 0), []]
    case "End":
      return [moveCursor(state, state.input.text.length), []]
    case "Tab":
      return editing ? complete(state) : [state, []]
    case "Escape":
      return [state.panel !== null ? { ...state, panel: null } : { ...state, notice: null }, []]
    // An open panel longer than its rows (the help on a small terminal) takes the scrolling keys.
    case "Up":
      return scrollPanel(state, -1) ?? scroll(state, 1)
    case "Down":
      return scrollPanel(state, 1) ?? scroll(state, -1)
    case "PageUp":
      return scrollPanel(state, -panelPage(state)) ?? scroll(state, pageSize(state))
    case "PageDown":
      return scrollPanel(state, panelPage(state)) ?? scroll(state, -pageSize(state))
    case "Ctrl":
      switch (key.letter) {
        case "a":
          return [moveCursor(state, 0), []]
        case "e":
          return [moveCursor(state, state.input.text.length), []]
        case "u":
          return [setInput(state, ""), []]
        case "w":
          return [deleteBack(state, true), []]
        case "n":
          return chatting ? switchConversation(state, 1) : [state, []]
        case "p":
          return chatting ? switchConversation(state, -1) : [state, []]
        case "l":
          return [{ ...state, panel: null, notice: null }, []]
        default:
          return [state, []]
      }
  }
}

// ---------------------------------------------------------------------------
// Outcomes and events
// ---------------------------------------------------------------------------

/**
 * Entering the chat: load the inbox, and open the conversation named on the
 * command line. That one opens without a look-up: the node may still be
 * joining the network, and the user asked for it by name (sending to a user
 * who does not exist says so).
 */
const enterChat = (state: ChatState): Update => {
  const chatting: ChatState = { ...state, phase: { _tag: "Chat" }, openOnStart: null }
  const requested = state.openOnStart === null ? null : parseNameRef(state.openOnStart)
  const [next, cmds]: Update = requested === null
    ? [chatting, []]
    : Either.isLeft(requested)
    ? [{ ...chatting, notice: error(requested.left.message) }, []]
    : requested.right.username === self(chatting)
    ? [{ ...chatting, notice: error(`"${requested.right.username}" is you: pick someone else to talk to`) }, []]
    : openConversation(chatting, requested.right.username, formatNameRef(requested.right))
  return [next, [{ _tag: "LoadInbox" }, ...cmds]]
}

const refresh = (state: ChatState): ReadonlyArray<Cmd> => {
  if (state.phase._tag !== "Chat") return state.node.status === null ? [] : [{ _tag: "LoadStatus", show: false }]
  const open = state.open
  return [
    { _tag: "LoadStatus", show: false },
    { _tag: "LoadInbox" },
    ...(open !== null && open.loaded ? [{ _tag: "LoadHistory", name: open.name, before: null, limit: HISTORY_PAGE } as const] : [])
  ]
}

const onEvent = (withoutReach: ChatState, event: ChatEvent, arrived: number): Update => {
  const open = withoutReach.open
  switch (event._tag) {
    case "Received": {
      const { entry } = event
      const at = entry.receivedAt ?? entry.sentAt
      const state = { ...withoutReach, reach: noteReach(withoutReach.reach, entry.conversation, answeredAt(entry, arrived), "answered") }
      if (open !== null && open.name === entry.conversation) {
        const known = open.messages.some((message) => message.id === entry.id)
        const layout = layoutOf(state)
        // A reader scrolled up keeps their place: the view moves up by the new message's height.
        const shift = open.scroll > 0 && !known ? entryHeight(entry, layout.mainWidth) : 0
        return [{
          ...state,
          open: { ...open, messages: mergeEntries(open.messages, [entry]), scroll: open.scroll + shift },
          conversations: touchConversation(state.conversations, entry.conversation, (summary) => ({ ...summary, unread: 0 }), at)
        }, [{ _tag: "MarkRead", name: entry.conversation }]]
      }
      return [{
        ...state,
        conversations: touchConversation(
          state.conversations,
          entry.conversation,
          (summary) => ({ ...summary, unread: summary.unread + 1 }),
          at
        ),
        known: remember(state.known, entry.conversation),
        notice: info(`new message from ${entry.from} (Ctrl-N, or /chat ${entry.from})`)
      }, []]
    }
    case "StatusChanged": {
      // A delivery is a signed receipt from the contact's own node: it was online just now.
      const state = event.status === "delivered"
        ? { ...withoutReach, reach: noteReach(withoutReach.reach, event.conversation, arrived, event.via === "relay" ? "relayed" : "delivered") }
        : withoutReach
      if (open === null || open.name !== event.conversation) return [state, []]
      return [{
        ...state,
        open: {
          ...open,
          messages: open.messages.map((message) =>
            message.id === event.id && STATUS_RANK[event.status] > STATUS_RANK[message.status]
              ? { ...message, status: event.status }
              : message
          )
        }
      }, []]
    }
  }
}

const onHistory = (loaded: ChatState, msg: Extract<Msg, { _tag: "HistoryLoaded" }>): Update => {
  const latest = reachInHistory(msg.entries)
  const state = latest === undefined ? loaded : { ...loaded, reach: noteReach(loaded.reach, msg.name, latest.at, latest.how) }
  const open = state.open
  if (open === null || open.name !== msg.name) return [state, []]
  const full = msg.entries.length >= msg.limit
  const messages = mergeEntries(open.messages, msg.entries)
  if (msg.older) {
    return [{ ...state, open: { ...open, messages, hasOlder: full, loadingOlder: false } }, []]
  }
  // A refresh keeps what paging found out; the first page decides whether there is more.
  return [{ ...state, open: { ...open, messages, loaded: true, hasOlder: open.loaded ? open.hasOlder : full } }, []]
}

const onSent = (state: ChatState, msg: Extract<Msg, { _tag: "Sent" }>): Update => {
  const { message } = msg
  const entry: HistoryEntry = {
    id: message.id,
    conversation: message.to,
    direction: "out",
    from: message.from,
    to: message.to,
    sequence: message.sequence,
    sentAt: message.sentAt,
    text: state.open?.pending.find((pending) => pending.localId === msg.localId)?.text ?? "",
    status: message.status,
    read: true
  }
  const open = state.open
  const conversations = touchConversation(state.conversations, message.to, (summary) => summary, message.sentAt)
  if (open === null || open.name !== message.to) return [{ ...state, conversations }, []]
  return [{
    ...state,
    conversations,
    open: {
      ...open,
      pending: open.pending.filter((pending) => pending.localId !== msg.localId),
      messages: mergeEntries(open.messages, [entry])
    }
  }, []]
}

const onSendFailed = (state: ChatState, msg: Extract<Msg, { _tag: "SendFailed" }>): Update => {
  const open = state.open
  const withoutPending = open === null
    ? state
    : { ...state, open: { ...open, pending: open.pending.filter((pending) => pending.localId !== msg.localId) } }
  // The text is not lost: it comes back into an empty input line, to fix or send again.
  const restored = withoutPending.input.text === "" ? setInput(withoutPending, msg.text) : withoutPending
  return [explainFailure(restored, msg, "not sent: "), []]
}

/** The chat's reducer: the next state for `msg`, and the commands to run. */
export const update = (state: ChatState, msg: Msg): Update => {
  switch (msg._tag) {
    case "Key":
      return onKey(state, msg.key)
    case "Resize":
      return [{ ...state, size: msg.size }, []]
    case "Connected": {
      const connected: ChatState = { ...state, clock: msg.now, node: { ...state.node, status: msg.status, error: null } }
      const [watched, saves] = followNetwork(connected, msg.status, msg.now)
      if (msg.status.username === null) {
        return [{ ...watched, phase: { _tag: "ChooseName", checking: null, waitingForNetwork: false } }, saves]
      }
      const [next, cmds] = enterChat(watched)
      return [next, [...cmds, ...saves]]
    }
    case "StartFailed":
      return [{ ...state, phase: { _tag: "Fatal", message: msg.message } }, []]
    case "Refresh": {
      const status = state.node.status
      // A node that answered before the clock was known starts its wait now.
      const timed: ChatState = {
        ...state,
        clock: msg.now,
        joiningSince: state.joiningSince ?? (status !== null && !networkReady(status) ? msg.now : null)
      }
      const next = checkJoinTimeout(timed)
      return [next, refresh(next)]
    }
    case "StatusLoaded": {
      const [watched, saves] = followNetwork({
        ...state,
        node: { ...state.node, status: msg.status, error: null },
        ...(msg.show ? { panel: statusPanel(msg.status, state.clock) } : {})
      }, msg.status, state.clock)
      const phase = watched.phase
      const ready = networkReady(msg.status)
      // The node kept trying while the choice was on screen, and got there: back to the name.
      if (phase._tag === "JoinTimedOut" && ready) {
        return [{
          ...setInput(watched, ""),
          phase: { _tag: "ChooseName", checking: null, waitingForNetwork: false },
          notice: { text: "your node reached the network: choose your name", tone: "success" }
        }, saves]
      }
      // A name typed before the node reached the network is checked as soon as it has.
      if (phase._tag === "ChooseName" && phase.waitingForNetwork && phase.checking !== null && ready) {
        const [next, cmds] = checkName({ ...watched, notice: null }, phase.checking)
        return [next, [...cmds, ...saves]]
      }
      return [watched, saves]
    }
    case "StatusFailed":
      return [{ ...state, node: { ...state.node, error: msg.message } }, []]
    case "InboxLoaded": {
      const openName = state.open?.name
      // The open conversation is being read: whatever arrived is read as soon as it is shown.
      const conversations = msg.conversations.map((summary) =>
        summary.conversation === openName ? { ...summary, unread: 0 } : summary
      )
      const unreadOpen = msg.conversations.some((summary) => summary.conversation === openName && summary.unread > 0)
      return [{ ...state, conversations }, unreadOpen && openName !== undefined ? [{ _tag: "MarkRead", name: openName }] : []]
    }
    case "HistoryLoaded":
      return onHistory(state, msg)
    case "Event": {
      const alert = alertFor(state, msg.event, msg.at)
      const [next, cmds] = onEvent(state, msg.event, msg.at)
      return alert === null
        ? [next, cmds]
        : [{ ...next, alerts: { ...next.alerts, lastAt: msg.at } }, [...cmds, { _tag: "Alert", ...alert }]]
    }
    case "EventsConnected":
      return [{ ...state, node: { ...state.node, live: true } }, refresh(state)]
    case "EventsLost":
      return [{ ...state, node: { ...state.node, live: false } }, []]
    case "Sent":
      return onSent(state, msg)
    case "SendFailed":
      return onSendFailed(state, msg)
    case "NameChecked": {
      if (state.phase._tag !== "ChooseName" || state.phase.checking !== msg.name) return [state, []]
      if (msg.free) return [{ ...state, notice: info(`"${msg.name}" is free: claiming it…`) }, [{ _tag: "Register", name: msg.name }]]
      return [{
        ...state,
        phase: { _tag: "ChooseName", checking: null, waitingForNetwork: false },
        notice: error(`"${msg.name}" is already taken by someone else: choose another name`)
      }, []]
    }
    case "Registered": {
      const status = state.node.status
      const address = status?.listen ?? msg.answer.address
      const registered: ChatState = {
        ...state,
        node: { ...state.node, status: status === null ? null : { ...status, username: msg.answer.username } },
        notice: { text: `you are ${msg.answer.username}`, tone: "success" },
        panel: {
          title: `Welcome, ${msg.answer.username}!`,
          lines: [
            `Your address is ${address}: a friend joins your network by typing it when Peerchat asks,`,
            `or with: peerchat chat --bootstrap ${address}`,
            `Others can name exactly you as ${nameRefOf(msg.answer)} (/id shows it again).`,
            "Start a conversation with /chat NAME; /help lists every command.",
            ...(msg.answer.warning === undefined ? [] : [`⚠ ${msg.answer.warning}`])
          ]
        }
      }
      const [next, cmds] = enterChat(registered)
      return [next, [...cmds, { _tag: "LoadStatus", show: false }]]
    }
    case "WhoisAnswered": {
      const known: ChatState = { ...state, known: remember(state.known, msg.answer.username), notice: null }
      if (!msg.open) return [{ ...known, panel: whoisPanel(msg.answer) }, []]
      return msg.answer.username === self(state)
        ? [{ ...known, notice: error(`"${msg.answer.username}" is you: pick someone else to talk to`) }, []]
        : openConversation(known, msg.answer.username, msg.exact === true ? nameRefOf(msg.answer) : msg.answer.username)
    }
    case "IdLoaded":
      return [{ ...state, notice: null, panel: idPanel(msg.id) }, []]
    case "Verified": {
      const { answer } = msg
      const contact = answer.contact.username
      return [{
        ...state,
        known: remember(state.known, contact),
        notice: answer.confirmed ? { text: `${nameRefOf(answer.contact)} is verified`, tone: "success" } : null,
        panel: { title: `Safety number with ${contact}`, lines: verificationPanelLines(answer, `/verify ${contact} --confirm`) }
      }, []]
    }
    case "PeersLoaded":
      return [{
        ...state,
        notice: null,
        panel: {
          title: `Peers (${msg.peers.length})`,
          lines: msg.peers.length === 0
            ? ["no peers yet: a friend can join through your address, or restart with their address"]
            : msg.peers.map((peer) => `${peer.address.padEnd(22)} node ${peer.nodeId.slice(0, 16)}…`)
        }
      }, []]
    case "Failed": {
      const phase = state.phase
      if ((msg.action === "check" || msg.action === "register") && phase._tag === "ChooseName") {
        return [explainFailure({ ...state, phase: { ...phase, checking: null, waitingForNetwork: false } }, msg, ""), []]
      }
      return [explainFailure(state, msg, ""), []]
    }
  }
}
