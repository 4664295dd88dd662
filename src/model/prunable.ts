// Where a pruning defense may cut channels, and where it cuts by default.
//
// The rule (also in the README): the default prune point is the LAST FEATURE MAP THAT EVERY PATH FROM THE
// INPUT TO THE LOGITS GOES THROUGH, i.e. the last 4-D value before global pooling / flattening that no branch
// or skip connection bypasses. Channels are measured and pruned there.
// - Plain CNNs (DeepID, the zoo CNN): that value is the pooled ReLU output of the last conv on the trunk
//   (DeepID: conv_3 → pool_3; conv_4 sits on a side branch), so pruning zeroes that conv's kernel[c] and
//   bias[c] ("conv" kind), exactly Fine-Pruning's last-conv rule.
// - Residual networks (ResNet, PreAct-ResNet, MobileNetV2): pruning a conv inside the last block leaves the
//   skip path carrying the signal, so the cut is made after the final residual add: on the feature map that
//   reaches global pooling (in practice its pooled value, [N, C, 1, 1], which is equivalent and cheap to
//   cache). It cannot be expressed by zeroing one conv's weights, so a pruned network carries a constant
//   channel mask (a Mul node) there ("feature" kind).
// - The same holds where BatchNorm follows the last conv (VGG-BN): zeroing the conv's weights would leave BN's
//   shift in the channel, so the masked feature map is used.
// Other points can be chosen with --layer: any conv layer (its weights zeroed) or any residual sum.
import type { Graph, Node } from "../graph/ir.js";
import type { Model } from "./model.js";

/** Per-channel ops that map a zero channel to a zero channel (the walk between a conv and the prune point). */
const ZERO_PRESERVING = new Set(["Relu", "LeakyRelu", "Identity", "Tanh", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool"]);
/** Per-channel ops that do not mix channels (walked back to name the prune point after what produced it). */
const CHANNELWISE = new Set([...ZERO_PRESERVING, "BatchNormalization", "Clip", "Sigmoid", "Elu", "Selu", "Softplus", "HardSigmoid"]);
const RESIDUAL = new Set(["Add", "Sum"]);

export interface PrunableLayer {
  /** The name --layer takes: a Keras layer name, or the ONNX node name. */
  name: string;
  /** A readable name: the PyTorch module path of an export ("layer4.1"), else the layer name. */
  readable: string;
  /** "conv": the conv's kernel and bias are zeroed; "feature": the value's channels are masked. */
  kind: "conv" | "feature";
  /** What the point is: "conv", "residual sum", "last feature map". */
  role: string;
  /** The IR value whose channels are measured and pruned (for "conv": after its ReLU and pooling). */
  value: string;
  channels: number;
  isDefault: boolean;
}

/**
 * "/layer4/layer4.1/Add" → "layer4.1"; "/features/features.18/conv/conv.7/Add" → "features.18"; names that
 * are not PyTorch export paths are kept as they are.
 */
export function readableName(nodeName: string): string {
  if (!nodeName.startsWith("/")) return nodeName;
  const parts = nodeName.split("/").filter(Boolean);
  if (parts.length < 2) return nodeName.replace(/^\//, "");
  // Scope elements name a child relative to its parent ("layer4", then "layer4.1"; "conv", then "conv.7"):
  // an element whose first segment repeats the path's last one extends it instead of appending to it.
  const segs: string[] = [];
  for (const e of parts.slice(0, -1)) {
    const first = e.split(".")[0];
    if (e.includes(".") && segs[segs.length - 1] === first) segs.pop();
    segs.push(e);
  }
  return segs.join(".");
}

/** True when every path from the model's input to its logits goes through `value`. */
export function dominatesLogits(model: Model, value: string): boolean {
  if (value === model.input) return true;
  const reached = new Set([model.input]);
  for (const n of model.graph.nodes) {
    if (!n.inputs.some((i) => reached.has(i))) continue;
    for (const o of n.outputs) if (o && o !== value) reached.add(o);
  }
  return !reached.has(model.logits);
}

/**
 * The last 4-D layer output every input-to-logits path goes through, and the node that produces it. Layer
 * outputs only: layout plumbing (a Keras model's NCHW→NHWC Transpose before Flatten) is not a feature map.
 */
export function lastFeatureMap(model: Model): Node | undefined {
  const g = model.graph;
  const maps = [...model.layerOutputs.values()].filter((v) => v !== model.input && g.has(v) && g.shape(v).length === 4);
  for (let i = maps.length - 1; i >= 0; i--) if (dominatesLogits(model, maps[i])) return g.producer(maps[i]);
  return undefined;
}

/** Whether a per-channel op maps a zero channel to zero: ZERO_PRESERVING, or a Clip whose range holds 0 (ReLU6). */
function keepsZero(g: Graph, n: Node): boolean {
  if (ZERO_PRESERVING.has(n.op)) return true;
  if (n.op !== "Clip") return false;
  const bound = (i: number, dflt: number): number => {
    const t = n.inputs[i] ? g.initializers.get(n.inputs[i]) : undefined;
    return t && t.data.length === 1 ? Number(t.data[0]) : n.inputs[i] ? NaN : dflt;
  };
  return bound(1, -Infinity) <= 0 && bound(2, Infinity) >= 0;
}

/** Walks back from `n` through channel-wise ops to the node that made the channels (Conv, Add, ...). */
function origin(g: Graph, n: Node): Node {
  let cur = n;
  for (;;) {
    if (!CHANNELWISE.has(cur.op)) return cur;
    const prev = g.producer(cur.inputs[0]);
    if (!prev) return cur;
    cur = prev;
  }
}

/** Where a conv layer's channels are measured: the conv output followed through single-reader zero-preserving ops. */
export function convPrunePoint(g: Graph, conv: Node): string {
  const readers = g.consumers();
  const outs = new Set(g.outputs.map((o) => o.name));
  let value = conv.outputs[0];
  for (;;) {
    const r = readers.get(value) ?? [];
    if (r.length !== 1 || outs.has(value) || !keepsZero(g, r[0]) || r[0].inputs[0] !== value) return value;
    value = r[0].outputs[0];
  }
}

/** Conv layer names → their Conv node (walking back through the activation a Keras layer ends with). */
function convNodes(model: Model, convLayers: readonly string[]): Map<string, Node> {
  const g = model.graph;
  const m = new Map<string, Node>();
  for (const name of convLayers) {
    let node = g.producer(model.layerOutputs.get(name)!);
    while (node && node.op !== "Conv" && CHANNELWISE.has(node.op) && !node.op.includes("Pool")) node = g.producer(node.inputs[0]);
    if (node?.op === "Conv") m.set(name, node);
  }
  return m;
}

/**
 * The prunable layers of a model: its conv layers (`convLayers`, in layer order) and its residual sums, with
 * the default prune point (see the rule above) marked. The default comes first when it is not a conv layer.
 */
export function prunableLayers(model: Model, convLayers: readonly string[]): PrunableLayer[] {
  const g = model.graph;
  const last = lastFeatureMap(model);
  const convs = convNodes(model, convLayers);
  const out: PrunableLayer[] = [];
  let defaultConv: string | undefined;
  if (last) {
    for (const [name, node] of convs) if (convPrunePoint(g, node) === last.outputs[0] && !node.inputs.slice(1).some((w) => w && !model.params.some((p) => p.value === w))) defaultConv = name;
  }
  const channelsOf = (v: string): number => Number(g.shape(v)[1]);
  if (last && !defaultConv) {
    const from = origin(g, last);
    const role = RESIDUAL.has(from.op) ? "after the last residual sum" : "last feature map";
    const name = [...model.layerOutputs].find(([, v]) => v === last.outputs[0])?.[0] ?? last.name;
    out.push({ name, readable: `${readableName(from.name) || from.name} (${role})`, kind: "feature", role, value: last.outputs[0], channels: channelsOf(last.outputs[0]), isDefault: true });
  }
  for (const [name, node] of convs) {
    const value = convPrunePoint(g, node);
    out.push({ name, readable: name.startsWith("/") ? `${readableName(node.name)} (conv)` : name, kind: "conv", role: "conv", value, channels: Number(g.staticShape(node.inputs[1])[0]), isDefault: name === defaultConv });
  }
  for (const n of g.nodes) {
    if (!RESIDUAL.has(n.op) || !n.outputs[0] || g.shape(n.outputs[0]).length !== 4) continue;
    const name = [...model.layerOutputs].find(([, v]) => v === n.outputs[0])?.[0] ?? n.name;
    if (out.some((l) => l.name === name)) continue;
    out.push({ name, readable: `${readableName(n.name)} (residual sum)`, kind: "feature", role: "residual sum", value: n.outputs[0], channels: channelsOf(n.outputs[0]), isDefault: false });
  }
  return out;
}
