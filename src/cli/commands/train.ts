// badnet train: fit a model (fresh architecture or a starting .h5/.onnx) on labelled images, write .h5 + .onnx.
import { basename, dirname, extname, join } from "node:path";
import { fail } from "../../errors.js";
import { evaluate } from "../../eval/evaluate.js";
import { checkLabels, checkShape, requireLabels, type Dataset } from "../../io/dataset.js";
import { loadModel } from "../../io/load-model.js";
import { saveRepaired } from "../../io/save-model.js";
import { ARCHS, initWeights } from "../../model/archs.js";
import { lowerModel } from "../../model/lower.js";
import type { Model } from "../../model/model.js";
import { distinctLabels, emptyClasses, labelRuns } from "../../train/classes.js";
import { train, type EpochStats, type TrainData } from "../../train/trainer.js";
import { zooNet } from "../../zoo/build.js";
import { MODEL_OPTIONS, dataFrom, inputScale, num, pct, progress, str, type Command, type Context } from "../command.js";
import type { Progress } from "../progress.js";
import { FORCE_OPTION, prepareOutFiles } from "../out-dir.js";
import { MAX_SEED } from "../../util/random.js";

const FRESH_ARCHS = ["zoo-cnn", ...Object.keys(ARCHS)];

/** All images and labels of a dataset in memory (read in chunks). */
export function readAll(ds: Dataset, what: string): TrainData {
  const y = requireLabels(ds, what);
  const per = ds.shape[0] * ds.shape[1] * ds.shape[2];
  const x = new Float32Array(ds.size * per);
  const chunk = 2048;
  for (let s = 0; s < ds.size; s += chunk) x.set(ds.read(s, Math.min(chunk, ds.size - s)), s * per);
  return { x, y: Int32Array.from(y), shape: [ds.shape[0], ds.shape[1], ds.shape[2]] };
}

function numClassesOf(ctx: Context, labels: Int32Array): number {
  let max = -1;
  for (const l of labels) if (l > max) max = l;
  // At least 2 distinct labels were checked before, so the default is at least 2 as well.
  return num(ctx, "num-classes", max + 1, { min: 2, max: 100000, integer: true });
}

/** UserError for data with a single label: there is nothing to learn to tell apart. */
function checkTwoLabels(y: Int32Array, data: string): void {
  const labels = distinctLabels(y);
  if (labels.length >= 2) return;
  const which = y.length === 1 ? "its only image has" : `all ${y.length} images have`;
  fail(`data ${data}: ${which} label ${labels[0]}; training needs images of at least 2 different labels`);
}

/** A warning (undefined when none) when some of the model's classes have no training image: it never learns them. */
export function emptyClassesWarning(y: Int32Array, numClasses: number, data: string): string | undefined {
  const empty = emptyClasses(y, numClasses);
  if (empty.length === 0) return undefined;
  if (empty.length === 1) return `WARNING: class ${empty[0]} of ${numClasses} has no training image in ${data}; the trained model will not learn to predict it`;
  return `WARNING: ${empty.length} of the ${numClasses} classes have no training image in ${data} (classes ${labelRuns(empty)}); the trained model will not learn to predict them`;
}

/** A freshly initialized network for the data's image shape ([C,H,W] → Keras [H,W,C]). */
function freshModel(arch: string, shape: [number, number, number], numClasses: number, seed: number): Model {
  const [c, h, w] = shape;
  if (arch === "zoo-cnn") return lowerModel(zooNet({ inputShape: [h, w, c], numClasses, seed }));
  const make = ARCHS[arch];
  if (!make) fail(`--arch ${arch}: unknown architecture (known: ${FRESH_ARCHS.join(", ")})`);
  return lowerModel(initWeights(make({ inputShape: [h, w, c], numClasses }), seed));
}

/** The files --out names: `X.h5` + `X.onnx` beside it, or just `X.onnx`. */
function outputFiles(out: string): string[] {
  const ext = extname(out).toLowerCase();
  if (ext !== ".h5" && ext !== ".onnx") fail(`--out ${out}: expected a .h5 (Keras + .onnx beside it) or .onnx file name`);
  return ext === ".h5" ? [out, join(dirname(out), `${basename(out, extname(out))}.onnx`)] : [out];
}

export const trainCommand: Command = {
  name: "train",
  summary: "train a model (fresh zoo-cnn/deepid or from a starting .h5) and save it as Keras .h5 + .onnx",
  usage:
    "--data D --input-scale S (--arch zoo-cnn | --model init.h5) --out model.h5 [--epochs 3] [--lr 1e-3] [--optimizer adam|sgd] [--batch-size 64] [--seed 0] [--valid V] [--num-classes K] [--force] [--json]",
  options: {
    data: { type: "string", description: "labelled training data (.h5, image folder, fashion-mnist:train)" },
    model: { type: "string", short: "m", description: "a Keras .h5 model to start from (instead of --arch)" },
    arch: { type: "string", description: "a fresh architecture to train (zoo-cnn or deepid)" },
    "input-scale": MODEL_OPTIONS["input-scale"],
    layout: MODEL_OPTIONS.layout,
    out: { type: "string", short: "o", description: "the model file to write (.h5; the .onnx goes beside it)" },
    epochs: { type: "string", description: "training epochs", defaultText: "3" },
    lr: { type: "string", description: "learning rate", defaultText: "1e-3" },
    optimizer: { type: "string", description: "adam or sgd", defaultText: "adam" },
    "batch-size": { type: "string", description: "training batch size", defaultText: "64" },
    seed: { type: "string", description: "seed of the initialization and the batch order", defaultText: "0" },
    valid: { type: "string", description: "labelled validation data, evaluated after each epoch" },
    "num-classes": { type: "string", description: "number of classes", defaultText: "largest training label + 1" },
    ...FORCE_OPTION,
  },
  async run(ctx) {
    const scale = await inputScale(ctx);
    const out = str(ctx, "out", true);
    const epochs = num(ctx, "epochs", 3, { min: 1, max: 10000, integer: true });
    const lr = num(ctx, "lr", 1e-3, { min: 0 });
    if (!(lr > 0)) fail(`--lr must be positive, got ${lr}`);
    const optimizer = str(ctx, "optimizer") ?? "adam";
    if (optimizer !== "adam" && optimizer !== "sgd") fail(`--optimizer must be adam or sgd, got "${optimizer}"`);
    const bs = num(ctx, "batch-size", 64, { min: 1, max: 65536, integer: true });
    const seed = num(ctx, "seed", 0, { min: 0, max: MAX_SEED, integer: true });
    const modelPath = str(ctx, "model");
    const arch = str(ctx, "arch");
    if (!modelPath && !arch) fail(`give --arch (${FRESH_ARCHS.join(" | ")}) for a fresh network or --model init.h5 to start from`);
    // Checked before any work: never an input (the start model, the data), never an existing file without --force.
    const outs = outputFiles(out);
    const dest = prepareOutFiles(ctx, outs, "--out");

    const ds = await dataFrom(ctx, "data", scale, true);
    const data = readAll(ds, "training");
    ds.close();
    if (data.y.length === 0) fail(`data ${ds.name} has no images`);
    checkTwoLabels(data.y, ds.name);
    const numClasses = numClassesOf(ctx, data.y);
    const start = modelPath ? await loadModel(modelPath, { arch }) : freshModel(arch!, data.shape, numClasses, seed);
    // A starting model keeps its classes; a different --num-classes would otherwise be dropped unsaid.
    if (modelPath && str(ctx, "num-classes") !== undefined && numClasses !== start.numClasses)
      fail(`--num-classes ${numClasses} does not match the ${start.numClasses} classes of --model ${modelPath}; leave --num-classes out when training from a model`);
    checkShape(ds, start.inputShape, `model ${start.name}`);
    checkLabels(ds, start.numClasses);
    // Said before training, not after: the user may rather stop and fix the data or --num-classes.
    const emptyWarning = emptyClassesWarning(data.y, start.numClasses, ds.name);
    if (emptyWarning) process.stderr.write(`badnet: ${emptyWarning}\n`);
    if (extname(out).toLowerCase() === ".h5" && !start.spec) fail(`--out ${out}: the starting model is ONNX, so only an .onnx file can be written`);
    const valid = await dataFrom(ctx, "valid", scale);
    if (valid) {
      checkShape(valid, start.inputShape, `model ${start.name}`);
      requireLabels(valid, "validation accuracy");
      checkLabels(valid, start.numClasses);
    }

    const log = (line: string) => {
      if (!ctx.quiet) process.stderr.write(line + "\n");
    };
    const epochs_: (EpochStats & { validAccuracy: number | null })[] = [];
    let bar: Progress | undefined;
    let shown = 0;
    const t0 = performance.now();
    const result = await train(start, data, {
      epochs,
      batchSize: bs,
      optimizer: { kind: optimizer, lr },
      seed,
      onBatch: (done, total, loss) => {
        bar ??= progress(ctx, `epoch ${epochs_.length + 1}/${epochs}`, total);
        bar.tick(done - shown, `loss ${loss.toFixed(4)}`);
        shown = done;
      },
      onEpoch: async (s, current) => {
        bar?.done();
        bar = undefined;
        shown = 0;
        const validAccuracy = valid ? (await evaluate(await current(), valid)).clean.accuracy : null;
        epochs_.push({ ...s, validAccuracy });
        log(
          `epoch ${s.epoch}/${epochs}  loss ${s.loss.toFixed(4)}  train accuracy ${pct(s.accuracy)}` +
            (validAccuracy === null ? "" : `  valid accuracy ${pct(validAccuracy)}`) +
            `  (${s.seconds.toFixed(1)} s)`,
        );
      },
    });
    const seconds = (performance.now() - t0) / 1000;
    valid?.close();
    const trained: Model = { ...result.model, name: start.name };
    const files = await dest.write((dir) => saveRepaired(dir, basename(out, extname(out)), trained));
    const last = epochs_[epochs_.length - 1]!;
    const json = {
      model: trained.name,
      start: modelPath ?? `${arch} (seed ${seed})`,
      data: ds.name,
      images: data.y.length,
      numClasses: trained.numClasses,
      optimizer,
      lr,
      batchSize: bs,
      seed,
      epochs: epochs_,
      finalLoss: last.loss,
      trainAccuracy: last.accuracy,
      validAccuracy: last.validAccuracy,
      seconds,
      files,
    };
    const text = [
      `trained ${trained.name} on ${data.y.length} images of ${ds.name}: ${epochs} epoch(s), ${optimizer} lr ${lr}, batch ${bs}, seed ${seed}`,
      `final loss ${last.loss.toFixed(4)}, train accuracy ${pct(last.accuracy)}` + (last.validAccuracy === null ? "" : `, valid accuracy ${pct(last.validAccuracy)}`),
      `time ${seconds.toFixed(1)} s`,
      ...files.map((f) => `wrote ${f}`),
    ].join("\n");
    return { json, text };
  },
};
