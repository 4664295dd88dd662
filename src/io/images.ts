// PNG/JPEG decoding to 8-bit HWC pixels (format told by magic bytes), PNG encoding, and HWC → NCHW float.
import { readFileSync } from "node:fs";
import pngjs from "pngjs";
import jpeg from "jpeg-js";
import { fail } from "../errors.js";
import { addPngText } from "./png-text.js";

const { PNG } = pngjs;

export interface DecodedImage {
  width: number;
  height: number;
  channels: 1 | 3;
  /** HWC, 8 bits per sample. */
  data: Uint8Array;
}

const PNG_MAGIC = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

export function isPng(buf: Uint8Array): boolean {
  return buf.length >= 8 && Buffer.from(buf.buffer, buf.byteOffset, 8).equals(PNG_MAGIC);
}

export function isJpeg(buf: Uint8Array): boolean {
  return buf.length >= 3 && buf[0] === 0xff && buf[1] === 0xd8 && buf[2] === 0xff;
}

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** Reads and decodes a PNG or JPEG file. Grayscale stays 1 channel; alpha is dropped. */
export function decodeImage(path: string): DecodedImage {
  let buf: Buffer;
  try {
    buf = readFileSync(path);
  } catch (e) {
    fail(`image ${path}: cannot read (${(e as NodeJS.ErrnoException).code ?? message(e)})`);
  }
  return decodeImageBuffer(buf, path);
}

/** Decodes PNG/JPEG bytes; `name` is used in error messages. */
export function decodeImageBuffer(buf: Buffer, name: string): DecodedImage {
  if (isPng(buf)) return decodePng(buf, name);
  if (isJpeg(buf)) return decodeJpeg(buf, name);
  fail(`image ${name}: not a PNG or JPEG file`);
}

/**
 * The most pixels an image may have (8192x8192): a file of a few hundred KB can declare 60000x60000 pixels, which
 * decoding would spend minutes and gigabytes on. Checked on the header's size, before any pixel is decoded.
 */
export const MAX_IMAGE_PIXELS = 8192 * 8192;

function checkImageSize(name: string, kind: string, width: number, height: number): void {
  // PNG forbids a zero size; a JPEG's height 0 means "given later" (DNL), left to the decoder.
  if (kind === "PNG" && (width === 0 || height === 0)) fail(`image ${name}: corrupt PNG (its header says ${width}x${height} pixels)`);
  if (width * height > MAX_IMAGE_PIXELS) {
    fail(`image ${name} is ${width}x${height} pixels, too large to decode (at most ${MAX_IMAGE_PIXELS} pixels, e.g. 8192x8192)`);
  }
}

function decodePng(buf: Buffer, name: string): DecodedImage {
  // The first chunk is IHDR: length (4), "IHDR", width (4), height (4).
  if (buf.length >= 24 && buf.toString("latin1", 12, 16) === "IHDR") checkImageSize(name, "PNG", buf.readUInt32BE(16), buf.readUInt32BE(20));
  let png;
  try {
    png = PNG.sync.read(buf);
  } catch (e) {
    // A file cut short fails inside pngjs' stream ("There are some read requests waitng on finished stream"):
    // with no IEND chunk the file simply ends early, which is what the user needs to hear.
    if (!buf.includes("IEND", 8, "latin1")) fail(`image ${name}: truncated PNG (the file ends before its last chunk, IEND)`);
    fail(`image ${name}: corrupt PNG (${message(e)})`);
  }
  const { width, height } = png;
  // pngjs always hands back RGBA 8-bit; `color` is false only for gray / gray+alpha files.
  const channels: 1 | 3 = png.color ? 3 : 1;
  const rgba = png.data;
  if (rgba.length !== width * height * 4) fail(`image ${name}: corrupt PNG (pixel data size mismatch)`);
  const data = new Uint8Array(width * height * channels);
  for (let p = 0, o = 0; p < width * height; p++) {
    for (let ch = 0; ch < channels; ch++) data[o++] = rgba[p * 4 + ch]!;
  }
  return { width, height, channels, data };
}

/** The JPEG frame header: components (1 = grayscale) and size; components 0 when no frame header is found. */
function jpegFrame(buf: Uint8Array): { components: number; width: number; height: number } {
  const none = { components: 0, width: 0, height: 0 };
  let i = 2;
  while (i + 4 <= buf.length) {
    if (buf[i] !== 0xff) return none;
    const marker = buf[i + 1]!;
    if (marker === 0xff) {
      i++; // fill byte
      continue;
    }
    if (marker === 0xd8 || (marker >= 0xd0 && marker <= 0xd7) || marker === 0x01) {
      i += 2;
      continue;
    }
    const len = (buf[i + 2]! << 8) | buf[i + 3]!;
    // SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC).
    if (marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc) {
      // FF Cn, length (2), precision (1), height (2), width (2), components (1).
      if (i + 9 >= buf.length) return none;
      return { components: buf[i + 9]!, height: (buf[i + 5]! << 8) | buf[i + 6]!, width: (buf[i + 7]! << 8) | buf[i + 8]! };
    }
    if (marker === 0xda) return none; // start of scan before any frame header
    i += 2 + len;
  }
  return none;
}

function decodeJpeg(buf: Buffer, name: string): DecodedImage {
  const { components, width: w, height: h } = jpegFrame(buf);
  if (components === 0) fail(`image ${name}: corrupt JPEG (no frame header)`);
  checkImageSize(name, "JPEG", w, h);
  let img;
  try {
    img = jpeg.decode(buf, { useTArray: true, formatAsRGBA: false, tolerantDecoding: false });
  } catch (e) {
    fail(`image ${name}: corrupt JPEG (${message(e)})`);
  }
  const { width, height } = img;
  if (img.data.length !== width * height * 3) fail(`image ${name}: corrupt JPEG (pixel data size mismatch)`);
  if (components !== 1) return { width, height, channels: 3, data: img.data };
  // jpeg-js expands grayscale to R=G=B; keep one channel like a grayscale PNG.
  const data = new Uint8Array(width * height);
  for (let p = 0; p < data.length; p++) data[p] = img.data[p * 3]!;
  return { width, height, channels: 1, data };
}

/** Encodes 8-bit HWC pixels (gray, RGB or RGBA) as a PNG of the same color type, with `text` as tEXt chunks. */
export function encodePng(data: Uint8Array, width: number, height: number, channels: 1 | 3 | 4, text?: Readonly<Record<string, string>>): Buffer {
  if (data.length !== width * height * channels) {
    throw new Error(`encodePng: ${data.length} bytes for ${width}x${height}x${channels}`);
  }
  const colorType = channels === 1 ? 0 : channels === 3 ? 2 : 6;
  const png = new PNG({ width, height });
  png.data = Buffer.from(data.buffer, data.byteOffset, data.length);
  // Same input and output color type: pngjs copies the samples through unchanged.
  const out = PNG.sync.write(png, { colorType, inputColorType: colorType, inputHasAlpha: channels === 4 });
  return text ? addPngText(out, text) : out;
}

/** HWC uint8 → CHW float32 divided by inputScale. */
export function toNchw(img: DecodedImage, inputScale: number): Float32Array {
  const { width, height, channels, data } = img;
  const hw = width * height;
  const out = new Float32Array(channels * hw);
  for (let p = 0, src = 0; p < hw; p++) {
    for (let ch = 0; ch < channels; ch++) out[ch * hw + p] = data[src++]! / inputScale;
  }
  return out;
}

/** HWC → CHW keeping uint8 (for datasets that scale on read). */
export function toChwBytes(img: DecodedImage, out: Uint8Array = new Uint8Array(img.data.length), offset = 0): Uint8Array {
  const { width, height, channels, data } = img;
  const hw = width * height;
  for (let p = 0, src = 0; p < hw; p++) {
    for (let ch = 0; ch < channels; ch++) out[offset + ch * hw + p] = data[src++]!;
  }
  return out;
}
