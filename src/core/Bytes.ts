/**
 * Byte helpers for the pure core: hex and UTF-8 conversions and constant
 * shapes, with no dependency on `node:buffer` so the core runs anywhere. Hex
 * is Effect's `Encoding`; only the digit-by-digit reading the distance
 * functions do on every comparison stays here (`hexDigitAt`).
 *
 * @since 0.1.0
 */
import { Either, Encoding } from "effect"

/** Lower-case hex encoding of `bytes`. */
export const toHex = (bytes: Uint8Array): string => Encoding.encodeHex(bytes)

/**
 * Decodes a hex string (either case); returns `undefined` for odd lengths or
 * non-hex characters so callers turn it into their own typed error. Where
 * the protocol allows only lower case, its schemas check that first.
 */
export const fromHex = (hex: string): Uint8Array | undefined => Either.getOrUndefined(Encoding.decodeHex(hex))

/**
 * Value (0-15) of the hex digit at `index`; the caller guarantees a valid
 * digit. Kept by hand: XOR distances compare ids digit by digit on every
 * routing decision, and decoding a whole id to bytes there would allocate.
 */
export const hexDigitAt = (hex: string, index: number): number => {
  const code = hex.charCodeAt(index)
  if (code >= 48 && code <= 57) return code - 48 // 0-9
  if (code >= 97 && code <= 102) return code - 87 // a-f
  if (code >= 65 && code <= 70) return code - 55 // A-F
  return -1
}

const encoder = new TextEncoder()

/** UTF-8 encoding of a string. */
export const utf8 = (text: string): Uint8Array => encoder.encode(text)

/** Concatenates byte arrays into a new array. */
export const concatBytes = (...parts: ReadonlyArray<Uint8Array>): Uint8Array => {
  let length = 0
  for (const part of parts) length += part.length
  const out = new Uint8Array(length)
  let offset = 0
  for (const part of parts) {
    out.set(part, offset)
    offset += part.length
  }
  return out
}

/** Byte-wise equality. */
export const bytesEqual = (a: Uint8Array, b: Uint8Array): boolean => {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}

/** Byte-wise equality in time that depends only on the lengths: how a MAC is compared. */
export const bytesEqualInConstantTime = (a: Uint8Array, b: Uint8Array): boolean => {
  if (a.length !== b.length) return false
  let difference = 0
  for (let i = 0; i < a.length; i++) difference |= (a[i] as number) ^ (b[i] as number)
  return difference === 0
}

/** Byte order of two strings: negative when `a` comes first (a shorter prefix first). */
export const compareBytes = (a: Uint8Array, b: Uint8Array): number => {
  const shared = Math.min(a.length, b.length)
  for (let i = 0; i < shared; i++) {
    if (a[i] !== b[i]) return (a[i] as number) - (b[i] as number)
  }
  return a.length - b.length
}

/** Number of leading zero bits of `bytes`, from the most significant bit of the first byte (8 · length when all are zero). */
export const leadingZeroBits = (bytes: Uint8Array): number => {
  let bits = 0
  for (const byte of bytes) {
    if (byte === 0) {
      bits += 8
      continue
    }
    return bits + Math.clz32(byte) - 24
  }
  return bits
}
