// G: the N+1-class network every repair hands back. Class N means "this input looks backdoored".
// G's output `logits` is [batch, N+1]: B's logits plus one column that is -1e9 for accepted inputs
// (softmax then equals B's probabilities, class N gets 0) and +1e9 for rejected ones (argmax = N).
import { writeFileSync, renameSync } from "node:fs";
import { attr, Graph, tensor, type Node } from "../graph/ir.js";
import { duplicateDownstream } from "../graph/transforms.js";
import type { Model } from "../model/model.js";
import { toOnnx } from "../onnx/export.js";
import { fail } from "../errors.js";

export const REJECT_SCORE = 1e9;

/**
 * Appends class N to `logits` ([batch, N]): `reject` is a bool [batch] value. Sets the graph's only
 * output to the new `logits` value (the old one is renamed out of the way first).
 */
export function appendRejectClass(g: Graph, logits: string, reject: string): string {
  const col = g.op("Where", [g.op("Unsqueeze", [reject, g.ints([1])]), g.scalar(REJECT_SCORE), g.scalar(-REJECT_SCORE)]);
  const out = g.op("Concat", [logits, col], { axis: attr.int(1) }, g.has("logits") ? "g_logits" : "logits");
  g.setOutputs([out]);
  return out;
}

/**
 * True when `model` is a G (this toolkit's N+1-class output): its logits end in the reject column that
 * appendRejectClass adds (a Concat whose last part is Where(…, +REJECT_SCORE, −REJECT_SCORE)), read through
 * the Identity an ONNX import puts on a renamed output.
 */
export function isRejectingG(model: Pick<Model, "graph" | "logits">): boolean {
  const g = model.graph;
  let out = g.producer(model.logits);
  while (out?.op === "Identity") out = g.producer(out.inputs[0]);
  if (out?.op !== "Concat") return false;
  const col = g.producer(out.inputs[out.inputs.length - 1]);
  const scalar = (v: string | undefined): number | undefined => {
    const t = v === undefined ? undefined : g.initializers.get(v);
    return t && t.data.length === 1 ? Number(t.data[0]) : undefined;
  };
  return col?.op === "Where" && scalar(col.inputs[1]) === Math.fround(REJECT_SCORE) && scalar(col.inputs[2]) === Math.fround(-REJECT_SCORE);
}

/**
 * Repairing a G is not meaningful: it holds B and a repaired copy side by side, and its last class is the
 * reject verdict, which no clean label trains. A one-line error instead of a training graph that cannot work.
 */
export function refuseG(model: Pick<Model, "graph" | "logits" | "name" | "numClasses">): void {
  if (isRejectingG(model))
    fail(`model ${model.name} is a G network (${model.numClasses} classes, the last one marks rejected inputs), not a classifier to repair: give B or a repaired network (G can be evaluated, scanned with detect and used with predict)`);
}

/** Copies `src`'s nodes and initializers into `dst` with every value name prefixed; `input` maps to dst's input. */
export function embed(dst: Graph, src: Graph, prefix: string, inputs: Record<string, string>): (v: string) => string {
  const rename = (v: string) => (v === "" ? "" : inputs[v] ?? `${prefix}${v}`);
  for (const [k, t] of src.initializers) dst.addInitializer(rename(k), t);
  for (const n of src.nodes) {
    const node: Node = { ...n, name: `${prefix}${n.name}`, inputs: n.inputs.map(rename), outputs: n.outputs.map(rename) };
    dst.nodes.push(node);
    for (const o of n.outputs) if (o) dst.values.set(rename(o), { ...src.info(o), name: rename(o) });
  }
  return rename;
}

/** Top-1 class of a [batch, K] logits value as int64 [batch]. */
export function argmax(g: Graph, logits: string): string {
  return g.op("ArgMax", [logits], { axis: attr.int(1), keepdims: attr.int(0) });
}

/** G(x) = B(x) when B and the repaired B' agree on the top-1 class, else N. Both networks live in one graph. */
export function gFromPair(b: Model, repaired: Model, name = `${b.name}_G`): Graph {
  const g = new Graph(name);
  g.addInput("input", "float32", ["N", ...b.inputShape]);
  const rb = embed(g, b.graph, "B/", { [b.input]: "input" });
  const rr = embed(g, repaired.graph, "R/", { [repaired.input]: "input" });
  const bl = rb(b.logits);
  const disagree = g.op("Not", [g.op("Equal", [argmax(g, bl), argmax(g, rr(repaired.logits))])]);
  appendRejectClass(g, bl, disagree);
  g.prune(["input"]);
  return g;
}

/** Writes a graph as an ONNX file (atomically), with `metadata` as its metadata_props. */
export function writeOnnx(path: string, g: Graph, docString?: string, metadata?: Record<string, string>): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, toOnnx(g, { docString, metadata }));
  renameSync(tmp, path);
}

/**
 * G for a repair that only masks channels of one value of B (pruning): B's graph once, and everything
 * downstream of `value` a second time reading value·mask ([C] over axis 1, 1 = keep). The trunk up to
 * `value` is shared. G(x) = B(x) when both heads agree on the top-1 class, else N.
 */
export function gFromMaskedBranch(b: Model, value: string, mask: Float32Array, name = `${b.name}_G`): Graph {
  const g = new Graph(name);
  g.addInput("input", "float32", ["N", ...b.inputShape]);
  const rb = embed(g, b.graph, "B/", { [b.input]: "input" });
  const v = rb(value);
  const rank = g.shape(v).length;
  const view = g.op("Reshape", [g.constant(tensor("float32", [mask.length], Float32Array.from(mask)), "pruning_mask"), g.ints([1, -1, ...new Array(Math.max(0, rank - 2)).fill(1)])]);
  const masked = g.op("Mul", [v, view], {}, g.fresh(`${v}/pruned`));
  const rp = duplicateDownstream(g, v, masked, "P/");
  const bl = rb(b.logits);
  const disagree = g.op("Not", [g.op("Equal", [argmax(g, bl), argmax(g, rp(bl))])]);
  appendRejectClass(g, bl, disagree);
  g.prune(["input"]);
  return g;
}
