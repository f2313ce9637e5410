/**
 * Line charts as SVG text, written by hand so the study's charts need no
 * plotting package: axes with "nice" ticks (a linear or a log-10 x axis),
 * one polyline with point markers per series, a legend, a title, and small
 * multiples (several charts side by side in one file). Pure functions of
 * their input, so the same rows always render the same bytes. Every piece of
 * text is XML-escaped; numbers are printed with at most two decimals.
 *
 * @since 0.1.0
 */

/** One point of a series. */
export interface ChartPoint {
  readonly x: number
  readonly y: number
}

/** One line of a chart. */
export interface ChartSeries {
  readonly label: string
  readonly points: ReadonlyArray<ChartPoint>
  /** A CSS colour; by default the series' position picks one of `PALETTE`. */
  readonly color?: string
  /** Drawn dashed (the study uses it for "with churn"). */
  readonly dashed?: boolean
}

/** A line chart. */
export interface LineChart {
  readonly title: string
  readonly xLabel: string
  readonly yLabel: string
  readonly series: ReadonlyArray<ChartSeries>
  /** A log-10 x axis (every x must be positive). */
  readonly logX?: boolean
  /** Where the x ticks go; by default nice round values (powers of ten on a log axis). */
  readonly xTicks?: ReadonlyArray<number>
  /** The y axis starts here unless a value lies below (default 0). */
  readonly yMin?: number
  /** The y axis reaches at least this far (e.g. 1 for a rate). */
  readonly yMax?: number
  /** Size of the whole chart in px (default 480 × 320). */
  readonly width?: number
  readonly height?: number
}

/** Colours for series without one (colour-blind safe, Okabe–Ito). */
export const PALETTE: ReadonlyArray<string> = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"]

/** Escapes text for XML content and attribute values. */
export const escapeXml = (text: string): string =>
  text.replace(/[&<>"']/g, (char) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", "\"": "&quot;", "'": "&apos;" })[char] ?? char)

/** A coordinate or a label: at most two decimals, no trailing zeros, no "-0". */
export const formatNumber = (value: number): string => {
  const rounded = Math.round(value * 100) / 100
  return Object.is(rounded, -0) ? "0" : String(rounded)
}

/** About `count` round tick values (1, 2 or 5 times a power of ten apart), the first at most `min`, the last at least `max`. */
export const niceTicks = (min: number, max: number, count = 5): ReadonlyArray<number> => {
  if (!(max > min)) return [min]
  const raw = (max - min) / Math.max(1, count)
  const magnitude = 10 ** Math.floor(Math.log10(raw))
  const step = ([1, 2, 5, 10].find((factor) => factor * magnitude >= raw) ?? 10) * magnitude
  const ticks: Array<number> = []
  // Integer multiples of the step, so 0.1 + 0.2 never prints as 0.30000000000000004.
  const last = Math.ceil(max / step - 1e-9)
  for (let i = Math.floor(min / step + 1e-9); i <= last; i++) ticks.push(Number((i * step).toPrecision(12)))
  return ticks
}

/** The plot area of a chart and the maps from data to pixels (exported for tests). */
export interface ChartFrame {
  readonly left: number
  readonly right: number
  readonly top: number
  readonly bottom: number
  readonly xMin: number
  readonly xMax: number
  readonly yMin: number
  readonly yMax: number
  readonly x: (value: number) => number
  readonly y: (value: number) => number
  readonly xTicks: ReadonlyArray<number>
  readonly yTicks: ReadonlyArray<number>
}

const MARGIN = { left: 64, right: 16, top: 36, bottom: 48 }
/** Each legend line's height; the legend sits below the x axis label. */
const LEGEND_LINE = 16

const legendRows = (chart: LineChart): number => Math.ceil(chart.series.length / 2)

/** Where `chart` draws and how values map to pixels. */
export const chartFrame = (chart: LineChart): ChartFrame => {
  const width = chart.width ?? 480
  const height = chart.height ?? 320
  const points = chart.series.flatMap((series) => series.points).filter((point) => Number.isFinite(point.x) && Number.isFinite(point.y))
  const logX = chart.logX === true
  const xs = [...points.map((point) => point.x), ...(chart.xTicks ?? [])].filter((x) => !logX || x > 0)
  const ys = points.map((point) => point.y)
  let xMin = xs.length === 0 ? (logX ? 1 : 0) : Math.min(...xs)
  let xMax = xs.length === 0 ? (logX ? 10 : 1) : Math.max(...xs)
  if (xMax <= xMin) {
    xMin = logX ? xMin / 10 : xMin - 1
    xMax = logX ? xMax * 10 : xMax + 1
  }
  const lowest = Math.min(chart.yMin ?? 0, ...ys)
  const highest = Math.max(chart.yMax ?? lowest, ...ys)
  const yTicksRaw = niceTicks(lowest, highest > lowest ? highest : lowest + 1)
  const yMin = Math.min(lowest, yTicksRaw[0] ?? lowest)
  const yMax = Math.max(highest > lowest ? highest : lowest + 1, yTicksRaw[yTicksRaw.length - 1] ?? highest)
  const xTicks = chart.xTicks ??
    (logX
      ? Array.from({ length: Math.floor(Math.log10(xMax)) - Math.ceil(Math.log10(xMin)) + 1 }, (_, i) => 10 ** (Math.ceil(Math.log10(xMin)) + i))
      : niceTicks(xMin, xMax))
  const left = MARGIN.left
  const right = width - MARGIN.right
  const top = MARGIN.top
  const bottom = height - MARGIN.bottom - legendRows(chart) * LEGEND_LINE
  const toUnit = (value: number) =>
    logX ? (Math.log10(value) - Math.log10(xMin)) / (Math.log10(xMax) - Math.log10(xMin)) : (value - xMin) / (xMax - xMin)
  return {
    left,
    right,
    top,
    bottom,
    xMin,
    xMax,
    yMin,
    yMax,
    x: (value) => left + toUnit(value) * (right - left),
    y: (value) => bottom - ((value - yMin) / (yMax - yMin)) * (bottom - top),
    xTicks: xTicks.filter((tick) => tick >= xMin && tick <= xMax),
    yTicks: yTicksRaw.filter((tick) => tick >= yMin && tick <= yMax)
  }
}

/** Tick labels of an axis, with as many decimals as its step needs (0.002 apart: three), thousands grouped. */
export const tickLabels = (ticks: ReadonlyArray<number>): ReadonlyArray<string> => {
  const steps = ticks.slice(1).map((tick, i) => tick - (ticks[i] ?? tick)).filter((step) => step > 0)
  const decimals = Math.min(10, Math.max(0, ...steps.map((step) => Math.ceil(-Math.log10(step) - 1e-9))))
  return ticks.map((value) =>
    Math.abs(value) >= 10_000 && Number.isInteger(value)
      ? value.toLocaleString("en-US")
      : Number.isInteger(value) && decimals === 0
      ? String(value)
      : value.toFixed(decimals)
  )
}

/** The chart's elements, without the enclosing `<svg>` (for small multiples). */
const chartBody = (chart: LineChart): ReadonlyArray<string> => {
  const frame = chartFrame(chart)
  const width = chart.width ?? 480
  const f = formatNumber
  const out: Array<string> = []
  out.push(`<text x="${f(width / 2)}" y="20" text-anchor="middle" font-size="14" font-weight="bold">${escapeXml(chart.title)}</text>`)
  const yLabels = tickLabels(frame.yTicks)
  for (const [position, tick] of frame.yTicks.entries()) {
    const y = f(frame.y(tick))
    out.push(`<line x1="${f(frame.left)}" y1="${y}" x2="${f(frame.right)}" y2="${y}" stroke="#e5e5e5"/>`)
    out.push(`<text x="${f(frame.left - 6)}" y="${y}" text-anchor="end" dominant-baseline="middle" font-size="11">${escapeXml(yLabels[position] ?? "")}</text>`)
  }
  // A log axis's ticks are powers of ten: each is labelled as it is, not with a common number of decimals.
  const xLabels = chart.logX === true ? frame.xTicks.map((tick) => tickLabels([tick])[0] ?? "") : tickLabels(frame.xTicks)
  for (const [position, tick] of frame.xTicks.entries()) {
    const x = f(frame.x(tick))
    out.push(`<line x1="${x}" y1="${f(frame.bottom)}" x2="${x}" y2="${f(frame.bottom + 4)}" stroke="#333"/>`)
    out.push(`<text x="${x}" y="${f(frame.bottom + 16)}" text-anchor="middle" font-size="11">${escapeXml(xLabels[position] ?? "")}</text>`)
  }
  out.push(`<line x1="${f(frame.left)}" y1="${f(frame.bottom)}" x2="${f(frame.right)}" y2="${f(frame.bottom)}" stroke="#333"/>`)
  out.push(`<line x1="${f(frame.left)}" y1="${f(frame.top)}" x2="${f(frame.left)}" y2="${f(frame.bottom)}" stroke="#333"/>`)
  out.push(`<text x="${f((frame.left + frame.right) / 2)}" y="${f(frame.bottom + 32)}" text-anchor="middle" font-size="12">${escapeXml(chart.xLabel)}</text>`)
  const yMiddle = f((frame.top + frame.bottom) / 2)
  out.push(`<text x="16" y="${yMiddle}" text-anchor="middle" font-size="12" transform="rotate(-90 16 ${yMiddle})">${escapeXml(chart.yLabel)}</text>`)
  for (const [position, series] of chart.series.entries()) {
    const color = escapeXml(series.color ?? PALETTE[position % PALETTE.length] ?? "#000")
    const dash = series.dashed === true ? ` stroke-dasharray="6 4"` : ""
    const points = series.points.filter((point) => Number.isFinite(point.x) && Number.isFinite(point.y) && (chart.logX !== true || point.x > 0))
    if (points.length > 1) {
      const path = points.map((point) => `${f(frame.x(point.x))},${f(frame.y(point.y))}`).join(" ")
      out.push(`<polyline points="${path}" fill="none" stroke="${color}" stroke-width="2"${dash}/>`)
    }
    for (const point of points) {
      out.push(`<circle cx="${f(frame.x(point.x))}" cy="${f(frame.y(point.y))}" r="3" fill="${color}"/>`)
    }
    // The legend: two columns below the axis label.
    const column = position % 2
    const row = Math.floor(position / 2)
    const lx = frame.left + column * ((frame.right - frame.left) / 2)
    const ly = frame.bottom + 48 + row * LEGEND_LINE
    out.push(`<line x1="${f(lx)}" y1="${f(ly - 4)}" x2="${f(lx + 20)}" y2="${f(ly - 4)}" stroke="${color}" stroke-width="2"${dash}/>`)
    out.push(`<text x="${f(lx + 26)}" y="${f(ly)}" font-size="11">${escapeXml(series.label)}</text>`)
  }
  return out
}

const svgOpen = (width: number, height: number): string =>
  `<svg xmlns="http://www.w3.org/2000/svg" width="${formatNumber(width)}" height="${formatNumber(height)}" viewBox="0 0 ${formatNumber(width)} ${formatNumber(height)}" font-family="sans-serif">`

/** One chart as a standalone SVG document. */
export const renderLineChart = (chart: LineChart): string => {
  const width = chart.width ?? 480
  const height = chart.height ?? 320
  return [
    svgOpen(width, height),
    `<rect width="100%" height="100%" fill="#fff"/>`,
    ...chartBody(chart),
    "</svg>",
    ""
  ].join("\n")
}

/** Several charts in one SVG document, `columns` to a row, under a common title. */
export const renderSmallMultiples = (title: string, charts: ReadonlyArray<LineChart>, columns = 2): string => {
  const cellWidth = Math.max(...charts.map((chart) => chart.width ?? 480), 1)
  const cellHeight = Math.max(...charts.map((chart) => chart.height ?? 320), 1)
  const header = 32
  const cols = Math.max(1, Math.min(columns, charts.length))
  const rows = Math.ceil(charts.length / cols)
  const width = cols * cellWidth
  const height = header + rows * cellHeight
  const out = [
    svgOpen(width, height),
    `<rect width="100%" height="100%" fill="#fff"/>`,
    `<text x="${formatNumber(width / 2)}" y="22" text-anchor="middle" font-size="16" font-weight="bold">${escapeXml(title)}</text>`
  ]
  for (const [position, chart] of charts.entries()) {
    const x = (position % cols) * cellWidth
    const y = header + Math.floor(position / cols) * cellHeight
    out.push(`<g transform="translate(${formatNumber(x)} ${formatNumber(y)})">`, ...chartBody(chart), "</g>")
  }
  out.push("</svg>", "")
  return out.join("\n")
}
