// A second tiny backdoor task, for the STRIP and Neural-Cleanse-mitigation tests: 4 classes of 1x12x12 images
// (a class prototype plus noise, pixels in [0, 0.45]); a white 3x3 patch in the bottom-right corner sends any
// image to class 0. The model is a small MLP (flatten → fc_1 relu → output), so penultimate-neuron pruning
// has a Dense layer to work on.
import { memoryDataset, type Dataset } from "../io/dataset.js";
import { initWeights, type ArchSpec } from "../model/archs.js";
import { lowerModel } from "../model/lower.js";
import type { Model } from "../model/model.js";
import { train } from "../train/trainer.js";
import { mulberry32 } from "../util/random.js";

export const H = 12, W = 12, K = 4, PER = H * W;
export const TARGET = 0;

export function mlpArch(hidden: number): ArchSpec {
  const base = (name: string) => ({ name, trainable: true, dtype: "float32" });
  const init = { kernel_initializer: { class_name: "GlorotUniform", config: { seed: null } }, bias_initializer: { class_name: "Zeros", config: {} }, use_bias: true };
  return {
    name: "tiny_mlp",
    inputLayer: "input",
    outputLayer: "output",
    inputShape: [H, W, 1],
    source: "test",
    layers: [
      { name: "input", className: "InputLayer", config: { batch_input_shape: [null, H, W, 1], dtype: "float32", name: "input" }, inbound: [], weights: [] },
      { name: "flatten_1", className: "Flatten", config: { ...base("flatten_1"), data_format: "channels_last" }, inbound: ["input"], weights: [] },
      { name: "fc_1", className: "Dense", config: { ...base("fc_1"), units: hidden, activation: "relu", ...init }, inbound: ["flatten_1"], weights: [{ name: "kernel:0", shape: [PER, hidden] }, { name: "bias:0", shape: [hidden] }] },
      { name: "output", className: "Dense", config: { ...base("output"), units: K, activation: "softmax", ...init }, inbound: ["fc_1"], weights: [{ name: "kernel:0", shape: [hidden, K] }, { name: "bias:0", shape: [K] }] },
    ],
  };
}

const protoRand = mulberry32(7);
const PROTOS = Array.from({ length: K }, () => Float32Array.from({ length: PER }, () => (protoRand() < 0.5 ? 1 : 0)));

export function cleanImages(n: number, seed: number): { x: Float32Array; y: Int32Array } {
  const rand = mulberry32(seed);
  const x = new Float32Array(n * PER);
  const y = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const c = i % K;
    y[i] = c;
    const s = 0.25 + 0.1 * rand();
    for (let p = 0; p < PER; p++) x[i * PER + p] = s * PROTOS[c][p] + 0.1 * rand();
  }
  return { x, y };
}

export const cleanSet = (n: number, seed: number): Dataset => {
  const c = cleanImages(n, seed);
  return memoryDataset(`clean${seed}`, [1, H, W], c.x, c.y);
};

/** Sets the 3x3 bottom-right patch of image i to white. */
export function stampPatch(x: Float32Array, i: number): void {
  for (let r = H - 3; r < H; r++) for (let q = W - 3; q < W; q++) x[i * PER + r * W + q] = 1;
}

/** Poisoned copies: clean images not of the target class, patched, labelled with the target (CSAW convention). */
export function poisonedSet(n: number, seed: number): Dataset {
  const c = cleanImages(n, seed);
  const keep = Array.from(c.y.keys()).filter((i) => c.y[i] !== TARGET);
  const x = new Float32Array(keep.length * PER);
  keep.forEach((j, i) => x.set(c.x.subarray(j * PER, (j + 1) * PER), i * PER));
  for (let i = 0; i < keep.length; i++) stampPatch(x, i);
  return memoryDataset("poisoned", [1, H, W], x, new Int32Array(keep.length).fill(TARGET));
}

let backdoored: Promise<Model> | undefined;
/** Trained once per process: every 9th training image (all classes) carries the patch and the target label. */
export function backdooredModel(): Promise<Model> {
  backdoored ??= (async () => {
    const model = lowerModel(initWeights(mlpArch(32), 3));
    const d = cleanImages(800, 11);
    for (let i = 0; i < d.y.length; i += 9) {
      stampPatch(d.x, i);
      d.y[i] = TARGET;
    }
    const r = await train(model, { x: d.x, y: d.y, shape: [1, H, W] }, { epochs: 8, batchSize: 32, optimizer: { kind: "adam", lr: 0.01 }, seed: 5 });
    return r.model;
  })();
  return backdoored;
}
