// badnet detect: Neural Cleanse over a model's labels; prints the per-label trigger norms and anomaly indices,
// optionally writes the reversed triggers as PNGs and the run as result.json (ReportData).
import { basename } from "node:path";
import { fail } from "../../errors.js";
import { type NormScale } from "../../defenses/mad.js";
import { asShard, mergeShards } from "../../defenses/nc-merge.js";
import { HEAD_SHIFT_MAX_EPOCHS, HEAD_SHIFT_MIN_STEPS } from "../../defenses/head-shift-evidence.js";
import { checkFamilies, detectBackdoor, NC_SCHEDULES, type NcLabelResult, type NcSchedule, type NeuralCleanseResult } from "../../defenses/neural-cleanse.js";
import type { ReportData } from "../../report/types.js";
import { dataFrom, inputScale, MODEL_OPTIONS, modelFrom, ncProgress, optNum, pct, str, type Command, type Context } from "../command.js";
import { parseLabels } from "../labels.js";
import { detectResult, writeTriggerPngs } from "../nc-output.js";
import { commandLine, OUTPUT_OPTIONS, outDir, readResult, writeResult } from "../output.js";
import { MAX_SEED } from "../../util/random.js";

export { parseLabels };

const TABLE_ROWS = 20;

function table(r: Pick<NeuralCleanseResult, "labels" | "families">): string[] {
  const bySize = [...r.labels].sort((p, q) => p.l1Norm - q.l1Norm);
  const all = r.labels.length <= 2 * TABLE_ROWS;
  const rows = all ? bySize : bySize.filter((l, i) => i < TABLE_ROWS || l.flagged);
  const mask = r.families.mask !== undefined;
  const blend = r.families.blend !== undefined;
  const head = [`label`, ...(mask ? [`  mask L1  anomaly  held-out ASR`] : []), ...(blend ? [`  blend α  anomaly  held-out ASR`] : []), `  phase   steps  confidence  flagged`];
  const lines = [head.join("")];
  const cols = (norm: string, index: number, asr: number) => `  ${norm.padStart(7)}  ${index.toFixed(2).padStart(7)}  ${pct(asr).padStart(12)}`;
  for (const l of rows) {
    const note = l.flagged ? `FLAGGED (${l.flaggedBy.join(", ")})` : l.reached ? "" : "(threshold not reached)";
    lines.push(
      String(l.label).padStart(5) +
        (l.mask ? cols(l.mask.l1Norm.toFixed(1), l.mask.anomalyIndex, l.mask.attackSuccess) : "") +
        (l.blend ? cols(l.blend.alpha.toFixed(3), l.blend.anomalyIndex, l.blend.attackSuccess) : "") +
        `  ${l.phase.padEnd(6)} ${String(l.steps).padStart(6)}  ${pct(l.confidence ?? 0).padStart(10)}  ${note}`,
    );
  }
  if (!all) lines.push(`... ${r.labels.length - rows.length} more labels with larger norms (--json or --out for all)`);
  return lines;
}

/** Why each flagged label is flagged. */
function reasons(labels: readonly NcLabelResult[]): string[] {
  return labels.filter((l) => l.flagged).flatMap((l) => [`label ${l.label} (confidence ${pct(l.confidence)}):`, ...l.reasons.map((x) => `  - ${x}`)]);
}

/** `detect --merge DIR...`: the statistics over the shards' labels. */
async function runMerge(ctx: Context): Promise<{ json: unknown; text: string }> {
  for (const k of ["model", "clean", "labels", "arch"]) if (ctx.values[k] !== undefined) fail(`--merge reads the shards' results: --${k} does not apply`);
  if (ctx.positionals.length === 0) fail("--merge: give the result folders of the shards (badnet detect --merge DIR1 DIR2 ...)");
  const shards = ctx.positionals.map((d) => asShard(readResult(d), d));
  const m = mergeShards(shards);
  const dir = outDir(ctx, false);
  const report: ReportData = {
    title: `Neural Cleanse — ${shards[0].model.name} (${shards.length} shards merged)`,
    createdAt: new Date().toISOString(),
    command: commandLine(),
    model: readResult(ctx.positionals[0]).model,
    neuralCleanse: {
      labels: m.labels,
      flagged: m.flagged,
      medianNorm: m.medianNorm,
      mad: m.mad,
      scale: m.scale,
      triggers: m.triggers,
      families: m.families,
      images: m.images,
      settings: m.settings,
      seconds: m.seconds,
      shards: ctx.positionals,
    } as ReportData["neuralCleanse"],
    timings: { "neural-cleanse": m.seconds },
  };
  const files = dir ? await writeResult(ctx, dir, report) : [];
  const lines = [
    `merged     ${shards.length} shards, ${m.labels.length} labels of ${shards[0].model.name}`,
    ...Object.entries(m.families).map(([f, st]) => `${f.padEnd(10)} median L1 ${st.median.toFixed(2)}, MAD ${st.mad.toFixed(3)} (${m.scale}), flags ${st.flagged.length ? st.flagged.join(", ") : "none"}`),
    "",
    ...table(m),
    "",
    ...reasons(m.labels),
    m.flagged.length ? `flagged    ${m.flagged.join(", ")}` : "flagged    none",
  ];
  if (dir) lines.push(`wrote      ${files.length} files to ${dir}`);
  return { json: report, text: lines.join("\n") };
}

export const detectCommand: Command = {
  name: "detect",
  summary: "Neural Cleanse: reverse-engineer a trigger per label and flag backdoor targets (MAD anomaly index > 2)",
  usage:
    "--model M [--arch deepid] [--input-scale S] --clean D [--labels 0,5,7|0-9] [--out DIR [--report]] [--steps N] [--screen-steps N]\n" +
    "       [--batch-size B] [--screen-batch-size B] [--labels-per-run L] [--shortlist K] [--restarts R] [--families mask,blend]\n" +
    "       [--more-starts M] [--scale log|linear] [--schedule bound|halving|two-phase] [--fdr Q] [--seed S] [--json] [--quiet]\n" +
    "  badnet detect --merge DIR1 DIR2 ... [--out DIR [--report]]: the statistics over the labels of shards\n" +
    "  scanned with --labels A-B --out DIRi (same model, data and settings).\n" +
    "  Two trigger families are scanned: \"mask\" (the paper's per-pixel mask) and \"blend\" (one blend weight α for the\n" +
    "  whole image, for blended triggers); each has its own MAD statistics, on ln(norm) by default (--scale).\n" +
    "  Budget: --steps x --batch-size images x --restarts starts per label come from the model's cost (forward\n" +
    "  multiply-accumulates per image): 300 x 32 x 2 on small models, less on large ones; given values win.\n" +
    "  Schedule (--schedule bound, the default): about 16 seeded reference labels get the full budget first and set\n" +
    "  the median and MAD; every other label gets a first look (1/16 of the steps on 1/4 of the images), then rungs\n" +
    "  of 4x the steps and 2x the images keep at most a tenth of the labels (at least --shortlist, default max(10, 1%\n" +
    "  of the labels)); a label stops at once when its norm, even falling twice as far as any reference label's\n" +
    "  did, stays above the flag threshold. The last candidates get the full budget, and a second start when below\n" +
    "  the flag threshold. Without screening (as many labels as the shortlist), the mask family's labels below the\n" +
    "  reference labels' median norm after --restarts starts get --more-starts further starts (default as many again).\n" +
    "  --schedule halving: --screen-steps (10) on --screen-batch-size (4) images, a quarter\n" +
    "  going on per rung. A flag needs a small-side anomaly index > 2, a false-discovery rate <= --fdr (0.05) over\n" +
    "  all labels, split over the trigger families (0.025 each with both: a label is flagged when either flags it)\n" +
    "  and, with >= 5 held-out images, a trigger that works on half of them. --natural-check adds the\n" +
    "  natural-feature check: no flag for a label whose trigger moves more images at a third of its strength than\n" +
    "  every reference label's, and a flag (second stage) for a candidate that moves fewer than all of them.\n" +
    "  Head shift (with >= 20 held-out images and a linear output layer): B's output layer is learned again from\n" +
    `  the clean images but the held-out ones (FST, at least ${HEAD_SHIFT_MIN_STEPS} steps in at most ${HEAD_SHIFT_MAX_EPOCHS} epochs); where\n` +
    "  the new layer classifies about as well as B's, a label whose mask trigger norm is below the median and\n" +
    "  keeps less than a quarter of its held-out success on that network is flagged too; the labels it flags then\n" +
    "  leave the median and MAD, and a label with an index > 2 that only the false-discovery rate held back is\n" +
    "  tested again without them; a label the blend family flags whose blend trigger keeps a quarter or more of\n" +
    "  its success there is not flagged (a natural label's trigger; --no-head-shift: all of this off).",
  positionals: true,
  options: {
    ...MODEL_OPTIONS,
    merge: { type: "boolean", description: "merge the results of sharded scans given as folders (detect --labels A-B --out DIR)" },
    schedule: { type: "string", description: "screening schedule (bound, halving or two-phase)", defaultText: "bound" },
    fdr: { type: "string", description: "false-discovery rate a flag must stay under, over all labels", defaultText: "0.05" },
    "natural-check": { type: "boolean", description: "apply the natural-feature check and its second stage to the flags (see the README)" },
    "no-head-shift": { type: "boolean", description: "skip the head-shift evidence (FST on the clean data, then the small triggers measured again; see the README)" },
    "batch-size": { type: "string", description: "images per optimization step in the full phase", defaultText: "from the model's cost (32 on small models)" },
    clean: { type: "string", description: "labelled clean data the triggers are reversed on" },
    labels: { type: "string", description: "labels to scan (e.g. 0,5,7 or 0-9)", defaultText: "all" },
    ...OUTPUT_OPTIONS,
    steps: { type: "string", description: "optimization steps per label in the full phase", defaultText: "from the model's cost (300 on small models)" },
    "screen-steps": { type: "string", description: "steps per label in the first screening rung", defaultText: "10" },
    "screen-batch-size": { type: "string", description: "images per step in the first screening rung", defaultText: "4" },
    "labels-per-run": { type: "string", description: "labels optimized together in one graph run", defaultText: "32" },
    shortlist: { type: "string", description: "labels that get the full budget after screening", defaultText: "max(10, 1% of the labels)" },
    restarts: { type: "string", description: "random starts per label in the full phase", defaultText: "from the model's cost (2 on small models)" },
    "more-starts": { type: "string", description: "further starts for mask-family labels whose norm is below the reference median (scans without screening; 0: off)", defaultText: "as many as --restarts when 2 or more" },
    families: { type: "string", description: "trigger families to scan (mask, blend)", defaultText: "mask,blend" },
    scale: { type: "string", description: "scale of the MAD statistics (log or linear)", defaultText: "log" },
    seed: { type: "string", description: "seed of the image split and the initialization", defaultText: "0" },
  },
  async run(ctx: Context) {
    if (ctx.values.merge === true) return runMerge(ctx);
    if (ctx.positionals.length) fail(`detect: unexpected argument "${ctx.positionals[0]}" (result folders go with --merge)`);
    const t0 = performance.now();
    const schedule = str(ctx, "schedule");
    if (schedule !== undefined && !(NC_SCHEDULES as readonly string[]).includes(schedule)) fail(`--schedule must be ${NC_SCHEDULES.join(", ")}, got "${schedule}"`);
    const scale = await inputScale(ctx, "clean");
    const modelPath = str(ctx, "model", true);
    const model = await modelFrom(ctx);
    const clean = await dataFrom(ctx, "clean", scale, true);
    const labelSpec = str(ctx, "labels");
    const labels = labelSpec === undefined ? undefined : parseLabels(labelSpec, model.numClasses);
    const dir = outDir(ctx, false);
    // Upper bounds so that a typo (--steps 1e9, --restarts 1e6) is an error, not a scan that never ends.
    const opt = (key: string, max = 65536) => optNum(ctx, key, { min: 1, max, integer: true });
    const familySpec = str(ctx, "families");
    const families = familySpec === undefined ? undefined : checkFamilies(familySpec.split(",").map((f) => f.trim()));
    const scaleSpec = str(ctx, "scale");
    if (scaleSpec !== undefined && scaleSpec !== "log" && scaleSpec !== "linear") fail(`--scale must be log or linear, got "${scaleSpec}"`);
    const loaded = (performance.now() - t0) / 1000;

    const bars = ncProgress(ctx);
    const result = await detectBackdoor(model, clean, {
      inputScale: scale,
      labels,
      steps: opt("steps", 100_000),
      screenSteps: opt("screen-steps", 100_000),
      batchSize: opt("batch-size"),
      screenBatchSize: opt("screen-batch-size"),
      labelsPerRun: opt("labels-per-run"),
      shortlist: opt("shortlist", Infinity),
      restarts: opt("restarts", 1000),
      moreStarts: optNum(ctx, "more-starts", { min: 0, max: 1000, integer: true }),
      families,
      scale: scaleSpec as NormScale | undefined,
      schedule: schedule as NcSchedule | undefined,
      fdr: optNum(ctx, "fdr", { min: 1e-9, max: 1 }),
      seed: optNum(ctx, "seed", { min: 0, max: MAX_SEED, integer: true }),
      naturalCheck: ctx.values["natural-check"] === true,
      headShift: ctx.values["no-head-shift"] !== true,
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
      `budget     ${result.settings.steps} steps x ${Math.min(result.settings.batchSize, result.images.optimize)} images x ${result.settings.restarts} starts per label${!screened && result.settings.moreStarts > 0 ? ` (+${result.settings.moreStarts} for mask triggers below the reference median)` : ""}${result.settings.batchSize > result.images.optimize ? ` (batch ${result.settings.batchSize} capped at the ${result.images.optimize} images)` : ""}: ${result.settings.budget?.reason ?? "given"}`,
      `labels     ${result.labels.length} scanned` +
        (screened ? ` (${result.labels.length - screened} with the full budget, ${screened} screened only)` : ""),
      ...Object.entries(result.families).map(
        ([f, st]) => `${f.padEnd(10)} median L1 ${st.median.toFixed(2)}, MAD ${st.mad.toFixed(3)} (${result.settings.scale}), flags ${st.flagged.length ? st.flagged.join(", ") : "none"}`,
      ),
      "",
      ...table(result),
      "",
      ...reasons(result.labels),
      result.flagged.length
        ? `flagged    ${result.flagged.join(", ")}  (small-side anomaly index > 2, false-discovery rate <= ${result.settings.fdr} split over ${result.settings.families.length} trigger famil${result.settings.families.length === 1 ? "y" : "ies"}${ctx.values["natural-check"] === true ? " or a switch-like trigger, no natural feature" : ""}, or a small trigger lost under a head shift; a blend flag whose trigger keeps its success there withdrawn; see the reasons above)`
        : "flagged    none (no label's trigger is an outlier on the small side or lost under a head shift)",
      ...(result.headShift && "skipped" in result.headShift ? [`head shift skipped: ${result.headShift.skipped}`] : []),
      `time       ${result.seconds.toFixed(1)} s (${(result.labels.length / result.seconds).toFixed(2)} labels/s, ${result.imagePasses} image passes)`,
    ];
    if (dir) lines.push(`wrote      ${files.length} files to ${dir}`);
    return { json: report, text: lines.join("\n") };
  },
};
