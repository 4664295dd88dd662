// Where tests find the fixtures and the CLI, and why a test that needs something absent is skipped.
import { spawnSync } from "node:child_process";
import { accessSync, constants, existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { fashionMnistDir } from "../io/fashion-mnist.js";
import { CHROMIUM } from "../report/screenshot.js";

const here = dirname(fileURLToPath(import.meta.url));

/** The repository root (dist/test → ../..). */
export const ROOT = resolve(here, "../..");
/** The real CSAW-HackML fixtures vendored in the repository (fixtures/csaw); BADNET_FIXTURES points elsewhere. */
export const FIXTURES = process.env.BADNET_FIXTURES ?? resolve(ROOT, "fixtures/csaw");
export const CLI = join(ROOT, "dist/cli/main.js");

export function fixture(rel: string): string {
  const p = join(FIXTURES, rel);
  if (!existsSync(p)) throw new Error(`fixture missing: ${p}`);
  return p;
}

/**
 * `false` when the Fashion-MNIST files are installed, else the reason a test that needs them is skipped
 * (node:test prints it). Read each time, so a test may point FASHION_MNIST_DIR elsewhere.
 */
export function fashionMnistSkip(): string | false {
  const dir = fashionMnistDir();
  const files = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"];
  const missing = files.filter((f) => !existsSync(join(dir, f)));
  if (missing.length === 0) return false;
  return `Fashion-MNIST not found in ${dir} (${missing.join(", ")} missing): install Debian's dataset-fashion-mnist (bash scripts/setup-system.sh) or set FASHION_MNIST_DIR`;
}

/** `false` when Chromium is installed, else the reason the browser tests are skipped. */
export function chromiumSkip(): string | false {
  try {
    accessSync(CHROMIUM, constants.X_OK);
    return false;
  } catch {
    return `${CHROMIUM} not found (or not executable): install Debian's chromium (bash scripts/setup-system.sh) to run the browser tests`;
  }
}

/** Debian's Python (never the one first on PATH), used only to build fixtures and independent references. */
export const SYSTEM_PYTHON = "/usr/bin/python3";

/** `false` when the system Python imports every module named (e.g. "torch", "onnx"), else the skip reason. */
export function pythonSkip(...modules: string[]): string | false {
  const r = spawnSync(SYSTEM_PYTHON, ["-c", modules.map((m) => `import ${m}`).join("; ")], { encoding: "utf8", timeout: 60_000 });
  if (r.status === 0) return false;
  const pkgs = modules.map((m) => `python3-${m}`).join(", ");
  return `${SYSTEM_PYTHON} cannot import ${modules.join(", ")}: install Debian's ${pkgs} to run this test`;
}
