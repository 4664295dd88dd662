import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import jpeg from "jpeg-js";
import { UserError } from "../errors.js";
import { decodeImage, encodePng, toNchw } from "./images.js";
import { FIXTURES } from "../test/fixtures.js";

const FACES = join(FIXTURES, "csaw2020/images") + "/";
const dir = mkdtempSync(join(tmpdir(), "images-test-"));
test.after(() => rmSync(dir, { recursive: true, force: true }));

/** PNG chunk parse independent of pngjs: IHDR width/height/colorType. */
function ihdr(buf: Buffer): { width: number; height: number; colorType: number } {
  assert.equal(buf.toString("latin1", 12, 16), "IHDR");
  return { width: buf.readUInt32BE(16), height: buf.readUInt32BE(20), colorType: buf[25]! };
}

test("decodes the real CSAW face PNGs as 55x47 RGB", () => {
  const files = readdirSync(FACES).filter((f) => f.endsWith(".png"));
  assert.equal(files.length, 15);
  for (const f of files) {
    const img = decodeImage(join(FACES, f));
    const header = ihdr(readFileSync(join(FACES, f)));
    assert.equal(img.height, 55);
    assert.equal(img.width, 47);
    assert.equal(img.width, header.width);
    assert.equal(img.channels, 3);
    assert.equal(img.data.length, 55 * 47 * 3);
    // A real photo: not constant, uses a good part of the 0..255 range.
    let lo = 255;
    let hi = 0;
    for (const v of img.data) {
      lo = Math.min(lo, v);
      hi = Math.max(hi, v);
    }
    assert.ok(hi - lo > 100, `${f}: range ${lo}..${hi}`);
  }
});

test("PNG encode/decode round-trips gray, RGB and RGBA (alpha dropped)", () => {
  const [w, h] = [7, 5];
  for (const channels of [1, 3, 4] as const) {
    const data = Uint8Array.from({ length: w * h * channels }, (_, i) => (i * 37 + 11) % 256);
    const png = encodePng(data, w, h, channels);
    assert.deepEqual(ihdr(png), { width: w, height: h, colorType: channels === 1 ? 0 : channels === 3 ? 2 : 6 });
    const path = join(dir, `rt${channels}.dat`); // extension says nothing: format comes from magic bytes
    writeFileSync(path, png);
    const img = decodeImage(path);
    assert.deepEqual([img.width, img.height, img.channels], [w, h, channels === 1 ? 1 : 3]);
    const expected = channels === 4 ? data.filter((_, i) => i % 4 !== 3) : data;
    assert.deepEqual(img.data, expected);
  }
});

test("JPEG decode: RGB close to the source, grayscale stays 1 channel", () => {
  const src = decodeImage(join(FACES, "clean_0_label43.png"));
  const rgba = new Uint8Array(src.width * src.height * 4);
  for (let p = 0; p < src.width * src.height; p++) {
    for (let c = 0; c < 3; c++) rgba[p * 4 + c] = src.data[p * 3 + c]!;
    rgba[p * 4 + 3] = 255;
  }
  const jpgPath = join(dir, "face.png"); // misleading extension on purpose
  writeFileSync(jpgPath, jpeg.encode({ data: rgba, width: src.width, height: src.height }, 95).data);
  const img = decodeImage(jpgPath);
  assert.deepEqual([img.width, img.height, img.channels], [47, 55, 3]);
  let err = 0;
  for (let i = 0; i < img.data.length; i++) err += Math.abs(img.data[i]! - src.data[i]!);
  assert.ok(err / img.data.length < 4, `mean abs error ${err / img.data.length}`);

  // A 1-component JPEG: jpeg-js encodes 3 components, so patch the frame header of a gray image.
  const grayPath = join(dir, "gray.jpg");
  writeFileSync(grayPath, grayJpeg());
  const gray = decodeImage(grayPath);
  assert.equal(gray.channels, 1);
  assert.deepEqual([gray.width, gray.height], [8, 8]);
  assert.deepEqual(gray.data, new Uint8Array(64).fill(128)); // DC 0 = level-shifted mid-gray
});

/** A minimal baseline 8x8 grayscale JPEG (one component, all mid-gray), assembled by hand. */
function grayJpeg(): Buffer {
  const seg = (marker: number, body: number[]) => [0xff, marker, (body.length + 2) >> 8, (body.length + 2) & 255, ...body];
  const dqt = seg(0xdb, [0x00, ...new Array(64).fill(1)]);
  const sof = seg(0xc0, [8, 0, 8, 0, 8, 1, 1, 0x11, 0]);
  // DC table: one code of length 1 for category 0; AC table: one code of length 1 for EOB (0x00).
  const dhtDc = seg(0xc4, [0x00, 1, ...new Array(15).fill(0), 0x00]);
  const dhtAc = seg(0xc4, [0x10, 1, ...new Array(15).fill(0), 0x00]);
  const sos = seg(0xda, [1, 1, 0x00, 0, 63, 0]);
  // DC diff category 0 ("0") then EOB ("0"), padded with 1s.
  const scan = [0x3f];
  return Buffer.from([0xff, 0xd8, ...dqt, ...sof, ...dhtDc, ...dhtAc, ...sos, ...scan, 0xff, 0xd9]);
}

test("toNchw moves channels first and scales", () => {
  const img = { width: 2, height: 1, channels: 3 as const, data: Uint8Array.from([10, 20, 30, 40, 50, 60]) };
  assert.deepEqual(toNchw(img, 10), Float32Array.from([1, 4, 2, 5, 3, 6]));
  const g = { width: 3, height: 1, channels: 1 as const, data: Uint8Array.from([0, 255, 51]) };
  assert.deepEqual(toNchw(g, 255), Float32Array.from([0, 1, 51 / 255]));
});

test("unknown, corrupt and missing files are user errors naming the file", () => {
  const bad = (path: string, re: RegExp) =>
    assert.throws(() => decodeImage(path), (e: unknown) => e instanceof UserError && e.message.includes(path) && re.test(e.message));
  const txt = join(dir, "notes.png");
  writeFileSync(txt, "hello, not an image");
  bad(txt, /not a PNG or JPEG/);

  const png = readFileSync(join(FACES, "clean_1_label328.png"));
  const truncated = join(dir, "truncated.png");
  writeFileSync(truncated, png.subarray(0, 200));
  bad(truncated, /truncated PNG \(the file ends before its last chunk, IEND\)$/);
  // The signature alone: pngjs said "There are some read requests waitng on finished stream".
  writeFileSync(truncated, png.subarray(0, 8));
  bad(truncated, /truncated PNG/);
  // A complete file with damaged image data is corrupt, not truncated.
  const damaged = Buffer.from(png);
  damaged.fill(0x55, 100, 300);
  const garbledPng = join(dir, "garbled.png");
  writeFileSync(garbledPng, damaged);
  bad(garbledPng, /corrupt PNG \(/);

  const garbled = join(dir, "garbled.jpg");
  writeFileSync(garbled, Buffer.from([0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10, 1, 2, 3]));
  bad(garbled, /corrupt JPEG/);

  bad(join(dir, "nope.png"), /cannot read/);
});

test("an image whose header declares more than 8192x8192 pixels is refused before decoding (a small file, gigabytes decoded)", () => {
  const bad = (path: string, re: RegExp) =>
    assert.throws(() => decodeImage(path), (e: unknown) => e instanceof UserError && e.message.includes(path) && re.test(e.message));
  // A real 28x28 PNG with its IHDR size rewritten (the CRC no longer matches: the size is read first).
  const png = Buffer.from(encodePng(new Uint8Array(28 * 28), 28, 28, 1));
  png.writeUInt32BE(60000, 16);
  png.writeUInt32BE(60000, 20);
  const huge = join(dir, "huge.png");
  writeFileSync(huge, png);
  const t0 = performance.now();
  bad(huge, /huge\.png is 60000x60000 pixels, too large to decode \(at most 67108864 pixels, e\.g\. 8192x8192\)$/);
  assert.ok(performance.now() - t0 < 1000, "refused from the header, without decoding");
  png.writeUInt32BE(0, 16);
  writeFileSync(huge, png);
  bad(huge, /corrupt PNG \(its header says 0x60000 pixels\)/);
  // A JPEG frame header of 65535x65535.
  const jpg = Buffer.from(jpeg.encode({ data: Buffer.alloc(8 * 8 * 4, 128), width: 8, height: 8 }, 90).data);
  const sof = jpg.indexOf(Buffer.from([0xff, 0xc0]));
  jpg.writeUInt16BE(65535, sof + 5);
  jpg.writeUInt16BE(65535, sof + 7);
  const hugeJpg = join(dir, "huge.jpg");
  writeFileSync(hugeJpg, jpg);
  bad(hugeJpg, /huge\.jpg is 65535x65535 pixels, too large to decode/);
});
