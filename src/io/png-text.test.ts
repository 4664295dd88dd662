import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import pngjs from "pngjs";
import { decodeImageBuffer, encodePng } from "./images.js";
import { addPngText, crc32, readPngText } from "./png-text.js";
import { FIXTURES } from "../test/fixtures.js";

/** Chunk types in file order, walked independently of the code under test. */
function chunkTypes(png: Buffer): string[] {
  const types: string[] = [];
  for (let at = 8; at < png.length; at += 12 + png.readUInt32BE(at)) types.push(png.toString("latin1", at + 4, at + 8));
  return types;
}

test("crc32 is the PNG one (check value and a real IHDR chunk)", () => {
  assert.equal(crc32(Buffer.from("123456789", "latin1")), 0xcbf43926);
  const face = readFileSync(join(FIXTURES, "csaw2020/images/clean_0_label43.png"));
  assert.equal(crc32(face.subarray(12, 12 + 4 + 13)), face.readUInt32BE(12 + 4 + 13));
});

test("tEXt chunks: written after IHDR with a valid CRC, read back; pixels and other readers unaffected", () => {
  const data = Uint8Array.from({ length: 5 * 4 * 3 }, (_, i) => (i * 29) % 256);
  const plain = encodePng(data, 5, 4, 3);
  const tagged = encodePng(data, 5, 4, 3, { "badnet-trigger": "pattern", Comment: "é ü" });
  assert.deepEqual(chunkTypes(tagged).slice(0, 3), ["IHDR", "tEXt", "tEXt"]);
  assert.deepEqual([...readPngText(tagged)], [["badnet-trigger", "pattern"], ["Comment", "é ü"]]);
  assert.equal(readPngText(plain).size, 0);
  assert.deepEqual(decodeImageBuffer(tagged, "t").data, decodeImageBuffer(plain, "p").data);
  // pngjs checks every CRC it reads; with checkCRC it still parses the file.
  assert.equal(pngjs.PNG.sync.read(tagged, { checkCRC: true }).width, 5);
  // A third-party file keeps its chunks; ours go in front of them.
  const face = readFileSync(join(FIXTURES, "csaw2020/images/clean_0_label43.png"));
  const faceTagged = addPngText(face, { k: "v" });
  assert.equal(readPngText(faceTagged).get("k"), "v");
  assert.deepEqual(chunkTypes(faceTagged).filter((t) => t !== "tEXt"), chunkTypes(face).filter((t) => t !== "tEXt"));
});

test("tEXt chunks: a damaged chunk, a truncated file or non-PNG bytes read as no text; bad keywords are refused", () => {
  const tagged = encodePng(new Uint8Array(4), 2, 2, 1, { "badnet-trigger": "mask" });
  const bad = Buffer.from(tagged);
  bad[33 + 8 + 2] ^= 0x01; // a byte of the keyword: the CRC no longer matches
  assert.equal(readPngText(bad).size, 0);
  assert.equal(readPngText(tagged.subarray(0, 40)).size, 0);
  assert.equal(readPngText(Buffer.from("not a png at all")).size, 0);
  assert.equal(readPngText(new Uint8Array(0)).size, 0);
  for (const k of ["", " lead", "trail ", "two  spaces", "x".repeat(80), "nul\0"]) {
    assert.throws(() => encodePng(new Uint8Array(4), 2, 2, 1, { [k]: "v" }), /bad keyword/, JSON.stringify(k));
  }
  assert.throws(() => encodePng(new Uint8Array(4), 2, 2, 1, { k: "€" }), /not Latin-1/);
  assert.throws(() => addPngText(Buffer.from("GIF89a"), { k: "v" }), /not a PNG/);
});
