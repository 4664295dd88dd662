import { test } from "node:test";
import assert from "node:assert/strict";
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { UserError } from "../errors.js";
import { openDataset } from "./open-dataset.js";
import { openImageFiles, openImageFolder, readLabelsCsv } from "./image-folder.js";
import { decodeImage, encodePng, toNchw } from "./images.js";
import { FIXTURES } from "../test/fixtures.js";

const FACES = join(FIXTURES, "csaw2020/images") + "/";
const root = mkdtempSync(join(tmpdir(), "image-folder-test-"));
test.after(() => rmSync(root, { recursive: true, force: true }));

let n = 0;
function freshDir(): string {
  const d = join(root, `d${n++}`);
  mkdirSync(d);
  return d;
}

/** Label encoded in the fixture names: clean_0_label43.png → 43. */
function labelOf(name: string): number {
  return Number(/label(\d+)\.png$/.exec(name)![1]);
}

async function rejectsUser(p: Promise<unknown>, re: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => e instanceof UserError && re.test(e.message));
}

test("folder of real faces with labels.csv: sorted, labeled, scaled NCHW", async () => {
  const dir = freshDir();
  const names = readdirSync(FACES).filter((f) => f.endsWith(".png")).sort();
  for (const f of names) copyFileSync(join(FACES, f), join(dir, f));
  // Shuffled rows and a header: matching is by name, not by order.
  const rows = [...names].reverse().map((f) => `${f},${labelOf(f)}`);
  writeFileSync(join(dir, "labels.csv"), `file,label\n${rows.join("\n")}\n`);

  const ds = await openDataset(dir, { inputScale: 255 });
  assert.equal(ds.size, 15);
  assert.deepEqual(ds.shape, [3, 55, 47]);
  assert.deepEqual(Array.from(ds.labels!), names.map(labelOf));
  const per = 3 * 55 * 47;
  const all = ds.read(0, 15);
  const batch = ds.read(4, 3);
  assert.deepEqual(batch, all.subarray(4 * per, 7 * per));
  assert.deepEqual(all.subarray(5 * per, 6 * per), toNchw(decodeImage(join(dir, names[5]!)), 255));
  ds.close();
});

test("no CSV: unlabeled; explicit labelsCsv elsewhere with header-less rows", async () => {
  const dir = freshDir();
  const picks = ["clean_2_label196.png", "sunglasses_0_label0.png"];
  for (const f of picks) copyFileSync(join(FACES, f), join(dir, f));
  const unlabeled = await openImageFolder(dir, { inputScale: 1 });
  assert.equal(unlabeled.labels, null);
  assert.equal(unlabeled.size, 2);

  const csv = join(freshDir(), "my-labels.csv");
  writeFileSync(csv, "sunglasses_0_label0.png,0\r\nclean_2_label196.png,196\r\n");
  const ds = await openImageFolder(dir, { inputScale: 1, labelsCsv: csv });
  assert.deepEqual(Array.from(ds.labels!), [196, 0]);
  assert.equal(ds.read(0, 1)[0], decodeImage(join(dir, picks[0]!)).data[0]);
});

test("CSV errors: listed but missing, unlabeled image, bad label", async () => {
  const dir = freshDir();
  for (const f of ["clean_0_label43.png", "clean_1_label328.png"]) copyFileSync(join(FACES, f), join(dir, f));
  writeFileSync(join(dir, "labels.csv"), "clean_0_label43.png,43\nclean_1_label328.png,328\nghost.png,5\n");
  await rejectsUser(openImageFolder(dir, { inputScale: 1 }), /labels\.csv line 3: ghost\.png is not an image in folder/);

  writeFileSync(join(dir, "labels.csv"), "clean_0_label43.png,43\n");
  await rejectsUser(openImageFolder(dir, { inputScale: 1 }), /clean_1_label328\.png has no label in .*labels\.csv/);

  writeFileSync(join(dir, "labels.csv"), "file,label\nclean_0_label43.png,43\nclean_1_label328.png,cat\n");
  await rejectsUser(openImageFolder(dir, { inputScale: 1 }), /labels\.csv line 3: expected `file,label`/);

  writeFileSync(join(dir, "labels.csv"), "clean_0_label43.png,43\nclean_0_label43.png,44\n");
  await rejectsUser(openImageFolder(dir, { inputScale: 1 }), /line 2: clean_0_label43\.png already listed on line 1/);
});

test("CSV labels: a number that is not an integer on the first line is an error, not a header; a label past 32 bits is not wrapped", async () => {
  const dir = freshDir();
  for (const f of ["clean_0_label43.png", "clean_1_label328.png"]) copyFileSync(join(FACES, f), join(dir, f));
  // Read as a header, the first image had no label and the error blamed the image, not the row.
  writeFileSync(join(dir, "labels.csv"), "clean_0_label43.png,43.0\nclean_1_label328.png,328\n");
  await rejectsUser(openImageFolder(dir, { inputScale: 1 }), /labels\.csv line 1: expected `file,label` with an integer label, got "clean_0_label43\.png,43\.0"/);
  writeFileSync(join(dir, "labels.csv"), "clean_0_label43.png,1e3\nclean_1_label328.png,328\n");
  await rejectsUser(openImageFolder(dir, { inputScale: 1 }), /labels\.csv line 1: expected `file,label`/);
  // 4294967339 is 43 + 2^32: stored in 32 bits it became label 43 without a word.
  writeFileSync(join(dir, "labels.csv"), "clean_0_label43.png,4294967339\nclean_1_label328.png,328\n");
  await rejectsUser(openImageFolder(dir, { inputScale: 1 }), /labels\.csv line 1: label 4294967339 of clean_0_label43\.png is out of range for a class label/);
  writeFileSync(join(dir, "labels.csv"), "clean_0_label43.png,43\nclean_1_label328.png,-99999999999999999999\n");
  await rejectsUser(openImageFolder(dir, { inputScale: 1 }), /line 2: label -99999999999999999999 of clean_1_label328\.png is out of range/);
  // A real header still is one.
  writeFileSync(join(dir, "labels.csv"), "file,label\nclean_0_label43.png,43\nclean_1_label328.png,328\n");
  assert.deepEqual(Array.from((await openImageFolder(dir, { inputScale: 1 })).labels!), [43, 328]);
});

test("image of a different size or channel count names the file and both sizes", async () => {
  const dir = freshDir();
  copyFileSync(join(FACES, "clean_0_label43.png"), join(dir, "a.png"));
  writeFileSync(join(dir, "b.png"), encodePng(new Uint8Array(28 * 28), 28, 28, 1));
  await rejectsUser(openImageFolder(dir, { inputScale: 1 }), /b\.png is 1x28x28 \(CxHxW\) but first image .*a\.png has 3x55x47/);
  await rejectsUser(
    openImageFolder(dir, { inputScale: 1, expectShape: [1, 28, 28] }),
    /a\.png is 3x55x47 \(CxHxW\) but expected 1x28x28/,
  );
});

test("openImageFiles: explicit files, CSV covering more files than given", async () => {
  const a = join(FACES, "lipstick_3_label0.png");
  const b = join(FACES, "clean_3_label1268.png");
  const csv = join(freshDir(), "labels.csv");
  const all = readdirSync(FACES).filter((f) => f.endsWith(".png"));
  writeFileSync(csv, all.map((f) => `${f},${labelOf(f)}`).join("\n"));
  const ds = await openImageFiles([a, b], { inputScale: 255, labelsCsv: csv });
  assert.equal(ds.size, 2);
  assert.deepEqual(Array.from(ds.labels!), [0, 1268]);
  assert.deepEqual(ds.read(1, 1), toNchw(decodeImage(b), 255));

  const single = await openDataset(b, { inputScale: 1 });
  assert.equal(single.name, "clean_3_label1268.png");
  assert.deepEqual(single.shape, [3, 55, 47]);

  writeFileSync(csv, "lipstick_3_label0.png,0\nclean_3_label1268.png,1268\nnot_there.png,1\n");
  await rejectsUser(openImageFiles([a, b], { inputScale: 1, labelsCsv: csv }), /line 3: not_there\.png does not exist/);
  await rejectsUser(openImageFiles([join(root, "nope.png")], { inputScale: 1 }), /nope\.png: no such file/);
});

test("readLabelsCsv header detection and empty folder", async () => {
  const csv = join(freshDir(), "l.csv");
  writeFileSync(csv, "\nimage,class\n x.png , 3 \n\"y.png\",-1\n");
  assert.deepEqual(readLabelsCsv(csv), [
    { file: "x.png", label: 3, line: 3 },
    { file: "y.png", label: -1, line: 4 },
  ]);
  await rejectsUser(openImageFolder(freshDir(), { inputScale: 1 }), /no \.png\/\.jpg\/\.jpeg images/);
  await rejectsUser(openDataset(join(root, "absent"), { inputScale: 1 }), /absent: no such file or directory/);
});
