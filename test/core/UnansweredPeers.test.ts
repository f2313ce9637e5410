import { describe, expect, it } from "@effect/vitest"
import type { NodeId } from "../../src/core/Id.js"
import {
  isUnanswered,
  makeUnansweredPeers,
  noteAnswered,
  noteUnanswered,
  type UnansweredPeers
} from "../../src/core/UnansweredPeers.js"

const nid = (n: number): NodeId => n.toString(16).padStart(64, "0") as NodeId

describe("UnansweredPeers", () => {
  it("remembers a peer that went unanswered until it answers", () => {
    const empty = makeUnansweredPeers()
    expect(isUnanswered(empty, nid(1), 0)).toBe(false)
    const noted = noteUnanswered(empty, nid(1), 1000)
    expect(isUnanswered(noted, nid(1), 1000)).toBe(true)
    expect(isUnanswered(noted, nid(2), 1000)).toBe(false)
    // Immutable: the input is untouched.
    expect(isUnanswered(empty, nid(1), 1000)).toBe(false)
    const answered = noteAnswered(noted, nid(1))
    expect(isUnanswered(answered, nid(1), 1001)).toBe(false)
    expect(isUnanswered(noted, nid(1), 1001)).toBe(true)
    // Answers from peers it does not hold change nothing.
    expect(noteAnswered(noted, nid(2))).toBe(noted)
  })

  it("forgets a peer forgetAfterMs after its last unanswered query", () => {
    let peers = noteUnanswered(makeUnansweredPeers({ forgetAfterMs: 600 }), nid(1), 0)
    expect(isUnanswered(peers, nid(1), 599)).toBe(true)
    expect(isUnanswered(peers, nid(1), 600)).toBe(false)
    // Another miss restarts the clock.
    peers = noteUnanswered(peers, nid(1), 500)
    expect(isUnanswered(peers, nid(1), 1099)).toBe(true)
    expect(isUnanswered(peers, nid(1), 1100)).toBe(false)
    // Expired peers are dropped when something is noted.
    peers = noteUnanswered(peers, nid(2), 2000)
    expect([...peers.since.keys()]).toEqual([nid(2)])
  })

  it("holds at most capacity peers, dropping the longest remembered first", () => {
    let peers: UnansweredPeers = makeUnansweredPeers({ capacity: 3 })
    for (let n = 1; n <= 5; n++) peers = noteUnanswered(peers, nid(n), n)
    expect([...peers.since.keys()]).toEqual([nid(3), nid(4), nid(5)])
    // A peer noted again moves to the newest end, so the next one dropped is another.
    peers = noteUnanswered(peers, nid(3), 6)
    peers = noteUnanswered(peers, nid(6), 7)
    expect([...peers.since.keys()]).toEqual([nid(5), nid(3), nid(6)])
    expect(peers.since.size).toBe(3)
  })

  it("rejects limits that cannot work", () => {
    expect(() => makeUnansweredPeers({ capacity: 0 })).toThrow(RangeError)
    expect(() => makeUnansweredPeers({ capacity: 1.5 })).toThrow(RangeError)
    expect(() => makeUnansweredPeers({ forgetAfterMs: -1 })).toThrow(RangeError)
    expect(() => makeUnansweredPeers({ forgetAfterMs: Number.NaN })).toThrow(RangeError)
  })
})
