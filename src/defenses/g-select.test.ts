import assert from "node:assert/strict";
import { test } from "node:test";
import { UserError } from "../errors.js";
import { memoryDataset } from "../io/dataset.js";
import { mulberry32 } from "../util/random.js";
import { chooseSignals, judgeableSignals, proxyImages, successfulProxies } from "./g-select.js";

const normal = (rand: () => number) => () => Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());

test("chooseSignals keeps the signal that separates the proxies and drops one that only costs strictness", () => {
  const z = normal(mulberry32(3));
  const n = 1500, np = 400;
  const clean = [Float32Array.from({ length: n }, z), Float32Array.from({ length: n }, z)];
  // Proxies: signal 0 (strip) shifted by 3 SD (catches most at 1%), signal 1 (mahalanobis) no shift.
  const proxy = [Float32Array.from({ length: np }, () => z() + 3), Float32Array.from({ length: np }, z)];
  const c = chooseSignals(["strip", "mahalanobis"], clean, proxy, ["strip", "mahalanobis"], 0.01);
  assert.deepEqual(c.signals, ["strip"]);
  assert.equal(c.tried.length, 3);
  const alone = c.tried.find((t) => t.signals.length === 1 && t.signals[0] === "strip")!.proxyDetection;
  const both = c.tried.find((t) => t.signals.length === 2)!.proxyDetection;
  assert.ok(alone > both, `alone ${alone} vs both ${both}`);
  assert.match(c.reason, /left out mahalanobis/);
  // Only judgeable signals are candidates.
  assert.deepEqual(chooseSignals(["strip", "mahalanobis"], clean, proxy, ["mahalanobis"], 0.01).signals, ["mahalanobis"]);
  assert.throws(() => chooseSignals(["strip"], [clean[0]!], [proxy[0]!], [], 0.01), UserError);
});

test("judgeableSignals: trigger closeness never; B′'s signals only when the repair did not train on the triggers", () => {
  const all = ["disagreement", "strip", "trigger", "confidence", "mahalanobis"] as const;
  assert.deepEqual(judgeableSignals(all, false), ["disagreement", "strip", "confidence", "mahalanobis"]);
  assert.deepEqual(judgeableSignals(all, true), ["strip", "mahalanobis"]);
});

test("proxy images are stamped copies; successful ones are those B newly sends to the label", () => {
  const x = Float32Array.from({ length: 3 * 4 }, (_, i) => i / 20);
  const clean = memoryDataset("c", [1, 2, 2], x, null);
  const mask = Float32Array.of(1, 0, 0, 0), pattern = Float32Array.of(0.9, 0, 0, 0);
  const p = proxyImages(clean, [{ mask, pattern, label: 2 }, { mask, pattern }], 2);
  assert.equal(p.data.size, 4);
  assert.deepEqual(Array.from(p.trigger), [0, 0, 1, 1]);
  const first = p.data.read(0, 1);
  assert.ok(Math.abs(first[0]! - 0.9) < 1e-6 && Math.abs(first[1]! - x[1]!) < 1e-6);
  // B before: [2, 0]; after: trigger 0 → [2, 2] (row 0 was already 2: not a success), trigger 1 (no label) → [2, 1].
  const ok = successfulProxies(Int32Array.of(2, 2, 2, 1), p.trigger, Int32Array.of(2, 0), [{ mask, pattern, label: 2 }, { mask, pattern }]);
  assert.deepEqual(Array.from(ok), [1, 3]);
});
