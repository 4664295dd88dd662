// CSAW-HackML 2020 data files: HDF5 with `data` (N×C×H×W or N×H×W×C, uint8 or float) and `label` (N).
// Images are read lazily, one batch per read(), so large files never sit in memory as float32 whole.
import { closeSync, existsSync, openSync, readSync, statSync } from "node:fs";
import { basename, dirname, resolve } from "node:path";
import h5wasm, { Module } from "h5wasm/node";
import { fail } from "../errors.js";
import { checkInputScale, checkRange, formatShape, type Dataset, type OpenOptions } from "./dataset.js";
import { checkRawPixels, checkScaleAgainstRange, valueRange } from "./pixels.js";

type H5Dataset = InstanceType<typeof h5wasm.Dataset>;
type H5File = InstanceType<typeof h5wasm.File>;
type NumericArray = ArrayLike<number>;

const HDF5_SIGNATURE = Buffer.from([0x89, 0x48, 0x44, 0x46, 0x0d, 0x0a, 0x1a, 0x0a]);

/**
 * True when the file carries the HDF5 signature. It sits at offset 0, or after a user block at 512, 1024,
 * 2048, ... bytes. Checked up front because h5wasm reports a non-HDF5 file with a cryptic C-level trace.
 */
export function hasHdf5Signature(path: string): boolean {
  const size = statSync(path).size;
  const fd = openSync(path, "r");
  try {
    const buf = Buffer.alloc(8);
    for (let off = 0; off + 8 <= size; off = off === 0 ? 512 : off * 2) {
      if (readSync(fd, buf, 0, 8, off) === 8 && buf.equals(HDF5_SIGNATURE)) return true;
    }
    return false;
  } finally {
    closeSync(fd);
  }
}

/** Opens an existing HDF5 file read-only with a UserError (naming `what`) for a missing or non-HDF5 file. */
export async function openH5ForRead(path: string, what: string): Promise<H5File> {
  let st;
  try {
    st = statSync(path);
  } catch {
    fail(`${what} ${path}: no such file`);
  }
  if (!st.isFile()) fail(`${what} ${path}: not a file`);
  if (!hasHdf5Signature(path)) fail(`${what} ${path}: not an HDF5 file (no HDF5 signature)`);
  await h5wasm.ready;
  const file = readingHdf5(path, what, () => new h5wasm.File(resolve(path), "r"));
  if (file.file_id < 0n) fail(`${what} ${path}: corrupt or truncated HDF5 file (HDF5 could not open it)`);
  return file;
}

/**
 * Runs `fn` (opening or reading an HDF5 file; h5wasm must be ready) so that a damaged file is a one-line
 * UserError naming it.
 */
export function readingHdf5<T>(path: string, what: string, fn: () => T): T {
  return guardHdf5(fn, (reason) => {
    if (/plugin/i.test(reason)) return `${what} ${path}: compressed with an HDF5 filter plugin that is not available (${reason})`;
    return `${what} ${path}: corrupt or truncated HDF5 file (${reason})`;
  });
}

/** Runs `fn` (creating or writing an HDF5 file) so that a failure is a one-line UserError naming `path`. */
export function writingHdf5<T>(path: string, fn: () => T): T {
  return guardHdf5(fn, (reason) => `cannot write ${path}: ${reason}`);
}

/**
 * HDF5's default handler prints a multi-line HDF5-DIAG trace and lets h5wasm go on with invalid ids, so the
 * throwing handler is switched on while `fn` (synchronous) runs; some damage makes the wasm module abort,
 * which prints "Aborted(...)" itself, so stderr is held back meanwhile and replayed unless `fn` failed so.
 * After an abort h5wasm is unusable in this process.
 */
function guardHdf5<T>(fn: () => T, message: (reason: string) => string): T {
  const stderr = process.stderr;
  const write = stderr.write;
  const held: Parameters<typeof write>[] = [];
  stderr.write = ((...args: Parameters<typeof write>) => held.push(args) > 0) as typeof write;
  Module.activate_throwing_error_handler();
  try {
    return fn();
  } catch (e) {
    const reason = hdf5Failure(e);
    if (reason === undefined) throw e;
    held.length = 0;
    return fail(message(reason));
  } finally {
    try {
      Module.deactivate_throwing_error_handler();
    } catch {
      // the module aborted; nothing left to reset
    }
    stderr.write = write;
    for (const args of held) write.apply(stderr, args);
  }
}

/** A one-line reason when `e` comes from the HDF5 library (an error stack or a wasm abort), else undefined. */
function hdf5Failure(e: unknown): string | undefined {
  if (!(e instanceof Error)) return undefined;
  if (e.message.startsWith("HDF5-DIAG")) return hdf5Reason(e);
  if (e.message.startsWith("Aborted(")) return "the HDF5 library aborted while reading it";
  return undefined;
}

/** The innermost cause of an HDF5 error stack ("#006: ... in H5F__super_read(): truncated file: ..."), on one line. */
export function hdf5Reason(e: unknown): string {
  const text = e instanceof Error ? e.message : String(e);
  const causes = [...text.matchAll(/#\d+: .* in [\w.]+\(\): (.+)$/gm)].map((m) => m[1]!.trim());
  const reason = causes.at(-1) ?? text.split("\n").find((l) => l.trim() !== "")?.trim() ?? "unknown error";
  // A failed open/create carries the C library's message: "unable to open file: name = '...', errno = 2,
  // error message = 'No such file or directory', ...".
  const os = /error message = '([^']*)'/.exec(reason);
  if (os) return os[1]!.toLowerCase();
  return reason.replace(/\s+/g, " ");
}

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

/** Filters HDF5 itself decodes (deflate/gzip, shuffle, fletcher32, szip, nbit, scaleoffset); plugins are absent. */
const BUILTIN_FILTERS = new Set([1, 2, 3, 4, 5, 6]);
const FILTER_NAMES: Record<number, string> = { 32000: "LZF", 32001: "Blosc", 32004: "LZ4", 32008: "Bitshuffle", 32015: "Zstandard" };

/**
 * UserError when a dataset is compressed with a filter plugin (h5py's LZF, Blosc, ...) that this HDF5 build
 * cannot decode: reading it would fail with an obscure plugin-directory error, or look like a corrupt file.
 */
export function checkFilters(ds: H5Dataset, where: string): void {
  for (const f of ds.filters ?? []) {
    if (BUILTIN_FILTERS.has(f.id)) continue;
    const name = FILTER_NAMES[f.id] ?? `HDF5 filter ${f.id}${f.name ? ` (${f.name})` : ""}`;
    fail(`${where}: ${name} compression is not supported; re-save the file uncompressed or with gzip (e.g. h5repack -f NONE in.h5 out.h5)`);
  }
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
    fail(`${where} has shape ${formatShape(shape)}, expected a vector of ${n} labels`);
  }
  if (shape[0] !== n) fail(`data ${path}: ${shape[0]} labels for ${n} images`);
  const raw = asNumbers(ds.value, where);
  const labels = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const v = raw[i]!;
    if (!Number.isInteger(v) || v < -2147483648 || v > 2147483647) fail(`${where}: label ${v} of image ${i} is not an integer`);
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
  return { data, where, dtype, n, dims, layout, shape, labels: readLabels(labelDs, n, path) };
}

/** Images whose pixel range is compared with the input scale at open (a dark image or two cannot fool it). */
const SCALE_SAMPLE = 256;

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
    if (checked) checkScaleAgainstRange(valueRange(readRaw(0, Math.min(n, SCALE_SAMPLE))), scale, `data ${path}`);
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
