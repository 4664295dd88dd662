import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gunzipSync, gzipSync } from "node:zlib";
import { UserError } from "../errors.js";
import { openDataset } from "./open-dataset.js";
import { fashionMnistSkip } from "../test/fixtures.js";
import { DEFAULT_FASHION_MNIST_DIR, fashionMnistDir, loadFashionMnist, openIdxImages, readIdx } from "./fashion-mnist.js";

const FM_DIR = fashionMnistDir();
const skip = fashionMnistSkip();
const dir = mkdtempSync(join(tmpdir(), "fashion-mnist-test-"));
test.after(() => rmSync(dir, { recursive: true, force: true }));

function idx(type: number, dims: number[], data: Uint8Array): Buffer {
  const head = Buffer.alloc(4 + 4 * dims.length);
  head[2] = type;
  head[3] = dims.length;
  dims.forEach((d, i) => head.writeUInt32BE(d, 4 + 4 * i));
  return Buffer.concat([head, data]);
}

test("real test split: 10,000 28x28 images, labels 0..9, batch read = full read", { skip }, () => {
  const ds = loadFashionMnist("test", undefined, 255);
  assert.equal(ds.name, "fashion-mnist:test");
  assert.equal(ds.size, 10000);
  assert.deepEqual(ds.shape, [1, 28, 28]);
  const labels = ds.labels!;
  assert.equal(labels.length, 10000);
  const counts = new Array(10).fill(0);
  for (const l of labels) counts[l]++;
  assert.deepEqual(counts, new Array(10).fill(1000)); // the test split is balanced
  const full = ds.read(0, ds.size);
  assert.equal(full.length, 10000 * 784);
  let max = 0;
  for (const v of full) max = Math.max(max, v);
  assert.equal(max, 1); // some pixel is 255
  for (const [start, count] of [[0, 1], [123, 77], [9990, 10]] as const) {
    assert.deepEqual(ds.read(start, count), full.subarray(start * 784, (start + count) * 784));
  }
  // Pixels straight from the file, independent of the reader: header is 16 bytes.
  const rawFile = gunzipSync(readFileSync(join(FM_DIR, "t10k-images-idx3-ubyte.gz")));
  assert.equal(rawFile.readUInt32BE(0), 0x803);
  const img = 4321;
  assert.deepEqual(ds.read(img, 1), Float32Array.from(rawFile.subarray(16 + img * 784, 16 + (img + 1) * 784), (v) => v / 255));
  ds.close();
});

test("openDataset spec fashion-mnist:test, FASHION_MNIST_DIR override, idx path", { skip }, async () => {
  const ds = await openDataset("fashion-mnist:test", { inputScale: 1 });
  assert.equal(ds.size, 10000);
  const first = ds.read(0, 1);
  assert.ok(first.some((v) => v > 1)); // inputScale 1 keeps 0..255

  // A copy of the first 50 test images, uncompressed, in a directory named by the env variable.
  const images = readIdx(join(FM_DIR, "t10k-images-idx3-ubyte.gz"));
  const labels = readIdx(join(FM_DIR, "t10k-labels-idx1-ubyte.gz"));
  writeFileSync(join(dir, "t10k-images-idx3-ubyte"), idx(8, [50, 28, 28], images.data.subarray(0, 50 * 784)));
  writeFileSync(join(dir, "t10k-labels-idx1-ubyte"), idx(8, [50], labels.data.subarray(0, 50)));
  const saved = process.env["FASHION_MNIST_DIR"];
  process.env["FASHION_MNIST_DIR"] = dir;
  try {
    assert.equal(fashionMnistDir(), dir);
    const small = await openDataset("fashion-mnist:test", { inputScale: 1 });
    assert.equal(small.size, 50);
    assert.deepEqual(small.read(0, 1), first);
    assert.deepEqual(small.labels, ds.labels!.subarray(0, 50));
  } finally {
    if (saved === undefined) delete process.env["FASHION_MNIST_DIR"];
    else process.env["FASHION_MNIST_DIR"] = saved;
  }
  assert.equal(fashionMnistDir(), saved ?? DEFAULT_FASHION_MNIST_DIR);

  const byPath = await openDataset(join(dir, "t10k-images-idx3-ubyte"), { inputScale: 1 });
  assert.equal(byPath.size, 50);
  assert.deepEqual(byPath.labels, ds.labels!.subarray(0, 50));
});

test("idx files: gzip or not, bad magic, size mismatch, label count mismatch", () => {
  const pixels = Uint8Array.from({ length: 2 * 3 * 4 }, (_, i) => i * 10);
  writeFileSync(join(dir, "tiny-images-idx3-ubyte.gz"), gzipSync(idx(8, [2, 3, 4], pixels)));
  writeFileSync(join(dir, "tiny-labels-idx1-ubyte"), idx(8, [2], Uint8Array.from([9, 4])));
  const ds = openIdxImages(join(dir, "tiny-images-idx3-ubyte.gz"), 10);
  assert.deepEqual(ds.shape, [1, 3, 4]);
  assert.deepEqual(Array.from(ds.labels!), [9, 4]);
  assert.deepEqual(ds.read(1, 1), Float32Array.from(pixels.subarray(12), (v) => v / 10));

  const user = (fn: () => unknown, re: RegExp) => assert.throws(fn, (e: unknown) => e instanceof UserError && re.test(e.message));
  writeFileSync(join(dir, "bad-images-idx3-ubyte"), Buffer.from("PK\x03\x04 zip, not idx"));
  user(() => readIdx(join(dir, "bad-images-idx3-ubyte")), /bad-images-idx3-ubyte: bad magic number/);
  writeFileSync(join(dir, "labels-as-images-idx3-ubyte"), idx(8, [2], Uint8Array.from([1, 2])));
  user(() => openIdxImages(join(dir, "labels-as-images-idx3-ubyte"), 1), /bad magic number 0x00000801 \(rank 1, expected 3\)/);
  writeFileSync(join(dir, "short-images-idx3-ubyte"), idx(8, [2, 3, 4], pixels.subarray(0, 20)));
  user(() => readIdx(join(dir, "short-images-idx3-ubyte")), /20 data bytes but the header says 2x3x4 = 24/);
  writeFileSync(join(dir, "int-images-idx3-ubyte"), idx(0x0c, [1, 1, 1], new Uint8Array(4)));
  user(() => readIdx(join(dir, "int-images-idx3-ubyte")), /element type 0x0c not supported/);
  writeFileSync(join(dir, "odd-images-idx3-ubyte"), idx(8, [2, 3, 4], pixels));
  writeFileSync(join(dir, "odd-labels-idx1-ubyte"), idx(8, [3], Uint8Array.from([1, 2, 3])));
  user(() => openIdxImages(join(dir, "odd-images-idx3-ubyte"), 1), /2 images but 3 labels/);
  user(() => loadFashionMnist("train", join(dir, "nowhere")), /nowhere not found.*FASHION_MNIST_DIR/);
  user(() => loadFashionMnist("train", dir), /train-images-idx3-ubyte\.gz not found/);
});
