/**
 * What a person may send as a message, decided once for every way in: the
 * node's `send` (and so the control API, `peerchat send`) and the terminal
 * chat use the same pure checks. A text with nothing to read (empty, or only
 * spaces, line breaks and invisible characters) is refused with a typed
 * `MessageEmpty`; the limits of the wire format (`parseMessageText`: at most
 * 16 KiB of UTF-8, well-formed Unicode) follow. The chat takes longer input
 * and splits it on purpose (`splitMessageText`) into messages that each fit.
 *
 * Received messages are not checked here: what another node sent is judged by
 * the message format alone, so a peer of another version is never dropped
 * for sending an empty line.
 *
 * @since 0.3.0
 */
import { Either, Schema } from "effect"
import {
  MAX_MESSAGE_TEXT_BYTES,
  type MessageText,
  type MessageTextMalformed,
  type MessageTooLong,
  parseMessageText,
  utf8ByteLength
} from "./Message.js"

/** Why a text cannot be sent: it has nothing to read (empty, or only white space and invisible characters). */
export class MessageEmpty extends Schema.TaggedError<MessageEmpty>()("MessageEmpty", {
  /** UTF-16 length of the refused text (0 for an empty one). */
  length: Schema.Number
}) {
  override get message(): string {
    return this.length === 0
      ? "the message is empty: type some text to send"
      : "the message is only white space: type some text to send"
  }
}

// White space (spaces, tabs, line breaks, no-break spaces…) and the invisible zero-width characters:
// a message made only of these shows nothing to its reader.
const BLANK = /^[\p{White_Space}\u200b-\u200d\u2060\ufeff]*$/u

/** Whether `text` has nothing to read: empty, or only white space and zero-width characters. */
export const isBlankText = (text: string): boolean => BLANK.test(text)

/**
 * The check of a text someone wants to send: not blank, then the message
 * limits (`parseMessageText`). Used by the node's `send` and the chat.
 */
export const parseOutgoingText = (
  text: string
): Either.Either<MessageText, MessageEmpty | MessageTooLong | MessageTextMalformed> =>
  isBlankText(text) ? Either.left(new MessageEmpty({ length: text.length })) : parseMessageText(text)

/** The end (a UTF-16 index, never inside a surrogate pair) of the longest prefix of `text` within `maxBytes` of UTF-8. */
const prefixWithin = (text: string, maxBytes: number): number => {
  let bytes = 0
  let index = 0
  while (index < text.length) {
    const codePoint = text.codePointAt(index) ?? 0
    const units = codePoint > 0xffff ? 2 : 1
    const size = utf8ByteLength(text.slice(index, index + units))
    if (bytes + size > maxBytes) break
    bytes += size
    index += units
  }
  return index
}

const LINE_BREAK = /\r\n|\r|\n/g
const SPACE = /[ \t\u00a0\u3000]/g

/** The start and end of the last match of `pattern` in `text` that starts at `from` or later, if any. */
const lastMatch = (text: string, pattern: RegExp, from: number): readonly [number, number] | undefined => {
  let found: readonly [number, number] | undefined
  for (const match of text.matchAll(pattern)) {
    if (match.index >= from) found = [match.index, match.index + match[0].length]
  }
  return found
}

/**
 * `text` as messages of at most `maxBytes` of UTF-8 each (16 KiB by
 * default), in order: each cut is at the last line break of a full piece,
 * else at its last space, else (one long word) at the limit itself, never
 * inside a character. The break a cut falls on is dropped, as the message
 * boundary stands for it; pieces with nothing to read are left out. A text
 * that fits is returned as it is (one piece), a blank one as none.
 */
export const splitMessageText = (text: string, maxBytes: number = MAX_MESSAGE_TEXT_BYTES): ReadonlyArray<string> => {
  // Four bytes hold any character, so every piece makes progress.
  const limit = Math.max(4, Math.floor(maxBytes))
  const pieces: Array<string> = []
  let rest = text
  while (utf8ByteLength(rest) > limit) {
    const end = prefixWithin(rest, limit)
    const head = rest.slice(0, end)
    // A break in the first half would leave a short piece behind a long one: cut at the limit instead.
    const cut = lastMatch(head, LINE_BREAK, Math.floor(end / 2)) ?? lastMatch(head, SPACE, Math.floor(end / 2))
    const [pieceEnd, restStart] = cut ?? [end, end]
    const piece = rest.slice(0, pieceEnd)
    if (!isBlankText(piece)) pieces.push(piece)
    rest = rest.slice(restStart)
  }
  if (!isBlankText(rest)) pieces.push(rest)
  return pieces
}
