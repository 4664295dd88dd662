// Graph rewrites used by the defenses.
import { attr, Graph, GraphError, type Node } from "./ir.js";

/**
 * Multiplies channel axis 1 of `value` by `mask` ([C], an input or initializer) and re-points every
 * reader of `value` to the masked value. Returns the masked value's name.
 */
export function maskChannels(g: Graph, value: string, mask: string): string {
  const shape = g.shape(value);
  const view = [1, -1, ...new Array(Math.max(0, shape.length - 2)).fill(1)];
  const readers = new Set(g.nodes.filter((n) => n.inputs.includes(value)));
  const m = g.op("Reshape", [mask, g.ints(view)]);
  const masked = g.op("Mul", [value, m], {}, `${value}/masked`);
  g.replaceUses(value, masked, new Set([...g.nodes].filter((n) => !readers.has(n))));
  g.toposort();
  return masked;
}

/** Softmax probabilities of a logits value. */
export function softmax(g: Graph, logits: string, name?: string): string {
  return g.op("Softmax", [logits], { axis: attr.int(-1) }, name);
}

/** The nodes that read `value`, directly or through other nodes, in graph order. */
export function downstreamNodes(g: Graph, value: string): Node[] {
  const tainted = new Set([value]);
  const out: Node[] = [];
  for (const n of g.nodes) {
    if (n.inputs.some((i) => tainted.has(i))) {
      out.push(n);
      for (const o of n.outputs) if (o) tainted.add(o);
    }
  }
  return out;
}

/** Values `nodes` read that they do not produce themselves and that are not initializers (graph order). */
export function externalReads(g: Graph, nodes: Node[]): string[] {
  const produced = new Set(nodes.flatMap((n) => n.outputs));
  const seen = new Set<string>();
  for (const n of nodes) for (const i of n.inputs) if (i && !produced.has(i) && !g.initializers.has(i)) seen.add(i);
  return [...seen];
}

/**
 * Splits off everything downstream of `value`: a graph whose inputs are `value` plus any other value those
 * nodes read from upstream (same names and shapes), computing `outputs`. Lets a caller run the upstream
 * part once, keep its results, and re-run only this head many times.
 */
export function headGraph(g: Graph, value: string, outputs: string[], name = `${g.name}_head`): { graph: Graph; inputs: string[] } {
  const nodes = downstreamNodes(g, value);
  const produced = new Set(nodes.flatMap((n) => n.outputs));
  for (const o of outputs) if (!produced.has(o)) throw new GraphError(`headGraph: output "${o}" does not depend on "${value}"`);
  const inputs = [value, ...externalReads(g, nodes).filter((v) => v !== value)];
  const h = new Graph(name);
  for (const v of inputs) h.addInput(v, g.info(v).dtype, g.shape(v));
  for (const n of nodes) {
    for (const i of n.inputs) if (i && g.initializers.has(i) && !h.initializers.has(i)) h.addInitializer(i, g.initializers.get(i)!);
    h.nodes.push({ ...n, inputs: [...n.inputs], outputs: [...n.outputs], attrs: { ...n.attrs } });
    for (const o of n.outputs) if (o) h.values.set(o, { ...g.info(o) });
  }
  h.setOutputs(outputs);
  h.prune(inputs);
  return { graph: h, inputs };
}

/**
 * Duplicates every node downstream of `value`, the copies reading `replacement` instead of `value` (other
 * upstream values are shared). Copied values and nodes get `prefix` prepended. Returns the renaming of
 * the original value names to their copies (identity for values that were not copied).
 */
export function duplicateDownstream(g: Graph, value: string, replacement: string, prefix: string): (v: string) => string {
  if (!g.has(replacement)) throw new GraphError(`duplicateDownstream: unknown value "${replacement}"`);
  const nodes = downstreamNodes(g, value);
  const map = new Map<string, string>([[value, replacement]]);
  for (const n of nodes)
    for (const o of n.outputs) {
      if (!o) continue;
      const copy = `${prefix}${o}`;
      if (g.has(copy)) throw new GraphError(`duplicateDownstream: value "${copy}" already exists`);
      map.set(o, copy);
    }
  const rename = (v: string): string => map.get(v) ?? v;
  for (const n of nodes) {
    const node: Node = { ...n, name: `${prefix}${n.name}`, inputs: n.inputs.map(rename), outputs: n.outputs.map(rename), attrs: { ...n.attrs } };
    g.nodes.push(node);
    for (const o of n.outputs) if (o) g.values.set(rename(o), { ...g.info(o), name: rename(o) });
  }
  g.toposort();
  return rename;
}

/**
 * Rewrites every Relu → MaxPool pair (the pool the Relu's only reader) into MaxPool → Relu, in place. Max and
 * relu commute (relu is monotonic), so the values are the same, but the Relu and its gradient (a Where over
 * the activation) run on the pooled tensor, a quarter of the size for 2×2 pools, and no gradient is split
 * between tied zeros the Relu then discards. Returns the number of pairs rewritten.
 */
export function poolBeforeRelu(g: Graph): number {
  const readers = g.consumers();
  const outs = new Set(g.outputs.map((o) => o.name));
  let count = 0;
  for (const n of [...g.nodes]) {
    if (n.op !== "MaxPool" || (n.outputs.length > 1 && n.outputs[1] !== "")) continue;
    const relu = g.producer(n.inputs[0]);
    if (relu?.op !== "Relu" || (readers.get(relu.outputs[0]) ?? []).length !== 1 || outs.has(relu.outputs[0])) continue;
    const z = relu.inputs[0];
    // Same value names, swapped order: the pool reads z, the Relu writes the pool's old output.
    const pooled = g.fresh(`${n.outputs[0]}/prerelu`);
    n.inputs[0] = z;
    const y = n.outputs[0];
    n.outputs[0] = pooled;
    relu.inputs[0] = pooled;
    g.values.delete(relu.outputs[0]);
    relu.outputs[0] = y;
    g.values.set(pooled, { ...g.info(y), name: pooled });
    count++;
  }
  if (count) g.toposort();
  return count;
}
