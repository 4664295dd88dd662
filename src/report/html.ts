// Renders a ReportData as ONE self-contained HTML file: CSS, Chart.js, the chart script and the data are
// inline and images are data: URIs, so the report opens offline from disk and can be mailed as is.
// Tables and images are rendered here (every text escaped); charts are drawn in the browser from JSON.
import { mkdir, writeFile } from "node:fs/promises";
import { dirname } from "node:path";
import { chartJsSource } from "./vendor.js";
import { CLIENT_SCRIPT } from "./client.js";
import {
  ANOMALY_THRESHOLD,
  type ChartSpec,
  ncAnomalyChart,
  ncBlendAnomalyChart,
  ncNormChart,
  pruningChart,
  stripChart,
  fractionForChannels,
} from "./charts.js";
import type {
  ReportData,
  ReportEvalResult,
  ReportEvaluation,
  ReportG,
  ReportGCalibration,
  ReportMitigation,
  ReportSelection,
  ReportModel,
  ReportNeuralCleanse,
  ReportPruning,
  ReportRate,
  ReportStrip,
} from "./types.js";

/** Number of smallest-norm labels listed in the Neural Cleanse table besides the flagged ones. */
const SMALLEST_NORM_ROWS = 10;

export function escapeHtml(s: string): string {
  return s
    .replace(/&/g, "&amp;")
    .replace(/</g, "&lt;")
    .replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;")
    .replace(/'/g, "&#39;");
}

/** JSON for a <script type="application/json"> block: "<" escaped so no text can close the element. */
export function jsonForScript(value: unknown): string {
  return JSON.stringify(value)
    .replace(/</g, "\\u003c")
    .replace(/\u2028/g, "\\u2028")
    .replace(/\u2029/g, "\\u2029");
}

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;
const PNG_PREFIX = "data:image/png;base64,";

/** A data: URI for a base64 PNG (with or without the data: prefix); anything else is a bug upstream. */
export function pngDataUri(png: string, what: string): string {
  const b64 = (png.startsWith(PNG_PREFIX) ? png.slice(PNG_PREFIX.length) : png).replace(/\s+/g, "");
  if (b64.length === 0 || b64.length % 4 !== 0 || !BASE64.test(b64)) {
    throw new Error(`report: ${what} is not base64-encoded PNG data`);
  }
  return PNG_PREFIX + b64;
}

// ---------- number formatting ----------

const ok = (v: number | undefined | null): v is number => typeof v === "number" && Number.isFinite(v);
const DASH = "—";
export const fmtPct = (v: number | undefined | null, digits = 2) => (ok(v) ? `${(v * 100).toFixed(digits)}%` : DASH);
export const fmtInt = (v: number | undefined | null) => (ok(v) ? Math.round(v).toLocaleString("en-US") : DASH);
function fmtNum(v: number | undefined | null, digits = 2): string {
  if (!ok(v)) return DASH;
  if (Math.abs(v) >= 1000) return Math.round(v).toLocaleString("en-US");
  return v.toFixed(digits);
}
function fmtSeconds(v: number): string {
  if (!ok(v)) return DASH;
  if (v < 1) return `${(v * 1000).toFixed(0)} ms`;
  if (v < 60) return `${v.toFixed(1)} s`;
  const m = Math.floor(v / 60);
  const s = Math.round(v % 60);
  return m < 60 ? `${m} min ${s} s` : `${Math.floor(m / 60)} h ${m % 60} min`;
}
/** Change in percentage points, e.g. "−1.20 pp". */
function fmtDeltaPp(before: number | undefined, after: number | undefined): string {
  if (!ok(before) || !ok(after)) return DASH;
  const d = (after - before) * 100;
  const sign = d > 0 ? "+" : d < 0 ? "−" : "±";
  return `${sign}${Math.abs(d).toFixed(2)} pp`;
}
const ratio = (a: number, n: number) => (n > 0 ? a / n : Number.NaN);

// ---------- small building blocks ----------

const e = escapeHtml;

function table(head: string[], rows: string[][], numericFrom = 1, cls = ""): string {
  const th = head.map((h, i) => `<th${i >= numericFrom ? ' class="num"' : ""}>${h}</th>`).join("");
  const body = rows
    .map((r) => `<tr>${r.map((c, i) => `<td${i >= numericFrom ? ' class="num"' : ""}>${c}</td>`).join("")}</tr>`)
    .join("\n");
  return `<div class="table-wrap"><table${cls ? ` class="${cls}"` : ""}><thead><tr>${th}</tr></thead><tbody>${body}</tbody></table></div>`;
}

function stats(items: [string, string][]): string {
  return `<dl class="stats">${items.map(([k, v]) => `<div><dt>${k}</dt><dd>${v}</dd></div>`).join("")}</dl>`;
}

function section(id: string, title: string, lead: string, body: string): string {
  return `<section id="${id}" class="card"><h2>${e(title)}</h2>${lead ? `<p class="lead">${lead}</p>` : ""}${body}</section>`;
}

function chartBox(spec: ChartSpec, height: number, aria: string): string {
  return `<div class="chart" style="height:${height}px"><canvas id="${spec.id}" role="img" aria-label="${e(aria)}"></canvas></div>`;
}

// ---------- sections ----------

function heroTiles(d: ReportData): string {
  const tiles: [string, string, string][] = [];
  const ev = d.evaluation;
  if (ev) {
    const arrow = (a: string, b?: string) => (b === undefined ? a : `${a} <span class="arrow">→</span> ${b}`);
    tiles.push([
      "Clean accuracy",
      arrow(fmtPct(ev.before.cleanAccuracy, 1), ev.after && fmtPct(ev.after.cleanAccuracy, 1)),
      ev.after ? "before → after repair" : "as given",
    ]);
    if (ok(ev.before.asr) || ok(ev.after?.asr)) {
      tiles.push([
        "Attack success",
        arrow(fmtPct(ev.before.asr, 1), ev.after && fmtPct(ev.after.asr, 1)),
        ev.after ? "before → after repair" : "as given",
      ]);
    }
  }
  if (d.neuralCleanse) {
    const f = d.neuralCleanse.flagged;
    tiles.push([
      "Backdoor targets",
      f.length === 0 ? "none" : f.length <= 3 ? `label${f.length > 1 ? "s" : ""} ${f.map((x) => e(String(x))).join(", ")}` : `${f.length} labels`,
      `Neural Cleanse, ${fmtInt(d.neuralCleanse.labels.length)} labels`,
    ]);
  }
  if (d.strip && ok(d.strip.detectionRate)) {
    tiles.push(["STRIP detection", fmtPct(d.strip.detectionRate, 1), `at ${fmtPct(d.strip.frr, 1)} false rejections`]);
  }
  if (d.g?.poisoned) {
    tiles.push([
      "G flags poisoned",
      fmtPct(ratio(d.g.poisoned.flagged, d.g.poisoned.n), 1),
      `${fmtPct(ratio(d.g.clean.flagged, d.g.clean.n), 1)} of clean inputs flagged`,
    ]);
  }
  if (tiles.length === 0) return "";
  return `<div class="tiles">${tiles
    .map(([k, v, s]) => `<div class="tile"><div class="tile-k">${e(k)}</div><div class="tile-v">${v}</div><div class="tile-s">${e(s)}</div></div>`)
    .join("")}</div>`;
}

function shape(s: (number | null)[]): string {
  return `(${s.map((x) => (x === null ? "None" : String(x))).join(", ")})`;
}

function modelSection(m: ReportModel): string {
  const head = stats([
    ["Model", e(m.name)],
    ["Source", `<code>${e(m.source)}</code>`],
    ["Input", e(shape(m.inputShape))],
    ["Classes", fmtInt(m.numClasses)],
    ["Parameters", fmtInt(m.totalParams)],
    ["Layers", fmtInt(m.layers.length)],
  ]);
  const rows = m.layers.map((l) => [
    `<code>${e(l.name)}</code>`,
    e(l.className),
    `<span class="mono">${e(shape(l.outputShape))}</span>`,
    fmtInt(l.params),
  ]);
  rows.push(["<strong>Total</strong>", "", "", `<strong>${fmtInt(m.totalParams)}</strong>`]);
  return section("model", "Model", "", head + table(["Layer", "Type", "Output shape", "Parameters"], rows, 3, "compact"));
}

function evaluationSection(ev: ReportEvaluation): string {
  const cols = ev.after ? ["Metric", "Backdoored", "Repaired", "Change"] : ["Metric", "Backdoored"];
  const row = (name: string, get: (r: ReportEvalResult) => string, delta?: (b: ReportEvalResult, a: ReportEvalResult) => string) => {
    const r = [name, get(ev.before)];
    if (ev.after) r.push(get(ev.after), delta ? delta(ev.before, ev.after) : "");
    return r;
  };
  const deltaCell = (good: "up" | "down") => (b: ReportEvalResult, a: ReportEvalResult) => {
    const key = good === "up" ? "cleanAccuracy" : "asr";
    const before = b[key];
    const after = a[key];
    const text = fmtDeltaPp(before, after);
    if (!ok(before) || !ok(after) || after === before) return text;
    const better = good === "up" ? after > before : after < before;
    return `<span class="${better ? "good" : "bad"}">${text}</span>`;
  };
  const rows = [row("Clean accuracy", (r) => fmtPct(r.cleanAccuracy), deltaCell("up"))];
  if (ok(ev.before.asr) || ok(ev.after?.asr)) rows.push(row("Attack success rate", (r) => fmtPct(r.asr), deltaCell("down")));
  // Several targets: each one's rate as well (the overall one averages them by their number of inputs).
  for (const { target } of ev.before.asrByTarget ?? []) {
    const of = (r: ReportEvalResult): ReportEvalResult => ({ ...r, asr: r.asrByTarget?.find((t) => t.target === target)?.asr });
    rows.push(row(`… to target ${target}`, (r) => fmtPct(of(r).asr), (b, a) => deltaCell("down")(of(b), of(a))));
  }
  rows.push(row("Clean inputs", (r) => fmtInt(r.nClean)));
  if (ev.before.nPoisoned !== undefined || ev.after?.nPoisoned !== undefined) {
    rows.push(row("Poisoned inputs", (r) => fmtInt(r.nPoisoned)));
  }
  return section(
    "evaluation",
    "Accuracy and attack success",
    "Clean accuracy on held-out clean inputs; attack success rate is the share of triggered inputs classified as the attacker's target.",
    table(cols, rows, 1, "metrics"),
  );
}

function pruningSection(p: ReportPruning, charts: ChartSpec[]): string {
  const spec = pruningChart("chart-pruning", p);
  charts.push(spec);
  const rows = p.drops.map((d) => [
    `≥ ${fmtPct(d.drop, 1)}`,
    fmtInt(d.channelsPruned),
    fmtPct(fractionForChannels(p.curve, d.channelsPruned), 1),
    fmtPct(d.cleanAccuracy),
    fmtPct(d.asr),
  ]);
  const last = p.curve[p.curve.length - 1];
  const body =
    stats([
      ["Layer", `<code>${e(p.layer)}</code>`],
      ["Channel order", e(p.order)],
      ["Steps", fmtInt(p.curve.length)],
      ["Pruned at end", last ? `${fmtInt(last.channelsPruned)} (${fmtPct(last.fractionPruned, 0)})` : DASH],
    ]) +
    chartBox(spec, 340, `Clean accuracy and attack success rate as channels of ${p.layer} are pruned`) +
    (rows.length
      ? `<h3>Saved networks</h3>` +
        table(["Accuracy drop", "Channels pruned", "Fraction", "Clean accuracy", "Attack success"], rows, 1)
      : "");
  return section(
    "pruning",
    "Pruning",
    `Channels of <code>${e(p.layer)}</code> are removed one at a time; a network is saved when clean accuracy first falls by each threshold (◆ markers).`,
    body,
  );
}

function ncSection(nc: ReportNeuralCleanse, charts: ChartSpec[]): string {
  const norm = ncNormChart("chart-nc-norm", nc);
  const anomaly = ncAnomalyChart("chart-nc-anomaly", nc);
  charts.push(norm, anomaly);
  const hasBlend = nc.labels.some((l) => l.blendAlpha !== undefined);
  const hasConfidence = nc.labels.some((l) => l.confidence !== undefined);
  const blendChart = hasBlend ? ncBlendAnomalyChart("chart-nc-blend", nc) : null;
  if (blendChart) charts.push(blendChart);
  const byLabel = new Map(nc.labels.map((l) => [l.label, l]));
  const smallest = [...nc.labels].sort((a, b) => a.l1Norm - b.l1Norm || a.label - b.label);
  const listed = new Set<number>(nc.flagged);
  for (const l of smallest.slice(0, SMALLEST_NORM_ROWS)) listed.add(l.label);
  const rows = smallest
    .filter((l) => listed.has(l.label))
    .map((l) => [
      `<strong>${e(String(l.label))}</strong>`,
      fmtNum(l.l1Norm),
      fmtNum(l.anomalyIndex),
      fmtPct(l.attackSuccess, 1),
      ...(hasBlend ? [l.blendAlpha === undefined ? "—" : fmtNum(l.blendAlpha, 3), l.blendAnomalyIndex === undefined ? "—" : fmtNum(l.blendAnomalyIndex)] : []),
      ...(hasConfidence ? [l.confidence === undefined ? "—" : fmtPct(l.confidence, 1)] : []),
      (l.flagged ? `<span class="badge bad">flagged${l.flaggedBy?.length ? ` (${e(l.flaggedBy.join(", "))})` : ""}</span>` : `<span class="badge">no</span>`) +
        // Flagged: every test it passed; not flagged: the tests it failed (why a small norm is not a flag).
        (l.reasons?.length ? `<ul class="note">${l.reasons.map((r) => `<li>${e(r)}</li>`).join("")}</ul>` : ""),
    ]);
  const flagged =
    nc.flagged.length === 0
      ? `<span class="badge good">none</span>`
      : nc.flagged.map((f) => `<span class="badge bad">label ${e(String(f))}</span>`).join(" ");
  const sorted = nc.labels.length > 64;
  const body =
    stats([
      ["Labels analysed", fmtInt(nc.labels.length)],
      ["Median L1 norm", fmtNum(nc.medianNorm)],
      [nc.scale === "log" ? "MAD of ln(L1)" : "MAD", fmtNum(nc.mad, nc.scale === "log" ? 3 : 2)],
      ["Flagged labels", flagged],
    ]) +
    `<h3>Mask L1 norm per label</h3>` +
    `<p class="note">${sorted ? "Sorted from smallest to largest norm; hover a bar for its label. " : ""}A backdoor target needs an unusually small trigger: flagged labels are <span class="swatch bad"></span> red.</p>` +
    chartBox(norm, 300, "Mask L1 norm per label") +
    `<h3>Anomaly index per label</h3>` +
    `<p class="note">${sorted ? "Sorted from largest to smallest index. " : ""}Labels with a below-median norm and an anomaly index above ${ANOMALY_THRESHOLD} (dashed line) are flagged.</p>` +
    chartBox(anomaly, 260, "Anomaly index per label with the threshold at 2") +
    (blendChart
      ? `<h3>Blend anomaly index per label</h3><p class="note">The blend family reverses one blend weight α for the whole image (blended triggers); its own statistics flag labels with an unusually small α.</p>` +
        chartBox(blendChart, 260, "Blend-family anomaly index per label with the threshold at 2")
      : "") +
    `<h3>Flagged and smallest-norm labels</h3>` +
    table(["Label", "Mask L1 norm", "Anomaly index", "Attack success", ...(hasBlend ? ["Blend α", "Blend anomaly"] : []), ...(hasConfidence ? ["Confidence"] : []), "Flagged"], rows, 1) +
    (hasConfidence
      ? `<p class="note">A flag needs a small-side anomaly index above ${ANOMALY_THRESHOLD}, a false-discovery rate under the scan's level over all labels, and (with enough held-out images) a trigger that works on held-out images. Confidence: 1 − the false-discovery rate, scaled down by weak held-out success.</p>`
      : "") +
    triggerGallery(nc, byLabel);
  return section(
    "neural-cleanse",
    "Neural Cleanse",
    "For every label, the smallest trigger (mask × pattern) that sends clean inputs to that label is reverse-engineered. Attack success is the share of stamped clean inputs that reach the label.",
    body,
  );
}

function triggerGallery(nc: ReportNeuralCleanse, byLabel: Map<number, ReportNeuralCleanse["labels"][number]>): string {
  if (nc.triggers.length === 0) return "";
  const flagged = new Set(nc.flagged);
  const triggers = [...nc.triggers].sort((a, b) => {
    const fa = flagged.has(a.label) ? 0 : 1;
    const fb = flagged.has(b.label) ? 0 : 1;
    const na = byLabel.get(a.label)?.l1Norm ?? Infinity;
    const nb = byLabel.get(b.label)?.l1Norm ?? Infinity;
    return fa - fb || na - nb || a.label - b.label;
  });
  const cards = triggers.map((t) => {
    const info = byLabel.get(t.label);
    // A label can have a trigger of each family: the card is marked flagged when its own family flagged it.
    const family = t.family ?? "mask";
    const isFlagged = info?.flaggedBy ? info.flaggedBy.includes(family) : flagged.has(t.label);
    const fig = (png: string, caption: string) =>
      `<figure><img src="${pngDataUri(png, `trigger ${t.label} ${caption.toLowerCase()} image`)}" alt="${e(
        `${caption} for label ${t.label}`,
      )}"><figcaption>${e(caption)}</figcaption></figure>`;
    return (
      `<div class="trigger${isFlagged ? " flagged" : ""}">` +
      `<div class="trigger-head"><span class="trigger-label">Label ${e(String(t.label))}${t.family === "blend" ? " (blend trigger)" : ""}</span>` +
      (isFlagged ? `<span class="badge bad">flagged</span>` : `<span class="badge">small norm</span>`) +
      `</div>` +
      (info
        ? t.family === "blend"
          ? `<div class="trigger-meta">blend α ${fmtNum(info.blendAlpha ?? NaN, 3)} · blend anomaly ${fmtNum(info.blendAnomalyIndex ?? NaN)}</div>`
          : `<div class="trigger-meta">L1 norm ${fmtNum(info.l1Norm)} · anomaly ${fmtNum(info.anomalyIndex)} · attack success ${fmtPct(info.attackSuccess, 1)}</div>`
        : "") +
      `<div class="figs">${fig(t.maskPng, "Mask")}${fig(t.patternPng, "Pattern")}${fig(t.stampedPng, "Stamped")}${fig(t.cleanPng, "Clean")}</div>` +
      `</div>`
    );
  });
  return `<h3>Reversed triggers</h3><p class="note">Mask (white = trigger pixels), pattern, a clean input stamped with the trigger, and the same input without it.</p><div class="triggers">${cards.join("")}</div>`;
}

function stripSection(s: ReportStrip, charts: ChartSpec[]): string {
  const spec = stripChart("chart-strip", s);
  charts.push(spec);
  const items: [string, string][] = [
    ["Entropy threshold", fmtNum(s.threshold, 3)],
    ["False rejections (clean)", `${fmtPct(s.frr)} <span class="sub">target ${fmtPct(s.frrTarget)}</span>`],
  ];
  if (ok(s.detectionRate)) items.push(["Poisoned inputs detected", fmtPct(s.detectionRate)]);
  items.push(["Clean inputs", fmtInt(s.cleanEntropy.length)]);
  if (s.poisonedEntropy) items.push(["Poisoned inputs", fmtInt(s.poisonedEntropy.length)]);
  return section(
    "strip",
    "STRIP",
    "Each input is superimposed on clean images; a trigger keeps the prediction fixed, so poisoned inputs have low entropy. Inputs below the threshold are rejected.",
    stats(items) + chartBox(spec, 300, "Histogram of STRIP entropy for clean and poisoned inputs with the threshold"),
  );
}

function gBar(parts: { label: string; count: number; cls: string }[], n: number): string {
  const segs = parts
    .filter((p) => p.count > 0 && n > 0)
    .map((p) => `<span class="seg ${p.cls}" style="width:${((100 * p.count) / n).toFixed(3)}%" title="${e(`${p.label}: ${p.count}`)}"></span>`)
    .join("");
  const legend = parts
    .map((p) => `<span class="key"><span class="swatch ${p.cls}"></span>${e(p.label)} <strong>${fmtInt(p.count)}</strong> <span class="sub">(${fmtPct(ratio(p.count, n), 1)})</span></span>`)
    .join("");
  return `<div class="stack">${segs}</div><div class="stack-legend">${legend}</div>`;
}

/** "1,234 (12.3%)": a count with its share of n. */
function countShare(count: number, n: number): string {
  return `${fmtInt(count)} <span class="sub">(${fmtPct(ratio(count, n), 1)})</span>`;
}

function gSection(g: ReportG): string {
  const c = g.clean;
  const rows: string[][] = [
    [
      "Clean",
      fmtInt(c.n),
      countShare(c.correct, c.n),
      countShare(c.flagged, c.n),
      DASH,
    ],
  ];
  let bars =
    `<h3>Clean inputs</h3>` +
    gBar(
      [
        { label: "Correct", count: c.correct, cls: "good" },
        { label: "Wrong label", count: Math.max(c.n - c.correct - c.flagged, 0), cls: "neutral" },
        { label: "Flagged as backdoor", count: c.flagged, cls: "warn" },
      ],
      c.n,
    );
  const p = g.poisoned;
  if (p) {
    rows.push([
      "Poisoned",
      fmtInt(p.n),
      DASH,
      countShare(p.flagged, p.n),
      countShare(p.attackSuccess, p.n),
    ]);
    bars +=
      `<h3>Poisoned inputs</h3>` +
      gBar(
        [
          { label: "Flagged as backdoor", count: p.flagged, cls: "good" },
          { label: "Other label", count: Math.max(p.n - p.flagged - p.attackSuccess, 0), cls: "neutral" },
          { label: "Attack success", count: p.attackSuccess, cls: "bad" },
        ],
        p.n,
      );
  }
  return section(
    "g",
    "Repaired network G",
    `G answers one of ${fmtInt(g.numClasses)} labels, or label ${fmtInt(g.numClasses)} meaning “backdoored input”.`,
    table(["Inputs", "Count", "Correct label", "Flagged as backdoor", "Attack success"], rows, 1) + bars,
  );
}

const MITIGATION_LEAD: Record<ReportMitigation["method"], string> = {
  "nc-prune":
    "Neural Cleanse pruning: the neurons that react most to the reversed triggers (largest mean activation increase from clean to stamped inputs) were pruned a step at a time until the reversed triggers stopped working or clean accuracy dropped too far.",
  unlearn:
    "Neural Cleanse unlearning: B was fine-tuned on clean data where a share of the images carry a reversed trigger but keep their true label, so the network learns that the trigger means nothing.",
};

const STOP_TEXT: Record<string, string> = {
  threshold: "reversed triggers below the success threshold",
  "max-drop": "clean-accuracy drop limit reached",
  "all-pruned": "every neuron pruned",
};

function mitigationSection(m: ReportMitigation): string {
  const flagged = m.flagged.length
    ? m.flagged.map((l) => `<span class="badge bad">label ${fmtInt(l)}</span>`).join(" ")
    : `<span class="badge good">none</span>`;
  const items: [string, string][] = [
    ["Method", e(m.method)],
    ["Flagged labels", flagged],
    ["Triggers from", e(m.triggerSource)],
  ];
  if (m.layer !== undefined) items.push(["Layer", `<code>${e(m.layer)}</code>`]);
  if (ok(m.neurons) && ok(m.neuronsPruned)) items.push(["Neurons pruned", `${fmtInt(m.neuronsPruned)} of ${fmtInt(m.neurons)} <span class="sub">(${fmtPct(ratio(m.neuronsPruned, m.neurons), 1)})</span>`]);
  if (m.stop !== undefined) items.push(["Stopped", e(STOP_TEXT[m.stop] ?? m.stop)]);
  let body = stats(items);
  if (ok(m.neurons) && ok(m.neuronsPruned)) {
    body += gBar(
      [
        { label: "Pruned", count: m.neuronsPruned, cls: "warn" },
        { label: "Kept", count: Math.max(m.neurons - m.neuronsPruned, 0), cls: "neutral" },
      ],
      m.neurons,
    );
  }
  const settings = Object.entries(m.settings ?? {});
  if (settings.length) body += `<h3>Settings</h3>` + table(["Setting", "Value"], settings.map(([k, v]) => [`<code>${e(k)}</code>`, e(String(v))]), 1, "compact");
  const lead = m.flagged.length ? MITIGATION_LEAD[m.method] : "Neural Cleanse flagged no label, so there was no reversed trigger to repair with and the network was left as it was.";
  return section("mitigation", "Neural Cleanse repair", lead, body);
}

/** "1.20% [0.80%, 1.70%]": a rate with its 95% interval. */
function rateText(r: ReportRate): string {
  return `${fmtPct(r.rate)} <span class="sub">[${fmtPct(r.ci95[0])}, ${fmtPct(r.ci95[1])}]</span>`;
}

/** A rate on a 0..max axis: its 95% interval as a band, the rate as a dot, and an optional target line. */
function intervalBar(r: ReportRate, max: number, target?: number): string {
  const at = (v: number) => `${Math.min(100, Math.max(0, (100 * v) / max)).toFixed(3)}%`;
  const band = `<span class="ci-band" style="left:${at(r.ci95[0])};width:calc(${at(r.ci95[1])} - ${at(r.ci95[0])})"></span>`;
  const dot = `<span class="ci-dot" style="left:${at(r.rate)}" title="${e(`${fmtPct(r.rate)} (${fmtInt(r.count)} of ${fmtInt(r.n)})`)}"></span>`;
  const line = target === undefined ? "" : `<span class="ci-target" style="left:${at(target)}" title="${e(`target ${fmtPct(target)}`)}"></span>`;
  return `<div class="ci"><span class="ci-axis">0</span><span class="ci-track">${band}${line}${dot}</span><span class="ci-axis">${fmtPct(max, max < 0.1 ? 1 : 0)}</span></div>`;
}

function gCalibrationSection(c: ReportGCalibration): string {
  const guarantee = c.guarantee === "marginal" ? "in expectation (marginal)" : `with probability ${fmtPct(c.guarantee.confidence, 0)} over the held-out draw`;
  const items: [string, string][] = [
    ["False-alarm target", fmtPct(c.fprTarget)],
    ["Guarantee", e(guarantee)],
    ["Held-out clean images", c.heldOut.reference === undefined ? fmtInt(c.heldOut.n) : c.heldOut.referenceOutside ? `${fmtInt(c.heldOut.n)} calibration (ranked against ${fmtInt(c.heldOut.reference)} other clean images)` : `${fmtInt(c.heldOut.n)} (${fmtInt(c.heldOut.reference)} reference, ${fmtInt(c.heldOut.n - c.heldOut.reference)} calibration)`],
    ["Flagged there", countShare(c.heldOut.flagged, c.heldOut.n)],
  ];
  if (c.cleanTest) items.push(["False alarms, clean test", rateText(c.cleanTest)]);
  if (c.poisoned) items.push(["Poisoned detected", rateText(c.poisoned)]);
  for (const t of c.poisonedByTarget ?? []) items.push([`Poisoned detected, target ${t.target}`, rateText(t)]);
  const fit = (m: NonNullable<ReportGCalibration["mahalanobis"]>) => e(`${m.layer} features (d=${m.dim}), ${m.covariance} covariance, shrinkage ${m.shrinkage.toFixed(3)}, ${m.fitImages} clean images${m.sparseClasses ? `, ${m.sparseClasses} sparse class(es)` : ""}`);
  if (c.mahalanobis) items.push(["Mahalanobis fit", fit(c.mahalanobis)]);
  if (c.mahalanobisGap) items.push(["Class-gap fit", fit(c.mahalanobisGap)]);
  let body = stats(items);
  for (const n of c.notes ?? []) body += `<p class="note">${e(n)}</p>`;
  body +=
    `<h3>Signals</h3>` +
    table(
      ["Signal", "Threshold (flags above)"],
      c.signals.map((sig, j) => {
        const t = c.thresholds[j];
        return [e(sig), ok(t) ? fmtNum(t, 4) : `<span class="sub">never flags</span>`];
      }),
      1,
      "compact",
    );
  if (c.cleanTest) {
    const max = Math.max(c.cleanTest.ci95[1], c.fprTarget) * 1.25 || 1;
    body += `<h3>False alarms on clean test data</h3><p class="note">${fmtInt(c.cleanTest.count)} of ${fmtInt(c.cleanTest.n)} clean inputs flagged; the band is the 95% interval, the line the target.</p>` + intervalBar(c.cleanTest, max, c.fprTarget);
  }
  if (c.poisoned) {
    body += `<h3>Detection on poisoned data</h3><p class="note">${fmtInt(c.poisoned.count)} of ${fmtInt(c.poisoned.n)} poisoned inputs flagged; the band is the 95% interval.</p>` + intervalBar(c.poisoned, 1);
  }
  return section(
    "g-calibration",
    "Calibrated G",
    `G flags an input when any signal exceeds its threshold. The thresholds were set on held-out clean images the repair never saw so that at most ${fmtPct(c.fprTarget)} of clean inputs are flagged ${e(guarantee)}.`,
    body,
  );
}

function selectionSection(sel: ReportSelection): string {
  const rows = sel.candidates.map((c) => [
    (c.defense === sel.chosen ? `<strong>${e(c.defense)}</strong> <span class="badge good">chosen</span>` : e(c.defense)) +
      (c.overBudget ? ` <span class="badge bad">over its --max-drop: ${(100 * c.overBudget.drop).toFixed(1)} points</span>` : ""),
    fmtPct(c.cleanAccuracy, 1),
    fmtPct(c.triggerSuccess, 1),
    fmtPct(c.adversarialSuccess, 1),
    c.reinverted?.length ? e(c.reinverted.map((r) => `${r.label}: L1 ${r.l1Norm.toFixed(1)}${r.index === undefined || r.index === null ? "" : ` (index ${r.index.toFixed(2)})`} ${r.counts ? `≤ ${r.bound.toFixed(1)}, ${(100 * r.success).toFixed(1)}%` : `> ${r.bound.toFixed(1)}, not counted`}`).join("; ")) : "—",
    fmtSeconds(c.seconds),
  ]);
  const skipped = sel.skipped?.length ? `<p class="note">Not run: ${e(sel.skipped.join(", "))}.</p>` : "";
  return section(
    "selection",
    "Choice of repair (auto)",
    `Each candidate was scored on ${fmtInt(sel.selectionSize)} held-out clean images no candidate saw; the poisoned data played no part. ${e(sel.reason)}.`,
    table(["Candidate", "Clean accuracy", "Reversed-trigger success", "Adversarial success", "Re-inverted trigger", "Time"], rows, 1) + `<p class="note">Rule: ${e(sel.rule)}.</p>` + skipped,
  );
}

function timingsSection(t: Record<string, number>): string {
  const entries = Object.entries(t);
  const total = entries.reduce((s, [, v]) => s + (ok(v) ? v : 0), 0);
  const max = Math.max(...entries.map(([, v]) => (ok(v) ? v : 0)), 1e-9);
  const rows = entries.map(([k, v]) => [
    e(k),
    fmtSeconds(v),
    `<span class="tbar"><span style="width:${ok(v) ? ((100 * v) / max).toFixed(2) : 0}%"></span></span>`,
  ]);
  rows.push(["<strong>Total</strong>", `<strong>${fmtSeconds(total)}</strong>`, ""]);
  return section("timings", "Timings", "", table(["Step", "Time", ""], rows, 1, "compact timings"));
}

const NAV: [keyof ReportData, string, string][] = [
  ["model", "model", "Model"],
  ["evaluation", "evaluation", "Accuracy"],
  ["pruning", "pruning", "Pruning"],
  ["neuralCleanse", "neural-cleanse", "Neural Cleanse"],
  ["strip", "strip", "STRIP"],
  ["mitigation", "mitigation", "NC repair"],
  ["g", "g", "Repaired G"],
  ["gCalibration", "g-calibration", "Calibrated G"],
  ["selection", "selection", "Choice of repair"],
  ["timings", "timings", "Timings"],
];

/** The whole report as one HTML document with no external resources. */
export function renderReport(data: ReportData): string {
  const charts: ChartSpec[] = [];
  const title = data.title ?? "Backdoor defense report";
  const sections: string[] = [];
  if (data.model) sections.push(modelSection(data.model));
  if (data.evaluation) sections.push(evaluationSection(data.evaluation));
  if (data.pruning) sections.push(pruningSection(data.pruning, charts));
  if (data.neuralCleanse) sections.push(ncSection(data.neuralCleanse, charts));
  if (data.strip) sections.push(stripSection(data.strip, charts));
  if (data.mitigation) sections.push(mitigationSection(data.mitigation));
  if (data.g) sections.push(gSection(data.g));
  if (data.gCalibration) sections.push(gCalibrationSection(data.gCalibration));
  if (data.selection) sections.push(selectionSection(data.selection));
  if (data.timings && Object.keys(data.timings).length > 0) sections.push(timingsSection(data.timings));

  const nav = NAV.filter(([k]) => data[k] !== undefined)
    .map(([, id, label]) => `<a href="#${id}">${e(label)}</a>`)
    .join("");
  const meta = [
    data.createdAt ? `<span>${e(data.createdAt)}</span>` : "",
    data.command ? `<code class="cmd">${e(data.command)}</code>` : "",
  ]
    .filter(Boolean)
    .join("");
  const scripts = charts.length
    ? `<script type="application/json" id="chart-specs">${jsonForScript(charts)}</script>\n` +
      `<script>${chartJsSource()}</script>\n<script>${CLIENT_SCRIPT}</script>`
    : "";

  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<meta name="generator" content="badnet-defense">
<title>${e(title)}</title>
<style>${CSS}</style>
</head>
<body>
<header class="hero"><div class="wrap">
<div class="eyebrow">badnet-defense report</div>
<h1>${e(title)}</h1>
${meta ? `<div class="meta">${meta}</div>` : ""}
${heroTiles(data)}
</div></header>
${nav ? `<nav class="toc"><div class="wrap">${nav}</div></nav>` : ""}
<main class="wrap">
${sections.length ? sections.join("\n") : `<section class="card"><p class="lead">This run recorded no results.</p></section>`}
</main>
<footer class="wrap">Generated by badnet-defense. The data behind this report is embedded below as JSON (<code>#report-data</code>).</footer>
<script type="application/json" id="report-data">${jsonForScript(data)}</script>
${scripts}
</body>
</html>
`;
}

/** Render `data` and write it to `path`, creating the folder if needed. */
export async function writeReport(path: string, data: ReportData): Promise<void> {
  const html = renderReport(data);
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, html, "utf8");
}

const CSS = `
:root{--bg:#f5f7fb;--card:#fff;--ink:#0f172a;--ink2:#334155;--ink3:#64748b;--line:#e2e8f0;--blue:#2563eb;
--red:#dc2626;--green:#16a34a;--amber:#d97706;--slate:#94a3b8;
--mono:ui-monospace,SFMono-Regular,Menlo,Consolas,"Liberation Mono",monospace}
*{box-sizing:border-box}
html{scroll-behavior:smooth}
body{margin:0;background:var(--bg);color:var(--ink);font:15px/1.55 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
.wrap{max-width:1120px;margin:0 auto;padding:0 24px}
code,.mono{font-family:var(--mono);font-size:.88em}
.hero{background:linear-gradient(135deg,#0f172a 0%,#1e293b 60%,#1e3a8a 100%);color:#f8fafc;padding:36px 0 28px}
.eyebrow{text-transform:uppercase;letter-spacing:.12em;font-size:12px;color:#93c5fd;font-weight:600}
.hero h1{margin:6px 0 8px;font-size:30px;line-height:1.2;font-weight:700}
.meta{display:flex;flex-wrap:wrap;gap:8px 16px;align-items:center;color:#cbd5e1;font-size:13px}
.cmd{background:rgba(255,255,255,.08);border:1px solid rgba(255,255,255,.14);padding:3px 8px;border-radius:6px;color:#e2e8f0;word-break:break-all}
.tiles{display:grid;grid-template-columns:repeat(auto-fit,minmax(196px,1fr));gap:12px;margin-top:22px}
.tile{background:rgba(255,255,255,.07);border:1px solid rgba(255,255,255,.12);border-radius:12px;padding:12px 16px}
.tile-k{font-size:12px;color:#93c5fd;text-transform:uppercase;letter-spacing:.06em;font-weight:600}
.tile-v{font-size:21px;white-space:nowrap;font-weight:700;margin:2px 0;font-variant-numeric:tabular-nums}
.tile-v .arrow{color:#64748b;font-weight:400}
.tile-s{font-size:12px;color:#94a3b8}
.toc{position:sticky;top:0;z-index:5;background:rgba(255,255,255,.92);backdrop-filter:blur(6px);border-bottom:1px solid var(--line)}
.toc .wrap{display:flex;gap:4px;overflow-x:auto;padding-top:8px;padding-bottom:8px}
.toc a{color:var(--ink2);text-decoration:none;font-size:13px;font-weight:600;padding:5px 10px;border-radius:999px;white-space:nowrap}
.toc a:hover{background:#eef2ff;color:var(--blue)}
main.wrap{padding-top:26px;padding-bottom:8px}
.card{background:var(--card);border:1px solid var(--line);border-radius:14px;padding:22px 26px;margin:0 0 22px;box-shadow:0 1px 2px rgba(15,23,42,.04),0 4px 16px rgba(15,23,42,.04);scroll-margin-top:56px}
.card h2{margin:0 0 4px;font-size:20px}
.card h3{margin:22px 0 8px;font-size:15px;color:var(--ink2)}
.lead{margin:0 0 14px;color:var(--ink3);max-width:80ch}
.note{margin:-2px 0 8px;color:var(--ink3);font-size:13px}
.stats{display:flex;flex-wrap:wrap;gap:10px;margin:10px 0 16px}
.stats div{background:#f8fafc;border:1px solid var(--line);border-radius:10px;padding:8px 14px;min-width:120px}
.stats dt{font-size:11px;text-transform:uppercase;letter-spacing:.06em;color:var(--ink3);font-weight:600}
.stats dd{margin:2px 0 0;font-weight:600;font-variant-numeric:tabular-nums;word-break:break-word}
.table-wrap{overflow-x:auto}
table{border-collapse:collapse;width:100%;font-size:14px;font-variant-numeric:tabular-nums}
th{text-align:left;font-size:12px;text-transform:uppercase;letter-spacing:.05em;color:var(--ink3);font-weight:600;border-bottom:2px solid var(--line);padding:8px 10px}
td{border-bottom:1px solid var(--line);padding:7px 10px;vertical-align:middle}
tbody tr:hover{background:#f8fafc}
tbody tr:last-child td{border-bottom:none}
table.compact td{padding:5px 10px}
.num{text-align:right}
table.metrics td:first-child{font-weight:600}
.good{color:var(--green);font-weight:600}
.bad{color:var(--red);font-weight:600}
.sub{color:var(--ink3);font-weight:400;font-size:.9em}
.badge{display:inline-block;font-size:12px;font-weight:600;padding:1px 8px;border-radius:999px;background:#f1f5f9;color:var(--ink3);border:1px solid var(--line)}
.badge.bad{background:#fef2f2;color:var(--red);border-color:#fecaca}
.badge.good{background:#f0fdf4;color:var(--green);border-color:#bbf7d0}
.chart{position:relative;width:100%;margin:6px 0 8px}
.swatch{display:inline-block;width:10px;height:10px;border-radius:3px;vertical-align:baseline;margin-right:5px;background:var(--slate)}
.swatch.bad,.seg.bad{background:var(--red)}
.swatch.good,.seg.good{background:var(--green)}
.swatch.warn,.seg.warn{background:var(--amber)}
.swatch.neutral,.seg.neutral{background:var(--slate)}
.triggers{display:grid;grid-template-columns:repeat(auto-fill,minmax(480px,1fr));gap:14px}
.trigger{border:1px solid var(--line);border-radius:12px;padding:12px 14px;background:#fcfdfe}
.trigger.flagged{border-color:#fca5a5;background:#fffafa}
.trigger-head{display:flex;justify-content:space-between;align-items:center}
.trigger-label{font-weight:700}
.trigger-meta{font-size:12px;color:var(--ink3);margin:2px 0 8px}
.figs{display:flex;gap:10px;flex-wrap:wrap}
figure{margin:0;text-align:center}
figure img{display:block;width:104px;height:auto;image-rendering:pixelated;border-radius:6px;border:1px solid var(--line);background:#000}
figcaption{font-size:12px;color:var(--ink3);margin-top:4px}
.stack{display:flex;height:22px;border-radius:6px;overflow:hidden;background:#f1f5f9;border:1px solid var(--line)}
.seg{display:block;height:100%}
.stack-legend{display:flex;flex-wrap:wrap;gap:6px 18px;margin:8px 0 4px;font-size:13px;color:var(--ink2)}
.tbar{display:block;height:8px;min-width:160px;background:#f1f5f9;border-radius:4px;overflow:hidden}
.tbar span{display:block;height:100%;background:var(--blue);border-radius:4px}
table.timings td:nth-child(3){width:45%}
.ci{display:flex;align-items:center;gap:10px;margin:6px 0 4px;font-size:12px;color:var(--ink3)}
.ci-track{position:relative;flex:1;height:18px;background:#f1f5f9;border:1px solid var(--line);border-radius:6px}
.ci-band{position:absolute;top:3px;bottom:3px;background:#93c5fd;border-radius:4px;min-width:2px}
.ci-dot{position:absolute;top:50%;width:10px;height:10px;margin:-5px 0 0 -5px;border-radius:50%;background:var(--blue);border:2px solid #fff}
.ci-target{position:absolute;top:-4px;bottom:-4px;width:2px;margin-left:-1px;background:var(--red)}
footer.wrap{color:var(--ink3);font-size:12px;padding-top:4px;padding-bottom:32px}
@media (max-width:640px){.card{padding:16px}.triggers{grid-template-columns:1fr}.hero h1{font-size:24px}}
@media print{.toc{display:none}.card{break-inside:avoid;box-shadow:none}body{background:#fff}}
`;
