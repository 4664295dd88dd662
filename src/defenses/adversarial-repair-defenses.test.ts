import assert from "node:assert/strict";
import { test } from "node:test";
import { keptText } from "./adversarial-repair-defenses.js";

const history = [{ heldOutAccuracy: 0.81 }, { heldOutAccuracy: 0.25 }, { heldOutAccuracy: 0.2 }];

test("keptText: a round within --max-drop reads as kept, nothing more", () => {
  assert.equal(keptText("round", 1, [{ heldOutAccuracy: 0.9 }, { heldOutAccuracy: 0.89 }], 0.02), "kept round 1, held-out accuracy 90.00% → 89.00%");
});

test("keptText: a round past --max-drop says no round met it and by how much it missed", () => {
  const t = keptText("epoch", 1, history, 0.02);
  assert.match(t, /^kept epoch 1, held-out accuracy 81\.00% → 25\.00% \(no epoch within --max-drop 2\.0 points: the most accurate one kept, 56\.0 points below B\)$/);
});

test("keptText: exactly at the budget is within it", () => {
  assert.doesNotMatch(keptText("round", 1, [{ heldOutAccuracy: 0.75 }, { heldOutAccuracy: 0.5 }], 0.25), /max-drop/);
});
