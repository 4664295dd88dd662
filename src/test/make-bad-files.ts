// Inputs for the CLI's end-to-end tests, written into a temp folder: broken or mismatched model/data/image
// files (each one wrong in exactly one way), and a small CSAW-format data set made of the fixture faces.
import { execFile } from "node:child_process";
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, readSync, readdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import h5wasm from "h5wasm/node";
import { gFromPair, writeOnnx } from "../defenses/g-model.js";
import { writeCsawH5 } from "../io/csaw-h5.js";
import { loadModel } from "../io/load-model.js";
import { decodeImage, encodePng, toChwBytes } from "../io/images.js";
import { CLI, fixture } from "./fixtures.js";

export interface FaceSet {
  /** Fixture PNG paths, sorted by name. */
  images: string[];
  /** The label each file name carries (`..._label<N>.png`). */
  labels: number[];
}

export interface FaceData {
  /** clean_*.png with their true labels, as a CSAW .h5 (uint8 N×C×H×W, float64 labels). */
  clean: string;
  cleanSet: FaceSet;
  /** sunglasses_*.png labelled with the attack's target 0, as a CSAW .h5. */
  poisoned: string;
  poisonedSet: FaceSet;
}

export interface BadFiles {
  dir: string;
  /** A folder named like a model. */
  dirModel: string;
  /** Plain text with an .h5 extension. */
  notHdf5: string;
  /** The first 4 KB of the real Keras 2.4 fixture. */
  truncated: string;
  /** The Keras 2.4 fixture, full length, with bytes 4 KB..40 KB (object headers, heaps) overwritten by noise. */
  corrupt: string;
  /** Valid HDF5 without model_config or layer_names (a data file with one small dataset). */
  plainHdf5: string;
  /** Keras full model whose model_config has an LSTM layer named "lstm_1". */
  lstmModel: string;
  /** CSAW-style data with `label` but no `data`. */
  noData: string;
  /** CSAW-style data with `data` but no `label`. */
  noLabel: string;
  /** Two 55x47x3 faces, the second labelled 5000 (DeepID has 1283 classes). */
  labelOutOfRange: string;
  /** Two 55x47x3 faces with their true labels: valid, but too few for some commands. */
  twoFaces: string;
  /** Two 28x28x1 images (Fashion-MNIST shaped), labels 0 and 1. */
  wrongShape: string;
  /** A 28x28 RGB PNG. */
  smallPng: string;
  /** Text in a file named .png. */
  notImage: string;
  /** G (N+1 classes) of the Keras 2.4 DeepID fixture beside itself, as repair writes one. */
  gModel: string;
}

const FACES = "csaw2020/images";

function faceSet(prefix: string): FaceSet {
  const dir = fixture(FACES);
  const names = readdirSync(dir)
    .filter((n) => n.startsWith(prefix) && n.endsWith(".png"))
    .sort();
  if (names.length === 0) throw new Error(`no ${prefix}*.png in ${dir}`);
  const labels = names.map((n) => {
    const m = /_label(\d+)\.png$/.exec(n);
    if (!m) throw new Error(`fixture ${n} carries no label in its name`);
    return Number(m[1]);
  });
  return { images: names.map((n) => join(dir, n)), labels };
}

/** The images as one uint8 N×C×H×W block (all must share a size). */
function pixelsOf(images: string[]): { data: Uint8Array; shape: [number, number, number, number] } {
  const decoded = images.map((p) => decodeImage(p));
  const { channels: c, height: h, width: w } = decoded[0];
  const per = c * h * w;
  const data = new Uint8Array(images.length * per);
  decoded.forEach((img, i) => {
    if (img.channels !== c || img.height !== h || img.width !== w) throw new Error(`${images[i]} differs in size from ${images[0]}`);
    toChwBytes(img, data, i * per);
  });
  return { data, shape: [images.length, c, h, w] };
}

async function writeSet(path: string, set: FaceSet): Promise<string> {
  const { data, shape } = pixelsOf(set.images);
  await writeCsawH5(path, data, shape, Int32Array.from(set.labels));
  return path;
}

export function tempDir(tag: string): string {
  return mkdtempSync(join(tmpdir(), `badnet-${tag}-`));
}

/** The clean and the sunglasses-poisoned fixture faces as CSAW .h5 files in `dir`. */
export async function makeFaceData(dir: string): Promise<FaceData> {
  const cleanSet = faceSet("clean_");
  const poisonedSet = faceSet("sunglasses_");
  return {
    clean: await writeSet(join(dir, "faces_clean.h5"), cleanSet),
    cleanSet,
    poisoned: await writeSet(join(dir, "faces_sunglasses.h5"), poisonedSet),
    poisonedSet,
  };
}

function head(path: string, bytes: number): Buffer {
  const fd = openSync(path, "r");
  try {
    const buf = Buffer.alloc(bytes);
    const n = readSync(fd, buf, 0, bytes, 0);
    return buf.subarray(0, n);
  } finally {
    closeSync(fd);
  }
}

type Typed = Uint8Array | Float32Array | Float64Array;

async function writeH5(path: string, entries: Record<string, { data: Typed; shape: number[] }>): Promise<string> {
  await h5wasm.ready;
  const f = new h5wasm.File(path, "w");
  try {
    for (const [name, { data, shape }] of Object.entries(entries)) f.create_dataset({ name, data, shape });
  } finally {
    f.close();
  }
  return path;
}

/**
 * A Keras 2.4-style full model: Input(10, 4) → LSTM(3) → Dense(2), with its weights, laid out as Keras writes
 * it. Everything about it is well formed; only the LSTM class is something the toolkit does not support.
 */
async function writeLstmModel(path: string): Promise<string> {
  const dense = (name: string, units: number, inbound: string) => ({
    class_name: "Dense",
    config: { name, trainable: true, dtype: "float32", units, activation: "softmax", use_bias: true },
    name,
    inbound_nodes: [[[inbound, 0, 0, {}]]],
  });
  const config = {
    class_name: "Functional",
    config: {
      name: "lstm_model",
      layers: [
        {
          class_name: "InputLayer",
          config: { batch_input_shape: [null, 10, 4], dtype: "float32", sparse: false, ragged: false, name: "input_1" },
          name: "input_1",
          inbound_nodes: [],
        },
        {
          class_name: "LSTM",
          config: { name: "lstm_1", trainable: true, dtype: "float32", units: 3, activation: "tanh", return_sequences: false },
          name: "lstm_1",
          inbound_nodes: [[["input_1", 0, 0, {}]]],
        },
        dense("dense_1", 2, "lstm_1"),
      ],
      input_layers: [["input_1", 0, 0]],
      output_layers: [["dense_1", 0, 0]],
    },
  };
  const weights: Record<string, { name: string; shape: number[] }[]> = {
    input_1: [],
    lstm_1: [
      { name: "kernel:0", shape: [4, 12] },
      { name: "recurrent_kernel:0", shape: [3, 12] },
      { name: "bias:0", shape: [12] },
    ],
    dense_1: [
      { name: "kernel:0", shape: [3, 2] },
      { name: "bias:0", shape: [2] },
    ],
  };
  await h5wasm.ready;
  const f = new h5wasm.File(path, "w");
  try {
    f.create_attribute("keras_version", "2.4.0", null, "S");
    f.create_attribute("backend", "tensorflow", null, "S");
    f.create_attribute("model_config", JSON.stringify(config), null, "A");
    const mw = f.create_group("model_weights");
    const layerNames = Object.keys(weights);
    mw.create_attribute("layer_names", layerNames, [layerNames.length], `A${Math.max(...layerNames.map((n) => n.length))}`);
    for (const [layer, ws] of Object.entries(weights)) {
      const g = mw.create_group(layer);
      if (ws.length === 0) {
        g.create_attribute("weight_names", new Float64Array(0), [0], "<d");
        continue;
      }
      const names = ws.map((w) => `${layer}/${w.name}`);
      g.create_attribute("weight_names", names, [names.length], `A${Math.max(...names.map((n) => n.length))}`);
      const inner = g.create_group(layer);
      for (const w of ws) {
        const size = w.shape.reduce((a, b) => a * b, 1);
        inner.create_dataset({ name: w.name, data: new Float32Array(size).fill(0.1), shape: w.shape, dtype: "<f4" });
      }
    }
  } finally {
    f.close();
  }
  return path;
}

/** Writes every broken input into `dir` (created if needed). */
export async function makeBadFiles(dir: string): Promise<BadFiles> {
  mkdirSync(dir, { recursive: true });
  const p = (name: string): string => join(dir, name);

  const dirModel = p("folder_model.h5");
  mkdirSync(dirModel, { recursive: true });

  const notHdf5 = p("not_hdf5.h5");
  writeFileSync(notHdf5, "this is a text file, not an HDF5 model\n".repeat(20));

  const truncated = p("truncated.h5");
  writeFileSync(truncated, head(fixture("thirdparty/keras24_functional_deepid.h5"), 4096));

  const corrupt = p("corrupt.h5");
  const bytes = readFileSync(fixture("thirdparty/keras24_functional_deepid.h5"));
  let seed = 12345;
  for (let i = 4096; i < 40960; i++) {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    bytes[i] = seed >>> 24;
  }
  writeFileSync(corrupt, bytes);

  const plainHdf5 = await writeH5(p("plain.h5"), { values: { data: Float32Array.from([1, 2, 3]), shape: [3] } });
  const lstmModel = await writeLstmModel(p("lstm_model.h5"));

  const noData = await writeH5(p("no_data.h5"), { label: { data: Float64Array.from([1, 2]), shape: [2] } });
  const cleanFaces = faceSet("clean_");
  const twoFaces = pixelsOf(cleanFaces.images.slice(0, 2));
  const noLabel = await writeH5(p("no_label.h5"), { data: { data: twoFaces.data, shape: twoFaces.shape } });

  const twoFacesPath = p("two_faces.h5");
  await writeCsawH5(twoFacesPath, twoFaces.data, twoFaces.shape, Int32Array.from(cleanFaces.labels.slice(0, 2)));

  const labelOutOfRange = p("label_5000.h5");
  await writeCsawH5(labelOutOfRange, twoFaces.data, twoFaces.shape, Int32Array.from([43, 5000]));

  const wrongShape = p("mnist_shaped.h5");
  const small = new Uint8Array(2 * 28 * 28).map((_, i) => (i * 7) % 256);
  await writeCsawH5(wrongShape, small, [2, 1, 28, 28], Int32Array.from([0, 1]));

  const smallPng = p("small_28x28.png");
  writeFileSync(smallPng, encodePng(new Uint8Array(28 * 28 * 3).map((_, i) => (i * 13) % 256), 28, 28, 3));

  const notImage = p("notes.png");
  writeFileSync(notImage, `${basename(notImage)}: plain text, not an image\n`);

  const gModel = p("deepid_G.onnx");
  const deepid = await loadModel(fixture("thirdparty/keras24_functional_deepid.h5"));
  writeOnnx(gModel, gFromPair(deepid, deepid));

  return { dir, dirModel, notHdf5, truncated, corrupt, plainHdf5, lstmModel, noData, noLabel, labelOutOfRange, twoFaces: twoFacesPath, wrongShape, smallPng, notImage, gModel };
}

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the built CLI (`node dist/cli/main.js ...args`) and collects its exit code and output. */
export function runCli(args: string[], timeoutMs = 60_000, env: Record<string, string> = {}): Promise<CliResult> {
  return new Promise((resolvePromise, reject) => {
    execFile(process.execPath, [CLI, ...args], { encoding: "utf8", timeout: timeoutMs, env: { ...process.env, ...env } }, (err, stdout, stderr) => {
      if (err && typeof err.code !== "number") return reject(new Error(`badnet ${args.join(" ")}: ${err.message}`));
      resolvePromise({ code: err ? (err.code as number) : 0, stdout, stderr });
    });
  });
}

/** Command names as `badnet --help` lists them ("  name  summary" lines). */
export function listedCommands(help: string): string[] {
  return [...help.matchAll(/^ {2}([a-z][\w-]*) {2,}\S/gm)].map((m) => m[1]!);
}

/** fn over items, at most `n` at a time (each CLI run is a process; the machine has 2 cores). */
export async function inPool<T, R>(items: T[], n: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, worker));
  return out;
}
