import { test } from "node:test";
import assert from "node:assert/strict";
import { decodeString, ProtoError, ProtoWriter, readFields, readFloats, readVarints } from "./protobuf.js";

test("writer and reader round-trip every wire type", () => {
  const w = new ProtoWriter();
  w.varint(1, 300).varint(2, -5).float(3, 1.5).string(4, "héllo");
  w.packedVarints(5, [1, 2n ** 40n, -1]);
  w.varint(6, 7).varint(6, 8); // unpacked repeated
  w.packedFloats(7, [0.25, -2]).float(7, 3);
  w.message(8, (m) => m.string(1, "inner").varint(2, 42));
  w.bytes(9, new Uint8Array(5000).fill(7)); // large payloads are chunked by the writer
  const f = readFields(w.finish());
  assert.deepEqual(f.map((x) => [x.field, x.wire]), [[1, 0], [2, 0], [3, 5], [4, 2], [5, 2], [6, 0], [6, 0], [7, 2], [7, 5], [8, 2], [9, 2]]);
  assert.equal(f[0].int, 300n);
  assert.equal(BigInt.asIntN(64, f[1].int!), -5n);
  assert.deepEqual(readFloats(f, 3), [1.5]);
  assert.equal(decodeString(f[3].bytes), "héllo");
  assert.deepEqual(readVarints(f, 5).map((v) => BigInt.asIntN(64, v)), [1n, 2n ** 40n, -1n]);
  assert.deepEqual(readVarints(f, 6), [7n, 8n]);
  assert.deepEqual(readFloats(f, 7), [0.25, -2, 3]);
  const inner = readFields(f[9].bytes!);
  assert.equal(decodeString(inner[0].bytes), "inner");
  assert.equal(inner[1].int, 42n);
  assert.equal(f[10].bytes!.length, 5000);
  assert.ok(f[10].bytes!.every((b) => b === 7));
});

test("malformed input throws ProtoError instead of hanging or reading past the end", () => {
  assert.throws(() => readFields(Uint8Array.of(0x08, 0x80)), ProtoError); // truncated varint
  assert.throws(() => readFields(Uint8Array.of(0x0a, 0x05, 1, 2)), ProtoError); // length beyond the end
  assert.throws(() => readFields(Uint8Array.of(0x0b)), ProtoError); // wire type 3 (groups)
  assert.throws(() => readFields(Uint8Array.of(0x00)), ProtoError); // field 0
  // A packed run whose last varint has its continuation bit set.
  const f = readFields(Uint8Array.of(0x0a, 0x02, 0x01, 0x80));
  assert.throws(() => readVarints(f, 1), ProtoError);
});
