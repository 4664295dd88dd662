// Neural Cleanse's two repairs behind the Defense interface: neuron pruning and unlearning. Both start from
// the reversed triggers of the flagged labels (ctx.triggers); with nothing flagged they repair nothing.
import { flagThresholdNorm } from "./nc-schedule.js";
import { checkNcPruneOptions, NC_PRUNE_OPTIONS, ncPrune, ncUnlearn, UNLEARN_OPTIONS } from "./nc-mitigation.js";
import { checkPruneUnlearnOptions, pruneUnlearn, PRUNE_UNLEARN_OPTIONS } from "./prune-unlearn.js";
import { checkFeatureUnlearnOptions, featureUnlearn, FEATURE_UNLEARN_OPTIONS } from "./feature-unlearn.js";
import { BATCH_SIZE_OPTION, defineDefense, repairArtifacts, repairOutcomeCore, batchNormLines, notApplied, stageReporter, type DefenseContext, type DefenseOutcome, type TriggerInput } from "./defense.js";
import type { Model } from "../model/model.js";
import { gLine, pct, pctOrDash, triggerEvalLine } from "../report/text.js";
import type { ReportEvalResult, ReportMitigation } from "../report/types.js";

function triggersOf(ctx: DefenseContext): TriggerInput {
  if (!ctx.triggers) throw new Error("Neural Cleanse repair run without triggers (the Defense's needs were not met)");
  return ctx.triggers;
}

/** The outcome when Neural Cleanse flagged nothing: say so, repair nothing. */
function nothingFlagged(model: Model, method: ReportMitigation["method"], src: TriggerInput): DefenseOutcome {
  const out = notApplied(`Neural Cleanse ${method} — ${model.name}`, `Neural Cleanse flagged no label (${src.source}): nothing to repair, no network written`, {
    neuralCleanse: src.neuralCleanse,
    mitigation: { method, flagged: [], triggerSource: src.source },
  });
  out.extra = { flagged: [] };
  out.lines = [`model    ${model.name}`, ...out.lines];
  return out;
}

/** Unlearning epochs that ran (the history's epoch-0 entry is B on the held-out split). */
const epochsRun = (r: { history: { epoch: number }[] }): number => r.history.filter((h) => h.epoch > 0).length;

const trigNote = (r: { before: ReportEvalResult; after: ReportEvalResult }): string =>
  `reversed-trigger success ${pctOrDash(r.before.triggerSuccess)} → ${pctOrDash(r.after.triggerSuccess)}`;

export const ncPruneDefinition = defineDefense({
  name: "nc-prune",
  summary: "Neural Cleanse neuron pruning: prune the neurons the reversed trigger excites; writes repaired.{h5,onnx}, G.onnx",
  kind: "repair",
  needs: ["triggers"],
  options: {
    layer: { kind: "string", description: "layer whose neurons are pruned", defaultText: "the layer feeding the output layer" },
    ...NC_PRUNE_OPTIONS,
    batchSize: BATCH_SIZE_OPTION,
  },
  async run(model, data, o, ctx) {
    const src = triggersOf(ctx);
    if (src.flagged.length === 0) return nothingFlagged(model, "nc-prune", src);
    const settings = checkNcPruneOptions(o);
    const t0 = performance.now();
    let shown = -1;
    const r = await ncPrune(model, data, src.triggers, {
      ...settings,
      layer: o.layer,
      batchSize: o.batchSize,
      onCache: stageReporter(ctx.progress, "activations", "img"),
      onStep: (k, units, p) => {
        if (k === shown) return;
        shown = k;
        ctx.progress?.({ stage: "nc-prune", done: k, total: units, unit: "neuron", note: `acc ${pct(p.cleanAccuracy)}, trigger ${pct(p.triggerSuccess ?? 0)}${p.asr !== undefined ? `, ASR ${pct(p.asr)}` : ""}` });
      },
    });
    const stopText = { threshold: `reversed-trigger success below ${pct(settings.threshold)}`, "max-drop": `stopped: clean accuracy would drop more than ${pct(settings.maxDrop)}`, "all-pruned": "every neuron pruned without reaching the threshold" }[r.stop];
    const files: string[] = [];
    return {
      ...repairOutcomeCore(`Neural Cleanse pruning — ${model.name}`, r),
      sections: {
        pruning: r.pruning,
        neuralCleanse: src.neuralCleanse,
        mitigation: { method: "nc-prune", flagged: src.flagged, triggerSource: src.source, layer: r.site.layer, neurons: r.site.units, neuronsPruned: r.pruned.length, stop: r.stop, settings },
      },
      extra: { flagged: src.flagged, prunedNeurons: r.pruned, files },
      artifacts: repairArtifacts(r.model, r.gGraph, `Neural Cleanse pruning G of ${model.name} (${r.pruned.length} neurons of ${r.site.layer}): class ${model.numClasses} = B and B' disagree`, files),
      lines: [
        `model       ${model.name}`,
        `triggers    label ${src.flagged.join(", ")} (${src.source})`,
        `layer       ${r.site.layer} (${r.site.units} neurons; ${r.site.how})`,
        `pruned      ${r.pruned.length} neurons: ${stopText}`,
        ...batchNormLines(r),
        `before      ${triggerEvalLine(r.before)} on ${(data.test ?? data.clean).name}`,
        `after       ${triggerEvalLine(r.after)}`,
        `G           ${gLine(r.g)}`,
      ],
      note: `triggers of ${src.flagged.join(", ")}; ${r.site.layer}: ${r.pruned.length}/${r.site.units} neurons pruned (stop: ${r.stop}); ${trigNote(r)}`,
      timings: { "nc-prune": (performance.now() - t0) / 1000 },
    };
  },
});

export const unlearnDefinition = defineDefense({
  name: "unlearn",
  summary: "Neural Cleanse unlearning: fine-tune on clean data, part of it stamped with the reversed trigger; writes repaired.{h5,onnx}, G.onnx",
  kind: "repair",
  needs: ["triggers"],
  options: {
    ...UNLEARN_OPTIONS,
  },
  async run(model, data, o, ctx) {
    const src = triggersOf(ctx);
    if (src.flagged.length === 0) return nothingFlagged(model, "unlearn", src);
    const t0 = performance.now();
    const clean = data.clean;
    // The bar counts training images over the most epochs; an early stop ends it short.
    const perEpoch = clean.size - Math.round(o.holdout * clean.size);
    const total = perEpoch * o.epochs * o.rounds;
    let epochBase = 0;
    const bar = stageReporter(ctx.progress, "unlearn", "img");
    const r = await ncUnlearn(model, data, src.triggers, {
      rounds: o.rounds,
      epochs: o.epochs,
      patience: o.patience,
      keepTolerance: o.keepTolerance,
      holdout: o.holdout,
      ratio: o.ratio,
      placement: o.placement,
      jitter: o.jitter,
      minStrength: o.minStrength,
      lr: o.lr,
      batchSize: o.batchSize,
      seed: o.seed,
      inputScale: ctx.inputScale,
      onBatch: (done, _total, loss) => bar(epochBase + done, total, `loss ${loss.toFixed(4)}`),
      onEpoch: (e) => {
        epochBase += perEpoch;
        bar(epochBase, total, `epoch ${e.epoch}: loss ${e.loss.toFixed(4)}, acc ${pct(e.accuracy)}`);
      },
    });
    const s = r.settings;
    const files: string[] = [];
    return {
      ...repairOutcomeCore(`Neural Cleanse unlearning — ${model.name}`, r),
      sections: { neuralCleanse: src.neuralCleanse, mitigation: { method: "unlearn", flagged: src.flagged, triggerSource: src.source, settings: s } },
      extra: { flagged: src.flagged, history: r.history, files },
      artifacts: repairArtifacts(r.model, r.gGraph, `Neural Cleanse unlearning G of ${model.name}: class ${model.numClasses} = B and the unlearned B' disagree`, files),
      lines: [
        `model       ${model.name}`,
        `triggers    label ${src.flagged.join(", ")} (${src.source})`,
        `unlearning  ${epochsRun(r)} of at most ${s.epochs * s.rounds} epoch(s) on ${clean.name}` +
          (s.holdout > 0 ? ` (${pct(1 - s.holdout)}; kept epoch ${r.chosenEpoch} by held-out accuracy − reversed-trigger success${keptRule(s.keepTolerance)})` : "") +
          (s.rounds > 1 ? `, ${s.rounds} rounds (${r.triggersUsed} triggers, later ones re-reversed on the unlearned network)` : "") +
          `, ${pct(s.ratio)} of each batch stamped (true labels kept${r.anywhere.length ? `; label ${r.anywhere.join(", ")} at random positions` : ""})${s.jitter ? `, moved ±${s.jitter} px` : ""}${s.minStrength < 1 ? `, strength ${s.minStrength}–1` : ""}, Adam lr ${s.lr}, batch ${s.batchSize}`,
        ...batchNormLines(r),
        `before      ${triggerEvalLine(r.before)} on ${(data.test ?? clean).name}`,
        `after       ${triggerEvalLine(r.after)}`,
        `G           ${gLine(r.g)}`,
      ],
      note: `triggers of ${src.flagged.join(", ")}; ${epochsRun(r)} epoch(s), kept ${r.chosenEpoch}${s.rounds > 1 ? `, ${s.rounds} rounds, ${r.triggersUsed} triggers` : ""}, ${Math.round(100 * s.ratio)}% stamped, lr ${s.lr}; ${trigNote(r)}`,
      timings: { unlearn: (performance.now() - t0) / 1000 },
    };
  },
});

export const pruneUnlearnDefinition = defineDefense({
  name: "prune-unlearn",
  summary: "prune the last conv layer's channels each reversed trigger excites, then Neural Cleanse unlearning with them held at zero; writes repaired.{h5,onnx}, G.onnx",
  kind: "repair",
  needs: ["triggers"],
  options: {
    layer: { kind: "string", description: "layer whose channels are pruned", defaultText: "the last conv layer (else the layer feeding the output layer)" },
    ...PRUNE_UNLEARN_OPTIONS,
  },
  async run(model, data, o, ctx) {
    const src = triggersOf(ctx);
    if (src.flagged.length === 0) return nothingFlagged(model, "unlearn", src);
    const settings = checkPruneUnlearnOptions(o);
    const t0 = performance.now();
    const clean = data.clean;
    const perEpoch = clean.size - Math.round(settings.holdout * clean.size);
    const total = perEpoch * settings.epochs;
    let epochBase = 0;
    const bar = stageReporter(ctx.progress, "prune-unlearn", "img");
    const r = await pruneUnlearn(model, data, src.triggers, {
      ...settings,
      layer: o.layer,
      inputScale: ctx.inputScale,
      // A fresh trigger counts when Neural Cleanse would flag its size on B (the rule auto's re-inversion uses).
      normBound: src.neuralCleanse ? flagThresholdNorm(src.neuralCleanse.labels.map((l) => l.l1Norm)) : undefined,
      onPrune: (label, k, units) => ctx.progress?.({ stage: "prune-unlearn: pruning", done: k, total: units, unit: "channel", note: `label ${label}` }),
      onBatch: (done, _total, loss) => bar(epochBase + done, total, `loss ${loss.toFixed(4)}`),
      onEpoch: (e) => {
        epochBase += perEpoch;
        bar(epochBase, total, `epoch ${e.epoch}: loss ${e.loss.toFixed(4)}, acc ${pct(e.accuracy)}`);
      },
    });
    const files: string[] = [];
    const labelsText = r.perLabel.map((p) => `label ${p.label}: +${p.added} (${p.stop}, trigger ${pct(p.triggerSuccess)})`).join("; ");
    const roundLines = r.rounds.map((q) => `round ${q.round}     re-inverted ${q.fresh.map((f) => `${f.label}: L1 ${f.l1Norm.toFixed(1)} (bound ${f.bound.toFixed(1)}), ${pct(f.success)}`).join("; ")} → ${q.outcome === "removed" ? "none left: stopped" : q.outcome === "accuracy" ? `+${q.added} channels, held-out accuracy ${pct(q.heldOutAccuracy)}: over the budget, undone` : `+${q.added} channels, held-out accuracy ${pct(q.heldOutAccuracy)}: kept`}`);
    const kept = r.rounds.filter((q) => q.outcome === "kept").length;
    return {
      ...repairOutcomeCore(`Prune-then-unlearn — ${model.name}`, r),
      sections: { neuralCleanse: src.neuralCleanse },
      extra: { flagged: src.flagged, layer: r.site.layer, prunedChannels: r.pruned, perLabel: r.perLabel, history: r.history, ...(settings.rounds > 1 ? { rounds: r.rounds, triggersUsed: r.triggersUsed } : {}), files },
      artifacts: repairArtifacts(r.model, r.gGraph, `prune-then-unlearn G of ${model.name} (${r.pruned.length} channels of ${r.site.layer}): class ${model.numClasses} = B and B' disagree`, files),
      lines: [
        `model       ${model.name}`,
        `triggers    label ${src.flagged.join(", ")} (${src.source})`,
        `pruned      ${r.pruned.length} of ${r.site.units} channels of ${r.site.layer} (${labelsText}); clean accuracy ${pct(r.pruneAccuracy.before)} → ${pct(r.pruneAccuracy.after)} on ${clean.name}`,
        `unlearning  ${epochsRun(r)} of at most ${settings.epochs} epoch(s) (${r.unlearningUsed === "feature" ? `feature matching, weight ${settings.featureWeight}` : "cross-entropy"}${r.anywhere.length ? `; label ${r.anywhere.join(", ")} stamped at random positions` : ""}), kept epoch ${r.chosenEpoch} by held-out accuracy − reversed-trigger success${keptRule(settings.keepTolerance)}; pruned channels held at zero`,
        ...roundLines,
        ...batchNormLines(r),
        `before      ${triggerEvalLine(r.before)} on ${(data.test ?? clean).name}`,
        `after       ${triggerEvalLine(r.after)}`,
        `G           ${gLine(r.g)}`,
      ],
      note: `triggers of ${src.flagged.join(", ")}; ${r.pruned.length}/${r.site.units} channels of ${r.site.layer} pruned, ${epochsRun(r)} unlearning epoch(s), kept ${r.chosenEpoch}${settings.rounds > 1 ? `; ${1 + kept} of at most ${settings.rounds} rounds kept, ${r.triggersUsed} triggers` : ""}; ${trigNote(r)}`,
      timings: { "prune-unlearn": (performance.now() - t0) / 1000 },
    };
  },
});

export const featureUnlearnDefinition = defineDefense({
  name: "feature-unlearn",
  summary: "feature-space unlearning: the penultimate features of images stamped with the reversed trigger pulled to B's features of the clean image, with cross-entropy on the true labels; writes repaired.{h5,onnx}, G.onnx",
  kind: "repair",
  needs: ["triggers"],
  options: { ...FEATURE_UNLEARN_OPTIONS },
  async run(model, data, o, ctx) {
    const src = triggersOf(ctx);
    if (src.flagged.length === 0) return nothingFlagged(model, "unlearn", src);
    const settings = checkFeatureUnlearnOptions(o);
    const t0 = performance.now();
    const clean = data.clean;
    const r = await featureUnlearn(model, data, src.triggers, {
      ...settings,
      onEpoch: (e) => ctx.progress?.({ stage: "feature-unlearn", done: e.epoch, total: settings.epochs, unit: "epoch", note: `loss ${e.loss.toFixed(4)}, held-out acc ${pct(e.heldOutAccuracy)}` }),
    });
    const files: string[] = [];
    const run = r.history.filter((h) => h.epoch > 0).length;
    return {
      ...repairOutcomeCore(`Feature-space unlearning — ${model.name}`, r),
      sections: { neuralCleanse: src.neuralCleanse },
      extra: { flagged: src.flagged, feature: r.feature, history: r.history, files },
      artifacts: repairArtifacts(r.model, r.gGraph, `feature-unlearning G of ${model.name}: class ${model.numClasses} = B and B' disagree`, files),
      lines: [
        `model       ${model.name}`,
        `triggers    label ${src.flagged.join(", ")} (${src.source})`,
        `unlearning  ${run} of at most ${settings.epochs} epoch(s) on ${clean.name} (${pct(1 - settings.holdout)}; kept epoch ${r.chosenEpoch} by held-out accuracy − reversed-trigger success${keptRule(settings.keepTolerance)}), ` +
          `${pct(settings.ratio)} of each batch stamped, features of ${r.feature} matched to B's clean ones (weight ${settings.weight}), Adam lr ${settings.lr}, batch ${settings.batchSize}`,
        ...batchNormLines(r),
        `before      ${triggerEvalLine(r.before)} on ${(data.test ?? clean).name}`,
        `after       ${triggerEvalLine(r.after)}`,
        `G           ${gLine(r.g)}`,
      ],
      note: `triggers of ${src.flagged.join(", ")}; ${run} epoch(s), kept ${r.chosenEpoch}, feature weight ${settings.weight}; ${trigNote(r)}`,
      timings: { "feature-unlearn": (performance.now() - t0) / 1000 },
    };
  },
});

/** How the kept epoch was picked, for the output line: the latest within the tolerance of the best, or the best. */
function keptRule(tolerance: number): string {
  return tolerance > 0 ? ` (the latest within ${+(100 * tolerance).toFixed(2)} point(s) of the best)` : " (the best)";
}
