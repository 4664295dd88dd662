// ONNX ModelProto bytes → Model. Decodes the protobuf by hand (src/onnx/protobuf.ts), rewrites ops of other
// opsets into their opset-17 form (or rejects them), rebuilds the graph in the IR so every shape is inferred,
// and maps the graph onto the Model contract: one NCHW float input `input`, one output `logits`.
import { readFile } from "node:fs/promises";
import { basename, extname } from "node:path";
import { fail, UserError } from "../errors.js";
import {
  attr, Graph, GraphError, intValues, numel, tensor,
  type Attr, type Attrs, type Dim, type DType, type TensorArray, type TensorData,
} from "../graph/ir.js";
import type { Model, ParamRef } from "../model/model.js";
import { mayHaveFoldedBatchNorm } from "./provenance.js";
import { decodeString, ProtoError, readFields, readFloats, readVarints, type ProtoField } from "./protobuf.js";

/** Oldest opset accepted: opset 7 moved to numpy broadcasting and the current pooling shape formulas. */
const MIN_OPSET = 7;
/** Newest opset whose changes to the supported ops are known (after 17 they only add types or attributes we check). */
const MAX_OPSET = 25;

// ---------------------------------------------------------------------------------------------------------
// Protobuf → plain records

const ONNX_TYPES: Record<number, DType> = { 1: "float32", 2: "uint8", 6: "int32", 7: "int64", 9: "bool", 11: "float64" };
const TYPE_NAMES: Record<number, string> = {
  1: "FLOAT", 2: "UINT8", 3: "INT8", 4: "UINT16", 5: "INT16", 6: "INT32", 7: "INT64", 8: "STRING", 9: "BOOL",
  10: "FLOAT16", 11: "DOUBLE", 12: "UINT32", 13: "UINT64", 14: "COMPLEX64", 15: "COMPLEX128", 16: "BFLOAT16",
};
const typeName = (t: number): string => TYPE_NAMES[t] ?? `type ${t}`;

// AttributeProto.type values.
const A_FLOAT = 1, A_INT = 2, A_STRING = 3, A_TENSOR = 4, A_FLOATS = 6, A_INTS = 7;
const ATTR_TYPE_NAMES: Record<number, string> = {
  5: "GRAPH", 8: "STRINGS", 9: "TENSORS", 10: "GRAPHS", 11: "SPARSE_TENSOR", 12: "SPARSE_TENSORS", 13: "TYPE_PROTO", 14: "TYPE_PROTOS",
};

interface OnnxNode {
  name: string;
  op: string;
  domain: string;
  inputs: string[];
  outputs: string[];
  attrs: Attrs;
  /** Attributes the IR cannot hold (graphs, string lists...): "name (TYPE)". */
  unsupported: string[];
}

interface OnnxValueInfo {
  name: string;
  elemType: number;
  /** null: no shape; a null dim: unknown size. */
  shape: (number | string | null)[] | null;
}

interface OnnxModel {
  opset: number | undefined;
  /** ModelProto.producer_name ("pytorch", "tf2onnx", ours: ONNX_PRODUCER). */
  producer: string;
  /** ModelProto.metadata_props. */
  metadata: Map<string, string>;
  nodes: OnnxNode[];
  initializers: { name: string; data: TensorData }[];
  inputs: OnnxValueInfo[];
  outputs: OnnxValueInfo[];
  sparseInitializers: number;
}

const msgs = (f: ProtoField[], n: number): Uint8Array[] => f.filter((x) => x.field === n && x.wire === 2).map((x) => x.bytes!);
const lastMsg = (f: ProtoField[], n: number): Uint8Array | undefined => msgs(f, n).at(-1);
const str = (f: ProtoField[], n: number): string => decodeString(lastMsg(f, n));
const strs = (f: ProtoField[], n: number): string[] => msgs(f, n).map((b) => decodeString(b));
const has = (f: ProtoField[], n: number): boolean => f.some((x) => x.field === n);

function int64(f: ProtoField[], n: number): bigint | undefined {
  const v = f.filter((x) => x.field === n && x.wire === 0).at(-1)?.int;
  return v === undefined ? undefined : BigInt.asIntN(64, v);
}

/** int64 → number; sentinels beyond 2^53 (e.g. Slice ends = INT64_MAX) are clamped, which keeps their meaning. */
function toNum(v: bigint): number {
  const max = BigInt(Number.MAX_SAFE_INTEGER);
  return Number(v > max ? max : v < -max ? -max : v);
}

const int = (f: ProtoField[], n: number): number | undefined => {
  const v = int64(f, n);
  return v === undefined ? undefined : toNum(v);
};

function readDoubles(f: ProtoField[], n: number): Float64Array {
  const out: number[] = [];
  for (const x of f) {
    if (x.field !== n || !x.bytes) continue;
    const dv = new DataView(x.bytes.buffer, x.bytes.byteOffset, x.bytes.byteLength);
    for (let i = 0; i + 8 <= x.bytes.length; i += 8) out.push(dv.getFloat64(i, true));
  }
  return Float64Array.from(out);
}

function fromRaw(raw: Uint8Array, dtype: DType, what: string): TensorArray {
  const size = dtype === "float64" || dtype === "int64" ? 8 : dtype === "float32" || dtype === "int32" ? 4 : 1;
  if (raw.byteLength % size !== 0) fail(`${what}: raw_data of ${raw.byteLength} bytes is not a whole number of ${dtype} values`);
  const b = new Uint8Array(raw); // aligned copy (Buffer.slice would be a view) (raw sits at an arbitrary offset in the file)
  const n = b.byteLength / size;
  switch (dtype) {
    case "float32": return new Float32Array(b.buffer, 0, n);
    case "float64": return new Float64Array(b.buffer, 0, n);
    case "int64": return new BigInt64Array(b.buffer, 0, n);
    case "int32": return new Int32Array(b.buffer, 0, n);
    case "bool": return b.map((v) => (v ? 1 : 0));
    case "uint8": return b;
  }
}

function decodeTensor(bytes: Uint8Array, context: string): { name: string; data: TensorData } {
  const f = readFields(bytes);
  const name = str(f, 8);
  const what = `${context}tensor "${name}"`;
  if (int(f, 14) === 1 || has(f, 13)) fail(`${what} keeps its data in an external file, which is not supported`);
  if (has(f, 3)) fail(`${what} is a segmented tensor, which is not supported`);
  const dt = int(f, 2) ?? 0;
  const dtype = ONNX_TYPES[dt];
  if (!dtype) fail(`${what} has data type ${typeName(dt)}; supported: FLOAT, DOUBLE, INT32, INT64, UINT8, BOOL`);
  const dims = readVarints(f, 1).map((v) => toNum(BigInt.asIntN(64, v)));
  if (dims.some((d) => d < 0)) fail(`${what} has negative dims [${dims}]`);
  const raw = lastMsg(f, 9);
  let data: TensorArray;
  if (raw) data = fromRaw(raw, dtype, what);
  else {
    switch (dtype) {
      case "float32": data = Float32Array.from(readFloats(f, 4)); break;
      case "float64": data = readDoubles(f, 10); break;
      case "int64": data = BigInt64Array.from(readVarints(f, 7), (v) => BigInt.asIntN(64, v)); break;
      case "int32": data = Int32Array.from(readVarints(f, 5), (v) => Number(BigInt.asIntN(32, v))); break;
      case "uint8": data = Uint8Array.from(readVarints(f, 5), (v) => Number(v & 0xffn)); break;
      case "bool": data = Uint8Array.from(readVarints(f, 5), (v) => (v !== 0n ? 1 : 0)); break;
    }
  }
  if (data.length !== numel(dims)) fail(`${what} has ${data.length} values but its shape [${dims}] needs ${numel(dims)}`);
  return { name, data: { dtype, shape: dims, data } };
}

function decodeAttr(bytes: Uint8Array, node: string): { name: string; value?: Attr; typeName: string } {
  const f = readFields(bytes);
  const name = str(f, 1);
  if (has(f, 21)) fail(`${node}: attribute "${name}" refers to a function attribute, which is not supported`);
  let type = int(f, 20) ?? 0;
  if (type === 0) {
    // IR version 1 files have no type field: the populated field tells.
    const byField: [number, number][] = [[2, A_FLOAT], [3, A_INT], [4, A_STRING], [5, A_TENSOR], [7, A_FLOATS], [8, A_INTS], [6, 5], [9, 8], [10, 9], [11, 10]];
    type = byField.find(([n]) => has(f, n))?.[1] ?? 0;
  }
  switch (type) {
    case A_FLOAT: return { name, typeName: "FLOAT", value: attr.float(readFloats(f, 2).at(-1) ?? 0) };
    case A_INT: return { name, typeName: "INT", value: attr.int(int(f, 3) ?? 0) };
    case A_STRING: return { name, typeName: "STRING", value: attr.string(str(f, 4)) };
    case A_TENSOR: {
      const t = lastMsg(f, 5);
      if (!t) fail(`${node}: tensor attribute "${name}" has no tensor`);
      return { name, typeName: "TENSOR", value: attr.tensor(decodeTensor(t, `${node}: attribute "${name}": `).data) };
    }
    case A_FLOATS: return { name, typeName: "FLOATS", value: attr.floats(readFloats(f, 7)) };
    case A_INTS: return { name, typeName: "INTS", value: attr.ints(readVarints(f, 8).map((v) => toNum(BigInt.asIntN(64, v)))) };
    default: return { name, typeName: ATTR_TYPE_NAMES[type] ?? `type ${type}` };
  }
}

function decodeNode(bytes: Uint8Array, index: number): OnnxNode {
  const f = readFields(bytes);
  const node: OnnxNode = {
    name: str(f, 3), op: str(f, 4), domain: str(f, 7), inputs: strs(f, 1), outputs: strs(f, 2), attrs: {}, unsupported: [],
  };
  const label = `node "${node.name || `#${index}`}" (${node.op})`;
  for (const a of msgs(f, 5)) {
    const d = decodeAttr(a, label);
    if (d.value) node.attrs[d.name] = d.value;
    else node.unsupported.push(`${d.name} (${d.typeName})`);
  }
  return node;
}

function decodeValueInfo(bytes: Uint8Array): OnnxValueInfo {
  const f = readFields(bytes);
  const info: OnnxValueInfo = { name: str(f, 1), elemType: 0, shape: null };
  const type = lastMsg(f, 2);
  const tensorType = type && lastMsg(readFields(type), 1);
  if (!tensorType) return info;
  const tf = readFields(tensorType);
  info.elemType = int(tf, 1) ?? 0;
  const shape = lastMsg(tf, 2);
  if (shape) {
    info.shape = msgs(readFields(shape), 1).map((d) => {
      const df = readFields(d);
      const value = int(df, 1);
      const param = str(df, 2);
      return value !== undefined ? value : param !== "" ? param : null;
    });
  }
  return info;
}

function decodeModel(bytes: Uint8Array, label: string): OnnxModel {
  let top: ProtoField[];
  try {
    top = readFields(bytes);
  } catch (e) {
    if (e instanceof ProtoError) fail(`${label} is not an ONNX model (protobuf decoding failed: ${e.message})`);
    throw e;
  }
  const graph = lastMsg(top, 7);
  if (!graph) fail(`${label} is not an ONNX model (no graph found)`);
  try {
    let opset: number | undefined;
    for (const o of msgs(top, 8)) {
      const of = readFields(o);
      const domain = str(of, 1);
      if (domain === "" || domain === "ai.onnx") opset = int(of, 2);
    }
    const metadata = new Map<string, string>();
    for (const e of msgs(top, 14)) {
      const ef = readFields(e);
      metadata.set(str(ef, 1), str(ef, 2));
    }
    const g = readFields(graph);
    return {
      opset,
      producer: str(top, 2),
      metadata,
      nodes: msgs(g, 1).map((n, i) => decodeNode(n, i)),
      initializers: msgs(g, 5).map((t) => decodeTensor(t, "initializer ")),
      inputs: msgs(g, 11).map(decodeValueInfo),
      outputs: msgs(g, 12).map(decodeValueInfo),
      sparseInitializers: msgs(g, 15).length,
    };
  } catch (e) {
    if (e instanceof ProtoError) fail(`${label} is not a valid ONNX model (protobuf decoding failed: ${e.message})`);
    if (e instanceof UserError) throw new UserError(`${label}: ${e.message}`);
    throw e;
  }
}

// ---------------------------------------------------------------------------------------------------------
// Records → Graph → Model

/** Ops whose output is a "layer" activation worth exposing to defenses. */
const LAYER_OPS = new Set([
  "Conv", "ConvTranspose", "Gemm", "MatMul", "Relu", "Sigmoid", "Tanh", "Clip", "MaxPool", "AveragePool",
  "GlobalAveragePool", "GlobalMaxPool", "BatchNormalization", "Add", "Sum", "Concat", "Flatten", "Reshape",
  "Softmax", "LogSoftmax",
]);
/**
 * Ops whose float initializer inputs are trainable parameters, with the role of each input slot (its weight
 * name in `inspect`). BatchNormalization's running mean and variance are statistics, not parameters: training
 * and fine-tuning keep them frozen.
 */
const PARAM_SLOTS: Record<string, readonly string[]> = {
  Conv: ["input", "weight", "bias"],
  ConvTranspose: ["input", "weight", "bias"],
  Gemm: ["a", "weight", "bias"],
  MatMul: ["input", "weight"],
  BatchNormalization: ["", "scale", "bias"],
  Add: ["bias", "bias"],
};
/** Ops whose 4-D output is NCHW by definition. */
const NCHW_OPS = new Set(["Conv", "ConvTranspose", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "BatchNormalization"]);
/** Ops whose 4-D output keeps the layout of their (non-constant) 4-D inputs. */
const LAYOUT_KEEPING = new Set([
  "Relu", "Sigmoid", "Tanh", "Exp", "Log", "Neg", "Abs", "Sqrt", "Reciprocal", "Identity", "Clip", "Sign", "Floor",
  "Ceil", "Round", "Erf", "Cast", "Pad", "Concat", "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Where", "Not",
]);

type Layout = "nchw" | "nhwc";

const getInt = (a: Attrs, k: string): number | undefined => {
  const x = a[k];
  return x?.kind === "int" ? x.value : undefined;
};
const getInts = (a: Attrs, k: string): number[] | undefined => {
  const x = a[k];
  return x?.kind === "ints" ? x.value : undefined;
};
const getFloat = (a: Attrs, k: string): number | undefined => {
  const x = a[k];
  return x?.kind === "float" ? x.value : undefined;
};
const getString = (a: Attrs, k: string): string | undefined => {
  const x = a[k];
  return x?.kind === "string" ? x.value : undefined;
};
const sameList = (a: readonly number[] | undefined, b: readonly number[]): boolean =>
  !!a && a.length === b.length && a.every((v, i) => v === b[i]);

/** The batch dim, possibly as products with 1 from shape inference ("1*N"). */
const isBatch = (d: Dim): boolean => typeof d === "string" && d.split("*").filter((p) => p !== "1").join("*") === "N";

interface Step {
  op: string;
  name: string;
  inputs: string[];
  outputs: string[];
  attrs: Attrs;
}

class Importer {
  readonly g: Graph;
  private readonly taken = new Set<string>();
  private readonly rename = new Map<string, string>();
  private readonly nodeNames = new Set<string>();
  /** IR value → number of readers (nodes and graph outputs). */
  private readonly uses = new Map<string, number>();
  private readonly layout = new Map<string, Layout>();
  private readonly layerOutputs = new Map<string, string>();
  private readonly params: ParamRef[] = [];
  private readonly opset: number;

  constructor(private readonly m: OnnxModel, private readonly name: string, private readonly label: string) {
    this.g = new Graph(name);
    if (m.opset === undefined) this.fail("the model imports no ai.onnx opset");
    if (m.opset < MIN_OPSET || m.opset > MAX_OPSET) {
      this.fail(`ai.onnx opset ${m.opset} is not supported (supported: ${MIN_OPSET} to ${MAX_OPSET})`);
    }
    this.opset = m.opset;
  }

  private fail(msg: string): never {
    return fail(`${this.label}: ${msg}`);
  }

  private v(name: string): string {
    return this.rename.get(name) ?? name;
  }

  /** A value or node name unused by the ONNX file and the graph so far. */
  private gen(prefix: string): string {
    for (let k = 0; ; k++) {
      const n = `${prefix}_${k}`;
      if (!this.taken.has(n) && !this.g.has(n) && !this.nodeNames.has(n)) {
        this.taken.add(n);
        return n;
      }
    }
  }

  private used(irName: string): boolean {
    return irName !== "" && (this.uses.get(irName) ?? 0) > 0;
  }

  private ints(values: number[], prefix: string): string {
    return this.g.addInitializer(this.gen(prefix), tensor("int64", [values.length], BigInt64Array.from(values, (v) => BigInt(v))));
  }

  private scalar(value: number, dtype: DType, prefix: string): string {
    const data =
      dtype === "float32" ? Float32Array.of(value)
      : dtype === "float64" ? Float64Array.of(value)
      : dtype === "int64" ? BigInt64Array.of(BigInt(value))
      : dtype === "int32" ? Int32Array.of(value)
      : Uint8Array.of(value);
    return this.g.addInitializer(this.gen(prefix), tensor(dtype, [], data));
  }

  build(): Model {
    const m = this.m;
    if (m.nodes.length === 0) this.fail("the ONNX graph has no nodes");
    if (m.sparseInitializers > 0) this.fail("sparse initializers are not supported");
    for (const n of m.nodes) {
      if (n.domain !== "" && n.domain !== "ai.onnx") {
        this.fail(`node "${n.name}" (${n.op}) is in domain "${n.domain}"; only the default ONNX domain is supported`);
      }
    }
    for (const t of m.initializers) this.taken.add(t.name);
    for (const i of m.inputs) this.taken.add(i.name);
    for (const n of m.nodes) for (const x of [...n.inputs, ...n.outputs, n.name]) if (x) this.taken.add(x);
    for (const r of ["input", "logits"]) if (this.taken.has(r)) this.rename.set(r, this.gen(`${r}_onnx`));

    for (const t of m.initializers) this.g.addInitializer(this.v(t.name), t.data);
    const constants = m.nodes.filter((n) => n.op === "Constant");
    for (const n of constants) this.constant(n);
    const inputShape = this.input();

    for (const n of m.nodes) for (const i of n.inputs) if (i) this.uses.set(this.v(i), (this.uses.get(this.v(i)) ?? 0) + 1);
    for (const o of m.outputs) this.uses.set(this.v(o.name), (this.uses.get(this.v(o.name)) ?? 0) + 1);

    const folded = this.foldConstantIdentities();
    for (const n of this.ordered(m.nodes.filter((x) => x.op !== "Constant" && !folded.has(x)))) this.node(n);

    const logits = this.output();
    // Conversions can leave constants nobody reads (old axes inputs...).
    const read = new Set(this.g.nodes.flatMap((n) => n.inputs));
    for (const k of [...this.g.initializers.keys()]) {
      if (!read.has(k)) {
        this.g.initializers.delete(k);
        this.g.values.delete(k);
      }
    }
    const shape = this.g.shape(logits);
    return {
      name: this.name,
      graph: this.g,
      input: "input",
      logits,
      inputShape,
      numClasses: shape[1] as number,
      layerOutputs: this.layerOutputs,
      params: this.params,
      ...(mayHaveFoldedBatchNorm(this.m.producer, this.m.metadata) ? { origin: "onnx" as const } : {}),
    };
  }

  private constant(n: OnnxNode): void {
    const where = `node "${n.name}" (Constant)`;
    if (n.unsupported.length) this.fail(`${where}: unsupported attribute ${n.unsupported.join(", ")}`);
    const a = n.attrs;
    let t: TensorData | undefined;
    const value = a.value;
    if (value?.kind === "tensor") t = value.value;
    else if (getFloat(a, "value_float") !== undefined) t = tensor("float32", [], Float32Array.of(getFloat(a, "value_float")!));
    else if (a.value_floats?.kind === "floats") t = tensor("float32", [a.value_floats.value.length], Float32Array.from(a.value_floats.value));
    else if (getInt(a, "value_int") !== undefined) t = tensor("int64", [], BigInt64Array.of(BigInt(getInt(a, "value_int")!)));
    else if (getInts(a, "value_ints")) t = tensor("int64", [getInts(a, "value_ints")!.length], BigInt64Array.from(getInts(a, "value_ints")!, (v) => BigInt(v)));
    if (!t) this.fail(`${where}: only tensor, float and int values are supported (attributes: ${Object.keys(a).join(", ") || "none"})`);
    if (n.outputs.length !== 1 || !n.outputs[0]) this.fail(`${where} must have one output`);
    this.g.addInitializer(this.v(n.outputs[0]), t);
  }

  /** Adds the model input `input` [N, C, H, W]; an NHWC input is fed through a Transpose. */
  private input(): [number, number, number] {
    const inits = new Set(this.m.initializers.map((t) => t.name));
    const real = this.m.inputs.filter((i) => !inits.has(i.name));
    if (real.length !== 1) {
      this.fail(`the model must have exactly one input that is not an initializer, found ${real.length}${real.length ? ` (${real.map((i) => `"${i.name}"`).join(", ")})` : ""}`);
    }
    const inp = real[0];
    const what = `input "${inp.name}"`;
    if (inp.elemType !== 1) this.fail(`${what} has element type ${typeName(inp.elemType)}; a float (FLOAT) image input is required`);
    const s = inp.shape;
    if (!s || s.length !== 4) this.fail(`${what} has shape ${s ? `[${s.map((d) => d ?? "?")}]` : "unknown"}; an image batch [N, C, H, W] or [N, H, W, C] is required`);
    const dims = s.slice(1);
    if (!dims.every((d): d is number => typeof d === "number" && d > 0)) {
      this.fail(`${what} has shape [${s.map((d) => d ?? "?")}]; ${dims.some((d) => typeof d === "number" && d <= 0) ? "image dims must be positive sizes" : "only the batch dim may be symbolic"}`);
    }
    const [a, b, c] = dims;
    const small = (d: number) => d === 1 || d === 3;
    const shapeNhwc = small(c) && a > 4 && b > 4;
    const shapeNchw = small(a) && b > 4 && c > 4;
    // Neither shape rule fits (e.g. 4 channels): tf2onnx's NHWC graphs start with a Transpose to NCHW.
    const readers = this.m.nodes.filter((n) => n.inputs.includes(inp.name));
    const transposed = readers.length > 0 && readers.every((n) => n.op === "Transpose" && sameList(getInts(n.attrs, "perm"), [0, 3, 1, 2]));
    const nhwc = shapeNhwc || (!shapeNchw && transposed);
    const chw: [number, number, number] = nhwc ? [c, a, b] : [a, b, c];
    this.g.addInput("input", "float32", ["N", ...chw]);
    this.layout.set("input", "nchw");
    if (nhwc) {
      const old = this.v(inp.name);
      this.g.add("Transpose", ["input"], { perm: attr.ints([0, 2, 3, 1]) }, { outputs: [old], name: this.gen("input_to_nhwc") });
      this.layout.set(old, "nhwc");
    } else this.rename.set(inp.name, "input");
    return chw;
  }

  /** Nodes in dependency order (ONNX requires it, but not every exporter complies). */
  private ordered(nodes: OnnxNode[]): OnnxNode[] {
    const ready = new Set<string>(["", ...this.m.inputs.map((i) => i.name), ...this.m.initializers.map((t) => t.name)]);
    const placed = new Set(nodes);
    // Constants and folded Identity nodes are already initializers.
    for (const n of this.m.nodes) if (!placed.has(n)) n.outputs.forEach((o) => ready.add(o));
    const out: OnnxNode[] = [];
    let pending = nodes;
    while (pending.length) {
      const later: OnnxNode[] = [];
      for (const n of pending) {
        if (n.inputs.every((i) => ready.has(i))) {
          out.push(n);
          n.outputs.forEach((o) => ready.add(o));
        } else later.push(n);
      }
      if (later.length === pending.length) {
        const n = later[0];
        const missing = n.inputs.find((i) => !ready.has(i));
        this.fail(`node "${n.name}" (${n.op}) reads "${missing}", which no node, input or initializer produces (or the graph has a cycle)`);
      }
      pending = later;
    }
    return out;
  }

  private node(n: OnnxNode): void {
    let name = n.name || `${n.op}_${this.nodeNames.size}`;
    if (this.nodeNames.has(name) || (name !== n.name && this.taken.has(name))) name = this.gen(name);
    this.nodeNames.add(name);
    const step: Step = {
      op: n.op, name, inputs: n.inputs.map((i) => this.v(i)), outputs: n.outputs.map((o) => this.v(o)), attrs: { ...n.attrs },
    };
    const where = `node "${name}" (${n.op})`;
    try {
      this.convert(step, where);
      this.unshareParams(step);
      this.g.add(step.op, step.inputs, step.attrs, { outputs: step.outputs, name: step.name });
    } catch (e) {
      if (e instanceof GraphError) this.fail(`${where}: ${e.message}`);
      throw e;
    }
    if (n.unsupported.length) this.fail(`${where}: unsupported attribute ${n.unsupported.join(", ")}`);
    this.record(step);
  }

  /** Layer outputs, parameters and the layout of the node's first output. */
  private record(s: Step): void {
    const g = this.g;
    const out = s.outputs[0];
    if (!out) return;
    if (g.shape(out).length === 4) {
      let l: Layout | undefined;
      if (NCHW_OPS.has(s.op)) l = "nchw";
      else if (LAYOUT_KEEPING.has(s.op)) {
        const ls = s.inputs.filter((i) => i && !g.initializers.has(i) && g.shape(i).length === 4).map((i) => this.layout.get(i));
        if (ls.length && ls.every((x) => x === ls[0])) l = ls[0];
      } else if (s.op === "Transpose") {
        const perm = getInts(s.attrs, "perm");
        const from = this.layout.get(s.inputs[0]);
        if (sameList(perm, [0, 1, 2, 3])) l = from;
        else if (from === "nchw" && sameList(perm, [0, 2, 3, 1])) l = "nhwc";
        else if (from === "nhwc" && sameList(perm, [0, 3, 1, 2])) l = "nchw";
      }
      if (l) this.layout.set(out, l);
    }
    if (LAYER_OPS.has(s.op) && (g.shape(out).length !== 4 || this.layout.get(out) === "nchw")) this.layerOutputs.set(s.name, out);
    this.paramSlots(s).forEach(([i, role]) => this.params.push({ value: i, layer: s.name, weight: role }));
  }

  /** The node's inputs that are trainable parameters, with their roles (see PARAM_SLOTS). */
  private paramSlots(s: Step): [string, string][] {
    const roles = PARAM_SLOTS[s.op] ?? [];
    const out: [string, string][] = [];
    roles.forEach((role, k) => {
      const i = s.inputs[k];
      if (role && i && this.g.initializers.get(i)?.dtype === "float32" && !out.some(([o]) => o === i)) out.push([i, role]);
    });
    return out;
  }

  /**
   * Exporters share one initializer between layers that happen to hold equal values (PyTorch: zero biases,
   * directly or through Identity). Each layer gets its own copy, so pruning or training one leaves the others.
   */
  private unshareParams(s: Step): void {
    const claimed = new Set(this.params.map((p) => p.value));
    for (const [i] of this.paramSlots(s)) {
      if (!claimed.has(i)) continue;
      const copy = this.g.addInitializer(this.gen(`${s.name}_${i}`), this.g.initializers.get(i)!);
      s.inputs = s.inputs.map((x) => (x === i ? copy : x));
    }
  }

  /**
   * Identity nodes over constants (PyTorch writes `c3.bias = Identity(c2.bias)` for equal initializers) become
   * initializers themselves, so the layers reading them see ordinary parameters. Returns the nodes handled.
   */
  private foldConstantIdentities(): Set<OnnxNode> {
    const done = new Set<OnnxNode>();
    for (let changed = true; changed;) {
      changed = false;
      for (const n of this.m.nodes) {
        if (n.op !== "Identity" || done.has(n) || n.outputs.length !== 1 || !n.outputs[0]) continue;
        const t = this.g.initializers.get(this.v(n.inputs[0] ?? ""));
        if (!t || this.g.has(this.v(n.outputs[0]))) continue;
        this.g.addInitializer(this.v(n.outputs[0]), t);
        done.add(n);
        changed = true;
      }
    }
    return done;
  }

  /** Rewrites a node of the model's opset into its opset-17 form, in place; throws where that is impossible. */
  private convert(s: Step, where: string): void {
    const v = this.opset;
    const a = s.attrs;
    const g = this.g;
    const bad: (msg: string) => never = (msg) => this.fail(`${where}: ${msg}`);
    const attrToInput = (key: string, slot: number, required: boolean) => {
      const vals = getInts(a, key);
      delete a[key];
      if (!vals) {
        if (required) bad(`attribute "${key}" is required at opset ${v}`);
        return;
      }
      while (s.inputs.length < slot) s.inputs.push("");
      s.inputs[slot] = this.ints(vals, `${s.name}_${key}`);
    };
    const constInput = (slot: number, what: string): number[] | undefined => {
      const x = s.inputs[slot];
      if (!x) return undefined;
      const t = g.initializers.get(x);
      if (!t) return bad(`input ${what} must be a constant`);
      return intValues(t);
    };
    const dropTrailingEmpty = () => {
      while (s.inputs.length && s.inputs.at(-1) === "") s.inputs.pop();
    };
    switch (s.op) {
      case "Softmax": case "LogSoftmax": {
        if (v >= 13) break;
        // Before opset 13 the input is flattened to 2-D at `axis`; that equals the per-axis form only when
        // every dim after the axis is 1.
        const shape = g.shape(s.inputs[0]);
        const r = shape.length;
        const raw = getInt(a, "axis") ?? 1;
        const axis = raw < 0 ? raw + r : raw;
        if (!shape.slice(axis + 1).every((d) => d === 1)) {
          bad(`opset-${v} ${s.op} over axes ${axis}.. of shape [${shape}] (several axes at once) is not supported`);
        }
        a.axis = attr.int(axis);
        break;
      }
      case "ReduceSum": {
        if (v < 13) attrToInput("axes", 1, false);
        const axes = constInput(1, "axes");
        if (getInt(a, "noop_with_empty_axes") === 1 && (!axes || axes.length === 0)) this.toIdentity(s);
        break;
      }
      case "ReduceMean": case "ReduceMax": case "ReduceMin": case "ReduceL1": case "ReduceLogSumExp": {
        if (v < 18) break;
        // Opset 18 moved `axes` from an attribute to an input; opset 17 wants the attribute.
        const axes = constInput(1, "axes");
        const noop = getInt(a, "noop_with_empty_axes") === 1;
        delete a.noop_with_empty_axes;
        s.inputs = s.inputs.slice(0, 1);
        if (axes && axes.length) a.axes = attr.ints(axes);
        else if (noop) this.toIdentity(s);
        break;
      }
      case "Squeeze": case "Unsqueeze":
        if (v < 13) attrToInput("axes", 1, s.op === "Unsqueeze");
        break;
      case "Slice":
        if (v < 10) {
          attrToInput("starts", 1, true);
          attrToInput("ends", 2, true);
          attrToInput("axes", 3, false);
        }
        break;
      case "Pad": {
        const mode = getString(a, "mode") ?? "constant";
        if (mode !== "constant" && mode !== "reflect" && mode !== "edge") bad(`mode "${mode}" is not supported`);
        if (v < 11) {
          const value = getFloat(a, "value") ?? 0;
          delete a.value;
          attrToInput("pads", 1, true);
          if (mode === "constant" && value !== 0) s.inputs[2] = this.scalar(value, g.info(s.inputs[0]).dtype, `${s.name}_value`);
        } else if (s.inputs[3]) {
          // Opset 18's `axes` input: expand to pads over every axis.
          const r = g.shape(s.inputs[0]).length;
          const axes = constInput(3, "axes")!.map((x) => (x < 0 ? x + r : x));
          const pads = constInput(1, "pads");
          if (!pads || pads.length !== 2 * axes.length) bad("pads must be a constant with two values per axis");
          const full = new Array<number>(2 * r).fill(0);
          axes.forEach((ax, k) => {
            full[ax] = pads[k];
            full[r + ax] = pads[axes.length + k];
          });
          s.inputs[1] = this.ints(full, `${s.name}_pads`);
          s.inputs = s.inputs.slice(0, 3);
        }
        dropTrailingEmpty();
        break;
      }
      case "Clip":
        if (v < 11) {
          const dtype = g.info(s.inputs[0]).dtype;
          const lo = getFloat(a, "min");
          const hi = getFloat(a, "max");
          delete a.min;
          delete a.max;
          s.inputs = [s.inputs[0], lo === undefined ? "" : this.scalar(lo, dtype, `${s.name}_min`), hi === undefined ? "" : this.scalar(hi, dtype, `${s.name}_max`)];
          dropTrailingEmpty();
        }
        break;
      case "Dropout": {
        // Inference: Dropout is the identity. Its ratio was an attribute before opset 12, an input since.
        if (s.outputs.slice(1).some((o) => this.used(o))) bad("its mask output is used, which is not supported");
        const training = s.inputs[2];
        if (training) {
          const t = g.initializers.get(training);
          if (!t || intValues(t).some((x) => x !== 0)) bad("training_mode must be a constant false");
        }
        this.toIdentity(s);
        break;
      }
      case "BatchNormalization": {
        if (v < 9) {
          if ((getInt(a, "spatial") ?? 1) !== 1) bad("spatial=0 is not supported");
          delete a.spatial;
        }
        if (getInt(a, "training_mode") === 1) bad("training_mode=1 is not supported");
        if (s.outputs.slice(1).some((o) => this.used(o))) bad("its running-statistics outputs are used, which is not supported");
        s.outputs = s.outputs.slice(0, 1);
        break;
      }
      case "Cast":
        delete a.saturate; // opset 19; only affects float8 targets
        break;
      case "Reshape": {
        const target = constInput(1, "shape");
        if (getInt(a, "allowzero") === 1 && target?.includes(0)) bad("allowzero=1 with a 0 in the shape is not supported");
        break;
      }
      case "Shape":
        if (a.start || a.end) bad("start/end attributes are not supported");
        break;
      case "ScatterElements": {
        const red = getString(a, "reduction") ?? "none";
        if (red === "max" || red === "min") bad(`reduction "${red}" is not supported`);
        break;
      }
      case "AveragePool": {
        const dil = getInts(a, "dilations");
        if (dil && dil.some((d) => d !== 1)) bad("dilations are not supported");
        delete a.dilations;
        this.explicitPads(s, () => getInts(a, "kernel_shape") ?? bad("kernel_shape is required"), bad);
        break;
      }
      case "MaxPool":
        this.explicitPads(s, () => getInts(a, "kernel_shape") ?? bad("kernel_shape is required"), bad);
        break;
      case "Conv":
        this.explicitPads(s, () => getInts(a, "kernel_shape") ?? g.initializers.get(s.inputs[1])?.shape.slice(2) ?? bad("auto_pad needs a constant weight or kernel_shape"), bad);
        break;
      case "ConvTranspose": {
        const ap = getString(a, "auto_pad") ?? "NOTSET";
        if (ap !== "NOTSET" && ap !== "VALID") bad(`auto_pad ${ap} is not supported`);
        break;
      }
    }
  }

  private toIdentity(s: Step): void {
    s.op = "Identity";
    s.inputs = s.inputs.slice(0, 1);
    s.outputs = s.outputs.slice(0, 1);
    s.attrs = {};
  }

  /** auto_pad SAME_UPPER/SAME_LOWER → explicit pads (the IR infers shapes from explicit pads only). */
  private explicitPads(s: Step, kernelOf: () => number[], bad: (msg: string) => never): void {
    const a = s.attrs;
    const ap = getString(a, "auto_pad") ?? "NOTSET";
    if (ap !== "SAME_UPPER" && ap !== "SAME_LOWER") return;
    const kernel = kernelOf();
    const x = this.g.shape(s.inputs[0]);
    const strides = getInts(a, "strides") ?? kernel.map(() => 1);
    const dil = getInts(a, "dilations") ?? kernel.map(() => 1);
    const begin: number[] = [];
    const end: number[] = [];
    kernel.forEach((k, i) => {
      const n = x[2 + i];
      if (typeof n !== "number") bad(`auto_pad ${ap} needs a static spatial size, input has [${x}]`);
      const total = Math.max((Math.ceil(n / strides[i]) - 1) * strides[i] + (k - 1) * dil[i] + 1 - n, 0);
      const lo = ap === "SAME_UPPER" ? Math.floor(total / 2) : Math.ceil(total / 2);
      begin.push(lo);
      end.push(total - lo);
    });
    delete a.auto_pad;
    a.pads = attr.ints([...begin, ...end]);
  }

  /** Finds the logits behind the single output (before a final Softmax) and aliases them as `logits`. */
  private output(): string {
    const outs = this.m.outputs;
    if (outs.length !== 1) this.fail(`the model must have exactly one output, found ${outs.length}${outs.length ? ` (${outs.map((o) => `"${o.name}"`).join(", ")})` : ""}`);
    const out = this.v(outs[0].name);
    if (!this.g.has(out)) this.fail(`output "${outs[0].name}" is not produced by any node`);
    let x = out;
    let softmax: Step | undefined;
    for (;;) {
      const p = this.g.producer(x);
      if (!p) break;
      if (p.op === "Identity" || (p.op === "Flatten" && (getInt(p.attrs, "axis") ?? 1) === 1)) x = p.inputs[0];
      else {
        if (p.op === "Softmax" || p.op === "LogSoftmax") softmax = p;
        break;
      }
    }
    const pre = softmax ? softmax.inputs[0] : out;
    const info = this.g.info(pre);
    const shape = info.shape;
    const what = softmax ? `the input of the final ${softmax.op} "${softmax.name}"` : `output "${outs[0].name}"`;
    if (info.dtype !== "float32") this.fail(`${what} has type ${info.dtype}; float logits are required`);
    const rest = shape.slice(1);
    const classAxes = rest.flatMap((d, i) => (d === 1 ? [] : [i + 1]));
    if (shape.length < 2 || !rest.every((d) => typeof d === "number") || classAxes.length > 1) {
      this.fail(`${what} has shape [${shape}]; logits of shape [N, classes] are required`);
    }
    if (!isBatch(shape[0])) {
      this.fail(`${what} has shape [${shape}]: its first dim does not follow the input batch (is a fixed batch size baked into a Reshape?)`);
    }
    if (softmax && classAxes.length === 1) {
      const r = shape.length;
      const ax = getInt(softmax.attrs, "axis") ?? -1;
      if ((ax < 0 ? ax + r : ax) !== classAxes[0]) this.fail(`the final ${softmax.op} "${softmax.name}" does not normalize over the class axis of [${shape}]`);
    }
    const op = shape.length === 2 ? "Identity" : "Flatten";
    this.g.add(op, [pre], op === "Flatten" ? { axis: attr.int(1) } : {}, { outputs: ["logits"], name: this.gen("logits_alias") });
    this.g.setOutputs(["logits"]);
    return "logits";
  }
}

/** Parses an ONNX classifier (ModelProto bytes) into a Model; `name` names the model and its errors. */
export function importOnnx(bytes: Uint8Array, name: string): Model {
  return importLabelled(bytes, name, `ONNX model "${name}"`);
}

function importLabelled(bytes: Uint8Array, name: string, label: string): Model {
  return new Importer(decodeModel(bytes, label), name, label).build();
}

/** Reads and imports an .onnx file; the model is named after the file. */
export async function loadOnnxModel(path: string): Promise<Model> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(path);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === "ENOENT") fail(`ONNX model file "${path}" does not exist`);
    fail(`cannot read ONNX model file "${path}": ${err.message}`);
  }
  return importLabelled(bytes, basename(path, extname(path)), `ONNX model "${path}"`);
}
