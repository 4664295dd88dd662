import { before, test } from "node:test";
import assert from "node:assert/strict";
import { UserError } from "../errors.js";
import { memoryDataset, type Dataset } from "../io/dataset.js";
import { zooCnn } from "../model/archs.js";
import { lowerModel } from "../model/lower.js";
import type { Model } from "../model/model.js";
import { train } from "../train/trainer.js";
import { mulberry32 } from "../util/random.js";
import { H, SHAPE, synth, trainTinyBackdoor } from "../test/tiny-backdoor.js";
import { checkUnlearnOptions, heldOutScore, ncUnlearn, stampShare, type ReversedTrigger } from "./nc-mitigation.js";
import { checkPruneUnlearnOptions } from "./prune-unlearn.js";
import { offRolls, placeAnywhere, positionFreeLabels, resolvePlacement, rolledTrigger, shiftEvidence, translatedSource } from "./shift-evidence.js";

/** The tiny task's checkerboard (rows 0–2, columns 13–16) as a perfect reversed trigger. */
function checker(dy = 0, dx = 0): ReversedTrigger {
  const mask = new Float32Array(H * H), pattern = new Float32Array(H * H);
  for (let a = 0; a < 3; a++) for (let b = 0; b < 4; b++) {
    mask[(a + dy) * H + 13 + b + dx] = 1;
    pattern[(a + dy) * H + 13 + b + dx] = (a + b) % 2;
  }
  return { label: 0, mask, pattern };
}

/** The tiny task with the checkerboard stamped at a random position per poisoned image (random-location BadNets). */
function synthAnywhere(n: number, seed: number): { x: Float32Array; y: Int32Array } {
  const d = synth(n, seed, "none");
  const rand = mulberry32(seed + 99);
  for (let i = 0; i < n; i++) {
    if (rand() >= 0.3) continue;
    const oy = Math.floor(rand() * (H - 2)), ox = Math.floor(rand() * (H - 3));
    for (let a = 0; a < 3; a++) for (let b = 0; b < 4; b++) d.x[i * H * H + (oy + a) * H + ox + b] = (a + b) % 2;
    d.y[i] = 0;
  }
  return d;
}

let fixed: Model;
let anywhere: Model;
let clean: Dataset;

before(async () => {
  fixed = await trainTinyBackdoor();
  const spec = zooCnn({ inputShape: [H, H, 1], numClasses: 4, filters: [4, 8, 10], hidden: 16, seed: 3, name: "tiny_anywhere" });
  anywhere = (await train(lowerModel(spec), { ...synthAnywhere(960, 1), shape: SHAPE }, { epochs: 8, batchSize: 32, optimizer: { kind: "adam", lr: 3e-3 }, seed: 1 })).model;
  const c = synth(200, 21, "none");
  clean = memoryDataset("clean", SHAPE, c.x, c.y);
});

test("a roll moves every mask value by the same amount, wrapping at the edges; nothing is lost", () => {
  const t = checker();
  const r = rolledTrigger(t, SHAPE, 28, 20);
  // Row 0..2 → 28, 29, 0; columns 13..16 → 3..6 (wrapped).
  assert.equal(r.mask[28 * H + 3], 1);
  assert.equal(r.mask[0 * H + 6], 1);
  assert.equal(r.pattern[29 * H + 4], t.pattern[1 * H + 14]);
  assert.equal(r.mask.reduce((a, b) => a + b, 0), 12);
  assert.deepEqual(rolledTrigger(t, SHAPE, H, -H).mask, t.mask);
});

test("translated stamping: one seeded position per image, the same on every read, the trigger's mass intact", () => {
  const t = checker();
  const src = translatedSource(clean, t, 5);
  const a = src.read(0, 20), b = src.read(10, 10);
  assert.deepEqual(a.subarray(10 * H * H), b);
  const x = clean.read(0, 20);
  const moved = new Set<number>();
  for (let i = 0; i < 20; i++) {
    // Exactly the 12 trigger pixels differ from the clean image (where the clean pixel is not already equal).
    let changed = 0, first = -1;
    for (let p = 0; p < H * H; p++) if (a[i * H * H + p] !== x[i * H * H + p]) (changed++, first < 0 && (first = p));
    assert.ok(changed >= 6 && changed <= 12, `image ${i}: ${changed} pixels changed`);
    moved.add(first);
  }
  assert.ok(moved.size > 10, "positions vary from image to image");
  // Unlearning's stamping of a placed trigger moves it too; an unplaced one stays where it was found.
  const placed = placeAnywhere([t], [0], SHAPE);
  assert.ok(placed[0]!.rolls && placed[0]!.rolls.length > 600);
  assert.equal(placeAnywhere([t], [3], SHAPE)[0]!.rolls, undefined);
  // A mask spread over the whole image has no roll off itself: it is never moved, never position-free.
  const whole: ReversedTrigger = { label: 0, mask: new Float32Array(H * H).fill(0.3), pattern: new Float32Array(H * H).fill(1) };
  assert.equal(offRolls(whole.mask, H, H).length, 0);
  assert.equal(placeAnywhere([whole], [0], SHAPE)[0]!.rolls, undefined);
  const firstPixel = (b: Float32Array, i: number) => b.subarray(i * H * H, (i + 1) * H * H).findIndex((v) => v !== 0);
  const batch = new Float32Array(20 * H * H);
  const chosen = stampShare(batch, 20, SHAPE, placed, 1, mulberry32(2));
  assert.ok(new Set(chosen.map((i) => firstPixel(batch, i))).size > 5);
  const still = new Float32Array(20 * H * H);
  const chosen2 = stampShare(still, 20, SHAPE, [t], 1, mulberry32(2));
  assert.equal(new Set(chosen2.map((i) => firstPixel(still, i))).size, 1);
});

test("evidence: a backdoor trained at random positions is position-free, a fixed one is not", async () => {
  const ev = await shiftEvidence(anywhere, clean, [checker()], { seed: 1 });
  assert.ok(ev[0]!.atFound > 0.8, `random-position backdoor at the found position: ${ev[0]!.atFound}`);
  assert.ok(ev[0]!.positionFree, `moved ${ev[0]!.translated} against ${ev[0]!.atFound}`);
  const evFixed = await shiftEvidence(fixed, clean, [checker()], { seed: 1 });
  assert.ok(evFixed[0]!.atFound > 0.8);
  assert.equal(evFixed[0]!.positionFree, false, `fixed backdoor moved ${evFixed[0]!.translated} against ${evFixed[0]!.atFound}`);
  assert.deepEqual(positionFreeLabels([...ev, ...evFixed]), [0]);
  const whole: ReversedTrigger = { label: 0, mask: new Float32Array(H * H).fill(0.3), pattern: new Float32Array(H * H).fill(1) };
  const evWhole = (await shiftEvidence(anywhere, clean, [whole]))[0]!;
  assert.equal(evWhole.positionFree, false);
  assert.equal(evWhole.offShare, 0);
  // Placement: found → none, anywhere → all, auto → by the evidence.
  assert.deepEqual((await resolvePlacement(fixed, clean, [checker()], "found")).labels, []);
  assert.deepEqual((await resolvePlacement(fixed, clean, [checker()], "anywhere")).labels, [0]);
  assert.deepEqual((await resolvePlacement(anywhere, clean, [checker()], "auto")).labels, [0]);
  assert.deepEqual((await resolvePlacement(fixed, clean, [checker()], "auto")).labels, []);
});

test("unlearning a position-free label stamps it anywhere and scores it moved; the backdoor stops working anywhere", async () => {
  // The reversed trigger found off the real positions' centre: a corner of the image.
  const t = checker(20, -10);
  const train = memoryDataset("train", SHAPE, ...((d) => [d.x, d.y] as const)(synth(400, 31, "none")));
  const before = (await shiftEvidence(anywhere, clean, [t], { seed: 4 }))[0]!;
  assert.ok(before.positionFree);
  const r = await ncUnlearn(anywhere, { clean: train }, [t], { epochs: 3, patience: 1, seed: 1 });
  assert.deepEqual(r.anywhere, [0]);
  assert.ok(r.shiftEvidence?.[0]?.positionFree);
  const after = (await shiftEvidence(r.model, clean, [t], { seed: 4 }))[0]!;
  assert.ok(after.translated < 0.2 && after.atFound < 0.2, `after: found ${after.atFound}, moved ${after.translated}`);
  // The held-out score of a placed trigger is the worse of found and moved.
  const placed = placeAnywhere([t], [0], SHAPE);
  const h = await heldOutScore(anywhere, clean, placed);
  assert.ok(Math.abs(h.triggerSuccess - Math.max(before.atFound, before.translated)) < 0.05);
});

test("a bad --placement is a UserError", () => {
  assert.throws(() => checkUnlearnOptions({ placement: "sideways" as "auto" }), UserError);
  assert.throws(() => checkPruneUnlearnOptions({ placement: "everywhere" as "auto" }), UserError);
  assert.equal(checkUnlearnOptions({}).placement, "auto");
  assert.equal(checkPruneUnlearnOptions({}).placement, "auto");
});
