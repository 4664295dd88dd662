import { test } from "node:test";
import assert from "node:assert/strict";
import { RecoveryStop } from "./early-stop.js";

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
