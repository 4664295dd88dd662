import { evaluate } from "../../eval/evaluate.js";
import { batchSize, dataFrom, poisonedFrom, inputScale, DATA_OPTIONS, MODEL_OPTIONS, modelFrom, pct, progress, type Command } from "../command.js";

export const evalCommand: Command = {
  name: "eval",
  summary: "clean accuracy and attack success rate (ASR) of a model",
  usage: "--model M [--arch deepid] [--input-scale S] --clean D [--poisoned P ...] [--json]",
  options: { ...MODEL_OPTIONS, clean: { ...DATA_OPTIONS.clean, description: "labelled clean data (clean accuracy)" }, poisoned: DATA_OPTIONS.poisoned },
  async run(ctx) {
    const scale = await inputScale(ctx, "clean");
    const model = await modelFrom(ctx);
    const clean = await dataFrom(ctx, "clean", scale, true);
    const poisoned = await poisonedFrom(ctx, scale);
    const bar = progress(ctx, "eval", clean.size + (poisoned?.size ?? 0));
    let shown = 0;
    const r = await evaluate(model, clean, poisoned, {
      batchSize: batchSize(ctx),
      onProgress: (done) => {
        bar.tick(done - shown);
        shown = done;
      },
    });
    bar.done();
    const json = {
      model: model.name,
      cleanAccuracy: r.clean.accuracy,
      cleanCorrect: r.clean.correct,
      nClean: r.clean.n,
      asr: r.poisoned?.asr ?? null,
      attackSuccess: r.poisoned?.attackSuccess ?? null,
      nPoisoned: r.poisoned?.n ?? null,
      ...(r.poisoned?.byTarget ? { asrByTarget: r.poisoned.byTarget } : {}),
      seconds: r.seconds,
      imagesPerSecond: r.imagesPerSecond,
    };
    const lines = [
      `model           ${model.name}`,
      `clean accuracy  ${pct(r.clean.accuracy)}  (${r.clean.correct}/${r.clean.n})`,
    ];
    if (r.poisoned) lines.push(`attack success  ${pct(r.poisoned.asr)}  (${r.poisoned.attackSuccess}/${r.poisoned.n})`);
    for (const t of r.poisoned?.byTarget ?? []) lines.push(`  → ${String(t.target).padEnd(12)} ${pct(t.asr)}  (${t.attackSuccess}/${t.n})`);
    lines.push(`time            ${r.seconds.toFixed(2)} s (${Math.round(r.imagesPerSecond)} img/s)`);
    return { json, text: lines.join("\n") };
  },
};
