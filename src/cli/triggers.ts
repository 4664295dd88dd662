// Where a trigger-based defense's reversed triggers come from on the command line: --mask/--pattern/--target
// (PNG files), --trigger (a `badnet detect --out` folder or its result.json), or else Neural Cleanse run here.
import { existsSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import type { TriggerInput } from "../defenses/defense.js";
import { triggerFromPngs, triggersFromReport } from "../defenses/nc-mitigation.js";
import { detectBackdoor } from "../defenses/neural-cleanse.js";
import { triggersFromDetection } from "../defenses/pipeline.js";
import { fail } from "../errors.js";
import type { Dataset } from "../io/dataset.js";
import type { Model } from "../model/model.js";
import { ncProgress, num, str, type Context, type Options } from "./command.js";
import { parseLabels } from "./labels.js";
import { readResult } from "./output.js";
import { MAX_SEED } from "../util/random.js";

export const TRIGGER_OPTIONS: Options = {
  trigger: { type: "string", description: "a `badnet detect --out` folder (or its result.json) to take the flagged labels' triggers from" },
  mask: { type: "string", description: "a reversed trigger's mask PNG (with --pattern and --target)" },
  pattern: { type: "string", description: "a reversed trigger's pattern PNG (with --mask and --target)" },
  target: { type: "string", description: "the target label of --mask/--pattern" },
  labels: { type: "string", description: "labels Neural Cleanse scans when it runs here (e.g. 0,5,7 or 0-9)", defaultText: "all" },
  seed: { type: "string", description: "seed of Neural Cleanse when it runs here", defaultText: "0" },
};

function readFile(path: string, what: string): Buffer {
  if (!existsSync(path)) fail(`${what} ${path}: no such file`);
  if (statSync(path).isDirectory()) fail(`${what} ${path} is a directory, expected a file`);
  return readFileSync(path);
}

/**
 * Checks --seed before anything is loaded: its value always, and that it has an effect. With --trigger or
 * --mask/--pattern Neural Cleanse does not run here, so a defense without a seed of its own (nc-prune) would
 * leave it unused, unsaid.
 */
export function checkTriggerSeed(ctx: Context, defense: string, ownSeed: boolean): void {
  if (str(ctx, "seed") === undefined) return;
  num(ctx, "seed", 0, { integer: true, min: 0, max: MAX_SEED });
  const given = str(ctx, "trigger") !== undefined ? "--trigger" : str(ctx, "mask") !== undefined || str(ctx, "pattern") !== undefined ? "--mask/--pattern" : undefined;
  if (given && !ownSeed) fail(`--seed is the seed of Neural Cleanse when it runs here; with ${given} it does not run, and ${defense} has no seed of its own: leave --seed out`);
}

/** The triggers to start from, and the seconds it took to get them (Neural Cleanse's run, when it ran). */
export async function resolveTriggers(ctx: Context, model: Model, clean: Dataset, scale: number): Promise<TriggerInput & { seconds: number }> {
  const t0 = performance.now();
  const trigger = str(ctx, "trigger");
  const mask = str(ctx, "mask");
  const pattern = str(ctx, "pattern");
  const target = str(ctx, "target");
  const seconds = () => (performance.now() - t0) / 1000;
  if (trigger !== undefined && (mask !== undefined || pattern !== undefined)) fail("give either --trigger or --mask/--pattern, not both");
  // --labels chooses what Neural Cleanse scans here; given triggers would leave it without effect, unsaid.
  if (str(ctx, "labels") !== undefined && (trigger !== undefined || mask !== undefined || pattern !== undefined))
    fail(`--labels chooses the labels Neural Cleanse scans when it runs here; with ${trigger !== undefined ? "--trigger the flagged labels come from that result" : "--mask/--pattern the label is --target"}: leave --labels out`);
  if (mask !== undefined || pattern !== undefined || target !== undefined) {
    if (mask === undefined || pattern === undefined || target === undefined) fail("--mask, --pattern and --target go together (the reversed trigger's mask and pattern images and its target label)");
    const label = num(ctx, "target", undefined, { integer: true, min: 0, max: model.numClasses - 1 });
    const t = triggerFromPngs(readFile(mask, "mask"), readFile(pattern, "pattern"), label, model.inputShape, scale, { mask, pattern, options: { mask: "--mask", pattern: "--pattern" }, label: `--target ${label}` });
    return { flagged: [label], triggers: [t], source: `${mask} + ${pattern}`, seconds: seconds() };
  }
  if (trigger !== undefined) {
    const path = existsSync(trigger) && statSync(trigger).isDirectory() ? join(trigger, "result.json") : trigger;
    const r = triggersFromReport(readResult(trigger), path, model.inputShape, scale, model.numClasses);
    return { ...r, source: `badnet detect result ${path}`, seconds: seconds() };
  }
  const labelsOpt = str(ctx, "labels");
  // The same syntax as detect and repair: ranges allowed, an empty or malformed item named (Number("") is 0).
  const labels = labelsOpt === undefined ? undefined : parseLabels(labelsOpt, model.numClasses);
  const bars = ncProgress(ctx);
  const r = await detectBackdoor(model, clean, { inputScale: scale, labels, seed: num(ctx, "seed", 0, { integer: true, min: 0, max: MAX_SEED }), onProgress: bars.onProgress });
  bars.done();
  return { ...triggersFromDetection(r), seconds: seconds() };
}
