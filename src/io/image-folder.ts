// A folder (or an explicit list) of PNG/JPEG images as a Dataset, labels from an optional `file,label` CSV.
// Images are decoded up front (to check sizes) and kept as uint8 CHW; scaling happens on read.
import { existsSync, readFileSync, readdirSync, statSync } from "node:fs";
import { basename, dirname, extname, isAbsolute, join, resolve } from "node:path";
import { fail } from "../errors.js";
import { checkInputScale, formatShape, uint8Dataset, type Dataset, type OpenOptions } from "./dataset.js";
import { decodeImage, toChwBytes, type DecodedImage } from "./images.js";

export const IMAGE_EXTENSIONS: readonly string[] = [".png", ".jpg", ".jpeg"];

export interface ImageFolderOptions extends OpenOptions {
  /** [C, H, W] every image must have (otherwise: that of the first image). */
  expectShape?: [number, number, number];
}

export interface LabelEntry {
  /** As written in the CSV. */
  file: string;
  label: number;
  /** 1-based line in the CSV, for messages. */
  line: number;
}

/** Image files of a folder (not recursive), sorted by name. */
export function listImages(dir: string): string[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    fail(`image folder ${dir}: cannot read directory`);
  }
  return names
    .filter((n) => IMAGE_EXTENSIONS.includes(extname(n).toLowerCase()))
    .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))
    .map((n) => join(dir, n))
    .filter((p) => statSync(p).isFile());
}

/** Parses a `file,label` CSV; a first line whose label is not an integer is taken as a header. */
export function readLabelsCsv(csvPath: string): LabelEntry[] {
  let text: string;
  try {
    text = readFileSync(csvPath, "utf8");
  } catch {
    fail(`labels CSV ${csvPath}: cannot read file`);
  }
  const entries: LabelEntry[] = [];
  const seen = new Map<string, number>();
  const lines = text.split(/\r?\n/);
  const first = lines.findIndex((l) => l.trim() !== "");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (line === "") continue;
    const cells = line.split(",").map((c) => c.trim().replace(/^"(.*)"$/, "$1"));
    const isInt = cells.length === 2 && /^[+-]?\d+$/.test(cells[1]!);
    if (!isInt) {
      // A header names its columns; a first row whose label is a number (9.0, 1e3) is data, not a header.
      const numeric = cells.length === 2 && cells[1] !== "" && Number.isFinite(Number(cells[1]));
      if (i === first && cells.length === 2 && !numeric) continue; // header
      fail(`labels CSV ${csvPath} line ${i + 1}: expected \`file,label\` with an integer label, got "${line}"`);
    }
    const file = cells[0]!;
    if (file === "") fail(`labels CSV ${csvPath} line ${i + 1}: empty file name`);
    // Labels are stored as 32-bit integers: a larger one would wrap around to another (small) label.
    if (!Number.isSafeInteger(Number(cells[1])) || Math.abs(Number(cells[1])) > 2147483647) {
      fail(`labels CSV ${csvPath} line ${i + 1}: label ${cells[1]} of ${file} is out of range for a class label`);
    }
    const prev = seen.get(file);
    if (prev !== undefined) fail(`labels CSV ${csvPath} line ${i + 1}: ${file} already listed on line ${prev}`);
    seen.set(file, i + 1);
    entries.push({ file, label: Number(cells[1]), line: i + 1 });
  }
  return entries;
}

/** Opens every .png/.jpg/.jpeg in `dir` (sorted by name); labels from opts.labelsCsv or dir/labels.csv. */
export async function openImageFolder(dir: string, opts: ImageFolderOptions): Promise<Dataset> {
  checkInputScale(opts.inputScale);
  if (!existsSync(dir) || !statSync(dir).isDirectory()) fail(`image folder ${dir}: no such directory`);
  const files = listImages(dir);
  if (files.length === 0) fail(`image folder ${dir}: no .png/.jpg/.jpeg images`);
  const sidecar = join(dir, "labels.csv");
  const csv = opts.labelsCsv ?? (existsSync(sidecar) ? sidecar : undefined);
  let labels: Int32Array | null = null;
  if (csv !== undefined) {
    // Entries name files inside the folder (bare names or paths relative to the CSV's folder).
    const entries = readLabelsCsv(csv);
    const byPath = new Map(files.map((f, i) => [resolve(f), i]));
    const found = new Int32Array(files.length).fill(-1);
    labels = new Int32Array(files.length);
    for (const e of entries) {
      const idx = entryTarget(e, csv, byPath, files);
      if (idx === undefined) fail(`labels CSV ${csv} line ${e.line}: ${e.file} is not an image in folder ${dir}`);
      found[idx] = e.line;
      labels[idx] = e.label;
    }
    const missing = found.indexOf(-1);
    if (missing >= 0) fail(`image ${files[missing]} has no label in ${csv}`);
  }
  return build(basename(resolve(dir)), files, labels, opts);
}

/** Opens a list of image files (e.g. for `predict`); labels from opts.labelsCsv when given, else none. */
export async function openImageFiles(files: string[], opts: ImageFolderOptions): Promise<Dataset> {
  checkInputScale(opts.inputScale);
  if (files.length === 0) fail("no image files given");
  for (const f of files) {
    if (!existsSync(f)) fail(`image ${f}: no such file`);
    if (!statSync(f).isFile()) fail(`image ${f}: not a file`);
  }
  let labels: Int32Array | null = null;
  if (opts.labelsCsv !== undefined) {
    const csv = opts.labelsCsv;
    const entries = readLabelsCsv(csv);
    const byPath = new Map(files.map((f, i) => [resolve(f), i]));
    labels = new Int32Array(files.length);
    const found = new Int32Array(files.length).fill(-1);
    for (const e of entries) {
      const idx = entryTarget(e, csv, byPath, files);
      if (idx === undefined) {
        // Entries for files not selected are fine; entries for files that do not exist are not.
        const places = [isAbsolute(e.file) ? e.file : resolve(dirname(csv), e.file)];
        if (isBare(e.file)) places.push(...new Set(files.map((f) => join(dirname(resolve(f)), e.file))));
        if (!places.some((p) => existsSync(p))) fail(`labels CSV ${csv} line ${e.line}: ${e.file} does not exist`);
        continue;
      }
      found[idx] = e.line;
      labels[idx] = e.label;
    }
    const missing = found.indexOf(-1);
    if (missing >= 0) fail(`image ${files[missing]} has no label in ${csv}`);
  }
  const name = files.length === 1 ? basename(files[0]!) : `${files.length} images`;
  return build(name, files, labels, opts);
}

function isBare(file: string): boolean {
  return !file.includes("/") && !file.includes("\\");
}

/**
 * Image index a CSV entry refers to: a bare file name matches the image with that name (ambiguous names are an
 * error); a path is resolved against the CSV's folder (absolute paths as they are).
 */
function entryTarget(e: LabelEntry, csv: string, byPath: Map<string, number>, files: string[]): number | undefined {
  const direct = byPath.get(isAbsolute(e.file) ? resolve(e.file) : resolve(dirname(csv), e.file));
  if (direct !== undefined || !isBare(e.file)) return direct;
  const matches = files.flatMap((f, i) => (basename(f) === e.file ? [i] : []));
  if (matches.length > 1) fail(`labels CSV ${csv} line ${e.line}: ${e.file} matches several images (${matches.map((i) => files[i]).join(", ")})`);
  return matches[0];
}

function sizeOf(img: DecodedImage): [number, number, number] {
  return [img.channels, img.height, img.width];
}

function build(name: string, files: string[], labels: Int32Array | null, opts: ImageFolderOptions): Dataset {
  const first = decodeImage(files[0]!);
  const shape = opts.expectShape ?? sizeOf(first);
  const per = shape[0] * shape[1] * shape[2];
  const pixels = new Uint8Array(files.length * per);
  for (let i = 0; i < files.length; i++) {
    const img = i === 0 ? first : decodeImage(files[i]!);
    const got = sizeOf(img);
    if (got.some((d, k) => d !== shape[k])) {
      const ref = opts.expectShape ? "expected" : `first image ${files[0]} has`;
      fail(`image ${files[i]} is ${formatShape(got)} (CxHxW) but ${ref} ${formatShape(shape)}`);
    }
    toChwBytes(img, pixels, i * per);
  }
  return uint8Dataset(name, shape, pixels, labels, opts.inputScale);
}
