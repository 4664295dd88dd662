// The project's graph IR: a list of ONNX-op nodes over named values, with static shapes
// (a string dim is symbolic, e.g. the batch "N"). Everything numeric is compiled from this.
import { inferShapes, type OutInfo } from "./shapes.js";

export * from "./tensor.js";
import { GraphError, isStatic, i64, tensor, type Attrs, type DType, type Dim, type Node, type TensorData, type ValueInfo } from "./tensor.js";

export class Graph {
  name: string;
  inputs: ValueInfo[] = [];
  outputs: ValueInfo[] = [];
  initializers = new Map<string, TensorData>();
  nodes: Node[] = [];
  /** Shape and type of every value: inputs, initializers and node outputs. */
  values = new Map<string, ValueInfo>();
  private counter = 0;

  constructor(name = "graph") {
    this.name = name;
  }

  /** A fresh value name with the given prefix. */
  fresh(prefix: string): string {
    let name: string;
    do name = `${prefix}_${this.counter++}`;
    while (this.values.has(name));
    return name;
  }

  has(name: string): boolean {
    return this.values.has(name);
  }

  info(name: string): ValueInfo {
    const v = this.values.get(name);
    if (!v) throw new GraphError(`graph "${this.name}" has no value "${name}"`);
    return v;
  }

  shape(name: string): Dim[] {
    return this.info(name).shape;
  }

  staticShape(name: string): number[] {
    const s = this.shape(name);
    if (!isStatic(s)) throw new GraphError(`value "${name}" has symbolic shape [${s}]`);
    return s;
  }

  addInput(name: string, dtype: DType, shape: Dim[]): string {
    if (this.values.has(name)) throw new GraphError(`value "${name}" already exists`);
    const v = { name, dtype, shape: [...shape] };
    this.inputs.push(v);
    this.values.set(name, v);
    return name;
  }

  addInitializer(name: string, t: TensorData): string {
    if (this.values.has(name) && !this.initializers.has(name)) {
      throw new GraphError(`value "${name}" already exists`);
    }
    this.initializers.set(name, t);
    this.values.set(name, { name, dtype: t.dtype, shape: [...t.shape] });
    return name;
  }

  /** A constant as an initializer with a fresh name. */
  constant(t: TensorData, prefix = "const"): string {
    return this.addInitializer(this.fresh(prefix), t);
  }

  scalar(value: number, dtype: DType = "float32"): string {
    const data = dtype === "int64" ? BigInt64Array.of(BigInt(value)) : dtype === "float64" ? Float64Array.of(value) : Float32Array.of(value);
    return this.constant(tensor(dtype, [], data), "scalar");
  }

  ints(values: number[]): string {
    return this.constant(i64([values.length], values), "ints");
  }

  /** Appends a node; infers and records its outputs' shapes. Returns the output names. */
  add(
    op: string,
    inputs: string[],
    attrs: Attrs = {},
    opts: { outputs?: string[] | number; name?: string; infer?: OutInfo[] } = {},
  ): string[] {
    for (const i of inputs) if (i !== "" && !this.values.has(i)) throw new GraphError(`${op}: unknown input "${i}"`);
    const outs =
      Array.isArray(opts.outputs) ? opts.outputs
      : Array.from({ length: opts.outputs ?? 1 }, () => this.fresh(op.toLowerCase()));
    for (const o of outs) if (o !== "" && this.values.has(o)) throw new GraphError(`${op}: output "${o}" already exists`);
    const node: Node = { op, name: opts.name ?? this.fresh(`n_${op}`), inputs, outputs: outs, attrs };
    // `infer` lets a caller state output shapes that depend on run-time values (Reshape to Shape(x)).
    const infos = opts.infer ?? inferShapes(this, node);
    infos.forEach((info, k) => {
      if (outs[k] !== "") this.values.set(outs[k], { name: outs[k], ...info });
    });
    this.nodes.push(node);
    return outs;
  }

  /** Single-output shorthand of add(). */
  op(op: string, inputs: string[], attrs: Attrs = {}, name?: string): string {
    return this.add(op, inputs, attrs, name ? { outputs: [name] } : {})[0];
  }

  setOutputs(names: string[]): void {
    this.outputs = names.map((n) => ({ ...this.info(n) }));
  }

  /** Map of value name → the nodes that read it. */
  consumers(): Map<string, Node[]> {
    const m = new Map<string, Node[]>();
    for (const n of this.nodes) for (const i of n.inputs) if (i) (m.get(i) ?? m.set(i, []).get(i)!).push(n);
    return m;
  }

  producer(name: string): Node | undefined {
    return this.nodes.find((n) => n.outputs.includes(name));
  }

  /** A deep-enough copy: node/value lists are new, tensor data is shared (treated as immutable). */
  clone(name = this.name): Graph {
    const g = new Graph(name);
    g.inputs = this.inputs.map((v) => ({ ...v, shape: [...v.shape] }));
    g.outputs = this.outputs.map((v) => ({ ...v, shape: [...v.shape] }));
    g.initializers = new Map(this.initializers);
    g.nodes = this.nodes.map((n) => ({ ...n, inputs: [...n.inputs], outputs: [...n.outputs], attrs: { ...n.attrs } }));
    g.values = new Map([...this.values].map(([k, v]) => [k, { ...v, shape: [...v.shape] }]));
    g.counter = this.counter;
    return g;
  }

  /** Drops nodes, initializers and inputs that no output depends on (inputs listed in keepInputs stay). */
  prune(keepInputs: string[] = []): void {
    const live = new Set(this.outputs.map((o) => o.name));
    const kept: Node[] = [];
    for (let i = this.nodes.length - 1; i >= 0; i--) {
      const n = this.nodes[i];
      if (n.outputs.some((o) => live.has(o))) {
        kept.push(n);
        for (const x of n.inputs) if (x) live.add(x);
      }
    }
    this.nodes = kept.reverse();
    for (const k of [...this.initializers.keys()]) if (!live.has(k)) this.initializers.delete(k);
    this.inputs = this.inputs.filter((v) => live.has(v.name) || keepInputs.includes(v.name));
    const produced = new Set<string>([...this.inputs.map((v) => v.name), ...this.initializers.keys()]);
    for (const n of this.nodes) for (const o of n.outputs) produced.add(o);
    for (const k of [...this.values.keys()]) if (!produced.has(k)) this.values.delete(k);
  }

  /** Turns an initializer into a graph input of the same name (for trainable parameters fed per step). */
  liftInitializer(name: string): TensorData {
    const t = this.initializers.get(name);
    if (!t) throw new GraphError(`no initializer "${name}"`);
    this.initializers.delete(name);
    this.inputs.push({ name, dtype: t.dtype, shape: [...t.shape] });
    return t;
  }

  /** Re-points every reader of `from` (except nodes in `except`) to `to`. */
  replaceUses(from: string, to: string, except: Set<Node> = new Set()): void {
    for (const n of this.nodes) {
      if (except.has(n)) continue;
      n.inputs = n.inputs.map((i) => (i === from ? to : i));
    }
    this.outputs = this.outputs.map((o) => (o.name === from ? { ...this.info(to), name: to } : o));
  }

  /** Topologically sorts nodes (nodes are normally appended in order; transforms may insert). */
  toposort(): void {
    const ready = new Set<string>([...this.inputs.map((v) => v.name), ...this.initializers.keys(), ""]);
    const pending = [...this.nodes];
    const out: Node[] = [];
    while (pending.length) {
      const idx = pending.findIndex((n) => n.inputs.every((i) => ready.has(i)));
      if (idx < 0) throw new GraphError(`graph "${this.name}" has a cycle or a dangling input (${pending[0].op} ${pending[0].inputs})`);
      const [n] = pending.splice(idx, 1);
      out.push(n);
      for (const o of n.outputs) ready.add(o);
    }
    this.nodes = out;
  }
}
