import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import h5wasm from "h5wasm/node";
import { UserError } from "../errors.js";
import { decideLayout, openCsawH5, writeCsawH5 } from "./csaw-h5.js";
import { hasHdf5Signature } from "./hdf5.js";
import { openDataset } from "./open-dataset.js";

const dir = mkdtempSync(join(tmpdir(), "csaw-h5-test-"));
test.after(() => rmSync(dir, { recursive: true, force: true }));

type Typed = Uint8Array | Float32Array | Float64Array;

async function writeH5(name: string, entries: Record<string, { data: Typed; shape: number[] }>): Promise<string> {
  await h5wasm.ready;
  const path = join(dir, name);
  const f = new h5wasm.File(path, "w");
  for (const [key, { data, shape }] of Object.entries(entries)) f.create_dataset({ name: key, data, shape });
  f.close();
  return path;
}

/** Pixel value of image n, channel c, row y, column x: distinct per position so any transposition shows. */
function pixel(n: number, c: number, y: number, x: number): number {
  return (n * 31 + c * 17 + y * 7 + x * 3) % 256;
}

function makeNchw(N: number, C: number, H: number, W: number, Ctor: new (n: number) => Typed): Typed {
  const a = new Ctor(N * C * H * W);
  let i = 0;
  for (let n = 0; n < N; n++) for (let c = 0; c < C; c++) for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) a[i++] = pixel(n, c, y, x);
  return a;
}

function makeNhwc(N: number, C: number, H: number, W: number, Ctor: new (n: number) => Typed): Typed {
  const a = new Ctor(N * C * H * W);
  let i = 0;
  for (let n = 0; n < N; n++) for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) for (let c = 0; c < C; c++) a[i++] = pixel(n, c, y, x);
  return a;
}

function expectedNchw(start: number, count: number, C: number, H: number, W: number, scale: number): Float32Array {
  const out = new Float32Array(count * C * H * W);
  let i = 0;
  for (let n = start; n < start + count; n++) for (let c = 0; c < C; c++) for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) out[i++] = pixel(n, c, y, x) / scale;
  return out;
}

async function rejectsUser(p: Promise<unknown>, re: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => e instanceof UserError && re.test(e.message));
}

test("reads NCHW uint8 lazily in batches, scaled", async () => {
  const [N, C, H, W] = [5, 3, 6, 4];
  const path = await writeH5("nchw_u8.h5", {
    data: { data: makeNchw(N, C, H, W, Uint8Array), shape: [N, C, H, W] },
    label: { data: new Float64Array([4, 3, 2, 1, 0]), shape: [N] },
  });
  const ds = await openCsawH5(path, { inputScale: 255 });
  assert.equal(ds.name, "nchw_u8.h5");
  assert.equal(ds.size, N);
  assert.deepEqual(ds.shape, [C, H, W]);
  assert.deepEqual(Array.from(ds.labels!), [4, 3, 2, 1, 0]);
  assert.deepEqual(ds.read(1, 3), expectedNchw(1, 3, C, H, W, 255));
  assert.deepEqual(ds.read(0, N), expectedNchw(0, N, C, H, W, 255));
  assert.equal(ds.read(2, 0).length, 0);
  assert.throws(() => ds.read(4, 2), RangeError);
  ds.close();
  assert.throws(() => ds.read(0, 1), /closed/);
});

test("reads NHWC float32 and float64 and transposes to NCHW", async () => {
  const [N, C, H, W] = [3, 3, 5, 4];
  for (const Ctor of [Float32Array, Float64Array]) {
    const path = await writeH5(`nhwc_${Ctor.name}.h5`, {
      data: { data: makeNhwc(N, C, H, W, Ctor), shape: [N, H, W, C] },
      label: { data: new Float64Array([7, 8, 9]), shape: [N] },
    });
    const ds = await openDataset(path, { inputScale: 1 });
    assert.deepEqual(ds.shape, [C, H, W]);
    assert.deepEqual(ds.read(0, N), expectedNchw(0, N, C, H, W, 1));
    assert.deepEqual(ds.read(2, 1), expectedNchw(2, 1, C, H, W, 1));
    ds.close();
  }
});

test("single-channel NCHW and the layout decision", async () => {
  const [N, C, H, W] = [2, 1, 4, 5];
  const path = await writeH5("gray.hdf5", {
    data: { data: makeNchw(N, C, H, W, Uint8Array), shape: [N, C, H, W] },
    label: { data: new Float64Array([1, 0]), shape: [N, 1] },
  });
  const ds = await openDataset(path, { inputScale: 255 });
  assert.deepEqual(ds.shape, [1, 4, 5]);
  assert.deepEqual(ds.read(0, 2), expectedNchw(0, 2, C, H, W, 255));
  ds.close();

  assert.equal(decideLayout([10, 3, 55, 47], undefined, "x"), "nchw");
  assert.equal(decideLayout([10, 55, 47, 3], undefined, "x"), "nhwc");
  assert.equal(decideLayout([10, 3, 3, 3], "nhwc", "x"), "nhwc");
  assert.throws(() => decideLayout([10, 3, 5, 3], undefined, "x"), (e: unknown) => e instanceof UserError && /--layout/.test(e.message));
  assert.throws(() => decideLayout([10, 5, 5, 5], undefined, "x"), /--layout/);
});

test("ambiguous layout needs opts.layout", async () => {
  const [N, C, H, W] = [2, 3, 4, 3];
  const path = await writeH5("ambiguous.h5", {
    data: { data: makeNchw(N, C, H, W, Uint8Array), shape: [N, C, H, W] },
    label: { data: new Float64Array([0, 1]), shape: [N] },
  });
  await rejectsUser(openCsawH5(path, { inputScale: 1 }), /ambiguous\.h5.*--layout/);
  const ds = await openCsawH5(path, { inputScale: 1, layout: "nchw" });
  assert.deepEqual(ds.read(0, 2), expectedNchw(0, 2, C, H, W, 1));
  ds.close();
});

test("writeCsawH5 round-trips and uses the CSAW element types", async () => {
  const [N, C, H, W] = [4, 3, 5, 6];
  const data = makeNchw(N, C, H, W, Uint8Array) as Uint8Array;
  const labels = new Int32Array([3, 0, 1282, 7]);
  const path = join(dir, "zoo.h5");
  await writeCsawH5(path, data, [N, C, H, W], labels);
  assert.ok(hasHdf5Signature(path));

  const f = new h5wasm.File(path, "r");
  const d = f.get("data");
  const l = f.get("label");
  assert.ok(d instanceof h5wasm.Dataset && l instanceof h5wasm.Dataset);
  assert.deepEqual(d.shape, [N, C, H, W]);
  assert.deepEqual([d.metadata.type, d.metadata.size, d.metadata.signed], [0, 1, false]); // uint8
  assert.deepEqual([l.metadata.type, l.metadata.size], [1, 8]); // float64
  f.close();

  const ds = await openCsawH5(path, { inputScale: 2 });
  assert.deepEqual(ds.shape, [C, H, W]);
  assert.deepEqual(ds.labels, labels);
  assert.deepEqual(ds.read(0, N), Float32Array.from(data, (v) => v / 2));
  ds.close();

  await assert.rejects(writeCsawH5(join(dir, "no", "such", "dir.h5"), data, [N, C, H, W], labels), UserError);
});

test("user errors name the file and the problem", async () => {
  await rejectsUser(openCsawH5(join(dir, "missing.h5"), { inputScale: 1 }), /missing\.h5: no such file/);

  const notH5 = join(dir, "corrupt.h5");
  writeFileSync(notH5, Buffer.from("this is not an HDF5 file at all, just text".repeat(40)));
  await rejectsUser(openDataset(notH5, { inputScale: 1 }), /corrupt\.h5: not an HDF5 file/);
  const empty = join(dir, "empty.h5");
  writeFileSync(empty, Buffer.alloc(0));
  await rejectsUser(openCsawH5(empty, { inputScale: 1 }), /empty\.h5: not an HDF5 file \(the file is empty\)/);

  const noLabel = await writeH5("nolabel.h5", { data: { data: new Uint8Array(2 * 3 * 4 * 4), shape: [2, 3, 4, 4] } });
  await rejectsUser(openCsawH5(noLabel, { inputScale: 1 }), /nolabel\.h5: no `label` dataset.*`data`/);

  const noData = await writeH5("nodata.h5", { label: { data: new Float64Array([0, 1]), shape: [2] } });
  await rejectsUser(openCsawH5(noData, { inputScale: 1 }), /nodata\.h5: no `data` dataset/);

  const rank3 = await writeH5("rank3.h5", {
    data: { data: new Uint8Array(2 * 4 * 4), shape: [2, 4, 4] },
    label: { data: new Float64Array([0, 1]), shape: [2] },
  });
  await rejectsUser(openCsawH5(rank3, { inputScale: 1 }), /rank3\.h5: `data` has shape 2x4x4 \(rank 3\)/);

  const count = await writeH5("count.h5", {
    data: { data: new Uint8Array(3 * 3 * 4 * 4), shape: [3, 3, 4, 4] },
    label: { data: new Float64Array([0, 1]), shape: [2] },
  });
  await rejectsUser(openCsawH5(count, { inputScale: 1 }), /count\.h5: 2 labels for 3 images/);

  const frac = await writeH5("frac.h5", {
    data: { data: new Uint8Array(2 * 3 * 4 * 4), shape: [2, 3, 4, 4] },
    label: { data: new Float64Array([0, 1.5]), shape: [2] },
  });
  await rejectsUser(openCsawH5(frac, { inputScale: 1 }), /frac\.h5: `label`: label 1\.5 of image 1 is not an integer/);

  // An integer, only too large for a label: "not an integer" was the wrong complaint.
  const huge = await writeH5("huge.h5", {
    data: { data: new Uint8Array(2 * 3 * 4 * 4), shape: [2, 3, 4, 4] },
    label: { data: new Float64Array([0, 1e12]), shape: [2] },
  });
  await rejectsUser(openCsawH5(huge, { inputScale: 1 }), /huge\.h5: `label`: label 1000000000000 of image 1 is out of range for a class label$/);

  // A scalar `label` printed its empty shape as "has shape , expected a vector of 1 labels".
  await h5wasm.ready;
  const scalar = join(dir, "scalar_label.h5");
  const f = new h5wasm.File(scalar, "w");
  f.create_dataset({ name: "data", data: new Uint8Array(3 * 4 * 4), shape: [1, 3, 4, 4] });
  f.create_dataset({ name: "label", data: 3, dtype: "<d" });
  f.close();
  await rejectsUser(openCsawH5(scalar, { inputScale: 1 }), /scalar_label\.h5: `label` is a single number, expected a vector of 1 label$/);
});

/** An NHWC float32 file of `n` 4x4x3 images with pixel values 0..255 (except what `edit` changes), labels 0..n-1. */
async function floatFile(name: string, n: number, edit: (a: Float32Array) => void = () => {}): Promise<string> {
  const a = makeNhwc(n, 3, 4, 4, Float32Array) as Float32Array;
  edit(a);
  return writeH5(name, { data: { data: a, shape: [n, 4, 4, 3] }, label: { data: Float64Array.from({ length: n }, (_, i) => i), shape: [n] } });
}

test("NaN/Inf pixels: an error naming the file and the first bad index, at open or when its batch is read", async () => {
  // Image 1, row 2, column 3, channel 1 in the file's N×H×W×C order.
  const at = (a: Float32Array, v: number) => (a[((1 * 4 + 2) * 4 + 3) * 3 + 1] = v);
  const nan = await floatFile("nan.h5", 3, (a) => at(a, NaN));
  await rejectsUser(openDataset(nan, { inputScale: 255 }), /^data .*nan\.h5: pixel data\[1, 2, 3, 1\] is NaN; pixels must be finite$/);
  const inf = await floatFile("inf.h5", 3, (a) => at(a, -Infinity));
  await rejectsUser(openDataset(inf, { inputScale: 1 }), /inf\.h5: pixel data\[1, 2, 3, 1\] is -Infinity/);
  // Past the images sampled at open, the bad value is caught by the read that reaches it.
  const late = await floatFile("late.h5", 300, (a) => (a[290 * 48 + 5] = Infinity));
  const ds = await openDataset(late, { inputScale: 255 });
  assert.equal(ds.read(0, 100).length, 100 * 48);
  assert.throws(() => ds.read(280, 20), (e: unknown) => e instanceof UserError && /late\.h5: pixel data\[290, 0, 1, 2\] is Infinity/.test(e.message));
  ds.close();
});

test("pixels outside 0..255 are an error; so is data already in [0, 1] under --input-scale 255", async () => {
  const neg = await floatFile("negative.h5", 2, (a) => (a[7] = -0.5));
  await rejectsUser(openDataset(neg, { inputScale: 255 }), /negative\.h5: pixel data\[0, 0, 2, 1\] is -0\.5, outside 0\.\.255/);
  const big = await floatFile("big.h5", 2, (a) => (a[50] = 256));
  await rejectsUser(openDataset(big, { inputScale: 1 }), /big\.h5: pixel data\[1, 0, 0, 2\] is 256, outside 0\.\.255/);
  const unit = await floatFile("unit.h5", 5, (a) => a.forEach((v, i) => (a[i] = v / 255)));
  await rejectsUser(openDataset(unit, { inputScale: 255 }), /unit\.h5: pixel values lie in \[0, 0\.737\], already scaled to \[0, 1\], but --input-scale 255 divides them again; pass --input-scale 1/);
  // Stored in [0, 1] and read at scale 1, the values reach the model unchanged.
  const ds = await openDataset(unit, { inputScale: 1 });
  assert.deepEqual(ds.read(0, 5), Float32Array.from(expectedNchw(0, 5, 3, 4, 4, 1), (v) => Math.fround(v / 255)));
  ds.close();
  // All-black float images say nothing about the scale.
  const black = await floatFile("black.h5", 2, (a) => a.fill(0));
  (await openDataset(black, { inputScale: 255 })).close();
});

test("images declared far larger than stored (unwritten chunks): too large is an error; large ones are sampled within memory", async () => {
  await h5wasm.ready;
  const declare = (name: string, shape: number[], chunk: number) => {
    const path = join(dir, name);
    const f = new h5wasm.File(path, "w");
    const d = f.create_dataset({ name: "data", data: new Float64Array(8), shape: [1, 1, 2, 4], maxshape: [null, 1, null, null], chunks: [1, 1, chunk, chunk], dtype: "<d" });
    d.resize(shape);
    f.create_dataset({ name: "label", data: new Float64Array(shape[0]!), shape: [shape[0]!], dtype: "<d" });
    f.close();
    return path;
  };
  // 6 KB of HDF5 declaring two 40000x40000 images: the scale check's read was an internal error (12.8 GB).
  const huge = declare("huge_images.h5", [2, 1, 40000, 40000], 8);
  await rejectsUser(openCsawH5(huge, { inputScale: 1 }), /huge_images\.h5: `data` holds images of 1x40000x40000 \(CxHxW\), too large \(at most 67108864 pixels per image/);
  // 300 million labels declared (2.4 GB as float64, in a small file): h5wasm's allocation error was an internal error.
  const many = join(dir, "many_labels.h5");
  const f = new h5wasm.File(many, "w");
  f.create_dataset({ name: "data", data: new Uint8Array(4), shape: [1, 1, 2, 2], maxshape: [null, 1, 2, 2], chunks: [1 << 20, 1, 2, 2], dtype: "<B" }).resize([3e8, 1, 2, 2]);
  f.create_dataset({ name: "label", data: new Float64Array(1), shape: [1], maxshape: [null], chunks: [1 << 20], dtype: "<d" }).resize([3e8]);
  f.close();
  await rejectsUser(openCsawH5(many, { inputScale: 1 }), /many_labels\.h5: too large to read \(one read needs 2\.4 GB; the HDF5 reader holds at most 2\.1 GB\)$/);
  // 300 float64 images of 1050x1050: 256 of them in one read were over h5wasm's 2 GB.
  const large = declare("large_images.h5", [300, 1, 1050, 1050], 1050);
  const ds = await openCsawH5(large, { inputScale: 1 });
  assert.equal(ds.size, 300);
  assert.equal(ds.read(299, 1).length, 1050 * 1050);
  ds.close();
});
