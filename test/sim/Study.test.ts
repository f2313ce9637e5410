/**
 * The parameter study on a tiny seeded sweep (30 nodes, k in {3, 8}, alpha
 * in {1, 3}, with and without churn), in virtual time: it gives one row per
 * cell, every lookup succeeds without churn, invariants hold, the same seed
 * gives the same rows byte for byte, and the CSV and charts come out of them.
 */
import { describe, expect, it } from "@effect/vitest"
import { Either } from "effect"
import { CSV_COLUMNS, fromCsv, runStudy, studyCharts, toCsv, toMarkdownTable } from "../../src/sim/Study.js"
import { quickPlan, type StudyPlan } from "../../src/sim/StudyPlan.js"

const tiny: StudyPlan = {
  ...quickPlan,
  seed: 3,
  nodes: [30],
  ks: [3, 8],
  alphas: [1, 3],
  lookupsPerAlpha: () => 20,
  users: 10,
  churnWarmupMs: 60_000
}

describe("the study", () => {
  it("sweeps every cell on seeded networks, replays a seed exactly, and renders its rows", async () => {
    const progress: Array<string> = []
    const finished: Array<string> = []
    const first = await runStudy(tiny, {
      progress: (network, update) => progress.push(`${network.index}/${network.count} ${update.phase}`),
      finished: (result, index) => finished.push(`${index}: N=${result.nodes} k=${result.k}`)
    })
    expect(first.violations).toEqual([])
    expect(finished).toEqual(["0: N=30 k=3", "1: N=30 k=8"])
    expect(progress.some((line) => line.startsWith("1/2 "))).toBe(true)

    // One row per (k, churn, alpha), in sweep order.
    expect(first.rows.map((row) => `${row.k}/${row.churn}/${row.alpha}`)).toEqual([
      "3/0/1", "3/0/3", "3/0.3/1", "3/0.3/3",
      "8/0/1", "8/0/3", "8/0.3/1", "8/0.3/3"
    ])
    for (const row of first.rows) {
      expect(row.nodes).toBe(30)
      expect(row.lookups).toBe(20)
      expect(row.rpcsPerNodePerSecond).toBeGreaterThan(0)
      expect(row.latencyP50).toBeGreaterThan(0)
      expect(row.hopsP95).toBeLessThanOrEqual(row.hopsMax)
    }
    const calm = first.rows.filter((row) => row.churn === 0)
    expect(calm.map((row) => row.successRate)).toEqual([1, 1, 1, 1])
    expect(calm.every((row) => row.onlineNodes === 30)).toBe(true)
    const churned = first.rows.filter((row) => row.churn > 0)
    expect(churned.every((row) => row.onlineNodes < 30)).toBe(true)
    // Within one network and churn state the alphas share the window, hence its load.
    expect(first.rows[0]?.rpcsPerNodePerSecond).toBe(first.rows[1]?.rpcsPerNodePerSecond)

    const again = await runStudy(tiny)
    expect(toCsv(again.rows)).toBe(toCsv(first.rows))
    const other = await runStudy({ ...tiny, seed: 4, ks: [8] })
    expect(toCsv(other.rows)).not.toBe(toCsv(first.rows.filter((row) => row.k === 8)))

    const csv = toCsv(first.rows).trimEnd().split("\n")
    expect(csv[0]).toBe(CSV_COLUMNS.join(","))
    expect(csv).toHaveLength(1 + first.rows.length)
    expect(csv[1]?.split(",")).toHaveLength(CSV_COLUMNS.length)
    expect(toMarkdownTable(first.rows).trimEnd().split("\n")).toHaveLength(2 + first.rows.length)
    expect(studyCharts(first.rows).map((chart) => chart.file)).toEqual(["lookups-n30.svg", "success-churn.svg", "rpc-load.svg"])
    // The CSV reads back as the same rows, so charts can be redrawn from it (--charts-from).
    expect(fromCsv(toCsv(first.rows))).toEqual(Either.right(first.rows))
  }, 120_000)

  it("reads back only a study's CSV: the header in order and a finite number in every cell", () => {
    const header = CSV_COLUMNS.join(",")
    const line = CSV_COLUMNS.map((_, i) => String(i + 0.5)).join(",")
    expect(Either.map(fromCsv(`${header}\n${line}\n`), (rows) => rows[0]?.churn)).toEqual(Either.right(3.5))
    const refused = (text: string) => Either.match(fromCsv(text), { onLeft: (why) => why, onRight: () => "read" })
    expect(refused(`${[...CSV_COLUMNS].reverse().join(",")}\n${line}`)).toMatch(/^line 1: expected the header/)
    expect(refused(`${header}\n${line}\n1,2`)).toMatch(/^line 3: 2 cells, expected 18/)
    expect(refused(`${header}\n${line.replace(/^0\.5/, "lots")}`)).toMatch(/^line 2: .*nodes/s)
    expect(refused(`${header}\n${line.replace(/^0\.5/, "Infinity")}`)).toMatch(/^line 2: .*nodes/s)
    expect(refused(`${header}\n${line.replace(/^0\.5/, "")}`)).toMatch(/^line 2: .*nodes/s)
  })
})
