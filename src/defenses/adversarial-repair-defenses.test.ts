import assert from "node:assert/strict";
import { test } from "node:test";
import { kept } from "./adversarial-repair-defenses.js";

const history = [{ heldOutAccuracy: 0.81 }, { heldOutAccuracy: 0.25 }, { heldOutAccuracy: 0.2 }];

test("kept: a round within --max-drop reads as kept, nothing more, and is not over budget", () => {
  const k = kept("round", 1, [{ heldOutAccuracy: 0.9 }, { heldOutAccuracy: 0.89 }], 0.02);
  assert.equal(k.text, "kept round 1, held-out accuracy 90.00% → 89.00%");
  assert.equal(k.over, undefined);
});

test("kept: a round past --max-drop says no round met it and by how much it missed", () => {
  const k = kept("epoch", 1, history, 0.02);
  assert.deepEqual(k.over, { maxDrop: 0.02, drop: 0.81 - 0.25 });
  assert.match(k.text, /^kept epoch 1, held-out accuracy 81\.00% → 25\.00% \(no epoch within --max-drop 2\.0 points: the most accurate one kept, 56\.0 points below B\)$/);
});

test("kept: exactly at the budget is within it", () => {
  const k = kept("round", 1, [{ heldOutAccuracy: 0.75 }, { heldOutAccuracy: 0.5 }], 0.25);
  assert.doesNotMatch(k.text, /max-drop/);
  assert.equal(k.over, undefined);
});
