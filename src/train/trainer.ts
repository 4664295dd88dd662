// Training loop: one compiled step graph (forward + backward + optimizer update) run batch by batch.
import { backward } from "../graph/autodiff.js";
import { tensor, type TensorData } from "../graph/ir.js";
import { softmaxCrossEntropy } from "../graph/losses.js";
import { addOptimizer, stepLr, type OptimizerConfig } from "../graph/optimizers.js";
import { maskChannels } from "../graph/transforms.js";
import { argmaxRows } from "../model/forward.js";
import type { Model, ParamRef } from "../model/model.js";
import { withParams } from "../model/params.js";
import { Session } from "../runtime/session.js";
import { mulberry32, shuffled } from "../util/random.js";

/** Labelled images in memory: x is NCHW float32 already scaled. */
export interface TrainData {
  x: Float32Array;
  y: Int32Array;
  shape: [number, number, number];
}

export interface EpochStats {
  epoch: number;
  loss: number;
  accuracy: number;
  seconds: number;
}

export interface TrainOptions {
  epochs: number;
  batchSize?: number;
  optimizer: OptimizerConfig;
  seed?: number;
  /** Which parameters learn (default: all). The others are frozen into the graph as constants. */
  trainable?: (p: ParamRef) => boolean;
  /** Layer value → per-channel 0/1 mask, held fixed during training (pruned channels stay at zero). */
  channelMasks?: Map<string, Float32Array>;
  /** Rewrites a batch in place before the step (poisoning, trigger stamping for unlearning). */
  transformBatch?: (x: Float32Array, y: Int32Array, rand: () => number) => void;
  /** Learning-rate multiplier per epoch (0-based), default 1. */
  lrSchedule?: (epoch: number) => number;
  /** After each epoch; `current()` builds the model with the parameters reached so far (for validation). */
  onEpoch?: (s: EpochStats, current: () => Model) => void | Promise<void>;
  onBatch?: (done: number, total: number, loss: number) => void;
}

// Moved to util/random.ts; re-exported for existing importers.
export { shuffled } from "../util/random.js";

export function oneHot(y: Int32Array, k: number): Float32Array {
  const out = new Float32Array(y.length * k);
  y.forEach((v, i) => (out[i * k + v] = 1));
  return out;
}

export async function train(model: Model, data: TrainData, opts: TrainOptions): Promise<{ model: Model; history: EpochStats[] }> {
  const g = model.graph.clone(`${model.name}_train`);
  for (const [value, mask] of opts.channelMasks ?? []) maskChannels(g, value, g.constant(tensor("float32", [mask.length], mask), "channel_mask"));
  const target = g.addInput("target", "float32", ["N", model.numClasses]);
  const loss = softmaxCrossEntropy(g, model.logits, target);
  const trainable = model.params.filter(opts.trainable ?? (() => true)).map((p) => p.value);
  const params = new Map<string, TensorData>();
  for (const p of trainable) params.set(p, g.liftInitializer(p));
  const grads = backward(g, loss, trainable);
  const opt = addOptimizer(g, grads, opts.optimizer);
  g.setOutputs([loss, model.logits, ...opt.slots.flatMap((s) => [s.next, ...s.state.map((st) => st.output)])]);
  // Released when train() returns or throws (e.g. on a diverged loss).
  await using session = await Session.create(g);

  const state = new Map<string, TensorData>();
  for (const s of opt.slots) for (const st of s.state) state.set(st.input, st.init);
  const rand = mulberry32(opts.seed ?? 0);
  const bs = opts.batchSize ?? 64;
  const [c, h, w] = data.shape;
  const per = c * h * w;
  const n = data.y.length;
  const history: EpochStats[] = [];
  let step = 0;
  for (let epoch = 0; epoch < opts.epochs; epoch++) {
    const t0 = performance.now();
    const order = shuffled(n, rand);
    let lossSum = 0, correct = 0;
    for (let start = 0; start < n; start += bs) {
      const count = Math.min(bs, n - start);
      const x = new Float32Array(count * per);
      const y = new Int32Array(count);
      for (let i = 0; i < count; i++) {
        const j = order[start + i];
        x.set(data.x.subarray(j * per, (j + 1) * per), i * per);
        y[i] = data.y[j];
      }
      opts.transformBatch?.(x, y, rand);
      step++;
      const lr = stepLr(opts.optimizer, step, opts.optimizer.lr * (opts.lrSchedule?.(epoch) ?? 1));
      const feeds: Record<string, TensorData> = {
        input: tensor("float32", [count, c, h, w], x),
        target: tensor("float32", [count, model.numClasses], oneHot(y, model.numClasses)),
        [opt.lrInput]: tensor("float32", [], Float32Array.of(lr)),
      };
      for (const [k, v] of params) feeds[k] = v;
      for (const [k, v] of state) feeds[k] = v;
      const out = await session.run(feeds);
      for (const s of opt.slots) {
        params.set(s.param, out[s.next]);
        for (const st of s.state) state.set(st.input, out[st.output]);
      }
      const l = (out[loss].data as Float32Array)[0];
      if (!Number.isFinite(l)) throw new Error(`training diverged at epoch ${epoch + 1} (loss ${l}); lower the learning rate`);
      lossSum += l * count;
      const pred = argmaxRows(out[model.logits].data as Float32Array, model.numClasses);
      pred.forEach((p, i) => (correct += p === y[i] ? 1 : 0));
      opts.onBatch?.(start + count, n, l);
    }
    const s = { epoch: epoch + 1, loss: lossSum / n, accuracy: correct / n, seconds: (performance.now() - t0) / 1000 };
    history.push(s);
    await opts.onEpoch?.(s, () => withParams(model, params));
  }
  return { model: withParams(model, params), history };
}
