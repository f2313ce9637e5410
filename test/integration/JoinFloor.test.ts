/**
 * The join floor (`bench/joinFloor.ts`, read by `bench/manyNodes.ts`) in a
 * small case: a few first meetings and probes with the transport's own
 * primitives over raw sockets. Each round checks its own work (the
 * signatures verify, the sealed query and answer open under the pair keys
 * both ends derived, the probe's answer proves the listener), so a change to
 * `Datagrams`' sealing or the probe's statement that broke a meeting fails
 * here rather than printing a floor of broken cryptography. Not a timing
 * test: the bench measures the time.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { describeJoinFloor, measureJoinFloor, perMeeting, perProbe } from "../../bench/joinFloor.js"

describe("the join floor", () => {
  it.effect("measures a first meeting and a listening probe whose every step did its job", () =>
    Effect.gen(function*() {
      const floor = yield* Effect.promise(() => measureJoinFloor(8))
      for (const part of [floor.meetingCrypto, floor.meetingSockets, floor.probeCrypto, floor.probeSockets]) {
        expect(Number.isFinite(part) && part > 0).toBe(true)
      }
      expect(perMeeting(floor)).toBe(floor.meetingCrypto + floor.meetingSockets)
      expect(perProbe(floor)).toBe(floor.probeCrypto + floor.probeSockets)
      expect(describeJoinFloor(floor)).toMatch(/^a first meeting \d+ µs .* a listening probe \d+ µs/)
    }))
})
