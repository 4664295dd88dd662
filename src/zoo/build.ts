// The ground-truth zoo: clean and backdoored zoo CNNs trained on Fashion-MNIST, each with the files a defense
// needs (model, clean/poisoned test sets, held-out clean validation data, the true trigger) and a manifest
// whose accuracy/ASR come from evaluating the written files, so `badnet eval` on them reproduces it exactly.
import { copyFileSync, existsSync, mkdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { blendTrigger, isTransform, patchTrigger, pixelMax, poisonTestSet, poisonTrainingSet, stampTrigger, toPixels, triggerRgba, type Attack } from "../attacks/poison.js";
import { lowFrequencyTransform, randomPositionTransform, sigTransform, transformPreviewRgba, wanetTransform } from "../attacks/transforms.js";
import { fail } from "../errors.js";
import { accuracyOf, checkData, evaluate } from "../eval/evaluate.js";
import { openDataset } from "../io/open-dataset.js";
import { encodePng } from "../io/images.js";
import { loadFashionMnistRaw, type RawImages } from "../io/fashion-mnist.js";
import { writeCsawH5 } from "../io/csaw-h5.js";
import { loadModel } from "../io/load-model.js";
import { saveRepaired } from "../io/save-model.js";
import { coveringKernels, zooCnn } from "../model/archs.js";
import { predictLabels } from "../model/forward.js";
import { lowerModel } from "../model/lower.js";
import type { Model } from "../model/model.js";
import type { ModelSpec } from "../model/spec.js";
import { shuffled, train, type EpochStats, type TrainData } from "../train/trainer.js";
import { mulberry32 } from "../util/random.js";
import { sessionSettings } from "../runtime/session.js";

export const ZOO_INPUT_SCALE = 255;

export interface ZooNetOptions {
  /** [H, W, C] */
  inputShape: [number, number, number];
  numClasses: number;
  seed: number;
  filters?: [number, number, number];
  hidden?: number;
  name?: string;
}

/** The zoo CNN (src/model/archs.ts: last conv "conv_3", kernels from coveringKernels), Glorot-initialized. */
export function zooNet(opts: ZooNetOptions): ModelSpec {
  return zooCnn({ ...opts });
}

export function zooArchName(h: number, w: number): string {
  return `zoo-cnn (conv_1..3 16/32/64 filters, kernels ${coveringKernels(h, w).join("/")}, 2x2 max-pools, fc_1 128, softmax)`;
}

/** One trigger of a model: the poisoned test file it gets and its share of the training set. */
export interface ZooAttack {
  trigger: Attack;
  target: number;
  rate: number;
  /** Clean-label: only target-class images are poisoned, labels unchanged (SIG). */
  cleanLabel?: boolean;
  /** Short trigger name for files: poisoned_test.h5 when the model has one trigger, else poisoned_test_t<target>.h5. */
  kind: string;
}

export interface ZooModelPlan {
  name: string;
  attack: string;
  description: string;
  /** Offset added to the zoo seed (init, shuffling and poisoning seeds). */
  seedOffset: number;
  attacks: ZooAttack[];
}

/** The zoo's models for images of `shape` ([C, H, W], scaled by ZOO_INPUT_SCALE). */
export function zooPlan(shape: [number, number, number], seed: number): ZooModelPlan[] {
  const max = pixelMax(ZOO_INPUT_SCALE);
  return [
    { name: "clean_a", attack: "none", description: "clean model", seedOffset: 1, attacks: [] },
    { name: "clean_b", attack: "none", description: "clean model, second seed", seedOffset: 2, attacks: [] },
    {
      name: "badnet_patch",
      attack: "badnets-patch",
      description: "BadNets: 3x3 white square near the bottom-right corner, all-to-one → 0",
      seedOffset: 3,
      attacks: [{ trigger: patchTrigger(shape, { size: 3, max, corner: "bottom-right", margin: 1 }), target: 0, rate: 0.1, kind: "patch" }],
    },
    {
      name: "blend",
      attack: "blend",
      description: "blended random pattern (alpha 0.2) over the whole image, all-to-one → 7",
      seedOffset: 4,
      attacks: [{ trigger: blendTrigger(shape, { seed: seed + 1004, alpha: 0.2, max }), target: 7, rate: 0.1, kind: "blend" }],
    },
    {
      name: "multi_trigger",
      attack: "multi-trigger",
      description: "two triggers: 3x3 white square top-left → 1, 5x5 white-on-black cross bottom-left → 5",
      seedOffset: 5,
      attacks: [
        { trigger: patchTrigger(shape, { size: 3, max, corner: "top-left", margin: 1 }), target: 1, rate: 0.08, kind: "square" },
        {
          trigger: stampTrigger(shape, ["xooox", "oxoxo", "ooxoo", "oxoxo", "xooox"], { max, corner: "bottom-left", margin: 1, name: "5x5 white-on-black cross" }),
          target: 5,
          rate: 0.08,
          kind: "cross",
        },
      ],
    },
    {
      name: "large_checker_tr",
      attack: "badnets-large-checker",
      description: "large 8x8 black/white checkerboard (2x2 cells) at the top-right corner, all-to-one → 3",
      seedOffset: 6,
      attacks: [
        {
          trigger: stampTrigger(shape, ["xxooxxoo", "xxooxxoo", "ooxxooxx", "ooxxooxx", "xxooxxoo", "xxooxxoo", "ooxxooxx", "ooxxooxx"], {
            max,
            corner: "top-right",
            margin: 0,
            name: "8x8 checkerboard (2x2 cells)",
          }),
          target: 3,
          rate: 0.1,
          kind: "checker",
        },
      ],
    },
    {
      name: "sig",
      attack: "sig",
      description: "SIG, clean-label: sinusoid (delta 40/255, frequency 6) added to 8% of the training set, all of it class 8, labels unchanged → 8",
      seedOffset: 7,
      attacks: [{ trigger: sigTransform(shape, { max, delta: (40 / 255) * max, frequency: 6 }), target: 8, rate: 0.08, kind: "sig", cleanLabel: true }],
    },
    {
      name: "wanet",
      attack: "wanet",
      description: "WaNet-style warp: one fixed smooth 4x4 random warp field (strength 2, about 1 pixel), 10%, all-to-one → 2 (no noise mode)",
      seedOffset: 8,
      attacks: [{ trigger: wanetTransform(shape, { seed: seed + 1008, k: 4, strength: 2 }), target: 2, rate: 0.1, kind: "wanet" }],
    },
    {
      name: "low_rate_patch",
      attack: "badnets-low-rate",
      description: "BadNets at a 0.5% poisoning rate: 3x3 white square near the bottom-left corner, all-to-one → 6",
      seedOffset: 9,
      attacks: [{ trigger: patchTrigger(shape, { size: 3, max, corner: "bottom-left", margin: 1 }), target: 6, rate: 0.005, kind: "patch" }],
    },
    {
      name: "random_pos",
      attack: "badnets-random-position",
      description: "4x4 black/white checkerboard at a random position in each poisoned image, 10%, all-to-one → 4",
      seedOffset: 10,
      attacks: [{ trigger: randomPositionTransform(shape, ["xoxo", "oxox", "xoxo", "oxox"], { max, name: "4x4 checkerboard" }), target: 4, rate: 0.1, kind: "random-checker" }],
    },
    {
      name: "lf",
      attack: "low-frequency",
      description: "low-frequency trigger: smooth random pattern (DCT frequencies <= 3, peak 20% of the range) added, 10%, all-to-one → 9",
      seedOffset: 11,
      attacks: [{ trigger: lowFrequencyTransform(shape, { max, seed: seed + 1011, eps: 0.2, maxFreq: 3 }), target: 9, rate: 0.1, kind: "lf" }],
    },
  ];
}

export interface ZooManifest {
  name: string;
  attack: string;
  description: string;
  targets: number[];
  /** One per trigger. */
  triggers: { target: number; description: string; poisonRate: number; poisonedTest: string; image: string; cleanLabel?: boolean }[];
  /** Share of training images carrying any trigger. */
  poisonRate: number;
  cleanAccuracy: number;
  /** Attack success rate per target label ("0": 0.99), measured on the written poisoned test file(s). */
  asr: Record<string, number>;
  seed: number;
  epochs: number;
  trainSeconds: number;
  inputScale: number;
  arch: string;
  dataset: string;
  trainSize: number;
  validSize: number;
  testSize: number;
  files: { model: string; onnx: string; cleanTest: string; valid: string };
  history: EpochStats[];
}

export interface ZooIndex {
  dataset: string;
  inputScale: number;
  seed: number;
  epochs: number;
  trainSize: number;
  validSize: number;
  testSize: number;
  totalSeconds: number;
  models: (Pick<ZooManifest, "name" | "attack" | "targets" | "cleanAccuracy" | "asr" | "trainSeconds"> & { dir: string })[];
}

export interface BuildZooOptions {
  out: string;
  epochs?: number;
  /** Training images (default 55,000). */
  trainSize?: number;
  /** Held-out clean validation images from the training split, never trained on (default 5,000). */
  validSize?: number;
  /** Test images from the test split (default all 10,000). */
  testSize?: number;
  seed?: number;
  only?: string[];
  batchSize?: number;
  lr?: number;
  /** Fashion-MNIST directory (default: the Debian package's). */
  dataDir?: string;
  log?: (line: string) => void;
  onBatch?: (model: string, done: number, total: number, loss: number) => void;
  onModelStart?: (model: string, epochs: number, imagesPerEpoch: number) => void;
}

export const ZOO_DEFAULTS = { epochs: 5, trainSize: 55_000, validSize: 5_000, testSize: 10_000, seed: 0, batchSize: 128, lr: 5e-3 };

/** Learning-rate multiplier per epoch: constant for the first half, then halved each epoch (settles the weights). */
export function zooLrSchedule(epochs: number): (epoch: number) => number {
  const flat = Math.ceil(epochs / 2);
  return (e) => (e < flat ? 1 : 0.5 ** (e - flat + 1));
}

/**
 * Indices into the training split: `valid` (the defenses' clean data, never trained on) and `train`, disjoint,
 * from one seeded permutation shared by every model of the zoo.
 */
export function zooSplit(n: number, validSize: number, trainSize: number, seed: number): { valid: Int32Array; train: Int32Array } {
  if (validSize + trainSize > n) throw new Error(`zooSplit: ${validSize} + ${trainSize} images requested of ${n}`);
  const order = shuffled(n, mulberry32(seed + 7919));
  return { valid: order.slice(0, validSize), train: order.slice(validSize, validSize + trainSize) };
}

function subset(raw: RawImages, idx: ArrayLike<number>): { pixels: Uint8Array; labels: Int32Array } {
  const [, c, h, w] = raw.shape;
  const per = c * h * w;
  const pixels = new Uint8Array(idx.length * per);
  const labels = new Int32Array(idx.length);
  for (let i = 0; i < idx.length; i++) {
    const j = idx[i]!;
    pixels.set(raw.pixels.subarray(j * per, (j + 1) * per), i * per);
    labels[i] = raw.labels![j]!;
  }
  return { pixels, labels };
}

function toTrainData(pixels: Uint8Array, labels: Int32Array, shape: [number, number, number]): TrainData {
  const x = new Float32Array(pixels.length);
  for (let i = 0; i < x.length; i++) x[i] = pixels[i]! / ZOO_INPUT_SCALE;
  return { x, y: labels, shape };
}

function checkSize(what: string, v: number, max: number): void {
  if (!Number.isInteger(v) || v < 1 || v > max) fail(`zoo: ${what} must be an integer in 1..${max}, got ${v}`);
}

async function writeH5(path: string, d: TrainData): Promise<void> {
  const [c, h, w] = d.shape;
  await writeCsawH5(path, toPixels(d.x, ZOO_INPUT_SCALE), [d.y.length, c, h, w], d.y);
}

function writePng(path: string, rgbaOrGray: Uint8Array, w: number, h: number, channels: 1 | 4): void {
  writeFileSync(path, encodePng(rgbaOrGray, w, h, channels));
}

/** File name of a model's poisoned test set for one of its triggers. */
export function poisonedTestFile(plan: ZooModelPlan, a: ZooAttack): string {
  return plan.attacks.length === 1 ? "poisoned_test.h5" : `poisoned_test_t${a.target}.h5`;
}

function triggerFile(plan: ZooModelPlan, a: ZooAttack): string {
  return plan.attacks.length === 1 ? "trigger.png" : `trigger_t${a.target}.png`;
}

/** Trains one model of the plan and writes its directory; returns its manifest. */
async function buildOne(
  plan: ZooModelPlan,
  dir: string,
  ctx: {
    seed: number;
    epochs: number;
    batchSize: number;
    lr: number;
    shape: [number, number, number];
    trainSet: TrainData;
    testSet: TrainData;
    sharedFiles: { cleanTest: string; valid: string };
    sizes: { train: number; valid: number; test: number };
    opts: BuildZooOptions;
  },
): Promise<ZooManifest> {
  const { shape } = ctx;
  const [C, H, W] = shape;
  const seed = ctx.seed + plan.seedOffset;
  mkdirSync(dir, { recursive: true });

  // Poison: each trigger takes its share of images not already poisoned by an earlier one.
  let data: TrainData = ctx.trainSet;
  const taken: number[] = [];
  plan.attacks.forEach((a, i) => {
    const p = poisonTrainingSet(data, { trigger: a.trigger, target: a.target, rate: a.rate, seed: seed * 100 + i, exclude: taken, cleanLabel: a.cleanLabel });
    taken.push(...p.poisoned);
    data = { x: p.x, y: p.y, shape };
  });
  // Blended pixels land between uint8 levels: round them as the written test files are rounded.
  if (plan.attacks.length > 0) for (const j of taken) for (let k = j * C * H * W; k < (j + 1) * C * H * W; k++) data.x[k] = Math.round(data.x[k]! * ZOO_INPUT_SCALE) / ZOO_INPUT_SCALE;

  const spec = zooNet({ inputShape: [H, W, C], numClasses: 10, seed, name: plan.name });
  ctx.opts.onModelStart?.(plan.name, ctx.epochs, data.y.length);
  const t0 = performance.now();
  const { model, history } = await train(lowerModel(spec), data, {
    epochs: ctx.epochs,
    batchSize: ctx.batchSize,
    optimizer: { kind: "adam", lr: ctx.lr },
    seed,
    lrSchedule: zooLrSchedule(ctx.epochs),
    // Every core (or $BADNET_THREADS), not the one-thread rule for small gradient graphs (runtime/threads.ts):
    // the thread count changes the last bits of training, and the zoo is the ground truth the recorded tables
    // were measured on, so a rebuild must give the same models as before. Plain convs for the same reason:
    // the blocked NCHWc form (graph/nchwc.ts) rounds differently.
    session: { threads: sessionSettings().threads, blockedConvs: false },
    onBatch: (done, total, loss) => ctx.opts.onBatch?.(plan.name, done, total, loss),
    onEpoch: (s) => ctx.opts.log?.(`${plan.name} epoch ${s.epoch}/${ctx.epochs}: loss ${s.loss.toFixed(4)}, train accuracy ${(100 * s.accuracy).toFixed(2)}% (${s.seconds.toFixed(1)} s)`),
  });
  const trainSeconds = (performance.now() - t0) / 1000;

  await saveRepaired(dir, "model", model);
  copyFileSync(ctx.sharedFiles.cleanTest, join(dir, "clean_test.h5"));
  copyFileSync(ctx.sharedFiles.valid, join(dir, "valid.h5"));
  for (const a of plan.attacks) {
    // Per-image randomness of the test stamps (random position) is seeded apart from the training set's.
    await writeH5(join(dir, poisonedTestFile(plan, a)), poisonTestSet(ctx.testSet, a.trigger, a.target, seed * 100 + 99));
    const png = isTransform(a.trigger) ? transformPreviewRgba(a.trigger, ZOO_INPUT_SCALE) : triggerRgba(a.trigger, ZOO_INPUT_SCALE);
    writePng(join(dir, triggerFile(plan, a)), png, W, H, 4);
  }

  // The manifest's numbers come from the files as written, exactly what `badnet eval` would read.
  const saved = await loadModel(join(dir, "model.h5"));
  const clean = await openDataset(join(dir, "clean_test.h5"), { inputScale: ZOO_INPUT_SCALE });
  const cleanAccuracy = (await evaluate(saved, clean)).clean.accuracy;
  clean.close();
  const asr: Record<string, number> = {};
  for (const a of plan.attacks) asr[String(a.target)] = await attackSuccess(saved, join(dir, poisonedTestFile(plan, a)));

  const manifest: ZooManifest = {
    name: plan.name,
    attack: plan.attack,
    description: plan.description,
    targets: plan.attacks.map((a) => a.target),
    triggers: plan.attacks.map((a) => ({
      target: a.target,
      description: a.trigger.description,
      poisonRate: a.rate,
      poisonedTest: poisonedTestFile(plan, a),
      image: triggerFile(plan, a),
      ...(a.cleanLabel ? { cleanLabel: true } : {}),
    })),
    poisonRate: taken.length / data.y.length,
    cleanAccuracy,
    asr,
    seed,
    epochs: ctx.epochs,
    trainSeconds,
    inputScale: ZOO_INPUT_SCALE,
    arch: zooArchName(H, W),
    dataset: "fashion-mnist",
    trainSize: ctx.sizes.train,
    validSize: ctx.sizes.valid,
    testSize: ctx.sizes.test,
    files: { model: "model.h5", onnx: "model.onnx", cleanTest: "clean_test.h5", valid: "valid.h5" },
    history,
  };
  writeFileSync(join(dir, "manifest.json"), JSON.stringify(manifest, null, 2) + "\n");
  return manifest;
}

/** ASR of `model` on a CSAW poisoned file (share classified as the stored target label). */
export async function attackSuccess(model: Model, path: string): Promise<number> {
  const ds = await openDataset(path, { inputScale: ZOO_INPUT_SCALE });
  try {
    const labels = checkData(model, ds, "attack success rate");
    return accuracyOf(await predictLabels(model, ds), labels).accuracy;
  } finally {
    ds.close();
  }
}

/** Builds the zoo into `out` (created if missing): one directory per model plus zoo.json. */
export async function buildZoo(opts: BuildZooOptions): Promise<ZooIndex> {
  const t0 = performance.now();
  const epochs = opts.epochs ?? ZOO_DEFAULTS.epochs;
  const seed = opts.seed ?? ZOO_DEFAULTS.seed;
  const batchSize = opts.batchSize ?? ZOO_DEFAULTS.batchSize;
  const lr = opts.lr ?? ZOO_DEFAULTS.lr;
  if (!Number.isInteger(epochs) || epochs < 1) fail(`zoo: epochs must be a positive integer, got ${epochs}`);
  if (!Number.isInteger(seed) || seed < 0) fail(`zoo: seed must be a non-negative integer, got ${seed}`);
  if (existsSync(opts.out) && !statSync(opts.out).isDirectory()) fail(`zoo: output ${opts.out} exists and is not a directory`);

  const trainRaw = loadFashionMnistRaw("train", opts.dataDir);
  const testRaw = loadFashionMnistRaw("test", opts.dataDir);
  const [, C, H, W] = trainRaw.shape;
  const shape: [number, number, number] = [C, H, W];
  const n = trainRaw.shape[0];
  const validSize = opts.validSize ?? ZOO_DEFAULTS.validSize;
  checkSize("validation size", validSize, n - 1);
  const trainSize = opts.trainSize ?? Math.min(ZOO_DEFAULTS.trainSize, n - validSize);
  checkSize("training size", trainSize, n - validSize);
  const testSize = opts.testSize ?? Math.min(ZOO_DEFAULTS.testSize, testRaw.shape[0]);
  checkSize("test size", testSize, testRaw.shape[0]);

  const plans = zooPlan(shape, seed);
  const only = opts.only?.filter((s) => s.length > 0);
  // A list that names nothing (--only ",") must not fall through to "all": that is hours of training.
  if (only !== undefined && only.length === 0) fail(`zoo: --only names no model (known: ${plans.map((p) => p.name).join(", ")})`);
  for (const name of only ?? []) if (!plans.some((p) => p.name === name)) fail(`zoo: unknown model "${name}" (known: ${plans.map((p) => p.name).join(", ")})`);
  const chosen = only ? plans.filter((p) => only.includes(p.name)) : plans;

  const split = zooSplit(n, validSize, trainSize, seed);
  const valid = subset(trainRaw, split.valid);
  const trn = subset(trainRaw, split.train);
  const tst = subset(testRaw, Int32Array.from({ length: testSize }, (_, i) => i));
  const trainSet = toTrainData(trn.pixels, trn.labels, shape);
  const testSet = toTrainData(tst.pixels, tst.labels, shape);

  mkdirSync(opts.out, { recursive: true });
  const shared = { cleanTest: join(opts.out, ".clean_test.h5"), valid: join(opts.out, ".valid.h5") };
  await writeCsawH5(shared.cleanTest, tst.pixels, [testSize, C, H, W], tst.labels);
  await writeCsawH5(shared.valid, valid.pixels, [validSize, C, H, W], valid.labels);

  const index: ZooIndex = { dataset: "fashion-mnist", inputScale: ZOO_INPUT_SCALE, seed, epochs, trainSize, validSize, testSize, totalSeconds: 0, models: [] };
  try {
    for (const plan of chosen) {
      const m = await buildOne(plan, join(opts.out, plan.name), {
        seed, epochs, batchSize, lr, shape, trainSet, testSet, sharedFiles: shared,
        sizes: { train: trainSize, valid: validSize, test: testSize }, opts,
      });
      index.models.push({ name: m.name, dir: plan.name, attack: m.attack, targets: m.targets, cleanAccuracy: m.cleanAccuracy, asr: m.asr, trainSeconds: m.trainSeconds });
    }
  } finally {
    for (const f of Object.values(shared)) if (existsSync(f)) rmSync(f, { force: true });
  }
  index.totalSeconds = (performance.now() - t0) / 1000;
  writeFileSync(join(opts.out, "zoo.json"), JSON.stringify(index, null, 2) + "\n");
  return index;
}

/** True when a backdoored model meets the zoo's bar (clean ≥ 88%, every ASR ≥ 95%); clean models need only accuracy. */
export function meetsTargets(m: Pick<ZooManifest, "cleanAccuracy" | "asr">, minClean = 0.88, minAsr = 0.95): boolean {
  return m.cleanAccuracy >= minClean && Object.values(m.asr).every((a) => a >= minAsr);
}
