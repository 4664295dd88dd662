// The mask spread (radius of gyration) on hand-made masks.
import assert from "node:assert/strict";
import { test } from "node:test";
import { maskSpread } from "./nc-compact.js";

const patch = (h: number, w: number, r0: number, c0: number, size: number, value = 1): Float32Array => {
  const m = new Float32Array(h * w);
  for (let r = r0; r < r0 + size; r++) for (let c = c0; c < c0 + size; c++) m[r * w + c] = value;
  return m;
};

test("a k×k patch has spread sqrt((k²−1)/6), wherever it sits and whatever its mask value", () => {
  const s3 = maskSpread(patch(28, 28, 2, 3, 3), 28, 28);
  assert.ok(Math.abs(s3 - Math.sqrt(8 / 6)) < 1e-9, `${s3}`);
  assert.ok(Math.abs(maskSpread(patch(28, 28, 20, 20, 3, 0.4), 28, 28) - s3) < 1e-9);
  assert.ok(Math.abs(maskSpread(patch(28, 28, 0, 20, 8), 28, 28) - Math.sqrt(63 / 6)) < 1e-9);
});

test("scattered masks spread further than compact ones of the same norm; zero mask is NaN", () => {
  // Two 2×2 blobs in opposite corners (8 pixels) against one 3×3 patch minus a pixel (8 pixels).
  const two = new Float32Array(28 * 28);
  for (const [r, c] of [[0, 0], [0, 1], [1, 0], [1, 1], [26, 26], [26, 27], [27, 26], [27, 27]]) two[r * 28 + c] = 1;
  const one = patch(28, 28, 10, 10, 3);
  one[10 * 28 + 10] = 0;
  assert.ok(maskSpread(two, 28, 28) > 10 * maskSpread(one, 28, 28));
  assert.ok(Number.isNaN(maskSpread(new Float32Array(4), 2, 2)));
  assert.throws(() => maskSpread(new Float32Array(5), 2, 2), /not 2x2/);
});
