// The reference outputs of an independent implementation, reproduced through the CLI's predict command.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { CLI, fixture } from "../test/fixtures.js";

interface RefTop {
  label: number;
  logit: number;
  prob: number;
}
interface Reference {
  models: Record<string, { input_scale: number; outputs: { image: string; top5: RefTop[] }[] }>;
}

const ref = JSON.parse(readFileSync(fixture("reference_outputs.json"), "utf8")) as Reference;

for (const [modelPath, m] of Object.entries(ref.models)) {
  test(`predict reproduces reference outputs: ${modelPath}`, () => {
    const images = m.outputs.map((o) => fixture(o.image));
    const args = ["predict", "--model", fixture(modelPath), "--input-scale", String(m.input_scale), "--json", ...images];
    if (modelPath.includes("_bd_weights")) args.push("--arch", "deepid");
    const out = JSON.parse(execFileSync("node", [CLI, ...args], { encoding: "utf8" })) as { file: string; label: number; top5: RefTop[] }[];
    assert.equal(out.length, m.outputs.length);
    m.outputs.forEach((expected, i) => {
      const got = out[i];
      assert.equal(got.label, expected.top5[0].label, `${expected.image}: top-1`);
      for (const e of expected.top5) {
        const g = got.top5.find((t) => t.label === e.label);
        assert.ok(g, `${expected.image}: label ${e.label} missing from top-5`);
        // Reference logits carry 5 decimals: relative error with a floor of 0.01 on the magnitude.
        const rel = Math.abs(g.logit - e.logit) / Math.max(Math.abs(e.logit), 0.01);
        assert.ok(rel <= 1e-3, `${expected.image}: logit of ${e.label} is ${g.logit}, reference ${e.logit}`);
      }
    });
  });
}

test("predict: an image of the wrong size is a one-line error with exit code 2", () => {
  try {
    execFileSync("node", [CLI, "predict", "--model", fixture("thirdparty/keras24_functional_deepid.h5"), "--input-scale", "255", fixture("csaw2020/images/clean_0_label43.png"), fixture("reference_outputs.json")], { encoding: "utf8", stdio: "pipe" });
    assert.fail("expected a failure");
  } catch (e) {
    const err = e as { status: number; stderr: string };
    assert.equal(err.status, 2);
    assert.equal(err.stderr.trim().split("\n").length, 1, err.stderr);
  }
});
