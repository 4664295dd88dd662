// G with a false-alarm rate the user sets. Several input-level signals, each a score where higher means
// "looks more backdoored", are combined and calibrated on HELD-OUT clean data:
//   - disagreement: log p_B(ŷ) − log p_B′(ŷ), ŷ = B's top-1 (how much the repair took from B's answer);
//   - strip: −(STRIP entropy) (a trigger keeps blends of the input on one class);
//   - trigger: −(mean |x − pattern| under the mask) of the closest reversed trigger;
//   - confidence: −max log p_B′ (the repaired network is unsure).
// Combination (min-p / max-rank, calibrated as a whole): the held-out set is split in two. Part A turns each
// signal into a rank r_j(x) = #{a ∈ A : s_j(a) < s_j(x)}; the combined statistic is c(x) = max_j r_j(x) (the
// most extreme signal). Part B sets a split-conformal threshold τ on c: with k = ⌈(n_B + 1)(1 − fpr)⌉, τ is the
// k-th smallest c over B, and G flags c(x) > τ. For clean inputs exchangeable with the held-out data this
// flags at most a share fpr in expectation (Vovk et al.; Lei et al. 2018), whatever the signals' correlation.
// By default τ is set more strictly, so that the rate stays ≤ fpr with 90% probability (see Guarantee).
// c(x) > τ ⟺ some s_j(x) > t_j with t_j = the (τ+1)-th smallest s_j over A, so the ONNX G only compares J
// scores with J thresholds: the scores come from one graph, so JS calibration and G decide on the same floats.
import { fail } from "../errors.js";
import { attr, Graph, tensor } from "../graph/ir.js";
import { memoryDataset, type Dataset } from "../io/dataset.js";
import { argmaxRows, batchTensor, type BatchSource } from "../model/forward.js";
import type { Model } from "../model/model.js";
import { Session } from "../runtime/session.js";
import { shuffled } from "../train/trainer.js";
import { mulberry32 } from "../util/random.js";
import { duplicateDownstream } from "../graph/transforms.js";
import { appendRejectClass, embed } from "./g-model.js";
import { stripGraph, type StripGraphOptions } from "./strip.js";

export const SIGNALS = ["disagreement", "strip", "trigger", "confidence"] as const;
export type SignalName = (typeof SIGNALS)[number];

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
  /** Signals to use (default: every one the parts allow). */
  signals?: SignalName[];
}

export interface ScoreGraph {
  graph: Graph;
  /** B's logits [N, K]. */
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
  if (p.repaired) {
    let rl: string;
    if (isModel(p.repaired)) {
      rl = embed(g, p.repaired.graph, "R/", { [p.repaired.input]: "input" })(p.repaired.logits);
    } else {
      const v = rb(p.repaired.value);
      const rank = g.shape(v).length;
      const m = p.repaired.mask;
      const view = g.op("Reshape", [g.constant(tensor("float32", [m.length], Float32Array.from(m)), "pruning_mask"), g.ints([1, -1, ...new Array(Math.max(0, rank - 2)).fill(1)])]);
      rl = duplicateDownstream(g, v, g.op("Mul", [v, view], {}, g.fresh(`${v}/pruned`)), "P/")(bl);
    }
    const lsB = g.op("LogSoftmax", [bl], { axis: attr.int(1) });
    const lsR = g.op("LogSoftmax", [rl], { axis: attr.int(1) });
    const top = g.op("ArgMax", [bl], { axis: attr.int(1), keepdims: attr.int(1) });
    const pick = (ls: string) => g.op("Squeeze", [g.op("GatherElements", [ls, top], { axis: attr.int(1) }), axis1]);
    out.disagreement = g.op("Sub", [pick(lsB), pick(lsR)], {}, "g_disagreement");
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
  const scores = signals.map((s) => out[s]!);
  g.setOutputs([bl, ...scores]);
  g.prune(["input"]);
  return { graph: g, logits: bl, signals, scores };
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
    // A STRIP input costs k+1 forward passes: keep the blended batch near 512 images.
    const batch = opts.batchSize ?? Math.max(1, Math.floor(512 / (k + 1)));
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
  /** Sizes of the rank part (A) and the conformal part (B) of the held-out clean data. */
  nRank: number;
  nConformal: number;
  /** The conformal rank threshold τ on c(x) = max_j r_j(x). */
  tau: number;
  /** Held-out inputs (A and B together) flagged by the calibrated rule. */
  heldOutFlagged: number;
}

/** #{a ∈ sorted : a < v} by binary search. */
function countBelow(sorted: Float32Array, v: number): number {
  let lo = 0, hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (sorted[mid]! < v) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/**
 * How the conformal threshold is set. "marginal": the false-alarm rate is at most fpr in expectation over
 * the draw of the held-out data (k = ⌈(n_B + 1)(1 − fpr)⌉). {delta}: training-conditional (PAC, Vovk 2012):
 * with probability at least 1 − delta over that draw, this G's false-alarm rate on fresh clean inputs is at
 * most fpr. With m of B's statistics above τ, that rate is the (m+1)-th smallest of n_B uniforms, which
 * exceeds fpr with probability P(Binomial(n_B, fpr) ≤ m): the largest m with that ≤ delta is used.
 */
export type Guarantee = "marginal" | { delta: number };

export const DEFAULT_GUARANTEE: Guarantee = { delta: 0.1 };

/** How many of B's statistics may lie above τ (m), or −1 when n_B is too small for the guarantee. */
export function allowedAbove(nB: number, fpr: number, guarantee: Guarantee): number {
  if (guarantee === "marginal") return nB - Math.ceil((nB + 1) * (1 - fpr) - 1e-9);
  let m = -1;
  while (m + 1 < nB && binomialCdf(m + 1, nB, fpr) <= guarantee.delta) m++;
  return m;
}

/** Smallest n_B (the conformal half of the held-out data) for which the guarantee can be met at this fpr. */
export function minConformalSize(fpr: number, guarantee: Guarantee = DEFAULT_GUARANTEE): number {
  if (guarantee === "marginal") return Math.ceil(1 / fpr - 1 - 1e-9);
  return Math.ceil(Math.log(guarantee.delta) / Math.log1p(-fpr) - 1e-9);
}

function checkGuarantee(g: Guarantee): void {
  if (g !== "marginal" && !(g.delta > 0 && g.delta < 1)) fail(`the false-alarm guarantee's delta must be between 0 and 1 (exclusive), got ${g.delta}`);
}

/**
 * Calibrates the combined rule from scores of the rank part A and the conformal part B (one Float32Array per
 * signal each, same order). See the file comment.
 */
export function calibrate(rankScores: Float32Array[], confScores: Float32Array[], fpr: number, signals: SignalName[], guarantee: Guarantee = DEFAULT_GUARANTEE): GCalibration {
  checkFpr(fpr);
  checkGuarantee(guarantee);
  const J = signals.length;
  if (rankScores.length !== J || confScores.length !== J) throw new Error(`calibrate: ${J} signals but ${rankScores.length}/${confScores.length} score arrays`);
  const nA = rankScores[0]?.length ?? 0, nB = confScores[0]?.length ?? 0;
  const m = allowedAbove(nB, fpr, guarantee);
  if (m < 0 || nA < 1)
    fail(`a G false-alarm rate of ${fpr} needs at least ${minConformalSize(fpr, guarantee)} held-out clean images to calibrate on (plus as many to rank with); got ${nB} + ${nA}`);
  for (const s of [...rankScores, ...confScores]) for (const v of s) if (!Number.isFinite(v)) fail("G calibration: a signal score is not finite (NaN or infinite model output on clean data)");
  const sortedA = rankScores.map((s) => Float32Array.from(s).sort());
  const c = new Int32Array(nB);
  for (let i = 0; i < nB; i++) {
    let r = 0;
    for (let j = 0; j < J; j++) r = Math.max(r, countBelow(sortedA[j]!, confScores[j]![i]!));
    c[i] = r;
  }
  const sortedC = Int32Array.from(c).sort();
  const tau = sortedC[nB - m - 1]!;
  // r_j(x) > τ ⟺ at least τ+1 rank scores lie strictly below s_j(x) ⟺ s_j(x) > sortedA_j[τ].
  const thresholds = sortedA.map((s) => (tau < nA ? s[tau]! : Infinity));
  const cal: GCalibration = { fpr, guarantee, signals, thresholds, nRank: nA, nConformal: nB, tau, heldOutFlagged: 0 };
  cal.heldOutFlagged = countFlags(decide(rankScores, thresholds)) + countFlags(decide(confScores, thresholds));
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
export interface RateWithInterval {
  n: number;
  count: number;
  rate: number;
  ci95: [number, number];
}

export function rateWithInterval(count: number, n: number): RateWithInterval {
  return { n, count, rate: n ? count / n : 0, ci95: n ? clopperPearson(count, n) : [0, 1] };
}

// --- the whole procedure --------------------------------------------------------------------------------

/** Rows `idx` of a data set, in memory. */
export function pickRows(data: Dataset, idx: ArrayLike<number>, name = `${data.name} subset`): Dataset {
  const [c, h, w] = data.shape;
  const per = c * h * w;
  const x = new Float32Array(idx.length * per);
  for (let i = 0; i < idx.length; i++) x.set(data.read(idx[i]!, 1), i * per);
  const labels = data.labels ? Int32Array.from(idx, (j) => data.labels![j]!) : null;
  return memoryDataset(name, [c, h, w], x, labels);
}

/**
 * Splits clean data into the part the repair may use (`fit`) and the held-out calibration part, by a seeded
 * shuffle. The calibration part gets `fraction` of the images, but at least what the fpr needs when possible.
 */
export function splitForCalibration(data: Dataset, fpr: number, opts: { fraction?: number; seed?: number; guarantee?: Guarantee } = {}): { fit: Dataset; calibration: Dataset } {
  checkFpr(fpr);
  const need = 2 * minConformalSize(fpr, opts.guarantee);
  const n = data.size;
  const want = Math.max(Math.round((opts.fraction ?? 0.2) * n), need);
  if (want >= n) fail(`a G false-alarm rate of ${fpr} needs ${need} held-out clean images plus some to repair with; data ${data.name} has ${n}`);
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
 * Scores the held-out clean `calibration` data, splits it in half (seeded) into the rank and conformal
 * parts, and calibrates. The returned scorer stays open for measuring G on test data: release it.
 */
export async function calibrateG(p: GParts, calibration: BatchSource, opts: { fpr?: number; seed?: number; guarantee?: Guarantee } = {}): Promise<CalibratedG> {
  const fpr = opts.fpr ?? 0.01;
  checkFpr(fpr);
  const scorer = await GScorer.create(p);
  try {
    const s = await scorer.score(calibration);
    const n = calibration.size;
    const order = shuffled(n, mulberry32((opts.seed ?? 0) + 7331));
    const half = Math.floor(n / 2);
    const part = (idx: Int32Array | number[]) => s.scores.map((sc) => Float32Array.from(idx, (i) => sc[i]!));
    const a = order.slice(0, half), b = order.slice(half);
    const cal = calibrate(part(a), part(b), fpr, scorer.sg.signals, opts.guarantee);
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

/** The report section of a calibrated G: how it was calibrated and what it did on test data. */
export interface GCalibrationReport {
  fprTarget: number;
  /** "marginal", or the probability (1 − delta) that the rate holds over the held-out draw. */
  guarantee: "marginal" | { confidence: number };
  signals: SignalName[];
  /** Per signal; null = that signal never flags. */
  thresholds: (number | null)[];
  heldOut: { n: number; flagged: number };
  /** False alarms on clean test data, with the exact 95% interval. */
  cleanTest?: RateWithInterval;
  /** Detection on poisoned data (all given sets together), with the exact 95% interval. */
  poisoned?: RateWithInterval;
}

/** Runs the scorer on clean test and poisoned data and fills the report section. */
export async function reportCalibratedG(scorer: GScorer, cal: GCalibration, data: { test?: BatchSource; poisoned?: BatchSource }): Promise<GCalibrationReport> {
  const r: GCalibrationReport = {
    fprTarget: cal.fpr,
    guarantee: cal.guarantee === "marginal" ? "marginal" : { confidence: 1 - cal.guarantee.delta },
    signals: cal.signals,
    thresholds: cal.thresholds.map((t) => (Number.isFinite(t) ? t : null)),
    heldOut: { n: cal.nRank + cal.nConformal, flagged: cal.heldOutFlagged },
  };
  const rate = async (d: BatchSource) => rateWithInterval(countFlags(decide((await scorer.score(d)).scores, cal.thresholds)), d.size);
  if (data.test && data.test.size > 0) r.cleanTest = await rate(data.test);
  if (data.poisoned && data.poisoned.size > 0) r.poisoned = await rate(data.poisoned);
  return r;
}
