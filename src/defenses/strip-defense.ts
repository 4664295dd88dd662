// STRIP behind the Defense interface: an input-level detector, so it hands back G and no repaired network.
import { runStrip } from "./strip.js";
import { defineDefense, SEED_OPTION } from "./defense.js";
import { pct } from "../report/text.js";

export const stripDefinition = defineDefense({
  name: "strip",
  summary: "STRIP run-time detection: entropy of predictions on superimposed inputs; writes G.onnx",
  kind: "detector",
  options: {
    k: { kind: "integer", description: "clean overlay images superimposed on each input", default: 32, min: 1, max: 10000 },
    frr: { kind: "number", description: "false-rejection rate on the clean data the entropy threshold is set for", default: 0.01, min: 0, max: 1, exclusive: true },
    blend: { kind: "choice", choices: ["mean", "add"] as const, description: "superimposition: mean (0.5·x + 0.5·c) or add (the paper's saturated sum)", default: "mean" },
    seed: SEED_OPTION,
    batchSize: { kind: "integer", description: "blended images per inference run", default: 512, min: 1, max: 65536 },
  },
  async run(model, data, o, ctx) {
    const { clean, test, poisoned } = data;
    const offsets = { valid: 0, test: clean.size, poisoned: clean.size + (test?.size ?? 0) };
    const total = offsets.poisoned + (poisoned?.size ?? 0);
    const t0 = performance.now();
    const r = await runStrip(model, { valid: clean, test, poisoned }, {
      k: o.k,
      frr: o.frr,
      blend: o.blend,
      maxValue: 255 / ctx.inputScale,
      seed: o.seed,
      imagesPerRun: o.batchSize,
      onProgress: (stage, done) => ctx.progress?.({ stage: "strip", done: offsets[stage] + done, total, unit: "img" }),
    });
    const s = r.strip;
    const lines = [
      `model            ${model.name}`,
      `overlays         k=${o.k} clean images (${o.blend} blend), threshold ${r.threshold.toFixed(4)} bits for FRR ${pct(o.frr)} on ${clean.name}`,
      `false rejections ${pct(s.frr)} on ${(test ?? clean).name}`,
    ];
    if (s.detectionRate !== undefined && poisoned) lines.push(`detection rate   ${pct(s.detectionRate)} of ${poisoned.size} poisoned inputs`);
    if (r.g?.poisoned) lines.push(`attack success   ${pct(r.g.poisoned.attackSuccess / r.g.poisoned.n)} through G`);
    const files: string[] = [];
    return {
      title: `STRIP — ${model.name}`,
      g: r.gGraph,
      gRates: r.g,
      sections: { strip: s },
      extra: { files },
      artifacts: [
        {
          kind: "graph",
          file: "G.onnx",
          graph: r.gGraph,
          doc: `STRIP G of ${model.name}: class ${model.numClasses} = input rejected (entropy < ${r.threshold}, k=${o.k}, blend ${o.blend})`,
          onWritten: (f) => void files.push(...f),
        },
      ],
      lines,
      note: `threshold ${r.threshold.toPrecision(4)} bits (FRR target ${pct(s.frrTarget)} on valid), FRR on test ${pct(s.frr)}${s.detectionRate !== undefined ? `, entropy detection ${pct(s.detectionRate)}` : ""}`,
      timings: { strip: (performance.now() - t0) / 1000 },
    };
  },
});
