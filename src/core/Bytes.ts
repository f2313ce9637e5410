/**
 * Byte helpers for the pure core: hex and UTF-8 conversions and constant
 * shapes, with no dependency on `node:buffer` so the core runs anywhere.
 *
 * @since 0.1.0
 */
const HEX_DIGITS = "0123456789abcdef"

const hexValue = (code: number): number => {
  if (code >= 48 && code <= 57) return code - 48 // 0-9
  if (code >= 97 && code <= 102) return code - 87 // a-f
  if (code >= 65 && code <= 70) return code - 55 // A-F
  return -1
}

/** Lower-case hex encoding of `bytes`. */
export const toHex = (bytes: Uint8Array): string => {
  let out = ""
  for (const byte of bytes) {
    out += HEX_DIGITS.charAt(byte >>> 4) + HEX_DIGITS.charAt(byte & 0x0f)
  }
  return out
}

/**
 * Decodes a hex string; returns `undefined` for odd lengths or non-hex
 * characters so callers turn it into their own typed error.
 */
export const fromHex = (hex: string): Uint8Array | undefined => {
  if (hex.length % 2 !== 0) return undefined
  const out = new Uint8Array(hex.length / 2)
  for (let i = 0; i < out.length; i++) {
    const high = hexValue(hex.charCodeAt(2 * i))
    const low = hexValue(hex.charCodeAt(2 * i + 1))
    if (high < 0 || low < 0) return undefined
    out[i] = (high << 4) | low
  }
  return out
}

/** Value (0-15) of the hex digit at `index`; the caller guarantees a valid digit. */
export const hexDigitAt = (hex: string, index: number): number => hexValue(hex.charCodeAt(index))

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
