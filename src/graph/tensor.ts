// The IR's value types: dtypes, tensors, node attributes and nodes, with the small helpers that build them.
// Apart from the Graph class (ir.ts) so that shape inference (shapes.ts), which the Graph calls, needs no
// import of the Graph itself.
export type DType = "float32" | "float64" | "int64" | "int32" | "bool" | "uint8";
export type Dim = number | string;

export interface ValueInfo {
  name: string;
  dtype: DType;
  shape: Dim[];
}

export type TensorArray = Float32Array | Float64Array | BigInt64Array | Int32Array | Uint8Array;

export interface TensorData {
  dtype: DType;
  shape: number[];
  data: TensorArray;
}

export type Attr =
  | { kind: "int"; value: number }
  | { kind: "float"; value: number }
  | { kind: "ints"; value: number[] }
  | { kind: "floats"; value: number[] }
  | { kind: "string"; value: string }
  | { kind: "tensor"; value: TensorData };

export type Attrs = Record<string, Attr>;

export const attr = {
  int: (value: number): Attr => ({ kind: "int", value }),
  float: (value: number): Attr => ({ kind: "float", value }),
  ints: (value: number[]): Attr => ({ kind: "ints", value }),
  floats: (value: number[]): Attr => ({ kind: "floats", value }),
  string: (value: string): Attr => ({ kind: "string", value }),
  tensor: (value: TensorData): Attr => ({ kind: "tensor", value }),
};

export interface Node {
  op: string;
  name: string;
  inputs: string[]; // "" marks an omitted optional input
  outputs: string[];
  attrs: Attrs;
  /** Operator set domain; absent: the default ONNX domain (graph/nchwc.ts adds onnxruntime's NCHWc ops). */
  domain?: string;
}

export class GraphError extends Error {}

export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function isStatic(shape: readonly Dim[]): shape is number[] {
  return shape.every((d) => typeof d === "number");
}

export function tensor(dtype: DType, shape: number[], data: TensorArray): TensorData {
  if (data.length !== numel(shape)) {
    throw new GraphError(`tensor of shape [${shape}] needs ${numel(shape)} values, got ${data.length}`);
  }
  return { dtype, shape, data };
}

export const f32 = (shape: number[], data: ArrayLike<number>): TensorData =>
  tensor("float32", shape, Float32Array.from(data));
export const i64 = (shape: number[], data: ArrayLike<number>): TensorData =>
  tensor("int64", shape, BigInt64Array.from(Array.from(data, (v) => BigInt(v))));

/** A value's int64 contents as numbers (for shape/axes constants). */
export function intValues(t: TensorData): number[] {
  return Array.from(t.data as ArrayLike<number | bigint>, (v) => Number(v));
}
