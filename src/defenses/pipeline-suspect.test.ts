// `repair --suspect`: labels the user names join the flagged ones with their reversed trigger from the scan, the
// source says which were not flagged, and the hint names the smallest trigger when nothing is flagged.
import assert from "node:assert/strict";
import { test } from "node:test";
import { suspectLines } from "../cli/commands/repair.js";
import { backdooredModel, cleanSet, TARGET } from "../test/tiny-patch-mlp.js";
import { detectBackdoor, type NeuralCleanseResult } from "./neural-cleanse.js";
import { checkRepairRequest, otherFamilyLine, triggersFromDetection } from "./pipeline.js";

let scan: NeuralCleanseResult | undefined;
async function scanned(): Promise<NeuralCleanseResult> {
  scan ??= await detectBackdoor(await backdooredModel(), cleanSet(60, 21), { inputScale: 255, steps: 80, seed: 3, keepTriggers: true });
  return scan;
}

test("suspected labels join the flagged ones with the scan's trigger of their first family", async () => {
  const r = await scanned();
  const other = r.labels.map((l) => l.label).find((l) => !r.flagged.includes(l))!;
  const plain = triggersFromDetection(r);
  assert.deepEqual(plain.flagged, r.flagged);
  assert.equal(plain.source, "neural-cleanse detection");
  const t = triggersFromDetection(r, [other]);
  assert.deepEqual(t.flagged, [...r.flagged, other]);
  assert.equal(t.triggers.length, t.flagged.length);
  const mine = t.triggers.at(-1)!;
  assert.equal(mine.label, other);
  assert.equal((mine as { family?: string }).family ?? "mask", r.settings.families[0]);
  // The very trigger the scan found for it (its norm is the label's).
  assert.equal(mine, r.allTriggers!.find((x) => x.label === other && (x.family ?? "mask") === r.settings.families[0]));
  assert.match(t.source, new RegExp(`suspected by the user: ${other}$`));
  // A flagged label named as suspect is not added twice.
  if (r.flagged.length) assert.deepEqual(triggersFromDetection(r, [r.flagged[0]]).flagged, r.flagged);
});

test("a flagged label's trigger of the other family is held out for auto only where it loses its success under the head shift", async () => {
  const r = await scanned();
  assert.ok(r.flagged.length > 0 && r.settings.families.length === 2, `flagged ${r.flagged}, families ${r.settings.families}`);
  const label = r.flagged[0]!;
  const used = triggersFromDetection(r).triggers.find((t) => t.label === label)!;
  const otherFamily = r.settings.families.find((f) => f !== ((used as { family?: string }).family ?? "mask"))!;
  const withShift = (shifted: number): NeuralCleanseResult => ({
    ...r,
    labels: r.labels.map((m) => (m.label === label ? { ...m, [otherFamily]: { ...m[otherFamily]!, headShift: { success: 0.9, shifted } } } : m)),
  });
  const backdoorLike = triggersFromDetection(withShift(0.05));
  assert.deepEqual(backdoorLike.heldOut?.map((t) => [t.label, (t as { family?: string }).family]), [[label, otherFamily]]);
  assert.equal(backdoorLike.otherFamilyLeftOut, undefined);
  const natural = triggersFromDetection(withShift(0.6));
  assert.equal(natural.heldOut, undefined);
  assert.equal(natural.otherFamilyLeftOut?.length, 1);
  assert.equal(natural.otherFamilyLeftOut![0]!.label, label);
  assert.ok(Math.abs(natural.otherFamilyLeftOut![0]!.kept! - 0.6 / 0.9) < 1e-12);
  assert.match(otherFamilyLine(natural.otherFamilyLeftOut!), new RegExp(`label ${label} \\(keeps 67%\\); it counts only where it keeps under 25%`));
  // Not measured (e.g. too few held-out images): left out too, and the line says why.
  const unmeasured = triggersFromDetection({ ...r, labels: r.labels.map((m) => (m.label === label ? { ...m, [otherFamily]: { ...m[otherFamily]!, headShift: undefined } } : m)) });
  assert.equal(unmeasured.heldOut, undefined);
  assert.match(otherFamilyLine(unmeasured.otherFamilyLeftOut!), new RegExp(`label ${label} \\(no head-shift share to read\\)`));
});

test("a suspect outside the scanned labels is a user error", async () => {
  const r = await detectBackdoor(await backdooredModel(), cleanSet(60, 21), { inputScale: 255, steps: 40, seed: 3, labels: [0, 1, 2], keepTriggers: true });
  assert.throws(() => triggersFromDetection(r, [3]), /--suspect: label 3 was not scanned/);
});

test("--suspect needs detection; the hint names the smallest trigger only when nothing is flagged or suspected", async () => {
  assert.throws(() => checkRepairRequest({ detect: false, suspects: [1] }), /detection cannot be skipped/);
  assert.doesNotThrow(() => checkRepairRequest({ detect: {}, suspects: [1] }));
  const r = await scanned();
  assert.ok(r.flagged.includes(TARGET), "the tiny backdoor is flagged");
  assert.deepEqual(suspectLines(r, undefined), []);
  const none = { ...r, flagged: [] };
  const smallest = [...r.labels].sort((a, b) => a.l1Norm - b.l1Norm)[0];
  const [hint] = suspectLines(none, undefined);
  assert.match(hint, new RegExp(`^hint .* label ${smallest.label}'s .*--suspect ${smallest.label} `));
  assert.deepEqual(suspectLines(none, [smallest.label]).length, 1);
  assert.match(suspectLines(none, [smallest.label])[0], /^suspected {3}label \d+ \(--suspect\)/);
});
