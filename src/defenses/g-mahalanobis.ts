// The Mahalanobis signal of G (Lee et al., NeurIPS 2018): the squared distance of a network's features to the
// clean class-conditional Gaussian of B's predicted class, with one covariance shared by all classes. A
// backdoored input reaches the target class by a path clean inputs of that class do not take, so its
// features sit away from the class's clean cloud even when B is confident.
//   d(x) = (f(x) − μ_ŷ)ᵀ Σ⁻¹ (f(x) − μ_ŷ),  ŷ = B's top-1 class.
// Fitting (JS, float64) uses clean images the G calibration never sees (the repair's part), grouped by B's
// prediction (so unlabelled clean data works and a clean input is scored against the cloud it is compared
// with at test time). Small data: the shared covariance is shrunk toward a scaled identity with the
// Ledoit–Wolf weight (Ledoit & Wolf 2004, the sklearn form), and each class mean toward the pooled mean with
// weight `meanPrior` pseudo-images, so a class with few or no fit images (DeepID: ~9 per class, some none)
// falls back to the pooled mean. With fewer fit images than twice the feature width the covariance is diagonal
// (per-feature variances, also shrunk). In the graph: onehot(ArgMax(logits))·means and one MatMul by the
// whitening matrix W (Σ⁻¹ = W Wᵀ), so G stays one ONNX file.
import { fail } from "../errors.js";
import { attr, Graph, tensor } from "../graph/ir.js";
import type { BatchSource } from "../model/forward.js";
import { argmaxRows, forEachBatch } from "../model/forward.js";
import type { Model } from "../model/model.js";
import type { ReportMahalanobis } from "../report/types.js";
import { withSession } from "../runtime/session.js";

/** Where the features come from: the input of B's last linear layer, or the last conv output averaged over space. */
export const FEATURE_LAYERS = ["penultimate", "penultimate-preact", "conv-pooled", "conv-flat"] as const;
export type FeatureLayer = (typeof FEATURE_LAYERS)[number];

export interface ClassGaussians {
  layer: FeatureLayer;
  /** Feature width d and number of classes K. */
  dim: number;
  numClasses: number;
  /** Class means [K, d] (row k: class k, shrunk toward the pooled mean). */
  means: Float32Array;
  /** Whitening matrix W [d, d] with Σ⁻¹ = W Wᵀ: d(x) = ‖(f − μ)W‖². */
  whiten: Float32Array;
  covariance: "shared" | "diagonal";
  /** Ledoit–Wolf weight of the scaled identity (0 = sample covariance, 1 = identity). */
  shrinkage: number;
  /** Fit images per class (by B's prediction). */
  counts: number[];
  /** Classes with fewer than MIN_CLASS_IMAGES fit images: their mean leans on the pooled mean. */
  sparseClasses: number;
  fitImages: number;
}

/** Below this many fit images a class mean is mostly the pooled mean (see meanPrior). */
export const MIN_CLASS_IMAGES = 5;

export interface FitOptions {
  /** Pseudo-images of the pooled mean added to each class mean (default 1). */
  meanPrior?: number;
  /** Force a diagonal covariance (default: only when n < 2d). */
  diagonal?: boolean;
}

/**
 * Ledoit–Wolf shrinkage weight of the centred rows X [n, d] (sklearn's ledoit_wolf_shrinkage): the weight ρ of
 * μI in (1 − ρ)S + ρμI, μ = tr(S)/d, that minimises the expected Frobenius error. Returns S too.
 */
export function ledoitWolf(x: Float64Array, n: number, d: number): { cov: Float64Array; shrinkage: number; mu: number } {
  const s = new Float64Array(d * d);
  for (let r = 0; r < n; r++) {
    const row = x.subarray(r * d, (r + 1) * d);
    for (let i = 0; i < d; i++) {
      const a = row[i]!;
      if (a === 0) continue;
      const o = i * d;
      for (let j = i; j < d; j++) s[o + j] += a * row[j]!;
    }
  }
  for (let i = 0; i < d; i++) for (let j = i; j < d; j++) s[j * d + i] = s[i * d + j] /= n;
  let tr = 0;
  for (let i = 0; i < d; i++) tr += s[i * d + i]!;
  const mu = tr / d;
  // β̄ = (1/n²) Σ_k ‖x_k x_kᵀ − S‖²_F = (1/n²)(Σ_k ‖x_k‖⁴) − ‖S‖²_F / n; δ = ‖S − μI‖²_F.
  let fourth = 0;
  for (let r = 0; r < n; r++) {
    let q = 0;
    for (let i = 0; i < d; i++) q += x[r * d + i]! ** 2;
    fourth += q * q;
  }
  let sF = 0;
  for (let i = 0; i < d * d; i++) sF += s[i]! ** 2;
  const delta = sF - 2 * mu * tr + d * mu * mu;
  const beta = Math.min(delta, Math.max(0, fourth / (n * n) - sF / n));
  return { cov: s, shrinkage: delta > 0 ? beta / delta : 1, mu };
}

/** Lower Cholesky factor of a symmetric positive definite [d, d] matrix (float64). */
export function cholesky(a: Float64Array, d: number): Float64Array {
  const l = new Float64Array(d * d);
  for (let i = 0; i < d; i++) {
    for (let j = 0; j <= i; j++) {
      let s = a[i * d + j]!;
      for (let k = 0; k < j; k++) s -= l[i * d + k]! * l[j * d + k]!;
      if (i === j) {
        if (!(s > 0)) throw new Error(`cholesky: matrix is not positive definite (pivot ${i}: ${s})`);
        l[i * d + i] = Math.sqrt(s);
      } else l[i * d + j] = s / l[j * d + j]!;
    }
  }
  return l;
}

/** W = L⁻ᵀ for Σ = LLᵀ, so Σ⁻¹ = W Wᵀ and (f − μ)ᵀΣ⁻¹(f − μ) = ‖(f − μ)W‖². */
function whitening(l: Float64Array, d: number): Float32Array {
  // Solve L Y = I column by column (Y = L⁻¹), then W = Yᵀ.
  const y = new Float64Array(d * d);
  for (let c = 0; c < d; c++) {
    for (let i = c; i < d; i++) {
      let s = i === c ? 1 : 0;
      for (let k = c; k < i; k++) s -= l[i * d + k]! * y[k * d + c]!;
      y[i * d + c] = s / l[i * d + i]!;
    }
  }
  const w = new Float32Array(d * d);
  for (let i = 0; i < d; i++) for (let j = 0; j < d; j++) w[i * d + j] = y[j * d + i]!;
  return w;
}

/** Fits the class means and the shared, shrunk covariance to features [n, d] grouped by `pred`. */
export function fitClassGaussians(features: Float32Array, pred: Int32Array, numClasses: number, layer: FeatureLayer, opts: FitOptions = {}): ClassGaussians {
  const n = pred.length;
  if (n < 2) fail(`the Mahalanobis signal needs at least 2 clean images to fit on; got ${n}`);
  const d = features.length / n;
  if (!Number.isInteger(d) || d < 1) throw new Error(`fitClassGaussians: ${features.length} feature values for ${n} images`);
  const prior = opts.meanPrior ?? 1;
  if (!(prior >= 0)) fail(`the Mahalanobis mean prior must be >= 0, got ${prior}`);
  for (const v of features) if (!Number.isFinite(v)) fail("the Mahalanobis signal: a feature of a clean image is not finite (NaN or infinite model output)");
  const K = numClasses;
  const pooled = new Float64Array(d);
  const sums = new Float64Array(K * d);
  const counts = new Array<number>(K).fill(0);
  for (let r = 0; r < n; r++) {
    const k = pred[r]!;
    if (!(k >= 0 && k < K)) throw new Error(`fitClassGaussians: prediction ${k} outside 0..${K - 1}`);
    counts[k]!++;
    for (let i = 0; i < d; i++) {
      const v = features[r * d + i]!;
      pooled[i] += v / n;
      sums[k * d + i] += v;
    }
  }
  const means = new Float64Array(K * d);
  for (let k = 0; k < K; k++) for (let i = 0; i < d; i++) means[k * d + i] = counts[k]! + prior > 0 ? (sums[k * d + i]! + prior * pooled[i]!) / (counts[k]! + prior) : pooled[i]!;
  const centred = new Float64Array(n * d);
  for (let r = 0; r < n; r++) for (let i = 0; i < d; i++) centred[r * d + i] = features[r * d + i]! - means[pred[r]! * d + i]!;
  const diagonal = opts.diagonal ?? n < 2 * d;
  const { cov, shrinkage, mu } = ledoitWolf(centred, n, d);
  // A feature that never varies on clean data (a dead ReLU) would have zero variance: the identity part of
  // the shrinkage keeps Σ invertible, and a floor covers the all-constant case.
  const floor = Math.max(mu, 1e-12) * 1e-6;
  const shrunk = new Float64Array(d * d);
  for (let i = 0; i < d; i++) {
    for (let j = 0; j < d; j++) {
      if (diagonal && i !== j) continue;
      shrunk[i * d + j] = (1 - shrinkage) * cov[i * d + j]! + (i === j ? shrinkage * mu + floor : 0);
    }
  }
  return {
    layer,
    dim: d,
    numClasses: K,
    means: Float32Array.from(means),
    whiten: whitening(cholesky(shrunk, d), d),
    covariance: diagonal ? "diagonal" : "shared",
    shrinkage,
    counts,
    sparseClasses: counts.filter((c) => c < MIN_CLASS_IMAGES).length,
    fitImages: n,
  };
}

/** The statistic in JS (float64 arithmetic on the float32 parameters): one squared distance per row. */
export function mahalanobisJs(gs: ClassGaussians, features: Float32Array, pred: Int32Array): Float64Array {
  const d = gs.dim;
  const out = new Float64Array(pred.length);
  const diff = new Float64Array(d);
  for (let r = 0; r < pred.length; r++) {
    const k = pred[r]!;
    for (let i = 0; i < d; i++) diff[i] = features[r * d + i]! - gs.means[k * d + i]!;
    let s = 0;
    for (let j = 0; j < d; j++) {
      let z = 0;
      for (let i = 0; i < d; i++) z += diff[i]! * gs.whiten[i * d + j]!;
      s += z * z;
    }
    out[r] = s;
  }
  return out;
}

/**
 * The class-gap statistic in JS: d_ŷ(x) − min_k d_k(x), how much further B's predicted class is than the
 * closest clean class cloud (0 when ŷ is the closest). A trigger that moves an input's answer but leaves its
 * features near its own class (blend, low-frequency, warping) shows here even when d_ŷ alone looks ordinary.
 */
export function mahalanobisGapJs(gs: ClassGaussians, features: Float32Array, pred: Int32Array): Float64Array {
  const d = gs.dim, K = gs.numClasses;
  // d_k = ‖fW − μ_k W‖²: whiten the means once, then each class costs O(d).
  const mw = new Float64Array(K * d);
  for (let k = 0; k < K; k++) for (let i = 0; i < d; i++) {
    const m = gs.means[k * d + i]!;
    if (m !== 0) for (let j = 0; j < d; j++) mw[k * d + j] += m * gs.whiten[i * d + j]!;
  }
  const out = new Float64Array(pred.length);
  const z = new Float64Array(d);
  for (let r = 0; r < pred.length; r++) {
    z.fill(0);
    for (let i = 0; i < d; i++) {
      const v = features[r * d + i]!;
      if (v !== 0) for (let j = 0; j < d; j++) z[j] += v * gs.whiten[i * d + j]!;
    }
    let min = Infinity, at = 0;
    for (let k = 0; k < K; k++) {
      let v = 0;
      for (let j = 0; j < d; j++) v += (z[j]! - mw[k * d + j]!) ** 2;
      if (v < min) min = v;
      if (k === pred[r]) at = v;
    }
    out[r] = at - min;
  }
  return out;
}

/**
 * The feature value of `model` for `layer`, in a graph that holds the model's nodes under `rename` (embed()):
 * "penultimate" walks back from the logits to the last MatMul/Gemm and takes its data input; "conv-pooled"
 * averages the last 4-D layer output over space. Returns a [N, d] value of `g`.
 */
export function featureValue(g: Graph, model: Model, layer: FeatureLayer, rename: (v: string) => string = (v) => v): string {
  if (layer === "penultimate" || layer === "penultimate-preact") {
    let v = model.logits;
    for (let step = 0; step < 16; step++) {
      const node = model.graph.producer(v);
      if (!node) break;
      if (node.op === "MatMul" || node.op === "Gemm") {
        const f = node.inputs[0]!;
        const act = model.graph.producer(f);
        // Before the activation: unclipped by the ReLU, closer to Gaussian.
        return flatten2d(g, rename(layer === "penultimate-preact" && act?.op === "Relu" ? act.inputs[0]! : f));
      }
      // Follow the data path: the input that is not a stored weight.
      const next = node.inputs.find((i) => i && !model.graph.initializers.has(i));
      if (!next) break;
      v = next;
    }
    fail(`the Mahalanobis signal needs a last linear layer (MatMul or Gemm) before the logits of ${model.name}`);
  }
  const conv = [...model.layerOutputs.values()].filter((v) => v !== model.input && model.graph.shape(v).length === 4).pop();
  if (!conv) fail(`the Mahalanobis signal on conv-pooled features needs a 4-D layer output in ${model.name}`);
  return flatten2d(g, layer === "conv-flat" ? rename(conv) : g.op("GlobalAveragePool", [rename(conv)]));
}

function flatten2d(g: Graph, v: string): string {
  return g.shape(v).length === 2 ? v : g.op("Flatten", [v], { axis: attr.int(1) });
}

/** Width of the features of `layer` (static). */
export function featureWidth(model: Model, layer: FeatureLayer): number {
  const g = model.graph.clone();
  const v = featureValue(g, model, layer);
  return width(g, v);
}

/** The static width of a [N, d] value (N may be symbolic). */
export function width(g: Graph, v: string): number {
  const d = g.shape(v)[1];
  if (typeof d !== "number") throw new Error(`value ${v} has no static feature width`);
  return d;
}

/** Adds d(x) to `g`: `features` [N, d], `logits` [N, K] (ŷ = argmax). Returns the [N] score value. */
export function mahalanobisNodes(g: Graph, gs: ClassGaussians, features: string, logits: string, prefix = "g_mahalanobis"): string {
  const d = gs.dim;
  // μ_ŷ as a one-hot product: onehot(argmax) [N, K] · means [K, d].
  const top = g.op("ArgMax", [logits], { axis: attr.int(1), keepdims: attr.int(1) });
  const onehot = g.op("Cast", [g.op("Equal", [top, g.ints(Array.from({ length: gs.numClasses }, (_, k) => k))])], { to: attr.int(1) });
  const mu = g.op("MatMul", [onehot, g.constant(tensor("float32", [gs.numClasses, d], gs.means), `${prefix}_means`)]);
  const z = g.op("MatMul", [g.op("Sub", [features, mu]), g.constant(tensor("float32", [d, d], gs.whiten), `${prefix}_whiten`)]);
  return g.op("ReduceSum", [g.op("Mul", [z, z]), g.ints([1])], { keepdims: attr.int(0) }, g.fresh(prefix));
}

/**
 * Adds the class gap d_ŷ − min_k d_k to `g` (see mahalanobisGapJs). All K distances in one MatMul:
 * d_k = ‖z‖² − 2 z·m_k + ‖m_k‖² with z = fW and m_k = μ_k W (precomputed in float64).
 */
export function mahalanobisGapNodes(g: Graph, gs: ClassGaussians, features: string, logits: string, prefix = "g_mahalanobis_gap"): string {
  const d = gs.dim, K = gs.numClasses;
  const mw = new Float32Array(d * K), mm = new Float32Array(K);
  for (let k = 0; k < K; k++) {
    let q = 0;
    for (let j = 0; j < d; j++) {
      let v = 0;
      for (let i = 0; i < d; i++) v += gs.means[k * d + i]! * gs.whiten[i * d + j]!;
      mw[j * K + k] = v;
      q += v * v;
    }
    mm[k] = q;
  }
  const z = g.op("MatMul", [features, g.constant(tensor("float32", [d, d], gs.whiten), `${prefix}_whiten`)]);
  const zz = g.op("ReduceSum", [g.op("Mul", [z, z]), g.ints([1])], { keepdims: attr.int(1) });
  const cross = g.op("MatMul", [z, g.constant(tensor("float32", [d, K], mw), `${prefix}_means_w`)]);
  const all = g.op("Add", [g.op("Sub", [zz, g.op("Mul", [cross, g.scalar(2)])]), g.constant(tensor("float32", [1, K], mm), `${prefix}_means_sq`)]);
  const top = g.op("ArgMax", [logits], { axis: attr.int(1), keepdims: attr.int(1) });
  const onehot = g.op("Cast", [g.op("Equal", [top, g.ints(Array.from({ length: K }, (_, k) => k))])], { to: attr.int(1) });
  const atPred = g.op("ReduceSum", [g.op("Mul", [all, onehot]), g.ints([1])], { keepdims: attr.int(0) });
  const min = g.op("ReduceMin", [all], { axes: attr.ints([1]), keepdims: attr.int(0) });
  return g.op("Sub", [atPred, min], {}, g.fresh(prefix));
}

/** Features and B's top-1 of a data set, in batches. */
export async function extractFeatures(model: Model, layer: FeatureLayer, data: BatchSource, batchSize = 256): Promise<{ features: Float32Array; pred: Int32Array; dim: number }> {
  const { features, pred } = await extractFeatureLayers(model, [layer], data, batchSize);
  return { features: features[0]!.features, pred, dim: features[0]!.dim };
}

/**
 * Features of several layers and B's top-1 from ONE pass over the data (one session, each image through the
 * network once): the G signals' Gaussians are fitted on the same images, so one pass serves them all.
 */
export async function extractFeatureLayers(
  model: Model,
  layers: readonly FeatureLayer[],
  data: BatchSource,
  batchSize = 256,
): Promise<{ features: { features: Float32Array; dim: number }[]; pred: Int32Array }> {
  const g = model.graph.clone();
  const values = layers.map((l) => featureValue(g, model, l));
  g.setOutputs([model.logits, ...new Set(values)]);
  g.prune([model.input]);
  const features = values.map((v) => {
    const dim = width(g, v);
    return { features: new Float32Array(data.size * dim), dim };
  });
  const pred = new Int32Array(data.size);
  await withSession(g, (s) =>
    forEachBatch(
      s,
      data,
      (o, start) => {
        values.forEach((v, i) => features[i]!.features.set(o[v]!.data as Float32Array, start * features[i]!.dim));
        pred.set(argmaxRows(o[model.logits]!.data as Float32Array, model.numClasses), start);
      },
      { batchSize, input: model.input },
    ),
  );
  return { features, pred };
}

/** Fits the class Gaussians of `model`'s `layer` features on clean data (B's predictions as classes). */
export async function fitMahalanobis(model: Model, layer: FeatureLayer, clean: BatchSource, opts: FitOptions = {}): Promise<ClassGaussians> {
  const { features, pred } = await extractFeatures(model, layer, clean);
  return fitClassGaussians(features, pred, model.numClasses, layer, opts);
}

/** The report's summary of a fitted model (no parameters). */
export function mahalanobisReport(gs: ClassGaussians): ReportMahalanobis {
  return { layer: gs.layer, dim: gs.dim, covariance: gs.covariance, shrinkage: gs.shrinkage, fitImages: gs.fitImages, sparseClasses: gs.sparseClasses };
}

/** One line on the fitted model, for the CLI output and the report. */
export function describeGaussians(gs: ReportMahalanobis): string {
  const sparse = gs.sparseClasses ? `; ${gs.sparseClasses} class(es) with < ${MIN_CLASS_IMAGES} fit images lean on the pooled mean` : "";
  const cov = gs.covariance === "diagonal" ? `diagonal covariance (${gs.fitImages} fit images < 2 x ${gs.dim} features)` : "shared covariance";
  return `Mahalanobis on ${gs.layer} features (d=${gs.dim}), ${cov}, Ledoit-Wolf shrinkage ${gs.shrinkage.toFixed(3)}, fit on ${gs.fitImages} clean images${sparse}`;
}
