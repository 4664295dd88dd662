// STRIP (Gao et al., ACSAC 2019): a run-time detector. An input is superimposed with k clean images and the
// mean Shannon entropy of the k predictions is measured. A clean input blended with other images gives
// mixed, high-entropy predictions; an input carrying a trigger keeps being sent to the target class, so its
// entropy stays low. Inputs whose entropy falls below a threshold (chosen for a false-rejection rate on clean
// validation data) are rejected.
//
// Everything runs in one graph: the k overlay images are an initializer, so G.onnx needs no side files.
// Batch layout: each input x becomes k+1 rows — row 0 is x itself (B's own prediction, which G passes on
// when it accepts), rows 1..k are the blends — so B's weights appear once in the graph.
//
// Blend: "mean" (default) is 0.5·x + 0.5·c: it stays inside the input range whatever the input scale, and
// on our patch-backdoored test models it separates clean from poisoned inputs better, because each clean
// blend becomes a genuinely ambiguous image while the trigger still dominates at half contrast. "add" is the
// paper's superimposition (pixel sum saturated at the top of the pixel range, like OpenCV's
// addWeighted(x, 1, c, 1, 0) on 8-bit images); it needs the range's top (255 / inputScale).
// Entropy is in bits (log2), averaged over the k blends as the paper normalizes it.
import { fail } from "../errors.js";
import { attr, Graph, tensor, type TensorData } from "../graph/ir.js";
import type { Dataset } from "../io/dataset.js";
import { checkShape, checkLabels } from "../io/dataset.js";
import { argmaxRows, batchTensor, forwardGraph, type BatchSource } from "../model/forward.js";
import type { Model } from "../model/model.js";
import type { ReportG, ReportStrip } from "../report/types.js";
import { Session } from "../runtime/session.js";
import { mulberry32, shuffled } from "../util/random.js";
import { appendRejectClass, embed } from "./g-model.js";

export type Blend = "add" | "mean";

export interface StripGraphOptions {
  blend?: Blend;
  /** Top of the input range (255 / inputScale); "add" saturates blends there. Required for "add". */
  maxValue?: number;
}

export interface StripGraph {
  graph: Graph;
  /** B's logits for the unblended inputs, [N, K]. */
  logits: string;
  /** Mean entropy in bits of the k blended predictions, [N]. */
  entropy: string;
}

const BIG = 3.0e38;

/** Checks a false-rejection rate: it must be strictly between 0 and 1. */
export function checkFrr(frr: number): void {
  if (!Number.isFinite(frr) || frr <= 0 || frr >= 1) fail(`STRIP false rejection rate must be between 0 and 1 (exclusive), got ${frr}`);
}

/** k distinct images of `data`, picked with a seeded shuffle, as one [k, C, H, W] array. */
export function pickOverlays(data: BatchSource & { name: string }, k: number, seed = 0): Float32Array {
  if (!Number.isInteger(k) || k < 1) fail(`STRIP needs k >= 1 overlay images, got ${k}`);
  if (k > data.size) fail(`STRIP needs k=${k} overlay images but data ${data.name} has only ${data.size} images`);
  const [c, h, w] = data.shape;
  const per = c * h * w;
  const order = shuffled(data.size, mulberry32(seed));
  const out = new Float32Array(k * per);
  for (let i = 0; i < k; i++) out.set(data.read(order[i], 1), i * per);
  return out;
}

/**
 * The STRIP graph of `model` with the given overlays ([k, C, H, W]): input `input` [N, C, H, W], outputs
 * B's logits [N, K] and the mean entropy [N].
 */
export function stripGraph(model: Model, overlays: Float32Array, opts: StripGraphOptions = {}): StripGraph {
  const blend = opts.blend ?? "mean";
  const [c, h, w] = model.inputShape;
  const per = c * h * w;
  if (overlays.length === 0 || overlays.length % per !== 0) {
    throw new Error(`stripGraph: ${overlays.length} overlay values is not a positive multiple of ${c}x${h}x${w}`);
  }
  if (blend === "add" && !(opts.maxValue !== undefined && opts.maxValue > 0)) throw new Error("stripGraph: blend \"add\" needs maxValue");
  const k = overlays.length / per;
  const rows = k + 1;
  const K = model.numClasses;

  const g = new Graph(`${model.name}_strip`);
  const x = g.addInput("input", "float32", ["N", c, h, w]);
  // Row 0 is x untouched (weight 1, overlay 0); rows 1..k are x·a + b·c_i.
  const a = new Float32Array(rows).fill(blend === "add" ? 1 : 0.5);
  a[0] = 1;
  const over = new Float32Array(rows * per);
  const b = blend === "add" ? 1 : 0.5;
  for (let i = 0; i < overlays.length; i++) over[per + i] = b * overlays[i];
  const xs = g.op("Unsqueeze", [x, g.ints([1])]);
  let blended = g.op("Add", [
    g.op("Mul", [xs, g.constant(tensor("float32", [1, rows, 1, 1, 1], a), "strip_weight")]),
    g.constant(tensor("float32", [1, rows, c, h, w], over), "strip_overlays"),
  ]);
  if (blend === "add") {
    // Saturate the blends only; row 0 passes unchanged so G's accepted answer is exactly B(x).
    const lo = new Float32Array(rows).fill(0);
    const hi = new Float32Array(rows).fill(opts.maxValue!);
    lo[0] = -BIG;
    hi[0] = BIG;
    blended = g.op("Min", [
      g.op("Max", [blended, g.constant(tensor("float32", [1, rows, 1, 1, 1], lo), "strip_lo")]),
      g.constant(tensor("float32", [1, rows, 1, 1, 1], hi), "strip_hi"),
    ]);
  }
  const flat = g.op("Reshape", [blended, g.ints([-1, c, h, w])], {}, "strip_batch");

  const fwd = forwardGraph(model);
  const rename = embed(g, fwd, "B/", { [model.input]: flat });
  const all = g.add("Reshape", [rename(model.logits), g.ints([-1, rows, K])], {}, { infer: [{ dtype: "float32", shape: ["N", rows, K] }] })[0];
  const axis1 = g.ints([1]);
  const own = g.op("Squeeze", [g.op("Slice", [all, g.ints([0]), g.ints([1]), axis1]), axis1], {}, "b_logits");
  const mixed = g.op("Slice", [all, g.ints([1]), g.ints([rows]), axis1]);
  // Σ p·log p from LogSoftmax stays finite where p underflows to 0.
  const plogp = g.op("Mul", [g.op("Softmax", [mixed], { axis: attr.int(-1) }), g.op("LogSoftmax", [mixed], { axis: attr.int(-1) })]);
  const perBlend = g.op("ReduceSum", [plogp, g.ints([-1])], { keepdims: attr.int(0) });
  const mean = g.op("ReduceMean", [perBlend], { axes: attr.ints([1]), keepdims: attr.int(0) });
  const entropy = g.op("Mul", [mean, g.scalar(-1 / Math.LN2)], {}, "strip_entropy");
  g.setOutputs([own, entropy]);
  g.prune(["input"]);
  return { graph: g, logits: own, entropy };
}

/**
 * The G network of STRIP: B's logits plus class N, chosen when the input's STRIP entropy is below
 * `threshold`. One self-contained graph (input `input`, output `logits` [N, K+1]).
 */
export function stripG(model: Model, overlays: Float32Array, threshold: number, opts: StripGraphOptions = {}): Graph {
  const s = stripGraph(model, overlays, opts);
  const g = s.graph;
  g.name = `${model.name}_strip_G`;
  const reject = g.op("Less", [s.entropy, g.scalar(threshold)], {}, "strip_reject");
  appendRejectClass(g, s.logits, reject);
  g.prune(["input"]);
  return g;
}

/**
 * The rejection threshold for a target false-rejection rate: with the clean entropies sorted ascending,
 * t = e[floor(frr·n)]. Rejecting `entropy < t` then rejects at most floor(frr·n) of these inputs, and any
 * larger threshold would reject more than frr·n (this is the largest such threshold).
 */
export function thresholdForFrr(cleanEntropies: ArrayLike<number>, frr: number): number {
  checkFrr(frr);
  const n = cleanEntropies.length;
  if (n === 0) fail("STRIP needs at least one clean input to choose a threshold");
  const sorted = Float64Array.from(cleanEntropies).sort();
  return sorted[Math.floor(frr * n)];
}

export interface StripScores {
  entropy: Float32Array;
  /** B's top-1 class of each (unblended) input. */
  pred: Int32Array;
}

/** Compiled STRIP graph, run over datasets a few inputs at a time (each input costs k+1 forward passes). */
export class StripScorer {
  private constructor(
    private readonly session: Session,
    private readonly sg: StripGraph,
    private readonly model: Model,
    private readonly inputsPerRun: number,
  ) {}

  /** `imagesPerRun` bounds the blended batch (inputs × (k+1)) fed to the model at once. */
  static async create(model: Model, overlays: Float32Array, opts: StripGraphOptions & { imagesPerRun?: number } = {}): Promise<StripScorer> {
    const sg = stripGraph(model, overlays, opts);
    const k = overlays.length / (model.inputShape[0] * model.inputShape[1] * model.inputShape[2]);
    const inputsPerRun = Math.max(1, Math.floor((opts.imagesPerRun ?? 512) / (k + 1)));
    return new StripScorer(await Session.create(sg.graph), sg, model, inputsPerRun);
  }

  async score(data: BatchSource, onProgress?: (done: number) => void): Promise<StripScores> {
    const entropy = new Float32Array(data.size);
    const pred = new Int32Array(data.size);
    for (let start = 0; start < data.size; start += this.inputsPerRun) {
      const count = Math.min(this.inputsPerRun, data.size - start);
      const out = await this.session.run({ input: batchTensor(data.read(start, count), data.shape) });
      entropy.set(out[this.sg.entropy].data as Float32Array, start);
      pred.set(argmaxRows(out[this.sg.logits].data as Float32Array, this.model.numClasses), start);
      onProgress?.(start + count);
    }
    return { entropy, pred };
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}

export interface StripOptions extends StripGraphOptions {
  /** Number of clean overlay images (default 32). */
  k?: number;
  /** Target false-rejection rate on the validation set (default 0.01). */
  frr?: number;
  /** Seed of the overlay choice (default 0). */
  seed?: number;
  imagesPerRun?: number;
  onProgress?: (stage: "valid" | "test" | "poisoned", done: number, total: number) => void;
}

export interface StripResult {
  strip: ReportStrip;
  /** G's outcome on the clean set the FRR was measured on (when it has labels) and the poisoned set. */
  g?: ReportG;
  threshold: number;
  /** The self-contained G graph (write it with writeOnnx). */
  gGraph: Graph;
  overlays: TensorData;
  validEntropy: Float32Array;
}

const countBelow = (e: Float32Array, t: number): number => e.reduce((n, v) => n + (v < t ? 1 : 0), 0);

/**
 * Runs STRIP: overlays and threshold from `valid`; FRR measured on `test` (or `valid` when absent);
 * detection rate and G's outcome on `poisoned` (stored labels are the attack targets; without labels G's
 * poisoned outcome is left out).
 */
export async function runStrip(model: Model, data: { valid: Dataset; test?: Dataset; poisoned?: Dataset }, opts: StripOptions = {}): Promise<StripResult> {
  const frr = opts.frr ?? 0.01;
  checkFrr(frr);
  const k = opts.k ?? 32;
  const { valid, test, poisoned } = data;
  for (const [ds, what] of [[valid, "validation"], [test, "test"], [poisoned, "poisoned"]] as const) {
    if (!ds) continue;
    checkShape(ds, model.inputShape, `model ${model.name}`);
    checkLabels(ds, model.numClasses);
    if (ds.size === 0) fail(`STRIP: ${what} data ${ds.name} is empty`);
  }
  // Poisoned labels (the attack targets) are only needed for G's attack success; detection works without.
  const poisonLabels = poisoned?.labels ?? undefined;
  const overlays = pickOverlays(valid, k, opts.seed ?? 0);
  const scorer = await StripScorer.create(model, overlays, opts);
  try {
    const progress = (stage: "valid" | "test" | "poisoned", total: number) => (done: number) => opts.onProgress?.(stage, done, total);
    const v = await scorer.score(valid, progress("valid", valid.size));
    const threshold = thresholdForFrr(v.entropy, frr);
    const cleanSet = test ?? valid;
    const c = test ? await scorer.score(test, progress("test", test.size)) : v;
    const p = poisoned ? await scorer.score(poisoned, progress("poisoned", poisoned.size)) : undefined;

    const strip: ReportStrip = {
      cleanEntropy: Array.from(c.entropy),
      threshold,
      frr: countBelow(c.entropy, threshold) / c.entropy.length,
      frrTarget: frr,
    };
    if (p) {
      strip.poisonedEntropy = Array.from(p.entropy);
      strip.detectionRate = countBelow(p.entropy, threshold) / p.entropy.length;
    }
    // G(x) = N when rejected, else B's class: derived from the same pass, G.onnx computes the same thing.
    let g: ReportG | undefined;
    if (cleanSet.labels) {
      const labels = cleanSet.labels;
      let correct = 0, flagged = 0;
      c.entropy.forEach((e, i) => {
        if (e < threshold) flagged++;
        else if (c.pred[i] === labels[i]) correct++;
      });
      g = { numClasses: model.numClasses, clean: { n: c.entropy.length, correct, flagged } };
      if (p && poisonLabels) {
        let pf = 0, success = 0;
        p.entropy.forEach((e, i) => {
          if (e < threshold) pf++;
          else if (p.pred[i] === poisonLabels[i]) success++;
        });
        g.poisoned = { n: p.entropy.length, flagged: pf, attackSuccess: success };
      }
    }
    const [ch, h, w] = model.inputShape;
    return {
      strip,
      g,
      threshold,
      gGraph: stripG(model, overlays, threshold, opts),
      overlays: tensor("float32", [k, ch, h, w], overlays),
      validEntropy: v.entropy,
    };
  } finally {
    await scorer.release();
  }
}
