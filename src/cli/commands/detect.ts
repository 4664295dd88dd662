// badnet detect: Neural Cleanse over a model's labels; prints the per-label trigger norms and anomaly indices,
// optionally writes the reversed triggers as PNGs and the run as result.json (ReportData).
import { basename } from "node:path";
import { fail } from "../../errors.js";
import { type NormScale } from "../../defenses/mad.js";
import { checkFamilies, detectBackdoor, type NeuralCleanseResult } from "../../defenses/neural-cleanse.js";
import { dataFrom, inputScale, MODEL_OPTIONS, modelFrom, ncProgress, num, pct, str, type Command, type Context } from "../command.js";
import { parseLabels } from "../labels.js";
import { detectResult, writeTriggerPngs } from "../nc-output.js";
import { OUTPUT_OPTIONS, outDir, writeResult } from "../output.js";

export { parseLabels };

const TABLE_ROWS = 20;

function table(r: NeuralCleanseResult): string[] {
  const bySize = [...r.labels].sort((p, q) => p.l1Norm - q.l1Norm);
  const all = r.labels.length <= 2 * TABLE_ROWS;
  const rows = all ? bySize : bySize.filter((l, i) => i < TABLE_ROWS || l.flagged);
  const mask = r.families.mask !== undefined;
  const blend = r.families.blend !== undefined;
  const head = [`label`, ...(mask ? [`  mask L1  anomaly  held-out ASR`] : []), ...(blend ? [`  blend α  anomaly  held-out ASR`] : []), `  phase   steps  flagged`];
  const lines = [head.join("")];
  const cols = (norm: string, index: number, asr: number) => `  ${norm.padStart(7)}  ${index.toFixed(2).padStart(7)}  ${pct(asr).padStart(12)}`;
  for (const l of rows) {
    const note = l.flagged ? `FLAGGED (${l.flaggedBy.join(", ")})` : l.reached ? "" : "(threshold not reached)";
    lines.push(
      String(l.label).padStart(5) +
        (l.mask ? cols(l.mask.l1Norm.toFixed(1), l.mask.anomalyIndex, l.mask.attackSuccess) : "") +
        (l.blend ? cols(l.blend.alpha.toFixed(3), l.blend.anomalyIndex, l.blend.attackSuccess) : "") +
        `  ${l.phase.padEnd(6)} ${String(l.steps).padStart(6)}  ${note}`,
    );
  }
  if (!all) lines.push(`... ${r.labels.length - rows.length} more labels with larger norms (--json or --out for all)`);
  return lines;
}

export const detectCommand: Command = {
  name: "detect",
  summary: "Neural Cleanse: reverse-engineer a trigger per label and flag backdoor targets (MAD anomaly index > 2)",
  usage:
    "--model M [--arch deepid] --input-scale S --clean D [--labels 0,5,7|0-9] [--out DIR [--report]] [--steps N] [--screen-steps N]\n" +
    "       [--batch-size B] [--screen-batch-size B] [--labels-per-run L] [--shortlist K] [--restarts R] [--families mask,blend]\n" +
    "       [--scale log|linear] [--seed S] [--json] [--quiet]\n" +
    "  Two trigger families are scanned: \"mask\" (the paper's per-pixel mask) and \"blend\" (one blend weight α for the\n" +
    "  whole image, for blended triggers); each has its own MAD statistics, on ln(norm) by default (--scale).\n" +
    "  Every label gets --screen-steps (default 60) steps on --screen-batch-size (8) images; the --shortlist\n" +
    "  (default max(10, 3% of the labels)) smallest norms, plus small-side outliers, continue to --steps (300) on\n" +
    "  --batch-size (32) images from --restarts (2) random starts. --labels-per-run (32) labels are optimized\n" +
    "  together in one graph run.",
  options: {
    ...MODEL_OPTIONS,
    "batch-size": { type: "string", description: "images per optimization step in the full phase", defaultText: "32" },
    clean: { type: "string", description: "labelled clean data the triggers are reversed on" },
    labels: { type: "string", description: "labels to scan (e.g. 0,5,7 or 0-9)", defaultText: "all" },
    ...OUTPUT_OPTIONS,
    steps: { type: "string", description: "optimization steps per label in the full phase", defaultText: "300" },
    "screen-steps": { type: "string", description: "steps per label while screening", defaultText: "60" },
    "screen-batch-size": { type: "string", description: "images per step while screening", defaultText: "8" },
    "labels-per-run": { type: "string", description: "labels optimized together in one graph run", defaultText: "32" },
    shortlist: { type: "string", description: "labels that get the full budget after screening", defaultText: "max(10, 3% of the labels)" },
    restarts: { type: "string", description: "random starts per label in the full phase", defaultText: "2" },
    families: { type: "string", description: "trigger families to scan (mask, blend)", defaultText: "mask,blend" },
    scale: { type: "string", description: "scale of the MAD statistics (log or linear)", defaultText: "log" },
    seed: { type: "string", description: "seed of the image split and the initialization", defaultText: "0" },
  },
  async run(ctx: Context) {
    const t0 = performance.now();
    const scale = inputScale(ctx);
    const modelPath = str(ctx, "model", true);
    const model = await modelFrom(ctx);
    const clean = await dataFrom(ctx, "clean", scale, true);
    const labelSpec = str(ctx, "labels");
    const labels = labelSpec === undefined ? undefined : parseLabels(labelSpec, model.numClasses);
    const dir = outDir(ctx, false);
    const opt = (key: string) => (str(ctx, key) === undefined ? undefined : num(ctx, key, undefined, { min: 1, integer: true }));
    const familySpec = str(ctx, "families");
    const families = familySpec === undefined ? undefined : checkFamilies(familySpec.split(",").map((f) => f.trim()));
    const scaleSpec = str(ctx, "scale");
    if (scaleSpec !== undefined && scaleSpec !== "log" && scaleSpec !== "linear") fail(`--scale must be log or linear, got "${scaleSpec}"`);
    const loaded = (performance.now() - t0) / 1000;

    const bars = ncProgress(ctx);
    const result = await detectBackdoor(model, clean, {
      inputScale: scale,
      labels,
      steps: opt("steps"),
      screenSteps: opt("screen-steps"),
      batchSize: opt("batch-size"),
      screenBatchSize: opt("screen-batch-size"),
      labelsPerRun: opt("labels-per-run"),
      shortlist: opt("shortlist"),
      restarts: opt("restarts"),
      families,
      scale: scaleSpec as NormScale | undefined,
      seed: str(ctx, "seed") === undefined ? undefined : num(ctx, "seed", 0, { min: 0, integer: true }),
      onProgress: bars.onProgress,
    });
    bars.done();
    clean.close();

    const report = detectResult(model, modelPath, result, loaded);
    const files = dir ? [...writeTriggerPngs(dir, result), ...(await writeResult(ctx, dir, report))] : [];

    const screened = result.labels.filter((l) => l.phase === "screen").length;
    const lines = [
      `model      ${model.name} (${basename(modelPath)})`,
      `images     ${result.images.optimize} to optimize on, ${result.images.heldOut} held out for attack success`,
      `labels     ${result.labels.length} scanned` +
        (screened ? ` (${result.labels.length - screened} with the full budget, ${screened} screened only)` : ""),
      ...Object.entries(result.families).map(
        ([f, st]) => `${f.padEnd(10)} median L1 ${st.median.toFixed(2)}, MAD ${st.mad.toFixed(3)} (${result.settings.scale}), flags ${st.flagged.length ? st.flagged.join(", ") : "none"}`,
      ),
      "",
      ...table(result),
      "",
      result.flagged.length
        ? `flagged    ${result.flagged.join(", ")}  (anomaly index > 2 in some family, smaller than the median)`
        : "flagged    none (no label's trigger is an outlier on the small side)",
      `time       ${result.seconds.toFixed(1)} s (${(result.labels.length / result.seconds).toFixed(2)} labels/s)`,
    ];
    if (dir) lines.push(`wrote      ${files.length} files to ${dir}`);
    return { json: report, text: lines.join("\n") };
  },
};
