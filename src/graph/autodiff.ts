// Reverse-mode differentiation of the graph IR. Like micrograd, each op knows its local vector-Jacobian
// product; unlike micrograd the products are emitted as more ONNX nodes into the same graph, so
// onnxruntime runs forward and backward in one session.
import { attr, Graph, GraphError, isStatic, tensor, type Attrs, type Dim, type Node } from "./ir.js";

type Grads = (string | null)[];

const FLOAT = new Set(["float32", "float64"]);

function intsAttr(n: Node, k: string): number[] | undefined {
  const a = n.attrs[k];
  return a?.kind === "ints" ? a.value : undefined;
}
function intAttr(n: Node, k: string, d: number): number {
  const a = n.attrs[k];
  return a?.kind === "int" ? a.value : d;
}
function floatAttr(n: Node, k: string, d: number): number {
  const a = n.attrs[k];
  return a?.kind === "float" ? a.value : d;
}

/** Emits gradient nodes; small helpers keep the rules readable. */
class Emitter {
  private zeroConst?: string;
  private oneConst?: string;
  constructor(readonly g: Graph, readonly convForms: ConvGradForms = "direct") {}

  op(op: string, inputs: string[], attrs: Attrs = {}): string {
    return this.g.op(op, inputs, attrs);
  }
  zero(): string {
    return (this.zeroConst ??= this.g.scalar(0));
  }
  one(): string {
    return (this.oneConst ??= this.g.scalar(1));
  }
  shape(v: string): Dim[] {
    return this.g.shape(v);
  }

  /** Reshape to a (possibly symbolic) shape: a single symbolic dim becomes -1, otherwise Shape(like) is used. */
  reshapeLike(v: string, like: string): string {
    const s = this.shape(like);
    const sym = s.filter((d) => typeof d !== "number").length;
    if (sym <= 1) return this.op("Reshape", [v, this.g.ints(s.map((d) => (typeof d === "number" ? d : -1)))]);
    return this.g.add("Reshape", [v, this.op("Shape", [like])], {}, { infer: [{ dtype: this.g.info(v).dtype, shape: [...s] }] })[0];
  }

  /** Sums a broadcast gradient back down to the shape of `like`. */
  sumTo(dy: string, like: string): string {
    const ys = this.shape(dy);
    const xs = this.shape(like);
    if (ys.length === xs.length && ys.every((d, i) => d === xs[i])) return dy;
    const off = ys.length - xs.length;
    const axes: number[] = [];
    ys.forEach((d, i) => {
      const xd = i < off ? undefined : xs[i - off];
      if (xd === undefined || (xd === 1 && d !== 1)) axes.push(i);
      else if (xd !== d && typeof xd === "number" && typeof d === "number") throw new GraphError(`cannot reduce [${ys}] to [${xs}]`);
    });
    let r = dy;
    if (axes.length) r = this.op("ReduceSum", [dy, this.g.ints(axes)], { keepdims: attr.int(1) });
    if (off > 0 || this.shape(r).length !== xs.length) r = this.reshapeLike(r, like);
    return r;
  }
}

/**
 * A rule returns exactly one entry per node input (checked): the gradient, or null for an input that is not
 * differentiable (shapes, axes, indices, conditions) or not needed. An input that is needed must get one.
 */
type Rule = (e: Emitter, n: Node, dy: string[], needs: boolean[]) => Grads;

/** The gradient of the data input (input 0); every other input (shape, axes, pads, ratio...) gets none. */
function onlyFirst(n: Node, needs: boolean[], dx: () => string): Grads {
  for (let k = 1; k < n.inputs.length; k++) {
    if (needs[k]) throw new GraphError(`${n.op}: gradient with respect to input ${k} ("${n.inputs[k]}") is not supported`);
  }
  return n.inputs.map((_, k) => (k === 0 && needs[0] ? dx() : null));
}

const unary = (f: (e: Emitter, x: string, y: string, dy: string) => string): Rule =>
  (e, n, [dy], needs) => onlyFirst(n, needs, () => f(e, n.inputs[0], n.outputs[0], dy));

function convGradWeight(e: Emitter, n: Node, x: string, w: string, dy: string): string {
  const [co, cg, kh, kw] = e.g.staticShape(w);
  const group = intAttr(n, "group", 1);
  const s = intsAttr(n, "strides") ?? [1, 1];
  const d = intsAttr(n, "dilations") ?? [1, 1];
  const pads = intsAttr(n, "pads") ?? [0, 0, 0, 0];
  const yshape = e.shape(dy);
  const xshape = e.shape(x);
  if (typeof yshape[2] !== "number" || typeof yshape[3] !== "number" || typeof xshape[2] !== "number" || typeof xshape[3] !== "number") {
    throw new GraphError("Conv weight gradient needs static spatial sizes");
  }
  if (group === 1 && e.convForms !== "plain") return convGradWeightTaps(e, x, dy, [co, cg, kh, kw], s, d, pads, [yshape[2], yshape[3]]);
  // dW[o,i,a,b] = Σ_n,y,x dy[n,o,y,x]·x[n,g(o)·cg+i,y·s+a·d,x·s+b·d]: a convolution over x with the per-group
  // input channel i as the batch, (group, image) pairs as channels, and dy as the kernel, dilated by the
  // stride. With group = G the conv is grouped too, so a depthwise layer costs one pass, not G.
  let xt: string;
  if (group === 1) xt = e.op("Transpose", [x], { perm: attr.ints([1, 0, 2, 3]) });
  else {
    const x5 = e.op("Reshape", [x, e.g.ints([0, group, cg, xshape[2], xshape[3]])]);
    const t5 = e.op("Transpose", [x5], { perm: attr.ints([2, 1, 0, 3, 4]) });
    xt = e.op("Reshape", [t5, e.g.ints([cg, -1, xshape[2], xshape[3]])]);
  }
  const dyt = e.op("Transpose", [dy], { perm: attr.ints([1, 0, 2, 3]) });
  const attrs: Attrs = { strides: attr.ints(d), dilations: attr.ints(s), pads: attr.ints(pads) };
  if (group > 1) attrs.group = attr.int(group);
  // The kernel (dy) is a graph value, not a constant: its output shape is stated here.
  const raw = e.g.add("Conv", [xt, dyt], attrs, {
    infer: [{
      dtype: "float32",
      shape: [cg, co,
        Math.floor((xshape[2] + pads[0] + pads[2] - ((yshape[2] - 1) * s[0] + 1)) / d[0]) + 1,
        Math.floor((xshape[3] + pads[1] + pads[3] - ((yshape[3] - 1) * s[1] + 1)) / d[1]) + 1],
    }],
  })[0];
  const [, , rh, rw] = e.shape(raw) as number[];
  let cut = raw;
  if (rh !== kh || rw !== kw) cut = e.op("Slice", [raw, e.g.ints([0, 0]), e.g.ints([kh, kw]), e.g.ints([2, 3])]);
  return e.op("Transpose", [cut], { perm: attr.ints([1, 0, 2, 3]) });
}

/**
 * Ungrouped Conv weight gradient as one matrix product per kernel tap: for tap (a, b) the input rows/columns
 * that tap read (a strided slice of the padded input, channels last) as [N·oh·ow, C], and dy as
 * [N·oh·ow, M]; dW[:, :, a, b] = dyᵀ·x_ab. onnxruntime's Conv with dy as a huge "kernel" (the batch-transposed
 * form) is several times slower on CPU than these kh·kw Gemms.
 */
function convGradWeightTaps(e: Emitter, x: string, dy: string, [co, ci, kh, kw]: number[], s: number[], d: number[], pads: number[], [oh, ow]: number[]): string {
  const g = e.g;
  let xp = x;
  if (pads.some((p) => p !== 0)) xp = e.op("Pad", [x, g.ints([0, 0, pads[0], pads[1], 0, 0, pads[2], pads[3]])], { mode: attr.string("constant") });
  const xl = e.op("Transpose", [xp], { perm: attr.ints([0, 2, 3, 1]) });
  const dyRows = e.convForms === "direct" ? "" : e.op("Reshape", [e.op("Transpose", [dy], { perm: attr.ints([0, 2, 3, 1]) }), g.ints([-1, co])]);
  const slices: string[] = [];
  for (let a = 0; a < kh; a++)
    for (let b = 0; b < kw; b++) {
      const r0 = a * d[0], c0 = b * d[1];
      slices.push(e.op("Slice", [xl, g.ints([r0, c0]), g.ints([r0 + (oh - 1) * s[0] + 1, c0 + (ow - 1) * s[1] + 1]), g.ints([1, 2]), g.ints(s)]));
    }
  // "direct": dy laid out channel-major once ([M, N·oh·ow]), so no tap's Gemm transposes it again.
  const dyCols = e.convForms === "direct" ? e.op("Reshape", [e.op("Transpose", [dy], { perm: attr.ints([1, 0, 2, 3]) }), g.ints([co, -1])]) : "";
  const tapGemm = (rows: string) => (dyCols ? e.op("Gemm", [dyCols, rows]) : e.op("Gemm", [dyRows, rows], { transA: attr.int(1) }));
  const taps = slices.map((tap) => e.op("Unsqueeze", [tapGemm(e.op("Reshape", [tap, g.ints([-1, ci])])), g.ints([2])]));
  const stacked = taps.length === 1 ? taps[0] : e.op("Concat", taps, { axis: attr.int(2) });
  return e.op("Reshape", [stacked, g.ints([co, ci, kh, kw])]);
}

/**
 * Stride-1 Conv input gradient as a plain Conv of dy with the kernel flipped in space and transposed
 * (per group: [M, C/G] → [C, M/G]), padded so the output has x's size (the "flip" form: ConvTranspose was
 * expected to be the slower op on CPU; inside a whole network the two measured about the same). Null when a
 * pad would be negative (a pad wider than the kernel's reach).
 */
function convGradInputFlipped(e: Emitter, w: string, dy: string, [co, cg, kh, kw]: number[], group: number, d: number[], pads: number[]): string | null {
  const reach = [(kh - 1) * d[0], (kw - 1) * d[1]];
  // At stride 1 every row of x is read (oh = H + pads − reach), so these pads give dx exactly x's size.
  const p = [reach[0] - pads[0], reach[1] - pads[1], reach[0] - pads[2], reach[1] - pads[3]];
  if (p.some((v) => v < 0)) return null;
  const g = e.g;
  let wt: string;
  if (group === 1) wt = e.op("Transpose", [w], { perm: attr.ints([1, 0, 2, 3]) });
  else {
    const w5 = e.op("Reshape", [w, g.ints([group, co / group, cg, kh, kw])]);
    wt = e.op("Reshape", [e.op("Transpose", [w5], { perm: attr.ints([0, 2, 1, 3, 4]) }), g.ints([group * cg, co / group, kh, kw])]);
  }
  const big = -(2 ** 31) + 1;
  const flipped = e.op("Slice", [wt, g.ints([-1, -1]), g.ints([big, big]), g.ints([2, 3]), g.ints([-1, -1])]);
  return e.op("Conv", [dy, flipped], {
    ...(group > 1 ? { group: attr.int(group) } : {}),
    dilations: attr.ints(d),
    pads: attr.ints(p),
  });
}

/**
 * The "direct" form's input gradient is the flipped-kernel Conv only where it produces at least this many
 * channels per group, ConvTranspose below. onnxruntime's Conv makes one Gemm per image with the output channels
 * as rows, so few rows waste it: alternating in one run (batch 64–256, load ~8), ConvTranspose was 1.2–2.6×
 * faster at 3, 20, 40 and 60 channels (DeepID's convs, a 3-channel 32×32 stem), the flipped Conv 1.1–1.25×
 * faster at 64, 128 and 256 (PreAct-ResNet18's 3×3 convs); a later short rerun favoured ConvTranspose at 64 and
 * 256 too (bench/conv-grad.ts), so the upper side is not settled.
 */
const FLIP_MIN_CHANNELS = 64;

function convGradInput(e: Emitter, n: Node, x: string, w: string, dy: string): string {
  const [, , kh, kw] = e.g.staticShape(w);
  const s = intsAttr(n, "strides") ?? [1, 1];
  const d = intsAttr(n, "dilations") ?? [1, 1];
  const pads = intsAttr(n, "pads") ?? [0, 0, 0, 0];
  const xs = e.shape(x) as number[];
  const ys = e.shape(dy) as number[];
  // Rows the forward conv never reached (floor division) come back as output_padding.
  const outPad = [0, 1].map((i) => xs[2 + i] - (s[i] * (ys[2 + i] - 1) + ([kh, kw][i] - 1) * d[i] + 1 - pads[i] - pads[2 + i]));
  const group = intAttr(n, "group", 1);
  const [, cg] = e.g.staticShape(w);
  const flipOk = e.convForms === "flip" || (e.convForms === "direct" && cg >= FLIP_MIN_CHANNELS);
  if (s[0] === 1 && s[1] === 1 && flipOk) {
    const flipped = convGradInputFlipped(e, w, dy, e.g.staticShape(w), group, d, pads);
    if (flipped) return flipped;
  }
  // The same kernel [M, C/group, kh, kw] read as a ConvTranspose kernel maps M channels back to C, per group.
  return e.op("ConvTranspose", [dy, w], {
    ...(group > 1 ? { group: attr.int(group) } : {}),
    strides: attr.ints(s),
    dilations: attr.ints(d),
    pads: attr.ints(pads),
    output_padding: attr.ints(outPad),
  });
}

/** Per-output-position divisor of an AveragePool (count_include_pad = 0 excludes padding at the edges). */
function avgPoolCounts(inH: number, inW: number, outH: number, outW: number, k: number[], s: number[], pads: number[], includePad: boolean): Float32Array {
  const c = new Float32Array(outH * outW);
  for (let oy = 0; oy < outH; oy++)
    for (let ox = 0; ox < outW; ox++) {
      const y0 = oy * s[0] - pads[0];
      const x0 = ox * s[1] - pads[1];
      if (includePad) {
        const y1 = Math.min(y0 + k[0], inH + pads[2]);
        const x1 = Math.min(x0 + k[1], inW + pads[3]);
        c[oy * outW + ox] = (y1 - y0) * (x1 - x0);
      } else {
        const hh = Math.min(y0 + k[0], inH) - Math.max(y0, 0);
        const ww = Math.min(x0 + k[1], inW) - Math.max(x0, 0);
        c[oy * outW + ox] = hh * ww;
      }
    }
  return c;
}

/** kernel_shape of a MaxPool whose windows tile its input (kernel = stride, no padding/dilation/ceil), else null. */
function tilingPool(n: Node): [number, number] | null {
  const k = intsAttr(n, "kernel_shape");
  if (!k || k.length !== 2) return null;
  if ((intsAttr(n, "strides") ?? [1, 1]).join() !== k.join()) return null;
  if ((intsAttr(n, "pads") ?? []).some((p) => p !== 0) || (intsAttr(n, "dilations") ?? []).some((d) => d !== 1)) return null;
  const autoPad = n.attrs.auto_pad?.kind === "string" ? n.attrs.auto_pad.value : "NOTSET";
  if ((autoPad !== "NOTSET" && autoPad !== "VALID") || intAttr(n, "ceil_mode", 0) !== 0) return null;
  return [k[0], k[1]];
}

/**
 * Gradient of a MaxPool whose windows tile the input, from elementwise ops (onnxruntime runs them on all
 * cores; the general rule's ScatterElements is single-threaded): dy, upsampled, goes to the elements equal to
 * their window's max, split evenly between exact ties. Rows/columns the pool never read get 0.
 */
function tilingMaxPoolGrad(e: Emitter, n: Node, [kh, kw]: [number, number], dy: string): string {
  const g = e.g;
  const x = n.inputs[0];
  const y = n.outputs[0];
  const [batch, c, hIn, wIn] = e.shape(x);
  const [, , h, w] = e.shape(y) as number[];
  const [hc, wc] = [h * kh, w * kw];
  const scales = g.constant(tensor("float32", [4], Float32Array.of(1, 1, kh, kw)), "pool_scales");
  const up = (v: string) =>
    g.add("Resize", [v, "", scales], {
      mode: attr.string("nearest"),
      coordinate_transformation_mode: attr.string("asymmetric"),
      nearest_mode: attr.string("floor"),
    }, { infer: [{ dtype: "float32", shape: [batch, c, hc, wc] }] })[0];
  const covered = hc === hIn && wc === wIn;
  const xc = covered ? x : e.op("Slice", [x, g.ints([0, 0]), g.ints([hc, wc]), g.ints([2, 3])]);
  const hit = e.op("Cast", [e.op("Equal", [xc, up(y)])], { to: attr.int(1) });
  // Ties per window (≥ 1): the window mean of the 0/1 hits times its size.
  const ties = e.op("Mul", [e.op("AveragePool", [hit], { kernel_shape: attr.ints([kh, kw]), strides: attr.ints([kh, kw]) }), g.scalar(kh * kw)]);
  const dx = e.op("Mul", [up(e.op("Div", [dy, ties])), hit]);
  if (covered) return dx;
  return e.op("Pad", [dx, g.ints([0, 0, 0, 0, 0, 0, (hIn as number) - hc, (wIn as number) - wc])], { mode: attr.string("constant") });
}

/** General MaxPool gradient: the forward node gets an Indices output (flat index into N·C·H·W) and dy is scattered there. */
function scatterMaxPoolGrad(e: Emitter, n: Node, dy: string): string {
  if (n.outputs.length < 2 || n.outputs[1] === "") {
    const idx = e.g.fresh(`${n.outputs[0]}_argmax`);
    n.outputs[1] = idx;
    e.g.values.set(idx, { name: idx, dtype: "int64", shape: [...e.shape(n.outputs[0])] });
  }
  const x = n.inputs[0];
  const flatDy = e.op("Reshape", [dy, e.g.ints([-1])]);
  const flatIdx = e.op("Reshape", [n.outputs[1], e.g.ints([-1])]);
  const zeros = e.g.add("ConstantOfShape", [e.op("Shape", [x])], { value: attr.tensor(tensor("float32", [1], new Float32Array(1))) }, {
    infer: [{ dtype: "float32", shape: [...e.shape(x)] }],
  })[0];
  const flatZeros = e.op("Reshape", [zeros, e.g.ints([-1])]);
  const scattered = e.op("ScatterElements", [flatZeros, flatIdx, flatDy], { axis: attr.int(0), reduction: attr.string("add") });
  return e.reshapeLike(scattered, x);
}

const RULES: Record<string, Rule> = {
  Identity: unary((_e, _x, _y, dy) => dy),
  Dropout: (_e, n, [dy], needs) => onlyFirst(n, needs, () => dy),
  Relu: unary((e, _x, y, dy) => e.op("Where", [e.op("Greater", [y, e.zero()]), dy, e.zero()])),
  Sigmoid: unary((e, _x, y, dy) => e.op("Mul", [dy, e.op("Mul", [y, e.op("Sub", [e.one(), y])])])),
  Tanh: unary((e, _x, y, dy) => e.op("Mul", [dy, e.op("Sub", [e.one(), e.op("Mul", [y, y])])])),
  Exp: unary((e, _x, y, dy) => e.op("Mul", [dy, y])),
  Log: unary((e, x, _y, dy) => e.op("Div", [dy, x])),
  Neg: unary((e, _x, _y, dy) => e.op("Neg", [dy])),
  Abs: unary((e, x, _y, dy) => e.op("Mul", [dy, e.op("Sign", [x])])),
  Sqrt: unary((e, _x, y, dy) => e.op("Div", [dy, e.op("Add", [y, y])])),
  Reciprocal: unary((e, _x, y, dy) => e.op("Neg", [e.op("Mul", [dy, e.op("Mul", [y, y])])])),
  Softmax: (e, n, [dy], needs) => onlyFirst(n, needs, () => {
    const y = n.outputs[0];
    const s = e.op("ReduceSum", [e.op("Mul", [dy, y]), e.g.ints([intAttr(n, "axis", -1)])], { keepdims: attr.int(1) });
    return e.op("Mul", [y, e.op("Sub", [dy, s])]);
  }),
  LogSoftmax: (e, n, [dy], needs) => onlyFirst(n, needs, () => {
    const y = n.outputs[0];
    const s = e.op("ReduceSum", [dy, e.g.ints([intAttr(n, "axis", -1)])], { keepdims: attr.int(1) });
    return e.op("Sub", [dy, e.op("Mul", [e.op("Exp", [y]), s])]);
  }),
  Add: (e, n, [dy], needs) => n.inputs.map((x, i) => (needs[i] ? e.sumTo(dy, x) : null)),
  Sum: (e, n, [dy], needs) => n.inputs.map((x, i) => (needs[i] ? e.sumTo(dy, x) : null)),
  Sub: (e, n, [dy], needs) => [
    needs[0] ? e.sumTo(dy, n.inputs[0]) : null,
    needs[1] ? e.sumTo(e.op("Neg", [dy]), n.inputs[1]) : null,
  ],
  Mul: (e, n, [dy], needs) => {
    const [a, b] = n.inputs;
    return [needs[0] ? e.sumTo(e.op("Mul", [dy, b]), a) : null, needs[1] ? e.sumTo(e.op("Mul", [dy, a]), b) : null];
  },
  Div: (e, n, [dy], needs) => {
    const [a, b] = n.inputs;
    const da = needs[0] ? e.sumTo(e.op("Div", [dy, b]), a) : null;
    const db = needs[1] ? e.sumTo(e.op("Neg", [e.op("Div", [e.op("Mul", [dy, n.outputs[0]]), b])]), b) : null;
    return [da, db];
  },
  Pow: (e, n, [dy], needs) => {
    if (needs[1]) throw new GraphError("Pow: gradient with respect to the exponent is not supported");
    const [x, p] = n.inputs;
    const local = e.op("Mul", [p, e.op("Pow", [x, e.op("Sub", [p, e.one()])])]);
    return [e.sumTo(e.op("Mul", [dy, local]), x), null];
  },
  Where: (e, n, [dy], needs) => {
    const [c, a, b] = n.inputs;
    return [
      null,
      needs[1] ? e.sumTo(e.op("Where", [c, dy, e.zero()]), a) : null,
      needs[2] ? e.sumTo(e.op("Where", [c, e.zero(), dy]), b) : null,
    ];
  },
  // x passes through exactly where it lies within the bounds (inclusive), i.e. where the output equals it:
  // one comparison instead of two and an And (ReLU6 runs after every conv of a MobileNet).
  Clip: (e, n, [dy], needs) => onlyFirst(n, needs, () => (n.inputs[1] || n.inputs[2] ? e.op("Where", [e.op("Equal", [n.inputs[0], n.outputs[0]]), dy, e.zero()]) : dy)),
  Cast: (_e, n, [dy], needs) => onlyFirst(n, needs, () => dy),
  MatMul: (e, n, [dy], needs) => {
    const [x, w] = n.inputs;
    const xr = e.shape(x).length;
    const dx = needs[0] ? e.op("Gemm", [dy, w], { transB: attr.int(1) }) : null;
    let dw: string | null = null;
    if (needs[1]) {
      if (xr !== 2) throw new GraphError("MatMul weight gradient needs a 2-D input");
      dw = e.op("Gemm", [x, dy], { transA: attr.int(1) });
    }
    return [dx, dw];
  },
  Gemm: (e, n, [dy], needs) => {
    const [a, b, c] = n.inputs;
    const alpha = floatAttr(n, "alpha", 1);
    const beta = floatAttr(n, "beta", 1);
    const tA = intAttr(n, "transA", 0);
    const tB = intAttr(n, "transB", 0);
    const al = { alpha: attr.float(alpha) };
    const da = !needs[0] ? null
      : tA === 0 ? e.op("Gemm", [dy, b], { ...al, transB: attr.int(tB ? 0 : 1) })
      : e.op("Gemm", [b, dy], { ...al, transA: attr.int(tB), transB: attr.int(1) });
    const db = !needs[1] ? null
      : tB === 0 ? e.op("Gemm", [a, dy], { ...al, transA: attr.int(tA ? 0 : 1) })
      : e.op("Gemm", [dy, a], { ...al, transA: attr.int(1), transB: attr.int(tA) });
    const dc = c && needs[2] ? e.sumTo(beta === 1 ? dy : e.op("Mul", [dy, e.g.scalar(beta)]), c) : null;
    return [da, db, dc].slice(0, n.inputs.length);
  },
  Conv: (e, n, [dy], needs) => {
    const [x, w, b] = n.inputs;
    return [
      needs[0] ? convGradInput(e, n, x, w, dy) : null,
      needs[1] ? convGradWeight(e, n, x, w, dy) : null,
      b && needs[2] ? e.op("ReduceSum", [dy, e.g.ints([0, 2, 3])], { keepdims: attr.int(0) }) : null,
    ].slice(0, n.inputs.length);
  },
  MaxPool: (e, n, [dy], needs) => onlyFirst(n, needs, () => (tilingPool(n) ? tilingMaxPoolGrad(e, n, tilingPool(n)!, dy) : scatterMaxPoolGrad(e, n, dy))),
  AveragePool: (e, n, [dy], needs) => onlyFirst(n, needs, () => {
    const x = n.inputs[0];
    const k = intsAttr(n, "kernel_shape")!;
    const s = intsAttr(n, "strides") ?? [1, 1];
    const pads = intsAttr(n, "pads") ?? [0, 0, 0, 0];
    if (intAttr(n, "ceil_mode", 0) !== 0) throw new GraphError("AveragePool gradient: ceil_mode is not supported");
    const xs = e.shape(x);
    const ys = e.shape(dy);
    const [h, w] = [xs[2], xs[3]] as number[];
    const [oh, ow] = [ys[2], ys[3]] as number[];
    const counts = avgPoolCounts(h, w, oh, ow, k, s, pads, intAttr(n, "count_include_pad", 0) === 1);
    const scaled = e.op("Div", [dy, e.g.constant(tensor("float32", [1, 1, oh, ow], counts))]);
    // Spread each output's share over its window: a transposed conv with a ones kernel, per channel.
    const flat = e.op("Reshape", [scaled, e.g.ints([-1, 1, oh, ow])]);
    const ones = e.g.constant(tensor("float32", [1, 1, k[0], k[1]], new Float32Array(k[0] * k[1]).fill(1)));
    const outPad = [0, 1].map((i) => [h, w][i] - (s[i] * ([oh, ow][i] - 1) + k[i] - pads[i] - pads[2 + i]));
    const spread = e.op("ConvTranspose", [flat, ones], { strides: attr.ints(s), pads: attr.ints(pads), output_padding: attr.ints(outPad) });
    return e.reshapeLike(spread, x);
  }),
  GlobalAveragePool: unary((e, x, _y, dy) => {
    const sp = e.shape(x).slice(2) as number[];
    const count = sp.reduce((p, q) => p * q, 1);
    const spread = e.g.constant(tensor("float32", [1, 1, ...sp], new Float32Array(count).fill(1 / count)));
    return e.op("Mul", [dy, spread]);
  }),
  Flatten: unary((e, x, _y, dy) => e.reshapeLike(dy, x)),
  Reshape: unary((e, x, _y, dy) => e.reshapeLike(dy, x)),
  Squeeze: unary((e, x, _y, dy) => e.reshapeLike(dy, x)),
  Unsqueeze: unary((e, x, _y, dy) => e.reshapeLike(dy, x)),
  Expand: unary((e, x, _y, dy) => e.sumTo(dy, x)),
  Transpose: (e, n, [dy], needs) => onlyFirst(n, needs, () => {
    const perm = intsAttr(n, "perm") ?? e.shape(n.inputs[0]).map((_, i, a) => a.length - 1 - i);
    const inv = perm.map((_, i) => perm.indexOf(i));
    return e.op("Transpose", [dy], { perm: attr.ints(inv) });
  }),
  Concat: (e, n, [dy], needs) => {
    const rank = e.shape(n.inputs[0]).length;
    let axis = intAttr(n, "axis", 0);
    if (axis < 0) axis += rank;
    let start = 0;
    return n.inputs.map((x, i) => {
      const len = e.shape(x)[axis];
      if (typeof len !== "number") throw new GraphError("Concat gradient needs a static size on the concat axis");
      const r = needs[i] ? e.op("Slice", [dy, e.g.ints([start]), e.g.ints([start + len]), e.g.ints([axis])]) : null;
      start += len;
      return r;
    });
  },
  Pad: (e, n, [dy], needs) => onlyFirst(n, needs, () => {
    const x = n.inputs[0];
    const pads = e.g.initializers.get(n.inputs[1]);
    if (!pads) throw new GraphError("Pad gradient needs constant pads");
    const mode = n.attrs.mode?.kind === "string" ? n.attrs.mode.value : "constant";
    if (mode !== "constant") throw new GraphError(`Pad gradient: mode ${mode} is not supported`);
    const p = Array.from(pads.data as BigInt64Array, Number);
    const xs = e.shape(x);
    const r = xs.length;
    const axes: number[] = [], starts: number[] = [], ends: number[] = [];
    xs.forEach((d, i) => {
      if (p[i] === 0 && p[r + i] === 0) return;
      if (typeof d !== "number") throw new GraphError("Pad gradient: padding a symbolic axis");
      axes.push(i);
      starts.push(p[i]);
      ends.push(p[i] + d);
    });
    return axes.length ? e.op("Slice", [dy, e.g.ints(starts), e.g.ints(ends), e.g.ints(axes)]) : dy;
  }),
  Slice: (e, n, [dy], needs) => onlyFirst(n, needs, () => {
    const x = n.inputs[0];
    const xs = e.shape(x);
    const ys = e.shape(dy);
    const get = (k: number) => (n.inputs[k] ? Array.from(e.g.initializers.get(n.inputs[k])!.data as BigInt64Array, Number) : undefined);
    if ((get(4) ?? []).some((st) => st !== 1)) throw new GraphError("Slice gradient: only step 1 is supported");
    const starts = get(1)!;
    const axes = get(3) ?? starts.map((_, i) => i);
    const pads = new Array(xs.length * 2).fill(0);
    axes.forEach((a0, i) => {
      const a = a0 < 0 ? a0 + xs.length : a0;
      const d = xs[a];
      if (typeof d !== "number") return;
      const st = Math.min(Math.max(starts[i] < 0 ? starts[i] + d : starts[i], 0), d);
      pads[a] = st;
      pads[xs.length + a] = d - st - (ys[a] as number);
    });
    return e.op("Pad", [dy, e.g.ints(pads)], { mode: attr.string("constant") });
  }),
  BatchNormalization: (e, n, [dy], needs) => {
    if (intAttr(n, "training_mode", 0) === 1) return batchStatisticsGrad(e, n, dy, needs);
    // Inference mode: y = scale·(x − mean)·invStd + bias with the running statistics as fixed inputs, so
    // every input has a plain elementwise gradient (the statistics' ones matter to nobody who trains with
    // frozen statistics, but a caller asking for them gets the true value, not an error).
    const [x, scale, , mean, variance] = n.inputs;
    const eps = floatAttr(n, "epsilon", 1e-5);
    const rank = e.shape(x).length;
    const bshape = [1, -1, ...new Array(rank - 2).fill(1)];
    const view = (v: string) => e.op("Reshape", [v, e.g.ints(bshape)]);
    const invStd = e.op("Reciprocal", [e.op("Sqrt", [e.op("Add", [variance, e.g.scalar(eps)])])]);
    const reduceAxes = [0, ...Array.from({ length: rank - 2 }, (_, i) => i + 2)];
    const sum = (v: string) => e.op("ReduceSum", [v, e.g.ints(reduceAxes)], { keepdims: attr.int(0) });
    const gain = e.op("Mul", [scale, invStd]);
    const dx = needs[0] ? e.op("Mul", [dy, view(gain)]) : null;
    const centred = needs[1] || needs[4] ? e.op("Sub", [x, view(mean)]) : "";
    const dscale = needs[1] ? sum(e.op("Mul", [dy, e.op("Mul", [centred, view(invStd)])])) : null;
    const dbias = needs[2] ? sum(dy) : null;
    const dmean = needs[3] ? e.op("Neg", [e.op("Mul", [sum(dy), gain])]) : null;
    // d invStd / d var = −invStd³ / 2.
    const dvar = needs[4]
      ? e.op("Mul", [sum(e.op("Mul", [dy, centred])), e.op("Mul", [gain, e.op("Mul", [e.op("Mul", [invStd, invStd]), e.g.scalar(-0.5)])])])
      : null;
    return [dx, dscale, dbias, dmean, dvar];
  },
  ReduceSum: (e, n, [dy], needs) => onlyFirst(n, needs, () => reduceGrad(e, n, dy, false)),
  ReduceMean: (e, n, [dy], needs) => onlyFirst(n, needs, () => reduceGrad(e, n, dy, true)),
};

/**
 * Training-mode BatchNormalization (graph/batch-norm.ts): y = γ·x̂ + β, x̂ = (x − μ)·invStd with μ and σ² the
 * batch's per-channel mean and biased variance, read from the node's 2nd and 3rd outputs (momentum 0 makes them
 * exactly that). With M values per channel, s1 = Σ dy and s2 = Σ dy·x̂:
 *   dx = γ·invStd·(dy − s1/M − x̂·s2/M),  dγ = s2,  dβ = s1
 * (the statistics' own dependence on x included). Centred values, not Σ dy·x − μ·Σ dy, for float32 accuracy.
 */
function batchStatisticsGrad(e: Emitter, n: Node, dy: string, needs: boolean[]): Grads {
  if (n.outputs.length < 3 || !n.outputs[1] || !n.outputs[2]) throw new GraphError(`BatchNormalization (node ${n.name}): training mode needs its batch mean and variance outputs for the gradient`);
  if (floatAttr(n, "momentum", 0.9) !== 0) throw new GraphError(`BatchNormalization (node ${n.name}): training-mode gradients need momentum 0 (its outputs are then the batch's statistics)`);
  const [x, scale] = n.inputs;
  const [, mean, variance] = n.outputs;
  const eps = floatAttr(n, "epsilon", 1e-5);
  const rank = e.shape(x).length;
  const view = (v: string) => e.op("Reshape", [v, e.g.ints([1, -1, ...new Array(rank - 2).fill(1)])]);
  const sum = (v: string) => e.op("ReduceSum", [v, e.g.ints([0, ...Array.from({ length: rank - 2 }, (_, i) => i + 2)])], { keepdims: attr.int(0) });
  const invStd = e.op("Reciprocal", [e.op("Sqrt", [e.op("Add", [variance, e.g.scalar(eps)])])]);
  const centred = e.op("Sub", [x, view(mean)]);
  const s1 = sum(dy);
  const s2 = e.op("Mul", [sum(e.op("Mul", [dy, centred])), invStd]);
  let dx: string | null = null;
  if (needs[0]) {
    // M = Size(x) / C, known only at run time when the batch is symbolic.
    const count = e.op("Div", [e.op("Cast", [e.op("Size", [x])], { to: attr.int(1) }), e.op("Cast", [e.op("Size", [mean])], { to: attr.int(1) })]);
    const gain = e.op("Mul", [scale, invStd]);
    const k1 = e.op("Div", [e.op("Mul", [gain, s1]), count]); // gain·s1/M
    const k2 = e.op("Div", [e.op("Mul", [e.op("Mul", [gain, invStd]), s2]), count]); // gain·invStd·s2/M
    dx = e.op("Sub", [e.op("Sub", [e.op("Mul", [dy, view(gain)]), e.op("Mul", [centred, view(k2)])]), view(k1)]);
  }
  // y does not depend on the running statistics it is given in training mode: their gradient is exactly zero.
  const zeroLike = (v: string) => e.op("Mul", [v, e.zero()]);
  return [dx, needs[1] ? s2 : null, needs[2] ? s1 : null, needs[3] ? zeroLike(n.inputs[3]) : null, needs[4] ? zeroLike(n.inputs[4]) : null];
}

function reduceGrad(e: Emitter, n: Node, dy: string, mean: boolean): string {
  const x = n.inputs[0];
  const xs = e.shape(x);
  let axes: number[];
  if (n.op === "ReduceSum") {
    axes = n.inputs[1] ? Array.from(e.g.initializers.get(n.inputs[1])!.data as BigInt64Array, Number) : xs.map((_, i) => i);
  } else axes = intsAttr(n, "axes") ?? xs.map((_, i) => i);
  axes = axes.map((a) => (a < 0 ? a + xs.length : a));
  let g = dy;
  if (intAttr(n, "keepdims", 1) === 0) g = e.op("Unsqueeze", [dy, e.g.ints(axes)]);
  if (mean) {
    const sizes = axes.map((a) => xs[a]);
    // Over a symbolic axis (the batch: BatchNormalization with batch statistics) the count is known only at
    // run time: Size(x) / Size(y).
    const count = sizes.every((q) => typeof q === "number")
      ? e.g.scalar((sizes as number[]).reduce((p, q) => p * q, 1))
      : e.op("Div", [e.op("Cast", [e.op("Size", [x])], { to: attr.int(1) }), e.op("Cast", [e.op("Size", [n.outputs[0]])], { to: attr.int(1) })]);
    g = e.op("Div", [g, count]);
  }
  // Broadcast back to x's shape: Expand to Shape(x), the shape stated explicitly.
  return e.g.add("Expand", [g, e.op("Shape", [x])], {}, { infer: [{ dtype: e.g.info(x).dtype, shape: [...xs] }] })[0];
}

/**
 * How Conv gradients are emitted (same values; benchmarks compare them in one run):
 * - "plain": weight gradient as one batch-transposed Conv, input gradient as ConvTranspose;
 * - "fast": ungrouped weight gradients as per-tap Gemms, input gradients as ConvTranspose;
 * - "flip": as "fast", and stride-1 input gradients as a Conv with the flipped kernel (onnxruntime's
 *   CPU ConvTranspose is the slower kernel: on a quiet machine the input-gradient graph of full-width
 *   PreAct-ResNet18 ran 1.37× faster this way; docs/pytorch-speed.md);
 * - "direct" (default): input gradients as "flip" where they have ≥ FLIP_MIN_CHANNELS channels per group, else
 *   ConvTranspose; weight gradients as "fast" but with dy laid out channel-major ([M, N·oh·ow]) once, so each tap's Gemm reads
 *   it as it is (with [N·oh·ow, M] and transA every tap's Gemm transposed it again): the weight gradient of one
 *   3×3 conv at PreAct-ResNet18's four stage shapes (batch 64) ran 1.14–1.51× faster than flip's, alternating in
 *   one run. Two other forms lost and were removed: all taps side by side in one Gemm (im2col; the channels-last
 *   Concat cost more than the Gemm saved, 0.61–0.65×) and one Gemm over shifted copies of dy (0.46–1.19×).
 */
export type ConvGradForms = "fast" | "plain" | "flip" | "direct";

export interface BackwardOptions {
  convForms?: ConvGradForms;
  /** Gradient of the loss to start from (vector-Jacobian product); default: ones for a scalar loss. */
  seed?: string;
  /**
   * A value in `wrt` that the loss does not reach (no differentiable path) is an error: usually a wiring bug.
   * With this set it gets a zero gradient instead.
   */
  allowUnreached?: boolean;
}

/** The rule's result has one entry per input, and every needed input got a gradient of its own shape. */
function checkRuleResult(g: Graph, n: Node, grads: Grads, needs: boolean[]): void {
  const where = `gradient rule for ${n.op} (node ${n.name})`;
  if (grads.length !== n.inputs.length) throw new GraphError(`${where} returned ${grads.length} gradients for ${n.inputs.length} inputs`);
  grads.forEach((gr, k) => {
    if (!needs[k]) return;
    if (!gr) throw new GraphError(`${where} returned no gradient for input ${k} ("${n.inputs[k]}")`);
    const want = g.shape(n.inputs[k]);
    const got = g.shape(gr);
    const clash = got.length !== want.length || got.some((d, i) => typeof d === "number" && typeof want[i] === "number" && d !== want[i]);
    if (clash) throw new GraphError(`${where}: gradient for input ${k} ("${n.inputs[k]}") has shape [${got}], the input [${want}]`);
  });
}

/**
 * Appends to `g` the nodes computing d(loss)/d(v) for each v in `wrt` (graph inputs, initializers or
 * intermediate values). Returns v → name of its gradient. A v the loss does not reach is an error unless
 * `opts.allowUnreached` (then its gradient is a zero constant).
 */
export function backward(g: Graph, loss: string, wrt: string[], opts: BackwardOptions = {}): Map<string, string> {
  const e = new Emitter(g, opts.convForms);
  const forward = [...g.nodes];
  // Values that depend on some wrt value...
  const dependsOnWrt = new Set(wrt);
  for (const n of forward) if (n.inputs.some((i) => dependsOnWrt.has(i))) n.outputs.forEach((o) => dependsOnWrt.add(o));
  // ...and that the loss depends on.
  const reachesLoss = new Set([loss]);
  for (let i = forward.length - 1; i >= 0; i--) {
    const n = forward[i];
    if (n.outputs.some((o) => reachesLoss.has(o))) n.inputs.forEach((x) => x && reachesLoss.add(x));
  }
  const active = (v: string) => dependsOnWrt.has(v) && reachesLoss.has(v) && FLOAT.has(g.info(v).dtype);
  for (const v of wrt) if (!FLOAT.has(g.info(v).dtype)) throw new GraphError(`cannot differentiate with respect to "${v}": it is ${g.info(v).dtype}, not a float`);

  const contributions = new Map<string, string[]>();
  const push = (v: string, grad: string) => (contributions.get(v) ?? contributions.set(v, []).get(v)!).push(grad);
  const total = (v: string): string | undefined => {
    const cs = contributions.get(v);
    if (!cs?.length) return undefined;
    if (cs.length > 1) contributions.set(v, [e.op("Sum", cs)]);
    return contributions.get(v)![0];
  };

  let seed = opts.seed;
  if (!seed) {
    const ls = g.shape(loss);
    if (!isStatic(ls) || ls.reduce((p, q) => p * q, 1) !== 1) throw new GraphError(`loss "${loss}" must be a scalar, has shape [${ls}]`);
    seed = g.constant(tensor("float32", [...ls], Float32Array.of(1)), "seed");
  }
  push(loss, seed);

  for (let i = forward.length - 1; i >= 0; i--) {
    const n = forward[i];
    const needs = n.inputs.map((x) => x !== "" && active(x));
    if (!needs.some(Boolean)) continue;
    const dys = n.outputs.map((o) => (o ? total(o) : undefined));
    // Every rule differentiates its first output only: a gradient reaching another output (training-mode
    // BatchNormalization's batch statistics, say) would otherwise be dropped without a word.
    const other = dys.findIndex((d, k) => k > 0 && d !== undefined);
    if (other > 0) throw new GraphError(`no gradient rule for output ${other} ("${n.outputs[other]}") of ${n.op} (node ${n.name}): only its first output is differentiable`);
    if (dys[0] === undefined) continue;
    const rule = RULES[n.op];
    if (!rule) throw new GraphError(`no gradient rule for op ${n.op} (node ${n.name})`);
    const grads = rule(e, n, dys as string[], needs);
    checkRuleResult(g, n, grads, needs);
    grads.forEach((gr, k) => {
      if (gr && needs[k]) push(n.inputs[k], gr);
    });
  }

  const out = new Map<string, string>();
  for (const v of wrt) {
    const gr = total(v);
    if (gr) out.set(v, gr);
    else if (!opts.allowUnreached) {
      throw new GraphError(`the loss "${loss}" does not depend on "${v}" (through differentiable ops); pass allowUnreached to get a zero gradient`);
    } else {
      const s = g.shape(v);
      out.set(v, g.constant(tensor("float32", s.map((d) => (typeof d === "number" ? d : 1)), new Float32Array(s.reduce((p: number, q) => p * (typeof q === "number" ? q : 1), 1))), "zero_grad"));
    }
  }
  return out;
}
