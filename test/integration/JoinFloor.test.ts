/**
 * The join floor (`bench/joinFloor.ts`, read by `bench/manyNodes.ts`) in a
 * small case: a few first meetings and probes with the transport's own
 * primitives over raw sockets. Each round checks its own work: the
 * signatures verify, the query sealed over the header the transport builds
 * (core `queryAssociated`) and the answer over `ANSWER_ASSOCIATED` open
 * under the pair keys both ends derived, and the probe's answer proves the
 * listener. A change to those primitives that broke a meeting fails here
 * rather than printing a floor of broken cryptography; the floor does not
 * run the transport itself, so it cannot notice a change to how
 * `Datagrams` uses them. Not a timing test: the bench measures the time.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { describeJoinFloor, floorOf, measureJoinFloor, perMeeting, perProbe } from "../../bench/joinFloor.js"

describe("the join floor", () => {
  it.effect("measures a first meeting and a listening probe whose every step did its job", () =>
    Effect.gen(function*() {
      const floor = yield* Effect.promise(() => measureJoinFloor(8))
      for (const part of [floor.meetingCrypto, floor.meetingSockets, floor.probeCrypto, floor.probeSockets]) {
        expect(Number.isFinite(part) && part > 0).toBe(true)
      }
      expect(perMeeting(floor)).toBe(floor.meetingCrypto + floor.meetingSockets)
      expect(perProbe(floor)).toBe(floor.probeCrypto + floor.probeSockets)
      expect(floorOf(floor, 2, 3)).toEqual({
        total: 2 * perMeeting(floor) + 3 * perProbe(floor),
        crypto: 2 * floor.meetingCrypto + 3 * floor.probeCrypto
      })
      expect(describeJoinFloor(floor)).toMatch(/^a first meeting \d+ µs .* a listening probe \d+ µs/)
    }))
})
