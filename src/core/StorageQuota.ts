/**
 * Storage quotas shared fairly (issue 12). A relay's mailboxes and a storer's
 * records are bounded, and a bound anyone can fill refuses everyone else. So
 * besides the bounds themselves, one sender can take only a fair share:
 *
 * - **Mail** is counted per mailbox and in total, and within both per sender
 *   key (the key of the postage, see `Mail.ts`) and per source (the address
 *   the mail came from). One key or one address holds at most
 *   max(1/8 of a mailbox's quota, a floor) of any one mailbox and 1/16 of
 *   the relay's total, so a flood from one key, or from one address with any
 *   number of keys, leaves room for everyone else's mail.
 * - **Records**: one signing key holds at most `maxNamesPerKey` names (rival
 *   claims included) at one storer, so filling a storer's bound takes
 *   `maxStoredRecords / maxNamesPerKey` keys and one name-claim proof of work
 *   per name.
 *
 * The decisions are pure: the stores count, these functions decide.
 *
 * @since 0.3.0
 */
import { Option } from "effect"

// ---------------------------------------------------------------------------
// Mail
// ---------------------------------------------------------------------------

/** The bounds of a relay's mailboxes (the fields of `ChatStoreConfig` they come from). */
export interface MailboxLimits {
  /** Most mails held for one recipient. */
  readonly mailboxMaxMessagesPerRecipient: number
  /** Most bytes held for one recipient. */
  readonly mailboxMaxBytesPerRecipient: number
  /** Most mails held for all recipients together. */
  readonly mailboxMaxMessagesTotal: number
  /** Most bytes held for all recipients together. */
  readonly mailboxMaxBytesTotal: number
  /** One sender key or one source holds at most 1/this of a mailbox's quotas (8). */
  readonly mailboxSenderShare: number
  /** One sender key or one source holds at most 1/this of the total quotas (16). */
  readonly mailboxTotalSenderShare: number
  /** The least number of mails one sender or source may hold in a mailbox, whatever the share says (16). */
  readonly mailboxMinSenderMessages: number
  /** The least number of bytes one sender or source may hold in a mailbox, whatever the share says. */
  readonly mailboxMinSenderBytes: number
}

/** Mails and bytes held. */
export interface MailUsage {
  readonly count: number
  readonly bytes: number
}

/** What a store holds that one new mail would add to. */
export interface MailHeld {
  /** In the new mail's mailbox. */
  readonly recipient: MailUsage
  /** In all mailboxes. */
  readonly total: MailUsage
  /** Of the new mail's sender key, in its mailbox and in all mailboxes; absent when the mail has no sender key. */
  readonly sender?: { readonly inMailbox: MailUsage; readonly total: MailUsage } | undefined
  /** Of the new mail's source, in its mailbox and in all mailboxes; absent when it is not counted per source. */
  readonly source?: { readonly inMailbox: MailUsage; readonly total: MailUsage } | undefined
}

/**
 * Which quota refused: the mailbox's, the total, or one sender key's or one
 * source's share of the mailbox or of the total.
 */
export type MailQuotaScope = "recipient" | "total" | "sender" | "source" | "senderTotal" | "sourceTotal"

/** A quota one more mail would break. */
export interface MailQuotaBreak {
  readonly scope: MailQuotaScope
  readonly measure: "messages" | "bytes"
  readonly limit: number
}

/** The most one sender key or one source may hold, per mailbox and in total. */
export interface FairShares {
  readonly mailbox: { readonly messages: number; readonly bytes: number }
  readonly total: { readonly messages: number; readonly bytes: number }
}

/**
 * One sender's (or one source's) share: max(quota / mailboxSenderShare, the
 * floor) of a mailbox, never more than the mailbox's quota; total / mailboxTotalSenderShare
 * of everything, never less than one mailbox's share.
 */
export const fairShares = (limits: MailboxLimits): FairShares => {
  const mailboxMessages = Math.min(
    limits.mailboxMaxMessagesPerRecipient,
    Math.max(Math.floor(limits.mailboxMaxMessagesPerRecipient / limits.mailboxSenderShare), limits.mailboxMinSenderMessages)
  )
  const mailboxBytes = Math.min(
    limits.mailboxMaxBytesPerRecipient,
    Math.max(Math.floor(limits.mailboxMaxBytesPerRecipient / limits.mailboxSenderShare), limits.mailboxMinSenderBytes)
  )
  return {
    mailbox: { messages: mailboxMessages, bytes: mailboxBytes },
    total: {
      messages: Math.min(
        limits.mailboxMaxMessagesTotal,
        Math.max(Math.floor(limits.mailboxMaxMessagesTotal / limits.mailboxTotalSenderShare), mailboxMessages)
      ),
      bytes: Math.min(
        limits.mailboxMaxBytesTotal,
        Math.max(Math.floor(limits.mailboxMaxBytesTotal / limits.mailboxTotalSenderShare), mailboxBytes)
      )
    }
  }
}

/**
 * The first quota that holding one more mail of `size` bytes would break, if
 * any. Checked in this order, messages before bytes each time: the sender's
 * and the source's share of the mailbox, the mailbox, the sender's and the
 * source's share of the total, the total. A share as large as the quota it
 * divides is not checked (the quota itself says it).
 */
export const mailboxQuotaBroken = (limits: MailboxLimits, held: MailHeld, size: number): Option.Option<MailQuotaBreak> => {
  const shares = fairShares(limits)
  const over = (
    usage: MailUsage | undefined,
    scope: MailQuotaScope,
    maxMessages: number,
    maxBytes: number,
    skipMessages = false,
    skipBytes = false
  ): Option.Option<MailQuotaBreak> => {
    if (usage === undefined) return Option.none()
    if (!skipMessages && usage.count + 1 > maxMessages) return Option.some({ scope, measure: "messages", limit: maxMessages })
    if (!skipBytes && usage.bytes + size > maxBytes) return Option.some({ scope, measure: "bytes", limit: maxBytes })
    return Option.none()
  }
  const perMailbox = [limits.mailboxMaxMessagesPerRecipient, limits.mailboxMaxBytesPerRecipient] as const
  const perTotal = [limits.mailboxMaxMessagesTotal, limits.mailboxMaxBytesTotal] as const
  const mailboxShare = (usage: MailUsage | undefined, scope: MailQuotaScope) =>
    over(
      usage,
      scope,
      shares.mailbox.messages,
      shares.mailbox.bytes,
      shares.mailbox.messages >= perMailbox[0],
      shares.mailbox.bytes >= perMailbox[1]
    )
  const totalShare = (usage: MailUsage | undefined, scope: MailQuotaScope) =>
    over(
      usage,
      scope,
      shares.total.messages,
      shares.total.bytes,
      shares.total.messages >= perTotal[0],
      shares.total.bytes >= perTotal[1]
    )
  return mailboxShare(held.sender?.inMailbox, "sender").pipe(
    Option.orElse(() => mailboxShare(held.source?.inMailbox, "source")),
    Option.orElse(() => over(held.recipient, "recipient", perMailbox[0], perMailbox[1])),
    Option.orElse(() => totalShare(held.sender?.total, "senderTotal")),
    Option.orElse(() => totalShare(held.source?.total, "sourceTotal")),
    Option.orElse(() => over(held.total, "total", perTotal[0], perTotal[1]))
  )
}

/** One sender key or one source, and how many mails it holds in a mailbox. */
export interface MailboxHolder {
  readonly by: "sender" | "source"
  readonly key: string
  readonly count: number
}

/** Orders holders largest first, then senders before sources, then by key: every store picks the same one. */
export const compareHolders = (a: MailboxHolder, b: MailboxHolder): number =>
  b.count - a.count || (a.by === b.by ? 0 : a.by === "sender" ? -1 : 1) || (a.key < b.key ? -1 : a.key > b.key ? 1 : 0)

/** The first of `holders` in `compareHolders`' order (the largest), in one pass; none when there are none. */
export const largestHolder = (holders: Iterable<MailboxHolder>): MailboxHolder | undefined => {
  let largest: MailboxHolder | undefined = undefined
  for (const holder of holders) if (largest === undefined || compareHolders(holder, largest) < 0) largest = holder
  return largest
}

/**
 * Max-min fairness for a full mailbox: the holder whose oldest mail a new
 * mail takes the place of, if any. Only when the mailbox's own quota is what
 * refuses (a share or the relay's total refuse as before), and only when the
 * largest holder would still hold more than the newcomer afterwards: the
 * newcomer (its sender key or its source, whichever holds more in the
 * mailbox, from `held`) holds h, and `largest.count > h + 1`. So a flood from
 * any number of keys and networks cannot keep a sender that holds less out
 * of a mailbox, and no two senders take turns evicting each other. Mail
 * without a sender key and a source claims no share: it is never evicted and
 * never evicts.
 */
export const mailboxPlaceFor = (
  broken: MailQuotaBreak,
  held: MailHeld,
  largest: MailboxHolder | undefined
): MailboxHolder | undefined => {
  if (broken.scope !== "recipient" || largest === undefined) return undefined
  if (held.sender === undefined && held.source === undefined) return undefined
  const newcomerHolds = Math.max(held.sender?.inMailbox.count ?? 0, held.source?.inMailbox.count ?? 0)
  return largest.count > newcomerHolds + 1 ? largest : undefined
}

/** How many mails of a mailbox one new mail may evict at most (several only when it needs their bytes). */
export const MAX_EVICTIONS_PER_MAIL = 32

/** How a quota break reads in a refusal: "the limit of 125 messages for one sender in this mailbox is reached". */
export const describeMailQuota = (quota: MailQuotaBreak): string => {
  const where: Record<MailQuotaScope, string> = {
    recipient: "for this recipient",
    total: "in total",
    sender: "for one sender in this mailbox",
    source: "for one address in this mailbox",
    senderTotal: "for one sender in total",
    sourceTotal: "for one address in total"
  }
  return `the limit of ${quota.limit} ${quota.measure} ${where[quota.scope]} is reached`
}

// ---------------------------------------------------------------------------
// Records
// ---------------------------------------------------------------------------

/** The bounds of a record store. */
export interface RecordLimitsPerStorer {
  /** Most records held (names' own records and rival claims). */
  readonly maxStoredRecords: number
  /** Most names one signing key holds here (rival claims included). */
  readonly maxNamesPerKey: number
}

/** A record quota one more record would break. */
export interface RecordQuotaBreak {
  readonly scope: "key" | "total"
  readonly limit: number
}

/**
 * Whether storing a record breaks a quota: `keyNames` is how many other live
 * records of its signing key the store holds (the slot being written left
 * out), `held` how many records it holds, `newSlot` whether the write fills
 * a slot that holds nothing yet. The key's share is checked first.
 */
export const recordQuotaBroken = (
  limits: RecordLimitsPerStorer,
  usage: { readonly keyNames: number; readonly held: number; readonly newSlot: boolean }
): Option.Option<RecordQuotaBreak> => {
  if (usage.keyNames >= limits.maxNamesPerKey) return Option.some({ scope: "key", limit: limits.maxNamesPerKey })
  if (usage.newSlot && usage.held >= limits.maxStoredRecords) {
    return Option.some({ scope: "total", limit: limits.maxStoredRecords })
  }
  return Option.none()
}
