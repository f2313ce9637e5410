/**
 * What the terminal chat shows, as a pure function of its state: `view`
 * turns a `ChatState` into the rows of the screen, each a list of styled
 * segments exactly as wide as the terminal, so the UI component only paints
 * them. The layout (status bar, conversation list beside the conversation,
 * an optional panel of command output, a notice line and the input line) and
 * the lines of a conversation (day separators, times, senders, wrapped text,
 * the status of each sent message) are computed here, and the reducer uses
 * the same functions to scroll. Every text that came from another user goes
 * through `displayLines`, so it cannot carry terminal control sequences.
 * The status bar counts the live peers (heard from in the last 2 minutes),
 * the first-run setup says what the node tries while it joins, and a
 * conversation's title says when its contact was last reached.
 */
import type { HistoryEntry, MessageStatus } from "../../chat/ChatStore.js"
import { formatAddress } from "../../core/Contact.js"
import type { BootstrapState, NodeStatus } from "../../node/Control.js"
import type { ChatState, OpenConversation, Panel, PendingMessage } from "./ChatState.js"
import { livePeersOf, networkReady, reachOf, reachText } from "./Presence.js"
import {
  charWidth,
  displayLines,
  displayWidth,
  fitWidth,
  fixWidth,
  graphemes,
  nextClusterEnd,
  wrapLine
} from "./Text.js"
import { formatClock, formatLocalDay, printableText } from "./PlainText.js"

/** How a segment is painted. */
export type Style =
  | "plain"
  | "dim"
  | "bold"
  | "bar"
  | "barGood"
  | "barWarn"
  | "barBad"
  | "error"
  | "success"
  | "warning"
  | "selected"
  | "unread"
  | "me"
  | "peer"
  | "cursor"
  | "title"

/** A run of text in one style. */
export interface Segment {
  readonly text: string
  readonly style: Style
}

/** One screen row: segments whose widths add up to the terminal's width. */
export type Row = ReadonlyArray<Segment>

/** The smallest terminal the chat lays out in; a smaller one gets a one-line request to enlarge it. */
export const MIN_COLUMNS = 40
/** @see MIN_COLUMNS */
export const MIN_ROWS = 10

/** Where the parts of the screen go for a terminal of `columns` × `rows`. */
export interface Layout {
  readonly sidebarWidth: number
  readonly mainWidth: number
  /** Rows of the conversation list and the conversation (including the conversation's title row). */
  readonly bodyHeight: number
  /** Rows of the panel, including its title row (0 without a panel). */
  readonly panelHeight: number
}

/** A panel's lines as the screen shows them: made printable and wrapped to `columns` (after a one-column margin). */
export const panelLines = (panel: Panel, columns: number): ReadonlyArray<string> =>
  panel.lines.flatMap((line) => wrapLine(printableText(line), Math.max(1, columns - 1)))

/** The layout for `state`'s terminal size and panel. */
export const layoutOf = (state: Pick<ChatState, "size" | "panel">): Layout => {
  const columns = Math.max(MIN_COLUMNS, state.size.columns)
  const rows = Math.max(MIN_ROWS, state.size.rows)
  const sidebarWidth = Math.min(24, Math.max(14, Math.floor(columns / 5)))
  // Status bar, notice and input take three rows; the panel takes at most half of the rest, and on a small
  // terminal all but two rows of it (a panel scrolls, but two lines at a time would be hard to read).
  const available = rows - 3
  const panelHeight = state.panel === null
    ? 0
    : Math.min(panelLines(state.panel, columns).length + 1, Math.max(Math.min(available - 2, 6), Math.floor(available / 2)))
  return { sidebarWidth, mainWidth: columns - sidebarWidth - 1, bodyHeight: available - panelHeight, panelHeight }
}

/**
 * How far the panel of `state` scrolls: the lines it has, the lines it shows
 * at once, and the first line shown (its `scroll`, kept within the lines
 * after a resize).
 */
export const panelWindow = (
  state: Pick<ChatState, "size" | "panel">
): { readonly total: number; readonly room: number; readonly first: number; readonly maxFirst: number } => {
  const panel = state.panel
  if (panel === null) return { total: 0, room: 0, first: 0, maxFirst: 0 }
  const total = panelLines(panel, Math.max(MIN_COLUMNS, state.size.columns)).length
  const room = Math.max(1, layoutOf(state).panelHeight - 1)
  const maxFirst = Math.max(0, total - room)
  return { total, room, first: Math.min(Math.max(0, panel.scroll ?? 0), maxFirst), maxFirst }
}

/** Rows of messages the conversation pane shows (its first row is the title). */
export const messageRows = (layout: Layout): number => Math.max(1, layout.bodyHeight - 1)

const segment = (text: string, style: Style = "plain"): Segment => ({ text, style })

/** Pads (or cuts) a row to exactly `width` columns. */
const fitRow = (row: Row, width: number): Row => {
  const out: Array<Segment> = []
  let used = 0
  for (const part of row) {
    if (used >= width) break
    const room = width - used
    const w = displayWidth(part.text)
    if (w <= room) {
      out.push(part)
      used += w
    } else {
      const cut = fixWidth(part.text, room)
      out.push(segment(cut, part.style))
      used += displayWidth(cut)
    }
  }
  if (used < width) out.push(segment(" ".repeat(width - used)))
  return out
}

/** Human words for a message status. */
export const statusLabel = (status: MessageStatus | "sending"): string => {
  switch (status) {
    case "sending":
      return "sending…"
    case "queued":
      return "queued"
    case "stored-offline":
      return "stored offline"
    case "delivered":
      return "delivered"
    case "received":
      return ""
  }
}

const statusStyle = (status: MessageStatus | "sending"): Style =>
  status === "delivered" ? "success" : status === "stored-offline" ? "warning" : "dim"

/** Width of the `HH:MM ` column that starts each message. */
const TIME_COLUMN = 6

/** The rows of one message: time, sender, text wrapped under the time column, then its status. */
const messageBlock = (
  item: { readonly time: string; readonly from: string; readonly mine: boolean; readonly text: string; readonly status: MessageStatus | "sending" },
  width: number
): ReadonlyArray<Row> => {
  const name = printableText(item.from)
  const head = `${name}: `
  const textWidth = Math.max(8, width - TIME_COLUMN)
  const rows: Array<Row> = []
  let first = true
  for (const line of displayLines(item.text)) {
    // The first line starts after the sender's name; the rest of the text wraps under the time column.
    const firstWidth = first ? Math.max(4, textWidth - displayWidth(head)) : textWidth
    const [top = "", ...rest] = wrapLine(line, firstWidth)
    const wrapped = rest.length === 0 ? [top] : [top, ...wrapLine(rest.join(" "), textWidth)]
    for (const piece of wrapped) {
      rows.push(
        first
          ? [segment(`${item.time} `, "dim"), segment(name, item.mine ? "me" : "peer"), segment(": "), segment(piece)]
          : [segment(" ".repeat(TIME_COLUMN)), segment(piece)]
      )
      first = false
    }
  }
  const label = statusLabel(item.status)
  if (label !== "") {
    const tag = `[${label}]`
    const last = rows[rows.length - 1] ?? []
    const used = last.reduce((sum, part) => sum + displayWidth(part.text), 0)
    if (used + 1 + displayWidth(tag) <= width) {
      rows[rows.length - 1] = [...last, segment(" "), segment(tag, statusStyle(item.status))]
    } else {
      rows.push([segment(" ".repeat(Math.max(0, width - displayWidth(tag)))), segment(tag, statusStyle(item.status))])
    }
  }
  return rows
}

const daySeparator = (day: string, width: number): Row => {
  const label = `── ${day} `
  return [segment(label + "─".repeat(Math.max(0, width - displayWidth(label))), "dim")]
}

const entryBlock = (entry: HistoryEntry, width: number) =>
  messageBlock(
    { time: formatClock(entry.sentAt), from: entry.from, mine: entry.direction === "out", text: entry.text, status: entry.status },
    width
  )

const pendingBlock = (pending: PendingMessage, self: string, width: number) =>
  messageBlock({ time: "--:--", from: self, mine: true, text: pending.text, status: "sending" }, width)

/**
 * The last `wanted` rows of a conversation (all of them with `Infinity`),
 * oldest first, computed from the newest message back so a long history
 * costs only what is shown. Messages waiting for `send` to return come last.
 */
export const conversationLines = (
  conversation: OpenConversation,
  self: string,
  width: number,
  wanted: number
): ReadonlyArray<Row> => {
  const blocks: Array<ReadonlyArray<Row>> = []
  let count = 0
  for (let i = conversation.pending.length - 1; i >= 0 && count < wanted; i--) {
    const pending = conversation.pending[i]
    if (pending === undefined) continue
    const block = pendingBlock(pending, self, width)
    blocks.push(block)
    count += block.length
  }
  const { messages } = conversation
  for (let i = messages.length - 1; i >= 0 && count < wanted; i--) {
    const entry = messages[i]
    if (entry === undefined) continue
    const block = entryBlock(entry, width)
    const previous = messages[i - 1]
    const day = formatLocalDay(entry.sentAt)
    // A day separator above the first message of each day (and above the oldest one loaded).
    const withDay = previous === undefined || formatLocalDay(previous.sentAt) !== day ? [daySeparator(day, width), ...block] : block
    blocks.push(withDay)
    count += withDay.length
  }
  const rows = blocks.reverse().flat()
  return rows.length > wanted ? rows.slice(rows.length - wanted) : rows
}

/** The rows one message adds at the bottom of a conversation (for keeping a scrolled view in place). */
export const entryHeight = (entry: HistoryEntry, width: number): number => entryBlock(entry, width).length

// ---------------------------------------------------------------------------
// The parts of the screen
// ---------------------------------------------------------------------------

/**
 * What the status bar says about the network, and how worrying it is, for
 * `peers` live peers. A new network's first node is Standalone only until
 * someone joins it (then Joined).
 */
export const networkHealth = (
  bootstrap: BootstrapState,
  peers: number
): { readonly text: string; readonly level: "good" | "warn" | "bad" } => {
  switch (bootstrap._tag) {
    case "Standalone":
      return peers === 0
        ? { text: "new network, waiting for friends", level: "warn" }
        : { text: "network ok", level: "good" }
    case "Joining":
      if (peers > 0) return { text: "joining…", level: "warn" }
      return bootstrap.lastError === null
        ? { text: "joining…", level: "warn" }
        : { text: `no peers reachable (attempt ${bootstrap.attempts})`, level: "bad" }
    case "Joined":
      return peers === 0 ? { text: "no peers reachable", level: "bad" } : { text: "network ok", level: "good" }
  }
}

const statusBar = (state: ChatState, width: number): Row => {
  const parts: Array<Segment> = [segment(" peerchat ", "barGood")]
  const node = state.node
  if (node.status === null) {
    parts.push(node.error === null ? segment(" │ starting…", "bar") : segment(" │ node unreachable", "barBad"))
  } else {
    const { status } = node
    const live = livePeersOf(status)
    const health = networkHealth(status.bootstrap, live)
    parts.push(
      segment(` │ ${status.username ?? "(no name yet)"} │ ${status.listen} │ ${live} ${live === 1 ? "peer" : "peers"} │ `, "bar"),
      segment(health.text, health.level === "good" ? "barGood" : health.level === "warn" ? "barWarn" : "barBad")
    )
    // Another key claims the user's own name: people who look it up see a conflict (details in /status).
    if (status.nameWarning !== undefined) parts.push(segment(" │ name contested: /status", "barBad"))
    if (node.error !== null) parts.push(segment(" │ node unreachable", "barBad"))
    else if (state.phase._tag === "Chat" && !node.live) parts.push(segment(" │ reconnecting…", "barWarn"))
  }
  // The bar spans the whole row, padding included.
  return fitRow(parts, width).map((part) => (part.style === "plain" ? segment(part.text, "bar") : part))
}

const sidebarRows = (state: ChatState, width: number, height: number): ReadonlyArray<Row> => {
  const rows: Array<Row> = [fitRow([segment(" Conversations", "title")], width)]
  const openName = state.open?.name ?? null
  const names = state.conversations.map((summary) => ({ name: summary.conversation, unread: summary.unread }))
  // A conversation opened before its first message is listed too.
  if (openName !== null && !names.some((entry) => entry.name === openName)) names.unshift({ name: openName, unread: 0 })
  if (names.length === 0) rows.push(fitRow([segment(" (none yet)", "dim")], width))
  const room = height - 1
  // Keep the open conversation visible when the list is longer than the pane.
  const openIndex = names.findIndex((entry) => entry.name === openName)
  const start = openIndex >= room ? openIndex - room + 1 : 0
  for (const entry of names.slice(start, start + room)) {
    const badge = entry.unread > 0 ? ` (${entry.unread})` : ""
    const name = fitWidth(printableText(entry.name), Math.max(1, width - 1 - displayWidth(badge)))
    const style: Style = entry.name === openName ? "selected" : entry.unread > 0 ? "unread" : "plain"
    rows.push(fitRow([segment(` ${name}${badge}`, style)], width).map((part) => segment(part.text, style)))
  }
  while (rows.length < height) rows.push(fitRow([], width))
  return rows.slice(0, height)
}

const HOME_TEXT: ReadonlyArray<string> = [
  "",
  "  Open a conversation:  /chat NAME   (Tab completes names)",
  "  Switch conversations: Ctrl-N / Ctrl-P",
  "  Scroll:               PageUp / PageDown, ↑ / ↓",
  "  Every command:        /help",
  "  Leave:                /quit or Ctrl-C"
]

const mainRows = (state: ChatState, layout: Layout): ReadonlyArray<Row> => {
  const width = layout.mainWidth
  const height = layout.bodyHeight
  const open = state.open
  if (open === null) {
    const rows: Array<Row> = [fitRow([segment(" No conversation open", "title")], width)]
    for (const line of HOME_TEXT) rows.push(fitRow([segment(line, "dim")], width))
    while (rows.length < height) rows.push(fitRow([], width))
    return rows.slice(0, height)
  }
  const self = state.node.status?.username ?? "you"
  const visible = messageRows(layout)
  const lines = conversationLines(open, self, width, visible + open.scroll)
  const end = Math.max(0, lines.length - open.scroll)
  const shown = lines.slice(Math.max(0, end - visible), end)
  const atTop = lines.length < visible + open.scroll
  const hint = open.scroll > 0
    ? " · PgDn for newer"
    : atTop && open.hasOlder
    ? " · PgUp for older"
    : ""
  // A conversation opened for exactly one key says which; then when its contact was last reached.
  const title: Array<Segment> = [segment(` ${printableText(open.ref)}`, "title")]
  const reach = reachText(reachOf(state.reach, open.name), state.clock)
  title.push(segment(` · ${reach.text}`, reach.recent ? "success" : "dim"))
  if (!open.loaded) title.push(segment(" · loading…", "dim"))
  else if (open.loadingOlder) title.push(segment(" · loading older messages…", "dim"))
  else if (hint !== "") title.push(segment(hint, "dim"))
  const rows: Array<Row> = [fitRow(title, width)]
  if (open.loaded && open.messages.length === 0 && open.pending.length === 0) {
    rows.push(fitRow([segment(` No messages with ${printableText(open.name)} yet: type one and press Enter.`, "dim")], width))
  }
  // Short conversations sit at the bottom, next to the input line, as in any chat.
  const filler = visible - shown.length - (rows.length - 1)
  for (let i = 0; i < filler; i++) rows.push(fitRow([], width))
  for (const line of shown) rows.push(fitRow(line, width))
  return rows.slice(0, height)
}

/** Seconds, rounded up, from `from` to `to` (never negative). */
const secondsBetween = (from: number, to: number): number => Math.max(0, Math.ceil((to - from) / 1000))

/**
 * What the setup screen says about the node's way into the network: what it
 * tries (the addresses, the attempts, the last error, the next try) and how
 * long until the chat offers to change the address; or that it got there.
 */
export const joinLines = (
  state: Pick<ChatState, "node" | "bootstrap" | "clock" | "joiningSince" | "joinTimeoutMs">
): ReadonlyArray<string> => {
  const status: NodeStatus | null = state.node.status
  if (status === null) return []
  const live = livePeersOf(status)
  if (networkReady(status)) {
    return status.bootstrap._tag === "Standalone"
      ? ["Your node started a new network."]
      : [`Your node reached the network: ${live} ${live === 1 ? "peer" : "peers"}.`]
  }
  const bootstrap = status.bootstrap
  const addresses = (bootstrap._tag === "Joining" ? bootstrap.addresses : undefined) ??
    state.bootstrap?.map(formatAddress) ?? []
  const where = addresses.length === 0 ? "the peers it knew" : addresses.join(", ")
  const lines = [`Waiting for your node to reach the network through ${where}…`]
  if (bootstrap._tag === "Joining") {
    const next = bootstrap.nextAttemptAt !== null && state.clock !== null
      ? `; next try in ${secondsBetween(state.clock, bootstrap.nextAttemptAt)} s`
      : ""
    lines.push(
      bootstrap.lastError === null
        ? `Attempt ${bootstrap.attempts + 1} in progress.`
        : `${bootstrap.attempts} ${bootstrap.attempts === 1 ? "attempt" : "attempts"} so far, the last failed: ${bootstrap.lastError}${next}.`
    )
  }
  if (state.joiningSince !== null && state.clock !== null) {
    const waited = secondsBetween(state.joiningSince, state.clock)
    const left = secondsBetween(state.clock, state.joiningSince + state.joinTimeoutMs)
    lines.push(`Waiting ${waited} s; if nothing answers in ${left} s more, you can change the address.`)
  }
  return lines
}

const setupRows = (state: ChatState, width: number, height: number): ReadonlyArray<Row> => {
  const lines: Array<Segment> = []
  const address = state.node.status?.listen
  switch (state.phase._tag) {
    case "Starting":
      lines.push(segment(state.phase.message, "dim"))
      break
    case "ChooseNetwork":
      lines.push(
        segment("Welcome to Peerchat!", "title"),
        segment(""),
        segment("Peerchat has no servers: your computer runs a node, and nodes find each other."),
        segment(""),
        segment("To join a friend's network, type the address of their node (host:port),"),
        segment("for example 192.0.2.10:4242, and press Enter."),
        segment("To start a new network of your own, type  new  and press Enter."),
        segment(""),
        segment("Peerchat remembers your choice for the next start.", "dim")
      )
      break
    case "ChooseName":
      lines.push(
        segment("Choose your username", "title"),
        segment(""),
        segment("3 to 32 characters: a-z, 0-9, _ . and -. Others find you by it."),
        segment("")
      )
      if (address !== undefined) {
        lines.push(segment(`Your node is at ${address}: a friend joins your network through this address.`))
      }
      if (state.phase.checking !== null) {
        lines.push(segment(""), segment(`Checking whether "${state.phase.checking}" is free…`, "dim"))
      }
      {
        const join = joinLines(state)
        if (join.length > 0) lines.push(segment(""), ...join.map((line) => segment(line, "dim")))
      }
      break
    case "JoinTimedOut": {
      const status = state.node.status
      const bootstrap = status?.bootstrap
      const addresses = (bootstrap?._tag === "Joining" ? bootstrap.addresses : undefined) ??
        state.bootstrap?.map(formatAddress) ?? []
      const where = addresses.length === 0 ? "the network" : addresses.join(", ")
      lines.push(
        segment("Your node cannot reach the network", "warning"),
        segment(""),
        segment(`Nothing answered at ${where} in ${secondsBetween(0, state.joinTimeoutMs)} s.`)
      )
      if (bootstrap?._tag === "Joining" && bootstrap.lastError !== null) {
        lines.push(segment(
          `${bootstrap.attempts} ${bootstrap.attempts === 1 ? "attempt" : "attempts"}, the last failed: ${bootstrap.lastError}`,
          "dim"
        ))
      }
      lines.push(
        segment(""),
        segment("Check the address with your friend (their Peerchat shows it under /status) and that their node is running."),
        segment("")
      )
      if (state.bootstrap === null) {
        lines.push(
          segment("Your node runs in another terminal (peerchat start) or chat window, which started it; it keeps trying by itself."),
          segment("  r          keep waiting"),
          segment("To join through another address, stop it and run: peerchat start --bootstrap HOST:PORT")
        )
      } else {
        lines.push(
          segment("Type what to do, then Enter:"),
          segment("  r          try again"),
          segment("  c          change the address (or type the new one here: host:port)"),
          segment("  new        start a new network of your own instead"),
          segment(""),
          segment("Peerchat remembers an address only once your node has reached the network through it.", "dim")
        )
      }
      break
    }
    case "Fatal":
      lines.push(segment("Peerchat cannot start", "error"), segment(""))
      for (const line of wrapLine(printableText(state.phase.message), width - 4)) lines.push(segment(line))
      lines.push(segment(""), segment("Press Enter to quit.", "dim"))
      break
    case "Chat":
      break
  }
  const rows: Array<Row> = [fitRow([], width)]
  for (const line of lines) {
    for (const piece of wrapLine(line.text, width - 4)) rows.push(fitRow([segment("  "), segment(piece, line.style)], width))
  }
  while (rows.length < height) rows.push(fitRow([], width))
  return rows.slice(0, height)
}

const panelRows = (state: ChatState, layout: Layout, width: number): ReadonlyArray<Row> => {
  const panel = state.panel
  if (panel === null || layout.panelHeight === 0) return []
  const { first, maxFirst, room, total } = panelWindow(state)
  // A panel longer than its rows scrolls; the title says which lines are shown and how to see the rest.
  const position = maxFirst === 0
    ? "Esc closes"
    : `lines ${first + 1}–${Math.min(total, first + room)} of ${total} · ↑↓ PgUp PgDn scroll · Esc closes`
  const label = `── ${printableText(panel.title)} (${position}) `
  const rows: Array<Row> = [[segment(label + "─".repeat(Math.max(0, width - displayWidth(label))), "dim")]]
  const shown = panelLines(panel, width).slice(first, first + room)
  for (const line of shown) rows.push(fitRow([segment(` ${line}`)], width))
  return rows.map((row) => fitRow(row, width))
}

const noticeRow = (state: ChatState, width: number): Row => {
  const notice = state.notice
  if (notice === null) return fitRow([], width)
  const style: Style = notice.tone === "error"
    ? "error"
    : notice.tone === "warning"
    ? "warning"
    : notice.tone === "success"
    ? "success"
    : "dim"
  return fitRow([segment(` ${printableText(notice.text)}`, style)], width)
}

/** The prompt before the input: what Enter will do with the text. */
export const promptOf = (state: ChatState): string => {
  switch (state.phase._tag) {
    case "ChooseNetwork":
      return "network> "
    case "ChooseName":
      return "username> "
    case "JoinTimedOut":
      return "choice> "
    case "Chat":
      return state.open === null ? "> " : `${state.open.name}> `
    default:
      return "> "
  }
}

const inputRow = (state: ChatState, width: number): Row => {
  const prompt = promptOf(state)
  const { text, cursor } = state.input
  const room = Math.max(4, width - displayWidth(prompt) - 1)
  // The cursor sits on a whole grapheme cluster, as it moves (see ChatState).
  const atEnd = nextClusterEnd(text, cursor)
  const before = printableText(text.slice(0, cursor))
  const at = printableText(text.slice(cursor, atEnd)) || " "
  const after = printableText(text.slice(atEnd))
  // Scrolls horizontally so the cursor stays visible in long input.
  const chars = graphemes(before)
  let start = chars.length
  for (let used = 0; start > 0; start--) {
    const next = charWidth(chars[start - 1] ?? "")
    if (used + next > room - 1) break
    used += next
  }
  const shownBefore = chars.slice(start).join("")
  const afterRoom = Math.max(0, room - displayWidth(shownBefore) - displayWidth(at))
  return fitRow(
    [segment(prompt, "bold"), segment(shownBefore), segment(at, "cursor"), segment(fitWidth(after, afterRoom))],
    width
  )
}

/** The whole screen for `state`: exactly `rows` rows of exactly `columns` columns. */
export const view = (state: ChatState): ReadonlyArray<Row> => {
  const { columns, rows } = state.size
  if (columns < MIN_COLUMNS || rows < MIN_ROWS) {
    const width = Math.max(1, columns)
    const message = wrapLine(`Please enlarge the terminal to at least ${MIN_COLUMNS}×${MIN_ROWS}.`, width)
    return Array.from({ length: Math.max(1, rows) }, (_, i) => [segment(fixWidth(message[i] ?? "", width), "warning")])
  }
  const layout = layoutOf(state)
  const screen: Array<Row> = [statusBar(state, columns)]
  if (state.phase._tag === "Chat") {
    const side = sidebarRows(state, layout.sidebarWidth, layout.bodyHeight)
    const main = mainRows(state, layout)
    for (let i = 0; i < layout.bodyHeight; i++) {
      screen.push([...(side[i] ?? []), segment("│", "dim"), ...(main[i] ?? [])])
    }
  } else {
    screen.push(...setupRows(state, columns, layout.bodyHeight))
  }
  screen.push(...panelRows(state, layout, columns))
  screen.push(noticeRow(state, columns))
  screen.push(inputRow(state, columns))
  return screen
}

/** The screen as plain text, one string per row (for tests and debugging). */
export const screenText = (screen: ReadonlyArray<Row>): ReadonlyArray<string> =>
  screen.map((row) => row.map((part) => part.text).join(""))
