// BatchNormalization with batch statistics, for training. A model's BatchNormalization nodes normalise with
// their running statistics (inference mode). Fine-tuning through those frozen statistics trains a network
// with no normalisation at all: on a trained PreAct/ResNet18 export, FT-SAM's five epochs of Adam then took
// clean accuracy from 77% to 17%, while the same run with batch statistics kept 77% (PyTorch, README).
// The rewrite switches the node to ONNX's training mode (training_mode=1): onnxruntime computes the batch's
// per-channel mean and biased variance inside the one kernel, and with momentum 0 the node's second and third
// outputs ("running" statistics after the update) are exactly those batch statistics, which
// train/batch-norm-stats.ts reads. Reverse mode then has one closed-form rule for the node (autodiff.ts):
// until 2026-12-08 the statistics were computed with ReduceMean/Sub/Mul in front of an inference-mode node
// and differentiated op by op, a dozen full passes over the activations per BatchNorm (README, "PyTorch exports").
import { attr, Graph, GraphError } from "./ir.js";

/** One rewritten BatchNormalization: where its running statistics live and the batch's, as graph values. */
export interface BatchStatistic {
  /** Initializer names of the running mean and variance the inference graph reads. */
  mean: string;
  variance: string;
  /** Per-channel batch mean and biased batch variance ([C], computed from the batch). */
  batchMean: string;
  batchVariance: string;
}

/** Rewrites every BatchNormalization of `g` (in place) to normalise with the batch's statistics. */
export function useBatchStatistics(g: Graph): BatchStatistic[] {
  const out: BatchStatistic[] = [];
  for (const n of g.nodes.filter((m) => m.op === "BatchNormalization")) {
    if (n.attrs.training_mode?.kind === "int" && n.attrs.training_mode.value === 1) throw new GraphError(`BatchNormalization "${n.outputs[0]}" is already in training mode`);
    const [x, , , mean, variance] = n.inputs;
    if (!g.initializers.has(mean) || !g.initializers.has(variance)) throw new GraphError(`BatchNormalization "${n.outputs[0]}": its running statistics are not stored values`);
    const shape = g.shape(x);
    if (shape.length < 2) throw new GraphError(`BatchNormalization "${n.outputs[0]}": input of rank ${shape.length}`);
    if (n.outputs.length > 1) throw new GraphError(`BatchNormalization "${n.outputs[0]}": has ${n.outputs.length} outputs in inference mode`);
    const batchMean = g.fresh(`${mean}/batch`);
    const batchVariance = g.fresh(`${variance}/batch`);
    n.attrs = { ...n.attrs, training_mode: attr.int(1), momentum: attr.float(0) };
    n.outputs = [n.outputs[0], batchMean, batchVariance];
    for (const v of [batchMean, batchVariance]) g.values.set(v, { name: v, dtype: g.info(x).dtype, shape: [shape[1]] });
    out.push({ mean, variance, batchMean, batchVariance });
  }
  return out;
}
