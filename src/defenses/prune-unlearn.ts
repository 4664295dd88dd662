// Prune, then unlearn: Neural Cleanse's neuron pruning moved to the last convolutional layer, followed by its
// unlearning with the pruned channels held at zero.
//
// Why: unlearning alone teaches the network to ignore the reversed trigger *where it was stamped*. Neural
// Cleanse's reversed mask rarely lies on the real patch (on the zoo's badnet_patch it sits beside it); the
// position-specific weights that learn to ignore it are the dense weights reading the flattened conv map, so
// the real patch, a few pixels away, keeps working (5–75% ASR after unlearning). A conv channel is shared by
// every position: the channels that the reversed trigger excites most are the trigger's feature detectors,
// and pruning them removes the feature wherever the real patch puts it. Measured on badnet_patch (conv_3,
// 64 channels, 1 seed): pruning until the reversed trigger's success is below 5% takes 9 channels and the real
// ASR to 6.2%; below 2% takes 16 channels, 2.6%; one epoch of unlearning with those channels masked then
// brings clean accuracy back (89.7% → 90.5%) and the ASR to 1.9%. Pruning the output layer's input (NC's own
// choice) does not track the real ASR at all on these networks (docs/repairs.md).
//
// Channel order: NC ranks by the mean activation increase under the trigger; here that increase is divided by
// the channel's clean activation (plus the layer's mean), so channels the trigger alone wakes go first and
// busy channels, whose loss costs clean accuracy, later. Measured (1 seed, 2,000 test images): badnet_patch
// 1.85% ASR at 90.50% (increase alone: 1.85% at 90.45%), multi_trigger →1 1.75% (increase alone: 5.0%),
// random_pos 35.0% (increase alone: 58.1%).
//
// A label whose pruning ends (at the accuracy budget) with its reversed trigger still above `accept` (5%, the
// stop of Neural Cleanse's own pruning) keeps its channels: measured on wanet (a warp, not a patch) 27 channels
// left the trigger at 35% and the repair at 6.2% ASR, −1.8 points, where unlearning alone gave 4.3%, −0.7;
// the false flags of multi_trigger and random_pos (label 8) end at 13–22%.
//
// The unlearning after pruning (`--unlearning auto`, the default): feature-space unlearning (feature-unlearn.ts:
// the penultimate features of stamped images matched to B's features of the clean image, B's clean features kept
// on clean images) when channels were pruned, cross-entropy unlearning when none were. Measured in auto's
// setting (candidates' 3,060 images of valid.h5, seed 0, clean_test/poisoned_test, load ~8): badnet_patch
// 2.53% → 1.90% ASR (−0.49 → −0.52 points), multi_trigger →1 2.93% → 2.78%, →5 0.44% → 0.78% (−2.01 → −1.46),
// random_pos 12.5% → 10.1% (−0.41 → −0.70), lf 7.0% → 9.4% (−1.31 → −0.88). With nothing pruned (wanet) feature
// matching alone left 34.5% where cross-entropy left 8.2%, so there it stays cross-entropy.
//
// Several flagged labels: each trigger is pruned for in turn on the network pruned so far (a mean of the
// triggers' activation gaps ranks the strongest trigger's channels first and leaves the others working), all
// within one clean-accuracy budget measured from B.
import { fail } from "../errors.js";
import { evaluateModels } from "../eval/evaluate.js";
import type { Graph } from "../graph/ir.js";
import type { Model } from "../model/model.js";
import { pickOptions, resolveOptions, MAX_LOOPS, SEED_OPTION, BATCH_NORM_OPTION, type OptionSpecs, type OptionValues } from "./defense.js";
import { gFromPair } from "./g-model.js";
import { DEFAULT_KEEP_TOLERANCE, heldOutScore, KEEP_TOLERANCE_TEXT, ncEvalSets, ncPrune, ncUnlearn, prunedNeuronsModel, pruneSite, reinvertTriggers, type NcData, type NcEvaluation, type PruneSite, type ReversedTrigger, type UnlearnEpoch, type UnlearnOptions } from "./nc-mitigation.js";
import { channelMask } from "./pruning.js";
import { splitClean } from "../train/split.js";
import { featureUnlearn } from "./feature-unlearn.js";
import { placeAnywhere, PLACEMENTS, resolvePlacement, type PlacedTrigger, type ShiftEvidence } from "./shift-evidence.js";

const POOLS = new Set(["MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool"]);

/**
 * The last layer with a 4-D output that is a convolution's (after its activation, before pooling) and can be
 * pruned through its own weights; undefined when the network has none (an MLP), and the caller falls back to
 * the output layer's input.
 */
export function lastConvLayer(model: Model): string | undefined {
  const g = model.graph;
  let found: string | undefined;
  for (const [name, value] of model.layerOutputs) {
    if (value === model.input || g.shape(value).length !== 4) continue;
    const p = g.producer(value);
    if (!p || POOLS.has(p.op)) continue;
    try {
      if (pruneSite(model, name).zero.some((z) => z.axis === 0 && g.staticShape(z.param).length === 4)) found = name;
    } catch {
      // Not prunable through its own weights (e.g. a residual sum): not a candidate.
    }
  }
  return found;
}

export const PRUNE_UNLEARN_OPTIONS = {
  threshold: { kind: "number", description: "prune each flagged label's channels until its reversed trigger's success is below this fraction", default: 0.02, min: 0, exclusiveMin: true, max: 1 },
  order: { kind: "choice", choices: ["relative", "gap"] as const, description: "channel order: activation increase under the trigger divided by the clean activation (relative), or the increase alone (gap, the paper's)", default: "relative" },
  accept: { kind: "number", description: "a label's pruning is kept only if its reversed trigger ends below this success (else those channels are restored: the trigger is not carried by a few channels)", default: 0.05, min: 0, exclusiveMin: true, max: 1 },
  maxDrop: { kind: "number", description: "never prune past this loss of clean accuracy (fraction, all labels together, measured from B)", default: 0.05, min: 0, max: 1 },
  epochs: { kind: "integer", description: "most unlearning epochs after pruning (the epoch kept is chosen on a held-out clean split)", default: 10, min: 1, max: MAX_LOOPS },
  patience: { kind: "integer", description: "unlearning epochs without a better held-out score before stopping", default: 2, min: 1 },
  keepTolerance: { kind: "number", description: `unlearning: ${KEEP_TOLERANCE_TEXT}`, default: DEFAULT_KEEP_TOLERANCE, min: 0, max: 1 },
  holdout: { kind: "number", description: "share of the clean data held out to choose the unlearning epoch", default: 0.2, min: 0, max: 1, exclusiveMax: true },
  ratio: { kind: "number", description: "share of each unlearning batch stamped with a reversed trigger (true labels kept)", default: 0.2, min: 0, exclusiveMin: true, max: 1 },
  lr: { kind: "number", description: "Adam learning rate of the unlearning", default: 1e-3, min: 0, exclusiveMin: true },
  placement: { kind: "choice", choices: PLACEMENTS, description: "where unlearning stamps a trigger: found (where Neural Cleanse found it), anywhere (a random position per image), or auto: anywhere for the labels whose reversed trigger still works on B when rolled to a random position (at least a quarter of its success where found), else found", default: "auto" },
  unlearning: { kind: "choice", choices: ["auto", "ce", "feature"] as const, description: "the unlearning after pruning: cross-entropy on stamped images (ce, Neural Cleanse's), feature matching too (feature: feature-unlearn.ts), or auto: feature when channels were pruned, else ce", default: "auto" },
  featureWeight: { kind: "number", description: "with --unlearning feature: weight of the feature-matching term", default: 1, min: 0 },
  batchSize: { kind: "integer", description: "unlearning batch size", default: 32, min: 1, max: 65536 },
  rounds: { kind: "integer", description: "rounds; after each, the flagged labels' triggers are reversed afresh on the repaired network and a label whose fresh trigger (at most --bound times its first trigger's norm) still succeeds on more than --accept of the held-out part is pruned for and unlearned again with it added", default: 3, min: 1, max: 10 },
  bound: { kind: "number", description: "with --rounds > 1 and triggers from a file: a fresh trigger counts as the backdoor left over only when its L1 norm is at most this multiple of its label's first trigger's (with a detection at hand, its flag threshold is the bound)", default: 3, min: 0, exclusiveMin: true },
  roundDrop: { kind: "number", description: "with --rounds > 1: a later round is undone (and the rounds stop) when held-out clean accuracy falls more than this below the first round's", default: 0.01, min: 0, max: 1 },
  batchNorm: BATCH_NORM_OPTION,
  seed: SEED_OPTION,
} as const satisfies OptionSpecs;

export type PruneUnlearnSettings = OptionValues<typeof PRUNE_UNLEARN_OPTIONS>;

export interface PruneUnlearnOptions extends Partial<PruneUnlearnSettings> {
  /** The model's input scale: needed to re-reverse triggers when rounds > 1. */
  inputScale?: number;
  /**
   * With rounds > 1: the L1 norm a fresh trigger must be within to count as the backdoor left over, for every
   * label (Neural Cleanse's flag threshold on B, when the detection is at hand); default `bound` times the
   * label's first trigger's norm.
   */
  normBound?: number;
  /** Layer whose channels are pruned (default: the last conv layer, else the output layer's input). */
  layer?: string;
  evalBatchSize?: number;
  onPrune?: (label: number, pruned: number, units: number) => void;
  onBatch?: UnlearnOptions["onBatch"];
  onEpoch?: UnlearnOptions["onEpoch"];
}

export interface PruneUnlearnResult extends NcEvaluation {
  model: Model;
  gGraph: Graph;
  site: PruneSite;
  /** Channels pruned, in the order they were pruned (label by label). */
  pruned: number[];
  /** Per flagged label: channels it added and why its pruning stopped. */
  perLabel: { label: number; added: number; stop: string; triggerSuccess: number }[];
  /** Clean accuracy on the clean data: B, after pruning. */
  pruneAccuracy: { before: number; after: number };
  history: UnlearnEpoch[];
  chosenEpoch: number;
  /** The unlearning that ran ("auto" resolved; the last kept round's). */
  unlearningUsed: "ce" | "feature";
  /** Rounds after the first (see the `rounds` option); empty with rounds = 1. */
  rounds: PruneUnlearnRound[];
  /** Triggers unlearned: the ones given plus the fresh ones of kept rounds. */
  triggersUsed: number;
  /** Flagged labels whose triggers unlearning stamped at random positions (the `placement` option). */
  anywhere: number[];
  /** B's response to each moved trigger, when `placement` was "auto". */
  shiftEvidence?: ShiftEvidence[];
  settings: PruneUnlearnSettings;
}

export function checkPruneUnlearnOptions(o: PruneUnlearnOptions): PruneUnlearnSettings {
  return resolveOptions(PRUNE_UNLEARN_OPTIONS, pickOptions(PRUNE_UNLEARN_OPTIONS, o));
}

/** What one later round found and did (see `rounds`). */
export interface PruneUnlearnRound {
  round: number;
  /** Per flagged label: the fresh trigger's L1 norm, the bound it had to be within, and its success on the held-out part. */
  fresh: { label: number; l1Norm: number; bound: number; success: number }[];
  /** Channels this round added. */
  added: number;
  /** Held-out clean accuracy after the round (NaN when it stopped before unlearning). */
  heldOutAccuracy: number;
  /** "removed": no fresh trigger still succeeds; "accuracy": the round cost too much and was undone; "kept". */
  outcome: "removed" | "accuracy" | "kept";
}

/** One pruning pass over `triggers` on `start` (channels `pruned` already zeroed; new ones are appended), within the budget from B's accuracy `acc0`. */
async function prunePass(
  start: Model,
  data: NcData,
  site: PruneSite,
  triggers: readonly PlacedTrigger[],
  pruned: number[],
  budget: { acc0: number; acc: number },
  s: PruneUnlearnSettings,
  opts: PruneUnlearnOptions,
): Promise<{ perLabel: PruneUnlearnResult["perLabel"]; acc0: number; acc: number; current: Model }> {
  const step = 1 / site.units;
  const perLabel: PruneUnlearnResult["perLabel"] = [];
  let { acc0, acc } = budget;
  let current = start;
  for (const t of triggers) {
    const left = Number.isNaN(acc0) ? s.maxDrop : Math.max(0, s.maxDrop - (acc0 - acc));
    const r = await ncPrune(current, { clean: data.clean }, [t], { layer: site.layer, threshold: s.threshold, maxDrop: left, step, order: s.order, batchSize: opts.evalBatchSize });
    if (Number.isNaN(acc0)) acc0 = acc = r.curve[0].cleanAccuracy;
    const last = r.curve.find((p) => p.channelsPruned === r.pruned.length) ?? r.curve[0];
    const success = last.triggerSuccess ?? NaN;
    // Pruning that ran out of budget with the trigger still working did not find the trigger's channels (a
    // warp, a natural "trigger" of a false flag): it would only cost accuracy, so those channels stay.
    if (!(success < s.accept)) {
      perLabel.push({ label: t.label, added: 0, stop: `${r.stop}; not kept`, triggerSuccess: success });
      opts.onPrune?.(t.label, pruned.length, site.units);
      continue;
    }
    const added = r.pruned.filter((j) => !pruned.includes(j));
    pruned.push(...added);
    acc = last.cleanAccuracy;
    perLabel.push({ label: t.label, added: added.length, stop: r.stop, triggerSuccess: success });
    current = prunedNeuronsModel(start, site, pruned);
    opts.onPrune?.(t.label, pruned.length, site.units);
  }
  return { perLabel, acc0, acc, current };
}

const l1 = (m: Float32Array): number => m.reduce((a, v) => a + v, 0);

export async function pruneUnlearn(model: Model, data: NcData, triggers: ReversedTrigger[], opts: PruneUnlearnOptions = {}): Promise<PruneUnlearnResult> {
  const s = checkPruneUnlearnOptions(opts);
  if (triggers.length === 0) fail("no reversed trigger given: nothing to prune or unlearn");
  if (s.rounds > 1 && opts.inputScale === undefined) throw new Error("pruneUnlearn: re-inverting triggers (rounds > 1) needs inputScale");
  if (s.rounds > 1 && s.holdout === 0) fail("option rounds > 1 needs a held-out part (holdout > 0) to check each round on");
  const layer = opts.layer ?? lastConvLayer(model);
  const site = pruneSite(model, layer);
  const clean = data.clean;
  const shape = clean.shape;
  const split = s.holdout > 0 ? splitClean(clean, s.holdout, s.seed, "prune-unlearn") : undefined;
  // Placement is decided once, on B (unpruned) and the held-out part (shift-evidence.ts); a position-free
  // label's trigger goes anywhere in the pruning (its channels ranked by the moved trigger) and the unlearning.
  const placement = await resolvePlacement(model, split?.heldSet ?? clean, triggers, s.placement, { seed: s.seed, batchSize: opts.evalBatchSize });
  let used: PlacedTrigger[] = placeAnywhere(triggers, placement.labels, shape);
  const pruned: number[] = [];
  const first = await prunePass(model, data, site, used, pruned, { acc0: NaN, acc: NaN }, s, opts);
  const perLabel = [...first.perLabel];
  const pruneAccuracy = { before: first.acc0, after: first.acc };
  let u = await unlearnPass(model, first.current, data, used, pruned, s, opts);
  const rounds: PruneUnlearnRound[] = [];
  if (s.rounds > 1 && split) {
    // Later rounds: the flagged labels' triggers reversed afresh on the repaired network (training part only)
    // and scored on the held-out part; a label whose fresh trigger is within `bound`x its first trigger's norm
    // and still succeeds on more than `accept` is pruned for and unlearned again with it added.
    const { trainSet: trainDs, heldSet: heldDs } = split;
    const firstNorm = new Map<number, number>();
    for (const t of triggers) firstNorm.set(t.label, Math.min(firstNorm.get(t.label) ?? Infinity, l1(t.mask)));
    const labels = [...firstNorm.keys()];
    const accFirst = (await heldOutScore(u.model, heldDs, [], opts.evalBatchSize)).accuracy;
    let acc = first.acc;
    for (let round = 2; round <= s.rounds; round++) {
      const fresh = await reinvertTriggers(u.model, trainDs, labels, opts.inputScale!, s.seed + round);
      const scored = [];
      for (const t of fresh) {
        const bound = opts.normBound ?? s.bound * firstNorm.get(t.label)!;
        const h = await heldOutScore(u.model, heldDs, [t], opts.evalBatchSize);
        scored.push({ trigger: t, info: { label: t.label, l1Norm: t.l1Norm, bound, success: h.triggerSuccess } });
      }
      // A fresh trigger several times the first one's size is a natural label-to-label trigger: every label has
      // one that succeeds; only a small one that still works is the backdoor left over.
      const still = scored.filter((x) => x.info.l1Norm <= x.info.bound && x.info.success > s.accept).map((x) => x.trigger);
      const entry: PruneUnlearnRound = { round, fresh: scored.map((x) => x.info), added: 0, heldOutAccuracy: NaN, outcome: "removed" };
      rounds.push(entry);
      if (still.length === 0) break;
      const before = pruned.length;
      const tried = [...pruned];
      const placedStill = placeAnywhere(still, placement.labels, shape);
      const p = await prunePass(prunedNeuronsModel(u.model, site, tried), data, site, placedStill, tried, { acc0: first.acc0, acc }, s, opts);
      const next = await unlearnPass(model, p.current, data, [...used, ...placedStill], tried, s, opts);
      const heldAcc = (await heldOutScore(next.model, heldDs, [], opts.evalBatchSize)).accuracy;
      entry.added = tried.length - before;
      entry.heldOutAccuracy = heldAcc;
      if (heldAcc < accFirst - s.roundDrop - 1e-12) {
        entry.outcome = "accuracy";
        break;
      }
      entry.outcome = "kept";
      pruned.splice(0, pruned.length, ...tried);
      perLabel.push(...p.perLabel);
      used = [...used, ...placedStill];
      acc = p.acc;
      u = next;
    }
  }
  const repaired = { ...u.model, name: `${model.name}_pruned_unlearned` };
  const ev = await evaluateModels(model, repaired, ncEvalSets(data, triggers), opts.evalBatchSize);
  return {
    ...ev,
    model: repaired,
    gGraph: gFromPair(model, repaired, `${model.name}_prune_unlearn_G`),
    site,
    pruned,
    perLabel,
    pruneAccuracy,
    history: u.history,
    chosenEpoch: u.chosenEpoch,
    unlearningUsed: u.feature ? "feature" : "ce",
    rounds,
    triggersUsed: used.length,
    anywhere: placement.labels,
    ...(placement.evidence ? { shiftEvidence: placement.evidence } : {}),
    settings: s,
    batchNorm: u.batchNorm,
  };
}

/** Unlearning with the pruned channels held at zero, from `start`; feature matching against B when channels were pruned (--unlearning auto). */
async function unlearnPass(model: Model, start: Model, data: NcData, triggers: PlacedTrigger[], pruned: readonly number[], s: PruneUnlearnSettings, opts: PruneUnlearnOptions) {
  const site = pruneSite(model, opts.layer ?? lastConvLayer(model));
  // The pruned channels stay at zero while unlearning (masked in the step graph, so their weights get no gradient).
  const masks = new Map([[site.value, channelMask(site.units, pruned)]]);
  const common = { channelMasks: masks, epochs: s.epochs, patience: s.patience, keepTolerance: s.keepTolerance, holdout: s.holdout, ratio: s.ratio, lr: s.lr, batchSize: s.batchSize, seed: s.seed, batchNorm: s.batchNorm, evalBatchSize: opts.evalBatchSize };
  const feature = s.unlearning === "auto" ? pruned.length > 0 : s.unlearning === "feature";
  const u = feature
    ? await featureUnlearn(start, data, triggers, { ...common, weight: s.featureWeight, reference: model }).then((r) => ({ model: r.model, history: r.history.map((h) => ({ ...h, round: h.epoch ? 1 : 0, accuracy: NaN, score: h.heldOutAccuracy - h.heldOutTriggerSuccess })), chosenEpoch: r.chosenEpoch, batchNorm: r.batchNorm }))
    : await ncUnlearn(start, data, triggers, { ...common, placement: "found", onBatch: opts.onBatch, onEpoch: opts.onEpoch });
  return { model: u.model, history: u.history as UnlearnEpoch[], chosenEpoch: u.chosenEpoch, feature, batchNorm: u.batchNorm };
}
