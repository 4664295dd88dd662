import { openImageFiles } from "../../io/image-folder.js";
import { checkShape } from "../../io/dataset.js";
import { forEachBatch, forwardGraph } from "../../model/forward.js";
import { Session } from "../../runtime/session.js";
import { fail } from "../../errors.js";
import { inputScale, MODEL_OPTIONS, modelFrom, type Command } from "../command.js";

export interface Top {
  label: number;
  logit: number;
  prob: number;
}

/** The k largest entries of one logits row with their softmax probabilities. */
export function topK(logits: ArrayLike<number>, k: number): Top[] {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) max = Math.max(max, logits[i]);
  let z = 0;
  for (let i = 0; i < logits.length; i++) z += Math.exp(logits[i] - max);
  const idx = Array.from({ length: logits.length }, (_, i) => i).sort((a, b) => logits[b] - logits[a]).slice(0, k);
  return idx.map((i) => ({ label: i, logit: logits[i], prob: Math.exp(logits[i] - max) / z }));
}

export const predictCommand: Command = {
  name: "predict",
  summary: "classify PNG/JPEG images (top-1 and top-5); on a G model class N means 'backdoored input'",
  usage: "--model M [--arch deepid] --input-scale S FILE... [--json]",
  options: { ...MODEL_OPTIONS },
  positionals: true,
  async run(ctx) {
    if (ctx.positionals.length === 0) fail("predict: give one or more image files");
    const scale = await inputScale(ctx);
    const model = await modelFrom(ctx);
    const ds = await openImageFiles(ctx.positionals, { inputScale: scale });
    checkShape(ds, model.inputShape, `model ${model.name}`);
    const session = await Session.create(forwardGraph(model));
    const k = model.numClasses;
    const results: { file: string; label: number; top5: Top[] }[] = [];
    await forEachBatch(session, ds, (out, start, count) => {
      const data = out[model.logits].data as Float32Array;
      for (let i = 0; i < count; i++) {
        const top5 = topK(data.subarray(i * k, (i + 1) * k), Math.min(5, k));
        results.push({ file: ctx.positionals[start + i], label: top5[0].label, top5 });
      }
    });
    await session.release();
    const text = results
      .map((r) => `${r.file}: ${r.label}  (${r.top5.map((t) => `${t.label}:${t.prob.toFixed(3)}`).join(" ")})`)
      .join("\n");
    return { json: results, text };
  },
};
