// What a training loop trains when the network has, or had, BatchNorm. Two cases:
//   - BatchNormalization nodes in the graph (PreAct-ResNet's pre-activation ones): trained with batch
//     statistics (graph/batch-norm.ts), running statistics re-estimated afterwards (batch-norm-stats.ts).
//   - BatchNorms folded into the convs before us: torch.onnx.export folds every conv → BatchNorm pair into
//     the conv's weight and bias, so an exported ResNet18, VGG-BN or MobileNetV2 has none left. Fine-tuning
//     that graph trains an unnormalised network at learning rates chosen for a normalised one. Measured with
//     PyTorch on the trained fixtures (README): FT-SAM's defaults took the folded ResNet18 from 77.4% to 40.8%
//     clean accuracy; with a BatchNorm put back after every conv in training mode it kept 77.8%.
//     So for a network read from a framework's ONNX export (Model.origin; Keras keeps its BatchNorm layers,
//     never folds them; a network built and trained here from scratch never had any, nor the ONNX files we
//     write from those: onnx/provenance.ts) a BatchNorm is inserted after every conv with a bias
//     that no BatchNormalization reads (a PyTorch conv before a BatchNorm has no bias of its own: folding
//     gives it one), initialised to the identity on the clean data: running mean μ and variance σ² of the
//     conv's output there, scale √(σ² + ε), bias μ.
//     The trainee trains those scales and biases with the conv, and afterwards each is folded back into its
//     conv, W ← W·a, b ← (b − μ)·a + t with a = s/√(σ² + ε) (μ, σ² re-estimated for the trained weights),
//     so the network handed back has B's graph: same nodes, same parameter names.
import { attr, tensor, type Graph, type TensorData } from "../graph/ir.js";
import { forEachBatch, forwardGraph, type BatchSource } from "../model/forward.js";
import type { Model, ParamRef } from "../model/model.js";
import { withParams } from "../model/params.js";
import { withSession } from "../runtime/session.js";
import { gradientWork } from "../runtime/threads.js";
import { batchNormStatistics, DEFAULT_BATCH_NORM, poolStatistics, withStatistics, type BatchNormMode } from "./batch-norm-stats.js";

const EPS = 1e-5;

/** A conv given a BatchNorm for training: its parameters and the inserted node's. */
interface Inserted {
  weight: string;
  bias: string;
  scale: string;
  shift: string;
  mean: string;
  variance: string;
}

export interface BatchNormTraining {
  /** What the step graph trains: B, or B with BatchNorms re-inserted after its folded convs. */
  trainee: Model;
  /** Convs that were given a BatchNorm for training. */
  inserted: number;
  /** How the step graph treats the trainee's BatchNorms: "batch" where there are any to train (graph/batch-norm.ts). */
  stepMode: BatchNormMode;
  /** One line for the output, where BatchNorm is involved at all ("batch statistics (8 nodes), 19 put back ..."). */
  summary?: string;
  /**
   * The network handed back from the trainee's parameters `params`: running statistics re-estimated on the
   * clean `images` (batch statistics only), inserted BatchNorms folded back into their convs.
   */
  finish(params: Map<string, TensorData>, name?: string): Promise<Model>;
}

/**
 * The convs of `model` that get a BatchNorm for training (see the file comment): only in a network read from a
 * framework's ONNX export. Keras keeps its BatchNorm layers, and a network built here (the zoo, `train`) never had any.
 */
export function foldedConvs(model: Model): { node: string; output: string; weight: string; bias: string }[] {
  if (model.origin !== "onnx") return [];
  const params = new Set(model.params.map((p) => p.value));
  const readers = model.graph.consumers();
  const out: { node: string; output: string; weight: string; bias: string }[] = [];
  for (const n of model.graph.nodes) {
    if (n.op !== "Conv") continue;
    const [, weight, bias] = n.inputs;
    // Without a bias, or with parameters that are not trained, there is nothing to fold into.
    if (!bias || !params.has(weight) || !params.has(bias)) continue;
    // Folding writes the conv's own weight and bias: a value shared with another node stays as it is.
    if (readers.get(weight)!.length > 1 || readers.get(bias)!.length > 1) continue;
    if ((readers.get(n.outputs[0]) ?? []).some((r) => r.op === "BatchNormalization")) continue;
    out.push({ node: n.name, output: n.outputs[0], weight, bias });
  }
  return out;
}

/** Per-channel mean and biased variance of each value over `images` (NCHW values, one forward pass). */
async function valueStatistics(model: Model, values: string[], images: BatchSource, batchSize: number): Promise<{ mean: Float32Array; variance: Float32Array }[]> {
  const perBatch = values.map(() => [] as { count: number; mean: Float32Array; variance: Float32Array }[]);
  const g = forwardGraph(model, values);
  await withSession(g, (s) => forEachBatch(s, images, (res) => {
    values.forEach((v, i) => {
      const t = res[v];
      const [n, c] = t.shape as number[];
      const hw = (t.data as Float32Array).length / (n * c);
      const d = t.data as Float32Array;
      const mean = new Float32Array(c), variance = new Float32Array(c);
      for (let ch = 0; ch < c; ch++) {
        let sum = 0, sq = 0;
        for (let b = 0; b < n; b++) for (let q = 0, o = (b * c + ch) * hw; q < hw; q++) {
          sum += d[o + q];
          sq += d[o + q] * d[o + q];
        }
        const m = sum / (n * hw);
        mean[ch] = m;
        variance[ch] = Math.max(0, sq / (n * hw) - m * m);
      }
      perBatch[i].push({ count: n * hw, mean, variance });
    });
  }, { batchSize, input: model.input }), gradientWork(model, batchSize));
  return perBatch.map((b) => poolStatistics(b));
}

/** B with an identity-initialised BatchNorm after each of `convs` (the conv's output name moves to the BatchNorm's). */
function insertBatchNorms(model: Model, convs: ReturnType<typeof foldedConvs>, stats: { mean: Float32Array; variance: Float32Array }[]): { trainee: Model; inserted: Inserted[] } {
  const g: Graph = model.graph.clone(`${model.name}_bn_trainee`);
  const params: ParamRef[] = [...model.params];
  const inserted: Inserted[] = [];
  convs.forEach((c, i) => {
    const { mean, variance } = stats[i];
    const k = mean.length;
    const node = g.nodes.find((n) => n.outputs[0] === c.output)!;
    const pre = g.fresh(`${c.output}/pre_bn`);
    node.outputs = [pre];
    g.values.set(pre, { ...g.info(c.output), name: pre });
    g.values.delete(c.output);
    const scale = g.addInitializer(g.fresh(`${c.output}/bn_scale`), tensor("float32", [k], Float32Array.from(variance, (v) => Math.sqrt(v + EPS))));
    const shift = g.addInitializer(g.fresh(`${c.output}/bn_bias`), tensor("float32", [k], Float32Array.from(mean)));
    const m = g.addInitializer(g.fresh(`${c.output}/bn_mean`), tensor("float32", [k], Float32Array.from(mean)));
    const v = g.addInitializer(g.fresh(`${c.output}/bn_var`), tensor("float32", [k], Float32Array.from(variance)));
    g.add("BatchNormalization", [pre, scale, shift, m, v], { epsilon: attr.float(EPS) }, { outputs: [c.output] });
    params.push({ value: scale, layer: c.node, weight: "inserted BatchNorm scale" }, { value: shift, layer: c.node, weight: "inserted BatchNorm bias" });
    inserted.push({ weight: c.weight, bias: c.bias, scale, shift, mean: m, variance: v });
  });
  g.toposort();
  return { trainee: { ...model, name: g.name, graph: g, params }, inserted };
}

/** Each inserted BatchNorm folded back into its conv's weight and bias (file comment). */
export function foldBack(weight: Float32Array, bias: Float32Array, scale: Float32Array, shift: Float32Array, mean: Float32Array, variance: Float32Array, eps = EPS): { weight: Float32Array; bias: Float32Array } {
  const k = bias.length;
  const per = weight.length / k;
  const w = new Float32Array(weight.length), b = new Float32Array(k);
  for (let m = 0; m < k; m++) {
    const a = scale[m] / Math.sqrt(variance[m] + eps);
    for (let q = 0; q < per; q++) w[m * per + q] = weight[m * per + q] * a;
    b[m] = (bias[m] - mean[m]) * a + shift[m];
  }
  return { weight: w, bias: b };
}

/**
 * How `model` is trained on `images` (the clean training images; see the file comment). `mode` "frozen":
 * B as it is, its running statistics untouched.
 */
export async function prepareBatchNorm(
  model: Model,
  images: BatchSource,
  opts: { batchSize: number; mode?: BatchNormMode; channelMasks?: Map<string, Float32Array> },
): Promise<BatchNormTraining> {
  const mode = opts.mode ?? DEFAULT_BATCH_NORM;
  const convs = foldedConvs(model);
  const nodes = model.graph.nodes.filter((n) => n.op === "BatchNormalization").length;
  const plain = (name?: string, params?: Map<string, TensorData>) => withParams(model, params ?? new Map(), name ?? model.name);
  if (mode === "frozen" || (convs.length === 0 && nodes === 0)) {
    const summary = mode === "frozen" && nodes + convs.length > 0 ? `running statistics frozen (${nodes} BatchNorm node(s)), none put back after the ${convs.length} conv(s) without one (--batch-norm frozen)` : undefined;
    return { trainee: model, inserted: 0, stepMode: "frozen", summary, finish: async (params, name) => plain(name, params) };
  }
  const stats = convs.length ? await valueStatistics(model, convs.map((c) => c.output), images, opts.batchSize) : [];
  const { trainee, inserted } = convs.length ? insertBatchNorms(model, convs, stats) : { trainee: model, inserted: [] as Inserted[] };
  const own = new Set(model.params.map((p) => p.value));
  return {
    trainee,
    inserted: inserted.length,
    stepMode: "batch",
    summary: `batch statistics in training, running statistics re-estimated on the clean training images (${nodes} BatchNorm node(s); ${inserted.length} put back after convs the export folded one into, then folded back)`,
    finish: async (params, name) => {
      const trained = withParams(trainee, params);
      const running = await batchNormStatistics(trained, images, { batchSize: opts.batchSize, channelMasks: opts.channelMasks });
      const values = new Map([...params].filter(([k]) => own.has(k)));
      const value = (k: string) => (params.get(k) ?? trained.graph.initializers.get(k)!).data as Float32Array;
      for (const ins of inserted) {
        const f = foldBack(value(ins.weight), value(ins.bias), value(ins.scale), value(ins.shift), running.get(ins.mean)!.data as Float32Array, running.get(ins.variance)!.data as Float32Array);
        const w = model.graph.initializers.get(ins.weight)!, b = model.graph.initializers.get(ins.bias)!;
        values.set(ins.weight, tensor("float32", [...w.shape], f.weight));
        values.set(ins.bias, tensor("float32", [...b.shape], f.bias));
      }
      // B's own BatchNorms keep their re-estimated statistics.
      const ownStats = new Map([...running].filter(([k]) => model.graph.initializers.has(k)));
      return withStatistics(withParams(model, values, name ?? model.name), ownStats);
    },
  };
}
