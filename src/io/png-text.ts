// PNG tEXt chunks (keyword, Latin-1 text), written and read here because pngjs neither writes them nor hands
// them back (its parser skips ancillary chunks unread).

const PNG_MAGIC = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** CRC-32 as PNG chunks use it (ISO 3309, the zlib one); zlib.crc32 only came with Node 20.15. */
export function crc32(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function isLatin1(s: string): boolean {
  return /^[\u0001-\u00ff]*$/.test(s);
}

function chunk(type: string, data: Buffer): Buffer {
  const out = Buffer.alloc(12 + data.length);
  out.writeUInt32BE(data.length, 0);
  out.write(type, 4, "latin1");
  data.copy(out, 8);
  out.writeUInt32BE(crc32(out.subarray(4, 8 + data.length)), 8 + data.length);
  return out;
}

/**
 * `png` with a tEXt chunk per entry, right after IHDR. Keywords are 1-79 Latin-1 characters without
 * leading, trailing or double spaces, text Latin-1 without NUL (the PNG specification's rules).
 */
export function addPngText(png: Buffer, entries: Readonly<Record<string, string>>): Buffer {
  if (png.length < 33 || !png.subarray(0, 8).equals(PNG_MAGIC) || png.toString("latin1", 12, 16) !== "IHDR") {
    throw new Error("addPngText: not a PNG starting with IHDR");
  }
  const ihdrEnd = 8 + 12 + png.readUInt32BE(8);
  const chunks = Object.entries(entries).map(([keyword, text]) => {
    if (!/^[^ ]+( [^ ]+)*$/.test(keyword) || keyword.length > 79 || !isLatin1(keyword)) throw new Error(`addPngText: bad keyword ${JSON.stringify(keyword)}`);
    if (!isLatin1(text)) throw new Error(`addPngText: text of ${keyword} is not Latin-1 without NUL`);
    return chunk("tEXt", Buffer.from(`${keyword}\0${text}`, "latin1"));
  });
  return Buffer.concat([png.subarray(0, ihdrEnd), ...chunks, png.subarray(ihdrEnd)]);
}

/**
 * The tEXt chunks of a PNG, keyword → text (the first of a repeated keyword). A chunk whose CRC does not
 * match, or a malformed one, is left out (ancillary data, which pngjs skips unchecked too); reading stops at
 * IEND or where the chunk structure breaks off. Not a PNG: an empty map.
 */
export function readPngText(png: Uint8Array): Map<string, string> {
  const buf = Buffer.from(png.buffer, png.byteOffset, png.byteLength);
  const text = new Map<string, string>();
  if (buf.length < 8 || !buf.subarray(0, 8).equals(PNG_MAGIC)) return text;
  for (let at = 8; at + 12 <= buf.length; ) {
    const length = buf.readUInt32BE(at);
    const end = at + 12 + length;
    if (end > buf.length) break;
    const type = buf.toString("latin1", at + 4, at + 8);
    if (type === "IEND") break;
    if (type === "tEXt" && crc32(buf.subarray(at + 4, at + 8 + length)) === buf.readUInt32BE(at + 8 + length)) {
      const data = buf.subarray(at + 8, at + 8 + length);
      const nul = data.indexOf(0);
      if (nul >= 1 && nul <= 79) {
        const keyword = data.toString("latin1", 0, nul);
        if (!text.has(keyword)) text.set(keyword, data.toString("latin1", nul + 1));
      }
    }
    at = end;
  }
  return text;
}
