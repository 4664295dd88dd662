import { existsSync, readFileSync, statSync } from "node:fs";
import { basename, join } from "node:path";
import { writeOnnx } from "../../defenses/g-model.js";
import { checkNcPruneOptions, ncPrune, triggerFromPngs, triggersFromReport, type ReversedTrigger } from "../../defenses/nc-mitigation.js";
import { neuralCleanseReport } from "../../defenses/nc-report.js";
import { checkLabelList, detectBackdoor, flaggedTriggers } from "../../defenses/neural-cleanse.js";
import { fail } from "../../errors.js";
import type { Dataset } from "../../io/dataset.js";
import { saveRepaired } from "../../io/save-model.js";
import type { Model } from "../../model/model.js";
import type { ReportData, ReportEvalResult, ReportMitigation, ReportNeuralCleanse } from "../../report/types.js";
import { batchSize, inputScale, MODEL_OPTIONS, ncProgress, num, pct, progress, str, type Command, type Context, type Options, DATA_OPTIONS, defenseInputs } from "../command.js";
import { gLine } from "./prune.js";
import { OUTPUT_OPTIONS, outDir, readResult, reportModelOf, writeResult } from "../output.js";

// Shared by nc-prune and unlearn: where the reversed trigger(s) come from.

export const TRIGGER_OPTIONS: Options = {
  trigger: { type: "string" },
  mask: { type: "string" },
  pattern: { type: "string" },
  target: { type: "string" },
  labels: { type: "string" },
  seed: { type: "string" },
};

export const TRIGGER_USAGE = "[--trigger DIR | --mask mask.png --pattern pattern.png --target L | --labels 0,1,..]";

export interface TriggerSource {
  flagged: number[];
  triggers: ReversedTrigger[];
  /** For the report, e.g. "neural-cleanse detection". */
  source: string;
  /** Present when detection ran here. */
  neuralCleanse?: ReportNeuralCleanse;
  seconds: number;
}

function readFile(path: string, what: string): Buffer {
  if (!existsSync(path)) fail(`${what} ${path}: no such file`);
  if (statSync(path).isDirectory()) fail(`${what} ${path} is a directory, expected a file`);
  return readFileSync(path);
}

/**
 * The triggers to mitigate: --mask/--pattern/--target, --trigger (a `badnet detect --out` folder or its
 * result.json), or else Neural Cleanse detection on the clean data (its flagged labels).
 */
export async function resolveTriggers(ctx: Context, model: Model, clean: Dataset, scale: number): Promise<TriggerSource> {
  const t0 = performance.now();
  const trigger = str(ctx, "trigger");
  const mask = str(ctx, "mask");
  const pattern = str(ctx, "pattern");
  const target = str(ctx, "target");
  const seconds = () => (performance.now() - t0) / 1000;
  if (trigger !== undefined && (mask !== undefined || pattern !== undefined)) fail("give either --trigger or --mask/--pattern, not both");
  if (mask !== undefined || pattern !== undefined || target !== undefined) {
    if (mask === undefined || pattern === undefined || target === undefined) fail("--mask, --pattern and --target go together (the reversed trigger's mask and pattern images and its target label)");
    const label = num(ctx, "target", undefined, { integer: true, min: 0, max: model.numClasses - 1 });
    const t = triggerFromPngs(readFile(mask, "mask"), readFile(pattern, "pattern"), label, model.inputShape, scale, { mask, pattern });
    return { flagged: [label], triggers: [t], source: `${mask} + ${pattern}`, seconds: seconds() };
  }
  if (trigger !== undefined) {
    const path = existsSync(trigger) && statSync(trigger).isDirectory() ? join(trigger, "result.json") : trigger;
    const r = triggersFromReport(readResult(trigger), path, model.inputShape, scale);
    return { ...r, source: `badnet detect result ${path}`, seconds: seconds() };
  }
  const labelsOpt = str(ctx, "labels");
  const labels = labelsOpt === undefined ? undefined : checkLabelList(labelsOpt.split(",").map((s) => Number(s.trim())), model.numClasses);
  const bars = ncProgress(ctx);
  const r = await detectBackdoor(model, clean, {
    inputScale: scale,
    labels,
    seed: num(ctx, "seed", 0, { integer: true, min: 0 }),
    onProgress: bars.onProgress,
  });
  bars.done();
  const triggers = flaggedTriggers(r);
  return { flagged: r.flagged, triggers, source: "neural-cleanse detection", neuralCleanse: neuralCleanseReport(r), seconds: seconds() };
}

/** "accuracy 98.10%, trigger 2.00%, ASR 1.50%" */
export function ncEvalLine(r: ReportEvalResult): string {
  return [`accuracy ${pct(r.cleanAccuracy)}`, r.triggerSuccess !== undefined ? `reversed trigger ${pct(r.triggerSuccess)}` : "", r.asr !== undefined ? `ASR ${pct(r.asr)}` : ""].filter(Boolean).join(", ");
}

/** The result when nothing is flagged: say so, repair nothing. */
export async function nothingFlagged(ctx: Context, dir: string, model: Model, method: ReportMitigation["method"], src: TriggerSource, timings: Record<string, number>): Promise<{ json: unknown; text: string }> {
  const report: ReportData & { flagged: number[] } = {
    title: `Neural Cleanse ${method} — ${model.name}`,
    model: reportModelOf(model, str(ctx, "model", true)),
    neuralCleanse: src.neuralCleanse,
    mitigation: { method, flagged: [], triggerSource: src.source },
    timings,
    flagged: [],
  };
  const written = await writeResult(ctx, dir, report);
  return {
    json: { ...report, files: { result: written[0], ...(written[1] ? { report: written[1] } : {}) } },
    text: `model    ${model.name}\nNeural Cleanse flagged no label (${src.source}): nothing to repair, no network written\nwrote    ${written.join(", ")}`,
  };
}

export const ncPruneCommand: Command = {
  name: "nc-prune",
  summary: "Neural Cleanse neuron pruning: prune the neurons the reversed trigger excites; writes repaired.{h5,onnx}, G.onnx",
  usage:
    `--model M [--arch deepid] [--input-scale S] --clean VALID [--test T] [--poisoned P] ${TRIGGER_USAGE} ` +
    "[--layer activation_1] [--threshold 0.05] [--max-drop 0.1] [--step 0.01] --out DIR [--report] [--json]",
  options: {
    ...MODEL_OPTIONS,
    ...TRIGGER_OPTIONS,
    ...DATA_OPTIONS,
    layer: { type: "string" },
    threshold: { type: "string" },
    "max-drop": { type: "string" },
    step: { type: "string" },
    ...OUTPUT_OPTIONS,
  },
  async run(ctx) {
    const t0 = performance.now();
    const scale = await inputScale(ctx, "clean");
    const settings = checkNcPruneOptions({ threshold: num(ctx, "threshold", 0.05), maxDrop: num(ctx, "max-drop", 0.1), step: num(ctx, "step", 0.01) });
    const dir = outDir(ctx)!;
    const { model, valid: clean, test, poisoned } = await defenseInputs(ctx, scale);
    const timings: Record<string, number> = { load: (performance.now() - t0) / 1000 };

    const src = await resolveTriggers(ctx, model, clean, scale);
    timings[src.neuralCleanse ? "neural-cleanse" : "trigger"] = src.seconds;
    if (src.flagged.length === 0) return nothingFlagged(ctx, dir, model, "nc-prune", src, timings);

    const t1 = performance.now();
    const cacheBar = progress(ctx, "activations", clean.size * (1 + src.triggers.length) + (poisoned?.size ?? 0));
    let cached = 0;
    let stepBar: ReturnType<typeof progress> | undefined;
    let stepShown = 0;
    const r = await ncPrune(model, { clean, test, poisoned }, src.triggers, {
      ...settings,
      layer: str(ctx, "layer"),
      batchSize: batchSize(ctx),
      onCache: (done) => {
        cacheBar.tick(done - cached);
        cached = done;
      },
      onStep: (k, units, p) => {
        if (!stepBar) {
          cacheBar.done();
          stepBar = progress(ctx, "nc-prune", units, "neuron");
        }
        stepBar.tick(k - stepShown, `acc ${pct(p.cleanAccuracy)}, trigger ${pct(p.triggerSuccess ?? 0)}${p.asr !== undefined ? `, ASR ${pct(p.asr)}` : ""}`);
        stepShown = k;
      },
    });
    cacheBar.done();
    stepBar?.done();
    timings["nc-prune"] = (performance.now() - t1) / 1000;

    const t2 = performance.now();
    const files = await saveRepaired(dir, "repaired", r.model);
    const gPath = join(dir, "G.onnx");
    writeOnnx(gPath, r.gGraph, `Neural Cleanse pruning G of ${model.name} (${r.pruned.length} neurons of ${r.site.layer}): class ${model.numClasses} = B and B' disagree`);
    files.push(gPath);
    timings.write = (performance.now() - t2) / 1000;
    const report: ReportData & { flagged: number[]; prunedNeurons: number[] } = {
      title: `Neural Cleanse pruning — ${model.name}`,
      model: reportModelOf(model, str(ctx, "model", true)),
      evaluation: { before: r.before, after: r.after },
      pruning: r.pruning,
      neuralCleanse: src.neuralCleanse,
      g: r.g,
      mitigation: {
        method: "nc-prune",
        flagged: src.flagged,
        triggerSource: src.source,
        layer: r.site.layer,
        neurons: r.site.units,
        neuronsPruned: r.pruned.length,
        stop: r.stop,
        settings,
      },
      timings,
      flagged: src.flagged,
      prunedNeurons: r.pruned,
    };
    const written = await writeResult(ctx, dir, report);
    for (const d of [clean, test, poisoned]) d?.close();

    const stopText = { threshold: `reversed-trigger success below ${pct(settings.threshold)}`, "max-drop": `stopped: clean accuracy would drop more than ${pct(settings.maxDrop)}`, "all-pruned": "every neuron pruned without reaching the threshold" }[r.stop];
    const lines = [
      `model       ${model.name}`,
      `triggers    label ${src.flagged.join(", ")} (${src.source})`,
      `layer       ${r.site.layer} (${r.site.units} neurons; ${r.site.how})`,
      `pruned      ${r.pruned.length} neurons: ${stopText}`,
      `before      ${ncEvalLine(r.before)} on ${(test ?? clean).name}`,
      `after       ${ncEvalLine(r.after)}`,
      `G           ${gLine(r.g)}`,
      `wrote       ${dir}: ${[...files, ...written].map((f) => basename(f)).join(", ")}`,
    ];
    return { json: { ...report, files: { repaired: files.slice(0, -1), g: gPath, result: written[0], ...(written[1] ? { report: written[1] } : {}) } }, text: lines.join("\n") };
  },
};
