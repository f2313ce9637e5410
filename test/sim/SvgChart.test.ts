/**
 * The hand-written SVG charts: documents are well-formed XML, data lands
 * where the axes say (linear and log x), ticks are round numbers, and text
 * is escaped.
 */
import { describe, expect, it } from "@effect/vitest"
import { chartFrame, escapeXml, type LineChart, niceTicks, renderLineChart, renderSmallMultiples, tickLabels } from "../../src/sim/SvgChart.js"

/**
 * A small well-formedness check: tags nest and close, attributes are quoted,
 * and no raw `<` or stray `&` appears in text or attribute values. Returns
 * the problem, or undefined.
 */
const xmlProblem = (xml: string): string | undefined => {
  const stack: Array<string> = []
  const token = /<(\/?)([A-Za-z][\w:-]*)((?:\s+[\w:-]+="[^"<]*")*)\s*(\/?)>|<|&(?!(?:amp|lt|gt|quot|apos);)/g
  let match: RegExpExecArray | null
  let seenRoot = false
  while ((match = token.exec(xml)) !== null) {
    const [whole, closing, name, , selfClosing] = match
    if (name === undefined) return `stray ${JSON.stringify(whole)} at ${match.index}`
    if (closing === "/") {
      if (stack.pop() !== name) return `</${name}> closes nothing open at ${match.index}`
      continue
    }
    if (stack.length === 0 && seenRoot) return `second root element <${name}>`
    seenRoot = true
    if (selfClosing !== "/") stack.push(name)
  }
  return stack.length === 0 ? undefined : `unclosed <${stack.join(">, <")}>`
}

/** Every polyline's points as [x, y] pairs. */
const polylines = (svg: string): ReadonlyArray<ReadonlyArray<readonly [number, number]>> =>
  [...svg.matchAll(/<polyline points="([^"]*)"/g)].map((match) =>
    (match[1] ?? "").split(" ").map((pair) => {
      const [x, y] = pair.split(",").map(Number)
      return [x ?? Number.NaN, y ?? Number.NaN] as const
    })
  )

const chart: LineChart = {
  title: "Hops <p95> & \"friends\"",
  xLabel: "alpha",
  yLabel: "hops",
  width: 400,
  height: 300,
  series: [
    { label: "k = 3", points: [{ x: 1, y: 0 }, { x: 5, y: 2 }, { x: 10, y: 4 }] },
    { label: "k = 20 <churn>", dashed: true, points: [{ x: 1, y: 1 }, { x: 10, y: 3 }] }
  ]
}

describe("SvgChart", () => {
  it("renders well-formed SVG documents, alone and as small multiples", () => {
    const single = renderLineChart(chart)
    expect(xmlProblem(single)).toBeUndefined()
    expect(single.startsWith("<svg xmlns=\"http://www.w3.org/2000/svg\"")).toBe(true)
    const multiples = renderSmallMultiples("Two & more", [chart, { ...chart, logX: true }, chart])
    expect(xmlProblem(multiples)).toBeUndefined()
    expect(multiples.match(/<g transform=/g)?.length).toBe(3)
    // The checker itself catches what it should.
    expect(xmlProblem("<svg><g></svg>")).toBeDefined()
    expect(xmlProblem("<svg><text>a < b</text></svg>")).toBeDefined()
    expect(xmlProblem("<svg><text>R&D</text></svg>")).toBeDefined()
  })

  it("escapes every piece of text", () => {
    expect(escapeXml(`<a href="x">Tom & 'Jerry'</a>`)).toBe("&lt;a href=&quot;x&quot;&gt;Tom &amp; &apos;Jerry&apos;&lt;/a&gt;")
    const svg = renderLineChart(chart)
    expect(svg).toContain("Hops &lt;p95&gt; &amp; &quot;friends&quot;")
    expect(svg).toContain("k = 20 &lt;churn&gt;")
    expect(svg).not.toContain("<p95>")
  })

  it("places points on the linear axes: the data range spans the plot area", () => {
    const frame = chartFrame(chart)
    const [first, second] = polylines(renderLineChart(chart))
    expect(first?.length).toBe(3)
    // x = 1 is the left edge, x = 10 the right edge, x = 5 four ninths of the way.
    expect(first?.[0]?.[0]).toBeCloseTo(frame.left, 1)
    expect(first?.[2]?.[0]).toBeCloseTo(frame.right, 1)
    expect(first?.[1]?.[0]).toBeCloseTo(frame.left + (4 / 9) * (frame.right - frame.left), 1)
    // y = 0 sits on the x axis; y = 4 is the top of the axis (its last tick), higher values are higher up.
    expect(frame.yMin).toBe(0)
    expect(frame.yMax).toBe(4)
    expect(first?.[0]?.[1]).toBeCloseTo(frame.bottom, 1)
    expect(first?.[2]?.[1]).toBeCloseTo(frame.top, 1)
    expect(second?.[1]?.[1]).toBeCloseTo(frame.bottom - (3 / 4) * (frame.bottom - frame.top), 1)
    expect(renderLineChart(chart)).toContain(`stroke-dasharray="6 4"`)
  })

  it("places points on a log x axis: each power of ten is an equal step", () => {
    const logChart: LineChart = {
      ...chart,
      logX: true,
      series: [{ label: "load", points: [{ x: 100, y: 1 }, { x: 1000, y: 2 }, { x: 10_000, y: 3 }] }]
    }
    const frame = chartFrame(logChart)
    const [line] = polylines(renderLineChart(logChart))
    expect(line?.[0]?.[0]).toBeCloseTo(frame.left, 1)
    expect(line?.[1]?.[0]).toBeCloseTo((frame.left + frame.right) / 2, 1)
    expect(line?.[2]?.[0]).toBeCloseTo(frame.right, 1)
    expect(frame.xTicks).toEqual([100, 1000, 10_000])
    expect(renderLineChart(logChart)).toContain(">10,000</text>")
  })

  it("picks round ticks that cover the range", () => {
    expect(niceTicks(0, 4)).toEqual([0, 1, 2, 3, 4])
    expect(niceTicks(0, 1)).toEqual([0, 0.2, 0.4, 0.6, 0.8, 1])
    expect(niceTicks(0, 730)).toEqual([0, 200, 400, 600, 800])
    expect(niceTicks(3, 3)).toEqual([3])
  })

  it("labels ticks with the decimals their step needs", () => {
    expect(tickLabels([0, 0.002, 0.004])).toEqual(["0.000", "0.002", "0.004"])
    expect(tickLabels([0, 0.5, 1])).toEqual(["0.0", "0.5", "1.0"])
    expect(tickLabels([0, 200, 400])).toEqual(["0", "200", "400"])
    expect(tickLabels([0, 10_000, 20_000])).toEqual(["0", "10,000", "20,000"])
    const small = renderLineChart({ ...chart, series: [{ label: "load", points: [{ x: 1, y: 0 }, { x: 2, y: 0.009 }] }] })
    expect(small).toContain(">0.002</text>")
    expect(small).toContain(">0.010</text>")
  })

  it("honours explicit x ticks and a minimum y range", () => {
    const frame = chartFrame({ ...chart, xTicks: [1, 3, 5, 10], yMax: 100 })
    expect(frame.xTicks).toEqual([1, 3, 5, 10])
    expect(frame.yMax).toBe(100)
  })
})
