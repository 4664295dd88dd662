// Static shape inference for the ONNX ops the IR uses (opset 17 semantics).
import type { Graph } from "./ir.js";
import { GraphError, intValues, type Attrs, type DType, type Dim, type Node } from "./tensor.js";

export interface OutInfo {
  dtype: DType;
  shape: Dim[];
}

const geti = (a: Attrs, k: string, d: number): number => (a[k]?.kind === "int" ? (a[k].value as number) : d);
const getints = (a: Attrs, k: string): number[] | undefined => (a[k]?.kind === "ints" ? (a[k].value as number[]) : undefined);

function constInts(g: Graph, name: string, op: string): number[] {
  const t = g.initializers.get(name);
  if (!t) throw new GraphError(`${op}: input "${name}" must be a constant for static shapes`);
  return intValues(t);
}

export function broadcast(a: Dim[], b: Dim[], op = "broadcast"): Dim[] {
  const n = Math.max(a.length, b.length);
  const out: Dim[] = [];
  for (let i = 0; i < n; i++) {
    const x = a[a.length - n + i] ?? 1;
    const y = b[b.length - n + i] ?? 1;
    if (x === 1) out.push(y);
    else if (y === 1 || x === y) out.push(x);
    else if (typeof x === "string" || typeof y === "string") out.push(typeof x === "string" ? x : y);
    else throw new GraphError(`${op}: shapes [${a}] and [${b}] do not broadcast`);
  }
  return out;
}

const normAxis = (axis: number, rank: number): number => (axis < 0 ? axis + rank : axis);

/**
 * Symbolic dims are monomials: a numeric coefficient times symbol names, written "N" or "N*33".
 * That is enough to follow a batch through Reshape/Flatten (e.g. [N, 33, ...] → [N*33, ...] → [N, 33, ...]).
 */
interface Monomial {
  coeff: number;
  syms: string[];
}

function toMono(d: Dim): Monomial | undefined {
  if (typeof d === "number") return { coeff: d, syms: [] };
  let coeff = 1;
  const syms: string[] = [];
  for (const part of d.split("*")) {
    if (/^\d+$/.test(part)) coeff *= Number(part);
    else if (/^[A-Za-z_][A-Za-z0-9_]*$/.test(part)) syms.push(part);
    else return undefined;
  }
  return { coeff, syms: syms.sort() };
}

function fromMono(m: Monomial): Dim {
  if (m.syms.length === 0) return m.coeff;
  return m.coeff === 1 ? m.syms.join("*") : `${m.syms.join("*")}*${m.coeff}`;
}

function mulDim(a: Dim, b: Dim): Dim {
  const x = toMono(a), y = toMono(b);
  if (!x || !y) return "?";
  return fromMono({ coeff: x.coeff * y.coeff, syms: [...x.syms, ...y.syms].sort() });
}

/** a / b when it is a whole monomial, else undefined. */
function divDim(a: Dim, b: Dim): Dim | undefined {
  const x = toMono(a), y = toMono(b);
  if (!x || !y || y.coeff === 0 || x.coeff % y.coeff !== 0) return undefined;
  const syms = [...x.syms];
  for (const s of y.syms) {
    const i = syms.indexOf(s);
    if (i < 0) return undefined;
    syms.splice(i, 1);
  }
  return fromMono({ coeff: x.coeff / y.coeff, syms });
}

/** Spatial output size of a conv/pool window. */
function windowOut(inp: Dim, k: number, s: number, padBegin: number, padEnd: number, dil: number, ceil: boolean): Dim {
  if (typeof inp !== "number") return inp;
  const eff = (k - 1) * dil + 1;
  const v = (inp + padBegin + padEnd - eff) / s;
  const out = (ceil ? Math.ceil(v) : Math.floor(v)) + 1;
  if (out <= 0) throw new GraphError(`window of size ${k} does not fit input of size ${inp}`);
  return out;
}

function windowed(node: Node, x: Dim[], kernel: number[], channels: Dim): Dim[] {
  const a = node.attrs;
  const nsp = kernel.length;
  const strides = getints(a, "strides") ?? kernel.map(() => 1);
  const dil = getints(a, "dilations") ?? kernel.map(() => 1);
  const pads = getints(a, "pads") ?? kernel.map(() => 0).concat(kernel.map(() => 0));
  const autoPad = a.auto_pad?.kind === "string" ? (a.auto_pad.value as string) : "NOTSET";
  if (autoPad !== "NOTSET" && autoPad !== "VALID") throw new GraphError(`${node.op}: auto_pad ${autoPad} is not supported; use explicit pads`);
  const ceil = geti(a, "ceil_mode", 0) === 1;
  const sp: Dim[] = [];
  for (let i = 0; i < nsp; i++) sp.push(windowOut(x[2 + i], kernel[i], strides[i], pads[i], pads[nsp + i], dil[i], ceil));
  return [x[0], channels, ...sp];
}

/** A per-channel parameter (a conv's bias, BatchNorm's scale, bias, mean, variance) must be a vector of `channels` values. */
function checkChannelParams(g: Graph, node: Node, slots: number[], channels: Dim): void {
  for (const k of slots) {
    const name = node.inputs[k];
    if (!name) continue;
    const s = g.info(name).shape;
    if (s.length !== 1 || (typeof s[0] === "number" && typeof channels === "number" && s[0] !== channels)) throw new GraphError(`${node.op}: input ${k} ("${name}") has shape [${s}]; a vector of ${channels} values (one per channel) is required`);
  }
}

export function inferShapes(g: Graph, node: Node): OutInfo[] {
  const inp = (k: number) => g.info(node.inputs[k]);
  const a = node.attrs;
  const same = (): OutInfo[] => [{ dtype: inp(0).dtype, shape: [...inp(0).shape] }];
  switch (node.op) {
    case "Relu": case "Sigmoid": case "Tanh": case "Exp": case "Log": case "Neg": case "Abs": case "Sqrt":
    case "Reciprocal": case "Identity": case "Softmax": case "LogSoftmax": case "Clip": case "Sign":
    case "Floor": case "Ceil": case "Round": case "Erf":
      return same();
    case "Dropout":
      return [same()[0], { dtype: "bool", shape: [...inp(0).shape] }];
    case "Add": case "Sub": case "Mul": case "Div": case "Pow": case "Max": case "Min": case "Sum": {
      let s = inp(0).shape;
      for (let k = 1; k < node.inputs.length; k++) s = broadcast(s, inp(k).shape, node.op);
      return [{ dtype: inp(0).dtype, shape: s }];
    }
    case "Equal": case "Greater": case "Less": case "GreaterOrEqual": case "LessOrEqual": case "And": case "Or":
      return [{ dtype: "bool", shape: broadcast(inp(0).shape, inp(1).shape, node.op) }];
    case "Not":
      return [{ dtype: "bool", shape: [...inp(0).shape] }];
    case "Where":
      return [{ dtype: inp(1).dtype, shape: broadcast(broadcast(inp(0).shape, inp(1).shape), inp(2).shape, node.op) }];
    case "Cast": {
      const to = geti(a, "to", 1);
      const map: Record<number, DType> = { 1: "float32", 11: "float64", 7: "int64", 6: "int32", 9: "bool", 2: "uint8" };
      if (!map[to]) throw new GraphError(`Cast: unsupported target type ${to}`);
      return [{ dtype: map[to], shape: [...inp(0).shape] }];
    }
    case "MatMul": {
      const x = inp(0).shape, w = inp(1).shape;
      if (x.length < 2 || w.length !== 2) throw new GraphError(`MatMul: unsupported ranks [${x}] x [${w}]`);
      if (typeof x[x.length - 1] === "number" && x[x.length - 1] !== w[0]) {
        throw new GraphError(`MatMul: inner sizes differ ([${x}] x [${w}])`);
      }
      return [{ dtype: inp(0).dtype, shape: [...x.slice(0, -1), w[1]] }];
    }
    case "Gemm": {
      const x = inp(0).shape, w = inp(1).shape;
      if (x.length !== 2 || w.length !== 2) throw new GraphError(`Gemm: inputs must be matrices, got [${x}] and [${w}]`);
      const tA = geti(a, "transA", 0), tB = geti(a, "transB", 0);
      const inner = [tA ? x[0] : x[1], tB ? w[1] : w[0]];
      if (typeof inner[0] === "number" && typeof inner[1] === "number" && inner[0] !== inner[1]) throw new GraphError(`Gemm: inner sizes differ ([${x}]${tA ? "ᵀ" : ""} x [${w}]${tB ? "ᵀ" : ""})`);
      const out = [tA ? x[1] : x[0], tB ? w[0] : w[1]];
      // C broadcasts one way onto [M, N] (onnxruntime refuses anything else at run time, with a stack trace).
      if (node.inputs[2]) {
        const c = inp(2).shape;
        const fits = c.length <= 2 && c.every((d, i) => d === 1 || d === out[2 - c.length + i] || typeof d === "string" || typeof out[2 - c.length + i] === "string");
        if (!fits) throw new GraphError(`Gemm: bias of shape [${c}] does not broadcast to the output [${out}]`);
      }
      return [{ dtype: inp(0).dtype, shape: out }];
    }
    case "Conv": {
      const x = inp(0).shape, w = g.staticShape(node.inputs[1]);
      const group = geti(a, "group", 1);
      // Grouped conv: kernel [M, C/group, kh, kw]; each group of M/group outputs reads its own C/group inputs.
      if (!Number.isInteger(group) || group < 1 || w[0] % group !== 0) throw new GraphError(`Conv: group=${group} does not divide the ${w[0]} output channels`);
      if (typeof x[1] === "number" && x[1] !== w[1] * group) {
        throw new GraphError(`Conv: input has ${x[1]} channels, kernel expects ${w[1] * group}${group > 1 ? ` (${w[1]} per group × ${group} groups)` : ""}`);
      }
      checkChannelParams(g, node, [2], w[0]);
      return [{ dtype: inp(0).dtype, shape: windowed(node, x, w.slice(2), w[0]) }];
    }
    case "ConvTranspose": {
      const x = inp(0).shape, w = g.staticShape(node.inputs[1]);
      const k = w.slice(2);
      // Kernel [C, M/group, kh, kw]: the output has M = (M/group)·group channels.
      const group = geti(a, "group", 1);
      if (!Number.isInteger(group) || group < 1 || w[0] % group !== 0) throw new GraphError(`ConvTranspose: group=${group} does not divide the ${w[0]} input channels`);
      if (typeof x[1] === "number" && x[1] !== w[0]) throw new GraphError(`ConvTranspose: input has ${x[1]} channels, kernel expects ${w[0]}`);
      const m = w[1] * group;
      checkChannelParams(g, node, [2], m);
      const out = getints(a, "output_shape");
      if (out) return [{ dtype: inp(0).dtype, shape: [x[0], m, ...out] }];
      const s = getints(a, "strides") ?? k.map(() => 1);
      const p = getints(a, "pads") ?? k.map(() => 0).concat(k.map(() => 0));
      const op = getints(a, "output_padding") ?? k.map(() => 0);
      const d = getints(a, "dilations") ?? k.map(() => 1);
      const sp = k.map((kk, i) => {
        const xi = x[2 + i];
        return typeof xi === "number" ? s[i] * (xi - 1) + op[i] + (kk - 1) * d[i] + 1 - p[i] - p[k.length + i] : xi;
      });
      return [{ dtype: inp(0).dtype, shape: [x[0], m, ...sp] }];
    }
    case "MaxPool": case "AveragePool": {
      const k = getints(a, "kernel_shape");
      if (!k) throw new GraphError(`${node.op}: kernel_shape is required`);
      const x = inp(0).shape;
      const y = windowed(node, x, k, x[1]);
      const outs: OutInfo[] = [{ dtype: inp(0).dtype, shape: y }];
      if (node.outputs.length > 1) outs.push({ dtype: "int64", shape: y });
      return outs;
    }
    case "GlobalAveragePool": case "GlobalMaxPool": {
      const x = inp(0).shape;
      return [{ dtype: inp(0).dtype, shape: [x[0], x[1], ...x.slice(2).map(() => 1)] }];
    }
    case "BatchNormalization": {
      const c = inp(0).shape[1];
      if (typeof c === "number") checkChannelParams(g, node, [1, 2, 3, 4], c);
      // Training mode's optional outputs: the running mean and variance after this batch, per channel.
      const stats = node.outputs.slice(1).map(() => ({ dtype: inp(0).dtype, shape: [c] }));
      return [...same(), ...stats];
    }
    case "Flatten": {
      const x = inp(0).shape;
      const axis = normAxis(geti(a, "axis", 1), x.length);
      return [{ dtype: inp(0).dtype, shape: [x.slice(0, axis).reduce(mulDim, 1), x.slice(axis).reduce(mulDim, 1)] }];
    }
    case "Reshape": {
      const x = inp(0).shape;
      const target = constInts(g, node.inputs[1], "Reshape");
      const out: Dim[] = target.map((d, i) => (d === 0 ? x[i] : d));
      const neg = out.indexOf(-1);
      if (neg >= 0) {
        const total = x.reduce(mulDim, 1);
        const known = out.filter((_, i) => i !== neg).reduce(mulDim, 1);
        const q = divDim(total, known);
        if (q === undefined && typeof total === "number" && typeof known === "number") {
          throw new GraphError(`Reshape: cannot reshape [${x}] to [${target}]`);
        }
        out[neg] = q ?? "?";
      }
      return [{ dtype: inp(0).dtype, shape: out }];
    }
    case "Transpose": {
      const x = inp(0).shape;
      const perm = getints(a, "perm") ?? x.map((_, i) => x.length - 1 - i);
      return [{ dtype: inp(0).dtype, shape: perm.map((p) => x[p]) }];
    }
    case "Concat": {
      const shapes = node.inputs.map((_, k) => inp(k).shape);
      const axis = normAxis(geti(a, "axis", 0), shapes[0].length);
      const out = [...shapes[0]];
      out[axis] = shapes.map((s) => s[axis]).reduce((p, q) => (typeof p === "number" && typeof q === "number" ? p + q : `${p}+${q}`));
      return [{ dtype: inp(0).dtype, shape: out }];
    }
    case "Pad": {
      const x = inp(0).shape;
      const pads = constInts(g, node.inputs[1], "Pad");
      const r = x.length;
      return [{ dtype: inp(0).dtype, shape: x.map((d, i) => (typeof d === "number" ? d + pads[i] + pads[r + i] : d)) }];
    }
    case "ReduceSum": case "ReduceMean": case "ReduceMax": case "ReduceMin": case "ReduceL1": case "ReduceLogSumExp": {
      const x = inp(0).shape;
      const keep = geti(a, "keepdims", 1) === 1;
      let axes: number[] | undefined;
      if (node.op === "ReduceSum") axes = node.inputs[1] ? constInts(g, node.inputs[1], "ReduceSum") : undefined;
      else axes = getints(a, "axes");
      const ax = new Set((axes ?? x.map((_, i) => i)).map((v) => normAxis(v, x.length)));
      const out: Dim[] = [];
      x.forEach((d, i) => {
        if (!ax.has(i)) out.push(d);
        else if (keep) out.push(1);
      });
      return [{ dtype: inp(0).dtype, shape: out }];
    }
    case "ArgMax": {
      const x = inp(0).shape;
      const axis = normAxis(geti(a, "axis", 0), x.length);
      const keep = geti(a, "keepdims", 1) === 1;
      return [{ dtype: "int64", shape: keep ? x.map((d, i) => (i === axis ? 1 : d)) : x.filter((_, i) => i !== axis) }];
    }
    case "Shape":
      return [{ dtype: "int64", shape: [inp(0).shape.length] }];
    case "Size":
      return [{ dtype: "int64", shape: [] }];
    case "ConstantOfShape": {
      const v = a.value?.kind === "tensor" ? a.value.value.dtype : "float32";
      const t = g.initializers.get(node.inputs[0]);
      const n = inp(0).shape[0];
      return [{ dtype: v, shape: t ? intValues(t) : Array.from({ length: Number(n) }, (_, i) => `d${i}`) }];
    }
    case "Expand": {
      const t = constInts(g, node.inputs[1], "Expand");
      return [{ dtype: inp(0).dtype, shape: broadcast(inp(0).shape, t, "Expand") }];
    }
    case "Tile": {
      const reps = constInts(g, node.inputs[1], "Tile");
      return [{ dtype: inp(0).dtype, shape: inp(0).shape.map((d, i) => mulDim(d, reps[i])) }];
    }
    case "Unsqueeze": {
      const axes = constInts(g, node.inputs[1], "Unsqueeze");
      const r = inp(0).shape.length + axes.length;
      const ax = new Set(axes.map((v) => normAxis(v, r)));
      const src = [...inp(0).shape];
      return [{ dtype: inp(0).dtype, shape: Array.from({ length: r }, (_, i) => (ax.has(i) ? 1 : src.shift()!)) }];
    }
    case "Squeeze": {
      const x = inp(0).shape;
      const axes = node.inputs[1] ? constInts(g, node.inputs[1], "Squeeze").map((v) => normAxis(v, x.length)) : x.flatMap((d, i) => (d === 1 ? [i] : []));
      return [{ dtype: inp(0).dtype, shape: x.filter((_, i) => !axes.includes(i)) }];
    }
    case "Slice": {
      const x = inp(0).shape;
      const starts = constInts(g, node.inputs[1], "Slice");
      const ends = constInts(g, node.inputs[2], "Slice");
      const axes = node.inputs[3] ? constInts(g, node.inputs[3], "Slice") : starts.map((_, i) => i);
      const steps = node.inputs[4] ? constInts(g, node.inputs[4], "Slice") : starts.map(() => 1);
      const out = [...x];
      axes.forEach((axRaw, i) => {
        const ax = normAxis(axRaw, x.length);
        const d = x[ax];
        if (typeof d !== "number") {
          if (starts[i] === 0 && ends[i] >= 2 ** 31 - 1 && steps[i] === 1) return;
          out[ax] = "?";
          return;
        }
        // ONNX Slice: negative indices count from the end; a negative step walks backwards (a flip).
        const step = steps[i];
        if (!Number.isInteger(step) || step === 0) throw new GraphError("Slice: step 0 is not allowed");
        const wrap = (v: number) => (v < 0 ? v + d : v);
        if (step > 0) {
          const clamp = (v: number) => Math.min(Math.max(wrap(v), 0), d);
          out[ax] = Math.max(0, Math.ceil((clamp(ends[i]) - clamp(starts[i])) / step));
        } else {
          const start = Math.min(Math.max(wrap(starts[i]), 0), d - 1);
          const end = Math.min(Math.max(wrap(ends[i]), -1), d - 1);
          out[ax] = Math.max(0, Math.ceil((start - end) / -step));
        }
      });
      return [{ dtype: inp(0).dtype, shape: out }];
    }
    case "ScatterElements": case "GatherElements":
      return node.op === "ScatterElements" ? same() : [{ dtype: inp(0).dtype, shape: [...inp(1).shape] }];
    case "OneHot": {
      const depth = constInts(g, node.inputs[1], "OneHot")[0];
      return [{ dtype: inp(2).dtype, shape: [...inp(0).shape, depth] }];
    }
    case "Constant": {
      if (a.value?.kind !== "tensor") throw new GraphError("Constant: only tensor values are supported");
      return [{ dtype: a.value.value.dtype, shape: [...a.value.value.shape] }];
    }
    default:
      throw new GraphError(`op ${node.op} is not supported by the graph IR`);
  }
}
