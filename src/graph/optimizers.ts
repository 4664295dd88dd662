// Optimizer updates as graph nodes, so one onnxruntime call does forward, backward and the update.
// State (momentum, Adam moments) enters as graph inputs and leaves as outputs; the caller feeds it back.
import { tensor, type Graph, type TensorData } from "./ir.js";

export type OptimizerConfig =
  | { kind: "sgd"; lr: number; momentum?: number; weightDecay?: number }
  | { kind: "adam"; lr: number; beta1?: number; beta2?: number; eps?: number; weightDecay?: number };

export interface UpdateSlot {
  param: string;
  /** Output holding the updated parameter. */
  next: string;
  /** State inputs and the outputs that replace them after a step. */
  state: { input: string; output: string; init: TensorData }[];
}

export interface OptimizerGraph {
  slots: UpdateSlot[];
  /** Scalar input: the step's learning rate (Adam: already bias-corrected, see stepLr). */
  lrInput: string;
}

const zerosLike = (shape: number[]): TensorData => tensor("float32", shape, new Float32Array(shape.reduce((p, q) => p * q, 1)));

export function addOptimizer(g: Graph, grads: Map<string, string>, cfg: OptimizerConfig): OptimizerGraph {
  const lr = g.addInput("lr", "float32", []);
  const slots: UpdateSlot[] = [];
  for (const [param, grad0] of grads) {
    const shape = g.staticShape(param);
    const wd = cfg.weightDecay ?? 0;
    const grad = wd > 0 ? g.op("Add", [grad0, g.op("Mul", [param, g.scalar(wd)])]) : grad0;
    if (cfg.kind === "sgd") {
      const mom = cfg.momentum ?? 0.9;
      if (mom === 0) {
        slots.push({ param, next: g.op("Sub", [param, g.op("Mul", [grad, lr])]), state: [] });
        continue;
      }
      const v = g.addInput(`${param}.velocity`, "float32", shape);
      const vNext = g.op("Add", [g.op("Mul", [v, g.scalar(mom)]), grad]);
      slots.push({ param, next: g.op("Sub", [param, g.op("Mul", [vNext, lr])]), state: [{ input: v, output: vNext, init: zerosLike(shape) }] });
    } else {
      const b1 = cfg.beta1 ?? 0.9, b2 = cfg.beta2 ?? 0.999, eps = cfg.eps ?? 1e-8;
      const m = g.addInput(`${param}.m`, "float32", shape);
      const v = g.addInput(`${param}.v`, "float32", shape);
      const mNext = g.op("Add", [g.op("Mul", [m, g.scalar(b1)]), g.op("Mul", [grad, g.scalar(1 - b1)])]);
      const vNext = g.op("Add", [g.op("Mul", [v, g.scalar(b2)]), g.op("Mul", [g.op("Mul", [grad, grad]), g.scalar(1 - b2)])]);
      const upd = g.op("Div", [mNext, g.op("Add", [g.op("Sqrt", [vNext]), g.scalar(eps)])]);
      slots.push({
        param,
        next: g.op("Sub", [param, g.op("Mul", [upd, lr])]),
        state: [
          { input: m, output: mNext, init: zerosLike(shape) },
          { input: v, output: vNext, init: zerosLike(shape) },
        ],
      });
    }
  }
  return { slots, lrInput: lr };
}

/** Learning rate to feed at 1-based step t (Adam folds its bias correction into it). */
export function stepLr(cfg: OptimizerConfig, t: number, lr = cfg.lr): number {
  if (cfg.kind === "sgd") return lr;
  const b1 = cfg.beta1 ?? 0.9, b2 = cfg.beta2 ?? 0.999;
  return (lr * Math.sqrt(1 - b2 ** t)) / (1 - b1 ** t);
}
