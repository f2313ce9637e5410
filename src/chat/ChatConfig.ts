/**
 * The tunables of message delivery and relaying: how often and how patiently
 * the sender retries, how long relays keep mail, how often they push it,
 * re-replicate it and how often a user pulls its mailbox. The defaults follow
 * the chat issue (TTL 14 days, hourly re-replication); simulations shorten
 * them through `ChatConfig.layer`.
 *
 * @since 0.1.0
 */
import { Context, Duration, Layer } from "effect"
import type { BackoffPolicy } from "../node/NodeConfig.js"

/** Everything delivery can be tuned with; see `ChatConfig.defaults`. */
export interface ChatConfigShape {
  /** Retries of an outbox entry (recipient unreachable, no relay accepted it). */
  readonly sendRetry: BackoffPolicy
  /** Longest the sender sleeps between passes (it wakes sooner for a send or the earliest due retry). */
  readonly senderPollInterval: Duration.Duration
  /** Recipients the sender works on at once (messages to one recipient go in order). */
  readonly senderConcurrency: number
  /** Outbox entries taken per pass of the sender. */
  readonly senderBatch: number
  /** How long relays keep mail before dropping it. */
  readonly mailTtl: Duration.Duration
  /**
   * How long a relay keeps mail for a user key under which it holds no
   * record (nobody it knows holds that name: junk, or a recipient whose
   * record has not reached it yet). Such mail gets its full `mailTtl` back
   * as soon as a record for the key is stored at the relay.
   */
  readonly junkMailTtl: Duration.Duration
  /** How often a relay tries to push held mail to its recipient. */
  readonly relayPushInterval: Duration.Duration
  /** How often a relay copies held mail to the current k closest nodes of its recipient. */
  readonly mailReplicationInterval: Duration.Duration
  /** How often a user pulls its mailbox from the k closest nodes of its user key (also at start). */
  readonly mailboxFetchInterval: Duration.Duration
  /** How long `send --wait` waits for the delivery receipt by default. */
  readonly deliveryWaitTimeout: Duration.Duration
  /** How long a looked-up sender record is reused to check further messages from that sender. */
  readonly senderRecordCacheTtl: Duration.Duration
  /** Most sender records cached. */
  readonly senderRecordCacheSize: number
  /**
   * Relays among the recipient's k closest (found over disjoint paths) that
   * must confirm they hold a message before it counts as "stored-offline"
   * (all of them when fewer are known), so one relay that lies cannot
   * swallow it.
   */
  readonly minRelayConfirmations: number
  /**
   * How often a message stored offline is tried again directly (and stored
   * again at the relays then closest, which keep one copy per id) until its
   * receipt arrives or the mail lifetime ends.
   */
  readonly storedOfflineRecheck: Duration.Duration
}

/** The configuration of message delivery. */
export class ChatConfig extends Context.Tag("peerchat/ChatConfig")<ChatConfig, ChatConfigShape>() {
  /**
   * Retries 1 s, 2 s, 4 s … capped at 5 min with 50 % jitter; the sender
   * wakes for each send and each due retry, at least every 30 s, and serves
   * 8 recipients at once, 64 entries a pass;
   * mail lives 14 days (6 hours at a relay that holds no record of its
   * recipient's name), is pushed every 30 s and re-replicated hourly; the
   * mailbox is pulled every 5 minutes; `--wait` waits 30 s; sender records
   * are reused for 5 minutes, at most 1,000 of them; a message counts as
   * stored offline once 3 relays hold it, and is retried every 10 minutes
   * until its receipt arrives.
   */
  static readonly defaults: ChatConfigShape = {
    sendRetry: { initial: Duration.seconds(1), factor: 2, max: Duration.minutes(5), jitter: 0.5 },
    senderPollInterval: Duration.seconds(30),
    senderConcurrency: 8,
    senderBatch: 64,
    mailTtl: Duration.days(14),
    junkMailTtl: Duration.hours(6),
    relayPushInterval: Duration.seconds(30),
    mailReplicationInterval: Duration.hours(1),
    mailboxFetchInterval: Duration.minutes(5),
    deliveryWaitTimeout: Duration.seconds(30),
    senderRecordCacheTtl: Duration.minutes(5),
    senderRecordCacheSize: 1000,
    minRelayConfirmations: 3,
    storedOfflineRecheck: Duration.minutes(10)
  }

  /** The defaults with `overrides` applied. */
  static readonly make = (overrides: Partial<ChatConfigShape> = {}): ChatConfigShape => {
    const config = { ...ChatConfig.defaults, ...overrides }
    for (const name of ["senderConcurrency", "senderBatch", "senderRecordCacheSize", "minRelayConfirmations"] as const) {
      if (!Number.isSafeInteger(config[name]) || config[name] < 1) {
        throw new RangeError(`ChatConfig.${name} must be a positive integer, got ${config[name]}`)
      }
    }
    return config
  }

  /** A layer with the defaults and `overrides`. */
  static readonly layer = (overrides: Partial<ChatConfigShape> = {}): Layer.Layer<ChatConfig> =>
    Layer.sync(ChatConfig, () => ChatConfig.make(overrides))
}
