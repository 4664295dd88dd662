import assert from "node:assert/strict";
import { test } from "node:test";
import { decimal } from "./decimal.js";

test("decimal: plain and exponent notation are read, other notations Number() takes are not", () => {
  for (const [t, v] of [["255", 255], [" 0.01 ", 0.01], ["1e-3", 0.001], ["-2", -2], ["+3.", 3], [".5", 0.5], ["1E6", 1e6]] as const) assert.equal(decimal(t), v, t);
  for (const t of ["0x10", "0b11", "0o7", "Infinity", "-Infinity", "", " ", "1,5", "1e", "e5", "NaN", "1.2.3", "12px"]) assert.ok(Number.isNaN(decimal(t)), t);
});
