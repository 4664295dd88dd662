// Adversarial Neuron Pruning (ANP; Wu & Wang, NeurIPS 2021). Backdoor neurons are the ones whose small
// perturbation flips the network most easily. ANP learns a mask m ∈ [0, 1] per neuron on a little clean data
// while an adversary perturbs every neuron multiplicatively: a neuron's pre-activation w·x + b becomes
// (m + δ)·(w·x) + (1 + ξ)·b with |δ|, |ξ| ≤ ε. The mask minimizes
//   α·CE(clean network with mask m) + (1 − α)·max_{δ,ξ} CE(perturbed network),
// the inner max taken by one signed-gradient step from a random start (the paper's anp_steps = 1). Neurons
// that the adversary exploits get small masks; those below a threshold are pruned.
//
// The paper perturbs BatchNorm's scale and shift; our zoo CNN and DeepID have no BatchNorm, so each conv
// channel's (and each hidden dense unit's) own weight scale and bias play that role, which is the same
// algebra without the normalization. Defaults follow the paper and BackdoorBench: ε = 0.4, α = 0.2, mask SGD
// with learning rate 0.2 and momentum 0.9, threshold 0.2.
//
// The step graph: the model's weights are constants; m, δ and ξ of every site are graph inputs; the graph
// returns the cross-entropy and its gradients with respect to all of them (our autodiff, no weight
// gradients). One iteration runs it three times: the adversary's step, the perturbed loss, the clean loss.
import { fail } from "../errors.js";
import { backward } from "../graph/autodiff.js";
import { checkData, countCorrect, evaluateModels } from "../eval/evaluate.js";
import { Graph, tensor, type TensorData } from "../graph/ir.js";
import { softmaxCrossEntropy } from "../graph/losses.js";
import { poolBeforeRelu } from "../graph/transforms.js";
import { predictLabels } from "../model/forward.js";
import type { Model } from "../model/model.js";
import { Session } from "../runtime/session.js";
import { oneHot, shuffled } from "../train/trainer.js";
import { splitClean } from "../train/split.js";
import { mulberry32 } from "../util/random.js";
import { pickOptions, resolveOptions, MAX_LOOPS, SEED_OPTION, type OptionSpecs, type OptionValues } from "./defense.js";
import { gFromPair } from "./g-model.js";
import { ncEvalSets, outputDense, prunedNeuronsModel, type NcData, type NcEvaluation, type PruneSite } from "./nc-mitigation.js";
import { gradientWork } from "../runtime/threads.js";

/** A layer whose neurons ANP masks and perturbs. */
export interface AnpSite {
  /** Keras layer name (or the kernel's IR name). */
  layer: string;
  kind: "conv" | "dense";
  /** IR value of the pre-activation (conv output with bias, or dense MatMul + bias). */
  value: string;
  kernel: string;
  bias: string;
  units: number;
}

function isParam(model: Model, v: string): boolean {
  return model.params.some((p) => p.value === v);
}

function layerOfParam(model: Model, v: string): string {
  const p = model.params.find((q) => q.value === v);
  return p?.layer || v;
}

/**
 * The neurons ANP works on: every Conv with a stored kernel and bias, and every hidden dense layer (MatMul by a
 * stored [in, out] kernel then Add of a stored bias) except the output layer. `layers` picks some by name.
 */
export function anpSites(model: Model, layers?: readonly string[]): AnpSite[] {
  const g = model.graph;
  const out = outputDense(model).node;
  const consumers = g.consumers();
  const sites: AnpSite[] = [];
  for (const n of g.nodes) {
    if (n.op === "Conv" && n.inputs.length === 3 && n.inputs[2] && isParam(model, n.inputs[1]) && isParam(model, n.inputs[2]) && (n.attrs.group?.kind !== "int" || n.attrs.group.value === 1)) {
      sites.push({ layer: layerOfParam(model, n.inputs[1]), kind: "conv", value: n.outputs[0], kernel: n.inputs[1], bias: n.inputs[2], units: g.staticShape(n.inputs[1])[0] });
    } else if (n.op === "MatMul" && n !== out && isParam(model, n.inputs[1]) && g.shape(n.inputs[1]).length === 2) {
      const readers = consumers.get(n.outputs[0]) ?? [];
      const add = readers.length === 1 && readers[0].op === "Add" ? readers[0] : undefined;
      const bias = add?.inputs.find((i) => i !== n.outputs[0]);
      if (!add || !bias || !isParam(model, bias) || g.shape(bias).length !== 1) continue;
      sites.push({ layer: layerOfParam(model, n.inputs[1]), kind: "dense", value: add.outputs[0], kernel: n.inputs[1], bias, units: g.staticShape(n.inputs[1])[1] });
    }
  }
  if (layers) {
    for (const l of layers) if (!sites.some((s) => s.layer === l)) fail(`ANP: layer "${l}" is not a Conv2D or hidden Dense layer with a bias (candidates: ${sites.map((s) => s.layer).join(", ") || "none"})`);
    return sites.filter((s) => layers.includes(s.layer));
  }
  if (sites.length === 0) fail(`ANP: model ${model.name} has no Conv2D or hidden Dense layer with a bias to mask`);
  return sites;
}

/** The inputs ANP adds per site: mask, neuron (weight-scale) noise and bias noise, each [units]. */
export interface AnpInputs {
  mask: string;
  neuronNoise: string;
  biasNoise: string;
}

/**
 * Rewrites `g` in place so that each site's pre-activation is (m + δ)·(w·x) + (1 + ξ)·b, with m, δ, ξ new
 * graph inputs [units]. With m = 1 and δ = ξ = 0 the graph computes exactly what it did.
 */
export function insertAnpPerturbation(g: Graph, sites: readonly AnpSite[]): AnpInputs[] {
  const one = g.scalar(1);
  return sites.map((site, k) => {
    const node = g.producer(site.value);
    if (!node) throw new Error(`ANP: no node produces ${site.value}`);
    const inputs: AnpInputs = {
      mask: g.addInput(`anp/${k}/mask`, "float32", [site.units]),
      neuronNoise: g.addInput(`anp/${k}/neuron_noise`, "float32", [site.units]),
      biasNoise: g.addInput(`anp/${k}/bias_noise`, "float32", [site.units]),
    };
    const info = g.info(site.value);
    const view = g.ints(info.shape.length === 4 ? [1, -1, 1, 1] : [1, -1]);
    // The weight part without its bias: the Conv loses its bias input, the dense layer its bias Add.
    let raw: string;
    if (site.kind === "conv") {
      raw = g.fresh(`${site.value}/nobias`);
      g.values.set(raw, { ...info, name: raw });
      node.inputs = node.inputs.slice(0, 2);
      node.outputs = [raw];
    } else {
      raw = node.inputs.find((i) => i !== site.bias)!;
      g.nodes.splice(g.nodes.indexOf(node), 1);
    }
    g.values.delete(site.value);
    const scale = g.op("Reshape", [g.op("Add", [inputs.mask, inputs.neuronNoise]), view]);
    const shift = g.op("Reshape", [g.op("Mul", [site.bias, g.op("Add", [inputs.biasNoise, one])]), view]);
    g.op("Add", [g.op("Mul", [raw, scale]), shift], {}, site.value);
    g.toposort();
    return inputs;
  });
}

export interface AnpStepGraph {
  graph: Graph;
  sites: AnpSite[];
  inputs: AnpInputs[];
  loss: string;
  /** Input name → its gradient output. */
  grads: Map<string, string>;
}

/** Forward with the ANP perturbation, mean cross-entropy, and the gradients w.r.t. every mask and noise. */
export function anpStepGraph(model: Model, sites: readonly AnpSite[]): AnpStepGraph {
  // Relu after MaxPool computes the same and differentiates on a quarter of the values.
  const g = model.graph.clone();
  poolBeforeRelu(g);
  g.name = `${model.name}_anp`;
  const inputs = insertAnpPerturbation(g, sites);
  const target = g.addInput("target", "float32", ["N", model.numClasses]);
  const loss = softmaxCrossEntropy(g, model.logits, target);
  const wrt = inputs.flatMap((i) => [i.mask, i.neuronNoise, i.biasNoise]);
  const grads = backward(g, loss, wrt);
  g.setOutputs([loss, ...wrt.map((w) => grads.get(w)!)]);
  g.prune([model.input, target, ...wrt]);
  return { graph: g, sites: [...sites], inputs, loss, grads };
}

export interface AnpOptions {
  /** Layers to mask (default: every conv and hidden dense layer). */
  layers?: string[];
  /** Perturbation budget ε (default 0.4). */
  eps?: number;
  /** Weight of the clean loss, α (default 0.2). */
  alpha?: number;
  /** Mask learning rate (SGD with momentum 0.9; default 0.2). */
  lr?: number;
  /** Mask-optimization iterations (default 300). */
  iterations?: number;
  batchSize?: number;
  /** Neurons whose mask ends below this are pruned (default 0.2). */
  threshold?: number;
  /**
   * Never prune so much that held-out clean accuracy falls more than this below B's (default 0.02): neurons
   * are pruned smallest mask first, and the longest prefix within this budget is kept.
   */
  maxDrop?: number;
  /** Share of the clean data held out to check the pruning (default 0.2). */
  holdout?: number;
  seed?: number;
  evalBatchSize?: number;
  onIteration?: (done: number, total: number, loss: number) => void;
}

export type AnpSettings = OptionValues<typeof ANP_OPTIONS>;

/** ANP's numeric options: one spec for the library's checks, the CLI's flags and --help. */
export const ANP_OPTIONS = {
  eps: { kind: "number", description: "perturbation budget ε of each neuron's weight scale and bias", default: 0.4, min: 0, max: 1 },
  alpha: { kind: "number", description: "weight α of the clean loss (1 − α: the perturbed loss)", default: 0.2, min: 0, max: 1 },
  lr: { kind: "number", description: "mask learning rate (SGD, momentum 0.9)", default: 0.2, min: 0, exclusiveMin: true },
  iterations: { kind: "integer", description: "mask-optimization iterations", default: 300, min: 1, max: MAX_LOOPS },
  batchSize: { kind: "integer", description: "images per iteration", default: 128, min: 1, max: 65536 },
  threshold: { kind: "number", description: "neurons whose mask ends below this are pruned", default: 0.2, min: 0, max: 1, exclusiveMin: true, exclusiveMax: true },
  maxDrop: { kind: "number", description: "most held-out clean accuracy the pruning may cost (fraction)", default: 0.02, min: 0, max: 1 },
  holdout: { kind: "number", description: "share of the clean data held out to check the pruning", default: 0.2, min: 0, max: 1, exclusiveMin: true, exclusiveMax: true },
  seed: SEED_OPTION,
} as const satisfies OptionSpecs;

export function checkAnpOptions(o: AnpOptions): AnpSettings {
  return resolveOptions(ANP_OPTIONS, pickOptions(ANP_OPTIONS, o));
}

/** A pruned neuron: site index and unit. */
export interface AnpNeuron {
  site: number;
  unit: number;
  mask: number;
}

export interface AnpResult extends NcEvaluation {
  model: Model;
  gGraph: Graph;
  sites: AnpSite[];
  /** Learned mask per site. */
  masks: Float32Array[];
  /** Pruned neurons, smallest mask first. */
  pruned: AnpNeuron[];
  /** Neurons below the threshold (all would be pruned without the clean-accuracy budget). */
  belowThreshold: number;
  heldOut: { before: number; after: number; n: number };
  /** Mean loss per stretch of iterations (clean, perturbed). */
  lossCurve: { iteration: number; natural: number; robust: number }[];
  settings: AnpSettings;
  seconds: { masks: number; prune: number };
}

/** The pruned network: each pruned neuron's kernel slice and bias zeroed (the Keras layers stay as they are). */
export function anpPrunedModel(model: Model, sites: readonly AnpSite[], pruned: readonly AnpNeuron[], name = `${model.name}_anp`): Model {
  let m = model;
  sites.forEach((site, k) => {
    const units = pruned.filter((p) => p.site === k).map((p) => p.unit);
    if (units.length === 0) return;
    const ps: PruneSite = {
      layer: site.layer,
      value: site.value,
      units: site.units,
      zero: [{ param: site.kernel, axis: site.kind === "conv" ? 0 : 1 }, { param: site.bias, axis: 0 }],
      how: "kernel slice and bias zeroed",
    };
    m = prunedNeuronsModel(m, ps, units, name);
  });
  return m === model ? { ...model, name } : m;
}

/** Learns the ANP masks on (x, y) in memory. */
export async function learnAnpMasks(model: Model, x: Float32Array, y: Int32Array, sites: readonly AnpSite[], s: AnpSettings, onIteration?: AnpOptions["onIteration"]): Promise<{ masks: Float32Array[]; lossCurve: AnpResult["lossCurve"] }> {
  const step = anpStepGraph(model, sites);
  const session = await Session.create(step.graph, gradientWork(model, Math.min(s.batchSize, y.length)));
  try {
    const [c, h, w] = model.inputShape;
    const per = c * h * w;
    const n = y.length;
    const bs = Math.min(s.batchSize, n);
    const rand = mulberry32(s.seed);
    const masks = sites.map((t) => new Float32Array(t.units).fill(1));
    const velocity = sites.map((t) => new Float32Array(t.units));
    const zeros = sites.map((t) => new Float32Array(t.units));
    const lossCurve: AnpResult["lossCurve"] = [];
    let order = shuffled(n, rand);
    let pos = 0;
    let natSum = 0, robSum = 0, count = 0;
    const every = Math.max(1, Math.round(s.iterations / 20));
    const feedsFor = (xb: TensorData, yb: TensorData, noise: Float32Array[][] | null): Record<string, TensorData> => {
      const f: Record<string, TensorData> = { [model.input]: xb, target: yb };
      step.inputs.forEach((inp, k) => {
        f[inp.mask] = tensor("float32", [sites[k].units], masks[k]);
        f[inp.neuronNoise] = tensor("float32", [sites[k].units], noise ? noise[0][k] : zeros[k]);
        f[inp.biasNoise] = tensor("float32", [sites[k].units], noise ? noise[1][k] : zeros[k]);
      });
      return f;
    };
    const gradOf = (out: Record<string, TensorData>, input: string) => out[step.grads.get(input)!].data as Float32Array;
    for (let it = 0; it < s.iterations; it++) {
      if (pos + bs > n) {
        order = shuffled(n, rand);
        pos = 0;
      }
      const xb = new Float32Array(bs * per);
      const yb = new Int32Array(bs);
      for (let i = 0; i < bs; i++) {
        const j = order[pos + i];
        xb.set(x.subarray(j * per, (j + 1) * per), i * per);
        yb[i] = y[j];
      }
      pos += bs;
      const xt = tensor("float32", [bs, c, h, w], xb);
      const yt = tensor("float32", [bs, model.numClasses], oneHot(yb, model.numClasses));
      let robust: Float32Array[] | null = null;
      let robLoss = 0;
      if (s.eps > 0) {
        // The adversary: a random start in the ε-box, one signed ascent step of size ε, clipped back.
        const noise = [0, 1].map(() => sites.map((t) => Float32Array.from({ length: t.units }, () => (rand() * 2 - 1) * s.eps)));
        const adv = await session.run(feedsFor(xt, yt, noise), step.inputs.flatMap((i) => [step.grads.get(i.neuronNoise)!, step.grads.get(i.biasNoise)!]));
        step.inputs.forEach((inp, k) => {
          const gn = gradOf(adv, inp.neuronNoise);
          const gb = gradOf(adv, inp.biasNoise);
          for (let u = 0; u < sites[k].units; u++) {
            noise[0][k][u] = Math.max(-s.eps, Math.min(s.eps, noise[0][k][u] + s.eps * Math.sign(gn[u])));
            noise[1][k][u] = Math.max(-s.eps, Math.min(s.eps, noise[1][k][u] + s.eps * Math.sign(gb[u])));
          }
        });
        const rob = await session.run(feedsFor(xt, yt, noise), [step.loss, ...step.inputs.map((i) => step.grads.get(i.mask)!)]);
        robust = step.inputs.map((inp) => gradOf(rob, inp.mask));
        robLoss = (rob[step.loss].data as Float32Array)[0];
      }
      const nat = await session.run(feedsFor(xt, yt, null), [step.loss, ...step.inputs.map((i) => step.grads.get(i.mask)!)]);
      const natLoss = (nat[step.loss].data as Float32Array)[0];
      if (!Number.isFinite(natLoss) || !Number.isFinite(robLoss)) fail(`ANP diverged at iteration ${it + 1} (loss ${natLoss}, perturbed ${robLoss}); lower --lr or --eps`);
      // Mask step: SGD with momentum 0.9 on α·clean + (1 − α)·perturbed, then back into [0, 1].
      const a = robust ? s.alpha : 1;
      step.inputs.forEach((inp, k) => {
        const gn = gradOf(nat, inp.mask);
        const m = masks[k];
        const v = velocity[k];
        for (let u = 0; u < m.length; u++) {
          const grad = a * gn[u] + (robust ? (1 - a) * robust[k][u] : 0);
          v[u] = 0.9 * v[u] + grad;
          m[u] = Math.max(0, Math.min(1, m[u] - s.lr * v[u]));
        }
      });
      natSum += natLoss;
      robSum += robLoss;
      count++;
      if ((it + 1) % every === 0 || it + 1 === s.iterations) {
        lossCurve.push({ iteration: it + 1, natural: natSum / count, robust: robSum / count });
        natSum = robSum = count = 0;
      }
      onIteration?.(it + 1, s.iterations, a * natLoss + (1 - a) * robLoss);
    }
    return { masks, lossCurve };
  } finally {
    await session.release();
  }
}

/**
 * ANP: masks learned on part of the clean data under adversarial neuron perturbation, then the neurons below
 * the threshold pruned (smallest mask first, within the held-out clean-accuracy budget).
 */
export async function anp(model: Model, data: NcData, opts: AnpOptions = {}): Promise<AnpResult> {
  const s = checkAnpOptions(opts);
  const { clean } = data;
  checkRepairData(model, data, "ANP");
  const sites = anpSites(model, opts.layers);
  const t0 = performance.now();
  const { train: tr, held: he, heldSet: held } = splitClean(clean, s.holdout, s.seed, "ANP");
  const { masks, lossCurve } = await learnAnpMasks(model, tr.x, tr.y, sites, s, opts.onIteration);
  const t1 = performance.now();

  const ranked: AnpNeuron[] = masks.flatMap((m, site) => Array.from(m, (mask, unit) => ({ site, unit, mask }))).sort((p, q) => p.mask - q.mask || p.site - q.site || p.unit - q.unit);
  const below = ranked.filter((p) => p.mask < s.threshold);
  const accOf = async (m: Model) => countCorrect(await predictLabels(m, held, { batchSize: opts.evalBatchSize }), he.y) / he.y.length;
  const base = await accOf(model);
  // Longest prefix of `below` within the budget: halving search over the prefix length (accuracy falls
  // roughly monotonically with more neurons pruned; the chosen prefix is always checked directly).
  let k = below.length;
  let acc = k ? await accOf(anpPrunedModel(model, sites, below.slice(0, k))) : base;
  if (base - acc > s.maxDrop) {
    let lo = 0, hi = k, loAcc = base;
    while (hi - lo > 1) {
      const mid = (lo + hi) >> 1;
      const a = await accOf(anpPrunedModel(model, sites, below.slice(0, mid)));
      if (base - a <= s.maxDrop) [lo, loAcc] = [mid, a];
      else hi = mid;
    }
    k = lo;
    acc = loAcc;
  }
  const pruned = below.slice(0, k);
  const repaired = anpPrunedModel(model, sites, pruned);
  const ev = await evaluateModels(model, repaired, ncEvalSets(data, []), opts.evalBatchSize);
  return {
    ...ev,
    model: repaired,
    gGraph: gFromPair(model, repaired, `${model.name}_anp_G`),
    sites,
    masks,
    pruned,
    belowThreshold: below.length,
    heldOut: { before: base, after: acc, n: he.y.length },
    lossCurve,
    settings: s,
    seconds: { masks: (t1 - t0) / 1000, prune: (performance.now() - t1) / 1000 },
  };
}

/** UserError unless the clean (and any test / poisoned) data fit the model, with labels. */
export function checkRepairData(model: Model, data: NcData, what: string): void {
  checkData(model, data.clean, `${what} (clean data)`);
  if (data.clean.size < 2) fail(`${what} needs at least 2 clean images, got ${data.clean.size} in ${data.clean.name}`);
  if (data.test) checkData(model, data.test, "clean test accuracy");
  if (data.poisoned) checkData(model, data.poisoned, "attack success rate");
}
