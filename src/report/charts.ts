// Chart descriptions for the report, computed here (typed, testable) and embedded as JSON; the small
// browser script in client.ts turns each into a Chart.js chart. Everything in a ChartSpec is plain JSON.
import { ANOMALY_THRESHOLD } from "../defenses/mad.js";
import type { ReportNeuralCleanse, ReportPruning, ReportStrip } from "./types.js";

export type ValueFormat = "percent" | "number";

export interface AxisSpec {
  type: "linear" | "category";
  title: string;
  format?: ValueFormat;
  min?: number;
  max?: number;
  beginAtZero?: boolean;
  /** Chart.js `suggestedMax`: the axis reaches at least this far (e.g. to show a threshold line). */
  suggestedMax?: number;
  /** Hide tick labels (sorted label axes: the order, not the label ids, is what matters). */
  hideTicks?: boolean;
  /** Chart.js `offset`: half a bar of padding at both ends. */
  offset?: boolean;
  /** Chart.js `grace`: head room above the data so markers at the top are not clipped, e.g. "8%". */
  grace?: string;
}

/** A dashed reference line across the plot, e.g. the anomaly threshold or a STRIP threshold. */
export interface RefLine {
  axis: "x" | "y";
  value: number;
  label: string;
  color: string;
  /** Where a vertical line's label goes: "top" unless the data usually sits there (accuracy curves). */
  labelAt?: "top" | "bottom";
}

/** A Chart.js dataset, restricted to JSON; `notes` (per point) are shown under the tooltip value. */
export interface DatasetSpec {
  type: "bar" | "line" | "scatter";
  label: string;
  data: (number | null)[] | { x: number; y: number }[];
  backgroundColor: string | string[];
  borderColor: string | string[];
  borderWidth?: number;
  pointStyle?: string;
  pointRadius?: number;
  pointHoverRadius?: number;
  showLine?: boolean;
  barPercentage?: number;
  categoryPercentage?: number;
  grouped?: boolean;
  /** Drawing order (lower is drawn on top); the legend keeps dataset order regardless. */
  order?: number;
  notes?: string[];
  /** Text drawn next to each non-null point (e.g. "label 0" beside a flagged marker). */
  pointLabels?: (string | null)[];
  /** Leave this dataset out of the legend (its meaning is already the axis title). */
  hideInLegend?: boolean;
}

export interface ChartSpec {
  /** id of the <canvas>. */
  id: string;
  type: "bar" | "line";
  /** Category labels (category x axis only). */
  labels?: string[];
  datasets: DatasetSpec[];
  x: AxisSpec;
  y: AxisSpec;
  refLines: RefLine[];
  legend: boolean;
  /** Tooltip title per data index; when absent the x value is shown. */
  titles?: string[];
  /** "index": all datasets at the hovered x (histograms); "nearest": the closest point. */
  interaction: "index" | "nearest";
}

export const COLORS = {
  clean: "#2563eb",
  attack: "#dc2626",
  marker: "#d97706",
  neutral: "#94a3b8",
  muted: "#64748b",
} as const;

/** Above this many labels, per-label charts are sorted by value (label ids on the axis would be noise). */
export const SORT_LABELS_ABOVE = 64;

function alpha(hex: string, a: number): string {
  const n = parseInt(hex.slice(1), 16);
  return `rgba(${(n >> 16) & 255}, ${(n >> 8) & 255}, ${n & 255}, ${a})`;
}

const pct = (v: number) => `${(v * 100).toFixed(1)}%`;
/** "2%", "2.5%": no trailing ".0". */
const pctShort = (v: number) => `${Number((v * 100).toFixed(1))}%`;

/** Pruning fraction for a saved network: read off the curve, interpolating on channel count if needed. */
export function fractionForChannels(curve: ReportPruning["curve"], channels: number): number {
  const exact = curve.find((p) => p.channelsPruned === channels);
  if (exact) return exact.fractionPruned;
  const withChannels = curve.filter((p) => p.channelsPruned > 0);
  if (withChannels.length === 0) return 0;
  // fraction / channels is the same constant (1 / total channels) at every point of a sweep.
  const p = withChannels[withChannels.length - 1]!;
  return (channels * p.fractionPruned) / p.channelsPruned;
}

export function pruningChart(id: string, p: ReportPruning): ChartSpec {
  const dense = p.curve.length > 60;
  const datasets: DatasetSpec[] = [
    {
      type: "line",
      label: "Clean accuracy",
      data: p.curve.map((c) => ({ x: c.fractionPruned, y: c.cleanAccuracy })),
      backgroundColor: COLORS.clean,
      borderColor: COLORS.clean,
      borderWidth: 2,
      pointRadius: dense ? 0 : 2,
      order: 2,
    },
  ];
  const asrPoints = p.curve.filter((c) => c.asr !== undefined && c.asr !== null);
  if (asrPoints.length > 0) {
    datasets.push({
      type: "line",
      label: "Attack success rate",
      data: asrPoints.map((c) => ({ x: c.fractionPruned, y: c.asr! })),
      backgroundColor: COLORS.attack,
      borderColor: COLORS.attack,
      borderWidth: 2,
      pointRadius: dense ? 0 : 2,
      order: 3,
    });
  }
  if (p.drops.length > 0) {
    datasets.push({
      type: "scatter",
      label: "Saved networks",
      data: p.drops.map((d) => ({ x: fractionForChannels(p.curve, d.channelsPruned), y: d.cleanAccuracy })),
      backgroundColor: COLORS.marker,
      borderColor: "#ffffff",
      borderWidth: 1.5,
      pointStyle: "rectRot",
      pointRadius: 7,
      pointHoverRadius: 9,
      order: 1,
      notes: p.drops.map(
        (d) =>
          `accuracy drop ≥ ${pct(d.drop)}: ${d.channelsPruned} channels pruned` +
          (d.asr !== undefined && d.asr !== null ? `, ASR ${pct(d.asr)}` : ""),
      ),
    });
  }
  return {
    id,
    type: "line",
    datasets,
    x: { type: "linear", title: `Fraction of channels pruned in ${p.layer}`, format: "percent", min: 0, max: 1 },
    y: { type: "linear", title: "Rate", format: "percent", min: 0, max: 1 },
    refLines: p.drops.map((d) => ({
      axis: "x" as const,
      value: fractionForChannels(p.curve, d.channelsPruned),
      label: `drop ≥ ${pctShort(d.drop)}`,
      color: COLORS.marker,
      labelAt: "bottom" as const,
    })),
    legend: true,
    interaction: "nearest",
  };
}

/** Labels in chart order: by label id when few, else sorted by `key` (ties by label id). */
export function chartOrder<T extends { label: number }>(items: T[], key: (t: T) => number, descending: boolean): T[] {
  const byLabel = [...items].sort((a, b) => a.label - b.label);
  if (items.length <= SORT_LABELS_ABOVE) return byLabel;
  const sign = descending ? -1 : 1;
  return byLabel.sort((a, b) => sign * (key(a) - key(b)) || a.label - b.label);
}

function perLabelChart(
  id: string,
  nc: ReportNeuralCleanse,
  value: (l: ReportNeuralCleanse["labels"][number]) => number,
  descending: boolean,
  valueName: string,
  refLines: RefLine[],
  /** Whether the bar is drawn as flagged (default: the label's overall flag). */
  isFlagged: (l: ReportNeuralCleanse["labels"][number]) => boolean = (l) => l.flagged,
  suggestedMax?: number,
): ChartSpec {
  const rows = chartOrder(nc.labels, value, descending);
  const sorted = rows.length > SORT_LABELS_ABOVE;
  const values = rows.map(value);
  const datasets: DatasetSpec[] = [
    {
      type: "bar",
      label: valueName,
      data: values,
      backgroundColor: rows.map((r) => (isFlagged(r) ? COLORS.attack : COLORS.neutral)),
      borderColor: rows.map((r) => (isFlagged(r) ? COLORS.attack : COLORS.neutral)),
      borderWidth: 0,
      barPercentage: sorted ? 1 : 0.85,
      categoryPercentage: sorted ? 1 : 0.9,
      hideInLegend: true,
      order: 2,
    },
  ];
  if (sorted && rows.some((r) => isFlagged(r))) {
    // With >1,000 labels a bar is under a pixel wide: a marker keeps each flagged label visible.
    datasets.push({
      type: "line",
      label: "Flagged as backdoor target",
      data: rows.map((r, i) => (isFlagged(r) ? values[i]! : null)),
      backgroundColor: COLORS.attack,
      borderColor: "#ffffff",
      borderWidth: 1,
      pointStyle: "triangle",
      pointRadius: 7,
      pointHoverRadius: 9,
      showLine: false,
      order: 1,
      pointLabels: rows.map((r) => (isFlagged(r) ? `label ${r.label}` : null)),
    });
  }
  return {
    id,
    type: "bar",
    labels: rows.map((r) => String(r.label)),
    datasets,
    x: {
      type: "category",
      title: sorted
        ? `${rows.length.toLocaleString("en-US")} labels, sorted by ${valueName[0]!.toLowerCase()}${valueName.slice(1)}`
        : "Label",
      hideTicks: sorted,
    },
    y: { type: "linear", title: valueName, format: "number", beginAtZero: true, grace: "8%", ...(suggestedMax !== undefined ? { suggestedMax } : {}) },
    refLines,
    legend: sorted && rows.some((r) => isFlagged(r)),
    titles: rows.map(
      (r) => `label ${r.label}: attack success ${pct(r.attackSuccess)}${isFlagged(r) ? " (flagged)" : ""}`,
    ),
    interaction: "nearest",
  };
}

/** Flagged by the given trigger family (results without per-family flags count every flag as the mask's). */
const flaggedIn = (family: "mask" | "blend") => (l: ReportNeuralCleanse["labels"][number]): boolean =>
  l.flaggedBy ? l.flaggedBy.includes(family) : family === "mask" && l.flagged;

export function ncNormChart(id: string, nc: ReportNeuralCleanse): ChartSpec {
  return perLabelChart(id, nc, (l) => l.l1Norm, false, "Mask L1 norm", [
    { axis: "y", value: nc.medianNorm, label: `median ${nc.medianNorm.toFixed(1)}`, color: COLORS.muted },
  ], flaggedIn("mask"));
}

export { ANOMALY_THRESHOLD };

export function ncAnomalyChart(id: string, nc: ReportNeuralCleanse): ChartSpec {
  return perLabelChart(id, nc, (l) => l.anomalyIndex, true, "Anomaly index", [
    { axis: "y", value: ANOMALY_THRESHOLD, label: `threshold ${ANOMALY_THRESHOLD}`, color: COLORS.attack },
  ], flaggedIn("mask"), ANOMALY_THRESHOLD * 1.2);
}

export function ncBlendAnomalyChart(id: string, nc: ReportNeuralCleanse): ChartSpec {
  return perLabelChart(id, nc, (l) => l.blendAnomalyIndex ?? 0, true, "Blend anomaly index", [
    { axis: "y", value: ANOMALY_THRESHOLD, label: `threshold ${ANOMALY_THRESHOLD}`, color: COLORS.attack },
  ], flaggedIn("blend"), ANOMALY_THRESHOLD * 1.2);
}

/** Counts of `values` in `bins` equal-width bins over [lo, hi]; values outside are clamped to the end bins. */
export function histogram(values: number[], lo: number, hi: number, bins: number): number[] {
  const counts = new Array<number>(bins).fill(0);
  const width = (hi - lo) / bins;
  for (const v of values) {
    if (!Number.isFinite(v)) continue;
    const i = width > 0 ? Math.floor((v - lo) / width) : 0;
    counts[Math.min(Math.max(i, 0), bins - 1)]!++;
  }
  return counts;
}

export function stripChart(id: string, s: ReportStrip): ChartSpec {
  const series: { label: string; values: number[]; color: string }[] = [
    { label: "Clean inputs", values: s.cleanEntropy, color: COLORS.clean },
  ];
  if (s.poisonedEntropy && s.poisonedEntropy.length > 0) {
    series.push({ label: "Poisoned inputs", values: s.poisonedEntropy, color: COLORS.attack });
  }
  let lo = s.threshold;
  let hi = s.threshold;
  for (const x of series) {
    for (const v of x.values) {
      if (!Number.isFinite(v)) continue;
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
  }
  if (!(hi - lo > 1e-9)) {
    lo -= 0.5;
    hi += 0.5;
  }
  const largest = Math.max(...series.map((x) => x.values.length), 1);
  const bins = Math.min(40, Math.max(10, Math.ceil(Math.sqrt(largest))));
  const width = (hi - lo) / bins;
  const centers = Array.from({ length: bins }, (_, i) => lo + (i + 0.5) * width);
  return {
    id,
    type: "bar",
    datasets: series.map((x) => {
      const counts = histogram(x.values, lo, hi, bins);
      const n = Math.max(x.values.length, 1);
      return {
        type: "bar" as const,
        label: `${x.label} (${x.values.length.toLocaleString("en-US")})`,
        data: centers.map((c, i) => ({ x: c, y: counts[i]! / n })),
        backgroundColor: alpha(x.color, 0.5),
        borderColor: x.color,
        borderWidth: 1,
        barPercentage: 1,
        categoryPercentage: 1,
        grouped: false,
        notes: counts.map((c) => `${c} input${c === 1 ? "" : "s"}`),
      };
    }),
    x: { type: "linear", title: "Entropy of superimposed predictions", format: "number", min: lo, max: hi, offset: false },
    y: { type: "linear", title: "Share of inputs", format: "percent", beginAtZero: true },
    refLines: [{ axis: "x", value: s.threshold, label: `threshold ${s.threshold.toFixed(3)}`, color: "#0f172a" }],
    legend: true,
    titles: centers.map((c) => `entropy ${(c - width / 2).toFixed(3)} – ${(c + width / 2).toFixed(3)}`),
    interaction: "index",
  };
}
