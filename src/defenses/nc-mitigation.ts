// Neural Cleanse mitigation (Wang et al., IEEE S&P 2019, section VI): once detection has reverse-engineered
// a trigger (mask m, pattern Δ) for a flagged label, two repairs use it.
//
// Neuron pruning: the neurons of the layer feeding the output layer (DeepID: activation_1) that react most to
// the reversed trigger — largest mean activation increase from clean inputs to the same inputs stamped with
// it — are pruned (masked to 0) a step at a time until the reversed trigger's attack success falls below a
// threshold, or clean accuracy has dropped too far. The repaired network zeroes the pruned neurons' outgoing
// weights (rows of the output Dense kernel), which is exactly the mask and keeps the Keras architecture.
// Defaults: steps of 1% of the neurons (at least one), stop below 5% reversed-trigger success (the paper
// prunes until the reversed trigger stops working), and never accept more than 10 points of clean-accuracy
// loss (the last network within that limit is kept; the curve shows where the threshold would have been).
//
// Unlearning: B is fine-tuned on clean data where a share of the images (20% in the paper) carry the reversed
// trigger but keep their true labels, so the network learns that the trigger means nothing. The paper
// trains one epoch; we use Adam with a small learning rate (1e-3 by default, Keras' Adam default, with batches
// of 32) so the clean behaviour survives while the trigger association is broken.
//
// Attack success of a trigger is measured on clean inputs whose true label is not its target, stamped as
// x' = (1 − m)·x + m·Δ (mask [H, W] over every channel, pattern [C, H, W] in the model's input scale).
import { EpochKeeper } from "../train/early-stop.js";
import { checkData, countCorrect, evaluateModels, worstTriggerSuccess, type EvalSets, type PairEvaluation } from "../eval/evaluate.js";
import { decodeImageBuffer, toNchw } from "../io/images.js";
import { fail } from "../errors.js";
import { tensor, type Graph, type Node, type TensorData } from "../graph/ir.js";
import { memoryDataset, type Dataset } from "../io/dataset.js";
import { predictLabels, type BatchSource } from "../model/forward.js";
import type { Model } from "../model/model.js";
import { paramValues, withParams } from "../model/params.js";
import type { ReportNeuralCleanse, ReportPruning, ReportPruningPoint } from "../report/types.js";
import { splitClean } from "../train/split.js";
import { train, type EpochStats } from "../train/trainer.js";
import { pickOptions, resolveOptions, MAX_LOOPS, SEED_OPTION, BATCH_NORM_OPTION, type OptionSpecs, type OptionValues } from "./defense.js";
import { gFromPair } from "./g-model.js";
import { checkTriggerPngPair, checkTriggerPngRole } from "./nc-report.js";
import { detectBackdoor, stampTrigger, type ReversedTrigger as NcTrigger } from "./neural-cleanse.js";
import { randomlyPlaced, resolvePlacement, shiftedTrigger, placeAnywhere, translatedSource, PLACEMENTS, type PlacedTrigger, type ShiftEvidence } from "./shift-evidence.js";
import { channelMask, PruneEngine, type CachedData, type PruneTarget } from "./pruning.js";

/** A reverse-engineered trigger: target label, mask [H·W] in [0, 1], pattern [C·H·W] in the scaled input range. */
export type ReversedTrigger = Pick<NcTrigger, "label" | "mask" | "pattern">;

/** UserError unless the trigger fits the model (shapes, label, mask range). */
export function checkTrigger(model: Model, t: ReversedTrigger): void {
  const [c, h, w] = model.inputShape;
  if (!Number.isInteger(t.label) || t.label < 0 || t.label >= model.numClasses) fail(`trigger target label ${t.label} is outside the model's ${model.numClasses} classes`);
  if (t.mask.length !== h * w) fail(`trigger mask for label ${t.label} has ${t.mask.length} values, the model's input needs ${h}x${w}`);
  if (t.pattern.length !== c * h * w) fail(`trigger pattern for label ${t.label} has ${t.pattern.length} values, the model's input needs ${c}x${h}x${w}`);
  for (const v of t.mask) if (!(v >= 0 && v <= 1)) fail(`trigger mask for label ${t.label} has a value ${v} outside [0, 1]`);
}

/** Stamps image `i` of the NCHW batch `x` in place: x' = (1 − m)·x + m·Δ. */
export function stampImage(x: Float32Array, i: number, shape: readonly [number, number, number], t: ReversedTrigger): void {
  const per = shape[0] * shape[1] * shape[2];
  x.set(stampTrigger(x.subarray(i * per, (i + 1) * per), 1, shape, t.mask, t.pattern), i * per);
}

/** How messages name the two images of triggerFromPngs. */
export interface TriggerPngNames {
  /** The images themselves (a file, or where in a result.json). */
  mask: string;
  pattern: string;
  /** The options that gave them ("--mask"), put before the names when the roles do not fit. */
  options?: { mask: string; pattern: string };
  /** What gave the label, for the message when the images were drawn for another one ("--target 5"). */
  label?: string;
}

/**
 * A trigger from PNG images, as `badnet detect` draws them: the mask grey (white = 1; colour images are
 * averaged), the pattern in the model's colours as 8-bit pixels (divided by inputScale like any input).
 * An image that detect marked as another picture (the pattern given as the mask, ...) is a UserError.
 */
export function triggerFromPngs(maskPng: Buffer, patternPng: Buffer, label: number, shape: readonly [number, number, number], inputScale: number, names: TriggerPngNames = { mask: "mask", pattern: "pattern" }): ReversedTrigger {
  const [c, h, w] = shape;
  const m = decodeImageBuffer(maskPng, names.mask);
  const p = decodeImageBuffer(patternPng, names.pattern);
  // Before the size and channel checks: a swapped pair fails those too, with a message that hides the cause.
  const opt = names.options;
  const swapped = opt ? `are ${opt.mask} and ${opt.pattern} swapped?` : "are the mask and the pattern swapped?";
  const subjects = { mask: opt ? `${opt.mask} ${names.mask}` : names.mask, pattern: opt ? `${opt.pattern} ${names.pattern}` : names.pattern };
  checkTriggerPngRole(maskPng, "mask", subjects.mask, swapped);
  checkTriggerPngRole(patternPng, "pattern", subjects.pattern, swapped);
  checkTriggerPngPair(maskPng, patternPng, label, subjects, names.label ?? `the target label ${label}`);
  for (const [img, what] of [[m, names.mask], [p, names.pattern]] as const) {
    if (img.width !== w || img.height !== h) fail(`trigger ${what} is ${img.width}x${img.height}, the model's input is ${w}x${h}`);
  }
  if (p.channels !== c) fail(`trigger ${names.pattern} has ${p.channels} channel(s), the model's input has ${c}`);
  const mask = new Float32Array(h * w);
  for (let q = 0; q < h * w; q++) {
    let s = 0;
    for (let ch = 0; ch < m.channels; ch++) s += m.data[q * m.channels + ch];
    mask[q] = s / m.channels / 255;
  }
  return { label, mask, pattern: toNchw(p, inputScale) };
}

/**
 * Flagged labels and their triggers from a `badnet detect` result.json (its neuralCleanse section: `flagged`
 * and `triggers[]` with base64 `maskPng` / `patternPng`). A flagged label without a trigger is a UserError.
 */
export function triggersFromReport(report: unknown, where: string, shape: readonly [number, number, number], inputScale: number, numClasses: number): { flagged: number[]; triggers: ReversedTrigger[] } {
  const nc = (report as { neuralCleanse?: Partial<ReportNeuralCleanse> } | null)?.neuralCleanse;
  if (!nc || !Array.isArray(nc.flagged) || !Array.isArray(nc.triggers)) fail(`${where} has no Neural Cleanse result (neuralCleanse.flagged and neuralCleanse.triggers); run badnet detect --out first`);
  const flagged = nc.flagged.map(Number);
  // Named here, with the file: checkTrigger would only say the label does not fit.
  for (const l of flagged) if (!Number.isInteger(l) || l < 0 || l >= numClasses) fail(`${where}: flagged label ${l} is outside the model's ${numClasses} classes (a result of another model?)`);
  const triggers = flagged.map((label) => {
    const t = nc.triggers!.find((x) => x.label === label);
    if (!t || typeof t.maskPng !== "string" || typeof t.patternPng !== "string") fail(`${where}: flagged label ${label} has no reversed trigger images`);
    const png = (s: string) => Buffer.from(s.replace(/^data:image\/png;base64,/, ""), "base64");
    return triggerFromPngs(png(t.maskPng), png(t.patternPng), label, shape, inputScale, { mask: `${where} label ${label} mask`, pattern: `${where} label ${label} pattern`, label: "the result" });
  });
  return { flagged, triggers };
}

/** A view of `data` with every image stamped with the trigger. */
export function stampedSource(data: BatchSource, t: ReversedTrigger): BatchSource {
  return {
    size: data.size,
    shape: data.shape,
    read(start, count) {
      return stampTrigger(data.read(start, count), count, data.shape, t.mask, t.pattern);
    },
  };
}

// ---------------------------------------------------------------------------------------------------------
// Where neurons are pruned

/** Ops that map zero to zero channel by channel: pruning before them equals pruning after them. */
const ZERO_PRESERVING = new Set(["Relu", "Identity", "MaxPool", "AveragePool", "Tanh", "LeakyRelu"]);

interface Zeroing {
  /** IR parameter name. */
  param: string;
  /** Axis of the tensor indexed by the neuron (Dense kernel [in, out]: 0 for its input, 1 for its output). */
  axis: number;
}

export interface PruneSite {
  /** Layer name (or value name for models without layer names). */
  layer: string;
  /** IR value whose channels (axis 1) are the neurons. */
  value: string;
  units: number;
  /** Slices zeroed in the repaired network, one per neuron index. */
  zero: Zeroing[];
  /** How the repaired network realises the pruning, for the report. */
  how: string;
}

function isParam(model: Model, v: string): boolean {
  return model.params.some((p) => p.value === v);
}

/** MatMul/Gemm reading `value` as its data input with a stored 2-D weight: the weight's input-axis zeroing. */
function readerZeroing(model: Model, n: Node, value: string): Zeroing | undefined {
  const g = model.graph;
  if (n.inputs[0] !== value || n.inputs.slice(1).includes(value)) return undefined;
  const w = n.inputs[1];
  if (!isParam(model, w) || g.shape(w).length !== 2) return undefined;
  if (n.op === "MatMul") return { param: w, axis: 0 };
  if (n.op === "Gemm") {
    const a = n.attrs;
    if (a.transA?.kind === "int" && a.transA.value !== 0) return undefined;
    return { param: w, axis: a.transB?.kind === "int" && a.transB.value !== 0 ? 1 : 0 };
  }
  return undefined;
}

/** The output Dense layer's MatMul/Gemm: walked back from the logits through Identity and bias Adds. */
export function outputDense(model: Model): { node: Node; x: string } {
  const g = model.graph;
  let v = model.logits;
  for (let guard = 0; guard < 100; guard++) {
    const n = g.producer(v);
    if (!n) break;
    if (n.op === "Identity") v = n.inputs[0];
    else if (n.op === "Add" && n.inputs.length === 2 && n.inputs.some((i) => g.initializers.has(i))) v = n.inputs.find((i) => !g.initializers.has(i))!;
    else if ((n.op === "MatMul" || n.op === "Gemm") && readerZeroing(model, n, n.inputs[0])) return { node: n, x: n.inputs[0] };
    else break;
  }
  return fail(`model ${model.name}: cannot find the output Dense layer feeding the logits (give --layer)`);
}

function layerNameOf(model: Model, value: string): string {
  for (const [name, v] of model.layerOutputs) if (v === value) return name;
  return value;
}

/**
 * Resolves the layer whose neurons are pruned. Default: the input of the output Dense layer. A named layer
 * is pruned through the weights that read it (when only Dense layers read it) or through the weights that
 * produce it (Conv2D/Dense followed only by zero-preserving, per-channel ops such as ReLU and pooling).
 */
export function pruneSite(model: Model, layer?: string): PruneSite {
  const g = model.graph;
  let value: string;
  if (layer === undefined) value = outputDense(model).x;
  else {
    const v = model.layerOutputs.get(layer);
    if (!v) fail(`model ${model.name} has no layer "${layer}" (layers: ${[...model.layerOutputs.keys()].join(", ")})`);
    value = v;
  }
  const name = layer ?? layerNameOf(model, value);
  const shape = g.shape(value);
  if (shape.length !== 2 && shape.length !== 4) fail(`layer "${name}" has shape [${shape}]; only dense [N, units] or conv [N, C, H, W] outputs can be pruned`);
  const units = shape[1];
  if (typeof units !== "number") fail(`layer "${name}" has no fixed number of neurons`);
  if (value === model.input) fail(`layer "${name}" is the model input; it has no neurons to prune`);

  // Read only by Dense layers: zero their input rows (DeepID's activation_1 → output).
  const readers = g.consumers().get(value) ?? [];
  const outs = new Set(g.outputs.map((o) => o.name));
  if (shape.length === 2 && readers.length > 0 && !outs.has(value)) {
    const zs = readers.map((n) => readerZeroing(model, n, value));
    if (zs.every((z): z is Zeroing => z !== undefined)) {
      return { layer: name, value, units, zero: zs, how: "outgoing weights zeroed (input rows of the reading Dense kernel)" };
    }
  }
  // Produced by a Conv/Dense through zero-preserving ops: zero the producing kernel's output slice and bias.
  let v = value;
  for (let guard = 0; guard < 100; guard++) {
    const n = g.producer(v);
    if (!n) break;
    if (ZERO_PRESERVING.has(n.op)) {
      // Zeroing upstream is only the same as masking here when nothing else reads the upstream value.
      v = n.inputs[0];
      if ((g.consumers().get(v)?.length ?? 0) !== 1) break;
      continue;
    }
    let bias: string | undefined;
    let core = n;
    if (n.op === "Add" && n.inputs.length === 2 && n.inputs.some((i) => isParam(model, i))) {
      bias = n.inputs.find((i) => isParam(model, i));
      const other = n.inputs.find((i) => i !== bias)!;
      const p = g.producer(other);
      if (!p || (g.consumers().get(other)?.length ?? 0) !== 1) break;
      core = p;
    }
    const zero: Zeroing[] = [];
    if (core.op === "Conv" && isParam(model, core.inputs[1])) {
      zero.push({ param: core.inputs[1], axis: 0 });
      if (core.inputs[2]) zero.push({ param: core.inputs[2], axis: 0 });
    } else if (core.op === "MatMul" && isParam(model, core.inputs[1])) {
      zero.push({ param: core.inputs[1], axis: 1 });
    } else break;
    if (bias) zero.push({ param: bias, axis: 0 });
    if (zero.some((z) => g.staticShape(z.param)[z.axis] !== units)) break;
    return { layer: name, value, units, zero, how: `producing weights zeroed (${core.op} kernel outputs and bias)` };
  }
  return fail(`layer "${name}" cannot be pruned: it is neither read only by Dense layers nor produced by a Conv2D/Dense layer through ReLU/pooling`);
}

/** Zeroes slice `index` along `axis` of a tensor (copy). */
function zeroSlice(t: TensorData, axis: number, indices: readonly number[]): TensorData {
  const d = Float32Array.from(t.data as Float32Array);
  const inner = t.shape.slice(axis + 1).reduce((a, b) => a * b, 1);
  const dim = t.shape[axis];
  const outer = t.shape.slice(0, axis).reduce((a, b) => a * b, 1);
  for (const idx of indices) for (let o = 0; o < outer; o++) d.fill(0, (o * dim + idx) * inner, (o * dim + idx + 1) * inner);
  return tensor("float32", [...t.shape], d);
}

/** B with the given neurons of the site pruned through weights (so the Keras spec follows). */
export function prunedNeuronsModel(model: Model, site: PruneSite, neurons: readonly number[], name = `${model.name}_nc_pruned`): Model {
  for (const j of neurons) if (!Number.isInteger(j) || j < 0 || j >= site.units) throw new RangeError(`neuron ${j} outside 0..${site.units - 1}`);
  const values = paramValues(model);
  const upd = new Map<string, TensorData>();
  for (const z of site.zero) upd.set(z.param, zeroSlice(upd.get(z.param) ?? values.get(z.param)!, z.axis, neurons));
  return withParams(model, upd, name);
}

// ---------------------------------------------------------------------------------------------------------
// Shared evaluation

export interface NcData {
  /** Clean labelled data the repair works on (activations, the pruning curve, the unlearning set). */
  clean: Dataset;
  /** Clean labelled data for the final numbers (default: `clean`). */
  test?: Dataset;
  /** Poisoned inputs labelled with the attacker's target: the real attack success rate. */
  poisoned?: Dataset;
}

export type NcEvaluation = PairEvaluation & {
  /** How BatchNorm was trained, where the network has any (train/batch-norm-training.ts). */
  batchNorm?: string;
};

function checkInputs(model: Model, data: NcData, triggers: ReversedTrigger[]): void {
  if (triggers.length === 0) fail("no reversed trigger given: nothing to mitigate");
  for (const t of triggers) checkTrigger(model, t);
  checkData(model, data.clean, "Neural Cleanse mitigation (clean accuracy)");
  if (data.clean.size === 0) fail(`data ${data.clean.name} is empty`);
  if (data.test) checkData(model, data.test, "clean test accuracy");
  if (data.poisoned) checkData(model, data.poisoned, "attack success rate");
}

/** The sets B and a repair are measured on: the evaluation data (test, else clean), its stamped copies, the poisoned data. */
export function ncEvalSets(data: NcData, triggers: readonly ReversedTrigger[]): EvalSets {
  const clean = data.test ?? data.clean;
  return { clean, poisoned: data.poisoned, stamped: triggers.map((t) => ({ source: stampedSource(clean, t), target: t.label })) };
}

// ---------------------------------------------------------------------------------------------------------
// Neuron pruning

export interface NcPruneOptions {
  layer?: string;
  /** Stop once the reversed triggers' attack success is below this (default 0.05). */
  threshold?: number;
  /** Stop before clean accuracy on the clean data drops by more than this fraction (default 0.10). */
  maxDrop?: number;
  /** Share of the layer's neurons pruned per step (default 0.01, at least one neuron). */
  step?: number;
  batchSize?: number;
  /**
   * Pruning order: "gap" (default, the paper's) ranks by the mean activation increase under the triggers;
   * "relative" divides it by the neuron's mean clean activation (plus the layer's mean), so neurons busy on
   * clean inputs, whose loss costs accuracy, come after neurons that only the trigger wakes.
   */
  order?: "gap" | "relative";
  onCache?: (done: number, total: number) => void;
  onStep?: (pruned: number, units: number, point: ReportPruningPoint) => void;
}

export type NcPruneStop = "threshold" | "max-drop" | "all-pruned";

export interface NcPruneResult extends NcEvaluation {
  site: PruneSite;
  /** Neurons in pruning order (largest activation increase under the triggers first). */
  ranking: number[];
  /** Mean activation increase per neuron (stamped − clean), averaged over the triggers. */
  gap: number[];
  curve: ReportPruningPoint[];
  /** Neurons pruned in the repaired network. */
  pruned: number[];
  stop: NcPruneStop;
  pruning: ReportPruning;
  model: Model;
  gGraph: Graph;
}

/** Neural Cleanse pruning's numeric options: one spec for the library's checks, the CLI's flags and --help. */
export const NC_PRUNE_OPTIONS = {
  threshold: { kind: "number", description: "stop once the reversed trigger's attack success is below this fraction", default: 0.05, min: 0, exclusiveMin: true, max: 1 },
  maxDrop: { kind: "number", description: "never lose more than this fraction of clean accuracy", default: 0.1, min: 0, max: 1 },
  step: { kind: "number", description: "fraction of the layer's neurons pruned per step", default: 0.01, min: 0, exclusiveMin: true, max: 1 },
} as const satisfies OptionSpecs;

export function checkNcPruneOptions(o: NcPruneOptions): Required<Pick<NcPruneOptions, "threshold" | "maxDrop" | "step">> {
  return resolveOptions(NC_PRUNE_OPTIONS, pickOptions(NC_PRUNE_OPTIONS, o));
}

/** Seed of the positions a position-free trigger is moved to when scored or pruned for (trigger k adds k). */
export const MOVED_STAMP_SEED = 9173;

export async function ncPrune(model: Model, data: NcData, triggers: PlacedTrigger[], opts: NcPruneOptions = {}): Promise<NcPruneResult> {
  const { threshold, maxDrop, step } = checkNcPruneOptions(opts);
  checkInputs(model, data, triggers);
  const site = pruneSite(model, opts.layer);
  // The pruning engine caches everything upstream of the value and re-runs only the head per step.
  const target: PruneTarget = { layer: site.layer, conv: site.value, kernel: site.zero[0].param, channels: site.units, value: site.value };
  const engine = await PruneEngine.create(model, target, { batchSize: opts.batchSize });
  try {
    const labels = data.clean.labels!;
    const total = data.clean.size * (1 + triggers.length) + (data.poisoned?.size ?? 0);
    let offset = 0;
    const cache = async (src: BatchSource, l: Int32Array): Promise<CachedData> => {
      const c = await engine.cache(src, l, (done) => opts.onCache?.(offset + done, total));
      offset += src.size;
      return c;
    };
    const clean = await cache(data.clean, labels);
    const stamped: CachedData[] = [];
    // A position-free trigger (shift-evidence.ts) is stamped at a random position per image, so the channels are
    // ranked and the pruning stopped by its response anywhere, not where Neural Cleanse found it.
    for (const [k, t] of triggers.entries()) stamped.push(await cache(t.rolls ? translatedSource(data.clean, t, MOVED_STAMP_SEED + k, t.rolls) : stampedSource(data.clean, t), labels));
    const poisoned = data.poisoned ? await cache(data.poisoned, data.poisoned.labels!) : undefined;

    const base = engine.channelMeans(clean);
    const gap = new Float64Array(site.units);
    for (const s of stamped) engine.channelMeans(s).forEach((m, j) => (gap[j] += (m - base[j]) / stamped.length));
    if (opts.order === "relative") {
      const mean = base.reduce((a, b) => a + Math.abs(b), 0) / base.length;
      for (let j = 0; j < gap.length; j++) gap[j] /= Math.abs(base[j]) + mean + 1e-12;
    }
    const ranking = Array.from({ length: site.units }, (_, j) => j).sort((a, b) => gap[b] - gap[a] || a - b);

    const per = Math.max(1, Math.round(step * site.units));
    const curve: ReportPruningPoint[] = [];
    let acc0 = 0;
    let chosen = 0;
    let stop: NcPruneStop = "all-pruned";
    for (let k = 0; ; k = Math.min(site.units, k + per)) {
      const mask = channelMask(site.units, ranking.slice(0, k));
      const acc = countCorrect(await engine.predict(clean, mask), labels) / clean.n;
      const preds: Int32Array[] = [];
      for (const s of stamped) preds.push(await engine.predict(s, mask));
      const success = worstTriggerSuccess(preds, labels, triggers.map((t) => t.label));
      const point: ReportPruningPoint = { fractionPruned: k / site.units, channelsPruned: k, cleanAccuracy: acc, triggerSuccess: success };
      if (poisoned) point.asr = countCorrect(await engine.predict(poisoned, mask), poisoned.labels) / poisoned.n;
      curve.push(point);
      opts.onStep?.(k, site.units, point);
      if (k === 0) acc0 = acc;
      if (acc0 - acc > maxDrop + 1e-12) {
        stop = "max-drop";
        break;
      }
      chosen = k;
      if (success < threshold) {
        stop = "threshold";
        break;
      }
      if (k === site.units) break;
    }
    const pruned = ranking.slice(0, chosen);
    const repaired = prunedNeuronsModel(model, site, pruned);
    const ev = await evaluateModels(model, repaired, ncEvalSets(data, triggers), opts.batchSize);
    const labelsText = triggers.map((t) => t.label).join(", ");
    return {
      ...ev,
      site,
      ranking,
      gap: Array.from(gap),
      curve,
      pruned,
      stop,
      pruning: {
        layer: site.layer,
        order: `decreasing activation increase under the reversed trigger${triggers.length > 1 ? "s" : ""} of label ${labelsText} (stamped − clean), measured at ${site.value}`,
        curve,
        drops: [],
      },
      model: repaired,
      gGraph: gFromPair(model, repaired, `${model.name}_nc_prune_G`),
    };
  } finally {
    await engine.release();
  }
}

// ---------------------------------------------------------------------------------------------------------
// Unlearning
//
// Why the paper's recipe (one epoch, the reversed trigger stamped where it was found) leaves the real
// trigger working: the reversed trigger is rarely the real one. On the bundled example the reversed mask
// (L1 13.5) sits just above and left of the real 3×3 patch with none of its mass on it; the conv features
// and max-pools react to both, but one epoch teaches the network to ignore only the pixels stamped: the
// reversed trigger falls to 8% while the real one keeps 26%. Measured on that example (valid.h5 for the
// repair, clean_test/poisoned_test only to report): 3 epochs take the real ASR to 11.3% (reversed 2.1%),
// at 85.9% clean accuracy instead of 83.7%; more epochs do not lower it further; stamping half of each
// batch gives 7.6% at 85.2%. Moving the stamped trigger at random (±1–4 pixels) or weakening it made things
// worse (29–71%): the unlearning signal spreads over positions the backdoor does not use. So the default is
// up to 10 epochs with the epoch kept by a held-out split of the clean data (accuracy minus reversed-trigger
// success, never the poisoned test set): the latest epoch within `keepTolerance` of the best, stopping
// `patience` epochs after the last one kept (train/early-stop.ts EpochKeeper says why the latest); jitter and
// strength stay available as options. A trigger whose backdoor fires anywhere (random_pos) is another matter:
// `placement` (default auto, shift-evidence.ts) rolls it to a random position per image when B still answers
// it rolled off itself; measured on random_pos that took auto from 26.9–58.3% to 2.7–9.6% (docs/repairs.md).

export interface UnlearnOptions {
  /**
   * Rounds (default 1). After each round but the last, the flagged labels' triggers are reversed again on the
   * best network so far (what of the backdoor the triggers so far did not cover) and unlearned too.
   */
  rounds?: number;
  /** The model's input scale: needed to re-reverse triggers when rounds > 1. */
  inputScale?: number;
  /** Most epochs per round (default 10); a round stops earlier when the held-out score stops improving. */
  epochs?: number;
  /** Epochs without a better held-out score before stopping (default 2). */
  patience?: number;
  /** Keep the latest epoch within this of the best held-out score (default DEFAULT_KEEP_TOLERANCE). */
  keepTolerance?: number;
  /** Share of the clean data held out for early stopping (default 0.2; 0 trains on everything for `epochs`). */
  holdout?: number;
  /** Share of each batch stamped with a reversed trigger (default 0.2). */
  ratio?: number;
  /** Largest random shift of a stamped trigger, in pixels each way (default 0). */
  jitter?: number;
  /** Stamped mask scaled by a random factor in [minStrength, 1] (default 1: full strength). */
  minStrength?: number;
  /** Adam learning rate (default 1e-3). */
  lr?: number;
  /** Training batch size (default 32). */
  batchSize?: number;
  seed?: number;
  /** Inference batch size for the evaluation. */
  evalBatchSize?: number;
  /** Layer value → per-channel 0/1 mask held during training (channels pruned before unlearning stay pruned). */
  channelMasks?: Map<string, Float32Array>;
  /** Where stamped triggers go (default "auto"; see shift-evidence.ts). */
  placement?: "auto" | "found" | "anywhere";
  /** The network whose response to a moved trigger decides placement "auto" (default: the one unlearned). */
  reference?: Model;
  onBatch?: (done: number, total: number, loss: number) => void;
  onEpoch?: (s: EpochStats) => void;
}

export type UnlearnSettings = OptionValues<typeof UNLEARN_OPTIONS>;

/** Held-out numbers after an epoch (epoch 0: before unlearning). */
export interface UnlearnEpoch extends EpochStats {
  /** 1-based round (0: B before unlearning). */
  round: number;
  heldOutAccuracy: number;
  heldOutTriggerSuccess: number;
  score: number;
}

export interface UnlearnResult extends NcEvaluation {
  model: Model;
  gGraph: Graph;
  history: UnlearnEpoch[];
  /** The epoch whose network was kept (the latest within keepTolerance of the best held-out score; at least epoch 1, B itself is no repair). */
  chosenEpoch: number;
  /** Triggers unlearned: the ones given plus those re-reversed in later rounds. */
  triggersUsed: number;
  /** Flagged labels whose triggers were stamped at random positions (the `placement` option). */
  anywhere: number[];
  /** B's response to each moved trigger, when `placement` was "auto". */
  shiftEvidence?: ShiftEvidence[];
  settings: UnlearnSettings;
}

/**
 * The unlearning repairs keep the latest epoch whose held-out score is within this of the best (train/early-stop.ts
 * EpochKeeper); docs/repairs.md "Which epoch unlearning keeps" has the measurements.
 */
export const DEFAULT_KEEP_TOLERANCE = 0.01;
export const KEEP_TOLERANCE_TEXT =
  "keep the latest epoch whose held-out score (accuracy minus reversed-trigger success) is within this of the best so far, and stop patience epochs after it (0: the best epoch)";

/** Neural Cleanse unlearning's options: one spec for the library's checks, the CLI's flags and --help. */
export const UNLEARN_OPTIONS = {
  rounds: { kind: "integer", description: "rounds; each later one re-reverses the flagged labels' triggers on the unlearned network and unlearns them too", default: 1, min: 1, max: MAX_LOOPS },
  epochs: { kind: "integer", description: "most unlearning epochs per round (the epoch kept is chosen on a held-out clean split)", default: 10, min: 1, max: MAX_LOOPS },
  patience: { kind: "integer", description: "epochs without a better held-out score before a round stops", default: 2, min: 1 },
  keepTolerance: { kind: "number", description: KEEP_TOLERANCE_TEXT, default: DEFAULT_KEEP_TOLERANCE, min: 0, max: 1 },
  holdout: { kind: "number", description: "share of the clean data held out to choose the epoch (0: train on all, keep the last epoch)", default: 0.2, min: 0, max: 1, exclusiveMax: true },
  ratio: { kind: "number", description: "share of each batch stamped with a reversed trigger (true labels kept)", default: 0.2, min: 0, exclusiveMin: true, max: 1 },
  placement: { kind: "choice", choices: PLACEMENTS, description: "where a stamped trigger goes: found (where Neural Cleanse found it), anywhere (a random position per image), or auto: anywhere for the labels whose reversed trigger still works on B when rolled to a random position (at least a quarter of its success where found), else found", default: "auto" },
  jitter: { kind: "integer", description: "largest random shift of a stamped trigger, in pixels", default: 0, min: 0 },
  minStrength: { kind: "number", description: "stamped mask scaled by a random factor in [min-strength, 1]", default: 1, min: 0, exclusiveMin: true, max: 1 },
  lr: { kind: "number", description: "Adam learning rate", default: 1e-3, min: 0, exclusiveMin: true },
  batchSize: { kind: "integer", description: "training batch size", default: 32, min: 1, max: 65536 },
  batchNorm: BATCH_NORM_OPTION,
  seed: SEED_OPTION,
} as const satisfies OptionSpecs;

export function checkUnlearnOptions(o: UnlearnOptions, shape?: readonly [number, number, number]): UnlearnSettings {
  const s = resolveOptions(UNLEARN_OPTIONS, pickOptions(UNLEARN_OPTIONS, o));
  if (shape && s.jitter >= Math.min(shape[1], shape[2])) fail(`option jitter (${s.jitter}) must be smaller than the image side (${Math.min(shape[1], shape[2])} pixels)`);
  return s;
}

export { shiftedTrigger } from "./shift-evidence.js";

export interface StampAugment {
  /** Largest shift each way, in pixels. */
  jitter: number;
  /** Mask scale drawn uniformly from [minStrength, 1]. */
  minStrength: number;
}

/**
 * Picks round(ratio·count) images of the batch (seeded) and stamps each with one of the triggers, moved and
 * weakened at random when `augment` is given.
 */
export function stampShare(x: Float32Array, count: number, shape: readonly [number, number, number], triggers: readonly PlacedTrigger[], ratio: number, rand: () => number, augment?: StampAugment): number[] {
  const k = Math.round(ratio * count);
  const idx = Array.from({ length: count }, (_, i) => i);
  for (let i = 0; i < k; i++) {
    const j = i + Math.floor(rand() * (count - i));
    [idx[i], idx[j]] = [idx[j], idx[i]];
  }
  const chosen = idx.slice(0, k);
  for (const i of chosen) {
    const picked: PlacedTrigger = triggers[triggers.length === 1 ? 0 : Math.floor(rand() * triggers.length)];
    // A position-free label's trigger (shift-evidence.ts) goes anywhere its support fits.
    let t: ReversedTrigger = picked.rolls ? randomlyPlaced(picked, shape, picked.rolls, rand) : picked;
    if (augment && (augment.jitter > 0 || augment.minStrength < 1)) {
      const shift = () => Math.floor(rand() * (2 * augment.jitter + 1)) - augment.jitter;
      t = shiftedTrigger(t, shape, shift(), shift(), augment.minStrength + (1 - augment.minStrength) * rand());
    }
    stampImage(x, i, shape, t);
  }
  return chosen;
}

/** Clean accuracy and worst reversed-trigger success of a model on an in-memory labelled set. */
export async function heldOutScore(model: Model, held: Dataset, triggers: readonly PlacedTrigger[], batchSize?: number): Promise<{ accuracy: number; triggerSuccess: number }> {
  const labels = held.labels!;
  const clean = await predictLabels(model, held, { batchSize });
  const preds: Int32Array[] = [];
  const targets: number[] = [];
  for (const [k, t] of triggers.entries()) {
    preds.push(await predictLabels(model, stampedSource(held, t), { batchSize }));
    targets.push(t.label);
    // A trigger stamped anywhere in training is also scored anywhere (fixed seeded positions per image).
    if (t.rolls) {
      preds.push(await predictLabels(model, translatedSource(held, t, MOVED_STAMP_SEED + k, t.rolls), { batchSize }));
      targets.push(t.label);
    }
  }
  return { accuracy: countCorrect(clean, labels) / labels.length, triggerSuccess: worstTriggerSuccess(preds, labels, targets) };
}

/**
 * Fresh reversed triggers of `labels` on the (partly repaired) network: what of the backdoor the triggers
 * unlearned so far did not cover. Mask family, one start, a short budget; train-split images only.
 */
export async function reinvertTriggers(model: Model, data: Dataset, labels: number[], inputScale: number, seed: number): Promise<NcTrigger[]> {
  // Only the triggers are wanted, not flags: no head-shift measurement.
  const r = await detectBackdoor(model, data, { inputScale, labels, families: ["mask"], restarts: 1, steps: 150, seed, headShift: false });
  return labels.map((l) => r.triggers.find((t) => t.label === l)).filter((t): t is NcTrigger => t !== undefined);
}

export async function ncUnlearn(model: Model, data: NcData, triggers: PlacedTrigger[], opts: UnlearnOptions = {}): Promise<UnlearnResult> {
  checkInputs(model, data, triggers);
  const { clean } = data;
  const shape = clean.shape;
  const settings = checkUnlearnOptions(opts, shape);
  if (settings.rounds > 1 && opts.inputScale === undefined) throw new Error("ncUnlearn: re-inverting triggers (rounds > 1) needs inputScale");
  const split = settings.holdout > 0 ? splitClean(clean, settings.holdout, settings.seed, "unlearning") : undefined;
  const trainSet = split ? split.train : { x: clean.read(0, clean.size), y: Int32Array.from(clean.labels!) };
  const heldDs = split?.heldSet;
  const augment: StampAugment = { jitter: settings.jitter, minStrength: settings.minStrength };
  // Placement (shift-evidence.ts): triggers given already placed keep their range; the others as the option says,
  // "auto" by B's response to the moved trigger on the held-out part (the training part without one).
  const evidenceSet = heldDs ?? memoryDataset(`${clean.name} (train part)`, shape, trainSet.x, trainSet.y);
  const placement = await resolvePlacement(opts.reference ?? model, evidenceSet, triggers.filter((t) => !t.rolls), settings.placement, { seed: settings.seed, batchSize: opts.evalBatchSize });
  const anywhere = [...new Set([...placement.labels, ...triggers.filter((t) => t.rolls).map((t) => t.label)])].sort((a, b) => a - b);
  // Higher is better: clean accuracy minus reversed-trigger success, both on held-out images.
  const score = (r: { accuracy: number; triggerSuccess: number }) => r.accuracy - r.triggerSuccess;

  const history: UnlearnEpoch[] = [];
  let used: PlacedTrigger[] = placeAnywhere(triggers, anywhere, shape);
  let current = model;
  let batchNorm: string | undefined;
  const keeper = new EpochKeeper<Model>(model, settings.keepTolerance, settings.patience);
  let epoch = 0;
  for (let round = 1; round <= settings.rounds; round++) {
    if (round > 1) {
      // Each later round starts from the best network so far, with the triggers re-reversed on it added.
      const labels = [...new Set(triggers.map((t) => t.label))];
      const fresh = await reinvertTriggers(keeper.kept.value, memoryDataset(`${clean.name} (train part)`, shape, trainSet.x, trainSet.y), labels, opts.inputScale!, settings.seed + round);
      used = [...used, ...placeAnywhere(fresh, anywhere, shape)];
      current = keeper.kept.value;
      if (heldDs) keeper.rescore(score(await heldOutScore(current, heldDs, used, opts.evalBatchSize)));
    } else if (heldDs) {
      const r0 = await heldOutScore(model, heldDs, used, opts.evalBatchSize);
      history.push({ epoch: 0, round: 0, loss: NaN, accuracy: NaN, seconds: 0, heldOutAccuracy: r0.accuracy, heldOutTriggerSuccess: r0.triggerSuccess, score: score(r0) });
    }
    const roundStart = epoch;
    // One epoch per train() call so that the held-out check can stop the run; Adam's moments restart each epoch.
    for (let e = 1; e <= settings.epochs; e++) {
      epoch++;
      const ts = used;
      // Labels stay the true ones: the network learns that the trigger does not change the class.
      const r = await train(current, { ...trainSet, shape }, {
        epochs: 1,
        batchSize: settings.batchSize,
        optimizer: { kind: "adam", lr: settings.lr },
        batchNorm: settings.batchNorm,
        seed: settings.seed * 1000 + epoch,
        channelMasks: opts.channelMasks,
        transformBatch: (x, y, rand) => void stampShare(x, y.length, shape, ts, settings.ratio, rand, augment),
        onBatch: opts.onBatch,
      });
      current = r.model;
      batchNorm = r.batchNorm;
      const stats = { ...r.history[0], epoch };
      if (!heldDs) {
        history.push({ ...stats, round, heldOutAccuracy: NaN, heldOutTriggerSuccess: NaN, score: NaN });
        keeper.keepUnscored(epoch, current);
        opts.onEpoch?.(stats);
        continue;
      }
      const h = await heldOutScore(current, heldDs, used, opts.evalBatchSize);
      history.push({ ...stats, round, heldOutAccuracy: h.accuracy, heldOutTriggerSuccess: h.triggerSuccess, score: score(h) });
      opts.onEpoch?.(stats);
      if (keeper.after(epoch, current, score(h), roundStart)) break;
    }
  }
  const best = keeper.kept;
  const repaired = { ...best.value, name: `${model.name}_unlearned` };
  const ev = await evaluateModels(model, repaired, ncEvalSets(data, triggers), opts.evalBatchSize);
  return { ...ev, model: repaired, gGraph: gFromPair(model, repaired, `${model.name}_unlearn_G`), history, chosenEpoch: best.epoch, triggersUsed: used.length, anywhere, ...(placement.evidence ? { shiftEvidence: placement.evidence } : {}), settings, batchNorm };
}
