// G with a false-alarm rate the user sets. Several input-level signals, each a score where higher means
// "looks more backdoored", are combined and calibrated on HELD-OUT clean data:
//   - disagreement: p_B(ŷ) − p_B′(ŷ), ŷ = B's top-1 (how much probability the repair took from B's answer);
//   - strip: −(STRIP entropy) (a trigger keeps blends of the input on one class);
//   - trigger: −(mean |x − pattern| under the mask) of the closest reversed trigger;
//   - confidence: −max log p_B′ (the repaired network is unsure);
//   - mahalanobis: squared Mahalanobis distance of B's penultimate features to the clean Gaussian of B's
//     predicted class, shared shrunk covariance (g-mahalanobis.ts; fitted on the repair's part of the clean
//     data, never on the calibration part, so the held-out scores stay exchangeable with fresh clean ones);
//   - mahalanobis-gap: that distance (on the features before the ReLU) minus the distance to the closest class.
// Every available signal is used unless `selectSignals` asks for a subset chosen on reversed-trigger proxies
// (g-select.ts; measured worse on the zoo).
// Combination (split conformal, calibrated as a whole). The held-out clean inputs are split in two halves,
// alternately (the held-out part is already a random draw). The first half, the reference R, turns each signal
// into a continuous rank: f_j(s) = the position of s among R's sorted scores, interpolated linearly between
// neighbours and extended above R's maximum by the mean gap of R's top 5% (so that inputs above every reference
// score still differ). The combined statistic is c(x) = max_j f_j(s_j(x)) (the most extreme signal). Given R,
// c is a fixed function, so on the second half C its values are exchangeable with a fresh clean input's, and
// flagging c(x) > τ, τ the order statistic of C's values that leaves the allowed number m of them above it (see
// Guarantee), is exact split conformal (Vovk et al. 2005; Lei et al. 2018), whatever the signals' correlation.
// Why not leave-one-out ranks over all held-out inputs (this file's rule until 2026-12-03): ranks there are
// integers, and with J signals about J inputs share each top rank, so τ moved in steps of J inputs and, with the
// +1 margin leave-one-out needs, G flagged only inputs above the held-out maximum of some signal: 0.10–0.32% false
// alarms on the zoo at a 1% target, detection lost for it (README, G section).
// ExternalReference: the reference R need not come from the held-out data at all. The guarantee rests on the
// calibration inputs being exchangeable with fresh clean inputs given c, and c is fixed by any R drawn apart
// from them. `repair --defense auto` has such images: its selection split, which no candidate trains on (they
// only choose among the candidates). Ranked against those, all held-out inputs set τ: twice the calibration
// inputs, so τ sits at a finer order statistic (m = 7 instead of 2 of the 1,175 held-out images at 1% and 90%
// confidence) and G flags closer to the rate asked for.
// c(x) > τ ⟺ some s_j(x) > t_j with t_j = f_j⁻¹(τ) (each f_j is increasing), so the ONNX G only compares J
// scores with J thresholds: the scores come from one graph, and the thresholds are float32, so the JS rule and G
// decide on the same numbers.
import { fail, UserError } from "../errors.js";
import { attr, Graph, tensor } from "../graph/ir.js";
import { pickRows, type Dataset } from "../io/dataset.js";
import { argmaxRows, batchTensor, type BatchSource } from "../model/forward.js";
import type { Model } from "../model/model.js";
import { cacheBatch, largestActivation } from "../runtime/cache-batch.js";
import { Session } from "../runtime/session.js";
import { shuffled } from "../train/trainer.js";
import { mulberry32 } from "../util/random.js";
import { duplicateDownstream } from "../graph/transforms.js";
import { appendRejectClass, embed } from "./g-model.js";
import { describeGaussians, extractFeatureLayers, FEATURE_LAYERS, featureValue, fitClassGaussians, mahalanobisGapNodes, mahalanobisNodes, mahalanobisReport, width, type ClassGaussians, type FeatureLayer } from "./g-mahalanobis.js";
import { chooseSignals as chooseSignalSubset, judgeableSignals, MIN_PROXIES, proxyImages, successfulProxies, type ProxyTrigger, type SignalChoice } from "./g-select.js";
import { pickOverlays, stripGraph, type StripGraphOptions } from "./strip.js";
import { countByLabel } from "../eval/evaluate.js";
import type { ReportG, ReportGCalibration, ReportRate } from "../report/types.js";
import type { DefenseData, DefenseOutcome } from "./defense.js";

export const SIGNALS = ["disagreement", "strip", "trigger", "confidence", "mahalanobis", "mahalanobis-gap"] as const;
export type SignalName = (typeof SIGNALS)[number];

/**
 * The disagreement signal of one input from B's and B′'s logits (the graph computes the same): p_B(ŷ) − p_B′(ŷ),
 * ŷ = B's top-1. It used to be the log-ratio log p_B(ŷ) − log p_B′(ŷ); that is unbounded where B′ all but rules out
 * B's answer, and a repair does that on some clean inputs too (wanet, unlearning: the clean held-out maximum was
 * 12.8 nats), so its 1% tail was set by a few clean outliers. The difference of probabilities is bounded by 1 and
 * large only where B was sure AND B′ took that certainty away, which is what a trigger B′ no longer obeys looks
 * like. Measured on four repaired zoo models (README, G section): detection alone at 1% false alarms
 * rose on every one (wanet 82.5% → 91.7%).
 */
export function disagreementScore(bLogits: ArrayLike<number>, rLogits: ArrayLike<number>): number {
  const k = bLogits.length;
  let top = 0;
  for (let c = 1; c < k; c++) if (bLogits[c]! > bLogits[top]!) top = c;
  const p = (l: ArrayLike<number>, c: number): number => {
    let mx = -Infinity;
    for (let i = 0; i < k; i++) mx = Math.max(mx, l[i]!);
    let z = 0;
    for (let i = 0; i < k; i++) z += Math.exp(l[i]! - mx);
    return Math.exp(l[c]! - mx) / z;
  };
  return p(bLogits, top) - p(rLogits, top);
}

/** A repaired network: a full model, or B with channels of one of its values masked (pruning: shared trunk). */
export type Repaired = Model | { value: string; mask: Float32Array };

export interface GParts {
  b: Model;
  repaired?: Repaired;
  /** STRIP overlays [k, C, H, W]: clean images that are NOT in the calibration split. */
  overlays?: Float32Array;
  strip?: StripGraphOptions;
  /** Reversed triggers (mask [H, W], pattern [C, H, W]). */
  triggers?: { mask: Float32Array; pattern: Float32Array }[];
  /** Clean class-conditional Gaussians of B's features (g-mahalanobis.ts), fitted on data outside the calibration split. */
  gaussians?: ClassGaussians;
  /** Gaussians of the class-gap signal (B's features, usually before the activation: g-mahalanobis.ts). */
  gapGaussians?: ClassGaussians;
  /** Whose features the Gaussians describe: B (default) or the repaired network (a full model only). */
  gaussiansOf?: "b" | "repaired";
  /** Signals to use (default: every one the parts allow). */
  signals?: SignalName[];
}

export interface ScoreGraph {
  graph: Graph;
  /**
   * G's answer where it does not reject, [N, K]: the repaired network's logits when there is one, else B's. With
   * B's answer, a poisoned input that stays under every threshold got the attacker's label although B′ no longer
   * gives it (wanet, seed 1: G answered the target on 40% of the poisoned inputs, B′ on 8%).
   */
  logits: string;
  signals: SignalName[];
  /** One float32 [N] value per signal, in `signals` order. */
  scores: string[];
}

const isModel = (r: Repaired): r is Model => (r as Model).graph !== undefined;

/** The signals a set of parts can compute. */
export function availableSignals(p: Omit<GParts, "signals">): SignalName[] {
  const out: SignalName[] = [];
  if (p.repaired) out.push("disagreement");
  if (p.overlays && p.overlays.length > 0) out.push("strip");
  if (p.triggers && p.triggers.length > 0) out.push("trigger");
  if (p.repaired) out.push("confidence");
  if (p.gaussians && (p.gaussiansOf !== "repaired" || (p.repaired && isModel(p.repaired)))) out.push("mahalanobis");
  if (p.gapGaussians) out.push("mahalanobis-gap");
  return out;
}

function chooseSignals(p: GParts): SignalName[] {
  const can = availableSignals(p);
  const want = p.signals ?? can;
  if (want.length === 0) fail("G calibration needs at least one signal (a repaired network, STRIP overlays or a reversed trigger)");
  for (const s of want) {
    if (!SIGNALS.includes(s)) fail(`unknown G signal "${s}" (known: ${SIGNALS.join(", ")})`);
    if (!can.includes(s)) fail(`G signal "${s}" is not available for this repair (available: ${can.join(", ") || "none"})`);
  }
  return SIGNALS.filter((s) => want.includes(s));
}

/** One graph: input `input` → B's logits and every chosen signal's score. */
export function scoreGraph(p: GParts): ScoreGraph {
  const signals = chooseSignals(p);
  const { b } = p;
  const [C, H, W] = b.inputShape;
  const g = new Graph(`${b.name}_G`);
  g.addInput("input", "float32", ["N", C, H, W]);
  const rb = embed(g, b.graph, "B/", { [b.input]: "input" });
  const bl = rb(b.logits);
  const out: Partial<Record<SignalName, string>> = {};
  const axis1 = g.ints([1]);
  let rr: ((v: string) => string) | undefined;
  let rl: string | undefined;
  if (p.repaired) {
    if (isModel(p.repaired)) {
      rr = embed(g, p.repaired.graph, "R/", { [p.repaired.input]: "input" });
      rl = rr(p.repaired.logits);
    } else {
      const v = rb(p.repaired.value);
      const rank = g.shape(v).length;
      const m = p.repaired.mask;
      const view = g.op("Reshape", [g.constant(tensor("float32", [m.length], Float32Array.from(m)), "pruning_mask"), g.ints([1, -1, ...new Array(Math.max(0, rank - 2)).fill(1)])]);
      rl = duplicateDownstream(g, v, g.op("Mul", [v, view], {}, g.fresh(`${v}/pruned`)), "P/")(bl);
    }
    const lsR = g.op("LogSoftmax", [rl], { axis: attr.int(1) });
    const top = g.op("ArgMax", [bl], { axis: attr.int(1), keepdims: attr.int(1) });
    const pick = (v: string) => g.op("Squeeze", [g.op("GatherElements", [v, top], { axis: attr.int(1) }), axis1]);
    // Probabilities, not log-probabilities: see disagreementScore.
    const prob = (l: string) => g.op("Softmax", [l], { axis: attr.int(1) });
    out.disagreement = g.op("Sub", [pick(prob(bl)), pick(prob(rl))], {}, "g_disagreement");
    out.confidence = g.op("Neg", [g.op("ReduceMax", [lsR], { axes: attr.ints([1]), keepdims: attr.int(0) })], {}, "g_confidence");
  }
  if (signals.includes("strip")) {
    const s = stripGraph(b, p.overlays!, p.strip);
    const rs = embed(g, s.graph, "S/", { input: "input" });
    out.strip = g.op("Neg", [rs(s.entropy)], {}, "g_strip");
  }
  if (signals.includes("trigger")) {
    const ts = p.triggers!;
    const hw = H * W;
    const masks = new Float32Array(ts.length * C * hw), pats = new Float32Array(ts.length * C * hw), norm = new Float32Array(ts.length);
    ts.forEach((t, i) => {
      if (t.mask.length !== hw || t.pattern.length !== C * hw) throw new Error(`scoreGraph: trigger ${i} does not match ${C}x${H}x${W}`);
      const sum = t.mask.reduce((a, v) => a + v, 0);
      norm[i] = sum > 0 ? 1 / (C * sum) : 0;
      for (let c = 0; c < C; c++) for (let q = 0; q < hw; q++) {
        masks[(i * C + c) * hw + q] = t.mask[q]!;
        pats[(i * C + c) * hw + q] = t.pattern[c * hw + q]!;
      }
    });
    const T = ts.length;
    const diff = g.op("Abs", [g.op("Sub", [g.op("Unsqueeze", ["input", axis1]), g.constant(tensor("float32", [1, T, C, H, W], pats), "g_trigger_patterns")])]);
    const weighted = g.op("Mul", [diff, g.constant(tensor("float32", [1, T, C, H, W], masks), "g_trigger_masks")]);
    const dist = g.op("Mul", [g.op("ReduceSum", [weighted, g.ints([2, 3, 4])], { keepdims: attr.int(0) }), g.constant(tensor("float32", [1, T], norm), "g_trigger_norm")]);
    out.trigger = g.op("Neg", [g.op("ReduceMin", [dist], { axes: attr.ints([1]), keepdims: attr.int(0) })], {}, "g_trigger");
  }
  if (signals.includes("mahalanobis")) {
    const gs = p.gaussians!;
    // The class is always B's top-1: the class the clean cloud was grouped by.
    const f = p.gaussiansOf === "repaired" && rr && isModel(p.repaired!) ? featureValue(g, p.repaired, gs.layer, rr) : featureValue(g, b, gs.layer, rb);
    const d = width(g, f);
    if (d !== gs.dim) throw new Error(`scoreGraph: the Mahalanobis model has ${gs.dim} features, the network ${d}`);
    out.mahalanobis = mahalanobisNodes(g, gs, f, bl);
  }
  if (signals.includes("mahalanobis-gap")) {
    const gs = p.gapGaussians!;
    const f = featureValue(g, b, gs.layer, rb);
    if (width(g, f) !== gs.dim) throw new Error(`scoreGraph: the class-gap model has ${gs.dim} features, the network ${width(g, f)}`);
    out["mahalanobis-gap"] = mahalanobisGapNodes(g, gs, f, bl);
  }
  const scores = signals.map((s) => out[s]!);
  const answer = rl ?? bl;
  g.setOutputs([answer, ...scores]);
  g.prune(["input"]);
  return { graph: g, logits: answer, signals, scores };
}

/** Scores of a data set: B's top-1 and one Float32Array per signal. */
export interface GScores {
  pred: Int32Array;
  scores: Float32Array[];
}

/** The compiled score graph, run over data sets in batches. */
export class GScorer {
  private constructor(private readonly session: Session, readonly sg: ScoreGraph, private readonly numClasses: number, private readonly batch: number) {}

  static async create(p: GParts, opts: { batchSize?: number } = {}): Promise<GScorer> {
    const sg = scoreGraph(p);
    const k = sg.signals.includes("strip") ? p.overlays!.length / (p.b.inputShape[0] * p.b.inputShape[1] * p.b.inputShape[2]) : 0;
    // A STRIP input costs k+1 forward passes: at most 512 blended images a call, fewer when B's largest
    // activation would outgrow the cache (cache-batch.ts; the scores do not depend on the batch).
    const batch = opts.batchSize ?? cacheBatch(largestActivation(p.b.graph), k + 1, Math.max(1, Math.floor(512 / (k + 1))));
    return new GScorer(await Session.create(sg.graph), sg, p.b.numClasses, batch);
  }

  async score(data: BatchSource): Promise<GScores> {
    const pred = new Int32Array(data.size);
    const scores = this.sg.scores.map(() => new Float32Array(data.size));
    for (let start = 0; start < data.size; start += this.batch) {
      const count = Math.min(this.batch, data.size - start);
      const out = await this.session.run({ input: batchTensor(data.read(start, count), data.shape) });
      pred.set(argmaxRows(out[this.sg.logits].data as Float32Array, this.numClasses), start);
      this.sg.scores.forEach((v, j) => scores[j].set(out[v].data as Float32Array, start));
    }
    return { pred, scores };
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}

/** Checks a false-alarm rate: strictly between 0 and 1. */
export function checkFpr(fpr: number): void {
  if (!Number.isFinite(fpr) || fpr <= 0 || fpr >= 1) fail(`--fpr must be a false-alarm rate between 0 and 1 (exclusive), got ${fpr}`);
}

export interface GCalibration {
  fpr: number;
  guarantee: Guarantee;
  signals: SignalName[];
  /** Flag when score_j > thresholds[j] for any j (Infinity: that signal never flags). */
  thresholds: number[];
  /** Held-out clean inputs: the reference half and the calibration half. */
  n: number;
  /** Of them, the reference half the signals are ranked against. */
  reference: number;
  /** The conformal threshold on c(x) = max_j f_j(s_j(x)) (continuous ranks in the reference half). */
  tau: number;
  /** Held-out inputs of both halves the calibrated rule flags (at most m of the calibration half). */
  heldOutFlagged: number;
  /**
   * The reference came from outside the held-out data (ExternalReference): all n held-out inputs set τ and
   * `reference` counts the outside images.
   */
  referenceOutside?: boolean;
}

/**
 * How the conformal threshold is set: how many (m) of the n held-out statistics may lie above τ.
 * "marginal": m = n − ⌈(n + 1)(1 − fpr)⌉, the false-alarm rate is at most fpr in expectation over the draw of
 * the held-out data. {delta}: training-conditional (PAC, Vovk 2012): the rate of a threshold with m of n
 * exchangeable statistics above it is the (m+1)-th smallest of n uniforms, which exceeds fpr with probability
 * P(Binomial(n, fpr) ≤ m); the largest m with that ≤ delta is used, so the rate stays ≤ fpr with probability
 * about 1 − delta (exact for one signal; for several, the leave-one-out statistics make it approximate, and
 * the +1 margin of the rule errs on the safe side).
 */
export type Guarantee = "marginal" | { delta: number };

export const DEFAULT_GUARANTEE: Guarantee = { delta: 0.1 };

/** How many of the n held-out statistics may lie above τ (m), or −1 when n is too small for the guarantee. */
export function allowedAbove(n: number, fpr: number, guarantee: Guarantee): number {
  if (guarantee === "marginal") return n - Math.ceil((n + 1) * (1 - fpr) - 1e-9);
  let m = -1;
  while (m + 1 < n && binomialCdf(m + 1, n, fpr) <= guarantee.delta) m++;
  return m;
}

/** Smallest n ≥ 1 with ok(n), for ok monotone in n (doubling, then bisection). */
function smallestSize(ok: (n: number) => boolean): number {
  let hi = 1;
  while (!ok(hi)) hi *= 2;
  let lo = Math.floor(hi / 2);
  while (lo + 1 < hi) {
    const mid = (lo + hi) >> 1;
    if (ok(mid)) hi = mid;
    else lo = mid;
  }
  return hi;
}

/** Smallest held-out size the rule can calibrate at all: a reference half of two, and m ≥ 0 in the other half. */
export function minCalibrationSize(fpr: number, guarantee: Guarantee = DEFAULT_GUARANTEE): number {
  // Checked here, where it matters: with delta = 0 no size is enough and the search below would never end.
  checkFpr(fpr);
  checkGuarantee(guarantee);
  return smallestSize((n) => referenceRows(n) >= 2 && allowedAbove(n - referenceRows(n), fpr, guarantee) >= 0);
}

/**
 * The held-out size `repair` reserves (splitForCalibration): the size at which `signals` + 1 of the held-out
 * inputs may lie above the threshold. It is what the earlier leave-one-out rank rule needed, kept so that the
 * repairs see the same data as before; for the split rule it is more than the minimum, and the larger
 * calibration half lets the threshold sit at a finer order statistic (m = 2 at 1% and 90% confidence with six
 * signals: 1,175 held-out images, 587 of them in the calibration half).
 */
export function reservedCalibrationSize(fpr: number, guarantee: Guarantee = DEFAULT_GUARANTEE, signals: number = SIGNALS.length): number {
  return Math.max(minCalibrationSize(fpr, guarantee), smallestSize((n) => allowedAbove(n, fpr, guarantee) >= signals + 1));
}

function checkGuarantee(g: Guarantee): void {
  if (g !== "marginal" && !(g.delta > 0 && g.delta < 1)) fail(`the false-alarm guarantee's delta must be between 0 and 1 (exclusive), got ${g.delta}`);
}

/**
 * A signal's continuous rank against the sorted reference scores (see the file comment): k at the k-th smallest
 * (0-based; the first of equal ones), linear in between, 0 at or below the smallest, and above the largest one
 * rank per `tail` (the mean gap of the top 5%; a positive floor when those are all equal).
 */
export class ReferenceRank {
  private readonly tail: number;
  constructor(private readonly sorted: Float64Array) {
    const n = sorted.length;
    if (n < 2) throw new Error("ReferenceRank: needs at least two reference scores");
    const q = Math.max(1, Math.ceil(0.05 * n));
    const top = sorted[n - 1]!;
    const gap = (top - sorted[n - 1 - Math.min(q, n - 1)]!) / Math.min(q, n - 1);
    this.tail = gap > 0 ? gap : Math.max(Math.abs(top), 1) * 1e-6;
  }

  rank(s: number): number {
    const a = this.sorted, n = a.length;
    if (s > a[n - 1]!) return n - 1 + (s - a[n - 1]!) / this.tail;
    if (s <= a[0]!) return 0;
    // The last k with a[k] < s (a[0] < s <= a[n−1], so 0 <= k < n−1). A value shared by several reference scores
    // ranks at the first of them: a signal that is constant on clean data (disagreement when B′ = B) ranks 0
    // there and never crowds the others out of the maximum.
    let lo = 0, hi = n - 1;
    while (hi - lo > 1) {
      const mid = (lo + hi) >> 1;
      if (a[mid]! < s) lo = mid;
      else hi = mid;
    }
    return lo + (s - a[lo]!) / (a[lo + 1]! - a[lo]!);
  }

  /** The largest score whose rank is at most t (rank is continuous and non-decreasing): the threshold of rank t. */
  inverse(t: number): number {
    const a = this.sorted, n = a.length;
    if (t >= n - 1) return a[n - 1]! + (t - (n - 1)) * this.tail;
    if (t < 0) return -Infinity;
    const k = Math.floor(t);
    // Equal neighbours make rank jump over [k, k+1): the threshold is then their common value.
    return a[k + 1]! > a[k]! ? a[k]! + (t - k) * (a[k + 1]! - a[k]!) : a[k]!;
  }
}

/** The smallest float32 at or above x, so that `score > threshold` in float32 flags no more than in float64. */
function float32AtOrAbove(x: number): number {
  if (!Number.isFinite(x)) return x;
  const f = Math.fround(x);
  if (f >= x) return f;
  const buf = new Float32Array([f]);
  const bits = new Int32Array(buf.buffer);
  bits[0] = f >= 0 ? bits[0]! + 1 : bits[0]! - 1;
  return buf[0]!;
}

/** The split of n held-out inputs: even rows are the reference half, odd rows the calibration half. */
export const referenceRows = (n: number): number => Math.ceil(n / 2);

/** Calibrates the combined rule from the held-out clean scores (one Float32Array per signal). See the file comment. */
export function calibrate(scores: Float32Array[], fpr: number, signals: SignalName[], guarantee: Guarantee = DEFAULT_GUARANTEE, reference?: Float32Array[]): GCalibration {
  checkFpr(fpr);
  checkGuarantee(guarantee);
  const J = signals.length;
  if (scores.length !== J) throw new Error(`calibrate: ${J} signals but ${scores.length} score arrays`);
  if (reference && reference.length !== J) throw new Error(`calibrate: ${J} signals but ${reference.length} reference score arrays`);
  const n = scores[0]?.length ?? 0;
  // The reference half is the even rows, the calibration half the odd ones; with an outside reference every
  // held-out input is in the calibration half (see ExternalReference).
  const every = (s: Float32Array, from: number) => Float32Array.from({ length: Math.ceil((s.length - from) / 2) }, (_, i) => s[2 * i + from]!);
  const [refs, cals] = reference ? [reference, scores] : [scores.map((s) => every(s, 0)), scores.map((s) => every(s, 1))];
  const nRef = refs[0]?.length ?? 0, nCal = cals[0]?.length ?? 0;
  const m = allowedAbove(nCal, fpr, guarantee);
  if (m < 0 || nRef < 2) fail(`a G false-alarm rate of ${fpr} needs at least ${minCalibrationSize(fpr, guarantee)} held-out clean images to calibrate on; got ${n}`);
  for (const s of [...scores, ...refs]) for (const v of s) if (!Number.isFinite(v)) fail("G calibration: a signal score is not finite (NaN or infinite model output on clean data)");
  const ranks = refs.map((s) => new ReferenceRank(Float64Array.from(s).sort()));
  const c = new Float64Array(nCal);
  for (let i = 0; i < nCal; i++) {
    let r = -Infinity;
    for (let j = 0; j < J; j++) r = Math.max(r, ranks[j]!.rank(cals[j]![i]!));
    c[i] = r;
  }
  const tau = Float64Array.from(c).sort()[nCal - m - 1]!;
  const thresholds = ranks.map((r) => float32AtOrAbove(r.inverse(tau)));
  const cal: GCalibration = { fpr, guarantee, signals, thresholds, n, reference: nRef, tau, heldOutFlagged: 0, ...(reference ? { referenceOutside: true } : {}) };
  cal.heldOutFlagged = countFlags(decide(scores, thresholds));
  return cal;
}

/** The calibrated rule in JS: 1 where any score exceeds its threshold. */
export function decide(scores: Float32Array[], thresholds: number[]): Uint8Array {
  const n = scores[0]?.length ?? 0;
  const out = new Uint8Array(n);
  scores.forEach((s, j) => {
    const t = thresholds[j]!;
    for (let i = 0; i < n; i++) if (s[i]! > t) out[i] = 1;
  });
  return out;
}

const countFlags = (f: Uint8Array): number => f.reduce((a, v) => a + v, 0);

/** G as one graph: the score graph plus class N = "any score above its threshold". */
export function calibratedG(p: GParts, cal: GCalibration): Graph {
  const sg = scoreGraph({ ...p, signals: cal.signals });
  const g = sg.graph;
  let reject = "";
  sg.scores.forEach((s, j) => {
    // Float32 thresholds: the scores are float32, so the comparison is the same as in decide().
    const over = g.op("Greater", [s, g.constant(tensor("float32", [], Float32Array.of(cal.thresholds[j]!)), `g_threshold_${cal.signals[j]}`)]);
    reject = reject ? g.op("Or", [reject, over]) : over;
  });
  appendRejectClass(g, sg.logits, reject);
  g.prune(["input"]);
  return g;
}

// --- binomial confidence interval ---------------------------------------------------------------------

function logGamma(x: number): number {
  // Lanczos (g = 7, n = 9): about 15 significant digits for x > 0.
  const c = [0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313, -176.61502916214059, 12.507343278686905, -0.13857109526572012, 9.9843695780195716e-6, 1.5056327351493116e-7];
  if (x < 0.5) return Math.log(Math.PI / Math.sin(Math.PI * x)) - logGamma(1 - x);
  x -= 1;
  let a = c[0]!;
  const t = x + 7.5;
  for (let i = 1; i < 9; i++) a += c[i]! / (x + i);
  return 0.5 * Math.log(2 * Math.PI) + (x + 0.5) * Math.log(t) - t + Math.log(a);
}

/** P(X ≤ k) for X ~ Binomial(n, p). */
export function binomialCdf(k: number, n: number, p: number): number {
  if (k < 0) return 0;
  if (k >= n) return 1;
  if (p <= 0) return 1;
  if (p >= 1) return 0;
  const lc = logGamma(n + 1);
  let s = 0;
  for (let i = 0; i <= k; i++) s += Math.exp(lc - logGamma(i + 1) - logGamma(n - i + 1) + i * Math.log(p) + (n - i) * Math.log1p(-p));
  return Math.min(1, s);
}

/** Exact (Clopper–Pearson) two-sided interval for k successes in n trials, by bisection on the binomial tails. */
export function clopperPearson(k: number, n: number, confidence = 0.95): [number, number] {
  if (!Number.isInteger(n) || n < 1 || !Number.isInteger(k) || k < 0 || k > n) throw new Error(`clopperPearson: bad counts ${k}/${n}`);
  const a = (1 - confidence) / 2;
  // Both tails below are monotone in p: bisect for the p where they equal a.
  const solve = (f: (p: number) => number, increasing: boolean): number => {
    let lo = 0, hi = 1;
    for (let it = 0; it < 60; it++) {
      const mid = (lo + hi) / 2;
      if (f(mid) < a === increasing) lo = mid;
      else hi = mid;
    }
    return (lo + hi) / 2;
  };
  const lower = k === 0 ? 0 : solve((p) => 1 - binomialCdf(k - 1, n, p), true); // P(X ≥ k; p) = a
  const upper = k === n ? 1 : solve((p) => binomialCdf(k, n, p), false); // P(X ≤ k; p) = a
  return [lower, upper];
}

/** A rate with its exact 95% interval. */
export type RateWithInterval = ReportRate;

export function rateWithInterval(count: number, n: number): RateWithInterval {
  return { n, count, rate: n ? count / n : 0, ci95: n ? clopperPearson(count, n) : [0, 1] };
}

// --- the whole procedure --------------------------------------------------------------------------------

/**
 * Splits clean data into the part the repair may use (`fit`) and the held-out calibration part, by a seeded
 * shuffle. The calibration part gets `fraction` of the images, but at least reservedCalibrationSize (`signals`
 * signals, default all six) where that leaves the repair half of the data, else at least minCalibrationSize; never
 * more than half.
 */
export function splitForCalibration(data: Dataset, fpr: number, opts: { fraction?: number; seed?: number; guarantee?: Guarantee; signals?: number } = {}): { fit: Dataset; calibration: Dataset } {
  checkFpr(fpr);
  const n = data.size;
  const share = Math.round((opts.fraction ?? 0.2) * n);
  // The repair keeps at least half of the clean data: the reserved size where that allows it, else the least the
  // rule can calibrate on. The reserved size is the default guarantee's, so that a stricter confidence changes
  // G's threshold, not the data the detection and the repair see.
  const need = minCalibrationSize(fpr, opts.guarantee);
  const reserved = Math.max(share, need, reservedCalibrationSize(fpr, DEFAULT_GUARANTEE, opts.signals));
  const want = reserved <= n / 2 ? reserved : Math.max(share, need);
  if (want > n / 2) fail(`a G false-alarm rate of ${fpr} needs ${need} held-out clean images, at most half of the clean data; ${data.name} has ${n} (give more clean images, a larger --fpr, or --fpr off)`);
  const order = shuffled(n, mulberry32((opts.seed ?? 0) + 40503));
  const cal = Int32Array.from(order.slice(0, want)).sort();
  const fit = Int32Array.from(order.slice(want)).sort();
  return { fit: pickRows(data, fit, `${data.name} (repair part)`), calibration: pickRows(data, cal, `${data.name} (G calibration part)`) };
}

export interface CalibratedG {
  calibration: GCalibration;
  graph: Graph;
  scorer: GScorer;
}

/**
 * Scores the held-out clean `calibration` data and calibrates on it. The returned scorer stays open for measuring G on test data: release it.
 */
export async function calibrateG(p: GParts, calibration: BatchSource, opts: { fpr?: number; guarantee?: Guarantee; reference?: BatchSource } = {}): Promise<CalibratedG> {
  const fpr = opts.fpr ?? 0.01;
  checkFpr(fpr);
  const scorer = await GScorer.create(p);
  try {
    const s = await scorer.score(calibration);
    const ref = opts.reference ? (await scorer.score(opts.reference)).scores : undefined;
    const cal = calibrate(s.scores, fpr, scorer.sg.signals, opts.guarantee, ref);
    return { calibration: cal, graph: calibratedG(p, cal), scorer };
  } catch (e) {
    await scorer.release();
    throw e;
  }
}

/** G's outcome on a data set from its scores: flagged inputs and, with labels, inputs G answers with the label. */
export function gOutcome(s: GScores, cal: GCalibration, labels: Int32Array | null): { flagged: Uint8Array; nFlagged: number; hit: number } {
  const flagged = decide(s.scores, cal.thresholds);
  let hit = 0;
  if (labels) for (let i = 0; i < flagged.length; i++) if (!flagged[i] && s.pred[i] === labels[i]) hit++;
  return { flagged, nFlagged: countFlags(flagged), hit };
}

/** The report section of a calibrated G (the report's type). */
export type GCalibrationReport = ReportGCalibration;

/** Runs the scorer on clean test and poisoned data: the report section, and G's outcome in the usual ReportG form. */
export async function reportCalibratedG(
  scorer: GScorer,
  cal: GCalibration,
  data: { test?: Dataset; poisoned?: Dataset },
  numClasses: number,
): Promise<{ section: GCalibrationReport; g?: ReportG }> {
  const section: GCalibrationReport = {
    fprTarget: cal.fpr,
    guarantee: cal.guarantee === "marginal" ? "marginal" : { confidence: 1 - cal.guarantee.delta },
    signals: cal.signals,
    thresholds: cal.thresholds.map((t) => (Number.isFinite(t) ? t : null)),
    heldOut: { n: cal.n, flagged: cal.heldOutFlagged, reference: cal.reference, ...(cal.referenceOutside ? { referenceOutside: true } : {}) },
  };
  let g: ReportG | undefined;
  if (data.test && data.test.size > 0) {
    const o = gOutcome(await scorer.score(data.test), cal, data.test.labels);
    section.cleanTest = rateWithInterval(o.nFlagged, data.test.size);
    if (data.test.labels) g = { numClasses, clean: { n: data.test.size, correct: o.hit, flagged: o.nFlagged } };
  }
  if (data.poisoned && data.poisoned.size > 0) {
    const o = gOutcome(await scorer.score(data.poisoned), cal, data.poisoned.labels);
    section.poisoned = rateWithInterval(o.nFlagged, data.poisoned.size);
    const by = data.poisoned.labels ? countByLabel(data.poisoned.labels, (i) => o.flagged[i] === 1) : [];
    if (by.length > 1) section.poisonedByTarget = by.map((t) => ({ target: t.label, ...rateWithInterval(t.hits, t.n) }));
    if (g && data.poisoned.labels) g.poisoned = { n: data.poisoned.size, flagged: o.nFlagged, attackSuccess: o.hit };
  }
  return { section, g };
}

export interface RepairGInput {
  b: Model;
  /** The repaired network (absent for detectors such as STRIP: then B alone with the other signals). */
  repaired?: Model;
  /** Clean data the repair used: STRIP's overlays come from here, never from the calibration part. */
  fit: Dataset;
  /** Held-out clean data, never seen by the repair. */
  calibration: Dataset;
  /** Clean data outside `calibration` to rank the signals against (ExternalReference); absent: half of `calibration`. */
  reference?: Dataset;
  test?: Dataset;
  poisoned?: Dataset;
  /** Reversed triggers of the flagged labels (with the label when known), when detection ran. */
  triggers?: ProxyTrigger[];
  fpr: number;
  guarantee?: Guarantee;
  /** STRIP overlays (default 32; 0 leaves the STRIP signal out). */
  overlays?: number;
  /** Features of the Mahalanobis signal (default B's penultimate layer; false leaves the signal out). */
  mahalanobis?: FeatureLayer | false;
  /** Features of the class-gap signal (default B's penultimate layer before its ReLU; false leaves it out). */
  gap?: FeatureLayer | false;
  /**
   * Choose the signal set on reversed-trigger proxies (g-select.ts). Default false, every available signal: on
   * the zoo the chosen subsets lost up to 13 points of detection and gained at most 0.25 (g-select.ts, README).
   */
  selectSignals?: boolean;
  /** The repair was trained on the reversed triggers (its disagreement/confidence cannot be judged on them). */
  repairUsedTriggers?: boolean;
  seed?: number;
}

/** Clean images of the repair part scored for the signal selection (at most), and proxies per trigger. */
const SELECTION_CLEAN = 2000, SELECTION_PROXIES = 500;

/** The signal set for a G (g-select.ts), or undefined to keep every available signal. */
export async function selectSignalSet(parts: GParts, inp: Pick<RepairGInput, "fit" | "triggers" | "fpr" | "selectSignals" | "repairUsedTriggers" | "seed">): Promise<SignalChoice | undefined> {
  const triggers = inp.triggers ?? [];
  const avail = availableSignals(parts);
  if (inp.selectSignals !== true || triggers.length === 0 || avail.length < 2) return undefined;
  const judge = judgeableSignals(avail, inp.repairUsedTriggers ?? false);
  const clean = inp.fit.size > SELECTION_CLEAN ? pickRows(inp.fit, Int32Array.from(shuffled(inp.fit.size, mulberry32((inp.seed ?? 0) + 7)).slice(0, SELECTION_CLEAN)).sort()) : inp.fit;
  const scorer = await GScorer.create({ ...parts, signals: judge });
  try {
    const sc = await scorer.score(clean);
    const px = proxyImages(clean, triggers, SELECTION_PROXIES);
    const sp = await scorer.score(px.data);
    const ok = successfulProxies(sp.pred, px.trigger, sc.pred.subarray(0, Math.min(SELECTION_PROXIES, clean.size)), triggers);
    if (ok.length < MIN_PROXIES) return undefined;
    const proxy = sp.scores.map((s) => Float32Array.from(ok, (r) => s[r]!));
    // The marginal rule needs fewer clean images; the choice only compares subsets at one rate.
    return chooseSignalSubset(judge, sc.scores, proxy, judge, inp.fpr, "marginal");
  } catch (e) {
    // Too few repair-part images to calibrate the subsets on: keep every signal.
    if (e instanceof UserError) return undefined;
    throw e;
  } finally {
    await scorer.release();
  }
}

/**
 * The Mahalanobis signal's Gaussians, fitted on the repair's part of the clean data (never the calibration
 * part), or why the signal is left out (a network without a last linear layer).
 */
export async function gaussiansForG(b: Model, fit: BatchSource, layer: FeatureLayer | false = "penultimate"): Promise<{ gaussians?: ClassGaussians; note?: string }> {
  return (await gaussiansForLayers(b, fit, [layer]))[0]!;
}

/**
 * gaussiansForG for several layers at once: the features of every layer that B has come from one pass over
 * `fit` (the same images, so the same Gaussians as one pass per layer).
 */
export async function gaussiansForLayers(b: Model, fit: BatchSource, layers: readonly (FeatureLayer | false)[], signals: readonly string[] = []): Promise<{ gaussians?: ClassGaussians; note?: string }[]> {
  // The signal each layer feeds, for the note when it is left out.
  const leftOut = (i: number, e: Error) => ({ note: `${signals[i] ?? "Mahalanobis"} signal left out: ${e.message}` });
  const out: { gaussians?: ClassGaussians; note?: string }[] = layers.map(() => ({}));
  const ok: { i: number; layer: FeatureLayer }[] = [];
  layers.forEach((layer, i) => {
    if (layer === false) return;
    if (!FEATURE_LAYERS.includes(layer)) fail(`unknown G feature layer "${String(layer)}" (known: ${FEATURE_LAYERS.join(", ")})`);
    try {
      featureValue(b.graph.clone(), b, layer);
      ok.push({ i, layer });
    } catch (e) {
      if (!(e instanceof UserError)) throw e;
      out[i] = leftOut(i, e);
    }
  });
  if (ok.length === 0) return out;
  const { features, pred } = await extractFeatureLayers(b, ok.map((o) => o.layer), fit);
  ok.forEach(({ i, layer }, k) => {
    try {
      out[i] = { gaussians: fitClassGaussians(features[k]!.features, pred, b.numClasses, layer) };
    } catch (e) {
      if (!(e instanceof UserError)) throw e;
      out[i] = leftOut(i, e);
    }
  });
  return out;
}

/** G for one repair, calibrated to the false-alarm rate, with its report section and outcome. */
export async function calibratedGForRepair(inp: RepairGInput): Promise<{ graph: Graph; calibration: GCalibration; section: GCalibrationReport; g?: ReportG }> {
  const k = Math.min(inp.overlays ?? 32, inp.fit.size);
  const [maha, gap] = await gaussiansForLayers(inp.b, inp.fit, [inp.mahalanobis ?? "penultimate", inp.gap ?? "penultimate-preact"], ["Mahalanobis", "class-gap"]);
  const parts: GParts = {
    b: inp.b,
    repaired: inp.repaired,
    overlays: k > 0 ? pickOverlays(inp.fit, k, inp.seed ?? 0) : undefined,
    triggers: inp.triggers?.length ? inp.triggers : undefined,
    gaussians: maha.gaussians,
    gapGaussians: gap.gaussians,
  };
  const choice = await selectSignalSet(parts, inp);
  if (choice) parts.signals = choice.signals;
  const { calibration, graph, scorer } = await calibrateG(parts, inp.calibration, { fpr: inp.fpr, guarantee: inp.guarantee, reference: inp.reference });
  try {
    // Without test data, G's outcome is counted on the held-out part (the rule flags at most m of it), and
    // the report section claims no test false-alarm rate.
    const { section, g } = await reportCalibratedG(scorer, calibration, { test: inp.test ?? inp.calibration, poisoned: inp.poisoned }, inp.b.numClasses);
    if (!inp.test) delete section.cleanTest;
    if (maha.gaussians) section.mahalanobis = mahalanobisReport(maha.gaussians);
    if (gap.gaussians) section.mahalanobisGap = mahalanobisReport(gap.gaussians);
    section.notes = [...(maha.note ? [maha.note] : []), ...(gap.note && !maha.note ? [gap.note] : []), ...(choice ? [choice.reason] : [])];
    if (section.notes.length === 0) delete section.notes;
    if (choice) section.signalSelection = { proxies: choice.proxies, tried: choice.tried.map((t) => ({ signals: t.signals, proxyDetection: t.proxyDetection })) };
    return { graph, calibration, section, g };
  } finally {
    await scorer.release();
  }
}

/** Percent with two decimals, for the summary lines. */
const pct = (x: number): string => `${(100 * x).toFixed(2)}%`;

/** One line per fact about a calibrated G, for the CLI output. */
export function describeCalibratedG(c: ReportGCalibration): string[] {
  const how = c.guarantee === "marginal" ? "in expectation" : `with ${pct(c.guarantee.confidence)} confidence`;
  const split = c.heldOut.reference === undefined ? "" : c.heldOut.referenceOutside ? ` (all of them set the threshold; ranked against ${c.heldOut.reference} other clean images no repair trained on)` : ` (${c.heldOut.reference} to rank against, ${c.heldOut.n - c.heldOut.reference} to set the threshold)`;
  const lines = [`G calibrated to <= ${pct(c.fprTarget)} false alarms (${how}) on ${c.heldOut.n} held-out clean images${split}; signals ${c.signals.join(", ")}`];
  const r = (x: ReportRate) => `${pct(x.rate)} (${x.count}/${x.n}, 95% CI ${pct(x.ci95[0])}-${pct(x.ci95[1])})`;
  if (c.cleanTest) lines.push(`G false alarms on clean test data ${r(c.cleanTest)}`);
  if (c.poisoned) lines.push(`G detection on poisoned data ${r(c.poisoned)}`);
  for (const t of c.poisonedByTarget ?? []) lines.push(`  → ${t.target}: ${r(t)}`);
  if (c.mahalanobis) lines.push(describeGaussians(c.mahalanobis));
  if (c.mahalanobisGap) lines.push(`class gap: ${describeGaussians(c.mahalanobisGap)}`);
  for (const n of c.notes ?? []) lines.push(n);
  return lines;
}

/**
 * Replaces a defense outcome's G by the calibrated one: `G.onnx` (added when the defense wrote its G under
 * another name, e.g. prune's G_X.onnx), `gRates`, the report section and the summary lines. `data.clean` is the
 * part the defense ran on; `calibration` the held-out part.
 */
export async function calibrateOutcomeG(
  outcome: DefenseOutcome,
  model: Model,
  data: DefenseData,
  calibration: Dataset,
  opts: { fpr: number; triggers?: ProxyTrigger[]; guarantee?: Guarantee; repairUsedTriggers?: boolean; reference?: Dataset },
): Promise<void> {
  if (outcome.notApplied) return;
  const r = await calibratedGForRepair({ b: model, repaired: outcome.repaired, fit: data.clean, calibration, reference: opts.reference, test: data.test, poisoned: data.poisoned, triggers: opts.triggers, fpr: opts.fpr, guarantee: opts.guarantee, repairUsedTriggers: opts.repairUsedTriggers });
  const doc = `calibrated G of ${model.name}: class ${model.numClasses} = input judged backdoored (signals ${r.section.signals.join(", ")}; false-alarm target ${opts.fpr})`;
  const i = outcome.artifacts.findIndex((a) => a.kind === "graph" && a.file === "G.onnx");
  const art = { kind: "graph" as const, file: "G.onnx", graph: r.graph, doc };
  if (i >= 0) outcome.artifacts[i] = { ...art, onWritten: outcome.artifacts[i]!.onWritten };
  else outcome.artifacts.push(art);
  outcome.g = r.graph;
  if (r.g) outcome.gRates = r.g;
  outcome.sections.gCalibration = r.section;
  // The defense's own summary line of its (uncalibrated, now replaced) G keeps its numbers but says so.
  outcome.lines = outcome.lines.map((l) => (/^G\s/.test(l) ? l.replace(/^G\s+/, "G (defense's own, replaced) ") : l));
  outcome.lines.push(...describeCalibratedG(r.section), ...describeGAnswers(r.g));
}

/** What G answers: its clean accuracy (a rejected clean input counts as wrong) and, with poisoned data, the attack's success through it. */
export function describeGAnswers(g: ReportG | undefined): string[] {
  if (!g) return [];
  const lines = [`G answers correctly on ${pct(g.clean.correct / g.clean.n)} of the clean test data (rejections count as wrong)`];
  if (g.poisoned?.attackSuccess !== undefined) lines.push(`G answers the attacker's target on ${pct(g.poisoned.attackSuccess / g.poisoned.n)} of the poisoned data (${g.poisoned.attackSuccess}/${g.poisoned.n}; the rest rejected or answered otherwise)`);
  return lines;
}
