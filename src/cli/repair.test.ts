// badnet repair: option errors are one-line exit-2 errors, and a full run on the bundled example writes
// every artefact with Neural Cleanse's section merged into the repair's result.
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import type { ReportData } from "../report/types.js";
import { ROOT } from "../test/fixtures.js";
import { runCli } from "../test/make-bad-files.js";

const EX = join(ROOT, "examples/badnet-fmnist");
const base = ["repair", "--model", join(EX, "model.h5"), "--input-scale", "255", "--clean", join(EX, "valid.h5")];

test("repair rejects a bad --defense and --skip-detect with a trigger-based defense", async () => {
  const out = mkdtempSync(join(tmpdir(), "badnet-repair-"));
  for (const [extra, needle] of [
    [["--defense", "bogus"], /--defense must be auto or one of/],
    [["--defense", "unlearn", "--skip-detect"], /needs Neural Cleanse's reversed trigger/],
    [["--auto-budget=-1"], /--auto-budget must be at least 0/],
    [["--defense", "unlearn", "--auto-budget", "5"], /--auto-budget only applies to --defense auto/],
    [["--fpr", "1.5"], /--fpr must be at most 1/],
    [["--fpr", "0"], /--fpr must be a false-alarm rate between 0 and 1/],
    [["--fpr-confidence", "1"], /--fpr-confidence must be a probability between 0 and 1/],
    [["--fpr-confidence", "x"], /--fpr-confidence/],
    [["--fpr", "off", "--fpr-confidence", "0.95"], /--fpr-confidence needs a G false-alarm rate/],
    [["--suspect", "10"], /--suspect: label 10 is outside the model's 10 classes/],
    [["--suspect", "3", "--skip-detect"], /--suspect takes the suspected labels' reversed triggers .* cannot go with --skip-detect/],
    [["--suspect", "3", "--labels", "0-2"], /--suspect: label 3 is not among the --labels scanned/],
    // The example's 1,000 clean images cannot hold out the 2,302 a 0.2% rate needs with 90% confidence.
    [["--fpr", "0.002"], /needs 2302 held-out clean images, at most half of the clean data; .* --fpr off/],
  ] as const) {
    const r = await runCli([...base, ...extra, "--out", out]);
    assert.equal(r.code, 2, r.stderr);
    assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
    assert.match(r.stderr, needle);
  }
});

test("repair on the bundled example: detection flags the planted target, the repair lowers the ASR", async () => {
  const out = mkdtempSync(join(tmpdir(), "badnet-repair-"));
  const manifest = JSON.parse(readFileSync(join(EX, "manifest.json"), "utf8")) as { targets: number[] };
  // About 45 s of CPU work; the wall-clock limit only guards against a hang (a busy 2-core machine took 255-336 s).
  const r = await runCli([...base, "--test", join(EX, "clean_test.h5"), "--poisoned", join(EX, "poisoned_test.h5"), "--fpr", "0.05", "--fpr-confidence", "0.95", "--out", out, "--report", "--json", "--quiet"], 600_000);
  assert.equal(r.code, 0, r.stderr);
  const json = JSON.parse(r.stdout) as ReportData;
  for (const f of ["repaired.h5", "repaired.onnx", "G.onnx", "result.json", "report.html", "detect/result.json"]) assert.ok(existsSync(join(out, f)), f);
  assert.deepEqual(JSON.parse(readFileSync(join(out, "result.json"), "utf8")), json);
  assert.deepEqual(json.neuralCleanse!.flagged, manifest.targets);
  const { before, after } = json.evaluation!;
  assert.ok(after!.asr! < before.asr!, `ASR ${before.asr} → ${after!.asr}`);
  // G answers one of the model's classes or class N = numClasses ("backdoored input").
  assert.equal(json.g!.numClasses, json.model!.numClasses);
  assert.ok(json.g!.poisoned!.flagged > 0, "G flags some poisoned inputs");
  // G is calibrated to --fpr false alarms on a held-out part of --clean; its test rate is reported.
  const cal = json.gCalibration!;
  assert.equal(cal.fprTarget, 0.05);
  assert.deepEqual(cal.guarantee, { confidence: 0.95 });
  // auto: the signals are ranked against its selection split, and every held-out image sets the threshold.
  assert.equal(cal.heldOut.referenceOutside, true);
  assert.equal(cal.heldOut.reference, json.selection!.selectionSize);
  assert.ok(cal.heldOut.n >= 184 && cal.heldOut.n <= 500);
  assert.equal(cal.cleanTest!.n, json.g!.clean.n);
  assert.equal(cal.cleanTest!.count, json.g!.clean.flagged);
  assert.ok(cal.cleanTest!.ci95[0] <= cal.cleanTest!.rate && cal.cleanTest!.rate <= cal.cleanTest!.ci95[1]);
});
