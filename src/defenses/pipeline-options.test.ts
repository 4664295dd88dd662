// Settings the caller gives every auto candidate (RepairRequest.common): a value they reject is the caller's
// error. Skipping each candidate for it would leave only "B unchanged" and hand B back as if chosen.
import assert from "node:assert/strict";
import { test } from "node:test";
import { UserError } from "../errors.js";
import { backdooredModel, cleanSet } from "../test/tiny-patch-mlp.js";
import { detectBackdoor } from "./neural-cleanse.js";
import { repair } from "./pipeline.js";

test("auto: a common setting its candidates reject is a one-line error naming the flag, not a skipped candidate", async () => {
  const model = await backdooredModel();
  const clean = cleanSet(80, 5);
  const detected = await detectBackdoor(model, clean, { inputScale: 255, steps: 40, seed: 3, keepTriggers: true });
  assert.ok(detected.flagged.length > 0, "a flagged label, so that auto has candidates besides B unchanged");
  for (const [batchSize, complaint] of [[0, /at least 1/], ["abc", /must be a number/]] as const) {
    await assert.rejects(
      repair(model, { clean }, { defense: "auto", detected, common: { seed: 0, batchSize }, inputScale: 255 }),
      (e: unknown) => e instanceof UserError && /^auto: candidate \S+: --batch-size /.test(e.message) && complaint.test(e.message) && !e.message.includes("\n"),
    );
  }
});
