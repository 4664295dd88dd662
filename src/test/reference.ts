// A float64 reference interpreter of the graph IR: plain JS, NCHW, ONNX opset-17 semantics. It is independent of
// onnxruntime on purpose: it is the yardstick for finite-difference gradient checks and the naive-JS baseline.
// Loops are written for clarity first; shapes always come from the actual tensors, never from g.values.
import type { DType, Graph, Node, TensorData } from "../graph/ir.js";
import { GraphError, numel } from "../graph/ir.js";

/** A value during evaluation. Every dtype is held as float64 numbers (int64 exact up to 2^53, bool as 0/1). */
export interface RefValue {
  dtype: DType;
  shape: number[];
  data: Float64Array;
}

const isFloat = (t: DType): boolean => t === "float32" || t === "float64";
const isInt = (t: DType): boolean => !isFloat(t) && t !== "bool";

function bad(n: Node, msg: string): never {
  throw new GraphError(`${n.op} "${n.name}": ${msg}`);
}

// ---------- attributes and inputs ----------

function aInt(n: Node, k: string, d: number): number {
  const a = n.attrs[k];
  if (!a) return d;
  if (a.kind !== "int") bad(n, `attribute ${k} must be an int`);
  return a.value;
}

function aInts(n: Node, k: string): number[] | undefined {
  const a = n.attrs[k];
  if (!a) return undefined;
  if (a.kind !== "ints") bad(n, `attribute ${k} must be a list of ints`);
  return a.value;
}

function aFloat(n: Node, k: string, d: number): number {
  const a = n.attrs[k];
  if (!a) return d;
  if (a.kind !== "float") bad(n, `attribute ${k} must be a float`);
  return a.value;
}

function aString(n: Node, k: string, d: string): string {
  const a = n.attrs[k];
  if (!a) return d;
  if (a.kind !== "string") bad(n, `attribute ${k} must be a string`);
  return a.value;
}

type Ins = (RefValue | undefined)[];

function need(n: Node, ins: Ins, k: number): RefValue {
  const v = ins[k];
  if (!v) bad(n, `input ${k} is required`);
  return v;
}

function intsOf(n: Node, v: RefValue, what: string): number[] {
  if (!isInt(v.dtype)) bad(n, `${what} must be an integer tensor, got ${v.dtype}`);
  return Array.from(v.data);
}

function normAxis(n: Node, axis: number, rank: number): number {
  const a = axis < 0 ? axis + rank : axis;
  if (!Number.isInteger(a) || a < 0 || a >= rank) bad(n, `axis ${axis} is out of range for rank ${rank}`);
  return a;
}

// ---------- indexing helpers ----------

export function stridesOf(shape: readonly number[]): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    s[i] = acc;
    acc *= shape[i];
  }
  return s;
}

const sameShape = (a: readonly number[], b: readonly number[]): boolean => a.length === b.length && a.every((d, i) => d === b[i]);

/**
 * The workhorse of every data-movement op: out (of shape outShape, row-major) where element (c_0..c_r-1) reads
 * src[sum_k maps[k][c_k] * strides[k]]; a map entry of -1 yields `fill`; a missing map is the identity.
 */
function gather(src: Float64Array, strides: number[], outShape: number[], maps?: (ArrayLike<number> | undefined)[], fill = 0): Float64Array {
  const r = outShape.length;
  const out = new Float64Array(numel(outShape));
  if (out.length === 0) return out;
  if (r === 0) {
    out[0] = src[0];
    return out;
  }
  const inner = stridesOf(outShape); // elements in one slice below dim k
  let p = 0;
  const rec = (k: number, off: number): void => {
    const m = maps?.[k];
    const s = strides[k];
    for (let j = 0; j < outShape[k]; j++) {
      const i = m ? m[j] : j;
      if (i < 0) {
        out.fill(fill, p, p + inner[k]);
        p += inner[k];
      } else if (k === r - 1) out[p++] = src[off + i * s];
      else rec(k + 1, off + i * s);
    }
  };
  rec(0, 0);
  return out;
}

function iota(n: number): Float64Array {
  const a = new Float64Array(n);
  for (let i = 0; i < n; i++) a[i] = i;
  return a;
}

/** Multidirectional (numpy) broadcast of several shapes. */
function broadcastShape(n: Node, shapes: number[][]): number[] {
  const r = Math.max(0, ...shapes.map((s) => s.length));
  const out: number[] = [];
  for (let i = 0; i < r; i++) {
    let d = 1;
    for (const s of shapes) {
      const x = s[s.length - r + i] ?? 1;
      if (x === 1) continue;
      if (d !== 1 && d !== x) bad(n, `shapes ${shapes.map((q) => `[${q}]`).join(", ")} do not broadcast`);
      d = x;
    }
    out.push(d);
  }
  return out;
}

/** x's data broadcast (materialized) to `out`, which must be a valid broadcast target of x.shape. */
function expandTo(x: RefValue, out: number[]): Float64Array {
  if (sameShape(x.shape, out)) return x.data;
  const xs = stridesOf(x.shape);
  const off = out.length - x.shape.length;
  const strides = out.map((_, i) => (i < off || x.shape[i - off] === 1 ? 0 : xs[i - off]));
  return gather(x.data, strides, out);
}

/** Splits a shape around `axis` into [outer, size, inner]. */
function around(shape: number[], axis: number): [number, number, number] {
  return [numel(shape.slice(0, axis)), shape[axis], numel(shape.slice(axis + 1))];
}

// ---------- conversions at the boundary ----------

/** A TensorData as a RefValue (float data widened to float64; integer and bool data as exact numbers). */
export function toRef(t: TensorData): RefValue {
  if (t.data.length !== numel(t.shape)) throw new GraphError(`tensor of shape [${t.shape}] has ${t.data.length} values`);
  let data: Float64Array;
  if (t.data instanceof Float64Array) data = t.data;
  else if (t.data instanceof BigInt64Array) {
    data = new Float64Array(t.data.length);
    for (let i = 0; i < data.length; i++) data[i] = Number(t.data[i]);
  } else data = Float64Array.from(t.data);
  if (t.dtype === "bool") data = data.map((v) => (v ? 1 : 0));
  return { dtype: t.dtype, shape: [...t.shape], data };
}

/** A RefValue as TensorData: floats as float64, int64 as BigInt64Array, int32 as Int32Array, bool/uint8 as Uint8Array. */
export function fromRef(v: RefValue): TensorData {
  const shape = [...v.shape];
  switch (v.dtype) {
    case "float32": case "float64":
      return { dtype: "float64", shape, data: v.data };
    case "int64":
      return { dtype: "int64", shape, data: BigInt64Array.from(v.data, (x) => BigInt(Math.trunc(x))) };
    case "int32":
      return { dtype: "int32", shape, data: Int32Array.from(v.data) };
    case "bool": case "uint8":
      return { dtype: v.dtype, shape, data: Uint8Array.from(v.data) };
  }
}

const CAST_TYPES: Record<number, DType> = { 1: "float32", 11: "float64", 7: "int64", 6: "int32", 9: "bool", 2: "uint8" };

// ---------- elementwise ----------

function erf(x: number): number {
  if (Number.isNaN(x)) return NaN;
  const ax = Math.abs(x);
  const sign = x < 0 ? -1 : 1;
  if (ax < 2.5) {
    // Maclaurin series: erf(x) = 2/sqrt(pi) * sum_n (-1)^n x^(2n+1) / (n! (2n+1)).
    const x2 = ax * ax;
    let term = ax;
    let sum = ax;
    for (let k = 1; k < 200; k++) {
      term *= -x2 / k;
      const t = term / (2 * k + 1);
      sum += t;
      if (Math.abs(t) < 1e-17 * Math.abs(sum)) break;
    }
    return (sign * 2 * sum) / Math.sqrt(Math.PI);
  }
  // Continued fraction: erfc(x) = exp(-x^2)/sqrt(pi) / (x + (1/2)/(x + 1/(x + (3/2)/(x + ...)))).
  let f = ax;
  for (let k = 80; k >= 1; k--) f = ax + k / 2 / f;
  return sign * (1 - Math.exp(-ax * ax) / Math.sqrt(Math.PI) / f);
}

function roundHalfEven(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d < 0.5) return f;
  if (d > 0.5) return f + 1;
  return f % 2 === 0 ? f : f + 1;
}

const UNARY: Record<string, (x: number) => number> = {
  Relu: (x) => (x < 0 ? 0 : x),
  Sigmoid: (x) => (x >= 0 ? 1 / (1 + Math.exp(-x)) : Math.exp(x) / (1 + Math.exp(x))),
  Tanh: Math.tanh,
  Exp: Math.exp,
  Log: Math.log,
  Neg: (x) => -x,
  Abs: Math.abs,
  Sqrt: Math.sqrt,
  Reciprocal: (x) => 1 / x,
  Sign: Math.sign,
  Identity: (x) => x,
  Floor: Math.floor,
  Ceil: Math.ceil,
  Round: roundHalfEven,
  Erf: erf,
};

const BINARY: Record<string, (a: number, b: number) => number> = {
  Add: (a, b) => a + b,
  Sum: (a, b) => a + b,
  Sub: (a, b) => a - b,
  Mul: (a, b) => a * b,
  Div: (a, b) => a / b,
  Pow: Math.pow,
  Max: Math.max,
  Min: Math.min,
};

const LOGICAL: Record<string, (a: number, b: number) => boolean> = {
  Equal: (a, b) => a === b,
  Greater: (a, b) => a > b,
  Less: (a, b) => a < b,
  GreaterOrEqual: (a, b) => a >= b,
  LessOrEqual: (a, b) => a <= b,
  And: (a, b) => a !== 0 && b !== 0,
  Or: (a, b) => a !== 0 || b !== 0,
};

function binary(n: Node, a: RefValue, b: RefValue, dtype: DType, f: (x: number, y: number) => number): RefValue {
  const shape = broadcastShape(n, [a.shape, b.shape]);
  const x = expandTo(a, shape);
  const y = expandTo(b, shape);
  const out = new Float64Array(x.length);
  for (let i = 0; i < out.length; i++) out[i] = f(x[i], y[i]);
  return { dtype, shape, data: out };
}

function cast(v: number, to: DType): number {
  switch (to) {
    case "float32": case "float64": return v;
    case "bool": return v !== 0 ? 1 : 0;
    case "int64": return Math.trunc(v);
    case "int32": return Math.trunc(v) | 0;
    case "uint8": return Math.trunc(v) & 0xff;
  }
}

// ---------- linear algebra ----------

function matmul(n: Node, a: RefValue, b: RefValue): RefValue {
  if (a.shape.length === 0 || b.shape.length === 0) bad(n, "inputs must have rank >= 1");
  const aS = a.shape.length === 1 ? [1, a.shape[0]] : a.shape;
  const bS = b.shape.length === 1 ? [b.shape[0], 1] : b.shape;
  const [M, K] = aS.slice(-2);
  const [K2, N] = bS.slice(-2);
  if (K !== K2) bad(n, `inner sizes differ ([${a.shape}] x [${b.shape}])`);
  const batch = broadcastShape(n, [aS.slice(0, -2), bS.slice(0, -2)]);
  const A = expandTo({ ...a, shape: aS }, [...batch, M, K]);
  const B = expandTo({ ...b, shape: bS }, [...batch, K, N]);
  const nb = numel(batch);
  const out = new Float64Array(nb * M * N);
  for (let t = 0; t < nb; t++) {
    for (let i = 0; i < M; i++) {
      const o = (t * M + i) * N;
      for (let k = 0; k < K; k++) {
        const av = A[(t * M + i) * K + k];
        const bo = (t * K + k) * N;
        for (let j = 0; j < N; j++) out[o + j] += av * B[bo + j];
      }
    }
  }
  const shape = [...batch];
  if (a.shape.length > 1) shape.push(M);
  if (b.shape.length > 1) shape.push(N);
  return { dtype: a.dtype, shape, data: out };
}

function gemm(n: Node, a: RefValue, b: RefValue, c: RefValue | undefined): RefValue {
  if (a.shape.length !== 2 || b.shape.length !== 2) bad(n, `A and B must be 2-D, got [${a.shape}] and [${b.shape}]`);
  const alpha = aFloat(n, "alpha", 1);
  const beta = aFloat(n, "beta", 1);
  const tA = aInt(n, "transA", 0) !== 0;
  const tB = aInt(n, "transB", 0) !== 0;
  const [M, K] = tA ? [a.shape[1], a.shape[0]] : a.shape;
  const [K2, N] = tB ? [b.shape[1], b.shape[0]] : b.shape;
  if (K !== K2) bad(n, `inner sizes differ ([${a.shape}] x [${b.shape}], transA=${+tA}, transB=${+tB})`);
  const A = (i: number, k: number): number => (tA ? a.data[k * M + i] : a.data[i * K + k]);
  const B = (k: number, j: number): number => (tB ? b.data[j * K + k] : b.data[k * N + j]);
  let C: Float64Array | undefined;
  if (c) {
    if (!sameShape(broadcastShape(n, [c.shape, [M, N]]), [M, N])) bad(n, `C of shape [${c.shape}] does not broadcast to [${M},${N}]`);
    C = expandTo(c, [M, N]);
  }
  const out = new Float64Array(M * N);
  for (let i = 0; i < M; i++) {
    for (let j = 0; j < N; j++) {
      let s = 0;
      for (let k = 0; k < K; k++) s += A(i, k) * B(k, j);
      out[i * N + j] = alpha * s + (C ? beta * C[i * N + j] : 0);
    }
  }
  return { dtype: a.dtype, shape: [M, N], data: out };
}

// ---------- convolution and pooling (2-D spatial, NCHW) ----------

interface Window {
  kh: number; kw: number;
  sh: number; sw: number;
  dh: number; dw: number;
  pt: number; pl: number; pb: number; pr: number;
}

function window(n: Node, kernel: number[]): Window {
  const ks = aInts(n, "kernel_shape");
  if (ks && !sameShape(ks, kernel)) bad(n, `kernel_shape [${ks}] does not match the weight's [${kernel}]`);
  const s = aInts(n, "strides") ?? [1, 1];
  const d = aInts(n, "dilations") ?? [1, 1];
  const autoPad = aString(n, "auto_pad", "NOTSET");
  if (autoPad !== "NOTSET" && autoPad !== "VALID") bad(n, `auto_pad ${autoPad} is not supported; use explicit pads`);
  const p = autoPad === "VALID" ? [0, 0, 0, 0] : aInts(n, "pads") ?? [0, 0, 0, 0];
  if (s.length !== 2 || d.length !== 2 || p.length !== 4) bad(n, "strides/dilations/pads must describe 2 spatial dims");
  return { kh: kernel[0], kw: kernel[1], sh: s[0], sw: s[1], dh: d[0], dw: d[1], pt: p[0], pl: p[1], pb: p[2], pr: p[3] };
}

function rank4(n: Node, x: RefValue): [number, number, number, number] {
  if (x.shape.length !== 4) bad(n, `only 2-D spatial (NCHW) inputs are supported, got shape [${x.shape}]`);
  return x.shape as [number, number, number, number];
}

function outSize(n: Node, inp: number, k: number, s: number, pa: number, pb: number, d: number, ceil: boolean): number {
  const v = (inp + pa + pb - ((k - 1) * d + 1)) / s;
  let out = (ceil ? Math.ceil(v) : Math.floor(v)) + 1;
  // With ceil_mode, a last window that would start inside the end padding is dropped (ONNX/PyTorch rule).
  if (ceil && (out - 1) * s >= inp + pa) out--;
  if (out <= 0) bad(n, `window of size ${k} does not fit input of size ${inp}`);
  return out;
}

/** The group attribute, checked to divide both channel counts. */
function groupOf(n: Node, inChannels: number, outChannels: number): number {
  const G = aInt(n, "group", 1);
  if (!Number.isInteger(G) || G < 1 || inChannels % G !== 0 || outChannels % G !== 0) {
    bad(n, `group=${G} must divide the ${inChannels} input and ${outChannels} output channels`);
  }
  return G;
}

function conv(n: Node, x: RefValue, w: RefValue, b: RefValue | undefined): RefValue {
  const [N, C, H, W] = rank4(n, x);
  const [M, Cw, KH, KW] = rank4(n, w);
  const G = groupOf(n, C, M);
  // Grouped: output channel m reads the Cw = C/G input channels of its group.
  if (Cw * G !== C) bad(n, `input has ${C} channels, kernel expects ${Cw * G}`);
  if (b && (b.shape.length !== 1 || b.shape[0] !== M)) bad(n, `bias must have shape [${M}], got [${b.shape}]`);
  const wn = window(n, [KH, KW]);
  const OH = outSize(n, H, KH, wn.sh, wn.pt, wn.pb, wn.dh, false);
  const OW = outSize(n, W, KW, wn.sw, wn.pl, wn.pr, wn.dw, false);
  const out = new Float64Array(N * M * OH * OW);
  for (let bn = 0; bn < N; bn++) {
    for (let m = 0; m < M; m++) {
      const plane = (bn * M + m) * OH * OW;
      if (b) out.fill(b.data[m], plane, plane + OH * OW);
      const c0 = Math.floor(m / (M / G)) * Cw;
      for (let c = 0; c < Cw; c++) {
        const xoff = (bn * C + c0 + c) * H * W;
        for (let kh = 0; kh < KH; kh++) {
          for (let kw = 0; kw < KW; kw++) {
            const wv = w.data[((m * Cw + c) * KH + kh) * KW + kw];
            for (let oh = 0; oh < OH; oh++) {
              const ih = oh * wn.sh - wn.pt + kh * wn.dh;
              if (ih < 0 || ih >= H) continue;
              const row = xoff + ih * W;
              const orow = plane + oh * OW;
              for (let ow = 0; ow < OW; ow++) {
                const iw = ow * wn.sw - wn.pl + kw * wn.dw;
                if (iw >= 0 && iw < W) out[orow + ow] += wv * x.data[row + iw];
              }
            }
          }
        }
      }
    }
  }
  return { dtype: x.dtype, shape: [N, M, OH, OW], data: out };
}

function convTranspose(n: Node, x: RefValue, w: RefValue, b: RefValue | undefined): RefValue {
  const [N, C, H, W] = rank4(n, x);
  const [Cw, Mg, KH, KW] = rank4(n, w);
  if (Cw !== C) bad(n, `input has ${C} channels, kernel expects ${Cw}`);
  // Grouped: kernel [C, M/G, kh, kw]; input channel c feeds the M/G outputs of its group.
  const G = groupOf(n, C, Mg * aInt(n, "group", 1));
  const M = Mg * G;
  const Cg = C / G;
  if (b && (b.shape.length !== 1 || b.shape[0] !== M)) bad(n, `bias must have shape [${M}], got [${b.shape}]`);
  const wn = window(n, [KH, KW]);
  const op = aInts(n, "output_padding") ?? [0, 0];
  let os = aInts(n, "output_shape");
  if (os && os.length === 4) os = os.slice(2);
  let OH: number, OW: number;
  if (os) {
    if (os.length !== 2) bad(n, `output_shape [${os}] must have 2 spatial dims`);
    [OH, OW] = os;
    // The spec's rule for the implied pads (auto_pad NOTSET): the odd unit of total padding goes at the start.
    const total = (i: number, inp: number, k: number, s: number, d: number): number => s * (inp - 1) + op[i] + (k - 1) * d + 1 - os![i];
    const th = total(0, H, KH, wn.sh, wn.dh);
    const tw = total(1, W, KW, wn.sw, wn.dw);
    wn.pt = th - Math.floor(th / 2);
    wn.pl = tw - Math.floor(tw / 2);
  } else {
    OH = wn.sh * (H - 1) + op[0] + (KH - 1) * wn.dh + 1 - wn.pt - wn.pb;
    OW = wn.sw * (W - 1) + op[1] + (KW - 1) * wn.dw + 1 - wn.pl - wn.pr;
  }
  if (OH <= 0 || OW <= 0) bad(n, `output size [${OH},${OW}] is not positive`);
  const out = new Float64Array(N * M * OH * OW);
  for (let bn = 0; bn < N; bn++) {
    for (let m = 0; m < M; m++) {
      const plane = (bn * M + m) * OH * OW;
      if (b) out.fill(b.data[m], plane, plane + OH * OW);
      const grp = Math.floor(m / Mg);
      for (let c = grp * Cg; c < (grp + 1) * Cg; c++) {
        const xoff = (bn * C + c) * H * W;
        for (let kh = 0; kh < KH; kh++) {
          for (let kw = 0; kw < KW; kw++) {
            const wv = w.data[((c * Mg + (m - grp * Mg)) * KH + kh) * KW + kw];
            // Each input pixel scatters into the output pixel its kernel tap lands on.
            for (let ih = 0; ih < H; ih++) {
              const oh = ih * wn.sh - wn.pt + kh * wn.dh;
              if (oh < 0 || oh >= OH) continue;
              for (let iw = 0; iw < W; iw++) {
                const ow = iw * wn.sw - wn.pl + kw * wn.dw;
                if (ow >= 0 && ow < OW) out[plane + oh * OW + ow] += wv * x.data[xoff + ih * W + iw];
              }
            }
          }
        }
      }
    }
  }
  return { dtype: x.dtype, shape: [N, M, OH, OW], data: out };
}

function pool(n: Node, x: RefValue, wantIndices: boolean): RefValue[] {
  const [N, C, H, W] = rank4(n, x);
  const k = aInts(n, "kernel_shape");
  if (!k || k.length !== 2) bad(n, "kernel_shape with 2 entries is required");
  const wn = window(n, k);
  const isMax = n.op === "MaxPool";
  if (!isMax && (wn.dh !== 1 || wn.dw !== 1)) bad(n, "dilations are not supported by AveragePool in opset 17");
  const ceil = aInt(n, "ceil_mode", 0) === 1;
  const includePad = aInt(n, "count_include_pad", 0) === 1;
  const colMajor = aInt(n, "storage_order", 0) === 1;
  const OH = outSize(n, H, wn.kh, wn.sh, wn.pt, wn.pb, wn.dh, ceil);
  const OW = outSize(n, W, wn.kw, wn.sw, wn.pl, wn.pr, wn.dw, ceil);
  const out = new Float64Array(N * C * OH * OW);
  const idx = wantIndices ? new Float64Array(out.length) : undefined;
  for (let nc = 0; nc < N * C; nc++) {
    const xoff = nc * H * W;
    for (let oh = 0; oh < OH; oh++) {
      for (let ow = 0; ow < OW; ow++) {
        const h0 = oh * wn.sh - wn.pt;
        const w0 = ow * wn.sw - wn.pl;
        let best = -Infinity, bestAt = -1, sum = 0, count = 0;
        for (let kh = 0; kh < wn.kh; kh++) {
          const ih = h0 + kh * wn.dh;
          if (ih < 0 || ih >= H) continue;
          for (let kw = 0; kw < wn.kw; kw++) {
            const iw = w0 + kw * wn.dw;
            if (iw < 0 || iw >= W) continue;
            const v = x.data[xoff + ih * W + iw];
            if (v > best) {
              best = v;
              bestAt = colMajor ? xoff + iw * H + ih : xoff + ih * W + iw;
            }
            sum += v;
            count++;
          }
        }
        const o = (nc * OH + oh) * OW + ow;
        if (isMax) {
          out[o] = best;
          if (idx) idx[o] = bestAt;
        } else {
          // count_include_pad counts explicit padding but not the overhang that ceil_mode adds past it.
          const hEnd = Math.min(h0 + wn.kh, H + wn.pb);
          const wEnd = Math.min(w0 + wn.kw, W + wn.pr);
          out[o] = sum / (includePad ? (hEnd - h0) * (wEnd - w0) : count);
        }
      }
    }
  }
  const res: RefValue[] = [{ dtype: x.dtype, shape: [N, C, OH, OW], data: out }];
  if (idx) res.push({ dtype: "int64", shape: [N, C, OH, OW], data: idx });
  return res;
}

function globalPool(n: Node, x: RefValue, isMax: boolean): RefValue {
  if (x.shape.length < 2) bad(n, `input must have rank >= 2, got [${x.shape}]`);
  const [N, C] = x.shape;
  const S = numel(x.shape.slice(2));
  const out = new Float64Array(N * C);
  for (let i = 0; i < N * C; i++) {
    let acc = isMax ? -Infinity : 0;
    for (let j = 0; j < S; j++) acc = isMax ? Math.max(acc, x.data[i * S + j]) : acc + x.data[i * S + j];
    out[i] = isMax ? acc : acc / S;
  }
  return { dtype: x.dtype, shape: [N, C, ...x.shape.slice(2).map(() => 1)], data: out };
}

/**
 * BatchNormalization. Inference mode normalises with the given statistics. Training mode (ONNX opset 14+)
 * normalises with the batch's per-channel mean and biased variance and also returns the updated running
 * statistics, input·momentum + batch·(1 − momentum).
 */
function batchNorm(n: Node, ins: Ins): RefValue[] {
  const training = aInt(n, "training_mode", 0) !== 0;
  if (!training && n.outputs.slice(1).some((o) => o !== "")) bad(n, "inference mode has one output");
  const x = need(n, ins, 0);
  const [scale, bias, mean, variance] = [1, 2, 3, 4].map((k) => need(n, ins, k));
  if (x.shape.length < 2) bad(n, `input must have rank >= 2, got [${x.shape}]`);
  const eps = aFloat(n, "epsilon", 1e-5);
  const [outer, C, inner] = around(x.shape, 1);
  for (const p of [scale, bias, mean, variance]) if (p.data.length !== C) bad(n, `parameters must have ${C} values, got [${p.shape}]`);
  let mu = mean.data, vr = variance.data;
  if (training) {
    const m = new Float64Array(C), v = new Float64Array(C);
    for (let c = 0; c < C; c++) {
      let s = 0;
      for (let o = 0; o < outer; o++) for (let i = 0; i < inner; i++) s += x.data[(o * C + c) * inner + i];
      m[c] = s / (outer * inner);
      let q = 0;
      for (let o = 0; o < outer; o++) for (let i = 0; i < inner; i++) q += (x.data[(o * C + c) * inner + i] - m[c]) ** 2;
      v[c] = q / (outer * inner);
    }
    mu = m;
    vr = v;
  }
  const out = new Float64Array(x.data.length);
  for (let o = 0; o < outer; o++) {
    for (let c = 0; c < C; c++) {
      const a = scale.data[c] / Math.sqrt(vr[c] + eps);
      const base = (o * C + c) * inner;
      for (let i = 0; i < inner; i++) out[base + i] = a * (x.data[base + i] - mu[c]) + bias.data[c];
    }
  }
  const y: RefValue = { dtype: x.dtype, shape: [...x.shape], data: out };
  if (!training) return [y];
  const momentum = aFloat(n, "momentum", 0.9);
  const run = (given: ArrayLike<number>, batch: ArrayLike<number>): RefValue => ({ dtype: x.dtype, shape: [C], data: Float64Array.from({ length: C }, (_, c) => given[c] * momentum + batch[c] * (1 - momentum)) });
  return [y, run(mean.data, mu), run(variance.data, vr)];
}

// ---------- softmax, reductions ----------

function softmax(n: Node, x: RefValue, log: boolean): RefValue {
  const axis = normAxis(n, aInt(n, "axis", -1), x.shape.length);
  const [outer, len, inner] = around(x.shape, axis);
  const out = new Float64Array(x.data.length);
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < inner; i++) {
      const at = (j: number): number => (o * len + j) * inner + i;
      let mx = -Infinity;
      for (let j = 0; j < len; j++) mx = Math.max(mx, x.data[at(j)]);
      let s = 0;
      for (let j = 0; j < len; j++) s += Math.exp(x.data[at(j)] - mx);
      for (let j = 0; j < len; j++) {
        const z = x.data[at(j)] - mx;
        out[at(j)] = log ? z - Math.log(s) : Math.exp(z) / s;
      }
    }
  }
  return { dtype: x.dtype, shape: [...x.shape], data: out };
}

function reduce(n: Node, x: RefValue, axesIn: number[] | undefined, keep: boolean): RefValue {
  const r = x.shape.length;
  const axes = new Set((axesIn && axesIn.length ? axesIn : x.shape.map((_, i) => i)).map((a) => normAxis(n, a, r)));
  const kept = x.shape.map((d, i) => (axes.has(i) ? 1 : d));
  const ks = stridesOf(kept);
  // slot[i] = the output element input element i reduces into.
  const slot = gather(iota(numel(kept)), ks.map((s, i) => (axes.has(i) ? 0 : s)), x.shape);
  const m = numel(kept);
  const count = m === 0 ? 0 : x.data.length / m;
  const out = new Float64Array(m);
  const X = x.data;
  switch (n.op) {
    case "ReduceSum": case "ReduceMean":
      for (let i = 0; i < X.length; i++) out[slot[i]] += X[i];
      if (n.op === "ReduceMean") for (let j = 0; j < m; j++) out[j] /= count;
      break;
    case "ReduceL1":
      for (let i = 0; i < X.length; i++) out[slot[i]] += Math.abs(X[i]);
      break;
    case "ReduceMax": case "ReduceMin": {
      const isMax = n.op === "ReduceMax";
      out.fill(isMax ? -Infinity : Infinity);
      for (let i = 0; i < X.length; i++) out[slot[i]] = isMax ? Math.max(out[slot[i]], X[i]) : Math.min(out[slot[i]], X[i]);
      break;
    }
    case "ReduceLogSumExp": {
      const mx = new Float64Array(m).fill(-Infinity);
      for (let i = 0; i < X.length; i++) mx[slot[i]] = Math.max(mx[slot[i]], X[i]);
      for (let i = 0; i < X.length; i++) out[slot[i]] += Math.exp(X[i] - mx[slot[i]]);
      for (let j = 0; j < m; j++) out[j] = mx[j] + Math.log(out[j]);
      break;
    }
    default:
      bad(n, "unknown reduction");
  }
  return { dtype: x.dtype, shape: keep ? kept : x.shape.filter((_, i) => !axes.has(i)), data: out };
}

function argMax(n: Node, x: RefValue): RefValue {
  const axis = normAxis(n, aInt(n, "axis", 0), x.shape.length);
  const keep = aInt(n, "keepdims", 1) === 1;
  const last = aInt(n, "select_last_index", 0) === 1;
  const [outer, len, inner] = around(x.shape, axis);
  const out = new Float64Array(outer * inner);
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < inner; i++) {
      let best = -Infinity, at = 0;
      for (let j = 0; j < len; j++) {
        const v = x.data[(o * len + j) * inner + i];
        if (v > best || (last && v === best)) {
          best = v;
          at = j;
        }
      }
      out[o * inner + i] = at;
    }
  }
  const shape = keep ? x.shape.map((d, i) => (i === axis ? 1 : d)) : x.shape.filter((_, i) => i !== axis);
  return { dtype: "int64", shape, data: out };
}

// ---------- data movement ----------

function transpose(n: Node, x: RefValue): RefValue {
  const r = x.shape.length;
  const perm = aInts(n, "perm") ?? x.shape.map((_, i) => r - 1 - i);
  if (perm.length !== r || new Set(perm).size !== r || perm.some((p) => p < 0 || p >= r)) bad(n, `perm [${perm}] is invalid for rank ${r}`);
  const xs = stridesOf(x.shape);
  const shape = perm.map((p) => x.shape[p]);
  return { dtype: x.dtype, shape, data: gather(x.data, perm.map((p) => xs[p]), shape) };
}

function concat(n: Node, ins: Ins): RefValue {
  const vs = ins.map((v, k) => v ?? need(n, ins, k));
  const r = vs[0].shape.length;
  const axis = normAxis(n, aInt(n, "axis", 0), r);
  for (const v of vs) {
    if (v.shape.length !== r || v.shape.some((d, i) => i !== axis && d !== vs[0].shape[i])) {
      bad(n, `shapes ${vs.map((q) => `[${q.shape}]`).join(", ")} do not concatenate on axis ${axis}`);
    }
  }
  const shape = [...vs[0].shape];
  shape[axis] = vs.reduce((s, v) => s + v.shape[axis], 0);
  const [outer, len, inner] = around(shape, axis);
  const out = new Float64Array(outer * len * inner);
  let start = 0;
  for (const v of vs) {
    const part = v.shape[axis] * inner;
    for (let o = 0; o < outer; o++) out.set(v.data.subarray(o * part, (o + 1) * part), o * len * inner + start);
    start += part;
  }
  return { dtype: vs[0].dtype, shape, data: out };
}

function pad(n: Node, ins: Ins): RefValue {
  const x = need(n, ins, 0);
  if (ins[3]) bad(n, "the axes input (opset 18) is not supported");
  const r = x.shape.length;
  const pads = intsOf(n, need(n, ins, 1), "pads");
  if (pads.length !== 2 * r) bad(n, `pads has ${pads.length} entries, needs ${2 * r} for rank ${r}`);
  const value = ins[2] && ins[2].data.length ? ins[2].data[0] : 0;
  const mode = aString(n, "mode", "constant");
  if (mode !== "constant" && mode !== "reflect" && mode !== "edge") bad(n, `mode ${mode} is not supported`);
  const shape = x.shape.map((d, i) => d + pads[i] + pads[r + i]);
  if (shape.some((d) => d < 0)) bad(n, `pads [${pads}] crop more than the input [${x.shape}]`);
  const maps = shape.map((od, i) => {
    const d = x.shape[i];
    if (mode !== "constant" && d === 0 && od > 0) bad(n, `mode ${mode} cannot pad an empty axis`);
    const m = new Int32Array(od);
    for (let j = 0; j < od; j++) {
      const s = j - pads[i];
      if (s >= 0 && s < d) m[j] = s;
      else if (mode === "constant") m[j] = -1;
      else if (mode === "edge") m[j] = s < 0 ? 0 : d - 1;
      else if (d === 1) m[j] = 0;
      else {
        const period = 2 * (d - 1);
        const q = ((s % period) + period) % period;
        m[j] = q < d ? q : period - q;
      }
    }
    return m;
  });
  return { dtype: x.dtype, shape, data: gather(x.data, stridesOf(x.shape), shape, maps, value) };
}

function reshape(n: Node, x: RefValue, target: number[]): RefValue {
  const allowZero = aInt(n, "allowzero", 0) === 1;
  const shape = target.map((d, i) => {
    if (d !== 0 || allowZero) return d;
    if (i >= x.shape.length) bad(n, `target [${target}] copies dim ${i} that [${x.shape}] lacks`);
    return x.shape[i];
  });
  const neg = shape.indexOf(-1);
  if (neg >= 0) {
    if (shape.indexOf(-1, neg + 1) >= 0) bad(n, `target [${target}] has more than one -1`);
    const rest = numel(shape.filter((_, i) => i !== neg));
    if (rest === 0 || x.data.length % rest !== 0) bad(n, `cannot reshape [${x.shape}] to [${target}]`);
    shape[neg] = x.data.length / rest;
  }
  if (shape.some((d) => d < 0) || numel(shape) !== x.data.length) bad(n, `cannot reshape [${x.shape}] to [${target}]`);
  return { dtype: x.dtype, shape, data: x.data };
}

function slice(n: Node, ins: Ins): RefValue {
  const x = need(n, ins, 0);
  const r = x.shape.length;
  const starts = intsOf(n, need(n, ins, 1), "starts");
  const ends = intsOf(n, need(n, ins, 2), "ends");
  const axes = ins[3] ? intsOf(n, ins[3], "axes") : starts.map((_, i) => i);
  const steps = ins[4] ? intsOf(n, ins[4], "steps") : starts.map(() => 1);
  if (ends.length !== starts.length || axes.length !== starts.length || steps.length !== starts.length) bad(n, "starts/ends/axes/steps lengths differ");
  const shape = [...x.shape];
  const maps: (Int32Array | undefined)[] = x.shape.map(() => undefined);
  axes.forEach((a, i) => {
    const ax = normAxis(n, a, r);
    if (maps[ax]) bad(n, `axis ${a} is repeated`);
    const d = x.shape[ax];
    const step = steps[i];
    if (step === 0) bad(n, "step 0 is invalid");
    let s = starts[i] < 0 ? starts[i] + d : starts[i];
    let e = ends[i] < 0 ? ends[i] + d : ends[i];
    if (step > 0) {
      s = Math.min(Math.max(s, 0), d);
      e = Math.min(Math.max(e, 0), d);
    } else {
      s = Math.min(Math.max(s, 0), d - 1);
      e = Math.min(Math.max(e, -1), d - 1);
    }
    const count = Math.max(0, Math.ceil((e - s) / step));
    shape[ax] = count;
    maps[ax] = Int32Array.from({ length: count }, (_, j) => s + j * step);
  });
  return { dtype: x.dtype, shape, data: gather(x.data, stridesOf(x.shape), shape, maps) };
}

function unsqueeze(n: Node, x: RefValue, axesIn: number[]): RefValue {
  const r = x.shape.length + axesIn.length;
  const axes = new Set(axesIn.map((a) => normAxis(n, a, r)));
  if (axes.size !== axesIn.length) bad(n, `axes [${axesIn}] repeat`);
  const src = [...x.shape];
  return { dtype: x.dtype, shape: Array.from({ length: r }, (_, i) => (axes.has(i) ? 1 : src.shift()!)), data: x.data };
}

function squeeze(n: Node, x: RefValue, axesIn: number[] | undefined): RefValue {
  const r = x.shape.length;
  const axes = axesIn ? axesIn.map((a) => normAxis(n, a, r)) : x.shape.flatMap((d, i) => (d === 1 ? [i] : []));
  for (const a of axes) if (x.shape[a] !== 1) bad(n, `cannot squeeze axis ${a} of size ${x.shape[a]}`);
  return { dtype: x.dtype, shape: x.shape.filter((_, i) => !axes.includes(i)), data: x.data };
}

/** For Scatter/GatherElements: data offset of each indices position with its `axis` coordinate set to 0. */
function elementBase(n: Node, data: RefValue, indices: RefValue, axis: number): Float64Array {
  if (indices.shape.length !== data.shape.length) bad(n, `indices rank ${indices.shape.length} differs from data rank ${data.shape.length}`);
  indices.shape.forEach((d, i) => {
    if (i !== axis && d > data.shape[i]) bad(n, `indices shape [${indices.shape}] exceeds data shape [${data.shape}]`);
  });
  const ds = stridesOf(data.shape);
  return gather(iota(data.data.length), ds.map((s, i) => (i === axis ? 0 : s)), indices.shape);
}

function elementIndex(n: Node, v: number, d: number): number {
  const i = v < 0 ? v + d : v;
  if (i < 0 || i >= d) bad(n, `index ${v} is out of range for an axis of size ${d}`);
  return i;
}

function scatterElements(n: Node, ins: Ins): RefValue {
  const [data, indices, updates] = [0, 1, 2].map((k) => need(n, ins, k));
  const axis = normAxis(n, aInt(n, "axis", 0), data.shape.length);
  const red = aString(n, "reduction", "none");
  if (red !== "none" && red !== "add" && red !== "mul") bad(n, `reduction ${red} is not supported`);
  if (!sameShape(indices.shape, updates.shape)) bad(n, `indices [${indices.shape}] and updates [${updates.shape}] differ`);
  intsOf(n, indices, "indices");
  const base = elementBase(n, data, indices, axis);
  const step = stridesOf(data.shape)[axis];
  const out = data.data.slice();
  for (let i = 0; i < base.length; i++) {
    const at = base[i] + elementIndex(n, indices.data[i], data.shape[axis]) * step;
    if (red === "add") out[at] += updates.data[i];
    else if (red === "mul") out[at] *= updates.data[i];
    else out[at] = updates.data[i];
  }
  return { dtype: data.dtype, shape: [...data.shape], data: out };
}

function gatherElements(n: Node, data: RefValue, indices: RefValue): RefValue {
  const axis = normAxis(n, aInt(n, "axis", 0), data.shape.length);
  intsOf(n, indices, "indices");
  const base = elementBase(n, data, indices, axis);
  const step = stridesOf(data.shape)[axis];
  const out = new Float64Array(base.length);
  for (let i = 0; i < base.length; i++) out[i] = data.data[base[i] + elementIndex(n, indices.data[i], data.shape[axis]) * step];
  return { dtype: data.dtype, shape: [...indices.shape], data: out };
}

function oneHot(n: Node, ins: Ins): RefValue {
  const [indices, depthV, values] = [0, 1, 2].map((k) => need(n, ins, k));
  if (depthV.data.length !== 1) bad(n, "depth must be a single value");
  if (values.data.length !== 2) bad(n, "values must be [off, on]");
  const depth = Math.trunc(depthV.data[0]);
  if (depth < 1) bad(n, `depth ${depth} must be positive`);
  const r = indices.shape.length + 1;
  const axis = normAxis(n, aInt(n, "axis", -1), r);
  const shape = [...indices.shape.slice(0, axis), depth, ...indices.shape.slice(axis)];
  const [outer, , inner] = around(shape, axis);
  const out = new Float64Array(numel(shape)).fill(values.data[0]);
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < inner; i++) {
      let k = Math.trunc(indices.data[o * inner + i]);
      if (k < 0) k += depth;
      if (k >= 0 && k < depth) out[(o * depth + k) * inner + i] = values.data[1];
    }
  }
  return { dtype: values.dtype, shape, data: out };
}

function constantValue(n: Node): RefValue {
  const a = n.attrs;
  if (a.value?.kind === "tensor") return toRef(a.value.value);
  if (a.value_float?.kind === "float") return { dtype: "float32", shape: [], data: Float64Array.of(a.value_float.value) };
  if (a.value_floats?.kind === "floats") return { dtype: "float32", shape: [a.value_floats.value.length], data: Float64Array.from(a.value_floats.value) };
  if (a.value_int?.kind === "int") return { dtype: "int64", shape: [], data: Float64Array.of(a.value_int.value) };
  if (a.value_ints?.kind === "ints") return { dtype: "int64", shape: [a.value_ints.value.length], data: Float64Array.from(a.value_ints.value) };
  bad(n, "needs a value, value_float(s) or value_int(s) attribute");
}

// ---------- dispatch ----------

function evalNode(n: Node, ins: Ins): RefValue[] {
  const x = (): RefValue => need(n, ins, 0);
  const unary = UNARY[n.op];
  if (unary) {
    const v = x();
    return [{ dtype: v.dtype, shape: [...v.shape], data: v.data.map(unary) }];
  }
  const bin = BINARY[n.op];
  if (bin) {
    const vs = ins.map((v, k) => v ?? need(n, ins, k));
    const dtype = vs[0].dtype;
    // Integer Div/Pow truncate like their C++ kernels.
    const f = isInt(dtype) && (n.op === "Div" || n.op === "Pow") ? (a: number, b: number) => Math.trunc(bin(a, b)) : bin;
    return [vs.slice(1).reduce((acc, v) => binary(n, acc, v, dtype, f), vs[0])];
  }
  const cmp = LOGICAL[n.op];
  if (cmp) return [binary(n, x(), need(n, ins, 1), "bool", (a, b) => (cmp(a, b) ? 1 : 0))];
  switch (n.op) {
    case "Not": {
      const v = x();
      return [{ dtype: "bool", shape: [...v.shape], data: v.data.map((q) => (q ? 0 : 1)) }];
    }
    case "Where": {
      const [c, a, b] = [0, 1, 2].map((k) => need(n, ins, k));
      const shape = broadcastShape(n, [c.shape, a.shape, b.shape]);
      const [C, A, B] = [c, a, b].map((v) => expandTo(v, shape));
      return [{ dtype: a.dtype, shape, data: C.map((q, i) => (q ? A[i] : B[i])) }];
    }
    case "Cast": {
      const to = CAST_TYPES[aInt(n, "to", 0)];
      if (!to) bad(n, `unsupported target type ${aInt(n, "to", 0)}`);
      const v = x();
      return [{ dtype: to, shape: [...v.shape], data: v.data.map((q) => cast(q, to)) }];
    }
    case "Dropout": {
      if (ins[2] && ins[2].data[0]) bad(n, "training_mode is not supported");
      const v = x();
      return [v, { dtype: "bool", shape: [...v.shape], data: new Float64Array(v.data.length).fill(1) }];
    }
    case "Softmax": case "LogSoftmax":
      return [softmax(n, x(), n.op === "LogSoftmax")];
    case "Clip": {
      const v = x();
      const lo = ins[1] ? ins[1].data[0] : -Infinity;
      const hi = ins[2] ? ins[2].data[0] : Infinity;
      return [{ dtype: v.dtype, shape: [...v.shape], data: v.data.map((q) => Math.min(Math.max(q, lo), hi)) }];
    }
    case "MatMul":
      return [matmul(n, x(), need(n, ins, 1))];
    case "Gemm":
      return [gemm(n, x(), need(n, ins, 1), ins[2])];
    case "Conv":
      return [conv(n, x(), need(n, ins, 1), ins[2])];
    case "ConvTranspose":
      return [convTranspose(n, x(), need(n, ins, 1), ins[2])];
    case "MaxPool": case "AveragePool":
      return pool(n, x(), n.op === "MaxPool" && (n.outputs[1] ?? "") !== "");
    case "GlobalAveragePool": case "GlobalMaxPool":
      return [globalPool(n, x(), n.op === "GlobalMaxPool")];
    case "BatchNormalization":
      return batchNorm(n, ins);
    case "Flatten": {
      const v = x();
      const r = v.shape.length;
      const a = aInt(n, "axis", 1);
      const axis = a < 0 ? a + r : a;
      if (axis < 0 || axis > r) bad(n, `axis ${a} is out of range for rank ${r}`);
      return [{ dtype: v.dtype, shape: [numel(v.shape.slice(0, axis)), numel(v.shape.slice(axis))], data: v.data }];
    }
    case "Reshape":
      return [reshape(n, x(), intsOf(n, need(n, ins, 1), "shape"))];
    case "Transpose":
      return [transpose(n, x())];
    case "Concat":
      return [concat(n, ins)];
    case "Pad":
      return [pad(n, ins)];
    case "ReduceSum": {
      const v = x();
      const axes = ins[1] ? intsOf(n, ins[1], "axes") : [];
      if (axes.length === 0 && aInt(n, "noop_with_empty_axes", 0) === 1) return [v];
      return [reduce(n, v, axes, aInt(n, "keepdims", 1) === 1)];
    }
    case "ReduceMean": case "ReduceMax": case "ReduceMin": case "ReduceL1": case "ReduceLogSumExp":
      if (ins[1]) bad(n, "axes must be an attribute in opset 17");
      return [reduce(n, x(), aInts(n, "axes"), aInt(n, "keepdims", 1) === 1)];
    case "ArgMax":
      return [argMax(n, x())];
    case "Shape": {
      const v = x();
      const r = v.shape.length;
      const clamp = (q: number): number => Math.min(Math.max(q < 0 ? q + r : q, 0), r);
      const dims = v.shape.slice(clamp(aInt(n, "start", 0)), clamp(aInt(n, "end", r)));
      return [{ dtype: "int64", shape: [dims.length], data: Float64Array.from(dims) }];
    }
    case "ConstantOfShape": {
      const shape = intsOf(n, x(), "shape");
      const a = n.attrs.value;
      const fill = a?.kind === "tensor" ? toRef(a.value) : { dtype: "float32" as DType, shape: [1], data: Float64Array.of(0) };
      if (fill.data.length !== 1) bad(n, "value must hold one element");
      return [{ dtype: fill.dtype, shape, data: new Float64Array(numel(shape)).fill(fill.data[0]) }];
    }
    case "Expand": {
      const v = x();
      const shape = broadcastShape(n, [v.shape, intsOf(n, need(n, ins, 1), "shape")]);
      return [{ dtype: v.dtype, shape, data: expandTo(v, shape) }];
    }
    case "Tile": {
      const v = x();
      const reps = intsOf(n, need(n, ins, 1), "repeats");
      if (reps.length !== v.shape.length || reps.some((q) => q < 0)) bad(n, `repeats [${reps}] do not fit rank ${v.shape.length}`);
      const shape = v.shape.map((d, i) => d * reps[i]);
      const maps = shape.map((od, i) => Int32Array.from({ length: od }, (_, j) => j % v.shape[i]));
      return [{ dtype: v.dtype, shape, data: gather(v.data, stridesOf(v.shape), shape, maps) }];
    }
    case "Unsqueeze":
      return [unsqueeze(n, x(), intsOf(n, need(n, ins, 1), "axes"))];
    case "Squeeze":
      return [squeeze(n, x(), ins[1] ? intsOf(n, ins[1], "axes") : undefined)];
    case "Slice":
      return [slice(n, ins)];
    case "ScatterElements":
      return [scatterElements(n, ins)];
    case "GatherElements":
      return [gatherElements(n, x(), need(n, ins, 1))];
    case "OneHot":
      return [oneHot(n, ins)];
    case "Constant":
      return [constantValue(n)];
    default:
      throw new GraphError(`reference interpreter: op ${n.op} ("${n.name}") is not supported`);
  }
}

// ---------- graph evaluation ----------

/** The nodes (in graph order) that the values `fetch` depend on. */
export function nodesFor(g: Graph, fetch: string[]): Node[] {
  const producer = new Map<string, Node>();
  for (const n of g.nodes) for (const o of n.outputs) if (o) producer.set(o, n);
  const known = (v: string): boolean => producer.has(v) || g.initializers.has(v) || g.inputs.some((i) => i.name === v);
  const live = new Set<Node>();
  const stack = [...fetch];
  for (const f of fetch) if (!known(f)) throw new GraphError(`evaluate: graph "${g.name}" has no value "${f}"`);
  while (stack.length) {
    const p = producer.get(stack.pop()!);
    if (!p || live.has(p)) continue;
    live.add(p);
    for (const i of p.inputs) if (i) stack.push(i);
  }
  return g.nodes.filter((n) => live.has(n));
}

/** Feeds (validated against the declared inputs) and needed initializers as RefValues. A feed may replace an initializer. */
function initialValues(g: Graph, feeds: Record<string, TensorData>, nodes: Node[], fetch: string[]): Map<string, RefValue> {
  const inputs = new Map(g.inputs.map((v) => [v.name, v]));
  for (const k of Object.keys(feeds)) {
    if (!inputs.has(k) && !g.initializers.has(k)) throw new GraphError(`evaluate: feed "${k}" is not an input or initializer of graph "${g.name}"`);
  }
  const wanted = new Set<string>(fetch);
  for (const n of nodes) for (const i of n.inputs) if (i) wanted.add(i);
  const env = new Map<string, RefValue>();
  for (const name of wanted) {
    const feed = feeds[name];
    const decl = inputs.get(name);
    if (feed) {
      const declared = decl?.dtype ?? g.initializers.get(name)!.dtype;
      const declShape = decl?.shape ?? g.initializers.get(name)!.shape;
      if (feed.dtype !== declared && !(isFloat(feed.dtype) && isFloat(declared))) {
        throw new GraphError(`evaluate: feed "${name}" is ${feed.dtype}, graph expects ${declared}`);
      }
      const fits = feed.shape.length === declShape.length && declShape.every((d, i) => typeof d !== "number" || d === feed.shape[i]);
      if (!fits) throw new GraphError(`evaluate: feed "${name}" has shape [${feed.shape}], graph expects [${declShape}]`);
      env.set(name, { ...toRef(feed), dtype: declared });
    } else if (g.initializers.has(name)) env.set(name, toRef(g.initializers.get(name)!));
    else if (decl) throw new GraphError(`evaluate: missing feed for input "${name}" of graph "${g.name}"`);
  }
  return env;
}

/** Runs `nodes` in order over `env` (which it extends). With `keep`, values no later node reads are dropped. */
export function runNodes(nodes: Node[], env: Map<string, RefValue>, keep?: Set<string>): void {
  const lastUse = new Map<string, number>();
  if (keep) nodes.forEach((n, k) => n.inputs.forEach((i) => lastUse.set(i, k)));
  nodes.forEach((n, k) => {
    const ins = n.inputs.map((i) => {
      if (i === "") return undefined;
      const v = env.get(i);
      if (!v) throw new GraphError(`${n.op} "${n.name}": input "${i}" has no value (not fed, not computed before)`);
      return v;
    });
    const outs = evalNode(n, ins);
    n.outputs.forEach((o, j) => {
      if (!o) return;
      if (!outs[j]) bad(n, `output ${j} is not produced by the reference interpreter`);
      env.set(o, outs[j]);
    });
    if (keep) for (const i of n.inputs) if (lastUse.get(i) === k && !keep.has(i)) env.delete(i);
  });
}

/** Every value on the way to `fetch` (inputs, initializers, intermediates) as RefValues. */
export function evaluateValues(g: Graph, feeds: Record<string, TensorData>, fetch: string[]): Map<string, RefValue> {
  const nodes = nodesFor(g, fetch);
  const env = initialValues(g, feeds, nodes, fetch);
  runNodes(nodes, env);
  return env;
}

/**
 * Runs the graph in float64 and returns the fetched values (default: the graph outputs). Float results come
 * back as dtype "float64" (Float64Array), int64 as BigInt64Array, bool as Uint8Array. Feeds may be float32 or
 * float64 for float inputs; a feed named like an initializer replaces it. Cast to float32 does not round.
 */
export function evaluate(g: Graph, feeds: Record<string, TensorData>, fetch?: string[]): Map<string, TensorData> {
  const names = fetch ?? g.outputs.map((o) => o.name);
  if (names.length === 0) throw new GraphError(`evaluate: graph "${g.name}" has no outputs and nothing was fetched`);
  const nodes = nodesFor(g, names);
  const env = initialValues(g, feeds, nodes, names);
  runNodes(nodes, env, new Set(names));
  return new Map(names.map((name) => [name, fromRef(env.get(name)!)]));
}
