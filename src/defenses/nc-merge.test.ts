// Sharded Neural Cleanse scans: two shards merged give the single scan's norms, statistics and flags; bad
// --merge inputs are one-line errors.
import assert from "node:assert/strict";
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, test } from "node:test";
import { reportModelOf } from "../cli/output.js";
import type { Model } from "../model/model.js";
import { runCli, tempDir } from "../test/make-bad-files.js";
import { backdooredModel, cleanSet, TARGET } from "../test/tiny-patch-mlp.js";
import { asShard, mergeShards, type NcShard } from "./nc-merge.js";
import { ncSection } from "./nc-report.js";
import { detectBackdoor, type NeuralCleanseOptions, type NeuralCleanseResult } from "./neural-cleanse.js";

const dir = tempDir("nc-merge");
after(() => rmSync(dir, { recursive: true, force: true }));

/** A result as `detect --out` saves it (JSON round trip included). */
const saved = (model: Model, r: NeuralCleanseResult) => JSON.parse(JSON.stringify({ model: reportModelOf(model, "test"), neuralCleanse: ncSection(r) })) as unknown;

const OPTS: NeuralCleanseOptions = { inputScale: 255, steps: 80, seed: 3 };

let shards: { a: unknown; b: unknown; whole: NeuralCleanseResult } | undefined;
async function scans() {
  if (shards) return shards;
  const model = await backdooredModel();
  const whole = await detectBackdoor(model, cleanSet(60, 21), OPTS);
  const a = saved(model, await detectBackdoor(model, cleanSet(60, 21), { ...OPTS, labels: [0, 2] }));
  const b = saved(model, await detectBackdoor(model, cleanSet(60, 21), { ...OPTS, labels: [3, 1] }));
  shards = { a, b, whole };
  return shards;
}

test("two shards merged equal the single scan", async () => {
  const { a, b, whole } = await scans();
  const m = mergeShards([asShard(a, "A"), asShard(b, "B")]);
  assert.deepEqual(m.labels.map((l) => l.label), [0, 1, 2, 3]);
  assert.deepEqual(m.flagged, whole.flagged);
  assert.ok(whole.flagged.includes(TARGET), `the single scan flags the target (${whole.flagged})`);
  for (const l of m.labels) {
    const w = whole.labels.find((x) => x.label === l.label)!;
    for (const f of ["mask", "blend"] as const) {
      const [p, q] = [l[f]!, w[f]!];
      assert.ok(Math.abs(p.l1Norm - q.l1Norm) <= 1e-4 * q.l1Norm, `label ${l.label} ${f}: norm ${p.l1Norm} vs ${q.l1Norm}`);
      assert.ok(Math.abs(p.anomalyIndex - q.anomalyIndex) <= 1e-3, `label ${l.label} ${f}: index ${p.anomalyIndex} vs ${q.anomalyIndex}`);
      assert.equal(p.flagged, q.flagged);
      assert.equal(p.steps, q.steps);
    }
    assert.ok(Math.abs(l.confidence - w.confidence) <= 1e-6);
  }
  assert.ok(Math.abs(m.medianNorm - whole.medianNorm) <= 1e-4 * whole.medianNorm);
});

test("shards measure the head-shift evidence as the single scan does", async () => {
  // 150 images: 30 held out, enough for the head-shift shares (60 are too few and skip it).
  const model = await backdooredModel();
  const whole = await detectBackdoor(model, cleanSet(150, 21), OPTS);
  // 4 labels in each of the two families.
  assert.ok(whole.headShift && "measured" in whole.headShift && whole.headShift.measured === 8, JSON.stringify(whole.headShift));
  const a = saved(model, await detectBackdoor(model, cleanSet(150, 21), { ...OPTS, labels: [0, 2] }));
  const b = saved(model, await detectBackdoor(model, cleanSet(150, 21), { ...OPTS, labels: [3, 1] }));
  const m = mergeShards([asShard(a, "A"), asShard(b, "B")]);
  assert.deepEqual(m.flagged, whole.flagged);
  for (const l of m.labels) {
    const w = whole.labels.find((x) => x.label === l.label)!;
    assert.deepEqual(l.mask!.headShift, w.mask!.headShift, `label ${l.label}`);
    assert.deepEqual(l.blend!.headShift, w.blend!.headShift, `label ${l.label}, blend`);
    assert.equal(l.mask!.flagged, w.mask!.flagged);
  }
});

test("same seed, same flags and norms", async () => {
  const { whole } = await scans();
  const again = await detectBackdoor(await backdooredModel(), cleanSet(60, 21), OPTS);
  assert.deepEqual(again.flagged, whole.flagged);
  again.labels.forEach((l, i) => assert.equal(l.l1Norm, whole.labels[i].l1Norm, `label ${l.label}`));
});

test("merging checks its shards: overlap, other settings, other models, too few", async () => {
  const { a, b } = await scans();
  const A = asShard(a, "A");
  const B = asShard(b, "B");
  const msg = (fn: () => unknown): string => {
    try {
      fn();
    } catch (e) {
      return (e as Error).message;
    }
    return "no error";
  };
  assert.match(msg(() => mergeShards([A, A])), /label 0 is in both A and A/);
  assert.match(msg(() => mergeShards([A])), /at least two/);
  const other: NcShard = { ...B, neuralCleanse: { ...B.neuralCleanse, settings: { ...B.neuralCleanse.settings, steps: 7 } } };
  assert.match(msg(() => mergeShards([A, other])), /B was scanned with steps 7, A with 80/);
  // The mask family's success bar must agree too; a shard saved before it could be set used `threshold` for it.
  const bar = (maskThreshold: number | undefined): NcShard => {
    const o = structuredClone(b) as { neuralCleanse: { settings: Record<string, unknown> } };
    o.neuralCleanse.settings.maskThreshold = maskThreshold;
    return asShard(o, "B");
  };
  assert.match(msg(() => mergeShards([A, bar(0.8)])), /B was scanned with maskThreshold 0.8, A with 0.99/);
  const old = bar(undefined);
  assert.equal(old.neuralCleanse.settings.maskThreshold, 0.99);
  assert.equal(mergeShards([old, A]).settings.maskThreshold, 0.99);
  const model: NcShard = { ...B, model: { ...B.model, numClasses: 9 } };
  assert.match(msg(() => mergeShards([A, model])), /9 classes/);
  // One architecture, other weights (a model and its repaired copy): told apart by the weights' fingerprint.
  const fp = (s: NcShard, sha: string, source: string): NcShard => ({ ...s, model: { ...s.model, source, weightsSha256: sha } });
  assert.match(msg(() => mergeShards([fp(A, "aa", "model.h5"), fp(B, "bb", "repaired.h5")])), /B scanned other weights \(repaired\.h5\) than A \(model\.h5\)/);
  assert.equal(mergeShards([fp(A, "aa", "model.h5"), fp(B, "aa", "/elsewhere/model.h5")]).labels.length, 4);
  // As many clean images, other pixels (valid.h5 and test.h5 of one size).
  assert.ok(A.neuralCleanse.images.sha256 !== undefined && A.neuralCleanse.images.sha256 === B.neuralCleanse.images.sha256, "shards on one data set share its fingerprint");
  const otherData: NcShard = { ...B, neuralCleanse: { ...B.neuralCleanse, images: { ...B.neuralCleanse.images, sha256: "00" } } };
  assert.match(msg(() => mergeShards([A, otherData])), /B and A were scanned on other clean images/);
  assert.match(msg(() => asShard({ model: {} }, "X")), /X has no Neural Cleanse result/);
  // Shards whose settings name no trigger family (an edited result.json) were scored over nothing: an internal error.
  const withFamilies = (v: unknown, families: unknown) => {
    const o = structuredClone(v) as { neuralCleanse: { settings: Record<string, unknown> } };
    o.neuralCleanse.settings.families = families;
    return o;
  };
  for (const fams of [[], ["mask", "mask"], ["patch"]]) {
    assert.match(msg(() => mergeShards([asShard(withFamilies(a, fams), "A"), asShard(withFamilies(b, fams), "B")])), /--merge: A has trigger families \[.*\] in its settings; expected one or more of mask, blend/);
  }
});

test("detect --merge through the CLI: merged flags, and one-line errors", async () => {
  const { a, b, whole } = await scans();
  const put = (name: string, v: unknown) => {
    mkdirSync(join(dir, name), { recursive: true });
    writeFileSync(join(dir, name, "result.json"), JSON.stringify(v));
    return join(dir, name);
  };
  // What `detect --labels A-B --out DIR` writes carries a title, as every result.json does.
  const [da, db] = [put("a", { title: "shard a", ...(a as object) }), put("b", { title: "shard b", ...(b as object) })];
  const ok = await runCli(["detect", "--merge", da, db, "--json"]);
  assert.equal(ok.code, 0, ok.stderr);
  assert.deepEqual((JSON.parse(ok.stdout) as { neuralCleanse: { flagged: number[] } }).neuralCleanse.flagged, whole.flagged);
  const bad = put("bad", { title: "not a scan" });
  const cases: [string[], RegExp][] = [
    [["detect", "--merge"], /give the result folders/],
    [["detect", "--merge", da, join(dir, "missing")], /missing.*no such file/],
    [["detect", "--merge", da, bad], /has no Neural Cleanse result/],
    [["detect", "--merge", da, da], /label 0 is in both/],
    [["detect", "--merge", da, db, "--model", "x.h5"], /--model does not apply/],
    [["detect", da], /unexpected argument/],
  ];
  for (const [args, re] of cases) {
    const r = await runCli(args);
    assert.equal(r.code, 2, `${args.join(" ")}: exit ${r.code}, ${r.stderr}`);
    const lines = r.stderr.trim().split("\n");
    assert.equal(lines.length, 1, `${args.join(" ")}: ${r.stderr}`);
    assert.match(lines[0], /^badnet: error: /);
    assert.match(lines[0], re);
  }
});
