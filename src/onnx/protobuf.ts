// Minimal protobuf wire-format writer and reader: just what ONNX's ModelProto needs.

export class ProtoWriter {
  private chunks: Uint8Array[] = [];
  private buf = new Uint8Array(1024);
  private pos = 0;

  private ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    this.flush();
    if (n > this.buf.length) this.buf = new Uint8Array(Math.max(n, this.buf.length * 2));
  }

  private flush(): void {
    if (this.pos > 0) this.chunks.push(this.buf.slice(0, this.pos));
    this.pos = 0;
  }

  private varintRaw(v: bigint | number): void {
    let x = BigInt.asUintN(64, BigInt(v));
    this.ensure(10);
    while (x >= 0x80n) {
      this.buf[this.pos++] = Number(x & 0x7fn) | 0x80;
      x >>= 7n;
    }
    this.buf[this.pos++] = Number(x);
  }

  private tag(field: number, wire: number): void {
    this.varintRaw((field << 3) | wire);
  }

  private bytesRaw(b: Uint8Array): void {
    this.varintRaw(b.length);
    if (b.length > 4096) {
      this.flush();
      this.chunks.push(b);
      return;
    }
    this.ensure(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
  }

  varint(field: number, v: number | bigint): this {
    this.tag(field, 0);
    this.varintRaw(v);
    return this;
  }

  float(field: number, v: number): this {
    this.tag(field, 5);
    this.ensure(4);
    new DataView(this.buf.buffer, this.buf.byteOffset).setFloat32(this.pos, v, true);
    this.pos += 4;
    return this;
  }

  bytes(field: number, b: Uint8Array): this {
    this.tag(field, 2);
    this.bytesRaw(b);
    return this;
  }

  string(field: number, s: string): this {
    return this.bytes(field, new TextEncoder().encode(s));
  }

  message(field: number, build: (w: ProtoWriter) => void): this {
    const w = new ProtoWriter();
    build(w);
    return this.bytes(field, w.finish());
  }

  packedVarints(field: number, vs: readonly (number | bigint)[]): this {
    const w = new ProtoWriter();
    for (const v of vs) w.varintRaw(v);
    return this.bytes(field, w.finish());
  }

  packedFloats(field: number, vs: readonly number[]): this {
    const b = new Uint8Array(vs.length * 4);
    const dv = new DataView(b.buffer);
    vs.forEach((v, i) => dv.setFloat32(i * 4, v, true));
    return this.bytes(field, b);
  }

  finish(): Uint8Array {
    this.flush();
    const size = this.chunks.reduce((s, c) => s + c.length, 0);
    const out = new Uint8Array(size);
    let o = 0;
    for (const c of this.chunks) {
      out.set(c, o);
      o += c.length;
    }
    this.chunks = [out];
    return out;
  }
}

export interface ProtoField {
  field: number;
  wire: number;
  /** varint (as bigint) for wire 0; bytes for wire 2; raw 4/8 bytes for wire 5/1. */
  int?: bigint;
  bytes?: Uint8Array;
}

export class ProtoError extends Error {}

/** Splits one message into its fields, in order. */
export function readFields(buf: Uint8Array): ProtoField[] {
  const out: ProtoField[] = [];
  let pos = 0;
  const varint = (): bigint => {
    let result = 0n;
    let shift = 0n;
    for (;;) {
      if (pos >= buf.length) throw new ProtoError("truncated protobuf varint");
      const b = buf[pos++];
      result |= BigInt(b & 0x7f) << shift;
      if (b < 0x80) return result;
      shift += 7n;
      if (shift > 70n) throw new ProtoError("malformed protobuf varint");
    }
  };
  while (pos < buf.length) {
    const key = Number(varint());
    const field = key >>> 3;
    const wire = key & 7;
    if (field === 0) throw new ProtoError("protobuf field number 0");
    if (wire === 0) out.push({ field, wire, int: varint() });
    else if (wire === 2) {
      const len = Number(varint());
      if (pos + len > buf.length) throw new ProtoError("truncated protobuf field");
      out.push({ field, wire, bytes: buf.subarray(pos, pos + len) });
      pos += len;
    } else if (wire === 5 || wire === 1) {
      const len = wire === 5 ? 4 : 8;
      if (pos + len > buf.length) throw new ProtoError("truncated protobuf field");
      out.push({ field, wire, bytes: buf.subarray(pos, pos + len) });
      pos += len;
    } else throw new ProtoError(`unsupported protobuf wire type ${wire}`);
  }
  return out;
}

export function decodeString(b: Uint8Array | undefined): string {
  return b ? new TextDecoder().decode(b) : "";
}

/** Reads a repeated varint field that may be packed (wire 2) or not (wire 0). */
export function readVarints(fields: ProtoField[], field: number): bigint[] {
  const out: bigint[] = [];
  for (const f of fields) {
    if (f.field !== field) continue;
    if (f.wire === 0) out.push(f.int!);
    else if (f.wire === 2) {
      const b = f.bytes!;
      let pos = 0;
      while (pos < b.length) {
        let result = 0n;
        let shift = 0n;
        for (;;) {
          // A truncated packed run would otherwise read past the end forever.
          if (pos >= b.length) throw new ProtoError("truncated packed protobuf varint");
          const x = b[pos++];
          result |= BigInt(x & 0x7f) << shift;
          if (x < 0x80) break;
          shift += 7n;
          if (shift > 70n) throw new ProtoError("malformed protobuf varint");
        }
        out.push(result);
      }
    }
  }
  return out;
}

/** Reads a repeated float field, packed or not. */
export function readFloats(fields: ProtoField[], field: number): number[] {
  const out: number[] = [];
  for (const f of fields) {
    if (f.field !== field || !f.bytes) continue;
    const dv = new DataView(f.bytes.buffer, f.bytes.byteOffset, f.bytes.byteLength);
    for (let i = 0; i + 4 <= f.bytes.length; i += 4) out.push(dv.getFloat32(i, true));
  }
  return out;
}
