import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { UserError } from "../errors.js";
import { memoryDataset } from "../io/dataset.js";
import { argmaxRows, batchTensor, forwardGraph } from "../model/forward.js";
import { Session } from "../runtime/session.js";
import { mulberry32 } from "../util/random.js";
import { writeOnnx } from "./g-model.js";
import { checkFrr, pickOverlays, runStrip, StripScorer, stripG, thresholdForFrr } from "./strip.js";
import { backdooredModel, cleanSet, H, K, PER, poisonedSet, W } from "../test/tiny-patch-mlp.js";

const dir = mkdtempSync(join(tmpdir(), "strip-test-"));
test.after(() => rmSync(dir, { recursive: true, force: true }));

test("the STRIP entropy graph matches a direct computation of blends, softmax and entropy", async () => {
  const model = await backdooredModel();
  const valid = cleanSet(40, 21);
  const k = 5;
  const overlays = pickOverlays(valid, k, 3);
  const inputs = Float32Array.from([...cleanSet(3, 22).read(0, 3), ...poisonedSet(4, 23).read(0, 2)]);
  const n = inputs.length / PER;
  const fwd = await Session.create(forwardGraph(model));
  for (const blend of ["add", "mean"] as const) {
    const scorer = await StripScorer.create(model, overlays, { blend, maxValue: 1, imagesPerRun: 8 });
    const got = await scorer.score(memoryDataset("x", [1, H, W], inputs, null));
    await scorer.release();
    for (let i = 0; i < n; i++) {
      const blends = new Float32Array(k * PER);
      for (let j = 0; j < k; j++)
        for (let p = 0; p < PER; p++) {
          const a = inputs[i * PER + p], c = overlays[j * PER + p];
          blends[j * PER + p] = blend === "add" ? Math.min(1, a + c) : 0.5 * a + 0.5 * c;
        }
      const logits = (await fwd.run({ input: batchTensor(blends, [1, H, W]) })).logits.data as Float32Array;
      let h = 0;
      for (let j = 0; j < k; j++) {
        const row = Array.from(logits.subarray(j * K, (j + 1) * K));
        const m = Math.max(...row);
        const z = row.reduce((s, v) => s + Math.exp(v - m), 0);
        for (const v of row) {
          const p = Math.exp(v - m) / z;
          if (p > 0) h -= (p * Math.log2(p)) / k;
        }
      }
      assert.ok(Math.abs(got.entropy[i] - h) < 1e-4, `${blend} input ${i}: graph ${got.entropy[i]} vs direct ${h}`);
      const own = (await fwd.run({ input: batchTensor(inputs.slice(i * PER, (i + 1) * PER), [1, H, W]) })).logits.data as Float32Array;
      assert.equal(got.pred[i], argmaxRows(own, K)[0]);
    }
  }
  await fwd.release();
});

test("threshold: the largest value rejecting at most frr of the clean entropies", () => {
  const rand = mulberry32(1);
  const e = Array.from({ length: 200 }, () => rand() * 3);
  for (const frr of [0.004, 0.01, 0.05, 0.25, 0.5, 0.99]) {
    const t = thresholdForFrr(e, frr);
    const rejected = e.filter((v) => v < t).length;
    assert.ok(rejected <= frr * e.length, `frr ${frr}: rejects ${rejected}`);
    // Any larger candidate (the next distinct entropy) would reject more than frr·n.
    const next = Math.min(...e.filter((v) => v > t));
    assert.ok(e.filter((v) => v < next).length > frr * e.length);
  }
  // Ties: the tied value itself is never rejected.
  assert.equal(thresholdForFrr([1, 1, 1, 1, 2], 0.5), 1);
  for (const bad of [0, 1, 2, -0.1, Number.NaN]) {
    assert.throws(() => thresholdForFrr(e, bad), UserError);
    assert.throws(() => checkFrr(bad), UserError);
  }
  assert.throws(() => thresholdForFrr([], 0.1), UserError);
});

test("G.onnx answers N exactly for inputs whose entropy is below the threshold, else B's class", async () => {
  const model = await backdooredModel();
  const valid = cleanSet(40, 31);
  const overlays = pickOverlays(valid, 8, 1);
  const data = memoryDataset("mix", [1, H, W], Float32Array.from([...cleanSet(20, 32).read(0, 20), ...poisonedSet(24, 33).read(0, 12)]), null);
  const scorer = await StripScorer.create(model, overlays, { maxValue: 1 });
  const s = await scorer.score(data);
  await scorer.release();
  // A threshold between the scores (the median) so both answers occur.
  const threshold = Float32Array.from(s.entropy).sort()[Math.floor(data.size / 2)];
  const path = join(dir, "G.onnx");
  writeOnnx(path, stripG(model, overlays, threshold, { maxValue: 1 }));
  const g = await Session.fromBytes(readFileSync(path));
  assert.deepEqual([...g.inputNames], ["input"]);
  const out = (await g.run({ input: batchTensor(data.read(0, data.size), [1, H, W]) })).logits;
  assert.deepEqual(out.shape, [data.size, K + 1]);
  const pred = argmaxRows(out.data as Float32Array, K + 1);
  let flagged = 0;
  for (let i = 0; i < data.size; i++) {
    const rejected = s.entropy[i] < threshold;
    flagged += rejected ? 1 : 0;
    assert.equal(pred[i], rejected ? K : s.pred[i], `input ${i} (entropy ${s.entropy[i]}, threshold ${threshold})`);
  }
  assert.ok(flagged > 0 && flagged < data.size);
  await g.release();
});

test("on a patch-backdoored model, STRIP flags poisoned inputs far more often than clean ones", async () => {
  const model = await backdooredModel();
  const valid = cleanSet(200, 41);
  const test_ = cleanSet(200, 42);
  const poisoned = poisonedSet(200, 43);
  const r = await runStrip(model, { valid, test: test_, poisoned }, { k: 16, frr: 0.05 });
  assert.equal(r.strip.frrTarget, 0.05);
  assert.equal(r.strip.cleanEntropy.length, test_.size);
  assert.equal(r.strip.poisonedEntropy?.length, poisoned.size);
  // On the validation set the rule holds exactly; on fresh clean data the FRR stays small.
  assert.ok(r.validEntropy.filter((e) => e < r.threshold).length <= 0.05 * valid.size);
  assert.ok(r.strip.frr < 0.2, `test FRR ${r.strip.frr}`);
  const detection = r.strip.detectionRate!;
  assert.ok(detection - r.strip.frr > 0.5, `detection ${detection} vs FRR ${r.strip.frr}`);
  const mean = (a: number[]) => a.reduce((s, v) => s + v, 0) / a.length;
  assert.ok(mean(r.strip.poisonedEntropy!) < mean(r.strip.cleanEntropy));
  // G's report agrees with the entropies.
  assert.equal(r.g?.clean.n, test_.size);
  assert.equal(r.g?.clean.flagged, r.strip.cleanEntropy.filter((e) => e < r.threshold).length);
  assert.equal(r.g?.poisoned?.flagged, r.strip.poisonedEntropy!.filter((e) => e < r.threshold).length);
  assert.ok(r.g!.poisoned!.attackSuccess + r.g!.poisoned!.flagged <= poisoned.size);
});

test("runStrip rejects bad options and mismatched data", async () => {
  const model = await backdooredModel();
  const valid = cleanSet(10, 51);
  await assert.rejects(runStrip(model, { valid }, { frr: 2, maxValue: 1 }), UserError);
  await assert.rejects(runStrip(model, { valid }, { k: 11, maxValue: 1 }), UserError);
  await assert.rejects(runStrip(model, { valid }, { k: 0, maxValue: 1 }), UserError);
  const wrong = memoryDataset("wrong", [1, H, W + 1], new Float32Array(2 * H * (W + 1)), null);
  await assert.rejects(runStrip(model, { valid: wrong }, { maxValue: 1 }), UserError);
  await assert.rejects(runStrip(model, { valid: memoryDataset("empty", [1, H, W], new Float32Array(0), null) }, { k: 1 }), UserError);
});

test("unlabeled poisoned data gives a detection rate but no G attack success", async () => {
  const model = await backdooredModel();
  const p = poisonedSet(12, 52);
  const unlabeled = memoryDataset("unlabeled", [1, H, W], p.read(0, p.size), null);
  const r = await runStrip(model, { valid: cleanSet(40, 53), poisoned: unlabeled }, { k: 4, frr: 0.1 });
  assert.equal(r.strip.poisonedEntropy?.length, p.size);
  assert.ok(r.strip.detectionRate !== undefined);
  assert.equal(r.g?.poisoned, undefined);
  assert.equal(r.g?.clean.n, 40);
});
