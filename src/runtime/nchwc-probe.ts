// The host's NCHWc block size (graph/nchwc.ts), found by running one small conv both ways. onnxruntime does not
// expose it: MLAS picks 16 on AVX-512, 8 on AVX2, none elsewhere, and a wrong guess gives wrong numbers, not an
// error. So each candidate is tried on a 32-channel conv (a multiple of both) against the plain Conv, and the
// first that agrees is used; none agreeing, or any error, leaves every conv as it is. Once per process.
import * as ort from "onnxruntime-node";
import { fail } from "../errors.js";
import { attr, Graph } from "../graph/ir.js";
import { blockable, blockConvs, runTimeValues } from "../graph/nchwc.js";
import { toOnnx } from "../onnx/export.js";
import { mulberry32 } from "../util/random.js";

export const BLOCK_CANDIDATES = [16, 8] as const;

let probed: Promise<number | null> | undefined;

/** $BADNET_NCHWC=0 switches the rewrite off (comparisons, or a host where the probe misleads); 1 or unset: on. */
export function nchwcDisabled(): boolean {
  const v = process.env.BADNET_NCHWC;
  if (v === undefined || v === "" || v === "1") return false;
  if (v === "0") return true;
  fail(`BADNET_NCHWC must be 0 (plain convs) or 1 (blocked convs, the default), got "${v}"`);
}

/** Whether `g` has a conv the rewrite could take at the smallest candidate block (no probe needed to say no). */
export function mayBlock(g: Graph): boolean {
  if (!g.nodes.some((n) => n.op === "Conv")) return false;
  const live = runTimeValues(g);
  const smallest = Math.min(...BLOCK_CANDIDATES);
  return g.nodes.some((n) => blockable(g, n, smallest, live));
}

function probeGraph(block: number | null): Graph {
  const g = new Graph("nchwc_probe");
  g.addInput("x", "float32", [2, 32, 7, 7]);
  g.addInput("w", "float32", [32, 32, 3, 3]);
  g.addInput("b", "float32", [32]);
  g.add("Conv", ["x", "w", "b"], { pads: attr.ints([1, 1, 1, 1]), strides: attr.ints([1, 1]) }, { outputs: ["y"] });
  g.setOutputs(["y"]);
  if (block !== null) blockConvs(g, block);
  return g;
}

async function runProbe(block: number | null, feeds: Record<string, ort.Tensor>): Promise<Float32Array> {
  const s = await ort.InferenceSession.create(toOnnx(probeGraph(block)), { intraOpNumThreads: 1, graphOptimizationLevel: "all" });
  try {
    return (await s.run(feeds)).y!.data as Float32Array;
  } finally {
    await s.release();
  }
}

async function probe(): Promise<number | null> {
  const rand = mulberry32(7);
  const fill = (n: number) => Float32Array.from({ length: n }, () => rand() - 0.5);
  const feeds = {
    x: new ort.Tensor("float32", fill(2 * 32 * 49), [2, 32, 7, 7]),
    w: new ort.Tensor("float32", fill(32 * 32 * 9), [32, 32, 3, 3]),
    b: new ort.Tensor("float32", fill(32), [32]),
  };
  try {
    const plain = await runProbe(null, feeds);
    const scale = plain.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
    for (const block of BLOCK_CANDIDATES) {
      const got = await runProbe(block, feeds).catch(() => null);
      if (got && got.length === plain.length && got.every((v, i) => Math.abs(v - plain[i]!) <= 1e-4 * scale)) return block;
    }
  } catch {
    // A runtime without the NCHWc ops, or any other failure: plain convs, as before.
  }
  return null;
}

/** The host's NCHWc block size, or null where the blocked conv is unavailable or switched off. */
export function nchwcBlock(): Promise<number | null> {
  if (nchwcDisabled()) return Promise.resolve(null);
  return (probed ??= probe());
}
