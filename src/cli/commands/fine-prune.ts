import { join } from "node:path";
import { DEFAULT_FINE_PRUNE_DROP, DEFAULT_FINE_TUNE, finePrune } from "../../defenses/fine-pruning.js";
import { writeOnnx } from "../../defenses/g-model.js";
import { fail } from "../../errors.js";
import { saveRepaired } from "../../io/save-model.js";
import type { ReportData, ReportEvalResult } from "../../report/types.js";
import type { EpochStats } from "../../train/trainer.js";
import { batchSize, inputScale, MODEL_OPTIONS, num, pct, progress, str, type Command, DATA_OPTIONS, defenseInputs } from "../command.js";
import { evalLine, gLine, orderOption } from "./prune.js";
import { OUTPUT_OPTIONS, outDir, reportModelOf, writeResult } from "../output.js";

export const finePruneCommand: Command = {
  name: "fine-prune",
  summary: "Fine-Pruning: prune dormant conv channels, then fine-tune on clean data; writes repaired.{h5,onnx}, G.onnx",
  usage:
    `--model M [--arch deepid] [--input-scale S] --clean VALID [--test TEST] [--poisoned P] [--drop ${DEFAULT_FINE_PRUNE_DROP}] ` +
    `[--order increasing] [--layer conv_3] [--epochs ${DEFAULT_FINE_TUNE.epochs}] [--lr ${DEFAULT_FINE_TUNE.lr}] [--optimizer adam|sgd] ` +
    "[--train-batch-size 64] [--seed 0] --out DIR [--report] [--json] [--quiet]",
  options: {
    ...MODEL_OPTIONS,
    ...DATA_OPTIONS,
    drop: { type: "string" },
    order: { type: "string" },
    layer: { type: "string" },
    epochs: { type: "string" },
    lr: { type: "string" },
    optimizer: { type: "string" },
    "train-batch-size": { type: "string" },
    seed: { type: "string" },
    ...OUTPUT_OPTIONS,
  },
  async run(ctx) {
    const t0 = performance.now();
    const scale = await inputScale(ctx, "clean");
    const drop = num(ctx, "drop", DEFAULT_FINE_PRUNE_DROP);
    const epochs = num(ctx, "epochs", DEFAULT_FINE_TUNE.epochs, { min: 0, integer: true });
    const lr = num(ctx, "lr", DEFAULT_FINE_TUNE.lr);
    const opt = str(ctx, "optimizer") ?? DEFAULT_FINE_TUNE.optimizer;
    if (opt !== "adam" && opt !== "sgd") fail(`--optimizer must be adam or sgd, got "${opt}"`);
    const seed = num(ctx, "seed", 0, { min: 0, integer: true });
    const trainBatchSize = num(ctx, "train-batch-size", DEFAULT_FINE_TUNE.batchSize, { min: 1, max: 65536, integer: true });
    const order = orderOption(ctx);
    const dir = outDir(ctx)!;
    const { model, valid, test, poisoned } = await defenseInputs(ctx, scale);
    const tLoad = performance.now();

    const cacheBar = progress(ctx, "activations", valid.size + (test?.size ?? 0) + (poisoned?.size ?? 0));
    let cached = 0;
    let stepBar: ReturnType<typeof progress> | undefined;
    let trainBar: ReturnType<typeof progress> | undefined;
    let trainDone = 0;
    const epochsSeen: EpochStats[] = [];
    const r = await finePrune(model, {
      valid,
      test,
      poisoned,
      drop,
      order,
      layer: str(ctx, "layer"),
      batchSize: batchSize(ctx),
      epochs,
      lr,
      optimizer: opt,
      seed,
      trainBatchSize,
      onCache: (done) => {
        cacheBar.tick(done - cached);
        cached = done;
      },
      onStep: (k, total, p) => {
        if (!stepBar) {
          cacheBar.done();
          stepBar = progress(ctx, "prune", total + 1, "step");
        }
        stepBar.tick(1, `${k}/${total} pruned, acc ${pct(p.cleanAccuracy)}`);
      },
      onBatch: (done, total, loss) => {
        if (!trainBar) {
          stepBar?.done();
          trainBar = progress(ctx, "fine-tune", total * epochs, "img");
        }
        const at = epochsSeen.length * total + done;
        trainBar.tick(at - trainDone, `epoch ${epochsSeen.length + 1}/${epochs} loss ${loss.toFixed(4)}`);
        trainDone = at;
      },
      onEpoch: (s) => epochsSeen.push(s),
    });
    cacheBar.done();
    stepBar?.done();
    trainBar?.done();
    const tRun = performance.now();

    const files = await saveRepaired(dir, "repaired", r.repaired);
    const gPath = join(dir, "G.onnx");
    writeOnnx(gPath, r.g, `fine-pruning G of ${model.name}: class ${model.numClasses} = B and the fine-pruned network disagree`);
    files.push(gPath);
    const report: ReportData & {
      finePruning: { drop: number; reached: boolean; channels: number[]; pruned: ReportEvalResult; epochs: number; lr: number; optimizer: string; seed: number; history: EpochStats[] };
      evaluatedOn: string;
      files: string[];
    } = {
      title: `Fine-Pruning — ${model.name}`,
      model: reportModelOf(model, str(ctx, "model", true)),
      evaluation: { before: r.before, after: r.after },
      pruning: r.pruning,
      g: r.gRates,
      timings: { load: (tLoad - t0) / 1000, ...r.timings, write: (performance.now() - tRun) / 1000 },
      finePruning: { drop: r.drop, reached: r.reached, channels: r.channels, pruned: r.pruned, epochs, lr, optimizer: opt, seed, history: r.history },
      evaluatedOn: r.evaluatedOn,
      files,
    };
    const [resultPath, reportPath] = await writeResult(ctx, dir, report);
    for (const d of [valid, test, poisoned]) d?.close();

    const t = r.target;
    const on = `${(test ?? valid).name}${poisoned ? ` / ${poisoned.name}` : ""}`;
    const lines = [
      `model        ${model.name}`,
      `pruned       ${r.channels.length}/${t.channels} channels of ${t.layer} (validation accuracy drop >= ${r.drop} pp${r.reached ? "" : " not reached: all channels pruned"})`,
      `fine-tuned   ${epochs} epochs, ${opt} lr ${lr} on ${valid.name}${r.history.length ? ` (last epoch loss ${r.history[r.history.length - 1].loss.toFixed(4)})` : ""}`,
      `before       ${evalLine(r.before)}   on ${on}`,
      `pruned       ${evalLine(r.pruned)}`,
      `fine-pruned  ${evalLine(r.after)}`,
      `G            ${gLine(r.gRates)}`,
      ...(test ? [] : ["note         no --test: the clean numbers are on the fine-tuning data itself"]),
      `wrote        ${[...files, resultPath, reportPath].filter(Boolean).join(", ")}`,
    ];
    return { json: report, text: lines.join("\n") };
  },
};
