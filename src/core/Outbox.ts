/**
 * The outbox: messages waiting to be delivered, one FIFO queue per recipient,
 * bounded per recipient and in total. A full outbox refuses a new message
 * with a typed error instead of dropping anything, so the sender always knows
 * what was accepted. The structure is persistent (effect `HashMap` and
 * `Chunk`): an operation copies O(log n) nodes, never the whole outbox, and
 * old versions stay valid. Every item carries a global enqueue sequence
 * number; it defines both the FIFO order inside a queue and the fair order
 * of recipients (the one whose head has waited longest comes first).
 *
 * @since 0.1.0
 */
import { Chunk, Either, HashMap, Schema } from "effect"

/** Limits of an outbox. */
export interface OutboxConfig {
  /** Most items pending for one recipient. */
  readonly maxPerRecipient: number
  /** Most items pending in the whole outbox. */
  readonly maxTotal: number
}

/** Default limits: 1,000 items per recipient, 10,000 in total. */
export const defaultOutboxConfig: OutboxConfig = { maxPerRecipient: 1000, maxTotal: 10_000 }

/** One queued item with its id and the global sequence number it was enqueued with (internal). */
export interface QueuedEntry<A> {
  readonly id: string
  readonly sequence: number
  readonly item: A
}

/**
 * One recipient's queue (internal; use the functions below). Removal anywhere but the head only forgets the id
 * in `live` and leaves a tombstone in `entries`, so it costs O(log n)
 * instead of rebuilding the chunk; an entry is live when `live` maps its id
 * to its own sequence (a re-enqueued id gets a new sequence, so its old
 * tombstone stays dead). Invariants: the head of `entries` is live, and
 * `entries` holds at most `2 * live.size + TOMBSTONE_SLACK` entries.
 */
export interface RecipientQueue<A> {
  readonly entries: Chunk.Chunk<QueuedEntry<A>>
  readonly live: HashMap.HashMap<string, number>
}

/**
 * Pending messages per recipient. Bounds: at most `config.maxTotal` items in
 * total and `config.maxPerRecipient` per recipient; with tombstones, the
 * entries held are at most twice the items plus a small constant per
 * recipient.
 */
export interface Outbox<A> {
  readonly config: OutboxConfig
  readonly queues: HashMap.HashMap<string, RecipientQueue<A>>
  readonly size: number
  readonly nextSequence: number
}

/** Tombstones tolerated beyond the live count before a queue is compacted. */
const TOMBSTONE_SLACK = 8

/** Why an item was refused: the recipient's queue or the whole outbox is full. */
export class OutboxFull extends Schema.TaggedError<OutboxFull>()("OutboxFull", {
  recipient: Schema.String,
  reason: Schema.Literal("RecipientQuota", "TotalQuota"),
  limit: Schema.Number
}) {
  override get message(): string {
    switch (this.reason) {
      case "RecipientQuota":
        return `outbox refused a message for ${JSON.stringify(this.recipient)}: ${this.limit} messages are already pending for this recipient`
      case "TotalQuota":
        return `outbox refused a message for ${JSON.stringify(this.recipient)}: ${this.limit} messages are already pending in total`
    }
  }
}

const checkLimit = (name: string, value: number): void => {
  if (!Number.isSafeInteger(value) || value < 1) {
    throw new RangeError(`${name} must be a positive integer, got ${value}`)
  }
}

/** An empty outbox; throws a RangeError for a non-positive or non-integer limit (a programming error). */
export const makeOutbox = <A>(config: Partial<OutboxConfig> = {}): Outbox<A> => {
  const full: OutboxConfig = { ...defaultOutboxConfig, ...config }
  checkLimit("maxPerRecipient", full.maxPerRecipient)
  checkLimit("maxTotal", full.maxTotal)
  return { config: full, queues: HashMap.empty(), size: 0, nextSequence: 0 }
}

const isLive = <A>(queue: RecipientQueue<A>, entry: QueuedEntry<A>): boolean => {
  const sequence = HashMap.get(queue.live, entry.id)
  return sequence._tag === "Some" && sequence.value === entry.sequence
}

/** The live head entry of a queue (the invariant keeps it at index 0). */
const headEntry = <A>(queue: RecipientQueue<A>): QueuedEntry<A> | undefined => {
  const head = Chunk.head(queue.entries)
  return head._tag === "Some" ? head.value : undefined
}

/**
 * Queues `item` (identified by `id`) for `recipient`. Enqueuing an id that is
 * already pending for this recipient returns the same outbox unchanged, so
 * retries are harmless; otherwise a full recipient queue or a full outbox
 * refuses with `OutboxFull`.
 */
export const enqueue = <A>(
  outbox: Outbox<A>,
  recipient: string,
  id: string,
  item: A
): Either.Either<Outbox<A>, OutboxFull> => {
  const existing = HashMap.get(outbox.queues, recipient)
  const queue: RecipientQueue<A> =
    existing._tag === "Some" ? existing.value : { entries: Chunk.empty(), live: HashMap.empty() }
  if (HashMap.has(queue.live, id)) return Either.right(outbox)
  if (HashMap.size(queue.live) >= outbox.config.maxPerRecipient) {
    return Either.left(
      new OutboxFull({ recipient, reason: "RecipientQuota", limit: outbox.config.maxPerRecipient })
    )
  }
  if (outbox.size >= outbox.config.maxTotal) {
    return Either.left(new OutboxFull({ recipient, reason: "TotalQuota", limit: outbox.config.maxTotal }))
  }
  const sequence = outbox.nextSequence
  const updated: RecipientQueue<A> = {
    entries: Chunk.append(queue.entries, { id, sequence, item }),
    live: HashMap.set(queue.live, id, sequence)
  }
  return Either.right({
    config: outbox.config,
    queues: HashMap.set(outbox.queues, recipient, updated),
    size: outbox.size + 1,
    nextSequence: sequence + 1
  })
}

/** The oldest item pending for `recipient`, or `undefined` when there is none. */
export const peek = <A>(outbox: Outbox<A>, recipient: string): A | undefined => {
  const queue = HashMap.get(outbox.queues, recipient)
  if (queue._tag === "None") return undefined
  return headEntry(queue.value)?.item
}

/**
 * Forgets the item `id` pending for `recipient` (delivered or acknowledged),
 * wherever it sits in the queue. Returns the same outbox when the id is not
 * pending, so a duplicate acknowledgement is harmless.
 */
export const removeById = <A>(outbox: Outbox<A>, recipient: string, id: string): Outbox<A> => {
  const existing = HashMap.get(outbox.queues, recipient)
  if (existing._tag === "None" || !HashMap.has(existing.value.live, id)) return outbox
  const queue = existing.value
  const live = HashMap.remove(queue.live, id)
  const liveCount = HashMap.size(live)
  if (liveCount === 0) {
    return { ...outbox, queues: HashMap.remove(outbox.queues, recipient), size: outbox.size - 1 }
  }
  let next: RecipientQueue<A> = { entries: queue.entries, live }
  if (Chunk.size(next.entries) > 2 * liveCount + TOMBSTONE_SLACK) {
    // Too many tombstones: rebuild from the live entries (O(maxPerRecipient), amortized over the removals).
    next = { entries: Chunk.filter(next.entries, (entry) => isLive(next, entry)), live }
  } else {
    // Restore the invariant that the head is live; the dead entries skipped are bounded by the slack rule.
    let entries = next.entries
    for (;;) {
      const head = Chunk.head(entries)
      if (head._tag === "None" || isLive(next, head.value)) break
      entries = Chunk.drop(entries, 1)
    }
    next = { entries, live }
  }
  return { ...outbox, queues: HashMap.set(outbox.queues, recipient, next), size: outbox.size - 1 }
}

/**
 * Recipients with pending items, fairest first: ordered by how long their
 * oldest pending item has waited (its enqueue sequence), so a sender that
 * serves them in this order cannot starve anyone. O(r log r) for r recipients.
 */
export const recipients = <A>(outbox: Outbox<A>): ReadonlyArray<string> => {
  const heads: Array<{ readonly recipient: string; readonly sequence: number }> = []
  for (const [recipient, queue] of outbox.queues) {
    const head = headEntry(queue)
    if (head !== undefined) heads.push({ recipient, sequence: head.sequence })
  }
  heads.sort((a, b) => a.sequence - b.sequence)
  return heads.map((head) => head.recipient)
}

/** Items pending for `recipient`, oldest first. */
export const pendingFor = <A>(outbox: Outbox<A>, recipient: string): ReadonlyArray<A> => {
  const existing = HashMap.get(outbox.queues, recipient)
  if (existing._tag === "None") return []
  const queue = existing.value
  const items: Array<A> = []
  for (const entry of queue.entries) if (isLive(queue, entry)) items.push(entry.item)
  return items
}

/** Number of items pending for `recipient`. */
export const pendingCount = <A>(outbox: Outbox<A>, recipient: string): number => {
  const existing = HashMap.get(outbox.queues, recipient)
  return existing._tag === "Some" ? HashMap.size(existing.value.live) : 0
}

/** Number of items pending in the whole outbox (at most `config.maxTotal`). */
export const size = <A>(outbox: Outbox<A>): number => outbox.size
