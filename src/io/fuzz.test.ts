// Fuzzing every file kind the loaders read (HDF5 model, HDF5 data, ONNX, PNG, JPEG, result.json): seeded
// truncations and byte mutations of a valid file. Each case must end in a UserError (one printable line) or,
// for a mutation that left the file valid, a normal load; never another exception, a hang or a write. The
// loaders run in-process; a sample goes through the real CLI to check exit code 2 and the single stderr line.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { basename, join } from "node:path";
import h5wasm from "h5wasm/node";
import jpeg from "jpeg-js";
import { UserError } from "../errors.js";
import { loadModel } from "./load-model.js";
import { lowerModel } from "../model/lower.js";
import { forwardGraph } from "../model/forward.js";
import { toOnnx } from "../onnx/export.js";
import { readResult } from "../cli/output.js";
import { renderReport } from "../report/html.js";
import { syntheticReport } from "../report/testdata.js";
import { Session } from "../runtime/session.js";
import { ROOT } from "../test/fixtures.js";
import { runCli, tempDir } from "../test/make-bad-files.js";
import { mulberry32 } from "../util/random.js";
import { openDataset } from "./open-dataset.js";
import { decodeImage, encodePng } from "./images.js";
import { readKerasModel } from "./keras-h5.js";

const dir = tempDir("fuzz");
after(() => rmSync(dir, { recursive: true, force: true }));

interface Kind {
  name: string;
  ext: string;
  /** The valid file every case is derived from. */
  source: () => Promise<Buffer>;
  /** Loads a file the way the CLI does (throws on bad input). */
  load: (path: string) => Promise<void>;
  /** A CLI command line that reads the file. */
  cli: (path: string) => string[];
}

const KERAS_FIXTURE = join(ROOT, "fixtures/keras/same_upsample_crop.h5");

async function writeFloatData(path: string): Promise<void> {
  await h5wasm.ready;
  const rand = mulberry32(5);
  const n = 6;
  const f = new h5wasm.File(path, "w");
  f.create_dataset({ name: "data", data: Float32Array.from({ length: n * 6 * 5 * 3 }, () => Math.round(255 * rand())), shape: [n, 6, 5, 3], dtype: "<f4" });
  f.create_dataset({ name: "label", data: Float64Array.from({ length: n }, (_, i) => i % 3), shape: [n], dtype: "<d" });
  f.close();
}

function smallImage(channels: 1 | 3): Uint8Array {
  const rand = mulberry32(channels);
  return Uint8Array.from({ length: 9 * 7 * channels }, () => Math.floor(256 * rand()));
}

const KINDS: Kind[] = [
  {
    name: "HDF5 model",
    ext: "h5",
    source: async () => readFileSync(KERAS_FIXTURE),
    load: async (p) => void (await loadModel(p)),
    cli: (p) => ["inspect", "--model", p],
  },
  {
    name: "HDF5 data",
    ext: "h5",
    source: async () => {
      const p = join(dir, "source-data.h5");
      await writeFloatData(p);
      return readFileSync(p);
    },
    load: async (p) => {
      const ds = await openDataset(p, { inputScale: 255 });
      try {
        ds.read(0, ds.size);
      } finally {
        ds.close();
      }
    },
    cli: (p) => ["eval", "--model", KERAS_FIXTURE, "--input-scale", "255", "--clean", p],
  },
  {
    name: "ONNX",
    ext: "onnx",
    source: async () => Buffer.from(toOnnx(forwardGraph(lowerModel(await readKerasModel(KERAS_FIXTURE))))),
    load: async (p) => {
      const model = await loadModel(p);
      const s = await Session.create(forwardGraph(model));
      await s.release();
    },
    cli: (p) => ["inspect", "--model", p],
  },
  {
    name: "PNG",
    ext: "png",
    source: async () => encodePng(smallImage(3), 7, 9, 3),
    load: async (p) => void decodeImage(p),
    cli: (p) => ["predict", "--model", KERAS_FIXTURE, "--input-scale", "255", p],
  },
  {
    name: "JPEG",
    ext: "jpg",
    source: async () => {
      const rgb = smallImage(3);
      const rgba = new Uint8Array(7 * 9 * 4);
      for (let i = 0; i < 7 * 9; i++) rgba.set([rgb[i * 3]!, rgb[i * 3 + 1]!, rgb[i * 3 + 2]!, 255], i * 4);
      return Buffer.from(jpeg.encode({ data: rgba, width: 7, height: 9 }, 90).data);
    },
    load: async (p) => void decodeImage(p),
    cli: (p) => ["predict", "--model", KERAS_FIXTURE, "--input-scale", "255", p],
  },
  {
    name: "result.json",
    ext: "json",
    source: async () => Buffer.from(JSON.stringify(syntheticReport(), null, 2) + "\n"),
    load: async (p) => void renderReport(readResult(p)),
    cli: (p) => ["report", p, "--output", join(dir, "fuzz-report-should-not-exist.html")],
  },
];

interface Case {
  kind: Kind;
  name: string;
  bytes: Buffer;
  /** A truncated file can never be valid; a mutated one can. */
  mustFail: boolean;
}

const TRUNCATIONS = 16;
const MUTATIONS = 44;

/** Seeded truncations (incl. empty, one byte, just the signature) and byte mutations of `src`. */
function casesOf(kind: Kind, src: Buffer, seed: number): Case[] {
  const rand = mulberry32(seed);
  const int = (n: number) => Math.floor(rand() * n);
  const out: Case[] = [];
  // Trailing whitespace of a JSON file is not content: cut at least past the closing brace.
  const maxLen = kind.ext === "json" ? src.length - 2 : src.length - 1;
  const lengths = [0, 1, 8, Math.min(64, maxLen - 1), maxLen];
  while (lengths.length < TRUNCATIONS) lengths.push(1 + int(maxLen - 1));
  for (const len of lengths) out.push({ kind, name: `${kind.name} truncated to ${len} of ${src.length} bytes`, bytes: src.subarray(0, len), mustFail: true });
  for (let m = 0; m < MUTATIONS; m++) {
    const b = Buffer.from(src);
    const style = m % 4;
    // Headers and metadata sit mostly in the first few KB: aim half the mutations there.
    const span = m % 2 === 0 ? Math.min(b.length, 4096) : b.length;
    let what: string;
    if (style === 0) {
      const at = int(span);
      b[at] = b[at]! ^ (1 << int(8));
      what = `bit flip at ${at}`;
    } else if (style === 1) {
      const n = 2 + int(15);
      for (let i = 0; i < n; i++) b[int(span)] = int(256);
      what = `${n} random bytes`;
    } else if (style === 2) {
      const at = int(span);
      const n = Math.min(b.length - at, 16 + int(512));
      for (let i = 0; i < n; i++) b[at + i] = int(256);
      what = `${n}-byte noise block at ${at}`;
    } else {
      const at = int(span);
      const n = Math.min(b.length - at, 1 + int(64));
      b.fill(kind.ext === "json" ? 0x22 : 0, at, at + n);
      what = `${n} bytes at ${at} overwritten with ${kind.ext === "json" ? "quotes" : "zeros"}`;
    }
    out.push({ kind, name: `${kind.name} mutated: ${what}`, bytes: b, mustFail: false });
  }
  return out;
}

interface Outcome {
  c: Case;
  path: string;
  error?: unknown;
  ms: number;
}

const outcomes: Outcome[] = [];

// A hang anywhere fails the run at this bound instead of stalling CI; each case is also timed below.
before(async () => {
  let seed = 100;
  let i = 0;
  for (const kind of KINDS) {
    const src = await kind.source();
    // The source itself must load, or every case would fail for the wrong reason.
    const ok = join(dir, `source-${kind.name.replace(/\W+/g, "-")}.${kind.ext}`);
    writeFileSync(ok, src);
    await kind.load(ok);
    for (const c of casesOf(kind, src, seed++)) {
      const path = join(dir, `case-${String(i++).padStart(3, "0")}.${kind.ext}`);
      writeFileSync(path, c.bytes);
      const t0 = performance.now();
      let error: unknown;
      try {
        await c.kind.load(path);
      } catch (e) {
        error = e;
      }
      outcomes.push({ c, path, error, ms: performance.now() - t0 });
    }
  }
}, { timeout: 180_000 });

const describeError = (e: unknown) => (e instanceof Error ? `${e.name}: ${e.message.slice(0, 300)}` : String(e));

test("fuzz: hundreds of truncated and mutated files of every kind give a user error or load, never a crash", (t) => {
  assert.ok(outcomes.length >= 300, `${outcomes.length} cases`);
  for (const kind of KINDS) {
    const mine = outcomes.filter((o) => o.c.kind === kind);
    const loaded = mine.filter((o) => o.error === undefined).length;
    t.diagnostic(`${kind.name}: ${mine.length} cases, ${mine.length - loaded} user errors, ${loaded} mutated files still valid`);
  }
  const crashes = outcomes.filter((o) => o.error !== undefined && !(o.error instanceof UserError));
  assert.deepEqual(crashes.map((o) => `${o.c.name}: ${describeError(o.error)}`), []);
});

test("fuzz: a truncated file is never accepted (no silent success)", () => {
  const silent = outcomes.filter((o) => o.c.mustFail && o.error === undefined);
  assert.deepEqual(silent.map((o) => o.c.name), []);
});

test("fuzz: every error is one printable line naming the file", () => {
  const bad = outcomes.filter((o) => {
    if (!(o.error instanceof UserError)) return false;
    const m = o.error.message;
    return /[\u0000-\u001f\u007f-\u009f\ufffd]/.test(m) || !m.includes(basename(o.path));
  });
  assert.deepEqual(bad.map((o) => `${o.c.name}: ${describeError(o.error)}`), []);
});

test("fuzz: no case hangs (each load finishes within 5 s) and nothing is written beside the inputs", () => {
  const slow = outcomes.filter((o) => o.ms > 5000);
  assert.deepEqual(slow.map((o) => `${o.c.name}: ${Math.round(o.ms)} ms`), []);
  for (const o of outcomes) assert.ok(readFileSync(o.path).equals(o.c.bytes), `${o.c.name}: input changed`);
  const expected = new Set(outcomes.map((o) => basename(o.path)));
  const extra = readdirSync(dir).filter((n) => !expected.has(n) && !n.startsWith("source-"));
  assert.deepEqual(extra, []);
});

test("fuzz through the CLI: a sample of failing cases exits 2 with one error line, prints nothing on stdout, writes nothing", async () => {
  const sample: Outcome[] = [];
  for (const kind of KINDS) sample.push(...outcomes.filter((o) => o.c.kind === kind && o.error instanceof UserError).slice(0, 2));
  const before = new Map(readdirSync(dir).map((n) => [n, statSync(join(dir, n)).mtimeMs]));
  for (const o of sample) {
    const args = o.c.kind.cli(o.path);
    const r = await runCli(args, 30_000);
    const where = `${o.c.name}: badnet ${args.join(" ")}`;
    assert.equal(r.code, 2, `${where}: exit ${r.code}\n${r.stderr}`);
    assert.equal(r.stdout, "", where);
    assert.match(r.stderr, /^badnet: error: [^\n]+\n$/, where);
  }
  assert.deepEqual(new Map(readdirSync(dir).map((n) => [n, statSync(join(dir, n)).mtimeMs])), before);
});
