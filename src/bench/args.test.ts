import { strict as assert } from "node:assert";
import { spawnSync } from "node:child_process";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { headerComment } from "./args.js";

const here = dirname(fileURLToPath(import.meta.url));

test("headerComment keeps the leading comment block and stops at the first code line", () => {
  assert.equal(headerComment("#!/usr/bin/env node\n// one\n//   two\n//\nimport x;\n// later"), "one\n  two\n");
  assert.equal(headerComment("import x;\n// later"), "");
});

test("a bench script prints its header on --help and rejects a bad option in one line with exit code 2", () => {
  const script = join(here, "prune-sweep.js");
  const help = spawnSync(process.execPath, [script, "--help"], { encoding: "utf8" });
  assert.equal(help.status, 0);
  assert.match(help.stdout, /^Pruning sweep speed/);
  const bad = spawnSync(process.execPath, [script, "--nope"], { encoding: "utf8" });
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /^bench prune-sweep: Unknown option '--nope'/);
  assert.equal(bad.stderr.trim().split("\n").length, 1);
  const count = spawnSync(process.execPath, [script, "0"], { encoding: "utf8" });
  assert.equal(count.status, 2);
  assert.match(count.stderr, /images must be a whole number ≥ 1, got "0"/);
});
