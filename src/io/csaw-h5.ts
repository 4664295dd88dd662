// CSAW-HackML 2020 data files: HDF5 with `data` (N×C×H×W or N×H×W×C, uint8 or float) and `label` (N).
// Images are read lazily, one batch per read(), so large files never sit in memory as float32 whole.
import { existsSync } from "node:fs";
import { basename, dirname, resolve } from "node:path";
import h5wasm from "h5wasm/node";
import { fail } from "../errors.js";
import { checkInputScale, checkRange, formatShape, type Dataset, type OpenOptions } from "./dataset.js";
import { checkFilters, openH5ForRead, readingHdf5, writingHdf5, type H5Dataset, type H5File } from "./hdf5.js";
import { MAX_IMAGE_PIXELS } from "./images.js";
import { checkRawPixels, checkScaleAgainstRange, valueRange } from "./pixels.js";

type NumericArray = ArrayLike<number>;

export type Layout = "nchw" | "nhwc";

/**
 * Layout of a 4-D image array [N, a, b, c]: channels (1 or 3) first or last. An explicit layout wins;
 * without one, a shape where both or neither of a and c could be channels is an error.
 */
export function decideLayout(dims: readonly number[], explicit: Layout | undefined, where: string): Layout {
  if (explicit) return explicit;
  const first = dims[1] === 1 || dims[1] === 3;
  const last = dims[3] === 1 || dims[3] === 3;
  if (first && !last) return "nchw";
  if (last && !first) return "nhwc";
  fail(`${where}: cannot tell whether shape ${formatShape(dims)} is N×C×H×W or N×H×W×C; give --layout nchw or --layout nhwc`);
}

function getDataset(file: H5File, key: string, path: string): H5Dataset {
  const entity = file.get(key);
  if (!(entity instanceof h5wasm.Dataset)) {
    const keys = file.keys();
    fail(
      `data ${path}: no \`${key}\` dataset (${entity ? `\`${key}\` is not a dataset` : `found ${keys.length ? keys.map((k) => `\`${k}\``).join(", ") : "nothing"}`}); expected CSAW-HackML datasets \`data\` and \`label\``,
    );
  }
  return entity;
}

/** Checks the element type is a plain integer or float and returns a short description of it. */
function numericType(ds: H5Dataset, what: string): string {
  const m = ds.metadata;
  // h5wasm type classes: 0 integer, 1 float.
  if (m.type === 0 && [1, 2, 4, 8].includes(m.size)) return `${m.signed ? "int" : "uint"}${m.size * 8}`;
  if (m.type === 1 && (m.size === 4 || m.size === 8)) return `float${m.size * 8}`;
  fail(`${what}: unsupported element type ${JSON.stringify(ds.dtype)} (need an integer or float32/float64 array)`);
}

/** A slice from h5wasm as numbers (64-bit integers are converted; image/label values fit easily). */
function asNumbers(value: unknown, what: string): NumericArray {
  if (value instanceof BigInt64Array || value instanceof BigUint64Array) return Float64Array.from(value, Number);
  if (ArrayBuffer.isView(value) && !(value instanceof DataView)) return value as unknown as NumericArray;
  fail(`${what}: could not read values as numbers`);
}

function readLabels(ds: H5Dataset, n: number, path: string): Int32Array {
  const where = `data ${path}: \`label\``;
  numericType(ds, where);
  const shape = ds.shape ?? [];
  if (!(shape.length === 1 || (shape.length === 2 && shape[1] === 1))) {
    fail(`${where} ${shape.length === 0 ? "is a single number" : `has shape ${formatShape(shape)}`}, expected a vector of ${n} label${n === 1 ? "" : "s"}`);
  }
  if (shape[0] !== n) fail(`data ${path}: ${shape[0]} labels for ${n} images`);
  const raw = asNumbers(ds.value, where);
  const labels = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const v = raw[i]!;
    if (!Number.isInteger(v)) fail(`${where}: label ${v} of image ${i} is not an integer`);
    // Labels are kept as 32-bit integers; a larger one is no class label (and must not wrap around to one).
    if (v < -2147483648 || v > 2147483647) fail(`${where}: label ${v} of image ${i} is out of range for a class label`);
    labels[i] = v;
  }
  return labels;
}

/** The `data` array's element type, size and layout, and all labels: everything but the pixels. */
function describeCsaw(file: H5File, path: string, opts: OpenOptions) {
  const data = getDataset(file, "data", path);
  const labelDs = getDataset(file, "label", path);
  const where = `data ${path}: \`data\``;
  checkFilters(data, where);
  checkFilters(labelDs, `data ${path}: \`label\``);
  const dtype = numericType(data, where);
  const dims = data.shape ?? [];
  if (dims.length !== 4) {
    fail(`${where} has shape ${formatShape(dims)} (rank ${dims.length}), expected 4-D N×C×H×W or N×H×W×C`);
  }
  const [n, a, b, c] = dims as [number, number, number, number];
  if (n === 0 || a === 0 || b === 0 || c === 0) fail(`${where} has an empty shape ${formatShape(dims)}`);
  const layout = decideLayout(dims, opts.layout, where);
  const shape: [number, number, number] = layout === "nchw" ? [a, b, c] : [c, a, b];
  // A few KB of HDF5 can declare 40000x40000 images (chunks never written); reading one would not fit in memory.
  if (shape[1] * shape[2] > MAX_IMAGE_PIXELS) {
    fail(`${where} holds images of ${formatShape(shape)} (CxHxW), too large (at most ${MAX_IMAGE_PIXELS} pixels per image, e.g. 8192x8192)`);
  }
  return { data, where, dtype, n, dims, layout, shape, labels: readLabels(labelDs, n, path) };
}

/** Images whose pixel range is compared with the input scale at open (a dark image or two cannot fool it). */
const SCALE_SAMPLE = 256;
/** ... but no more values than this in that one read (256 large float64 images would not fit in h5wasm's memory). */
const SCALE_SAMPLE_VALUES = 1 << 22;

/**
 * Opens a CSAW-HackML .h5 data file; images are read batch by batch on demand. Non-uint8 pixels must be
 * finite and in 0..255 (checked on every read) and must not look already scaled to [0, 1] under an input
 * scale other than 1 (checked on the first images at open).
 */
export async function openCsawH5(path: string, opts: OpenOptions): Promise<Dataset> {
  checkInputScale(opts.inputScale);
  const file = await openH5ForRead(path, "data");
  let ok = false;
  try {
    const { data, where, dtype, n, dims, layout, shape, labels } = readingHdf5(path, "data", () => describeCsaw(file, path, opts));
    const per = shape[0] * shape[1] * shape[2];
    const scale = opts.inputScale;
    // uint8 pixels are 0..255 by construction; any other type is checked value by value as it is read.
    const checked = dtype !== "uint8";
    const imageDims = dims.slice(1);
    const readRaw = (start: number, count: number): NumericArray => {
      const raw = asNumbers(readingHdf5(path, "data", () => data.slice([[start, start + count]])), `${where} (${dtype})`);
      if (checked) checkRawPixels(raw, `data ${path}`, imageDims, start);
      return raw;
    };
    if (checked) checkScaleAgainstRange(valueRange(readRaw(0, Math.max(1, Math.min(n, SCALE_SAMPLE, Math.floor(SCALE_SAMPLE_VALUES / per))))), scale, `data ${path}`);
    let open = true;
    const ds: Dataset = {
      name: basename(path),
      size: n,
      shape,
      labels,
      read(start, count) {
        if (!open) throw new Error(`dataset ${ds.name} is closed`);
        checkRange(ds, start, count);
        const out = new Float32Array(count * per);
        if (count === 0) return out;
        const raw = readRaw(start, count);
        if (raw.length !== out.length) throw new Error(`h5 slice of ${ds.name} returned ${raw.length} values, expected ${out.length}`);
        if (layout === "nchw") {
          for (let i = 0; i < out.length; i++) out[i] = raw[i]! / scale;
        } else {
          const [C, H, W] = shape;
          const hw = H * W;
          // NHWC → NCHW: walk the source in order, scatter into channel planes.
          for (let img = 0; img < count; img++) {
            const base = img * per;
            let src = base;
            for (let p = 0; p < hw; p++) {
              for (let ch = 0; ch < C; ch++) out[base + ch * hw + p] = raw[src++]! / scale;
            }
          }
        }
        return out;
      },
      close() {
        if (open) {
          open = false;
          file.close();
        }
      },
    };
    ok = true;
    return ds;
  } finally {
    if (!ok) file.close();
  }
}

/**
 * Writes a CSAW-HackML style data file (h5py-readable): `data` uint8 N×C×H×W and `label` float64 (N),
 * the element types of the original challenge files' labels.
 */
export async function writeCsawH5(
  path: string,
  data: Uint8Array,
  shape: [number, number, number, number],
  labels: Int32Array,
): Promise<void> {
  const [n, c, h, w] = shape;
  if (shape.some((d) => !Number.isInteger(d) || d < 0)) throw new Error(`writeCsawH5: bad shape ${formatShape(shape)}`);
  if (data.length !== n * c * h * w) throw new Error(`writeCsawH5: ${data.length} values for shape ${formatShape(shape)}`);
  if (labels.length !== n) throw new Error(`writeCsawH5: ${labels.length} labels for ${n} images`);
  const dir = dirname(resolve(path));
  if (!existsSync(dir)) fail(`cannot write ${path}: directory ${dir} does not exist`);
  await h5wasm.ready;
  writingHdf5(path, () => {
    const file = new h5wasm.File(resolve(path), "w");
    try {
      file.create_dataset({ name: "data", data, shape: [n, c, h, w], dtype: "<B" });
      file.create_dataset({ name: "label", data: Float64Array.from(labels), shape: [n], dtype: "<d" });
    } finally {
      file.close();
    }
  });
}
