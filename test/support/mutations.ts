/**
 * Mutations for the fuzz tests (`test/core/DecoderFuzz.test.ts`,
 * `test/platform/WireFuzz.test.ts`): edits of JSON-like values at any path,
 * and of byte strings. Each file builds its own kinds of structural change on
 * `updateAt`; the byte mutations are shared as they are.
 */
import { FastCheck as fc } from "effect"
import { concatBytes } from "../../src/core/Bytes.js"

/** Where a node sits in a JSON-like value: keys and indexes from the root. */
export type Path = ReadonlyArray<string | number>

/** Whether `value` is a plain object (not null, not an array). */
export const isObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === "object" && value !== null && !Array.isArray(value)

/** Every node of a JSON-like value (the root included), depth first. */
export const pathsOf = (value: unknown, prefix: Path = [], out: Array<Path> = []): Array<Path> => {
  out.push(prefix)
  if (Array.isArray(value)) value.forEach((item, index) => pathsOf(item, [...prefix, index], out))
  else if (isObject(value)) for (const [key, item] of Object.entries(value)) pathsOf(item, [...prefix, key], out)
  return out
}

/** What a `change` returns to remove the node (the root becomes null). */
export const REMOVE = Symbol("remove")

/** A copy of `root` with the node at `path` replaced by `change(old)` (or removed). */
export const updateAt = (root: unknown, path: Path, change: (old: unknown) => unknown): unknown => {
  if (path.length === 0) {
    const next = change(root)
    return next === REMOVE ? null : next
  }
  const [head, ...rest] = path
  const next = (old: unknown) => (rest.length === 0 ? change(old) : updateAt(old, rest, change))
  if (Array.isArray(root) && typeof head === "number") {
    const copy = root.slice()
    const value = next(root[head])
    if (value === REMOVE) copy.splice(head, 1)
    else copy[head] = value
    return copy
  }
  if (isObject(root) && typeof head === "string") {
    const copy: Record<string, unknown> = { ...root }
    const value = next(root[head])
    if (value === REMOVE) delete copy[head]
    else Object.defineProperty(copy, head, { value, enumerable: true, writable: true, configurable: true })
    return copy
  }
  return root
}

/** One change to a byte string. */
export interface ByteMutation {
  readonly at: number
  readonly kind: number
  readonly value: number
  readonly length: number
}

/** One to four byte changes. */
export const arbByteMutations = fc.array(
  fc.record({ at: fc.nat(), kind: fc.nat({ max: 5 }), value: fc.nat({ max: 255 }), length: fc.integer({ min: 1, max: 40 }) }),
  { minLength: 1, maxLength: 4 }
)

/** `input` with `mutations` applied in turn: a flipped bit, a replaced, inserted or deleted byte or run, a cut, a repeat. */
export const mutateBytes = (input: Uint8Array, mutations: ReadonlyArray<ByteMutation>): Uint8Array =>
  mutations.reduce((bytes, m) => {
    const at = bytes.length === 0 ? 0 : m.at % bytes.length
    switch (m.kind) {
      case 0: {
        const out = bytes.slice()
        if (out.length > 0) out[at] = (out[at] as number) ^ (1 << (m.value % 8))
        return out
      }
      case 1: {
        const out = bytes.slice()
        if (out.length > 0) out[at] = m.value
        return out
      }
      case 2:
        return concatBytes(bytes.subarray(0, at), Uint8Array.of(m.value), bytes.subarray(at))
      case 3:
        return concatBytes(bytes.subarray(0, at), bytes.subarray(at + m.length))
      case 4:
        return bytes.subarray(0, at)
      default:
        return concatBytes(bytes.subarray(0, at + m.length), bytes.subarray(at))
    }
  }, input)
