// Shared bits of the benchmark scripts: locating fixtures, timing, printing.
import { existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { loadModel } from "../io/load-model.js";
import type { Model } from "../model/model.js";
import { mulberry32 } from "../util/random.js";

const here = dirname(fileURLToPath(import.meta.url));

/** The real CSAW-HackML fixtures: $BADNET_FIXTURES, else the copy in the repository (fixtures/csaw). */
export function fixturesDir(): string {
  const env = process.env.BADNET_FIXTURES;
  const dir = env ?? resolve(here, "../../fixtures/csaw");
  if (!existsSync(dir)) throw new Error(`fixtures not found at ${dir} (set BADNET_FIXTURES)`);
  return dir;
}

export async function loadDeepId(file = "csaw2020/models/sunglasses_bd_weights.h5"): Promise<Model> {
  return loadModel(join(fixturesDir(), file), { arch: "deepid" });
}

export function randomImages(n: number, shape: [number, number, number], seed = 1): Float32Array {
  const rand = mulberry32(seed);
  return Float32Array.from({ length: n * shape[0] * shape[1] * shape[2] }, () => rand());
}

/** Runs fn `warmup` times untimed, then until `minSeconds` have passed; returns seconds per call. */
export async function timeIt(fn: () => Promise<unknown> | unknown, opts: { warmup?: number; minSeconds?: number; minRuns?: number } = {}): Promise<number> {
  for (let i = 0; i < (opts.warmup ?? 2); i++) await fn();
  const t0 = performance.now();
  let runs = 0;
  while (runs < (opts.minRuns ?? 3) || performance.now() - t0 < (opts.minSeconds ?? 2) * 1000) {
    await fn();
    runs++;
  }
  return (performance.now() - t0) / 1000 / runs;
}

export function row(label: string, value: string, note = ""): void {
  process.stdout.write(`${label.padEnd(44)} ${value.padStart(14)}  ${note}\n`);
}
