// The common view of every image source (CSAW .h5, image folders, Fashion-MNIST) plus the checks that
// commands run before feeding data to a model. Opening a source by its spec is open-dataset.ts (it imports the
// loaders, which import this file).
import { UserError, fail } from "../errors.js";

export interface Dataset {
  readonly name: string;
  readonly size: number;
  /** [C, H, W] */
  readonly shape: [number, number, number];
  /** All labels, or null when the source has none. */
  readonly labels: Int32Array | null;
  /** Images [start, start+count) as NCHW float32, pixel values divided by the inputScale given at open. */
  read(start: number, count: number): Float32Array;
  close(): void;
}

export interface OpenOptions {
  /** Pixels are divided by this (255 for models trained on [0,1] inputs, 1 for raw 0..255). */
  inputScale: number;
  /** Layout of 4-D arrays in .h5 files; only needed when it cannot be told from the shape, wins when given. */
  layout?: "nchw" | "nhwc";
  /** Sidecar `file,label` CSV for image folders / image files. */
  labelsCsv?: string;
}

export function checkInputScale(inputScale: number): void {
  if (!Number.isFinite(inputScale) || inputScale <= 0) fail(`input scale must be a positive number, got ${inputScale}`);
}

/** UserError when a label is outside [0, numClasses). Unlabeled datasets pass. */
export function checkLabels(ds: Dataset, numClasses: number): void {
  const labels = ds.labels;
  if (!labels) return;
  for (let i = 0; i < labels.length; i++) {
    const l = labels[i]!;
    if (l < 0 || l >= numClasses) {
      fail(`data ${ds.name}: label ${l} of image ${i} is outside the model's ${numClasses} classes (0..${numClasses - 1})`);
    }
  }
}

/** UserError when a command needs labels and the dataset has none. */
export function requireLabels(ds: Dataset, why: string): Int32Array {
  if (!ds.labels) fail(`data ${ds.name} has no labels, needed for ${why} (an image folder takes its labels from a "file,label" labels.csv inside it)`);
  return ds.labels;
}

export function formatShape(shape: readonly number[]): string {
  return shape.join("x");
}

/** UserError when the images are not [C,H,W] = expected; `what` names the consumer, e.g. "model bd_net.h5". */
export function checkShape(ds: Dataset, expected: [number, number, number], what: string): void {
  if (ds.shape.some((d, i) => d !== expected[i])) {
    fail(`data ${ds.name} has images ${formatShape(ds.shape)} but ${what} expects ${formatShape(expected)}`);
  }
}

/** Throws (a bug, not a user error) when [start, start+count) is not inside the dataset. */
export function checkRange(ds: { name: string; size: number }, start: number, count: number): void {
  if (!Number.isInteger(start) || !Number.isInteger(count) || start < 0 || count < 0 || start + count > ds.size) {
    throw new RangeError(`read(${start}, ${count}) outside dataset ${ds.name} of ${ds.size} images`);
  }
}

function checkLabelCount(name: string, size: number, labels: Int32Array | null): void {
  if (labels && labels.length !== size) {
    throw new UserError(`data ${name}: ${labels.length} labels for ${size} images`);
  }
}

function imageSize(shape: [number, number, number]): number {
  for (const d of shape) {
    if (!Number.isInteger(d) || d <= 0) throw new Error(`bad image shape ${formatShape(shape)}`);
  }
  return shape[0] * shape[1] * shape[2];
}

/**
 * A dataset over one in-memory NCHW array; `slice(offset, length)` turns values [offset, offset+length)
 * into scaled float32.
 */
function arrayDataset(
  what: string,
  name: string,
  shape: [number, number, number],
  length: number,
  labels: Int32Array | null,
  slice: (offset: number, length: number) => Float32Array,
): Dataset {
  const per = imageSize(shape);
  if (length % per !== 0) throw new Error(`${what} ${name}: ${length} values is not a multiple of ${formatShape(shape)}`);
  const size = length / per;
  checkLabelCount(name, size, labels);
  return rowDataset(name, shape, size, labels, (start, count) => slice(start * per, count * per));
}

/** A Dataset whose reads are range-checked before `readRows` runs. */
function rowDataset(
  name: string,
  shape: readonly [number, number, number],
  size: number,
  labels: Int32Array | null,
  readRows: (start: number, count: number) => Float32Array,
  close: () => void = () => {},
): Dataset {
  const ds: Dataset = {
    name,
    size,
    shape: [shape[0], shape[1], shape[2]],
    labels,
    read(start, count) {
      checkRange(ds, start, count);
      return readRows(start, count);
    },
    close,
  };
  return ds;
}

/** In-memory dataset (tests, poisoning, zoo): data NCHW float32 already scaled. */
export function memoryDataset(
  name: string,
  shape: [number, number, number],
  data: Float32Array,
  labels: Int32Array | null,
): Dataset {
  return arrayDataset("memoryDataset", name, shape, data.length, labels, (off, len) => data.slice(off, off + len));
}

/** Dataset over raw uint8 pixels (NCHW), scaled on read: a quarter of the memory of float32. */
export function uint8Dataset(
  name: string,
  shape: [number, number, number],
  pixels: Uint8Array,
  labels: Int32Array | null,
  inputScale: number,
): Dataset {
  checkInputScale(inputScale);
  return arrayDataset("uint8Dataset", name, shape, pixels.length, labels, (off, len) => {
    const out = new Float32Array(len);
    for (let i = 0; i < len; i++) out[i] = pixels[off + i]! / inputScale;
    return out;
  });
}

/** Most bytes pickRows reads in one call. */
const PICK_BYTES = 16 << 20;

/** Rows `idx` of a data set, in memory. */
export function pickRows(data: Dataset, idx: ArrayLike<number>, name = `${data.name} subset`): Dataset {
  const [c, h, w] = data.shape;
  const per = c * h * w;
  const x = new Float32Array(idx.length * per);
  // Ascending rows close together are read as one span (at most PICK_BYTES) and picked from it: a row-by-row
  // read of an .h5 file costs a library call per row.
  const span = Math.max(1, Math.floor(PICK_BYTES / (4 * per)));
  for (let i = 0; i < idx.length; ) {
    const first = idx[i]!;
    let j = i + 1;
    while (j < idx.length && idx[j]! > idx[j - 1]! && idx[j]! < first + span) j++;
    const block = data.read(first, idx[j - 1]! - first + 1);
    for (let k = i; k < j; k++) x.set(block.subarray((idx[k]! - first) * per, (idx[k]! - first + 1) * per), k * per);
    i = j;
  }
  const labels = data.labels ? Int32Array.from(idx, (j) => data.labels![j]!) : null;
  return memoryDataset(name, [c, h, w], x, labels);
}

/**
 * Several data sets of one image shape read as one, in order (several poisoned test sets, one per trigger).
 * Reads span the parts without copying them first; labels are all of the parts' or none.
 */
export function concatDatasets(parts: readonly Dataset[], name = parts.map((p) => p.name).join(" + ")): Dataset {
  if (parts.length === 0) throw new Error("concatDatasets: no data sets");
  if (parts.length === 1) return parts[0]!;
  const shape = parts[0]!.shape;
  for (const p of parts.slice(1)) {
    if (p.shape.some((d, i) => d !== shape[i])) fail(`data ${p.name}: images of ${formatShape(p.shape)}, but ${parts[0]!.name} has ${formatShape(shape)}; the sets must share one image shape`);
  }
  const unlabelled = parts.filter((p) => !p.labels);
  if (unlabelled.length > 0 && unlabelled.length < parts.length) fail(`data ${unlabelled[0]!.name} has no labels, but ${parts.find((p) => p.labels)!.name} has: give all sets labelled or none`);
  const starts: number[] = [];
  let size = 0;
  for (const p of parts) {
    starts.push(size);
    size += p.size;
  }
  let labels: Int32Array | null = null;
  if (unlabelled.length === 0) {
    labels = new Int32Array(size);
    parts.forEach((p, i) => labels!.set(p.labels!, starts[i]));
  }
  const per = imageSize(shape);
  const readRows = (start: number, count: number): Float32Array => {
    const out = new Float32Array(count * per);
    parts.forEach((p, i) => {
      const lo = Math.max(start, starts[i]!);
      const hi = Math.min(start + count, starts[i]! + p.size);
      if (hi > lo) out.set(p.read(lo - starts[i]!, hi - lo), (lo - start) * per);
    });
    return out;
  };
  return rowDataset(name, shape, size, labels, readRows, () => {
    for (const p of parts) p.close();
  });
}
