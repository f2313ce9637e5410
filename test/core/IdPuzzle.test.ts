import { describe, expect, it } from "@effect/vitest"
import { createHash } from "node:crypto"
import { type NodeId, randomNodeId } from "../../src/core/Id.js"
import { ID_PUZZLE_PREFIX, idPuzzleZeroBits, meetsIdPuzzle } from "../../src/core/IdPuzzle.js"
import { seededRandomBytes } from "../support/arbitraries.js"

/** Independent oracle: node:crypto's SHA-256, bits counted from a binary string. */
const oracleBits = (nodeId: NodeId): number => {
  const digest = createHash("sha256").update(Buffer.from(ID_PUZZLE_PREFIX, "utf8")).update(Buffer.from(nodeId, "hex")).digest()
  const binary = [...digest].map((byte) => byte.toString(2).padStart(8, "0")).join("")
  const first = binary.indexOf("1")
  return first < 0 ? 256 : first
}

describe("id puzzle", () => {
  const random = seededRandomBytes(77)
  const ids = Array.from({ length: 2000 }, () => randomNodeId(random))

  it("counts the leading zero bits of SHA-256(prefix ‖ id), as an independent implementation does", () => {
    for (const id of ids) expect(idPuzzleZeroBits(id)).toBe(oracleBits(id))
  })

  it("accepts an id exactly when it has enough bits; 0 bits accepts every id", () => {
    for (const id of ids) {
      const bits = oracleBits(id)
      expect(meetsIdPuzzle(id, bits)).toBe(true)
      expect(meetsIdPuzzle(id, bits + 1)).toBe(false)
      expect(meetsIdPuzzle(id, 0)).toBe(true)
    }
  })

  it("costs about 2^bits ids to solve: the share of random ids that solve 4 bits is near 1/16", () => {
    const solved = ids.filter((id) => meetsIdPuzzle(id, 4)).length
    // 2000 draws, p = 1/16: mean 125, standard deviation about 10.8.
    expect(solved).toBeGreaterThan(125 - 45)
    expect(solved).toBeLessThan(125 + 45)
  })
})
