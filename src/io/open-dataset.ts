// One entry point that opens any data source by its spec and hands back a Dataset.
import { statSync } from "node:fs";
import { basename, extname } from "node:path";
import { fail } from "../errors.js";
import { openCsawH5 } from "./csaw-h5.js";
import { checkInputScale, type Dataset, type OpenOptions } from "./dataset.js";
import { loadFashionMnist, openIdxImages } from "./fashion-mnist.js";
import { IMAGE_EXTENSIONS, openImageFiles, openImageFolder } from "./image-folder.js";

/**
 * Opens a data source by its spec: `*.h5`/`*.hdf5` → CSAW-HackML file; a directory or an image file →
 * image folder; `fashion-mnist`, `fashion-mnist:train`, `fashion-mnist:test` or an `*idx3-ubyte[.gz]` path →
 * Fashion-MNIST. Anything else is a UserError.
 */
export async function openDataset(spec: string, opts: OpenOptions): Promise<Dataset> {
  checkInputScale(opts.inputScale);
  const fm = /^fashion-mnist(?::(train|test))?$/.exec(spec);
  if (fm) return loadFashionMnist(fm[1] === "train" ? "train" : "test", undefined, opts.inputScale);

  const ext = extname(spec).toLowerCase();
  if (ext === ".h5" || ext === ".hdf5") return openCsawH5(spec, opts);
  let isDir = false;
  try {
    isDir = statSync(spec).isDirectory();
  } catch {
    fail(`data ${spec}: no such file or directory (expected a .h5 file, an image folder, an image file or fashion-mnist[:train|:test])`);
  }
  if (isDir) return openImageFolder(spec, opts);
  if (IMAGE_EXTENSIONS.includes(ext)) return openImageFiles([spec], opts);
  if (/idx3-ubyte(\.gz)?$/i.test(basename(spec))) return openIdxImages(spec, opts.inputScale);
  fail(
    `data ${spec}: unknown data format (expected .h5/.hdf5, an image folder, .png/.jpg/.jpeg, an idx3-ubyte file or fashion-mnist[:train|:test])`,
  );
}
