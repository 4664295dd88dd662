// Forward multiply-accumulates of one image, from a graph's static shapes: what a run of a network costs.
import type { Graph } from "./ir.js";

/** Forward multiply-accumulates of one image: Conv, ConvTranspose, Gemm and MatMul, from the graph's static shapes. */
export function forwardMacs(model: { graph: Graph }): number {
  return graphMacs(model.graph);
}

/** Product of a shape's numeric dims after the first (the batch, often symbolic). */
const perItem = (shape: readonly (number | string)[]): number => shape.slice(1).reduce<number>((p, d) => p * (typeof d === "number" ? d : 1), 1);

export function graphMacs(g: Graph): number {
  let macs = 0;
  for (const n of g.nodes) {
    if (n.op === "Conv") {
      const w = g.staticShape(n.inputs[1]); // [M, C/group, kh, kw]
      macs += perItem(g.shape(n.outputs[0])) * w.slice(1).reduce((p, d) => p * d, 1);
    } else if (n.op === "ConvTranspose") {
      const w = g.staticShape(n.inputs[1]); // [C, M/group, kh, kw]: each input value feeds M/group·kh·kw outputs
      macs += perItem(g.shape(n.inputs[0])) * w.slice(1).reduce((p, d) => p * d, 1);
    } else if (n.op === "Gemm") {
      const x = g.shape(n.inputs[0]);
      const transA = n.attrs.transA?.kind === "int" && n.attrs.transA.value === 1;
      const inner = transA ? x[0] : x[1];
      macs += perItem(g.shape(n.outputs[0])) * (typeof inner === "number" ? inner : 1);
    } else if (n.op === "MatMul") {
      const w = g.shape(n.inputs[1]);
      const inner = w[0];
      macs += perItem(g.shape(n.outputs[0])) * (typeof inner === "number" ? inner : 1);
    }
  }
  return macs;
}
