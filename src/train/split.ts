// The clean data a repair is given, split into the part it trains on and the part that judges it, and the
// shuffled mini-batches of an epoch. Every split is seeded, so a repair re-run with the same seed trains and is
// judged on the same images; the ten repairs that hold data out all split it here.
import { fail } from "../errors.js";
import { memoryDataset, type Dataset } from "../io/dataset.js";
import { mulberry32, shuffled } from "../util/random.js";

/** Labelled images in memory (NCHW rows). */
export interface Images {
  x: Float32Array;
  y: Int32Array;
}

/** Seeded split of n indices into a training part and a held-out part of round(share·n), each in increasing order. */
export function holdoutSplit(n: number, share: number, seed: number): { train: Int32Array; held: Int32Array } {
  const order = shuffled(n, mulberry32(seed ^ 0x5eed));
  const k = Math.round(share * n);
  return { held: order.slice(0, k).sort(), train: order.slice(k).sort() };
}

/** Images and labels at the given indices of an in-memory NCHW batch. */
export function gather(x: Float32Array, y: Int32Array, per: number, idx: Int32Array): Images {
  const gx = new Float32Array(idx.length * per);
  const gy = new Int32Array(idx.length);
  idx.forEach((j, i) => {
    gx.set(x.subarray(j * per, (j + 1) * per), i * per);
    gy[i] = y[j];
  });
  return { x: gx, y: gy };
}

/** Both parts of a split, as arrays and as Datasets. */
export interface CleanSplit {
  train: Images;
  held: Images;
  trainSet: Dataset;
  heldSet: Dataset;
}

/**
 * `clean` read into memory and split by holdoutSplit(size, share, seed); `what` names the repair in the error
 * when a part would be empty (a user's --holdout, or too little data).
 */
export function splitClean(clean: Dataset, share: number, seed: number, what: string): CleanSplit {
  if (!clean.labels) fail(`${what} needs labelled clean data; ${clean.name} has no labels`);
  const split = holdoutSplit(clean.size, share, seed);
  if (split.held.length === 0 || split.train.length === 0) fail(`${what}: --holdout ${share} leaves no images to train on or to hold out from ${clean.size}`);
  const per = clean.shape[0] * clean.shape[1] * clean.shape[2];
  const allX = clean.read(0, clean.size);
  const allY = Int32Array.from(clean.labels);
  const train = gather(allX, allY, per, split.train);
  const held = gather(allX, allY, per, split.held);
  return {
    train,
    held,
    trainSet: memoryDataset(`${clean.name} (train part)`, clean.shape, train.x, train.y),
    heldSet: memoryDataset(`${clean.name} (held out)`, clean.shape, held.x, held.y),
  };
}

/** One epoch's mini-batches: the indices 0..n−1 shuffled by `rand` (drawn now), cut into runs of `batchSize`. */
export function shuffledBatches(n: number, batchSize: number, rand: () => number): Int32Array[] {
  const order = shuffled(n, rand);
  const out: Int32Array[] = [];
  for (let start = 0; start < n; start += batchSize) out.push(order.subarray(start, Math.min(n, start + batchSize)));
  return out;
}
