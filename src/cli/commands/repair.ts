// badnet repair: parse, run the library's repair pipeline (detection → triggers in memory → defense → G), save.
import { mkdirSync } from "node:fs";
import { basename, join } from "node:path";
import { fail } from "../../errors.js";
import { checkFpr } from "../../defenses/g-calibrate.js";
import { checkRepairRequest, repair } from "../../defenses/pipeline.js";
import { DEFENSES } from "../../defenses/registry.js";
import { DATA_OPTIONS, defenseInputs, inputScale, MODEL_OPTIONS, num, optNum, progressBars, str, type Command } from "../command.js";
import { parseLabels } from "../labels.js";
import { detectResult, writeTriggerPngs } from "../nc-output.js";
import { OUTPUT_OPTIONS, outDir, saveOutcome, writeJson } from "../output.js";
import type { NeuralCleanseResult } from "../../defenses/neural-cleanse.js";
import { MAX_SEED } from "../../util/random.js";

export const repairCommand: Command = {
  name: "repair",
  summary: `detect with Neural Cleanse, then repair (auto: candidate repairs scored on a held-out clean split, the best kept; or ${DEFENSES.map((d) => d.name).join(", ")}); writes everything to --out`,
  usage:
    `--model M [--arch deepid] [--input-scale S] --clean VALID [--test TEST] [--poisoned P ...] [--defense auto|${DEFENSES.map((d) => d.name).join("|")}] ` +
    "[--auto-budget SECONDS] [--accuracy-window POINTS] [--labels 0-9] [--suspect L,..] [--more-starts M] [--skip-detect] [--seed 0] [--batch-size B] [--fpr 0.01|off] [--fpr-confidence 0.9] --out DIR [--report] [--force] [--json] [--quiet]",
  options: {
    ...MODEL_OPTIONS,
    "batch-size": { type: "string", description: "the defense's batch size (its own default when absent; Neural Cleanse keeps its own)" },
    ...DATA_OPTIONS,
    defense: { type: "string", description: `the repair: auto (when a label is flagged: fst, prune-unlearn, sau, unlearn, ft-sam, ibau, fine-prune and B unchanged, scored on a held-out part of --clean, the best kept; see result.json selection) or ${DEFENSES.map((d) => d.name).join(", ")}`, defaultText: "auto" },
    "auto-budget": { type: "string", description: "with --defense auto: seconds after which no further candidate repair starts (the first always runs)", defaultText: "no limit" },
    "accuracy-window": {
      type: "string",
      description: "with --defense auto: candidates within this many points of the best held-out clean accuracy (or 1.96 standard errors, if more) are eligible; widen it to pay accuracy for a repair that removes the trigger (the chose line names one when the window keeps it out)",
      defaultText: "1",
    },
    labels: { type: "string", description: "labels Neural Cleanse scans (e.g. 0,5,7 or 0-9)", defaultText: "all" },
    suspect: {
      type: "string",
      description: "labels you suspect are attack targets (e.g. 3 or 3,5): the repairs use their reversed triggers from the scan as if Neural Cleanse had flagged them (auto still weighs B unchanged among its candidates)",
      defaultText: "none",
    },
    "more-starts": { type: "string", description: "Neural Cleanse's further starts for mask-family labels below the reference median (see detect; 0: off)", defaultText: "as many as its starts per label when 2 or more" },
    "skip-detect": { type: "boolean", description: "no Neural Cleanse detection (defenses that need its triggers refuse)" },
    seed: { type: "string", description: "seed of Neural Cleanse, of the defense and of the clean data's splits (G's held-out part, auto's selection part)", defaultText: "0" },
    fpr: {
      type: "string",
      description: "G's false-alarm rate on clean inputs: G is calibrated to it on a held-out part of --clean that detection and the repair never see; off = the defense's own G, all of --clean used",
      defaultText: "0.01",
    },
    "fpr-confidence": {
      type: "string",
      description: "probability over the held-out draw that G's false-alarm rate stays at or below --fpr (higher: a stricter threshold, with room for test data that drifts from --clean, at some cost in detection)",
      defaultText: "0.9",
    },
    ...OUTPUT_OPTIONS,
  },
  async run(ctx) {
    const t0 = performance.now();
    const detect = ctx.values["skip-detect"] === true ? false : {};
    const defense = str(ctx, "defense") ?? "auto";
    checkRepairRequest({ defense, detect });
    if (str(ctx, "suspect") !== undefined && detect === false) fail("--suspect takes the suspected labels' reversed triggers from Neural Cleanse's scan: it cannot go with --skip-detect");
    const scale = await inputScale(ctx, "clean");
    const seed = optNum(ctx, "seed", { integer: true, min: 0, max: MAX_SEED });
    // Checked here, before any work: auto's candidates would each reject a bad value and be skipped.
    const batchSize = optNum(ctx, "batch-size", { min: 1, max: 65536, integer: true });
    const moreStarts = optNum(ctx, "more-starts", { min: 0, max: 1000, integer: true });
    if (moreStarts !== undefined && detect === false) fail("--more-starts is a Neural Cleanse setting: it cannot go with --skip-detect");
    const budgetSeconds = optNum(ctx, "auto-budget", { min: 0 });
    if (budgetSeconds !== undefined && defense !== "auto") fail("--auto-budget only applies to --defense auto");
    const windowPoints = optNum(ctx, "accuracy-window", { min: 0, max: 100 });
    if (windowPoints !== undefined && defense !== "auto") fail("--accuracy-window only applies to --defense auto");
    if (windowPoints === 0) fail("--accuracy-window must be above 0 points, got 0");
    const fprText = str(ctx, "fpr") ?? "0.01";
    const fpr = fprText === "off" ? undefined : num(ctx, "fpr", 0.01, { min: 0, max: 1 });
    if (fpr !== undefined) checkFpr(fpr);
    const confText = str(ctx, "fpr-confidence");
    if (confText !== undefined && fpr === undefined) fail("--fpr-confidence needs a G false-alarm rate (--fpr is off)");
    const fprConfidence = confText === undefined ? undefined : num(ctx, "fpr-confidence", 0.9, { min: 0, max: 1 });
    if (fprConfidence !== undefined && !(fprConfidence > 0 && fprConfidence < 1)) fail(`--fpr-confidence must be a probability between 0 and 1 (exclusive), got ${confText}`);
    const dir = outDir(ctx)!;
    const modelPath = str(ctx, "model", true);
    const { model, valid: clean, test, poisoned } = await defenseInputs(ctx, scale);
    const labelSpec = str(ctx, "labels");
    const labels = labelSpec === undefined ? undefined : parseLabels(labelSpec, model.numClasses);
    const suspectSpec = str(ctx, "suspect");
    const suspects = suspectSpec === undefined ? undefined : parseLabels(suspectSpec, model.numClasses, "--suspect");
    const unscanned = suspects?.filter((l) => labels && !labels.includes(l)) ?? [];
    if (unscanned.length) fail(`--suspect: label ${unscanned.join(", ")} is not among the --labels scanned, so it has no reversed trigger`);
    const load = (performance.now() - t0) / 1000;

    const bars = progressBars(ctx);
    let r;
    try {
      r = await repair(model, { clean, test, poisoned }, {
        defense,
        detect: detect && { labels, seed, moreStarts },
        suspects,
        common: { seed, batchSize },
        inputScale: scale,
        progress: bars.progress,
        fpr,
        fprConfidence,
        budgetSeconds,
        ...(windowPoints === undefined ? {} : { accuracyWindow: windowPoints / 100 }),
      });
    } finally {
      bars.done();
      for (const ds of [clean, test, poisoned]) ds?.close();
    }

    const lines: string[] = [];
    if (r.detection) {
      // The detection as `badnet detect --out DIR/detect` would save it (the triggers as PNGs, for people).
      const detectDir = join(dir, "detect");
      mkdirSync(detectDir, { recursive: true });
      writeTriggerPngs(detectDir, r.detection);
      writeJson(join(detectDir, "result.json"), detectResult(model, modelPath, r.detection, load));
      lines.push(
        `detection   Neural Cleanse on ${r.detection.labels.length} labels in ${r.detection.seconds.toFixed(1)} s: flagged ${r.detection.flagged.length ? r.detection.flagged.join(", ") : "none"}`,
        ...suspectLines(r.detection, suspects),
        `defense     ${r.defense.name}${defense === "auto" ? " (auto)" : ""}`,
        "",
      );
    }
    const title = `Repair (${r.detection ? "Neural Cleanse + " : ""}${r.defense.name}) — ${model.name}`;
    const saved = await saveOutcome(ctx, dir, model, modelPath, r.outcome, { load, ...r.timings }, { title, started: t0 });
    lines.push(...r.outcome.lines, "", `wrote       ${dir}: ${saved.files.map((f) => basename(f)).join(", ")}${r.detection ? ", detect/" : ""}`);
    return { json: saved.result, text: lines.join("\n") };
  },
};

/**
 * With nothing flagged, the smallest reversed trigger is where a missed target most often is (zoo: the large
 * checkerboard's and SIG's targets, unflagged in every seed, are the smallest in every seed; so are natural
 * labels of clean models, which is why it is a hint and not a flag). Named suspects are confirmed as used.
 */
export function suspectLines(d: NeuralCleanseResult, suspects: readonly number[] | undefined): string[] {
  const added = suspects?.filter((l) => !d.flagged.includes(l)) ?? [];
  if (added.length) return [`suspected   label ${added.join(", ")} (--suspect): repaired with ${added.length > 1 ? "their" : "its"} reversed trigger${added.length > 1 ? "s" : ""} as if flagged`];
  if (d.flagged.length || suspects?.length) return [];
  const smallest = [...d.labels].sort((a, b) => a.l1Norm - b.l1Norm)[0];
  if (!smallest) return [];
  const idx = smallest.anomalyIndex === undefined ? "" : `, anomaly index ${smallest.anomalyIndex.toFixed(2)}`;
  return [`hint        the smallest reversed trigger is label ${smallest.label}'s (L1 ${smallest.l1Norm.toFixed(1)}${idx}, not flagged); if you suspect that label, --suspect ${smallest.label} repairs with its trigger`];
}
