import { after, test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import h5wasm from "h5wasm/node";
import { UserError } from "../errors.js";
import { ARCHS, deepid, zooCnn } from "../model/archs.js";
import type { ModelSpec } from "../model/spec.js";
import { mulberry32 } from "../util/random.js";
import { readKerasModel } from "./keras-h5.js";
import { kerasModelConfig, writeKerasModel } from "./keras-save.js";
import { FIXTURES } from "../test/fixtures.js";

const FIX = FIXTURES + "/";
const CSAW = ["sunglasses", "anonymous_1", "anonymous_2", "multi_trigger_multi_target", "lab3"].map((n) =>
  join(FIX, "csaw2020/models", `${n}_bd_weights.h5`),
);
const KERAS24 = join(FIX, "thirdparty/keras24_functional_deepid.h5");

const dir = mkdtempSync(join(tmpdir(), "keras-h5-test-"));
after(() => rmSync(dir, { recursive: true, force: true }));

type Json = Record<string, unknown>;

/** Writes a full-model file with an arbitrary model_config and the given weights, the way Keras lays it out. */
async function writeRaw(name: string, modelConfig: unknown, weights: Record<string, Record<string, [number[], Float32Array]>> = {}): Promise<string> {
  await h5wasm.ready;
  const path = join(dir, name);
  const f = new h5wasm.File(path, "w");
  f.create_attribute("model_config", JSON.stringify(modelConfig), null, "A");
  f.create_attribute("keras_version", "2.2.4", null, "A");
  const mw = f.create_group("model_weights");
  mw.create_attribute("layer_names", Object.keys(weights).length ? Object.keys(weights) : ["none"], null, "A");
  for (const [layer, ws] of Object.entries(weights)) {
    const g = mw.create_group(layer);
    const names = Object.keys(ws);
    if (names.length === 0) {
      g.create_attribute("weight_names", new Float64Array(0), [0], "<d");
      continue;
    }
    g.create_attribute("weight_names", names.map((n) => `${layer}/${n}`), null, "A");
    const inner = g.create_group(layer);
    for (const [n, [shape, data]] of Object.entries(ws)) inner.create_dataset({ name: n, data, shape, dtype: "<f4" });
  }
  f.close();
  return path;
}

/** Writes a weights-only file (root layer_names, one group per layer) like model.save_weights does. */
async function writeWeightsOnly(name: string, spec: ModelSpec, edit: (layer: string, w: string, shape: number[]) => number[] | null): Promise<string> {
  await h5wasm.ready;
  const path = join(dir, name);
  const f = new h5wasm.File(path, "w");
  f.create_attribute("layer_names", spec.layers.map((l) => l.name), null, "A");
  for (const l of spec.layers) {
    const g = f.create_group(l.name);
    const ws = l.weights.flatMap((w) => {
      const shape = edit(l.name, w.name, w.shape);
      return shape ? [{ name: w.name, shape }] : [];
    });
    if (ws.length === 0) {
      g.create_attribute("weight_names", new Float64Array(0), [0], "<d");
      continue;
    }
    g.create_attribute("weight_names", ws.map((w) => `${l.name}/${w.name}`), null, "A");
    const inner = g.create_group(l.name);
    for (const w of ws)
      inner.create_dataset({ name: w.name, data: new Float32Array(w.shape.reduce((a, b) => a * b, 1)), shape: w.shape, dtype: "<f4" });
  }
  f.close();
  return path;
}

const layer = (className: string, name: string, config: Json, inbound: string[][]) => ({
  class_name: className,
  name,
  config: { name, ...config },
  inbound_nodes: inbound.map((node) => node.map((n) => [n, 0, 0, {}])),
});
const input = (shape: (number | null)[]) => layer("InputLayer", "in", { batch_input_shape: shape, dtype: "float32" }, []);
const functional = (layers: unknown[], outputs = [["d", 0, 0]]) => ({
  class_name: "Functional",
  config: { name: "m", layers, input_layers: [["in", 0, 0]], output_layers: outputs },
});
const denseWeights = (i: number, o: number): Record<string, [number[], Float32Array]> => ({
  "kernel:0": [[i, o], new Float32Array(i * o).fill(0.5)],
  "bias:0": [[o], new Float32Array(o)],
});

async function rejects(p: Promise<unknown>, re: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof UserError, `expected a UserError, got ${String(e)}`);
    assert.match(e.message, re);
    return true;
  });
}

function summary(spec: ModelSpec) {
  return spec.layers.map((l) => ({ name: l.name, cls: l.className, inbound: l.inbound, w: l.weights.map((w) => [w.name, w.shape]) }));
}

function assertSameBits(a: Float32Array, b: Float32Array, what: string): void {
  assert.equal(a.length, b.length, what);
  assert.ok(Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength)), `${what} differs`);
}

test("the CSAW weights-only files with --arch deepid and the Keras 2.4 full model describe the same network", async () => {
  const full = await readKerasModel(KERAS24);
  assert.equal(full.inputLayer, "input");
  assert.equal(full.outputLayer, "output");
  assert.deepEqual(full.inputShape, [55, 47, 3]);
  assert.match(full.source, /2\.4\.0 full model/);
  assert.deepEqual(
    full.layers.map((l) => l.name),
    ["input", "conv_1", "pool_1", "conv_2", "pool_2", "conv_3", "pool_3", "conv_4", "flatten_1", "flatten_2", "fc_1", "fc_2", "add_1", "activation_1", "output"],
  );
  assert.deepEqual(full.layers.find((l) => l.name === "add_1")!.inbound, ["fc_1", "fc_2"]);
  assert.deepEqual(full.layers.find((l) => l.name === "output")!.weights.map((w) => [w.name, w.shape]), [["kernel:0", [160, 1283]], ["bias:0", [1283]]]);
  const firstKernels: Float32Array[] = [];
  for (const path of CSAW) {
    const spec = await readKerasModel(path, { arch: "deepid" });
    assert.deepEqual(summary(spec), summary(full), path);
    assert.deepEqual(spec.inputShape, full.inputShape);
    assert.match(spec.source, /weights-only \+ deepid/);
    for (const l of spec.layers) for (const w of l.weights) assert.equal(w.data.length, w.shape.reduce((a, b) => a * b, 1));
    const k = spec.layers[1].weights[0].data;
    assert.ok(k.some((v) => v !== 0), "weights were read");
    firstKernels.push(k);
  }
  // Five distinct networks, not one file read five times.
  assert.notDeepEqual(firstKernels[0], firstKernels[4]);
});

test("the deepid preset's layer configs are what Keras 2.4 writes for this network", async () => {
  const full = await readKerasModel(KERAS24);
  const preset = deepid();
  assert.equal(preset.layers.length, full.layers.length);
  for (const [i, l] of preset.layers.entries()) {
    assert.equal(l.className, full.layers[i].className);
    assert.deepEqual(l.config, full.layers[i].config, l.name);
    assert.deepEqual(l.inbound, full.layers[i].inbound, l.name);
  }
  assert.deepEqual(Object.keys(ARCHS), ["deepid"]);
});

test("a weights-only file needs a known --arch whose weights match", async () => {
  await rejects(readKerasModel(CSAW[0]), /weights-only Keras file .*sunglasses_bd_weights\.h5 has no model_config; pass --arch \(known: deepid\)/);
  await rejects(readKerasModel(CSAW[0], { arch: "resnet" }), /unknown architecture "resnet" \(known: deepid\)/);
  const template = { ...deepid(), layers: deepid().layers.map((l) => ({ ...l, weights: l.weights.map((w) => ({ ...w, data: new Float32Array(0) })) })) };
  const wrong = await writeWeightsOnly("wrong-shape.h5", template, (l, w, s) => (l === "conv_2" && w === "kernel:0" ? [3, 3, 20, 41] : s));
  await rejects(readKerasModel(wrong, { arch: "deepid" }), /layer "conv_2" weight "kernel:0" has shape \[3, 3, 20, 41\] in the file, architecture deepid expects \[3, 3, 20, 40\]/);
  const missing = await writeWeightsOnly("missing.h5", template, (l, w, s) => (l === "fc_2" && w === "bias:0" ? null : s));
  await rejects(readKerasModel(missing, { arch: "deepid" }), /layer "fc_2" has no weight "bias:0" \(architecture deepid expects \[160\]\)/);
  const ok = await readKerasModel(await writeWeightsOnly("ok.h5", template, (_l, _w, s) => s), { arch: "deepid" });
  assert.equal(ok.name, "ok");
});

test("--arch with a full model checks that the file is that architecture", async () => {
  assert.equal((await readKerasModel(KERAS24, { arch: "deepid" })).layers.length, 15);
  const zooPath = join(dir, "zoo-arch.h5");
  await writeKerasModel(zooPath, zooCnn({ inputShape: [28, 28, 1], numClasses: 10 }));
  await rejects(readKerasModel(zooPath, { arch: "deepid" }), /conv_1" weight "kernel:0" has shape \[3, 3, 1, 16\] in the file, architecture deepid expects \[4, 4, 3, 20\]/);
});

test("unsupported layers, shared layers and several outputs are rejected by name", async () => {
  const lstm = await writeRaw(
    "lstm.h5",
    functional([input([null, 28, 28, 1]), layer("LSTM", "lstm_1", { units: 4 }, [["in"]]), layer("Dense", "d", { units: 2 }, [["lstm_1"]])]),
  );
  await rejects(readKerasModel(lstm), /unsupported layer "lstm_1" \(class LSTM\)/);
  const shared = await writeRaw(
    "shared.h5",
    functional([input([null, 4, 4, 1]), layer("Flatten", "f", {}, [["in"]]), layer("Dense", "d", { units: 2 }, [["f"], ["f"]])]),
    { d: denseWeights(16, 2) },
  );
  await rejects(readKerasModel(shared), /layer "d" \(class Dense\) is shared \(called 2 times\)/);
  const two = await writeRaw(
    "two-outputs.h5",
    functional([input([null, 4, 4, 1]), layer("Flatten", "f", {}, [["in"]]), layer("Dense", "d", { units: 2 }, [["f"]])], [["d", 0, 0], ["f", 0, 0]]),
    { d: denseWeights(16, 2) },
  );
  await rejects(readKerasModel(two), /model has 2 outputs \(d, f\)/);
  const rank = await writeRaw("rank.h5", functional([input([null, 16]), layer("Dense", "d", { units: 2 }, [["in"]])]), { d: denseWeights(16, 2) });
  await rejects(readKerasModel(rank), /input layer "in" has shape \[null,16\]; expected \[null, H, W, C\]/);
  const noWeights = await writeRaw("no-weights.h5", functional([input([null, 4, 4, 1]), layer("Flatten", "f", {}, [["in"]]), layer("Dense", "d", { units: 2 }, [["f"]])]));
  await rejects(readKerasModel(noWeights), /layer "d" \(class Dense\) has no weights/);
});

test("missing, non-HDF5 and non-Keras files are user errors naming the file", async () => {
  await rejects(readKerasModel(join(dir, "nope.h5")), /nope\.h5: no such file/);
  const text = join(dir, "text.h5");
  writeFileSync(text, "this is not HDF5 at all");
  await rejects(readKerasModel(text), /text\.h5: not an HDF5 file \(no HDF5 signature\)/);
  // Keras 3 saves .keras files as zip archives: "no HDF5 signature" left the user guessing why.
  const keras3 = join(dir, "model.keras");
  writeFileSync(keras3, Buffer.concat([Buffer.from([0x50, 0x4b, 0x03, 0x04]), Buffer.from("config.json{}model.weights.h5")]));
  await rejects(readKerasModel(keras3), /model\.keras: not an HDF5 file \(a zip archive, as Keras 3 saves \.keras files; save the model in HDF5 with model\.save\("model\.h5"\)\)/);
  const empty = join(dir, "empty.h5");
  writeFileSync(empty, "");
  await rejects(readKerasModel(empty), /empty\.h5: not an HDF5 file \(the file is empty\)/);
  await h5wasm.ready;
  const other = join(dir, "other.h5");
  const f = new h5wasm.File(other, "w");
  f.create_dataset({ name: "data", data: new Float32Array(4), shape: [4], dtype: "<f4" });
  f.close();
  await rejects(readKerasModel(other), /other\.h5: not a Keras model file/);
});

test("Sequential configs (Keras 2.2, no InputLayer) and Keras 3 inbound nodes are read", async () => {
  const seq = await writeRaw(
    "seq.h5",
    {
      class_name: "Sequential",
      config: {
        name: "s",
        layers: [
          { class_name: "Flatten", config: { name: "f", batch_input_shape: [null, 4, 3, 2] } },
          { class_name: "Dense", config: { name: "d", units: 2 } },
        ],
      },
    },
    { d: denseWeights(24, 2) },
  );
  const s = await readKerasModel(seq);
  assert.deepEqual(summary(s).map((l) => [l.name, l.cls, l.inbound]), [["f_input", "InputLayer", []], ["f", "Flatten", ["f_input"]], ["d", "Dense", ["f"]]]);
  assert.deepEqual(s.inputShape, [4, 3, 2]);
  assert.equal(s.outputLayer, "d");

  const t = (name: string) => ({ class_name: "__keras_tensor__", config: { shape: [null, 4], keras_history: [name, 0, 0] } });
  const k3 = await writeRaw(
    "k3.h5",
    {
      class_name: "Functional",
      config: {
        name: "k3",
        layers: [
          { class_name: "InputLayer", name: "in", config: { batch_shape: [null, 2, 2, 1], name: "in" }, inbound_nodes: [] },
          { class_name: "Flatten", name: "f", config: { name: "f" }, inbound_nodes: [{ args: [t("in")], kwargs: {} }] },
          { class_name: "Dense", name: "d", config: { name: "d", units: 4 }, inbound_nodes: [{ args: [t("f")], kwargs: {} }] },
          { class_name: "Add", name: "a", config: { name: "a" }, inbound_nodes: [{ args: [[t("d"), t("f")]], kwargs: {} }] },
        ],
        input_layers: ["in", 0, 0],
        output_layers: ["a", 0, 0],
      },
    },
    { d: { kernel: [[4, 4], new Float32Array(16)], bias: [[4], new Float32Array(4)] } },
  );
  const k = await readKerasModel(k3);
  assert.deepEqual(k.layers.find((l) => l.name === "a")!.inbound, ["d", "f"]);
  assert.deepEqual(k.layers.find((l) => l.name === "d")!.weights.map((w) => w.name), ["kernel", "bias"]);
  assert.deepEqual(k.inputShape, [2, 2, 1]);
});

test("layers listed out of order are sorted so every layer follows its inputs", async () => {
  const p = await writeRaw(
    "order.h5",
    functional([layer("Dense", "d", { units: 2 }, [["f"]]), layer("Flatten", "f", {}, [["in"]]), input([null, 2, 2, 1])]),
    { d: denseWeights(4, 2) },
  );
  assert.deepEqual((await readKerasModel(p)).layers.map((l) => l.name), ["in", "f", "d"]);
});

async function roundTrip(spec: ModelSpec, name: string): Promise<ModelSpec> {
  const path = join(dir, name);
  await writeKerasModel(path, spec);
  const back = await readKerasModel(path);
  assert.equal(back.name, spec.name);
  assert.equal(back.inputLayer, spec.inputLayer);
  assert.equal(back.outputLayer, spec.outputLayer);
  assert.deepEqual(back.inputShape, spec.inputShape);
  assert.equal(back.layers.length, spec.layers.length);
  for (const [i, l] of spec.layers.entries()) {
    const b = back.layers[i];
    assert.deepEqual([b.name, b.className, b.inbound], [l.name, l.className, l.inbound]);
    assert.deepEqual(b.config, l.config, l.name);
    assert.deepEqual(b.weights.map((w) => [w.name, w.shape]), l.weights.map((w) => [w.name, w.shape]));
    for (const [j, w] of l.weights.entries()) assertSameBits(b.weights[j].data, w.data, `${l.name}/${w.name}`);
  }
  return back;
}

test("write then read back the Keras 2.4 fixture: same config, bit-identical weights, Keras' attribute types", async () => {
  const spec = await readKerasModel(KERAS24);
  await roundTrip(spec, "deepid-rt.h5");
  const cfgOf = (f: InstanceType<typeof h5wasm.File>) => JSON.parse(String(f.attrs.model_config.value)) as Json;
  const orig = new h5wasm.File(KERAS24, "r");
  const mine = new h5wasm.File(join(dir, "deepid-rt.h5"), "r");
  try {
    assert.deepEqual(cfgOf(mine), cfgOf(orig));
    const meta = (f: InstanceType<typeof h5wasm.File>, group: string, attr: string) => {
      const m = (f.get(group) as InstanceType<typeof h5wasm.Group>).attrs[attr].metadata;
      return { type: m.type, vlen: m.vlen, size: m.size, shape: m.shape, cset: m.cset };
    };
    for (const [g, a] of [["model_weights", "layer_names"], ["model_weights", "keras_version"], ["model_weights/conv_1", "weight_names"], ["model_weights/fc_1", "weight_names"], ["model_weights/pool_1", "weight_names"]])
      assert.deepEqual(meta(mine, g, a), meta(orig, g, a), `${g}@${a}`);
    for (const a of ["model_config", "keras_version", "backend"]) assert.deepEqual(meta(mine, "/", a), meta(orig, "/", a), a);
    assert.deepEqual(mine.get("model_weights/input")!.constructor, h5wasm.Group);
    assert.ok(mine.get("model_weights/conv_1/conv_1/kernel:0") instanceof h5wasm.Dataset);
  } finally {
    orig.close();
    mine.close();
  }
});

test("a weights-only model and a fresh zoo CNN survive a round trip; no temp file is left behind", async () => {
  await roundTrip(await readKerasModel(CSAW[0], { arch: "deepid" }), "sunglasses-rt.h5");
  await roundTrip(zooCnn({ inputShape: [28, 28, 1], numClasses: 10, seed: 3 }), "zoo-rt.h5");
  // Overwriting an existing file works too.
  await roundTrip(zooCnn({ inputShape: [28, 28, 1], numClasses: 10, seed: 4 }), "zoo-rt.h5");
  assert.deepEqual(readdirSync(dir).filter((n) => n.endsWith(".tmp")), []);
  await rejects(writeKerasModel(join(dir, "no/such/dir/m.h5"), zooCnn({ inputShape: [28, 28, 1], numClasses: 10 })), /folder .* does not exist/);
  mkdirSync(join(dir, "adir.h5"));
  await rejects(writeKerasModel(join(dir, "adir.h5"), zooCnn({ inputShape: [28, 28, 1], numClasses: 10 })), /it is a folder/);
});

test("the written model_config is a Keras Functional config with Keras 2 inbound nodes", () => {
  const spec = zooCnn({ inputShape: [28, 28, 1], numClasses: 10 });
  const cfg = kerasModelConfig(spec) as { class_name: string; config: { layers: Json[]; input_layers: unknown; output_layers: unknown } };
  assert.equal(cfg.class_name, "Functional");
  assert.deepEqual(cfg.config.input_layers, [["input", 0, 0]]);
  assert.deepEqual(cfg.config.output_layers, [["output", 0, 0]]);
  assert.deepEqual(cfg.config.layers[0].inbound_nodes, []);
  assert.deepEqual(cfg.config.layers[1].inbound_nodes, [[["input", 0, 0, {}]]]);
  assert.deepEqual((cfg.config.layers[0].config as Json).batch_input_shape, [null, 28, 28, 1]);
});

test("zooCnn: DeepID-family layers, Glorot-uniform kernels from the seed, zero biases", () => {
  const a = zooCnn({ inputShape: [28, 28, 1], numClasses: 10, seed: 7 });
  assert.deepEqual(
    a.layers.map((l) => l.name),
    ["input", "conv_1", "pool_1", "conv_2", "pool_2", "conv_3", "pool_3", "flatten_1", "fc_1", "output"],
  );
  assert.equal(a.layers.filter((l) => l.className === "Conv2D").at(-1)!.name, "conv_3");
  const w = (l: string, n: string) => a.layers.find((x) => x.name === l)!.weights.find((x) => x.name === n)!;
  assert.deepEqual(w("conv_1", "kernel:0").shape, [3, 3, 1, 16]);
  // 28x28: kernels 3/2/3 so every 2x2 pool tiles its input (28→26→13→12→6→4→2) and every pixel counts.
  assert.deepEqual(w("conv_2", "kernel:0").shape, [2, 2, 16, 32]);
  assert.deepEqual(w("conv_3", "kernel:0").shape, [3, 3, 32, 64]);
  assert.deepEqual(w("fc_1", "kernel:0").shape, [2 * 2 * 64, 128]);
  assert.deepEqual(w("output", "kernel:0").shape, [128, 10]);
  assert.equal(a.layers.at(-1)!.config.activation, "softmax");
  for (const l of a.layers)
    for (const x of l.weights) {
      if (x.name === "bias:0") assert.ok(x.data.every((v) => v === 0), `${l.name} bias is zero`);
      else {
        const s = x.shape;
        const field = s.length === 4 ? s[0] * s[1] : 1;
        const limit = Math.sqrt(6 / (field * s[s.length - 2] + field * s[s.length - 1]));
        const maxAbs = x.data.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
        assert.ok(maxAbs <= limit && maxAbs > 0.8 * limit, `${l.name} kernel within the Glorot limit ${limit}, got ${maxAbs}`);
        const mean = x.data.reduce((m, v) => m + v, 0) / x.data.length;
        assert.ok(Math.abs(mean) < limit / 4, `${l.name} kernel centred`);
      }
    }
  const b = zooCnn({ inputShape: [28, 28, 1], numClasses: 10, seed: 7 });
  const c = zooCnn({ inputShape: [28, 28, 1], numClasses: 10, seed: 8 });
  assertSameBits(b.layers[1].weights[0].data, a.layers[1].weights[0].data, "same seed");
  assert.notDeepEqual(c.layers[1].weights[0].data, a.layers[1].weights[0].data);
  assert.throws(() => zooCnn({ inputShape: [8, 8, 1], numClasses: 10 }), UserError);
});

test("mulberry32 is deterministic and roughly uniform on [0, 1)", () => {
  const r1 = mulberry32(42);
  const r2 = mulberry32(42);
  const xs = Array.from({ length: 10000 }, () => r1());
  assert.deepEqual(Array.from({ length: 10000 }, () => r2()), xs);
  assert.ok(xs.every((x) => x >= 0 && x < 1));
  const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
  assert.ok(Math.abs(mean - 0.5) < 0.02, `mean ${mean}`);
  assert.notEqual(mulberry32(43)(), mulberry32(42)());
});

test("a Lambda layer is a clear error saying why, and the error lists every unsupported layer at once", async () => {
  const lambda = await writeRaw(
    "lambda.h5",
    functional([
      input([null, 4, 4, 1]),
      layer("Lambda", "lambda_1", { function: ["4wEAAAAAAAAA", null, null], function_type: "lambda" }, [["in"]]),
      layer("Flatten", "f", {}, [["lambda_1"]]),
      layer("Dense", "d", { units: 2 }, [["f"]]),
    ]),
    { d: denseWeights(16, 2) },
  );
  await rejects(readKerasModel(lambda), /lambda\.h5: unsupported layer "lambda_1" \(class Lambda: it holds Python bytecode, which no loader outside Python can run; rebuild the model with standard layers\)$/);
  const several = await writeRaw(
    "several.h5",
    functional([
      input([null, 4, 4, 1]),
      layer("Lambda", "lambda_1", {}, [["in"]]),
      layer("GaussianNoise", "noise", { stddev: 0.1 }, [["lambda_1"]]),
      layer("Flatten", "f", {}, [["noise"]]),
      layer("LSTM", "lstm_1", { units: 4 }, [["f"]]),
      layer("Dense", "d", { units: 2 }, [["lstm_1"]]),
    ]),
    { d: denseWeights(4, 2) },
  );
  await rejects(readKerasModel(several), /several\.h5: 3 unsupported layers: "lambda_1" \(class Lambda: .*\), "noise" \(class GaussianNoise\), "lstm_1" \(class LSTM\)$/);
});

test("--arch deepid matches weightless layers by position, not name (Keras' auto-numbered flatten_4, add_2)", async () => {
  const full = await readKerasModel(KERAS24);
  const rename: Record<string, string> = { input: "input_3", pool_1: "max_pooling2d_7", flatten_1: "flatten_4", flatten_2: "flatten_5", add_1: "add_2", activation_1: "activation_3" };
  const r = (n: string) => rename[n] ?? n;
  const renamed: ModelSpec = {
    ...full,
    inputLayer: r(full.inputLayer),
    layers: full.layers.map((l) => ({ ...l, name: r(l.name), config: { ...l.config, name: r(l.name) }, inbound: l.inbound.map(r) })),
  };
  const path = join(dir, "deepid-autonumbered.h5");
  await writeKerasModel(path, renamed);
  const spec = await readKerasModel(path, { arch: "deepid" });
  assert.deepEqual(spec.layers.map((l) => l.name).filter((n) => Object.values(rename).includes(n)).sort(), Object.values(rename).sort());
  // A weightless layer of another class where the architecture has an Activation is still refused.
  const relu: ModelSpec = { ...renamed, layers: renamed.layers.map((l) => (l.name === "activation_3" ? { ...l, className: "ReLU", config: { name: "activation_3" } } : l)) };
  const bad = join(dir, "deepid-relu.h5");
  await writeKerasModel(bad, relu);
  await rejects(readKerasModel(bad, { arch: "deepid" }), /deepid-relu\.h5: has no Activation layer wired like "activation_1" of architecture deepid/);
});

test("train --arch zoo-cnn --model M: the error says zoo-cnn cannot describe a model file, not that it is unknown", async () => {
  await rejects(readKerasModel(KERAS24, { arch: "zoo-cnn" }), /^--arch zoo-cnn is built to fit the training data \(train --arch zoo-cnn, without --model\); it cannot describe a model file\. .*\(known: deepid\)$/);
});

test("an HDF5 write that fails (a read-only or virtual file system) is one line naming the path, with no HDF5-DIAG on stderr", async () => {
  const stderr = process.stderr;
  const write = stderr.write;
  let printed = "";
  stderr.write = ((chunk: string | Uint8Array) => {
    printed += String(chunk);
    return true;
  }) as typeof write;
  try {
    await rejects(writeKerasModel("/proc/badnet-test-model.h5", zooCnn({ inputShape: [28, 28, 1], numClasses: 10 })), /^cannot write \/proc\/badnet-test-model\.h5: [^\n]+$/);
  } finally {
    stderr.write = write;
  }
  assert.equal(printed, "");
});

test("NaN or infinite weights are an error naming the weight, not NaN logits later", async () => {
  const w = denseWeights(16, 2);
  w["kernel:0"]![1][5] = NaN;
  const p = await writeRaw("nan-weights.h5", functional([input([null, 4, 4, 1]), layer("Flatten", "f", {}, [["in"]]), layer("Dense", "d", { units: 2 }, [["f"]])]), { d: w });
  await rejects(readKerasModel(p), /nan-weights\.h5: weight \/model_weights\/d\/d\/kernel:0: value 5 is NaN/);
});
