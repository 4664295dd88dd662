// badnet detect --json on every real CSAW fixture model (clean faces only, a few labels, small budgets):
// per-label norms and anomaly indices come back for each.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { copyFileSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { promisify } from "node:util";
import { CLI, fixture } from "../test/fixtures.js";

const run = promisify(execFile);

interface Reference {
  models: Record<string, { input_scale: number }>;
}

test("detect --json returns per-label norms and anomaly indices on every CSAW fixture model", async () => {
  const dir = mkdtempSync(join(tmpdir(), "badnet-detect-"));
  const faces = ["clean_0_label43.png", "clean_1_label328.png", "clean_2_label196.png", "clean_3_label1268.png", "clean_4_label748.png"];
  for (const f of faces) copyFileSync(fixture(`csaw2020/images/${f}`), join(dir, f));
  writeFileSync(join(dir, "labels.csv"), "file,label\n" + faces.map((f) => `${f},${/label(\d+)/.exec(f)![1]}`).join("\n") + "\n");
  const ref = JSON.parse(readFileSync(fixture("reference_outputs.json"), "utf8")) as Reference;
  const labels = [0, 1, 43, 1282];
  for (const [path, m] of Object.entries(ref.models)) {
    const args = [CLI, "detect", "--model", fixture(path), "--input-scale", String(m.input_scale), "--clean", dir, "--labels", labels.join(","), "--screen-steps", "10", "--steps", "20", "--json", "--quiet"];
    if (path.includes("_bd_weights")) args.push("--arch", "deepid");
    const { stdout } = await run("node", args, { encoding: "utf8" });
    const r = JSON.parse(stdout) as { neuralCleanse: { labels: { label: number; l1Norm: number; anomalyIndex: number; flagged: boolean }[]; medianNorm: number } };
    const got = r.neuralCleanse.labels;
    assert.deepEqual(got.map((l) => l.label).sort((a, b) => a - b), labels, path);
    for (const l of got) {
      assert.ok(Number.isFinite(l.l1Norm) && l.l1Norm > 0, `${path}: label ${l.label} norm ${l.l1Norm}`);
      assert.ok(Number.isFinite(l.anomalyIndex) && l.anomalyIndex >= 0, `${path}: label ${l.label} anomaly index ${l.anomalyIndex}`);
      assert.equal(typeof l.flagged, "boolean");
    }
    assert.ok(Number.isFinite(r.neuralCleanse.medianNorm));
  }
});
