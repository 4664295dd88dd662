import { test } from "node:test";
import assert from "node:assert/strict";
import { EpochKeeper, RecoveryStop } from "./early-stop.js";

test("RecoveryStop stops as soon as the held-out accuracy reaches the target", () => {
  const r = new RecoveryStop(0.8, 2);
  assert.deepEqual(r.after(0.7), { stop: false });
  assert.deepEqual(r.after(0.8), { stop: true, reason: "recovered" });
});

test("RecoveryStop stops after `patience` epochs without a new best, and a new best resets the count", () => {
  const r = new RecoveryStop(0.9, 2);
  assert.equal(r.after(0.5).stop, false);
  assert.equal(r.after(0.5).stop, false); // 1 stale epoch
  assert.equal(r.after(0.6).stop, false); // new best: count reset
  assert.equal(r.after(0.55).stop, false);
  assert.deepEqual(r.after(0.6), { stop: true, reason: "no-improvement" });
});

test("RecoveryStop rejects a patience below 1", () => {
  assert.throws(() => new RecoveryStop(0.5, 0), /patience/);
});

test("EpochKeeper with tolerance 0 keeps the best epoch (the earlier on ties) and stops patience epochs after it", () => {
  const k = new EpochKeeper("B", 0, 2);
  assert.equal(k.after(1, "e1", 0.05), false); // the first trained epoch is always kept, however low its score
  assert.equal(k.kept.value, "e1");
  assert.equal(k.after(2, "e2", 0.8), false);
  assert.equal(k.after(3, "e3", 0.8), false); // a tie is not better: e2 stays, one epoch stale
  assert.equal(k.after(4, "e4", 0.7), true); // two epochs without a better score
  assert.deepEqual(k.kept, { value: "e2", score: 0.8, epoch: 2 });
});

test("EpochKeeper with a tolerance keeps the latest epoch within it of the best and runs on while epochs stay within it", () => {
  const k = new EpochKeeper("B", 0.01, 2);
  k.after(1, "e1", 0.88);
  assert.equal(k.after(2, "e2", 0.875), false); // within 0.01 of 0.88: kept, though lower
  assert.equal(k.kept.value, "e2");
  assert.equal(k.after(3, "e3", 0.885), false); // a new best
  assert.equal(k.after(4, "e4", 0.876), false); // within 0.01 of the best (0.885), not of e2's old level
  assert.equal(k.kept.value, "e4");
  assert.equal(k.after(5, "e5", 0.87), false); // 0.015 below the best: not kept, one stale epoch
  assert.equal(k.after(6, "e6", 0.874), true); // still outside: patience spent
  assert.deepEqual(k.kept, { value: "e4", score: 0.876, epoch: 4 });
});

test("EpochKeeper: a later round's rescore restarts the comparison; stops count from the round's start", () => {
  const k = new EpochKeeper("B", 0, 1);
  k.after(1, "e1", 0.9);
  k.rescore(0.5); // the kept network scored on a wider trigger set
  assert.equal(k.after(2, "e2", 0.6, 1), false);
  assert.equal(k.kept.value, "e2");
  assert.equal(k.after(3, "e3", 0.55, 1), true);
  k.keepUnscored(4, "e4"); // no held-out split: every epoch is kept
  assert.deepEqual(k.kept, { value: "e4", score: NaN, epoch: 4 });
  assert.throws(() => new EpochKeeper("B", -0.1, 2), /tolerance/);
  assert.throws(() => new EpochKeeper("B", 0, 0), /patience/);
});
