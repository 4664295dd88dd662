// The PyTorch-export fixture set (fixtures/pytorch, built by scripts/pytorch/build_fixtures.py): small BadNets
// exported from PyTorch 1.13 at opsets 11 and 17, PyTorch's own logits on a few images, clean/poisoned data.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { ROOT } from "./fixtures.js";

export const PYTORCH_FIXTURES = process.env.BADNET_PYTORCH_FIXTURES ?? join(ROOT, "fixtures/pytorch");

export interface PytorchManifest {
  mean: number[];
  std: number[];
  inputScale: number;
  target: number;
  models: Record<string, { files: Record<string, string>; width: number; params: number; cleanAccuracy: number; asr: number }>;
}

/** The manifest, or undefined (with the reason) when the fixture set is missing. */
export function pytorchManifest(): PytorchManifest | undefined {
  const p = join(PYTORCH_FIXTURES, "manifest.json");
  return existsSync(p) ? (JSON.parse(readFileSync(p, "utf8")) as PytorchManifest) : undefined;
}

export const missingPytorchFixtures = `PyTorch fixtures missing at ${PYTORCH_FIXTURES} (build them with /usr/bin/python3 scripts/pytorch/build_fixtures.py)`;

/** PyTorch's logits on clean_test.h5[0:4] then poisoned_test.h5[0:4]. */
export function pytorchReference(name: string): number[][] {
  return (JSON.parse(readFileSync(join(PYTORCH_FIXTURES, `${name}_reference.json`), "utf8")) as { logits: number[][] }).logits;
}

export const pytorchFile = (rel: string): string => join(PYTORCH_FIXTURES, rel);
