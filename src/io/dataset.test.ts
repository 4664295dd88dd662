import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { UserError } from "../errors.js";
import { checkLabels, checkShape, concatDatasets, memoryDataset, pickRows, requireLabels, uint8Dataset } from "./dataset.js";
import { openDataset } from "./open-dataset.js";

const dir = mkdtempSync(join(tmpdir(), "dataset-test-"));
test.after(() => rmSync(dir, { recursive: true, force: true }));

const isUser = (re: RegExp) => (e: unknown) => e instanceof UserError && re.test(e.message);

test("memoryDataset reads copies of NCHW slices", () => {
  const data = Float32Array.from({ length: 3 * 2 * 2 * 2 }, (_, i) => i / 10);
  const ds = memoryDataset("mem", [2, 2, 2], data, Int32Array.from([0, 1, 2]));
  assert.equal(ds.size, 3);
  const b = ds.read(1, 2);
  assert.deepEqual(b, data.subarray(8, 24));
  b[0] = 99;
  assert.equal(data[8], Math.fround(0.8)); // the caller may scribble on what read() returns
  assert.throws(() => ds.read(2, 2), RangeError);
  assert.throws(() => ds.read(-1, 1), RangeError);
  assert.throws(() => memoryDataset("bad", [2, 2, 2], new Float32Array(7), null));
  assert.throws(() => memoryDataset("bad", [1, 1, 1], new Float32Array(3), Int32Array.from([0])), /1 labels for 3 images/);
});

test("uint8Dataset scales on read", () => {
  const ds = uint8Dataset("u8", [1, 1, 2], Uint8Array.from([0, 51, 255, 102]), null, 255);
  assert.equal(ds.size, 2);
  assert.deepEqual(ds.read(0, 2), Float32Array.from([0, 0.2, 1, 0.4]));
  assert.throws(() => uint8Dataset("u8", [1, 1, 2], new Uint8Array(2), null, 0), isUser(/input scale/));
});

test("checkLabels names the first bad image and value", () => {
  const ds = memoryDataset("faces", [1, 1, 1], new Float32Array(4), Int32Array.from([0, 9, 10, 11]));
  checkLabels(ds, 12);
  assert.throws(() => checkLabels(ds, 10), isUser(/faces: label 10 of image 2 is outside the model's 10 classes/));
  const neg = memoryDataset("neg", [1, 1, 1], new Float32Array(2), Int32Array.from([0, -1]));
  assert.throws(() => checkLabels(neg, 10), isUser(/label -1 of image 1/));
  checkLabels(memoryDataset("nolabels", [1, 1, 1], new Float32Array(2), null), 1);
  assert.throws(() => requireLabels(memoryDataset("nolabels", [1, 1, 1], new Float32Array(2), null), "accuracy"), isUser(/nolabels has no labels, needed for accuracy/));
});

test("checkShape message names data, model and both shapes", () => {
  const ds = memoryDataset("test.h5", [3, 55, 47], new Float32Array(3 * 55 * 47), null);
  checkShape(ds, [3, 55, 47], "model bd_net.h5");
  assert.throws(
    () => checkShape(ds, [1, 28, 28], "model fmnist.h5"),
    isUser(/^data test\.h5 has images 3x55x47 but model fmnist\.h5 expects 1x28x28$/),
  );
});

test("openDataset rejects unknown specs", async () => {
  const txt = join(dir, "data.txt");
  writeFileSync(txt, "1,2,3");
  await assert.rejects(openDataset(txt, { inputScale: 1 }), isUser(/data\.txt: unknown data format/));
  await assert.rejects(openDataset("fashion-mnist:validation", { inputScale: 1 }), isUser(/no such file or directory/));
  await assert.rejects(openDataset(join(dir, "x.h5"), { inputScale: 1 }), isUser(/x\.h5: no such file/));
  await assert.rejects(openDataset(dir, { inputScale: -1 }), isUser(/input scale/));
});

test("pickRows keeps images and labels of the chosen rows", () => {
  const d = memoryDataset("d", [1, 2, 2], Float32Array.from({ length: 12 }, (_, i) => i), Int32Array.of(5, 6, 7));
  const p = pickRows(d, [2, 0]);
  assert.deepEqual(Array.from(p.read(0, 2)), [8, 9, 10, 11, 0, 1, 2, 3]);
  assert.deepEqual(Array.from(p.labels!), [7, 5]);
});

test("pickRows reads spans of ascending rows in few calls and picks the same rows as one read per row", () => {
  const n = 50, per = 4;
  const base = memoryDataset("d", [1, 2, 2], Float32Array.from({ length: n * per }, (_, i) => i), Int32Array.from({ length: n }, (_, i) => i % 7));
  let calls = 0;
  const d = { ...base, read: (start: number, count: number) => (calls++, base.read(start, count)) };
  const idx = [0, 1, 2, 5, 9, 10, 30, 31, 49];
  const p = pickRows(d, idx);
  const want = idx.flatMap((j) => Array.from(base.read(j, 1)));
  assert.deepEqual(Array.from(p.read(0, idx.length)), want);
  assert.deepEqual(Array.from(p.labels!), idx.map((j) => j % 7));
  assert.equal(calls, 1, "ascending rows within the byte cap are one read");
  calls = 0;
  const q = pickRows(d, [3, 1, 4]);
  assert.deepEqual(Array.from(q.read(0, 3)), [3, 1, 4].flatMap((j) => Array.from(base.read(j, 1))));
  assert.equal(calls, 2, "a step back starts a new span");
});

test("concatDatasets reads across the parts, in order, with their labels", () => {
  const a = memoryDataset("a", [1, 1, 2], Float32Array.from([1, 2, 3, 4]), Int32Array.from([7, 8]));
  const b = memoryDataset("b", [1, 1, 2], Float32Array.from([5, 6, 7, 8, 9, 10]), Int32Array.from([1, 2, 3]));
  const ds = concatDatasets([a, b]);
  assert.equal(ds.name, "a + b");
  assert.equal(ds.size, 5);
  assert.deepEqual([...ds.labels!], [7, 8, 1, 2, 3]);
  assert.deepEqual([...ds.read(0, 5)], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  // A read that straddles the boundary, and one inside the second part.
  assert.deepEqual([...ds.read(1, 2)], [3, 4, 5, 6]);
  assert.deepEqual([...ds.read(3, 2)], [7, 8, 9, 10]);
  assert.throws(() => ds.read(4, 2), RangeError);
  assert.equal(concatDatasets([a]), a);
});

test("concatDatasets refuses sets of different shapes, or labelled and unlabelled ones mixed", () => {
  const a = memoryDataset("a", [1, 1, 2], new Float32Array(2), Int32Array.from([0]));
  const wide = memoryDataset("wide", [1, 1, 3], new Float32Array(3), Int32Array.from([0]));
  const bare = memoryDataset("bare", [1, 1, 2], new Float32Array(2), null);
  assert.throws(() => concatDatasets([a, wide]), (e: Error) => e instanceof UserError && /wide: images of 1x1x3.*one image shape/.test(e.message));
  assert.throws(() => concatDatasets([a, bare]), (e: Error) => e instanceof UserError && /bare has no labels/.test(e.message));
  assert.equal(concatDatasets([bare, bare]).labels, null);
});
