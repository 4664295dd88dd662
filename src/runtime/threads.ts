// How many intra-op threads a gradient graph gets. onnxruntime hands every node's work to all its threads, and
// with spinning off (runtime/session.ts) each hand-off wakes a sleeping thread and waits for it. Forward graphs
// are few, large, fused nodes and gain from every core; gradient graphs (training steps, trigger inversion,
// adversarial perturbations) are hundreds to thousands of nodes, most of them small element-wise ones, and on
// small networks the hand-offs cost more than the second core gives. Measured on the 2-core development machine,
// 1 thread against 2 in one run (bench/threads.ts; README "Threads"), in forward MACs per node and run:
// width-8 PreAct-ResNet18's training step (0.3–1.5 M) took 0.65–0.87× the time on one thread, and the example's
// Neural Cleanse steps (0.6 M) 0.59× over a whole scan; DeepID's training step at batch 256 (4.7 M) took
// 1.16–1.19×, full-width PreAct-ResNet18's (11–23 M) 1.23–1.36×, its Neural Cleanse step (46–123 M) 1.56–1.67×.
// MIN_MACS_PER_NODE lies between. The rule is a pure function of the graph, its batch and the core count, never
// of timing, so one machine gives the same thread count (and the same numbers) every time.

import type { Graph } from "../graph/ir.js";
import { forwardMacs } from "../graph/macs.js";

/** Below this many forward multiply-accumulates per graph node and run, a gradient graph runs on one thread. */
export const MIN_MACS_PER_NODE = 3e6;

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
