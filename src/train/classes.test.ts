import { test } from "node:test";
import assert from "node:assert/strict";
import { distinctLabels, emptyClasses, labelRuns } from "./classes.js";

test("distinct labels and the classes without an image", () => {
  assert.deepEqual(distinctLabels(Int32Array.of(3, 1, 3, 1)), [1, 3]);
  assert.deepEqual(distinctLabels(Int32Array.of(4)), [4]);
  assert.deepEqual(emptyClasses(Int32Array.of(3, 1, 3), 6), [0, 2, 4, 5]);
  assert.deepEqual(emptyClasses(Int32Array.of(0, 1), 2), []);
});

test("label lists are runs in the --labels syntax, cut after a few runs with the count left out", () => {
  assert.equal(labelRuns([]), "");
  assert.equal(labelRuns([7]), "7");
  assert.equal(labelRuns([2, 3, 5, 6, 7, 8, 9, 12]), "2, 3, 5-9, 12");
  assert.equal(labelRuns(Array.from({ length: 1273 }, (_, i) => i + 10)), "10-1282");
  const evens = Array.from({ length: 50 }, (_, i) => 2 * i);
  assert.equal(labelRuns(evens), "0, 2, 4, 6, 8, 10, 12, 14 … and 42 more");
  assert.equal(labelRuns([0, 1, 2, 5, 7, 8, 9, 20], 2), "0-2, 5 … and 4 more");
});
