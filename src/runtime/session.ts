// The runtime boundary: a Graph compiled to ONNX and run by onnxruntime-node on all CPU cores.
import os from "node:os";
import * as ort from "onnxruntime-node";
import type { DType, Graph, TensorArray, TensorData } from "../graph/ir.js";
import { toOnnx } from "../onnx/export.js";
import { blockConvs } from "../graph/nchwc.js";
import { mayBlock, nchwcBlock, nchwcDisabled } from "./nchwc-probe.js";
import { fail } from "../errors.js";
import { threadsForWork, type GraphWork } from "./threads.js";

type OrtType = "float32" | "float64" | "int64" | "int32" | "bool" | "uint8";

function toOrt(t: TensorData): ort.Tensor {
  if (t.dtype === "bool") return new ort.Tensor("bool", t.data as Uint8Array, t.shape);
  return new ort.Tensor(t.dtype as OrtType, t.data as Float32Array, t.shape);
}

function fromOrt(t: ort.Tensor): TensorData {
  const dtype = t.type as DType;
  return { dtype, shape: [...t.dims], data: t.data as TensorArray };
}

export interface SessionOptions {
  /** Intra-op threads (default: $BADNET_THREADS, else runtime/threads.ts's rule for a graph with `work`, else every core). */
  threads?: number;
  /**
   * Whether idle intra-op threads spin waiting for work (default: off, or $BADNET_SPIN=1). Spinning wins a
   * little on an idle machine and loses much on a shared one, where spinning threads steal the cores the
   * working ones need.
   */
  spinning?: boolean;
  /**
   * A gradient graph's work per run: with neither `threads` nor $BADNET_THREADS given, the thread count is
   * runtime/threads.ts's rule for it instead of every core.
   */
  work?: GraphWork;
  /**
   * onnxruntime's memory pattern: after the first run with a set of input shapes, it plans all of the run's
   * intermediate buffers as one block. Default: off for gradient graphs (those given `work`), on for the others.
   * A training step's block is large and its buffers live briefly; without the pattern the arena reuses freed
   * chunks instead (fine-prune on PreAct-ResNet18: docs/pytorch-speed.md).
   */
  memoryPattern?: boolean;
  /**
   * Convs whose weights are computed at run time (training steps) in onnxruntime's blocked NCHWc form
   * (graph/nchwc.ts), at the block size runtime/nchwc-probe.ts found on this host. Default: on, unless
   * $BADNET_NCHWC=0. Convs with constant weights get that form from onnxruntime itself.
   */
  blockedConvs?: boolean;
  /** Write onnxruntime's per-node profile (Chrome trace JSON) to files starting with this prefix; see endProfiling. */
  profilePrefix?: string;
}

function envThreads(): number | undefined {
  const v = process.env.BADNET_THREADS;
  if (v === undefined || v === "") return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) fail(`BADNET_THREADS must be a positive integer, got "${v}"`);
  return n;
}

/** The settings a session gets: explicit options, else the environment, else the defaults. */
export function sessionSettings(opts: SessionOptions = {}, nodes = 0): { threads: number; spinning: boolean; memoryPattern: boolean } {
  const cores = os.availableParallelism();
  return {
    threads: opts.threads ?? envThreads() ?? (opts.work ? threadsForWork(opts.work, nodes, cores) : cores),
    spinning: opts.spinning ?? process.env.BADNET_SPIN === "1",
    memoryPattern: opts.memoryPattern ?? opts.work === undefined,
  };
}

/** Seconds and counts of one graph's sessions (by graph name), for profiles: see recordSessionStats. */
export interface SessionStat {
  sessions: number;
  /** Graph export plus onnxruntime's load and optimization. */
  createSeconds: number;
  runs: number;
  runSeconds: number;
}

let stats: Map<string, SessionStat> | null = null;

/** Starts (or restarts) counting every session's creation and run time by graph name; returns the live table. */
export function recordSessionStats(): Map<string, SessionStat> {
  stats = new Map();
  return stats;
}

function statOf(what: string): SessionStat | undefined {
  if (!stats) return undefined;
  let s = stats.get(what);
  if (!s) stats.set(what, (s = { sessions: 0, createSeconds: 0, runs: 0, runSeconds: 0 }));
  return s;
}

export class Session {
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];
  private readonly stat: SessionStat | undefined;

  private constructor(private readonly session: ort.InferenceSession, what: string) {
    this.inputNames = session.inputNames;
    this.outputNames = session.outputNames;
    this.stat = statOf(what);
  }

  static async create(g: Graph, opts: SessionOptions = {}): Promise<Session> {
    const t0 = performance.now();
    // $BADNET_NCHWC is read for every graph, so a bad value stops the first command that runs one.
    const block = opts.blockedConvs !== false && !nchwcDisabled() && mayBlock(g) ? await nchwcBlock() : null;
    if (block !== null) {
      const blocked = g.clone();
      blockConvs(blocked, block);
      const bytes = toOnnx(blocked);
      const exportSeconds = (performance.now() - t0) / 1000;
      // A conv the probe did not cover that onnxruntime refuses in the blocked form: the plain graph instead.
      const s = await Session.fromBytes(bytes, opts, g.name, g.nodes.length).catch(() => null);
      if (s) {
        if (s.stat) s.stat.createSeconds += exportSeconds;
        return s;
      }
    }
    const bytes = toOnnx(g);
    const exportSeconds = (performance.now() - t0) / 1000;
    const s = await Session.fromBytes(bytes, opts, g.name, g.nodes.length);
    if (s.stat) s.stat.createSeconds += exportSeconds;
    return s;
  }

  static async fromBytes(bytes: Uint8Array, opts: SessionOptions = {}, what = "model", nodes = 0): Promise<Session> {
    const { threads, spinning, memoryPattern } = sessionSettings(opts, nodes);
    const t0 = performance.now();
    try {
      const s = await ort.InferenceSession.create(bytes, {
        intraOpNumThreads: threads,
        interOpNumThreads: 1,
        graphOptimizationLevel: "all",
        executionMode: "sequential",
        enableMemPattern: memoryPattern,
        ...(opts.profilePrefix ? { enableProfiling: true, profileFilePrefix: opts.profilePrefix } : {}),
        extra: { session: { intra_op: { allow_spinning: spinning ? "1" : "0" }, inter_op: { allow_spinning: spinning ? "1" : "0" } } },
      });
      const out = new Session(s, what);
      if (out.stat) {
        out.stat.sessions++;
        out.stat.createSeconds += (performance.now() - t0) / 1000;
      }
      return out;
    } catch (e) {
      throw new Error(`onnxruntime could not load ${what}: ${(e as Error).message.split("\n")[0]}`);
    }
  }

  /**
   * Runs with some outputs written into caller-owned arrays (no allocation, no copy out of the runtime): the
   * training step feeds this step's parameter arrays and has the updated values written into the other set.
   * Outputs not in `into` come back as in run(). The arrays in `into` must not be among the feeds.
   */
  async runInto(feeds: Record<string, TensorData>, into: Record<string, TensorData>, fetches: string[] = []): Promise<Record<string, TensorData>> {
    const ortFeeds: Record<string, ort.Tensor> = {};
    for (const [k, v] of Object.entries(feeds)) ortFeeds[k] = toOrt(v);
    const ortFetches: Record<string, ort.Tensor | null> = {};
    for (const [k, v] of Object.entries(into)) ortFetches[k] = toOrt(v);
    for (const k of fetches) ortFetches[k] = null;
    const t0 = this.stat && performance.now();
    const res = await this.session.run(ortFeeds, ortFetches);
    this.count(t0);
    const out: Record<string, TensorData> = {};
    for (const k of fetches) out[k] = fromOrt(res[k]);
    return out;
  }

  async run(feeds: Record<string, TensorData>, fetches?: string[]): Promise<Record<string, TensorData>> {
    const ortFeeds: Record<string, ort.Tensor> = {};
    for (const [k, v] of Object.entries(feeds)) ortFeeds[k] = toOrt(v);
    const t0 = this.stat && performance.now();
    const res = await this.session.run(ortFeeds, fetches ?? (this.outputNames as string[]));
    this.count(t0);
    const out: Record<string, TensorData> = {};
    for (const [k, v] of Object.entries(res)) out[k] = fromOrt(v);
    return out;
  }

  private count(t0: number | undefined): void {
    if (!this.stat || t0 === undefined) return;
    this.stat.runs++;
    this.stat.runSeconds += (performance.now() - t0) / 1000;
  }

  /** Stops profiling (sessions created with profilePrefix) and writes the profile file. */
  endProfiling(): void {
    this.session.endProfiling();
  }

  async release(): Promise<void> {
    await this.session.release();
  }

  /** `await using s = await Session.create(g)` releases the session when the scope ends, also on a throw. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.release();
  }
}

/** Runs `fn` with a session on `g` and releases it afterwards, also when `fn` throws. */
export async function withSession<T>(g: Graph, fn: (s: Session) => Promise<T>, opts: SessionOptions = {}): Promise<T> {
  const s = await Session.create(g, opts);
  try {
    return await fn(s);
  } finally {
    await s.release();
  }
}
