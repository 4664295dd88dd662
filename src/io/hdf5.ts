// HDF5 through h5wasm: the file signature check, opening for read, and running HDF5 calls so that a damaged
// or unsupported file is a one-line UserError. Shared by the CSAW data files and the Keras model files.
import { closeSync, openSync, readSync, statSync } from "node:fs";
import { resolve } from "node:path";
import h5wasm, { Module } from "h5wasm/node";
import { fail } from "../errors.js";

export type H5Dataset = InstanceType<typeof h5wasm.Dataset>;
export type H5File = InstanceType<typeof h5wasm.File>;

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

const ZIP_SIGNATURE = Buffer.from([0x50, 0x4b, 0x03, 0x04]);

/** What a file without the HDF5 signature is, when that is easy to tell: empty, or a zip (Keras 3's .keras). */
function notHdf5Why(path: string, size: number, what: string): string {
  if (size === 0) return "the file is empty";
  const fd = openSync(path, "r");
  const head = Buffer.alloc(4);
  try {
    readSync(fd, head, 0, 4, 0);
  } finally {
    closeSync(fd);
  }
  if (head.equals(ZIP_SIGNATURE)) {
    return what === "Keras model"
      ? "a zip archive, as Keras 3 saves .keras files; save the model in HDF5 with model.save(\"model.h5\")"
      : "a zip archive";
  }
  return "no HDF5 signature";
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
  if (!hasHdf5Signature(path)) fail(`${what} ${path}: not an HDF5 file (${notHdf5Why(path, st.size, what)})`);
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
  return guardHdf5(fn, (reason, tooLarge) => {
    if (tooLarge) return `${what} ${path}: too large to read (${reason})`;
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
function guardHdf5<T>(fn: () => T, message: (reason: string, tooLarge: boolean) => string): T {
  const stderr = process.stderr;
  const write = stderr.write;
  const held: Parameters<typeof write>[] = [];
  stderr.write = ((...args: Parameters<typeof write>) => held.push(args) > 0) as typeof write;
  Module.activate_throwing_error_handler();
  try {
    return fn();
  } catch (e) {
    // h5wasm's memory is 2 GB: a dataset declared larger (a few KB of file can declare billions of values)
    // cannot be read in one piece. Not damage, and not a bug: the file is too large for this reader.
    const alloc = e instanceof Error ? /^Requested allocation of (\d+) bytes exceeds maximum memory of (\d+) bytes/.exec(e.message) : null;
    if (alloc) {
      held.length = 0;
      const gb = (s: string) => `${(Number(s) / 1e9).toFixed(1)} GB`;
      return fail(message(`one read needs ${gb(alloc[1]!)}; the HDF5 reader holds at most ${gb(alloc[2]!)}`, true));
    }
    const reason = hdf5Failure(e);
    if (reason === undefined) throw e;
    held.length = 0;
    return fail(message(reason, false));
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
