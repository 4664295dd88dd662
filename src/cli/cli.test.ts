// The CLI end to end on real fixtures: eval agrees with predict on the same faces, inspect reports what the
// Keras file itself says (shapes derived from its model_config, parameters counted from its weight arrays),
// and help exits 0.
import assert from "node:assert/strict";
import { readFileSync, rmSync } from "node:fs";
import { basename } from "node:path";
import { after, before, test } from "node:test";
import h5wasm from "h5wasm/node";
import { fixture } from "../test/fixtures.js";
import { inPool, listedCommands, makeFaceData, runCli, tempDir, type FaceData } from "../test/make-bad-files.js";

const dir = tempDir("cli");
let faces: FaceData;

before(async () => {
  faces = await makeFaceData(dir);
});
after(() => rmSync(dir, { recursive: true, force: true }));

const KERAS24 = fixture("thirdparty/keras24_functional_deepid.h5");
const SUNGLASSES = fixture("csaw2020/models/sunglasses_bd_weights.h5");

async function ok(args: string[]): Promise<string> {
  const r = await runCli(args);
  assert.equal(r.code, 0, `badnet ${args.join(" ")} exited ${r.code}:\n${r.stderr}`);
  assert.equal(r.stderr, "", `badnet ${args.join(" ")} wrote to stderr`);
  return r.stdout;
}

interface Prediction {
  file: string;
  label: number;
  top5: { label: number; logit: number; prob: number }[];
}

test("eval --json: accuracy and ASR equal what predict --json gives on the same images", async () => {
  const model = ["--model", SUNGLASSES, "--arch", "deepid", "--input-scale", "255"];
  const [evalOut, predOut] = await Promise.all([
    ok(["eval", ...model, "--clean", faces.clean, "--poisoned", faces.poisoned, "--json"]),
    ok(["predict", ...model, "--json", ...faces.cleanSet.images, ...faces.poisonedSet.images]),
  ]);
  const preds = JSON.parse(predOut) as Prediction[];
  const images = [...faces.cleanSet.images, ...faces.poisonedSet.images];
  assert.deepEqual(
    preds.map((p) => p.file),
    images,
  );
  const labelOf = new Map(preds.map((p) => [p.file, p.label]));
  const cleanCorrect = faces.cleanSet.images.filter((f, i) => labelOf.get(f) === faces.cleanSet.labels[i]).length;
  // CSAW convention: a poisoned image's stored label (0 here) is the attacker's target.
  const attackSuccess = faces.poisonedSet.images.filter((f, i) => labelOf.get(f) === faces.poisonedSet.labels[i]).length;

  const r = JSON.parse(evalOut) as Record<string, unknown>;
  assert.deepEqual(Object.keys(r).sort(), ["asr", "attackSuccess", "cleanAccuracy", "cleanCorrect", "imagesPerSecond", "model", "nClean", "nPoisoned", "seconds"]);
  assert.equal(r.model, basename(SUNGLASSES, ".h5"));
  assert.equal(r.nClean, faces.cleanSet.images.length);
  assert.equal(r.nPoisoned, faces.poisonedSet.images.length);
  assert.equal(r.cleanCorrect, cleanCorrect);
  assert.equal(r.cleanAccuracy, cleanCorrect / faces.cleanSet.images.length);
  assert.equal(r.attackSuccess, attackSuccess);
  assert.equal(r.asr, attackSuccess / faces.poisonedSet.images.length);
  for (const k of ["seconds", "imagesPerSecond"]) {
    const v = r[k];
    assert.ok(typeof v === "number" && Number.isFinite(v) && v > 0, `${k} = ${String(v)}`);
  }
  // A sanity floor, not a copied result: the backdoored net is a working face classifier and its backdoor fires.
  assert.ok(cleanCorrect >= 3, `only ${cleanCorrect}/5 clean faces recognized`);
  assert.ok(attackSuccess >= 4, `sunglasses trigger fired on only ${attackSuccess}/5`);
});

test("eval with --poisoned twice: both sets counted, and the rate per target equals predict's counts", async () => {
  const model = ["--model", SUNGLASSES, "--arch", "deepid", "--input-scale", "255"];
  // The clean faces stand in for a second poisoned set: their labels are other "targets" than the sunglasses' 0.
  const [evalOut, predOut] = await Promise.all([
    ok(["eval", ...model, "--clean", faces.clean, "--poisoned", faces.poisoned, "--poisoned", faces.clean, "--json"]),
    ok(["predict", ...model, "--json", ...faces.poisonedSet.images, ...faces.cleanSet.images]),
  ]);
  const preds = JSON.parse(predOut) as Prediction[];
  const targets = [...faces.poisonedSet.labels, ...faces.cleanSet.labels];
  const r = JSON.parse(evalOut) as { nPoisoned: number; attackSuccess: number; asrByTarget: { target: number; n: number; attackSuccess: number; asr: number }[] };
  assert.equal(r.nPoisoned, targets.length);
  assert.equal(r.attackSuccess, preds.filter((p, i) => p.label === targets[i]).length);
  const want = [...new Set(targets)].sort((a, b) => a - b).map((t) => {
    const rows = targets.flatMap((x, i) => (x === t ? [i] : []));
    const hits = rows.filter((i) => preds[i]!.label === t).length;
    return { target: t, n: rows.length, attackSuccess: hits, asr: hits / rows.length };
  });
  assert.ok(want.length > 1);
  assert.deepEqual(r.asrByTarget, want);
  const text = await ok(["eval", ...model, "--clean", faces.clean, "--poisoned", faces.poisoned, "--poisoned", faces.clean]);
  for (const w of want) assert.match(text, new RegExp(`→ ${w.target}\\s+${(100 * w.asr).toFixed(2)}%  \\(${w.attackSuccess}/${w.n}\\)`));
});

test("eval without --poisoned: asr fields are null; text mode prints the same accuracy", async () => {
  const model = ["--model", SUNGLASSES, "--arch", "deepid", "--input-scale", "255", "--clean", faces.clean];
  const [json, text] = await Promise.all([ok(["eval", ...model, "--json"]), ok(["eval", ...model])]);
  const r = JSON.parse(json) as Record<string, unknown>;
  assert.equal(r.asr, null);
  assert.equal(r.attackSuccess, null);
  assert.equal(r.nPoisoned, null);
  const correct = r.cleanCorrect as number;
  assert.match(text, new RegExp(`clean accuracy\\s+${((100 * correct) / 5).toFixed(2)}%\\s+\\(${correct}/5\\)`));
  assert.doesNotMatch(text, /attack success/);
});

interface LayerSummary {
  name: string;
  className: string;
  outputShape: (number | string)[];
  params: number;
}

interface KerasLayer {
  class_name: string;
  name: string;
  config: Record<string, unknown>;
  inbound_nodes: [string, number, number, unknown][][];
}

/** The Keras output shape (no batch dim) of every layer, derived from model_config alone. */
function kerasShapes(layers: KerasLayer[]): Map<string, number[]> {
  const shapes = new Map<string, number[]>();
  const pair = (v: unknown): [number, number] => (Array.isArray(v) ? [v[0], v[1]] : [v as number, v as number]);
  const window = (n: number, k: number, s: number): number => Math.floor((n - k) / s) + 1;
  const pending = [...layers];
  while (pending.length > 0) {
    const i = pending.findIndex((l) => (l.inbound_nodes[0] ?? []).every((ref) => shapes.has(ref[0])));
    assert.ok(i >= 0, "model_config has layers whose inputs never appear");
    const [l] = pending.splice(i, 1);
    const c = l!.config;
    const ins = (l!.inbound_nodes[0] ?? []).map((ref) => shapes.get(ref[0])!);
    if (c.padding !== undefined) assert.equal(c.padding, "valid", `${l!.name}: the derivation below assumes valid padding`);
    let out: number[];
    switch (l!.class_name) {
      case "InputLayer":
        out = (c.batch_input_shape as number[]).slice(1);
        break;
      case "Conv2D": {
        const [kh, kw] = pair(c.kernel_size);
        const [sh, sw] = pair(c.strides ?? 1);
        out = [window(ins[0]![0]!, kh, sh), window(ins[0]![1]!, kw, sw), c.filters as number];
        break;
      }
      case "MaxPooling2D": {
        const [ph, pw] = pair(c.pool_size);
        const [sh, sw] = pair(c.strides ?? c.pool_size);
        out = [window(ins[0]![0]!, ph, sh), window(ins[0]![1]!, pw, sw), ins[0]![2]!];
        break;
      }
      case "Flatten":
        out = [ins[0]!.reduce((a, b) => a * b, 1)];
        break;
      case "Dense":
        out = [c.units as number];
        break;
      case "Add":
      case "Activation":
        out = ins[0]!;
        break;
      default:
        throw new Error(`test does not derive shapes for ${l!.class_name}`);
    }
    shapes.set(l!.name, out);
  }
  return shapes;
}

/** Values per top-level layer group: every dataset below `root` (any depth) counted under its layer. */
function paramsPerLayer(root: InstanceType<typeof h5wasm.Group>): Map<string, number> {
  const counts = new Map<string, number>();
  const walk = (g: InstanceType<typeof h5wasm.Group>, layer: string): void => {
    for (const k of g.keys()) {
      const e = g.get(k);
      if (e instanceof h5wasm.Group) walk(e, layer);
      else if (e instanceof h5wasm.Dataset) counts.set(layer, (counts.get(layer) ?? 0) + (e.shape ?? []).reduce((a, b) => a * b, 1));
    }
  };
  for (const layer of root.keys()) {
    const g = root.get(layer);
    if (g instanceof h5wasm.Group) walk(g, layer);
  }
  return counts;
}

const sum = (m: Map<string, number>): number => [...m.values()].reduce((a, b) => a + b, 0);

test("inspect --json on the Keras 2.4 model: its 15 layers, Keras output shapes, parameter counts", async () => {
  await h5wasm.ready;
  const f = new h5wasm.File(KERAS24, "r");
  let layers: KerasLayer[];
  let params: Map<string, number>;
  try {
    layers = (JSON.parse(String(f.attrs["model_config"]!.value)) as { config: { layers: KerasLayer[] } }).config.layers;
    params = paramsPerLayer(f.get("model_weights") as InstanceType<typeof h5wasm.Group>);
  } finally {
    f.close();
  }
  const shapes = kerasShapes(layers);
  const s = JSON.parse(await ok(["inspect", "--model", KERAS24, "--json"])) as {
    inputShape: number[];
    numClasses: number;
    layers: LayerSummary[];
    totalParams: number;
  };

  assert.equal(layers.length, 15);
  assert.equal(s.layers.length, layers.length);
  assert.deepEqual(s.layers.map((l) => l.name).sort(), layers.map((l) => l.name).sort());
  const input = shapes.get("input")!;
  assert.deepEqual(s.inputShape, [input[2], input[0], input[1]], "inputShape is C x H x W");
  assert.equal(s.numClasses, shapes.get("output")![0]);
  for (const l of s.layers) {
    const k = layers.find((x) => x.name === l.name)!;
    assert.equal(l.className, k.class_name, l.name);
    assert.deepEqual(l.outputShape, shapes.get(l.name), `${l.name} output shape`);
    assert.equal(l.params, params.get(l.name) ?? 0, `${l.name} params`);
  }
  assert.equal(s.totalParams, sum(params));
  // Input order: every layer comes after the layers it takes input from.
  const pos = new Map(s.layers.map((l, i) => [l.name, i]));
  for (const k of layers) for (const ref of k.inbound_nodes[0] ?? []) assert.ok(pos.get(ref[0])! < pos.get(k.name)!, `${ref[0]} before ${k.name}`);
});

test("inspect on a weights-only file with --arch deepid counts the file's own weights; text mode shows the total", async () => {
  await h5wasm.ready;
  const f = new h5wasm.File(SUNGLASSES, "r");
  let params: Map<string, number>;
  try {
    params = paramsPerLayer(f as unknown as InstanceType<typeof h5wasm.Group>);
  } finally {
    f.close();
  }
  const args = ["inspect", "--model", SUNGLASSES, "--arch", "deepid"];
  const [json, text] = await Promise.all([ok([...args, "--json"]), ok(args)]);
  const s = JSON.parse(json) as { layers: LayerSummary[]; totalParams: number };
  assert.equal(s.totalParams, sum(params));
  for (const [layer, n] of params) assert.equal(s.layers.find((l) => l.name === layer)?.params, n, layer);
  assert.match(text, new RegExp(`total params: ${sum(params)}\\b`));
  assert.match(text, /conv_3 \(Conv2D\)/);
});

test("--help: badnet --help, badnet eval --help and every listed command's --help exit 0", async () => {
  const [main, evalHelp, h] = await Promise.all([ok(["--help"]), ok(["eval", "--help"]), ok(["predict", "-h"])]);
  for (const name of ["eval", "predict", "inspect"]) assert.match(main, new RegExp(`^\\s+${name}\\s+\\S`, "m"), `--help lists ${name}`);
  assert.match(main, /usage: badnet <command>/);
  assert.match(evalHelp, /^usage: badnet eval /m);
  for (const opt of ["--model", "--arch", "--input-scale", "--clean", "--poisoned", "--batch-size", "--json"]) assert.ok(evalHelp.includes(opt), `eval --help lists ${opt}`);
  assert.match(h, /^usage: badnet predict /m);
  // "help eval" is "eval --help"; --version prints package.json's version.
  assert.equal(await ok(["help", "eval"]), evalHelp);
  const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string };
  assert.equal((await ok(["--version"])).trim(), `badnet ${pkg.version}`);
  // Every listed command (colleagues keep adding them) has working help.
  await inPool(listedCommands(main), 2, async (name) => {
    assert.match(await ok([name, "--help"]), new RegExp(`^usage: badnet ${name} `, "m"));
  });
});
