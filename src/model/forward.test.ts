import { test } from "node:test";
import assert from "node:assert/strict";
import { argmaxRows, NO_CLASS } from "./forward.js";

test("NaN logits never count as class 0: a row with a NaN has no class", () => {
  const rows = Float32Array.of(NaN, 1, 2, /**/ 0, NaN, -1, /**/ 3, 1, 2, /**/ NaN, NaN, NaN, /**/ -Infinity, -Infinity, 5);
  assert.deepEqual([...argmaxRows(rows, 3)], [NO_CLASS, NO_CLASS, 0, NO_CLASS, 2]);
  assert.ok(NO_CLASS < 0);
});
