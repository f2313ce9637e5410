/**
 * Live versus known peers: a contact counts as live only while it was heard
 * from recently and nothing failed since, and the quietest contacts (failing
 * ones first) are the ones asked, a bounded few at a time.
 */
import { describe, expect, it } from "@effect/vitest"
import type { NodeId } from "../../src/core/Id.js"
import {
  isLivePeer,
  LIVE_PEER_WINDOW_MS,
  livePeerCount,
  MAX_PROBES_PER_ROUND,
  MAX_PROBES_WHILE_FAILING,
  nextProbeBudget,
  peersToProbe,
  PROBE_QUIET_MS,
  PROBE_STEP_MS,
  probeStep,
  recheckControl,
  STEPS_PER_ROUND
} from "../../src/core/PeerLiveness.js"
import * as RT from "../../src/core/RoutingTable.js"
import { contactFor } from "../support/arbitraries.js"

const SELF = "00".repeat(32) as NodeId
/** Ids in different buckets of SELF's table, so every contact is kept. */
const peer = (index: number) => contactFor(`${(0x80 >> index).toString(16).padStart(2, "0")}${"11".repeat(31)}` as NodeId)

/** A table where peer `i` was last seen at `seenAt[i]`. */
const tableSeenAt = (seenAt: ReadonlyArray<number>) =>
  seenAt.reduce((table, at, index) => RT.observe(table, peer(index), at).table, RT.makeRoutingTable(SELF, 0))

describe("peer liveness", () => {
  it("a contact is live while heard from within the window, and not once a request to it failed", () => {
    const now = 1_000_000
    const table = tableSeenAt([now - 1000, now - LIVE_PEER_WINDOW_MS, now - LIVE_PEER_WINDOW_MS - 1])
    expect(livePeerCount(table, now)).toBe(2)
    expect(RT.contactCount(table)).toBe(3)

    const failed = RT.recordFailure(table, peer(0).nodeId, now)
    expect(isLivePeer(RT.findContact(failed, peer(0).nodeId) as RT.Entry, now)).toBe(false)
    expect(livePeerCount(failed, now)).toBe(1)
    // An answer afterwards makes it live again.
    expect(livePeerCount(RT.observe(failed, peer(0), now).table, now)).toBe(2)
  })

  it("asks the failing contacts first, then the quiet ones, longest silent first, at most max", () => {
    const now = 1_000_000
    const table = RT.recordFailure(
      tableSeenAt([now - 5 * PROBE_QUIET_MS, now - 1000, now - 2 * PROBE_QUIET_MS, now - PROBE_QUIET_MS, now - 10]),
      peer(4).nodeId,
      now
    )
    expect(peersToProbe(table, now)).toEqual([peer(4), peer(0), peer(2), peer(3)])
    expect(peersToProbe(table, now, { max: 2 })).toEqual([peer(4), peer(0)])
    // Nobody quiet and nothing failing: nobody to ask.
    expect(peersToProbe(tableSeenAt([now, now - 1]), now)).toEqual([])
  })

  it("a recheck asks only the contacts whose last request failed, however quiet the others are", () => {
    const now = 1_000_000
    const quietTable = tableSeenAt([now - 5 * PROBE_QUIET_MS, now - 1000, now - 2 * PROBE_QUIET_MS])
    expect(peersToProbe(quietTable, now, { failingOnly: true })).toEqual([])
    const failing = RT.recordFailure(RT.recordFailure(quietTable, peer(1).nodeId, now), peer(2).nodeId, now)
    expect(peersToProbe(failing, now, { failingOnly: true })).toEqual([peer(2), peer(1)])
    expect(peersToProbe(failing, now, { failingOnly: true, max: 1 })).toEqual([peer(2)])
  })

  it("a recheck trusts its failures when a contact was heard from within the last step, else asks the most recently heard live one", () => {
    const now = 1_000_000
    const heardJustNow = tableSeenAt([now - 5 * PROBE_QUIET_MS, now - PROBE_STEP_MS, now - 3 * PROBE_STEP_MS])
    expect(recheckControl(heardJustNow, now)).toEqual({ _tag: "Up" })
    const quiet = tableSeenAt([now - 5 * PROBE_QUIET_MS, now - PROBE_STEP_MS - 1, now - 3 * PROBE_STEP_MS])
    expect(recheckControl(quiet, now)).toEqual({ _tag: "Ask", contact: peer(1) })
    // A failing contact is no witness, however recently it was heard from.
    expect(recheckControl(RT.recordFailure(quiet, peer(1).nodeId, now), now)).toEqual({ _tag: "Ask", contact: peer(2) })
    // Every contact failing: nothing tells a silent peer from this node's own outage.
    const allFailing = [0, 1, 2].reduce((table, index) => RT.recordFailure(table, peer(index).nodeId, now), quiet)
    expect(recheckControl(allFailing, now)).toEqual({ _tag: "None" })
  })

  it("every third step is a round of the budget, the steps between recheck failing contacts only", () => {
    const steps = Array.from({ length: 2 * STEPS_PER_ROUND }, (_, index) => probeStep(index + 1, 16))
    expect(steps).toEqual([
      { max: MAX_PROBES_WHILE_FAILING, failingOnly: true },
      { max: MAX_PROBES_WHILE_FAILING, failingOnly: true },
      { max: 16, failingOnly: false },
      { max: MAX_PROBES_WHILE_FAILING, failingOnly: true },
      { max: MAX_PROBES_WHILE_FAILING, failingOnly: true },
      { max: 16, failingOnly: false }
    ])
  })

  it("probes more while probes fail, up to a cap, and falls back once a round all answered", () => {
    expect(nextProbeBudget({ asked: 8, failed: 0 })).toBe(MAX_PROBES_PER_ROUND)
    expect(nextProbeBudget({ asked: 3, failed: 0 })).toBe(MAX_PROBES_PER_ROUND)
    expect(nextProbeBudget({ asked: 8, failed: 1 })).toBe(16)
    expect(nextProbeBudget({ asked: 16, failed: 16 })).toBe(32)
    expect(nextProbeBudget({ asked: 32, failed: 2 })).toBe(64)
    expect(nextProbeBudget({ asked: 64, failed: 2 })).toBe(MAX_PROBES_WHILE_FAILING)
    expect(nextProbeBudget({ asked: MAX_PROBES_WHILE_FAILING, failed: 2 })).toBe(MAX_PROBES_WHILE_FAILING)
    // A round that asked few (a small table) still asks the usual number next.
    expect(nextProbeBudget({ asked: 2, failed: 2 })).toBe(MAX_PROBES_PER_ROUND)
    expect(nextProbeBudget({ asked: 32, failed: 0 })).toBe(MAX_PROBES_PER_ROUND)
  })
})
