// Fashion-MNIST in the original IDX format (gzipped or not): images idx3 (N×28×28 uint8), labels idx1 (N uint8).
import { existsSync, readFileSync, statSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { gunzipSync } from "node:zlib";
import { fail } from "../errors.js";
import { checkInputScale, uint8Dataset, type Dataset } from "./dataset.js";

/** Where the Debian package dataset-fashion-mnist installs the files. */
export const DEFAULT_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist";

export const FASHION_MNIST_CLASSES: readonly string[] = [
  "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
];

export type Split = "train" | "test";

export interface IdxArray {
  dims: number[];
  data: Uint8Array;
}

export function fashionMnistDir(dir?: string): string {
  return dir ?? process.env["FASHION_MNIST_DIR"] ?? DEFAULT_FASHION_MNIST_DIR;
}

/** Reads an IDX file of unsigned bytes (type 0x08), gunzipping when the content is gzip. */
export function readIdx(path: string, expectedRank?: number): IdxArray {
  let buf: Buffer;
  try {
    buf = readFileSync(path);
  } catch {
    fail(`idx file ${path}: cannot read`);
  }
  if (buf.length >= 2 && buf[0] === 0x1f && buf[1] === 0x8b) {
    try {
      buf = gunzipSync(buf);
    } catch (e) {
      fail(`idx file ${path}: corrupt gzip data (${e instanceof Error ? e.message : String(e)})`);
    }
  }
  if (buf.length < 4 || buf[0] !== 0 || buf[1] !== 0) {
    fail(`idx file ${path}: bad magic number (not an IDX file)`);
  }
  const type = buf[2]!;
  const rank = buf[3]!;
  if (type !== 0x08) fail(`idx file ${path}: element type 0x${type.toString(16).padStart(2, "0")} not supported (need unsigned byte 0x08)`);
  if (rank === 0 || (expectedRank !== undefined && rank !== expectedRank)) {
    const magic = buf.readUInt32BE(0).toString(16).padStart(8, "0");
    fail(`idx file ${path}: bad magic number 0x${magic} (rank ${rank}, expected ${expectedRank ?? "at least 1"})`);
  }
  const header = 4 + 4 * rank;
  if (buf.length < header) fail(`idx file ${path}: truncated header`);
  const dims: number[] = [];
  for (let i = 0; i < rank; i++) dims.push(buf.readUInt32BE(4 + 4 * i));
  const count = dims.reduce((a, b) => a * b, 1);
  if (buf.length - header !== count) {
    fail(`idx file ${path}: ${buf.length - header} data bytes but the header says ${dims.join("x")} = ${count}`);
  }
  return { dims, data: new Uint8Array(buf.buffer, buf.byteOffset + header, count) };
}

/** The file of a split: `<prefix>-<kind>-ubyte.gz`, or the same without .gz. */
function splitFile(dir: string, split: Split, kind: "images-idx3" | "labels-idx1"): string {
  const prefix = split === "train" ? "train" : "t10k";
  const base = join(dir, `${prefix}-${kind}-ubyte`);
  for (const p of [`${base}.gz`, base]) if (existsSync(p)) return p;
  fail(
    `Fashion-MNIST ${split} split: ${base}.gz not found (install the dataset-fashion-mnist package or set FASHION_MNIST_DIR)`,
  );
}

export interface RawImages {
  /** [N, C, H, W] */
  shape: [number, number, number, number];
  /** N×C×H×W uint8 */
  pixels: Uint8Array;
  labels: Int32Array | null;
}

/** Reads an idx3 image file and, when given, its idx1 label file (counts must match). */
export function readIdxPair(imagesPath: string, labelsPath: string | null): RawImages {
  const img = readIdx(imagesPath, 3);
  const [n, h, w] = img.dims as [number, number, number];
  let labels: Int32Array | null = null;
  if (labelsPath !== null) {
    const lab = readIdx(labelsPath, 1);
    if (lab.dims[0] !== n) fail(`idx files ${imagesPath} and ${labelsPath}: ${n} images but ${lab.dims[0]} labels`);
    labels = Int32Array.from(lab.data);
  }
  return { shape: [n, 1, h, w], pixels: img.data, labels };
}

/** Raw uint8 pixels and labels of a split (for building poisoned sets). */
export function loadFashionMnistRaw(split: Split, dir?: string): RawImages {
  const d = fashionMnistDir(dir);
  if (!existsSync(d) || !statSync(d).isDirectory()) {
    fail(`Fashion-MNIST directory ${d} not found (install the dataset-fashion-mnist package or set FASHION_MNIST_DIR)`);
  }
  return readIdxPair(splitFile(d, split, "images-idx3"), splitFile(d, split, "labels-idx1"));
}

/** A Fashion-MNIST split as a Dataset of shape [1, 28, 28]; pixels divided by inputScale (default 255). */
export function loadFashionMnist(split: Split, dir?: string, inputScale = 255): Dataset {
  checkInputScale(inputScale);
  const raw = loadFashionMnistRaw(split, dir);
  const [, c, h, w] = raw.shape;
  return uint8Dataset(`fashion-mnist:${split}`, [c, h, w], raw.pixels, raw.labels, inputScale);
}

/** An idx3 image file given by path; labels from the sibling `...labels-idx1-ubyte[.gz]` when it exists. */
export function openIdxImages(path: string, inputScale: number): Dataset {
  checkInputScale(inputScale);
  const name = basename(path);
  let labelsPath: string | null = null;
  if (/images-idx3-ubyte(\.gz)?$/i.test(name)) {
    const stem = name.replace(/images-idx3-ubyte(\.gz)?$/i, "labels-idx1-ubyte");
    labelsPath = [`${stem}.gz`, stem].map((n) => join(dirname(path), n)).find((p) => existsSync(p)) ?? null;
  }
  const raw = readIdxPair(path, labelsPath);
  const [, c, h, w] = raw.shape;
  return uint8Dataset(name, [c, h, w], raw.pixels, raw.labels, inputScale);
}
