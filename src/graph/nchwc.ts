// onnxruntime's blocked-channel convolution for convs whose weights are computed at run time.
//
// onnxruntime runs a Conv fastest in its NCHWc layout: channels in blocks of 8 (AVX2) or 16 (AVX-512), the
// filter reordered to match, a direct kernel instead of im2col + GEMM. Its own graph optimizer makes that
// rewrite, but only for a Conv whose weight is a constant: a forward graph gets it, a training step does not,
// because there the weights are graph inputs that change every step. This module makes the same rewrite in our
// graph, with the filter reordered by a Reshape/Transpose in the graph every run:
//   W [O, I, kh, kw] → the OIHWBiBo layout of MLAS's MlasReorderFilterOIHWBiBo: [O/b, I/b, kh, kw, b_i, b_o],
//   per (output block, input block, kernel position) b input channels of b output channels each;
//   x → ReorderInput → nchwc Conv → ReorderOutput → y.
// Measured on full-width PreAct-ResNet18's stage shapes at batch 64 (one 3×3 conv, weights as inputs, reorders
// included, AVX-512 host, 2026-12-07): 1.34×, 1.21×, 1.55× and 0.94× the plain Conv's speed at 64, 128, 256 and
// 512 channels (docs/pytorch-speed.md).
//
// The block size is the host's (runtime/nchwc-probe.ts finds it by running both forms), and a wrong one
// computes garbage, so this rewrite is only ever applied with a probed block size. It is applied when a graph
// is compiled (runtime/session.ts), to a clone: no other pass sees the foreign-domain nodes.
import { attr, type Attrs, type Graph, type Node } from "./ir.js";
import type { OutInfo } from "./shapes.js";
import { GraphError } from "./tensor.js";

export const NCHWC_DOMAIN = "com.microsoft.nchwc";

/** Values that depend on some graph input (everything else onnxruntime folds into constants). */
export function runTimeValues(g: Graph): Set<string> {
  const live = new Set(g.inputs.map((v) => v.name));
  for (const n of g.nodes) if (n.inputs.some((i) => live.has(i))) n.outputs.forEach((o) => live.add(o));
  return live;
}

function intsOf(n: Node, name: string): number[] | undefined {
  const a = n.attrs[name];
  return a?.kind === "ints" ? a.value : undefined;
}

/** Whether `n` is a Conv this rewrite handles at block size `block` (see blockConvs). */
export function blockable(g: Graph, n: Node, block: number, runTime: Set<string>): boolean {
  if (n.op !== "Conv" || n.domain) return false;
  const w = n.inputs[1];
  if (!w || !runTime.has(w)) return false;
  const ws = g.shape(w);
  const xs = g.shape(n.inputs[0]);
  if (ws.length !== 4 || xs.length !== 4 || !ws.every((d) => typeof d === "number")) return false;
  const group = n.attrs.group?.kind === "int" ? n.attrs.group.value : 1;
  const autoPad = n.attrs.auto_pad?.kind === "string" ? n.attrs.auto_pad.value : "NOTSET";
  const [o, i] = ws as number[];
  return group === 1 && autoPad === "NOTSET" && o % block === 0 && i % block === 0 && xs[1] === i;
}

/**
 * Rewrites (in place) every Conv of `g` whose weight is computed at run time, with group 1 and input and output
 * channels that are multiples of `block`, into onnxruntime's NCHWc form (see the file comment). Returns the
 * number rewritten. `block` must be the host's NCHWc block size (runtime/nchwc-probe.ts).
 */
export function blockConvs(g: Graph, block: number): number {
  if (!Number.isInteger(block) || block < 2) throw new GraphError(`NCHWc block size must be an integer >= 2, got ${block}`);
  const runTime = runTimeValues(g);
  const targets = g.nodes.filter((n) => blockable(g, n, block, runTime));
  if (targets.length === 0) return 0;
  const drop = new Set(targets);
  g.nodes = g.nodes.filter((n) => !drop.has(n));
  const blocked = (op: string, inputs: string[], attrs: Attrs, opts: { outputs?: string[]; name?: string; infer: OutInfo[] }): string => {
    const [out] = g.add(op, inputs, attrs, opts);
    g.nodes[g.nodes.length - 1]!.domain = NCHWC_DOMAIN;
    return out;
  };
  for (const n of targets) {
    const [x, w, bias] = n.inputs;
    const [o, i, kh, kw] = g.staticShape(w);
    const y = n.outputs[0];
    const yInfo = g.info(y);
    // OIHWBiBo in two transposes that each move one axis (onnxruntime's fast paths; one 6-D transpose took
    // 1.5× as long at 512 channels): [O/b, b_o, I·kh·kw] → [O/b, I·kh·kw, b_o], read as
    // [O/b·I/b, b_i, kh·kw, b_o] → [O/b·I/b, kh·kw, b_i, b_o].
    const t1 = g.op("Transpose", [g.op("Reshape", [w, g.ints([o / block, block, i * kh * kw])])], { perm: attr.ints([0, 2, 1]) });
    const t2 = g.op("Transpose", [g.op("Reshape", [t1, g.ints([(o / block) * (i / block), block, kh * kw, block])])], { perm: attr.ints([0, 2, 1, 3]) });
    const wb = g.op("Reshape", [t2, g.ints([o, i, kh, kw])]);
    const xInfo = g.info(x);
    const xb = blocked("ReorderInput", [x], {}, { infer: [{ dtype: xInfo.dtype, shape: [...xInfo.shape] }] });
    const attrs: Attrs = { kernel_shape: attr.ints([kh, kw]) };
    for (const k of ["strides", "pads", "dilations"]) {
      const v = intsOf(n, k);
      if (v) attrs[k] = attr.ints(v);
    }
    const yb = blocked("Conv", bias ? [xb, wb, bias] : [xb, wb], attrs, { infer: [{ dtype: yInfo.dtype, shape: [...yInfo.shape] }] });
    // The block's last node keeps the Conv's output name (and node name), so readers of y are unchanged.
    g.values.delete(y);
    blocked("ReorderOutput", [yb], { channels: attr.int(o) }, { outputs: [y], name: n.name, infer: [{ dtype: yInfo.dtype, shape: [...yInfo.shape] }] });
  }
  g.toposort();
  return targets.length;
}
