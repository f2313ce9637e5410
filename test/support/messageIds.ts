/**
 * Message ids for tests that name messages by short labels ("m1", "b2"): the
 * label's UTF-8 bytes in hex, padded with zeros to the 64 hex characters of a
 * real id (`MessageId`, the hex SHA-256 of an envelope). Ids sort as their
 * labels do, so tests of the (sentAt, sequence, id) order and of paging by id
 * read as before, and `labelOf` reads a label back.
 */
import { Schema } from "effect"
import { fromHex, toHex, utf8 } from "../../src/core/Bytes.js"
import { MessageId } from "../../src/core/Message.js"

const decodeMessageId = Schema.decodeSync(MessageId)

/** The message id a test calls `label` (at most 32 bytes of ASCII). */
export const messageIdOf = (label: string): MessageId => {
  const hex = toHex(utf8(label))
  if (hex.length > 64) throw new RangeError(`a test message label has at most 32 bytes: ${label}`)
  return decodeMessageId(hex.padEnd(64, "0"))
}

/** The label `messageIdOf` made `id` from. */
export const labelOf = (id: string): string => {
  const bytes = fromHex(id) ?? new Uint8Array(0)
  let end = bytes.length
  while (end > 0 && bytes[end - 1] === 0) end--
  return new TextDecoder().decode(bytes.subarray(0, end))
}
