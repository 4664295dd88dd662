import { test } from "node:test";
import assert from "node:assert/strict";
import { countByLabel, evalResult, successByTarget } from "./evaluate.js";

test("successByTarget: one rate per target, ascending; nothing for a single target; countByLabel counts every label", () => {
  const targets = Int32Array.from([5, 1, 5, 1, 5]);
  const pred = Int32Array.from([5, 0, 2, 1, 5]);
  assert.deepEqual(successByTarget(pred, targets), [
    { target: 1, n: 2, attackSuccess: 1, asr: 0.5 },
    { target: 5, n: 3, attackSuccess: 2, asr: 2 / 3 },
  ]);
  assert.equal(successByTarget(Int32Array.from([0, 0]), Int32Array.from([0, 0])), undefined);
  assert.deepEqual(countByLabel(Int32Array.from([3, 2, 3]), (i) => i === 0), [
    { label: 2, n: 1, hits: 0 },
    { label: 3, n: 2, hits: 1 },
  ]);
  assert.deepEqual(countByLabel(Int32Array.from([4, 4]), () => true), [{ label: 4, n: 2, hits: 2 }]);
});

test("evalResult gives the overall ASR and, with several targets, each one's", () => {
  const r = evalResult({ clean: Int32Array.from([0, 1]), poisoned: Int32Array.from([1, 1, 5, 0]) }, { clean: Int32Array.from([0, 0]), poisoned: Int32Array.from([1, 1, 5, 5]) });
  assert.equal(r.cleanAccuracy, 0.5);
  assert.equal(r.asr, 0.75);
  assert.deepEqual(r.asrByTarget, [
    { target: 1, n: 2, asr: 1 },
    { target: 5, n: 2, asr: 0.5 },
  ]);
  const one = evalResult({ clean: Int32Array.from([0]), poisoned: Int32Array.from([1, 0]) }, { clean: Int32Array.from([0]), poisoned: Int32Array.from([1, 1]) });
  assert.equal(one.asr, 0.5);
  assert.equal(one.asrByTarget, undefined);
});
