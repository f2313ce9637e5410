/**
 * The canonical binary encoding behind every signature in Peerchat (user
 * records, messages, receipts, the handshake transcript): unsigned big-endian
 * integers, UTF-8 strings behind a length prefix, and raw fixed-size keys.
 * Every field either has a fixed size or says its length, so an encoding can
 * be parsed back and two different values never share one. The encoders throw
 * a RangeError for values that do not fit: callers decode with their schemas
 * first, so this is a programming error, not input.
 *
 * @since 0.1.0
 */
import { concatBytes, fromHex, utf8 } from "./Bytes.js"

/** A 16-bit unsigned integer, big-endian. */
export const uint16 = (value: number, what: string): Uint8Array => {
  if (!Number.isInteger(value) || value < 0 || value > 0xffff) {
    throw new RangeError(`${what} must fit in 16 bits, got ${value}`)
  }
  return Uint8Array.of(value >>> 8, value & 0xff)
}

/** A 32-bit unsigned integer, big-endian. */
export const uint32 = (value: number, what: string): Uint8Array => {
  if (!Number.isInteger(value) || value < 0 || value > 0xffff_ffff) {
    throw new RangeError(`${what} must fit in 32 bits, got ${value}`)
  }
  return Uint8Array.of(value >>> 24, (value >>> 16) & 0xff, (value >>> 8) & 0xff, value & 0xff)
}

/** A non-negative safe integer as a 64-bit unsigned integer, big-endian. */
export const uint64 = (value: number, what: string): Uint8Array => {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new RangeError(`${what} must be a non-negative safe integer, got ${value}`)
  }
  const out = new Uint8Array(8)
  const view = new DataView(out.buffer)
  view.setUint32(0, Math.floor(value / 0x1_0000_0000))
  view.setUint32(4, value % 0x1_0000_0000)
  return out
}

/** A string of at most 65,535 UTF-8 bytes: u16 length ‖ bytes. */
export const shortString = (text: string, what: string): Uint8Array => {
  const bytes = utf8(text)
  return concatBytes(uint16(bytes.length, `${what} length`), bytes)
}

/** Exactly `length` bytes given as hex (a key, an id, a nonce). */
export const rawHex = (hex: string, length: number, what: string): Uint8Array => {
  const bytes = fromHex(hex)
  if (bytes === undefined || bytes.length !== length) {
    throw new RangeError(`${what} must be ${length} bytes of hex`)
  }
  return bytes
}
