// A tiny backdoored classification task for the defense tests: 4 classes = a bright square in one quadrant
// of a noisy 30x30 image; a checkerboard patch at the top edge sends any image to class 0. Pixels are
// multiples of 1/255 so the data survives a round trip through a uint8 CSAW file.
import { join } from "node:path";
import { writeCsawH5 } from "../io/csaw-h5.js";
import { memoryDataset, type Dataset } from "../io/dataset.js";
import { zooCnn } from "../model/archs.js";
import { lowerModel } from "../model/lower.js";
import type { Model } from "../model/model.js";
import { train } from "../train/trainer.js";
import { mulberry32 } from "../util/random.js";

export const H = 30;
export const SHAPE: [number, number, number] = [1, H, H];

export function synth(n: number, seed: number, poison: "none" | "mix" | "all"): { x: Float32Array; y: Int32Array } {
  const rand = mulberry32(seed);
  const x = new Float32Array(n * H * H);
  const y = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const img = x.subarray(i * H * H, (i + 1) * H * H);
    for (let p = 0; p < img.length; p++) img[p] = 0.3 * rand();
    const k = Math.floor(rand() * 4);
    const oy = (k >> 1) * 15 + 4, ox = (k & 1) * 15 + 4;
    for (let a = 0; a < 7; a++) for (let b = 0; b < 7; b++) img[(oy + a) * H + ox + b] = 0.8 + 0.2 * rand();
    y[i] = k;
    if (poison === "all" || (poison === "mix" && rand() < 0.15)) {
      for (let a = 0; a < 3; a++) for (let b = 0; b < 4; b++) img[a * H + 13 + b] = (a + b) % 2;
      y[i] = 0;
    }
    for (let p = 0; p < img.length; p++) img[p] = Math.round(img[p] * 255) / 255;
  }
  return { x, y };
}

export const toUint8 = (x: Float32Array): Uint8Array => Uint8Array.from(x, (v) => Math.round(v * 255));

/** A small zoo-style CNN trained on 480 images of which ~15% carry the trigger. */
export async function trainTinyBackdoor(): Promise<Model> {
  const spec = zooCnn({ inputShape: [H, H, 1], numClasses: 4, filters: [4, 8, 10], hidden: 16, seed: 3, name: "tiny" });
  const d = synth(480, 1, "mix");
  return (await train(lowerModel(spec), { ...d, shape: SHAPE }, { epochs: 6, batchSize: 32, optimizer: { kind: "adam", lr: 3e-3 }, seed: 1 })).model;
}

/**
 * The defense tests' data: 200 clean validation images (seed 2) and 100 poisoned ones (seed 3), in memory and
 * written to dir/valid.h5 and dir/poisoned.h5 (CSAW layout) for the CLI.
 */
export async function tinyBackdoorData(dir: string): Promise<{ valid: Dataset; poisoned: Dataset }> {
  const v = synth(200, 2, "none");
  const p = synth(100, 3, "all");
  await writeCsawH5(join(dir, "valid.h5"), toUint8(v.x), [200, ...SHAPE], v.y);
  await writeCsawH5(join(dir, "poisoned.h5"), toUint8(p.x), [100, ...SHAPE], p.y);
  return { valid: memoryDataset("valid", SHAPE, v.x, v.y), poisoned: memoryDataset("poisoned", SHAPE, p.x, p.y) };
}
