import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, readdirSync, rmSync } from "node:fs";
import { basename } from "node:path";
import { triggerPngRole } from "../defenses/nc-report.js";
import { tempDir } from "../test/make-bad-files.js";
import { writeTriggerPngs } from "./nc-output.js";

test("detect's trigger PNGs each carry their role and file name in a tEXt chunk", () => {
  const dir = tempDir("nc-output");
  try {
    const t = { l1Norm: 1, mask: new Float32Array(6).fill(0.5), pattern: new Float32Array(6).fill(0.25) };
    const files = writeTriggerPngs(dir, { triggers: [{ ...t, label: 3 }, { ...t, label: 3, family: "blend" }], example: new Float32Array(6), shape: [1, 2, 3], inputScale: 1 });
    assert.deepEqual(readdirSync(dir).sort(), files.map((f) => basename(f)).sort());
    assert.equal(files.length, 9);
    for (const f of files) {
      const role = triggerPngRole(readFileSync(f));
      assert.ok(role, `${f} has no role chunk`);
      assert.equal(role.file, basename(f));
      assert.equal(role.role, basename(f) === "clean_example.png" ? "clean" : /_([a-z]+)\.png$/.exec(f)![1]);
    }
    assert.ok(files.some((f) => f.endsWith("label_3_blend_pattern.png")));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
