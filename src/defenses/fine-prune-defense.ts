// Fine-Pruning behind the Defense interface.
import { DEFAULT_FINE_PRUNE_DROP, DEFAULT_FINE_PRUNE_HOLDOUT, DEFAULT_FINE_TUNE, DEFAULT_STOP, DEFAULT_TUNE, finePrune, STOP_CHOICES, STOP_PATIENCE, TUNE_CHOICES } from "./fine-pruning.js";
import { BATCH_NORM_OPTION, BATCH_SIZE_OPTION, batchNormLines, defineDefense, MAX_LOOPS, repairArtifacts, SEED_OPTION, stageReporter } from "./defense.js";
import { PRUNE_OPTIONS } from "./prune-defense.js";
import { evalLine, gLine, pct } from "../report/text.js";

export const finePruneDefinition = defineDefense({
  name: "fine-prune",
  summary: "Fine-Pruning: prune dormant conv channels, then fine-tune on clean data; writes repaired.{h5,onnx}, G.onnx",
  kind: "repair",
  options: {
    drop: { kind: "number", description: "prune until clean validation accuracy has dropped this many percentage points", default: DEFAULT_FINE_PRUNE_DROP },
    order: PRUNE_OPTIONS.order,
    layer: PRUNE_OPTIONS.layer,
    epochs: { kind: "integer", description: "fine-tuning epochs on the clean data (at most, with --stop recovered)", default: DEFAULT_FINE_TUNE.epochs, min: 0, max: MAX_LOOPS },
    stop: {
      kind: "choice",
      choices: STOP_CHOICES,
      description: `run every epoch on all the clean data (epochs), or end fine-tuning once held-out clean accuracy is back at B's or has not improved for ${STOP_PATIENCE} epochs (recovered: faster, may leave a higher ASR)`,
      default: DEFAULT_STOP,
    },
    holdout: { kind: "number", description: "share of the clean data held out of fine-tuning for --stop recovered", default: DEFAULT_FINE_PRUNE_HOLDOUT, min: 0, max: 1, exclusiveMin: true, exclusiveMax: true },
    lr: { kind: "number", description: "fine-tuning learning rate", default: DEFAULT_FINE_TUNE.lr, min: 0, exclusiveMin: true },
    optimizer: { kind: "choice", choices: ["adam", "sgd"] as const, description: "fine-tuning optimizer", default: DEFAULT_FINE_TUNE.optimizer },
    tune: {
      kind: "choice",
      choices: TUNE_CHOICES,
      description: "fine-tune all parameters, or only the tail after the latest point every path goes through (at least half the parameters; faster, may repair less)",
      default: DEFAULT_TUNE,
    },
    trainBatchSize: { kind: "integer", description: "fine-tuning batch size", default: DEFAULT_FINE_TUNE.batchSize, min: 1, max: 65536 },
    batchNorm: BATCH_NORM_OPTION,
    seed: SEED_OPTION,
    batchSize: BATCH_SIZE_OPTION,
  },
  async run(model, data, o, ctx) {
    let epochsSeen = 0;
    const trainBar = stageReporter(ctx.progress, "fine-tune", "img");
    const r = await finePrune(model, {
      valid: data.clean,
      test: data.test,
      poisoned: data.poisoned,
      drop: o.drop,
      order: o.order,
      layer: o.layer,
      batchSize: o.batchSize,
      epochs: o.epochs,
      lr: o.lr,
      optimizer: o.optimizer,
      seed: o.seed,
      trainBatchSize: o.trainBatchSize,
      batchNorm: o.batchNorm,
      tune: o.tune,
      stop: o.stop,
      holdout: o.holdout,
      onCache: stageReporter(ctx.progress, "activations", "img"),
      onStep: (k, total, p) => ctx.progress?.({ stage: "prune", done: k + 1, total: total + 1, unit: "step", note: `${k}/${total} pruned, acc ${pct(p.cleanAccuracy)}` }),
      onBatch: (done, total, loss) => trainBar(epochsSeen * total + done, total * o.epochs, `epoch ${epochsSeen + 1}/${o.epochs} loss ${loss.toFixed(4)}`),
      onEpoch: () => void epochsSeen++,
    });
    const files: string[] = [];
    const t = r.target;
    const on = `${(data.test ?? data.clean).name}${data.poisoned ? ` / ${data.poisoned.name}` : ""}`;
    const last = r.history[r.history.length - 1];
    return {
      title: `Fine-Pruning — ${model.name}`,
      repaired: r.repaired,
      g: r.g,
      evaluation: { before: r.before, after: r.after },
      gRates: r.gRates,
      sections: { pruning: r.pruning },
      extra: {
        finePruning: { drop: r.drop, reached: r.reached, channels: r.channels, pruned: r.pruned, epochs: o.epochs, lr: o.lr, optimizer: o.optimizer, seed: o.seed, history: r.history,
          tune: r.tune, tunedFrom: r.tunedFrom, tunedParams: r.tunedParams, totalParams: r.totalParams, stop: r.stop, ...(r.batchNorm ? { batchNorm: r.batchNorm } : {}) },
        evaluatedOn: r.evaluatedOn,
        files,
      },
      artifacts: repairArtifacts(r.repaired, r.g, `fine-pruning G of ${model.name}: class ${model.numClasses} = B and the fine-pruned network disagree`, files),
      lines: [
        `model        ${model.name}`,
        `pruned       ${r.channels.length}/${t.channels} channels of ${t.layer} (validation accuracy drop >= ${r.drop} pp${r.reached ? "" : " not reached: all channels pruned"})`,
        `fine-tuned   ${r.stop.epochsRun}/${o.epochs} epochs, ${o.optimizer} lr ${o.lr} on ${data.clean.name}${last ? ` (last epoch loss ${last.loss.toFixed(4)})` : ""}`,
        ...(r.stop.baseAccuracy !== undefined
          ? [`stopped      ${r.stop.reason}: held-out accuracy ${(r.stop.heldOutAccuracy ?? []).map(pct).join(", ")} vs B ${pct(r.stop.baseAccuracy)} on ${r.stop.heldOutImages} held-out images`]
          : []),
        `tuned        ${r.tune === "tail" ? `tail from ${r.tunedFrom}: ` : "all: "}${r.tunedParams}/${r.totalParams} parameters`,
        ...batchNormLines(r, 12),
        `before       ${evalLine(r.before)}   on ${on}`,
        `pruned       ${evalLine(r.pruned)}`,
        `fine-pruned  ${evalLine(r.after)}`,
        `G            ${gLine(r.gRates)}`,
        ...(data.test ? [] : ["note         no test data: the clean numbers are on the fine-tuning data itself"]),
      ],
      note: `${t.layer}: ${r.channels.length}/${r.sweep.ranking.length} channels pruned (pruned only: acc ${pct(r.pruned.cleanAccuracy)}${r.pruned.asr !== undefined ? `, ASR ${pct(r.pruned.asr)}` : ""}), ${r.history.length} fine-tune epochs`,
      timings: r.timings,
    };
  },
});
