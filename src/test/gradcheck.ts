// Finite-difference gradients on the float64 reference interpreter, the yardstick for the autodiff gradients.
import type { Graph, TensorData } from "../graph/ir.js";
import { GraphError, numel } from "../graph/ir.js";
import { evaluateValues, nodesFor, runNodes } from "./reference.js";

export interface NumericGradientOptions {
  /** Relative step: element i moves by h = eps * max(1, |x_i|). Default 1e-5. */
  eps?: number;
  /** Flat element indices of `wrt` to differentiate at (the result follows this order); default all. */
  indices?: number[];
}

/**
 * Central differences (f(x+h) - f(x-h)) / 2h of `loss` (summed over its elements) w.r.t. the feed or initializer
 * `wrt`, all in float64. Step choice: h = eps * max(1, |x_i|) with eps = 1e-5: the truncation error O(h^2) stays
 * near 1e-10 relative, rounding error O(1e-16 |f| / h) near 1e-11 |f|, and the small step keeps the chance of
 * straddling a ReLU/max kink low. The divisor is the step actually taken in floating point.
 */
export function numericGradient(g: Graph, feeds: Record<string, TensorData>, loss: string, wrt: string, opts: NumericGradientOptions = {}): Float64Array {
  const eps = opts.eps ?? 1e-5;
  if (!(eps > 0)) throw new GraphError(`numericGradient: eps must be positive, got ${eps}`);
  const isSource = wrt in feeds || g.initializers.has(wrt);
  if (!isSource) throw new GraphError(`numericGradient: "${wrt}" is neither a feed nor an initializer of graph "${g.name}"`);
  const base = evaluateValues(g, feeds, [loss]);
  const x = base.get(wrt);
  const size = x ? x.data.length : numel((feeds[wrt] ?? g.initializers.get(wrt)!).shape);
  const indices = opts.indices ?? Array.from({ length: size }, (_, i) => i);
  for (const i of indices) if (!Number.isInteger(i) || i < 0 || i >= size) throw new GraphError(`numericGradient: index ${i} is out of range for "${wrt}" (${size} elements)`);
  const grad = new Float64Array(indices.length);
  if (!x) return grad; // `loss` does not depend on `wrt`.
  if (x.dtype !== "float32" && x.dtype !== "float64") throw new GraphError(`numericGradient: "${wrt}" is ${x.dtype}, not a float`);

  // Only the nodes downstream of `wrt` are re-run; everything else is reused from the base evaluation.
  const affected = new Set([wrt]);
  const nodes = nodesFor(g, [loss]).filter((n) => {
    if (!n.inputs.some((i) => affected.has(i))) return false;
    for (const o of n.outputs) if (o) affected.add(o);
    return true;
  });
  const data = x.data.slice();
  const lossAt = (i: number, v: number): number => {
    data[i] = v;
    const env = new Map(base);
    env.set(wrt, { ...x, data });
    runNodes(nodes, env);
    const out = env.get(loss)!.data;
    let s = 0;
    for (let k = 0; k < out.length; k++) s += out[k];
    return s;
  };
  indices.forEach((i, k) => {
    const x0 = x.data[i];
    const h = eps * Math.max(1, Math.abs(x0));
    const xp = x0 + h;
    const xm = x0 - h;
    grad[k] = (lossAt(i, xp) - lossAt(i, xm)) / (xp - xm);
    data[i] = x0;
  });
  return grad;
}

const TINY = 1e-12;

/**
 * Max-norm relative error max_i |a_i - b_i| / max(max_i |b_i|, 1e-12), with b the reference. Scaling by the
 * largest reference entry (not per element) keeps near-zero entries from dominating. NaN anywhere gives Infinity.
 */
export function relError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new GraphError(`relError: lengths differ (${a.length} vs ${b.length})`);
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    if (Number.isNaN(d)) return Infinity;
    if (d > num) num = d;
    if (Math.abs(b[i]) > den) den = Math.abs(b[i]);
  }
  return num / Math.max(den, TINY);
}
