import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fail, fileSystemError, oneLine, UserError } from "./errors.js";

test("errors never print raw binary bytes of a file: control and undecodable bytes are escaped, one line", () => {
  const binary = Buffer.from([0x89, 0x48, 0x44, 0x46, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x07, 0x1b, 0x5b, 0x32, 0x4a]).toString("utf8");
  const msg = oneLine(`model_config is not valid JSON (Unexpected token '${binary}')`);
  assert.doesNotMatch(msg, /[\u0000-\u001f\u007f-\u009f\ufffd]/);
  assert.match(msg, /\\ufffd.*HDF \\x1a \\x00\\x07\\x1b\[2J/);
  assert.throws(() => fail("a\nb\r\n  c"), (e: unknown) => e instanceof UserError && e.message === "a b c");
  assert.equal(oneLine("x".repeat(2500)).length < 2100, true);
});

test("every file-system error becomes one line naming the path; other errors stay bugs", () => {
  const dir = mkdtempSync(join(tmpdir(), "errors-test-"));
  try {
    const file = join(dir, "f.txt");
    writeFileSync(file, "x");
    let caught: unknown;
    try {
      writeFileSync(join(file, "under-a-file.json"), "{}");
    } catch (e) {
      caught = e;
    }
    const u = fileSystemError(caught);
    assert.ok(u instanceof UserError);
    assert.equal(u.message, `open ${join(file, "under-a-file.json")}: a part of the path is not a folder (ENOTDIR)`);
    assert.equal(fileSystemError(new TypeError("x is undefined")), undefined);
    assert.equal(fileSystemError("ENOENT"), undefined);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
