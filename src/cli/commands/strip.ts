import { join } from "node:path";
import { runStrip, checkFrr, type Blend } from "../../defenses/strip.js";
import { writeOnnx } from "../../defenses/g-model.js";
import { fail } from "../../errors.js";
import type { ReportData } from "../../report/types.js";
import { batchSize, inputScale, MODEL_OPTIONS, num, pct, progress, str, type Command, type Context, DATA_OPTIONS, defenseInputs } from "../command.js";
import * as output from "../output.js";

export function blendOption(ctx: Context): Blend {
  const b = str(ctx, "blend") ?? "mean";
  if (b !== "mean" && b !== "add") fail(`--blend must be mean or add, got "${b}"`);
  return b;
}

export const stripCommand: Command = {
  name: "strip",
  summary: "STRIP run-time detection: entropy of predictions on superimposed inputs; writes G.onnx",
  usage: "--model M [--input-scale S] --clean VALID [--test T] [--poisoned P] [--k 32] [--frr 0.01] [--blend mean|add] [--seed 0] --out DIR [--report] [--json]",
  options: {
    ...MODEL_OPTIONS,
    ...DATA_OPTIONS,
    k: { type: "string" },
    frr: { type: "string" },
    blend: { type: "string" },
    seed: { type: "string" },
    ...output.OUTPUT_OPTIONS,
  },
  async run(ctx) {
    const t0 = performance.now();
    const scale = await inputScale(ctx, "clean");
    const k = num(ctx, "k", 32, { min: 1, max: 10000, integer: true });
    const frr = num(ctx, "frr", 0.01);
    checkFrr(frr);
    const blend = blendOption(ctx);
    const seed = num(ctx, "seed", 0, { integer: true, min: 0 });
    const dir = output.outDir(ctx)!;
    const { model, valid, test, poisoned } = await defenseInputs(ctx, scale);
    const tLoad = performance.now();

    const total = valid.size + (test?.size ?? 0) + (poisoned?.size ?? 0);
    const bar = progress(ctx, "strip", total);
    let shown = 0;
    const offsets = { valid: 0, test: valid.size, poisoned: valid.size + (test?.size ?? 0) };
    const r = await runStrip(model, { valid, test, poisoned }, {
      k,
      frr,
      blend,
      maxValue: 255 / scale,
      seed,
      imagesPerRun: batchSize(ctx, 512),
      onProgress: (stage, done) => {
        const at = offsets[stage] + done;
        bar.tick(at - shown);
        shown = at;
      },
    });
    bar.done();
    const tStrip = performance.now();

    const gPath = join(dir, "G.onnx");
    writeOnnx(gPath, r.gGraph, `STRIP G of ${model.name}: class ${model.numClasses} = input rejected (entropy < ${r.threshold}, k=${k}, blend ${blend})`);
    const report: ReportData = {
      title: `STRIP — ${model.name}`,
      model: output.reportModelOf(model, str(ctx, "model", true)),
      strip: r.strip,
      g: r.g,
      timings: { load: (tLoad - t0) / 1000, strip: (tStrip - tLoad) / 1000, write: (performance.now() - tStrip) / 1000 },
    };
    const written = await output.writeResult(ctx, dir, report);
    const resultPath = written[0];
    for (const d of [valid, test, poisoned]) d?.close();

    const s = r.strip;
    const lines = [
      `model            ${model.name}`,
      `overlays         k=${k} clean images (${blend} blend), threshold ${r.threshold.toFixed(4)} bits for FRR ${pct(frr)} on ${valid.name}`,
      `false rejections ${pct(s.frr)} on ${(test ?? valid).name}`,
    ];
    if (s.detectionRate !== undefined) lines.push(`detection rate   ${pct(s.detectionRate)} of ${poisoned!.size} poisoned inputs`);
    if (r.g?.poisoned) lines.push(`attack success   ${pct(r.g.poisoned.attackSuccess / r.g.poisoned.n)} through G`);
    lines.push(`wrote            ${[gPath, ...written].join(", ")}`);
    return { json: { ...report, files: { g: gPath, result: resultPath, ...(written[1] ? { report: written[1] } : {}) } }, text: lines.join("\n") };
  },
};
