// The runtime boundary: a Graph compiled to ONNX and run by onnxruntime-node on all CPU cores.
import os from "node:os";
import * as ort from "onnxruntime-node";
import type { DType, Graph, TensorArray, TensorData } from "../graph/ir.js";
import { toOnnx } from "../onnx/export.js";

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
  threads?: number;
}

export class Session {
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];

  private constructor(private readonly session: ort.InferenceSession) {
    this.inputNames = session.inputNames;
    this.outputNames = session.outputNames;
  }

  static async create(g: Graph, opts: SessionOptions = {}): Promise<Session> {
    return Session.fromBytes(toOnnx(g), opts, g.name);
  }

  static async fromBytes(bytes: Uint8Array, opts: SessionOptions = {}, what = "model"): Promise<Session> {
    const threads = opts.threads ?? os.availableParallelism();
    try {
      const s = await ort.InferenceSession.create(bytes, {
        intraOpNumThreads: threads,
        interOpNumThreads: 1,
        graphOptimizationLevel: "all",
        executionMode: "sequential",
      });
      return new Session(s);
    } catch (e) {
      throw new Error(`onnxruntime could not load ${what}: ${(e as Error).message.split("\n")[0]}`);
    }
  }

  async run(feeds: Record<string, TensorData>, fetches?: string[]): Promise<Record<string, TensorData>> {
    const ortFeeds: Record<string, ort.Tensor> = {};
    for (const [k, v] of Object.entries(feeds)) ortFeeds[k] = toOrt(v);
    const res = await this.session.run(ortFeeds, fetches ?? (this.outputNames as string[]));
    const out: Record<string, TensorData> = {};
    for (const [k, v] of Object.entries(res)) out[k] = fromOrt(v);
    return out;
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
