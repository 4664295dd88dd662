// The repairs that need no reversed trigger and change B's weights: ANP (adversarial neuron pruning) and
// i-BAU (adversarial unlearning of a universal perturbation). Both write repaired.{h5,onnx} and G.onnx.
import { basename, join } from "node:path";
import { anp, checkAnpOptions } from "../../defenses/anp.js";
import { writeOnnx } from "../../defenses/g-model.js";
import { checkIbauOptions, ibau } from "../../defenses/ibau.js";
import type { NcEvaluation } from "../../defenses/nc-mitigation.js";
import { saveRepaired } from "../../io/save-model.js";
import type { Graph } from "../../graph/ir.js";
import type { Model } from "../../model/model.js";
import type { ReportData } from "../../report/types.js";
import { batchSize, inputScale, MODEL_OPTIONS, num, pct, progress, str, type Command, type Context, DATA_OPTIONS, defenseInputs } from "../command.js";
import { ncEvalLine } from "./nc-prune.js";
import { gLine } from "./prune.js";
import { OUTPUT_OPTIONS, outDir, reportModelOf, writeResult } from "../output.js";

interface Repaired extends NcEvaluation {
  model: Model;
  gGraph: Graph;
}

/** Writes the repaired network, G and result.json; returns the command's JSON and text. */
async function finish(ctx: Context, dir: string, b: Model, r: Repaired, method: string, details: Record<string, unknown>, describe: string, timings: Record<string, number>, dataNames: { clean: string; eval: string }) {
  const t0 = performance.now();
  const files = await saveRepaired(dir, "repaired", r.model);
  const gPath = join(dir, "G.onnx");
  writeOnnx(gPath, r.gGraph, `${method} G of ${b.name}: class ${b.numClasses} = B and the repaired B' disagree`);
  files.push(gPath);
  timings.write = (performance.now() - t0) / 1000;
  const report: ReportData & Record<string, unknown> = {
    title: `${method} — ${b.name}`,
    model: reportModelOf(b, str(ctx, "model", true)),
    evaluation: { before: r.before, after: r.after },
    g: r.g,
    timings,
    [method.toLowerCase().replace(/[^a-z]/g, "")]: details,
  };
  const written = await writeResult(ctx, dir, report);
  const lines = [
    `model       ${b.name}`,
    `${method.padEnd(11)} ${describe} (on ${dataNames.clean})`,
    `before      ${ncEvalLine(r.before)} on ${dataNames.eval}`,
    `after       ${ncEvalLine(r.after)}`,
    `G           ${gLine(r.g)}`,
    `wrote       ${dir}: ${[...files, ...written].map((f) => basename(f)).join(", ")}`,
  ];
  return { json: { ...report, files: { repaired: files.slice(0, -1), g: gPath, result: written[0], ...(written[1] ? { report: written[1] } : {}) } }, text: lines.join("\n") };
}

export const anpCommand: Command = {
  name: "anp",
  summary: "Adversarial Neuron Pruning: learn per-neuron masks under adversarial neuron perturbation, prune the small ones; writes repaired.{h5,onnx}, G.onnx",
  usage:
    "--model M [--arch deepid] --input-scale S --clean DATA [--test T] [--poisoned P] [--layers conv_1,..] [--eps 0.4] [--alpha 0.2] " +
    "[--lr 0.2] [--iterations 300] [--batch-size 128] [--threshold 0.2] [--max-drop 0.02] [--holdout 0.2] [--seed 0] --out DIR [--report] [--json]",
  options: {
    ...MODEL_OPTIONS,
    ...DATA_OPTIONS,
    layers: { type: "string" },
    eps: { type: "string" },
    alpha: { type: "string" },
    lr: { type: "string" },
    iterations: { type: "string" },
    threshold: { type: "string" },
    "max-drop": { type: "string" },
    holdout: { type: "string" },
    seed: { type: "string" },
    ...OUTPUT_OPTIONS,
  },
  async run(ctx) {
    const t0 = performance.now();
    const scale = inputScale(ctx);
    const layers = str(ctx, "layers")?.split(",").map((s) => s.trim()).filter(Boolean);
    const settings = checkAnpOptions({
      eps: num(ctx, "eps", 0.4),
      alpha: num(ctx, "alpha", 0.2),
      lr: num(ctx, "lr", 0.2),
      iterations: num(ctx, "iterations", 300),
      batchSize: batchSize(ctx, 128),
      threshold: num(ctx, "threshold", 0.2),
      maxDrop: num(ctx, "max-drop", 0.02),
      holdout: num(ctx, "holdout", 0.2),
      seed: num(ctx, "seed", 0, { integer: true, min: 0 }),
    });
    const dir = outDir(ctx)!;
    const { model, valid: clean, test, poisoned } = await defenseInputs(ctx, scale);
    const timings: Record<string, number> = { load: (performance.now() - t0) / 1000 };
    const t1 = performance.now();
    const bar = progress(ctx, "anp", settings.iterations, "it");
    const r = await anp(model, { clean, test, poisoned }, { ...settings, layers, onIteration: (done, _t, loss) => bar.tick(1, `loss ${loss.toFixed(4)}`) });
    bar.done();
    timings.anp = (performance.now() - t1) / 1000;
    const s = r.settings;
    const details = {
      settings: s,
      sites: r.sites.map((x) => ({ layer: x.layer, units: x.units })),
      pruned: r.pruned.map((p) => ({ layer: r.sites[p.site].layer, unit: p.unit, mask: p.mask })),
      belowThreshold: r.belowThreshold,
      heldOut: r.heldOut,
      lossCurve: r.lossCurve,
    };
    const describe =
      `${s.iterations} iterations, ε ${s.eps}, α ${s.alpha}: ${r.pruned.length} of ${r.sites.reduce((a, x) => a + x.units, 0)} neurons pruned ` +
      `(${r.belowThreshold} masks below ${s.threshold}; held-out accuracy ${pct(r.heldOut.before)} → ${pct(r.heldOut.after)}, budget ${pct(s.maxDrop)})`;
    const out = await finish(ctx, dir, model, r, "ANP", details, describe, timings, { clean: clean.name, eval: (test ?? clean).name });
    for (const d of [clean, test, poisoned]) d?.close();
    return out;
  },
};

export const ibauCommand: Command = {
  name: "ibau",
  summary: "i-BAU adversarial unlearning (Danskin-gradient variant): unlearn a universal perturbation found on the clean data; writes repaired.{h5,onnx}, G.onnx",
  usage:
    "--model M [--arch deepid] --input-scale S --clean DATA [--test T] [--poisoned P] [--rounds 5] [--rms 0.1] [--perturb-steps 20] " +
    "[--ratio 0.5] [--lr 0.001] [--batch-size 64] [--max-drop 0.02] [--holdout 0.2] [--seed 0] --out DIR [--report] [--json]",
  options: {
    ...MODEL_OPTIONS,
    ...DATA_OPTIONS,
    rounds: { type: "string" },
    rms: { type: "string" },
    "perturb-steps": { type: "string" },
    ratio: { type: "string" },
    lr: { type: "string" },
    "max-drop": { type: "string" },
    holdout: { type: "string" },
    seed: { type: "string" },
    ...OUTPUT_OPTIONS,
  },
  async run(ctx) {
    const t0 = performance.now();
    const scale = inputScale(ctx);
    const settings = checkIbauOptions({
      rounds: num(ctx, "rounds", 5),
      rms: num(ctx, "rms", 0.1),
      perturbSteps: num(ctx, "perturb-steps", 20),
      ratio: num(ctx, "ratio", 0.5),
      lr: num(ctx, "lr", 1e-3),
      batchSize: batchSize(ctx, 64),
      maxDrop: num(ctx, "max-drop", 0.02),
      holdout: num(ctx, "holdout", 0.2),
      inputScale: scale,
      seed: num(ctx, "seed", 0, { integer: true, min: 0 }),
    });
    const dir = outDir(ctx)!;
    const { model, valid: clean, test, poisoned } = await defenseInputs(ctx, scale);
    const timings: Record<string, number> = { load: (performance.now() - t0) / 1000 };
    const t1 = performance.now();
    const bar = progress(ctx, "i-BAU", settings.rounds, "round");
    const r = await ibau(model, { clean, test, poisoned }, { ...settings, onRound: (x) => bar.tick(1, `held-out acc ${pct(x.heldOutAccuracy)}`) });
    bar.done();
    timings.ibau = (performance.now() - t1) / 1000;
    const s = r.settings;
    const kept = r.history[r.chosenRound];
    const describe =
      `${s.rounds} rounds (Danskin gradient), universal perturbation RMS ${s.rms} of the input range on ${pct(s.ratio)} of each batch: ` +
      `kept round ${r.chosenRound}, held-out accuracy ${pct(r.history[0].heldOutAccuracy)} → ${pct(kept.heldOutAccuracy)}`;
    const details = { settings: s, chosenRound: r.chosenRound, history: r.history.map(({ train: _t, ...h }) => h) };
    const out = await finish(ctx, dir, model, r, "i-BAU", details, describe, timings, { clean: clean.name, eval: (test ?? clean).name });
    for (const d of [clean, test, poisoned]) d?.close();
    return out;
  },
};
