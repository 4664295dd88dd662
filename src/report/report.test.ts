import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { renderReport, writeReport, escapeHtml, jsonForScript, pngDataUri } from "./html.js";
import { chartJsSource } from "./vendor.js";
import {
  chartOrder,
  fractionForChannels,
  histogram,
  ncAnomalyChart,
  ncNormChart,
  SORT_LABELS_ABOVE,
  stripChart,
  pruningChart,
  type ChartSpec,
} from "./charts.js";
import { syntheticReport } from "./testdata.js";
import type { ReportData } from "./types.js";

const ALL_SECTIONS = ["model", "evaluation", "pruning", "neural-cleanse", "strip", "mitigation", "g", "g-calibration", "timings"];

/** Text of the <script type="application/json" id=...> element, up to the first "</script>". */
function jsonBlock(html: string, id: string): string | undefined {
  const open = `<script type="application/json" id="${id}">`;
  const start = html.indexOf(open);
  if (start < 0) return undefined;
  const from = start + open.length;
  return html.slice(from, html.indexOf("</script>", from));
}

function sectionIds(html: string): string[] {
  return [...html.matchAll(/<section id="([^"]+)"/g)].map((m) => m[1]!);
}

const full = syntheticReport();
const html = renderReport(full);

test("a full synthetic run renders every section, chart and image", () => {
  assert.ok(html.startsWith("<!doctype html>"));
  assert.deepEqual(sectionIds(html), ALL_SECTIONS);
  const canvases = [...html.matchAll(/<canvas id="([^"]+)"/g)].map((m) => m[1]);
  assert.deepEqual(canvases, ["chart-pruning", "chart-nc-norm", "chart-nc-anomaly", "chart-strip"]);
  // One <img> per trigger image, each the given PNG as a data: URI, scaled up without smoothing.
  const imgs = [...html.matchAll(/<img src="([^"]+)"/g)].map((m) => m[1]);
  const triggers = full.neuralCleanse!.triggers;
  assert.equal(imgs.length, 4 * triggers.length);
  for (const t of triggers) {
    for (const png of [t.maskPng, t.patternPng, t.stampedPng, t.cleanPng]) {
      assert.ok(imgs.includes(`data:image/png;base64,${png}`));
    }
  }
  assert.match(html, /image-rendering:\s*pixelated/);
  // Chart.js itself is inlined, followed by the script that draws the charts.
  assert.ok(html.includes(chartJsSource()));
  assert.match(html, /new Chart\(/);
});

test("the data is embedded as JSON that round-trips, and the chart specs parse", () => {
  const data = JSON.parse(jsonBlock(html, "report-data")!);
  assert.deepEqual(data, JSON.parse(JSON.stringify(full)));
  const specs = JSON.parse(jsonBlock(html, "chart-specs")!) as ChartSpec[];
  assert.deepEqual(
    specs.map((s) => s.id),
    ["chart-pruning", "chart-nc-norm", "chart-nc-anomaly", "chart-strip"],
  );
});

test("nothing is loaded from outside the file", () => {
  // Everything except the inlined Chart.js bundle, which is checked on its own below.
  const ours = html.replace(chartJsSource(), "");
  assert.ok(ours.length < html.length);
  // Every src/href is a data: URI or an in-page anchor.
  const refs = [...ours.matchAll(/\b(?:src|href|action|poster|srcset)\s*=\s*["']?([^"'\s>]*)/gi)].map((m) => m[1]!);
  assert.ok(refs.length > 0);
  for (const r of refs) assert.ok(r.startsWith("data:image/png;base64,") || r.startsWith("#"), `reference ${r.slice(0, 60)}`);
  assert.ok(!/<link\b/i.test(ours), "no <link>");
  assert.ok(!/@import/i.test(ours), "no CSS @import");
  assert.ok(!/url\(\s*["']?(?!data:)/i.test(ours), "no CSS url() other than data:");
  assert.ok(!/https?:\/\//i.test(ours), "no http(s) URL anywhere in the page");
  assert.ok(!/["'(]\/\/[a-z0-9.-]+\.[a-z]{2,}/i.test(ours), "no protocol-relative URL");
  // Chart.js only mentions URLs in its licence comments (kept intact), never loads one.
  const bundleUrls = [...chartJsSource().matchAll(/https?:\/\/[^\s"'`)]+/g)].map((m) => m[0]);
  for (const u of bundleUrls) {
    const line = chartJsSource().split("\n").find((l) => l.includes(u))!;
    assert.match(line.trim(), /^(\/\*|\*)/, `${u} only in a comment`);
  }
  // The browser is told to refuse any load anyway.
  assert.match(html, /http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:;/);
});

test("all text is escaped, including inside the embedded JSON", () => {
  const evil = `</script><img src=x onerror="alert(1)"> & 'quotes'`;
  const data: ReportData = {
    title: `Report <b>bold</b> ${evil}`,
    command: `badnet audit "a b.h5" --note '<i>x</i>'`,
    createdAt: "<time>",
    model: {
      name: evil,
      source: "/tmp/<dir>/m.h5",
      inputShape: [28, 28, 1],
      numClasses: 10,
      layers: [{ name: "<conv>", className: "Conv2D&Co", outputShape: [null, 26, 26, 8], params: 80 }],
      totalParams: 80,
    },
    pruning: {
      layer: "<layer>",
      order: evil,
      curve: [
        { fractionPruned: 0, channelsPruned: 0, cleanAccuracy: 0.9 },
        { fractionPruned: 0.5, channelsPruned: 4, cleanAccuracy: 0.8 },
      ],
      drops: [{ drop: 0.1, channelsPruned: 4, cleanAccuracy: 0.8 }],
    },
    timings: { [evil]: 1.5 },
  };
  const out = renderReport(data);
  for (const raw of [evil, "<b>bold</b>", "<conv>", "<layer>", "<time>", "<i>x</i>", "<dir>"]) {
    assert.ok(!out.includes(raw), `raw ${raw} must not appear`);
  }
  assert.ok(out.includes(escapeHtml(`Report <b>bold</b> ${evil}`)));
  assert.ok(out.includes("&lt;conv&gt;"));
  assert.ok(out.includes("Conv2D&amp;Co"));
  assert.ok(out.includes(escapeHtml(`badnet audit "a b.h5" --note '<i>x</i>'`)));
  // Only our own elements: the evil <img> never became a tag, and the JSON blocks were not cut short.
  assert.equal([...out.matchAll(/<img\b/g)].length, 0);
  assert.deepEqual(JSON.parse(jsonBlock(out, "report-data")!), data);
  const specs = JSON.parse(jsonBlock(out, "chart-specs")!) as ChartSpec[];
  assert.match(specs[0]!.x.title, /<layer>/, "text inside chart specs survives unescaped as data");
});

test("only the sections present in the data are rendered", () => {
  const empty = renderReport({});
  assert.deepEqual(sectionIds(empty), []);
  assert.match(empty, /recorded no results/);
  assert.ok(!empty.includes("<canvas"), "no charts");
  assert.ok(!empty.includes(chartJsSource()), "Chart.js is only inlined when there is a chart");

  const some = renderReport({ evaluation: full.evaluation, g: full.g });
  assert.deepEqual(sectionIds(some), ["evaluation", "g"]);
  assert.ok(!some.includes("<canvas"));
  assert.ok(!some.includes('href="#pruning"'), "the navigation lists only present sections");
  assert.ok(some.includes('href="#g"'));
});

test("tables show the numbers from the data", () => {
  const ev = full.evaluation!;
  const pct = (v: number) => `${(v * 100).toFixed(2)}%`;
  for (const v of [ev.before.cleanAccuracy, ev.after!.cleanAccuracy, ev.before.asr!, ev.after!.asr!]) {
    assert.ok(html.includes(pct(v)), pct(v));
  }
  const dAcc = ((ev.after!.cleanAccuracy - ev.before.cleanAccuracy) * 100).toFixed(2).replace("-", "−");
  assert.ok(html.includes(`${dAcc} pp`), "accuracy change in percentage points");
  const g = full.g!;
  assert.ok(html.includes(g.clean.correct.toLocaleString("en-US")));
  assert.ok(html.includes(g.poisoned!.flagged.toLocaleString("en-US")));
  assert.ok(html.includes(full.model!.totalParams.toLocaleString("en-US")));
  for (const d of full.pruning!.drops) assert.ok(html.includes(pct(d.cleanAccuracy)));
  // Every flagged label is listed (and called out) in the Neural Cleanse table.
  for (const f of full.neuralCleanse!.flagged) assert.ok(html.includes(`<span class="badge bad">label ${f}</span>`));
});

/** The HTML of one <section id=...>, up to its closing tag. */
function sectionHtml(page: string, id: string): string {
  const start = page.indexOf(`<section id="${id}"`);
  assert.ok(start >= 0, `section ${id} rendered`);
  return page.slice(start, page.indexOf("</section>", start));
}

test("the mitigation section shows the method, flagged labels, pruned neurons and settings", () => {
  const m = full.mitigation!;
  const sec = sectionHtml(html, "mitigation");
  assert.ok(sec.includes(`>${m.method}<`));
  for (const f of m.flagged) assert.ok(sec.includes(`<span class="badge bad">label ${f}</span>`));
  assert.ok(sec.includes(m.triggerSource));
  assert.ok(sec.includes(`<code>${m.layer}</code>`));
  assert.ok(sec.includes(`${m.neuronsPruned} of ${m.neurons}`));
  for (const [k, v] of Object.entries(m.settings!)) assert.ok(sec.includes(`<code>${k}</code>`) && sec.includes(`>${v}<`), k);
  assert.ok(html.includes('href="#mitigation"'));

  const none = sectionHtml(renderReport({ mitigation: { method: "unlearn", flagged: [], triggerSource: "trigger folder out/nc" } }), "mitigation");
  assert.match(none, /flagged no label/);
  assert.ok(!none.includes("badge bad"), "no flagged label drawn");
  assert.ok(!none.includes("Neurons pruned"), "no pruning numbers for unlearning");
});

test("the calibrated-G section shows the target, signals, thresholds and rates with their intervals", () => {
  const c = full.gCalibration!;
  const sec = sectionHtml(html, "g-calibration");
  const pct = (v: number) => `${(v * 100).toFixed(2)}%`;
  assert.ok(sec.includes(pct(c.fprTarget)));
  c.signals.forEach((sig, j) => {
    const t = c.thresholds[j];
    const row = sec.slice(sec.indexOf(`<td>${sig}</td>`), sec.indexOf("</tr>", sec.indexOf(`<td>${sig}</td>`)));
    assert.ok(row.length > 0, sig);
    assert.ok(t === null ? row.includes("never flags") : row.includes(t.toFixed(4)), sig);
  });
  assert.ok(sec.includes(c.heldOut.n.toLocaleString("en-US")));
  for (const r of [c.cleanTest!, c.poisoned!]) {
    assert.ok(sec.includes(`${pct(r.rate)} <span class="sub">[${pct(r.ci95[0])}, ${pct(r.ci95[1])}]</span>`));
    assert.ok(sec.includes(`${r.count.toLocaleString("en-US")} of ${r.n.toLocaleString("en-US")}`));
  }
  // One interval bar per measured rate; the clean one carries the target line.
  assert.equal((sec.match(/class="ci-band"/g) ?? []).length, 2);
  assert.equal((sec.match(/class="ci-target"/g) ?? []).length, 1);

  const bare = sectionHtml(renderReport({ gCalibration: { ...c, guarantee: "marginal", cleanTest: undefined, poisoned: undefined } }), "g-calibration");
  assert.match(bare, /marginal/);
  assert.ok(!bare.includes("ci-band"), "no interval without a measured rate");
});

test("pngDataUri accepts bare or prefixed base64 PNG and rejects anything else", () => {
  const b64 = full.neuralCleanse!.triggers[0]!.maskPng;
  assert.equal(pngDataUri(b64, "x"), `data:image/png;base64,${b64}`);
  assert.equal(pngDataUri(`data:image/png;base64,${b64}`, "x"), `data:image/png;base64,${b64}`);
  assert.throws(() => pngDataUri(`" onerror="alert(1)`, "mask"), /mask is not base64/);
  assert.throws(() => pngDataUri("", "mask"), /mask/);
  assert.throws(() => pngDataUri("https://example.com/a.png", "mask"), /mask/);
});

test("jsonForScript keeps </script> and line separators from ending or breaking the element", () => {
  const s = jsonForScript({ a: "</script><!--", b: "x\u2028y" });
  assert.ok(!s.includes("<"));
  assert.ok(!s.includes("\u2028"));
  assert.deepEqual(JSON.parse(s), { a: "</script><!--", b: "x\u2028y" });
});

test("writeReport creates the folder and writes the rendered report", async () => {
  const dir = await mkdtemp(join(tmpdir(), "badnet-report-"));
  try {
    const path = join(dir, "nested", "out", "report.html");
    const data: ReportData = { title: "t", evaluation: full.evaluation };
    await writeReport(path, data);
    assert.equal(await readFile(path, "utf8"), renderReport(data));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

// ---------- chart specs ----------

test("histogram counts every finite value once, clamping to the end bins", () => {
  assert.deepEqual(histogram([0, 0.1, 0.5, 0.99, 1, 2, -1, Number.NaN], 0, 1, 4), [3, 0, 1, 3]);
  const values = Array.from({ length: 1000 }, (_, i) => Math.sin(i) * 3);
  const counts = histogram(values, -3, 3, 17);
  assert.equal(counts.reduce((a, b) => a + b, 0), 1000);
});

test("STRIP chart: both series as shares per bin, threshold line, range covering data and threshold", () => {
  const s = full.strip!;
  const spec = stripChart("c", s);
  assert.equal(spec.datasets.length, 2);
  for (const ds of spec.datasets) {
    const ys = (ds.data as { x: number; y: number }[]).map((p) => p.y);
    assert.ok(Math.abs(ys.reduce((a, b) => a + b, 0) - 1) < 1e-9, "shares sum to 1");
  }
  assert.deepEqual(spec.refLines.map((r) => [r.axis, r.value]), [["x", s.threshold]]);
  assert.ok(spec.x.min! <= Math.min(s.threshold, ...s.cleanEntropy, ...s.poisonedEntropy!));
  assert.ok(spec.x.max! >= Math.max(s.threshold, ...s.cleanEntropy, ...s.poisonedEntropy!));
  // Degenerate input (all equal, clean only) still gives a usable axis.
  const flat = stripChart("c", { cleanEntropy: [0.5, 0.5], threshold: 0.5, frr: 0, frrTarget: 0.01 });
  assert.equal(flat.datasets.length, 1);
  assert.ok(flat.x.max! > flat.x.min!);
});

test("Neural Cleanse charts stay readable for 1,283 labels: sorted, thin bars, flagged marked", () => {
  const nc = full.neuralCleanse!;
  assert.equal(nc.labels.length, 1283);
  const norm = ncNormChart("n", nc);
  assert.equal(norm.labels!.length, 1283);
  assert.equal(norm.x.hideTicks, true);
  const bars = norm.datasets[0]!;
  assert.equal(bars.barPercentage, 1);
  const values = bars.data as number[];
  for (let i = 1; i < values.length; i++) assert.ok(values[i - 1]! <= values[i]!, "ascending norms");
  const markers = norm.datasets[1]!;
  const marked = (markers.data as (number | null)[])
    .map((v, i) => (v === null ? null : Number(norm.labels![i])))
    .filter((v) => v !== null);
  assert.deepEqual(marked.sort(), [...nc.flagged].sort());
  const colours = bars.backgroundColor as string[];
  assert.equal(new Set(nc.flagged.map((f) => colours[norm.labels!.indexOf(String(f))])).size, 1);
  assert.notEqual(colours[norm.labels!.indexOf(String(nc.flagged[0]))], colours[norm.labels!.length - 1]);

  const anomaly = ncAnomalyChart("a", nc);
  assert.deepEqual(anomaly.refLines.map((r) => [r.axis, r.value]), [["y", 2]]);
  const a = anomaly.datasets[0]!.data as number[];
  for (let i = 1; i < a.length; i++) assert.ok(a[i - 1]! >= a[i]!, "descending anomaly index");
});

test("few labels keep their natural order and tick labels", () => {
  const small = syntheticReport({ numClasses: 10, targets: [3] }).neuralCleanse!;
  const spec = ncNormChart("n", small);
  assert.deepEqual(spec.labels, ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]);
  assert.ok(!spec.x.hideTicks);
  // Wide bars carry the highlight themselves: no extra marker series.
  assert.equal(spec.datasets.length, 1);
  const colours = spec.datasets[0]!.backgroundColor as string[];
  assert.ok(small.labels[3]!.flagged, "the planted target is flagged");
  assert.notEqual(colours[3], colours[small.labels.findIndex((l) => !l.flagged)]);
  const items = Array.from({ length: SORT_LABELS_ABOVE + 1 }, (_, i) => ({ label: i, v: -i }));
  assert.equal(chartOrder(items, (t) => t.v, false)[0]!.label, SORT_LABELS_ABOVE);
  assert.equal(chartOrder(items.slice(0, SORT_LABELS_ABOVE), (t) => t.v, false)[0]!.label, 0);
});

test("pruning chart marks each saved network on the curve", () => {
  const p = full.pruning!;
  const spec = pruningChart("p", p);
  assert.deepEqual(spec.datasets.map((d) => d.label), ["Clean accuracy", "Attack success rate", "Saved networks"]);
  const marks = spec.datasets[2]!.data as { x: number; y: number }[];
  assert.equal(marks.length, p.drops.length);
  p.drops.forEach((d, i) => {
    const onCurve = p.curve.find((c) => c.channelsPruned === d.channelsPruned)!;
    assert.equal(marks[i]!.x, onCurve.fractionPruned);
    assert.equal(marks[i]!.y, d.cleanAccuracy);
  });
  assert.equal(spec.refLines.length, p.drops.length);
  // A drop between recorded steps is placed proportionally (fraction = channels / total).
  const curve = [
    { fractionPruned: 0, channelsPruned: 0, cleanAccuracy: 1 },
    { fractionPruned: 0.5, channelsPruned: 10, cleanAccuracy: 0.9 },
  ];
  assert.equal(fractionForChannels(curve, 5), 0.25);
});

test("auto's selection table marks a candidate that broke its own --max-drop", () => {
  const candidate = { cleanAccuracy: 0.698, triggerSuccess: 0.021, adversarialSuccess: 0.97, seconds: 2.9 };
  const out = renderReport({
    selection: {
      rule: "r",
      selectionSize: 53,
      candidates: [
        { defense: "prune-unlearn", ...candidate },
        { defense: "ibau", ...candidate, overBudget: { maxDrop: 0.02, drop: 0.116 } },
      ],
      chosen: "prune-unlearn",
      reason: "prune-unlearn: lowest attack success",
    },
  });
  assert.deepEqual(sectionIds(out), ["selection"]);
  assert.equal(out.match(/over its --max-drop: 11\.6 points/g)?.length, 1);
});
