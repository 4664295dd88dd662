// Graph IR → ONNX ModelProto bytes.
import type { Attr, DType, Graph, Node, TensorData, ValueInfo } from "../graph/ir.js";
import { ProtoWriter } from "./protobuf.js";
import { ONNX_PRODUCER } from "./provenance.js";

export const OPSET = 17;
const IR_VERSION = 8;

export const ONNX_DTYPE: Record<DType, number> = { float32: 1, uint8: 2, int32: 6, int64: 7, bool: 9, float64: 11 };

function writeTensor(w: ProtoWriter, t: TensorData, name: string): void {
  w.packedVarints(1, t.shape);
  w.varint(2, ONNX_DTYPE[t.dtype]);
  w.string(8, name);
  const d = t.data;
  w.bytes(9, new Uint8Array(d.buffer, d.byteOffset, d.byteLength));
}

function writeAttr(w: ProtoWriter, name: string, a: Attr): void {
  w.string(1, name);
  switch (a.kind) {
    case "int": w.varint(3, BigInt(a.value)).varint(20, 2); break;
    case "float": w.float(2, a.value).varint(20, 1); break;
    case "ints": w.packedVarints(8, a.value.map((v) => BigInt(v))).varint(20, 7); break;
    case "floats": w.packedFloats(7, a.value).varint(20, 6); break;
    case "string": w.string(4, a.value).varint(20, 3); break;
    case "tensor": w.message(5, (t) => writeTensor(t, a.value, "")).varint(20, 4); break;
  }
}

function writeNode(w: ProtoWriter, n: Node): void {
  for (const i of n.inputs) w.string(1, i);
  for (const o of n.outputs) w.string(2, o);
  w.string(3, n.name);
  w.string(4, n.op);
  for (const [k, a] of Object.entries(n.attrs)) w.message(5, (aw) => writeAttr(aw, k, a));
  if (n.domain) w.string(7, n.domain);
}

function writeValueInfo(w: ProtoWriter, v: ValueInfo): void {
  w.string(1, v.name);
  w.message(2, (tp) =>
    tp.message(1, (tt) => {
      tt.varint(1, ONNX_DTYPE[v.dtype]);
      tt.message(2, (sh) => {
        for (const d of v.shape) {
          sh.message(1, (dim) => {
            // Compound symbolic dims ("N*3") are left unnamed.
            if (typeof d === "number") dim.varint(1, d);
            else if (/^[A-Za-z_][A-Za-z0-9_]*$/.test(d)) dim.string(2, d);
          });
        }
      });
    }),
  );
}

export function toOnnx(g: Graph, opts: { producer?: string; docString?: string; metadata?: Record<string, string> } = {}): Uint8Array {
  const w = new ProtoWriter();
  w.varint(1, IR_VERSION);
  w.string(2, opts.producer ?? ONNX_PRODUCER);
  w.string(3, "0.1.0");
  if (opts.docString) w.string(6, opts.docString);
  w.message(7, (gw) => {
    for (const n of g.nodes) gw.message(1, (nw) => writeNode(nw, n));
    gw.string(2, g.name);
    for (const [name, t] of g.initializers) gw.message(5, (tw) => writeTensor(tw, t, name));
    for (const v of g.inputs) gw.message(11, (vw) => writeValueInfo(vw, v));
    for (const v of g.outputs) gw.message(12, (vw) => writeValueInfo(vw, v));
  });
  w.message(8, (o) => o.string(1, "").varint(2, OPSET));
  // Operator sets of other domains (graph/nchwc.ts: onnxruntime's com.microsoft.nchwc, version 1).
  for (const d of new Set(g.nodes.flatMap((n) => (n.domain ? [n.domain] : [])))) w.message(8, (o) => o.string(1, d).varint(2, 1));
  for (const [key, value] of Object.entries(opts.metadata ?? {})) w.message(14, (e) => e.string(1, key).string(2, value));
  return w.finish();
}
