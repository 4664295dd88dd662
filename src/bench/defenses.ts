// npm run bench:defenses — every defense on every model of the ground-truth zoo (src/zoo/build.ts), with the
// library's default settings, in one markdown table: clean accuracy and attack success before → after, the
// G network's detection and false-positive rates, and Neural Cleanse's flagged labels against the true targets.
//   node dist/bench/defenses.js [--zoo DIR] [--only a,b] [--defenses prune,strip,...] [--nc-seeds N] [--out FILE] [--json FILE]
// Neural Cleanse runs once per seed 0..N−1 (default 3): its flags depend on a non-convex optimization, so
// the table reports how often each model's flags come out right, not one lucky or unlucky run. Seed 0's
// triggers feed nc-prune and unlearn.
//
// Data per model: valid.h5 (clean validation, what every defense works on), clean_test.h5 (final clean numbers),
// the poisoned test set(s). The library functions take one poisoned dataset: for a model with several targets
// all its poisoned sets are concatenated (memoryDataset), so the library's numbers are over the union; the
// per-target ASRs and G detection rates in the table are recomputed per poisoned set from the same networks
// (B and the repaired B', or STRIP's per-input entropies) and checked to add up to the library's counts.
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import os from "node:os";
import { dirname, join, resolve } from "node:path";
import { parseArgs } from "node:util";
import type { AnyDefense } from "../defenses/defense.js";
import { detectBackdoor, type NeuralCleanseResult } from "../defenses/neural-cleanse.js";
import { DEFENSES, findDefense } from "../defenses/registry.js";
import { UserError } from "../errors.js";
import { accuracyOf, evaluate } from "../eval/evaluate.js";
import { memoryDataset, type Dataset } from "../io/dataset.js";
import { openDataset } from "../io/open-dataset.js";
import { loadModel } from "../io/load-model.js";
import { predictLabels } from "../model/forward.js";
import { defenseRow, type DefenseRow, type PoisonSet } from "./defense-row.js";
import type { ZooIndex, ZooManifest } from "../zoo/build.js";

/** Markers around the copy of the table in README.md. */
const README_START = "<!-- bench:defenses table start -->";
const README_END = "<!-- bench:defenses table end -->";

export interface DetectionRow {
  model: string;
  attack: string;
  targets: number[];
  flagged: number[];
  match: boolean;
  verdict: string;
  seconds: number;
  medianNorm: number;
  labels: { label: number; l1Norm: number; anomalyIndex: number; attackSuccess: number; flagged: boolean; reached: boolean; flaggedBy: string[]; blendAlpha?: number; blendAnomalyIndex?: number }[];
  /** Every seed's run (seed 0 first, the one the fields above describe). */
  seeds: { seed: number; flagged: number[]; match: boolean; verdict: string; seconds: number; targetsFlagged: number; wrongFlags: number }[];
}

export interface ModelResult {
  name: string;
  dir: string;
  attack: string;
  targets: number[];
  manifest: { cleanAccuracy: number; asr: Record<string, number> };
  /** B on the clean test set and each poisoned set, measured here (library evaluate). */
  measured: { cleanAccuracy: number; asr: Record<string, number> };
  detection?: DetectionRow;
  detectionError?: string;
  rows: DefenseRow[];
  seconds: number;
}

// ---------------------------------------------------------------------------------------------------------
// Arguments and the zoo

const { values } = parseArgs({
  options: {
    zoo: { type: "string" },
    only: { type: "string" },
    defenses: { type: "string" },
    out: { type: "string" },
    json: { type: "string" },
    "nc-seeds": { type: "string" },
  },
});
const ncSeeds = Number(values["nc-seeds"] ?? 3);
if (!Number.isInteger(ncSeeds) || ncSeeds < 1) {
  process.stderr.write(`--nc-seeds must be a positive integer, got ${values["nc-seeds"]}\n`);
  process.exit(2);
}
const zooDir = resolve(values.zoo ?? "zoo");
const outFile = values.out ?? "docs/defenses-table.md";
const log = (s: string): void => void process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${s}\n`);

function usageExit(msg: string): never {
  process.stderr.write(`${msg}\n`);
  process.exit(2);
}

function listModels(dir: string): { dirs: string[]; note: string } {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) {
    usageExit(
      `no zoo at ${dir}. Build it first (about 3 minutes per model on 2 cores):\n` +
        `  node dist/cli/main.js zoo build --dataset fashion-mnist --out ${values.zoo ?? "zoo"}\n` +
        `then: npm run bench:defenses -- --zoo ${values.zoo ?? "zoo"}`,
    );
  }
  const indexPath = join(dir, "zoo.json");
  if (existsSync(indexPath)) {
    const index = JSON.parse(readFileSync(indexPath, "utf8")) as ZooIndex;
    const listed = index.models.map((m) => m.dir);
    // A later `zoo build --only` run may have added models that the index of an earlier run does not list.
    const extra = scanModels(dir).filter((d) => !listed.includes(d));
    return { dirs: [...listed, ...extra], note: extra.length ? `zoo.json plus ${extra.join(", ")} (not in zoo.json)` : "zoo.json" };
  }
  const dirs = scanModels(dir);
  return { dirs, note: `no zoo.json (build incomplete?): ${dirs.length} model folder(s) with a manifest.json` };
}

function scanModels(dir: string): string[] {
  return readdirSync(dir)
    .filter((d) => !d.startsWith(".") && statSync(join(dir, d)).isDirectory() && existsSync(join(dir, d, "manifest.json")))
    .sort();
}

function parseDefenses(s: string | undefined): AnyDefense[] {
  if (s === undefined) return [...DEFENSES];
  return s
    .split(",")
    .map((x) => x.trim())
    .filter(Boolean)
    .map((d) => findDefense(d) ?? usageExit(`--defenses: unknown defense "${d}" (known: ${DEFENSES.map((x) => x.name).join(", ")})`));
}

// ---------------------------------------------------------------------------------------------------------
// Helpers

const frac = (k: number, n: number): number => (n ? k / n : 0);

/** All poisoned sets as one dataset (the sets in the manifest's order), or the single set itself. */
function mergePoisoned(sets: PoisonSet[], name: string): Dataset | undefined {
  if (sets.length === 0) return undefined;
  if (sets.length === 1) return sets[0].ds;
  const shape = sets[0].ds.shape;
  const per = shape[0] * shape[1] * shape[2];
  const total = sets.reduce((s, p) => s + p.ds.size, 0);
  const data = new Float32Array(total * per);
  const labels = new Int32Array(total);
  let off = 0;
  for (const p of sets) {
    data.set(p.ds.read(0, p.ds.size), off * per);
    labels.set(p.ds.labels!, off);
    off += p.ds.size;
  }
  return memoryDataset(name, shape, data, labels);
}

/** Flags against the truth: whether they match exactly, in words, and the missed targets and wrong flags. */
function verdict(targets: number[], flagged: number[]): { match: boolean; text: string; missed: number[]; extra: number[] } {
  const t = new Set(targets);
  const f = new Set(flagged);
  const missed = targets.filter((x) => !f.has(x));
  const extra = flagged.filter((x) => !t.has(x));
  const of = (match: boolean, text: string) => ({ match, text, missed, extra });
  if (targets.length === 0) return extra.length === 0 ? of(true, "yes (clean, nothing flagged)") : of(false, `no: clean model, false alarm on ${extra.join(", ")}`);
  if (missed.length === 0 && extra.length === 0) return of(true, "yes");
  const parts: string[] = [];
  if (missed.length) parts.push(`missed ${missed.join(", ")}`);
  if (extra.length) parts.push(`false alarm on ${extra.join(", ")}`);
  return of(false, `no: ${parts.join("; ")}`);
}

// ---------------------------------------------------------------------------------------------------------
// One model

async function runModel(dirName: string, which: AnyDefense[]): Promise<ModelResult> {
  const t0 = performance.now();
  const dir = join(zooDir, dirName);
  const manifest = JSON.parse(readFileSync(join(dir, "manifest.json"), "utf8")) as ZooManifest;
  const scale = manifest.inputScale;
  log(`${manifest.name}: loading (${manifest.attack}, targets [${manifest.targets.join(", ")}])`);
  const model = await loadModel(join(dir, manifest.files.model));
  const valid = await openDataset(join(dir, manifest.files.valid), { inputScale: scale });
  const test = await openDataset(join(dir, manifest.files.cleanTest), { inputScale: scale });
  const sets: PoisonSet[] = [];
  for (const t of manifest.triggers) {
    const ds = await openDataset(join(dir, t.poisonedTest), { inputScale: scale });
    sets.push({ target: t.target, file: t.poisonedTest, ds, bPred: await predictLabels(model, ds) });
  }
  const poisoned = mergePoisoned(sets, `${manifest.name} poisoned (${sets.map((s) => s.file).join(" + ")})`);
  const base = await evaluate(model, test);
  const measured = { cleanAccuracy: base.clean.accuracy, asr: Object.fromEntries(sets.map((p) => [String(p.target), frac(accuracyOf(p.bPred, p.ds.labels!).correct, p.ds.size)])) };
  const result: ModelResult = {
    name: manifest.name,
    dir: dirName,
    attack: manifest.attack,
    targets: manifest.targets,
    manifest: { cleanAccuracy: manifest.cleanAccuracy, asr: manifest.asr },
    measured,
    rows: [],
    seconds: 0,
  };

  // Detection once per seed; seed 0's flagged labels feed nc-prune and unlearn.
  let nc: NeuralCleanseResult | undefined;
  try {
    for (let seed = 0; seed < ncSeeds; seed++) {
      log(`${manifest.name}: Neural Cleanse detection, seed ${seed}`);
      const r = await detectBackdoor(model, valid, { inputScale: scale, seed });
      const v = verdict(manifest.targets, r.flagged);
      const run = {
        seed,
        flagged: r.flagged,
        match: v.match,
        verdict: v.text,
        seconds: r.seconds,
        targetsFlagged: manifest.targets.length - v.missed.length,
        wrongFlags: v.extra.length,
      };
      log(`${manifest.name}: seed ${seed} flagged [${r.flagged.join(", ")}] (${v.text}) in ${r.seconds.toFixed(1)} s`);
      if (seed === 0) {
        nc = r;
        result.detection = {
          model: manifest.name,
          attack: manifest.attack,
          targets: manifest.targets,
          flagged: r.flagged,
          match: v.match,
          verdict: v.text,
          seconds: r.seconds,
          medianNorm: r.medianNorm,
          labels: r.labels.map((l) => ({
            label: l.label,
            l1Norm: l.l1Norm,
            anomalyIndex: l.anomalyIndex,
            attackSuccess: l.attackSuccess,
            flagged: l.flagged,
            reached: l.reached,
            flaggedBy: l.flaggedBy,
            blendAlpha: l.blend?.alpha,
            blendAnomalyIndex: l.blend?.anomalyIndex,
          })),
          seeds: [],
        };
      }
      result.detection!.seeds.push(run);
    }
  } catch (e) {
    result.detectionError = e instanceof Error ? e.message : String(e);
    log(`${manifest.name}: Neural Cleanse FAILED: ${result.detectionError}`);
  }

  for (const d of which) {
    log(`${manifest.name}: ${d.name}`);
    const row = await defenseRow(model, { clean: valid, test, poisoned }, d, { inputScale: scale, detected: nc, detectionError: result.detectionError, sets, cleanBefore: base.clean.accuracy });
    row.model = manifest.name;
    row.attack = manifest.attack;
    result.rows.push(row);
    if (row.status === "failed") log(`${manifest.name}: ${d.name} FAILED: ${row.reason}`);
    else if (row.status === "ok") log(`${manifest.name}: ${d.name} done in ${row.seconds!.toFixed(1)} s: clean ${pctS(row.cleanBefore)} → ${pctS(row.cleanAfter)}, ASR ${asrText(row, "before")} → ${asrText(row, "after")}`);
    for (const w of row.warnings) log(`${manifest.name}: ${d.name} WARNING: ${w}`);
  }

  for (const p of sets) p.ds.close();
  valid.close();
  test.close();
  result.seconds = (performance.now() - t0) / 1000;
  log(`${manifest.name}: done in ${result.seconds.toFixed(0)} s`);
  return result;
}

// ---------------------------------------------------------------------------------------------------------
// Markdown

/** Percent with two decimals: small but non-zero rates stay visible (0.01%), nothing is rounded to a nicer value. */
function pctS(x: number | undefined): string {
  if (x === undefined || Number.isNaN(x)) return "—";
  return `${(100 * x).toFixed(2)}%`;
}

function asrText(row: DefenseRow, which: "before" | "after"): string {
  if (row.perTarget && row.perTarget.length > 1) return row.perTarget.map((t) => pctS(which === "before" ? t.asrBefore : t.asrAfter)).join(" / ");
  return pctS(which === "before" ? row.asrBefore : row.asrAfter);
}

function detectText(row: DefenseRow): string {
  if (row.perTarget && row.perTarget.length > 1) return row.perTarget.map((t) => pctS(frac(t.gFlagged, t.n))).join(" / ");
  return pctS(row.gDetection);
}

const secs = (s: number | undefined): string => (s === undefined ? "—" : s < 10 ? `${s.toFixed(1)} s` : `${s.toFixed(0)} s`);
const cell = (s: string): string => s.replace(/\|/g, "\\|");

function markdownTable(results: ModelResult[], footnotes: string[]): string {
  const head = ["model", "attack (targets)", "defense", "clean acc before → after", "ASR before → after", "G detection (poisoned)", "G false positives (clean)", "NC flagged", "NC matches truth", "wall time", "notes"];
  const lines = [`| ${head.join(" | ")} |`, `|${head.map(() => "---").join("|")}|`];
  const note = (text: string): string => {
    let i = footnotes.indexOf(text);
    if (i < 0) {
      footnotes.push(text);
      i = footnotes.length - 1;
    }
    return `[^${i + 1}]`;
  };
  for (const m of results) {
    const attack = m.targets.length ? `${m.attack} (→ ${m.targets.join(", ")})` : m.attack;
    const d = m.detection;
    const detCells = d
      ? [d.flagged.length ? d.flagged.join(", ") : "none", d.verdict, secs(d.seconds)]
      : ["—", `detection failed: ${m.detectionError ?? "?"}`, "—"];
    const seedNote = d ? `seed 0 shown; seeds 0–${d.seeds.length - 1} flagged ${d.seeds.map((r) => `[${r.flagged.join(", ")}]`).join(" ")}` : "";
    lines.push(`| ${[m.name, attack, "NC detection", "—", "—", "—", "—", ...detCells, seedNote].map(cell).join(" | ")} |`);
    for (const r of m.rows) {
      const flaggedCell = r.triggersFrom ? (r.triggersFrom.length ? `uses ${r.triggersFrom.join(", ")}` : "none") : "";
      if (r.status === "skipped") {
        lines.push(`| ${[m.name, attack, r.defense, "—", "—", "—", "—", flaggedCell, "", "—", `not applied ${note(r.reason!)}`].map(cell).join(" | ")} |`);
        continue;
      }
      if (r.status === "failed") {
        lines.push(`| ${[m.name, attack, r.defense, "—", "—", "—", "—", flaggedCell, "", secs(r.seconds), `FAILED: ${r.reason}`].map(cell).join(" | ")} |`);
        continue;
      }
      const hasPoison = m.targets.length > 0;
      const notes = [r.notes, ...r.warnings.map((w) => `WARNING: ${w}`)].filter(Boolean).join("; ");
      lines.push(
        `| ${[
          m.name,
          attack,
          r.defense,
          `${pctS(r.cleanBefore)} → ${pctS(r.cleanAfter)}`,
          hasPoison ? `${asrText(r, "before")} → ${asrText(r, "after")}` : "— (no trigger)",
          hasPoison ? detectText(r) : "—",
          pctS(r.gFalsePositive),
          flaggedCell,
          "",
          secs(r.seconds),
          notes,
        ].map(cell).join(" | ")} |`,
      );
    }
  }
  return lines.join("\n");
}

function ncDetailTable(results: ModelResult[]): string {
  const head = ["model", "true targets", "flagged (seed 0)", "each true target: mask L1 (index), blend α (index)", "smallest mask norms: L1 (index)", "runs flagging every true target", "runs with a wrong flag", "time per run"];
  const lines = [`| ${head.join(" | ")} |`, `|${head.map(() => "---").join("|")}|`];
  for (const m of results) {
    const d = m.detection;
    if (!d) continue;
    const byLabel = new Map(d.labels.map((l) => [l.label, l]));
    const fmt = (l: DetectionRow["labels"][number] | undefined) =>
      l ? `${l.l1Norm.toFixed(1)} (${l.anomalyIndex.toFixed(2)}), ${l.blendAlpha?.toFixed(3) ?? "—"} (${l.blendAnomalyIndex?.toFixed(2) ?? "—"})` : "?";
    const truth = d.targets.length ? d.targets.map((t) => `${t}: ${fmt(byLabel.get(t))}`).join("; ") : "—";
    const smallest = [...d.labels].sort((a, b) => a.l1Norm - b.l1Norm).slice(0, 3).map((l) => `${l.label}: ${l.l1Norm.toFixed(1)} (${l.anomalyIndex.toFixed(2)})`).join(", ");
    const n = d.seeds.length;
    const allTargets = d.targets.length ? `${d.seeds.filter((r) => r.targetsFlagged === d.targets.length).length}/${n}` : "—";
    const wrong = `${d.seeds.filter((r) => r.wrongFlags > 0).length}/${n}`;
    const mean = d.seeds.reduce((a, r) => a + r.seconds, 0) / n;
    const flaggedBy = d.flagged.map((l) => `${l} (${byLabel.get(l)?.flaggedBy.join(", ")})`).join(", ");
    lines.push(`| ${[m.name, d.targets.join(", ") || "none", flaggedBy || "none", truth, smallest, allTargets, wrong, secs(mean)].map(cell).join(" | ")} |`);
  }
  return lines.join("\n");
}

function summaryLine(results: ModelResult[]): string {
  const bd = results.filter((m) => m.targets.length > 0);
  const clean = results.filter((m) => m.targets.length === 0);
  const x = bd.filter((m) => m.detection?.match).length;
  const a = clean.filter((m) => m.detection?.match).length;
  const runs = (ms: ModelResult[]) => ms.flatMap((m) => m.detection?.seeds ?? []);
  const bdRuns = runs(bd);
  const cleanRuns = runs(clean);
  const some = bdRuns.filter((r) => r.targetsFlagged > 0 && r.wrongFlags === 0).length;
  return (
    `Neural Cleanse (seed 0) flagged exactly the true target(s) of ${x}/${bd.length} backdoored models and nothing on ${a}/${clean.length} clean models. ` +
    `Over ${ncSeeds} seeds: ${bdRuns.filter((r) => r.match).length}/${bdRuns.length} runs on backdoored models flagged exactly the true targets, ` +
    `${some}/${bdRuns.length} flagged at least one true target and no other label, ${cleanRuns.filter((r) => r.match).length}/${cleanRuns.length} runs on clean models flagged nothing`
  );
}

function markdownDoc(
  results: ModelResult[],
  meta: { zoo: string; source: string; totalSeconds: number; defenses: string[]; command: string },
): { doc: string; table: string; summary: string; readmeBlock: string } {
  const footnotes: string[] = [];
  const table = markdownTable(results, footnotes);
  const summary = summaryLine(results);
  const multi = results.filter((m) => m.targets.length > 1);
  const mismatch = results.filter((m) => Object.entries(m.manifest.asr).some(([t, a]) => m.measured.asr[t] !== a) || m.measured.cleanAccuracy !== m.manifest.cleanAccuracy);
  const notes = footnotes.map((f, i) => `[^${i + 1}]: ${f}`).join("\n");
  const doc = [
    "# Every defense on every zoo model",
    "",
    `Generated by \`${meta.command}\` on ${new Date().toISOString().slice(0, 10)} (${os.availableParallelism()} CPU cores, onnxruntime-node), zoo \`${meta.zoo}\` (${meta.source}). ` +
      `Total wall time ${(meta.totalSeconds / 60).toFixed(1)} min. Every number comes from the library's result objects; nothing is tuned per model.`,
    "",
    `**${summary}.** ("Matches"/"exactly" means the true targets flagged and no other label; a clean model matches when nothing is flagged.)`,
    "",
    table,
    "",
    "## Neural Cleanse detail",
    "",
    "Two trigger families per label: the paper's per-pixel mask (L1 norm) and one blend weight α for the whole image. Each family's anomaly index = |ln n − median ln n| / (1.4826·MAD of ln n) over its norms n; a label is flagged when its index is > 2 on the small side in either family and its reversed trigger reached the success threshold. The family that flagged is in parentheses.",
    "",
    ncDetailTable(results),
    "",
    "## How to read the table",
    "",
    "- Data: each defense works on the model's `valid.h5` (5,000 clean validation images never trained on); clean accuracy is on `clean_test.h5` (10,000 images), ASR on the poisoned test set(s) (test images of other classes with the trigger stamped, labelled with the target).",
    "- Settings are the library defaults: prune = `pruneDefense` with `drops: [4]` (last conv layer, most dormant channels first, stop at a 4-point drop on valid); fine-prune = `finePrune` (4-point drop, then 5 epochs Adam 1e-4 on valid); nc-prune / unlearn = `ncPrune` / `ncUnlearn` with the reversed triggers of the labels Neural Cleanse flagged; strip = `runStrip` (k = 32 overlays, threshold for 1% false rejections on valid); NC detection = `detectBackdoor` defaults, once per seed 0…N−1 (seed 0's flags and triggers are the ones shown in the main table and used by nc-prune / unlearn).",
    "- clean acc after / ASR after: the repaired network B'. STRIP repairs nothing, so for it \"after\" is the G network (B with rejection): a rejected clean input counts as wrong, a rejected poisoned input as a failed attack.",
    "- G detection: share of poisoned test inputs G sends to the extra class N (for the repairs: B and B' disagree; for STRIP: entropy below the threshold). G false positives: the same on the clean test set. For the repairs \"ASR after\" is the repaired network's; G's own attack success (B and B' agree on the target) can only be lower and is the `gAsr` field of the JSON output.",
    multi.length
      ? `- Several targets (${multi.map((m) => m.name).join(", ")}): the library functions take one poisoned dataset, so they were given all of the model's poisoned sets concatenated (memoryDataset). The table shows the per-target ASRs and G detection rates joined with " / " in target order (${multi.map((m) => `${m.name}: ${m.targets.join(" / ")}`).join("; ")}), recomputed per set from the same networks (B, B' or STRIP's per-input entropies) and checked to add up to the library's merged counts (a mismatch would show as a WARNING in the notes).`
      : null,
    "- Wall time: the defense's library call alone (the per-target recomputation is not counted); the NC detection row is the one detection run per model whose triggers nc-prune and unlearn reuse (not included in their times).",
    "- Reproducibility: every seed is fixed (library defaults, seed 0), but onnxruntime runs with 2 intra-op threads and its float sums are not bit-for-bit reproducible, so a re-run moves the optimized/trained results slightly (NC's per-label norms, fine-prune, unlearn: typically in the second decimal of a percentage, occasionally a point or so on an unlearn ASR). Pruning and STRIP only run inference and repeat exactly; so does nc-prune given the same reversed triggers. Wall times depend on the load of the (shared) machine.",
    mismatch.length
      ? `- Note: B's clean accuracy / ASR measured here differ from the zoo manifest for ${mismatch.map((m) => m.name).join(", ")} (manifest vs measured in the JSON output).`
      : "- B's clean accuracy and ASR measured here equal the zoo manifests' exactly.",
    "",
    footnotes.length ? notes : null,
    "",
  ]
    .filter((l): l is string => l !== null)
    .join("\n");
  return { doc, table, summary, readmeBlock: `**${summary}.**\n\n${table}\n\n${notes}\n` };
}

// ---------------------------------------------------------------------------------------------------------
// Main

async function main(): Promise<void> {
  const t0 = performance.now();
  const which = parseDefenses(values.defenses);
  const { dirs, note } = listModels(zooDir);
  const only = values.only?.split(",").map((s) => s.trim()).filter(Boolean);
  for (const o of only ?? []) if (!dirs.includes(o)) usageExit(`--only: no model "${o}" in ${zooDir} (have: ${dirs.join(", ") || "none"})`);
  const chosen = only ? dirs.filter((d) => only.includes(d)) : dirs;
  if (chosen.length === 0) usageExit(`no models in ${zooDir} (${note}); build the zoo with: node dist/cli/main.js zoo build --dataset fashion-mnist --out ${values.zoo ?? "zoo"}`);
  log(`zoo ${zooDir} (${note}): ${chosen.join(", ")}; defenses: ${which.map((d) => d.name).join(", ")}`);

  const results: ModelResult[] = [];
  for (const d of chosen) results.push(await runModel(d, which));
  const totalSeconds = (performance.now() - t0) / 1000;

  const command = `npm run bench:defenses${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(" ")}` : ""}`;
  const { doc, table, summary, readmeBlock } = markdownDoc(results, { zoo: values.zoo ?? "zoo", source: note, totalSeconds, defenses: which.map((d) => d.name), command });
  mkdirSync(dirname(resolve(outFile)), { recursive: true });
  writeFileSync(outFile, doc);
  // A run over the whole zoo with every defense also refreshes the copy of the table in README.md.
  const readme = "README.md";
  if (!only && which.length === DEFENSES.length && existsSync(readme)) {
    const text = readFileSync(readme, "utf8");
    const start = text.indexOf(README_START);
    const end = text.indexOf(README_END);
    if (start >= 0 && end > start) {
      writeFileSync(readme, `${text.slice(0, start + README_START.length)}\n${readmeBlock}${text.slice(end)}`);
      log(`updated the table in ${readme}`);
    }
  }
  if (values.json) {
    mkdirSync(dirname(resolve(values.json)), { recursive: true });
    writeFileSync(values.json, JSON.stringify({ zoo: zooDir, source: note, defenses: which.map((d) => d.name), totalSeconds, summary, models: results }, null, 2) + "\n");
  }
  process.stdout.write(`${table}\n\n${summary}\n`);
  process.stdout.write(`total ${(totalSeconds / 60).toFixed(1)} min; wrote ${outFile}${values.json ? ` and ${values.json}` : ""}\n`);
  const failed = results.flatMap((m) => [...m.rows.filter((r) => r.status === "failed").map((r) => `${m.name}/${r.defense}`), ...(m.detectionError ? [`${m.name}/detection`] : [])]);
  if (failed.length) {
    process.stderr.write(`failed: ${failed.join(", ")}\n`);
    process.exitCode = 1;
  }
}

try {
  await main();
} catch (e) {
  if (e instanceof UserError) usageExit(`error: ${e.message}`);
  throw e;
}
