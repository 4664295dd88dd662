// How many intra-op threads a gradient graph gets. onnxruntime hands every node's work to all its threads, and
// with spinning off (runtime/session.ts) each hand-off wakes a sleeping thread and waits for it. Forward graphs
// are few, large, fused nodes and gain from every core; gradient graphs (training steps, trigger inversion,
// adversarial perturbations) are hundreds to thousands of nodes, most of them small element-wise ones, and on
// small networks the hand-offs cost more than the second core gives. Measured on the 2-core development machine,
// 1 thread against 2 in one run (bench/threads.ts; README "Threads"): Neural Cleanse's step on the example's
// Fashion-MNIST net (about 2 M multiply-accumulates per node and run) ran 0.59× the time, the training step of
// width-8 PreAct-ResNet18 (1–4 M per node) 0.68–0.80×; DeepID's (4–14 M) 0.96–1.16× and full-width
// PreAct-ResNet18's (about 70 M) 1.23–1.30× favoured all cores. The rule is a pure function of the graph and its
// batch, never of timing, so the same run gives the same thread count (and the same numbers) every time.

import type { Graph } from "../graph/ir.js";
import { forwardMacs } from "../graph/macs.js";

/** Below this many forward multiply-accumulates per graph node and run, a gradient graph runs on one thread. */
export const MIN_MACS_PER_NODE = 5e6;

/** What a gradient graph computes per run: the network's forward MACs per image times the images in one run. */
export interface GraphWork {
  macsPerRun: number;
}

/** Intra-op threads for a gradient graph of `nodes` nodes doing `work` per run, on a machine with `cores`. */
export function threadsForWork(work: GraphWork, nodes: number, cores: number): number {
  return work.macsPerRun / Math.max(1, nodes) < MIN_MACS_PER_NODE ? 1 : cores;
}

/** Session options for a gradient graph of `model` that runs `images` images per run. */
export function gradientWork(model: { graph: Graph }, images: number): { work: GraphWork } {
  return { work: { macsPerRun: forwardMacs(model) * images } };
}
