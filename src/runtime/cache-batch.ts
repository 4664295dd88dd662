// Batch sizes that keep a call's activations near a core's cache. On the small networks of this project a
// graph call whose largest intermediate value outgrows the L2 cache (4 MiB per core here) costs more per image
// than a smaller call: measured on 2 cores, CPU time per image, for the Fashion CNN's Neural Cleanse step
// (4.3 ms per label-step at 3 labels of 32 images, 6.4 ms at 20) and G's score graph with 32 STRIP overlays
// (0.70 ms per input at 4 inputs a call, 0.93 ms at 15, 1.12 ms at 30); DeepID's step likewise (3.4 ms at 8
// labels of 4 images, 4.3 ms at 32). Results do not depend on the batch: every image's values are its own.
import type { Graph } from "../graph/ir.js";

/** Bytes of one call's largest activation to aim for: somewhat above one core's L2 (4 MiB). */
export const CACHE_BYTES = 6 << 20;

/** Floats of one item's largest intermediate value (static shapes; the batch dimension left out). */
export function largestActivation(g: Graph): number {
  let most = 0;
  for (const n of g.nodes) for (const o of n.outputs) if (o) most = Math.max(most, perItem(g.shape(o)));
  return most;
}

const perItem = (shape: readonly (number | string)[]): number => shape.slice(1).reduce<number>((p, d) => p * (typeof d === "number" ? d : 1), 1);

/**
 * Items per call so that items × imagesPerItem images' largest activation (`activation` floats each) stays
 * within CACHE_BYTES: between 1 and `cap`.
 */
export function cacheBatch(activation: number, imagesPerItem: number, cap: number): number {
  return Math.max(1, Math.min(cap, Math.floor(CACHE_BYTES / (4 * Math.max(1, activation) * Math.max(1, imagesPerItem)))));
}
