import { basename, join } from "node:path";
import { writeOnnx } from "../../defenses/g-model.js";
import { checkUnlearnOptions, ncUnlearn } from "../../defenses/nc-mitigation.js";
import { saveRepaired } from "../../io/save-model.js";
import type { ReportData } from "../../report/types.js";
import { batchSize, inputScale, MODEL_OPTIONS, num, pct, progress, str, type Command, DATA_OPTIONS, defenseInputs } from "../command.js";
import { ncEvalLine, nothingFlagged, resolveTriggers, TRIGGER_OPTIONS, TRIGGER_USAGE } from "./nc-prune.js";
import { gLine } from "./prune.js";
import { OUTPUT_OPTIONS, outDir, reportModelOf, writeResult } from "../output.js";

export const unlearnCommand: Command = {
  name: "unlearn",
  summary: "Neural Cleanse unlearning: fine-tune on clean data, part of it stamped with the reversed trigger; writes repaired.{h5,onnx}, G.onnx",
  usage:
    `--model M [--arch deepid] --input-scale S --clean DATA [--test T] [--poisoned P] ${TRIGGER_USAGE} ` +
    "[--rounds 1] [--epochs 10] [--patience 2] [--holdout 0.2] [--ratio 0.2] [--jitter 0] [--min-strength 1] [--lr 0.001] [--batch-size 32 (training)] [--seed 0] --out DIR [--report] [--json]",
  options: {
    ...MODEL_OPTIONS,
    ...TRIGGER_OPTIONS,
    ...DATA_OPTIONS,
    rounds: { type: "string" },
    epochs: { type: "string" },
    patience: { type: "string" },
    holdout: { type: "string" },
    ratio: { type: "string" },
    jitter: { type: "string" },
    "min-strength": { type: "string" },
    lr: { type: "string" },
    ...OUTPUT_OPTIONS,
  },
  async run(ctx) {
    const t0 = performance.now();
    const scale = inputScale(ctx);
    const settings = checkUnlearnOptions({
      rounds: num(ctx, "rounds", 1),
      epochs: num(ctx, "epochs", 10),
      patience: num(ctx, "patience", 2),
      holdout: num(ctx, "holdout", 0.2),
      ratio: num(ctx, "ratio", 0.2),
      jitter: num(ctx, "jitter", 0),
      minStrength: num(ctx, "min-strength", 1),
      lr: num(ctx, "lr", 1e-3),
      batchSize: batchSize(ctx, 32),
      seed: num(ctx, "seed", 0, { integer: true, min: 0 }),
    });
    const dir = outDir(ctx)!;
    const { model, valid: clean, test, poisoned } = await defenseInputs(ctx, scale);
    const timings: Record<string, number> = { load: (performance.now() - t0) / 1000 };

    const src = await resolveTriggers(ctx, model, clean, scale);
    timings[src.neuralCleanse ? "neural-cleanse" : "trigger"] = src.seconds;
    if (src.flagged.length === 0) return nothingFlagged(ctx, dir, model, "unlearn", src, timings);

    const t1 = performance.now();
    // The bar counts training images over the most epochs; an early stop ends it short.
    const perEpoch = clean.size - Math.round(settings.holdout * clean.size);
    const bar = progress(ctx, "unlearn", perEpoch * settings.epochs * settings.rounds);
    let epochBase = 0;
    let shown = 0;
    const r = await ncUnlearn(model, { clean, test, poisoned }, src.triggers, {
      ...settings,
      inputScale: scale,
      onBatch: (done, _total, loss) => {
        bar.tick(epochBase + done - shown, `loss ${loss.toFixed(4)}`);
        shown = epochBase + done;
      },
      onEpoch: (s) => {
        epochBase += perEpoch;
        shown = epochBase;
        bar.tick(0, `epoch ${s.epoch}: loss ${s.loss.toFixed(4)}, acc ${pct(s.accuracy)}`);
      },
    });
    bar.done();
    timings.unlearn = (performance.now() - t1) / 1000;

    const t2 = performance.now();
    const files = await saveRepaired(dir, "repaired", r.model);
    const gPath = join(dir, "G.onnx");
    writeOnnx(gPath, r.gGraph, `Neural Cleanse unlearning G of ${model.name}: class ${model.numClasses} = B and the unlearned B' disagree`);
    files.push(gPath);
    timings.write = (performance.now() - t2) / 1000;
    const report: ReportData & { flagged: number[]; history: typeof r.history } = {
      title: `Neural Cleanse unlearning — ${model.name}`,
      model: reportModelOf(model, str(ctx, "model", true)),
      evaluation: { before: r.before, after: r.after },
      neuralCleanse: src.neuralCleanse,
      g: r.g,
      mitigation: { method: "unlearn", flagged: src.flagged, triggerSource: src.source, settings: r.settings },
      timings,
      flagged: src.flagged,
      history: r.history,
    };
    const written = await writeResult(ctx, dir, report);
    for (const d of [clean, test, poisoned]) d?.close();

    const s = r.settings;
    const lines = [
      `model       ${model.name}`,
      `triggers    label ${src.flagged.join(", ")} (${src.source})`,
      `unlearning  ${r.history.length - (s.holdout > 0 ? 1 : 0)} of at most ${s.epochs * s.rounds} epoch(s) on ${clean.name}` +
        (s.rounds > 1 ? ` in ${s.rounds} rounds (${r.triggersUsed} triggers, later ones re-reversed on the unlearned network)` : "") +
        (s.holdout > 0 ? ` (${pct(1 - s.holdout)}; kept epoch ${r.chosenEpoch} by held-out accuracy − reversed-trigger success)` : "") +
        `, ${pct(s.ratio)} of each batch stamped (true labels kept)${s.jitter ? `, moved ±${s.jitter} px` : ""}${s.minStrength < 1 ? `, strength ${s.minStrength}–1` : ""}, Adam lr ${s.lr}, batch ${s.batchSize}`,
      `before      ${ncEvalLine(r.before)} on ${(test ?? clean).name}`,
      `after       ${ncEvalLine(r.after)}`,
      `G           ${gLine(r.g)}`,
      `wrote       ${dir}: ${[...files, ...written].map((f) => basename(f)).join(", ")}`,
    ];
    return { json: { ...report, files: { repaired: files.slice(0, -1), g: gPath, result: written[0], ...(written[1] ? { report: written[1] } : {}) } }, text: lines.join("\n") };
  },
};
