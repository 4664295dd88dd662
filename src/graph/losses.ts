// Loss terms built from plain ONNX ops, so autodiff differentiates them like any other node.
import { attr, type Graph } from "./ir.js";

/**
 * Mean softmax cross-entropy over the batch. `targets` is [N, K] one-hot (or soft labels summing to 1
 * per row): dividing by Σ targets gives the batch mean without needing the batch size as a constant.
 */
export function softmaxCrossEntropy(g: Graph, logits: string, targets: string): string {
  const logp = g.op("LogSoftmax", [logits], { axis: attr.int(-1) });
  const picked = g.op("ReduceSum", [g.op("Mul", [logp, targets])], { keepdims: attr.int(0) });
  const count = g.op("ReduceSum", [targets], { keepdims: attr.int(0) });
  return g.op("Neg", [g.op("Div", [picked, count])]);
}

/** Σ|x| over all elements (the Neural Cleanse mask-size term). */
export function l1(g: Graph, x: string): string {
  return g.op("ReduceSum", [g.op("Abs", [x])], { keepdims: attr.int(0) });
}
