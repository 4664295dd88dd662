// The result.json schema: what it accepts and refuses, `badnet report` on bad input, and the README's field list.
import assert from "node:assert/strict";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, test } from "node:test";
import { z } from "zod";
import { ROOT } from "../test/fixtures.js";
import { runCli, tempDir } from "../test/make-bad-files.js";
import { parseResult, RESULT_SCHEMA_VERSION, resultSchema } from "./schema.js";
import { syntheticReport } from "./testdata.js";

const dir = tempDir("schema");
after(() => rmSync(dir, { recursive: true, force: true }));

test("parseResult accepts a full report with extra fields and refuses what is not a result, naming the field", () => {
  const full = { ...syntheticReport(), schemaVersion: RESULT_SCHEMA_VERSION, repairs: [{ drop: 4 }] };
  const ok = parseResult(JSON.parse(JSON.stringify(full)));
  assert.ok(ok.ok);
  assert.deepEqual(ok.data, JSON.parse(JSON.stringify(full)), "nothing dropped or changed");
  const evalJson = { model: "bd_net", cleanAccuracy: 0.9, cleanCorrect: 9, nClean: 10, asr: null, attackSuccess: null, nPoisoned: null, seconds: 1, imagesPerSecond: 10 };
  const cases: [unknown, RegExp][] = [
    [{}, /^title: /],
    [[], /JSON object/],
    [evalJson, /^title: /],
    [{ ...evalJson, title: "t" }, /^model: /],
    [{ title: "t", evaluation: { before: { cleanAccuracy: "high", nClean: 3 } } }, /^evaluation\.before\.cleanAccuracy: /],
    [{ title: "t", g: { numClasses: 4, clean: { n: 1, correct: 1, flagged: 0 }, poisoned: { n: 1, flagged: 0 } } }, /^g\.poisoned\.attackSuccess: /],
    [{ title: "t", neuralCleanse: { ...full.neuralCleanse, triggers: [{ label: 1 }] } }, /^neuralCleanse\.triggers\[0\]\.maskPng: /],
    [{ title: "t", schemaVersion: RESULT_SCHEMA_VERSION + 1 }, /schema version 2 /],
  ];
  for (const [v, reason] of cases) {
    const r = parseResult(v);
    assert.ok(!r.ok, JSON.stringify(v).slice(0, 80));
    assert.match(r.reason, reason);
    assert.doesNotMatch(r.reason, /\n/);
  }
});

test("badnet report on {}, on eval --json output and on wrong field types: one line, exit 2", async () => {
  const files = {
    empty: "{}",
    eval: JSON.stringify({ model: "m", cleanAccuracy: 0.5, cleanCorrect: 1, nClean: 2, asr: null, attackSuccess: null, nPoisoned: null, seconds: 1, imagesPerSecond: 2 }),
    types: JSON.stringify({ title: "t", evaluation: { before: { cleanAccuracy: 0.5, nClean: "two" } } }),
  };
  for (const [name, text] of Object.entries(files)) {
    const path = join(dir, `${name}.json`);
    writeFileSync(path, text);
    const r = await runCli(["report", path]);
    assert.equal(r.code, 2, `${name}: ${r.stderr}`);
    assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
    assert.match(r.stderr, new RegExp(`^badnet: error: ${path.replace(/[.]/g, "\\.")} is not a badnet result: `));
  }
});

// ------------------------------------------------------------------------------------------------------
// The README's list of result.json fields, read as written: "`name` `{a, b?, c: [{x}], d: {y}}`, each `{...}`".

interface Field {
  optional: boolean;
  fields?: Map<string, Field>;
}

function parseFields(text: string): Map<string, Field> {
  let i = 0;
  const skip = () => {
    while (text[i] === " ") i++;
  };
  const object = (): Map<string, Field> => {
    assert.equal(text[i++], "{", `expected { at ${i} in ${text}`);
    const out = new Map<string, Field>();
    for (;;) {
      skip();
      const name = /^[A-Za-z][A-Za-z0-9]*/.exec(text.slice(i))![0];
      i += name.length;
      let optional = false;
      // "name?", "name[]", "name?[]"
      while (text[i] === "?" || text.startsWith("[]", i)) {
        if (text[i] === "?") optional = true;
        i += text[i] === "?" ? 1 : 2;
      }
      skip();
      if (text[i] === "[" && /^\[[A-Z,]+\]/.test(text.slice(i))) i = text.indexOf("]", i) + 1; // a shape hint: [H,W,C]
      const f: Field = { optional };
      if (text[i] === ":") {
        i++;
        skip();
        const array = text[i] === "[";
        if (array) i++;
        f.fields = object();
        if (array) assert.equal(text[i++], "]");
      }
      out.set(name, f);
      skip();
      if (text[i] === "}") {
        i++;
        return out;
      }
      assert.equal(text[i++], ",", `expected , at ${i} in ${text}`);
    }
  };
  return object();
}

/** The README's top-level result.json fields, with their documented inner fields. */
function readmeFields(): Map<string, Field> {
  const readme = readFileSync(join(ROOT, "README.md"), "utf8");
  const start = readme.indexOf("they save as `DIR/result.json`");
  assert.ok(start >= 0, "README lists the result.json fields");
  const lines = readme.slice(start).split("\n");
  const bullets = lines.slice(1, lines.findIndex((l, k) => k > 1 && l.trim() === "")).filter((l) => l.startsWith("  - "));
  const out = new Map<string, Field>();
  for (const b of bullets) {
    let last: string | undefined;
    // A closing remark in parentheses ("(`nc-prune`, `unlearn`)") names no fields.
    for (const m of b.replace(/ \([^()]*\);?$/, "").matchAll(/(, each )?`([^`]+)`/g)) {
      const [, each, seg] = m;
      if (!seg.startsWith("{")) {
        out.set((last = seg), { optional: true });
      } else if (each) {
        for (const f of out.get(last!)!.fields!.values()) f.fields = parseFields(seg);
      } else out.get(last!)!.fields = parseFields(seg);
    }
  }
  return out;
}

/** The object schema inside optional/array wrappers, or undefined for a leaf. */
function objectOf(s: z.ZodTypeAny): z.AnyZodObject | undefined {
  let t = s;
  for (;;) {
    if (t instanceof z.ZodOptional || t instanceof z.ZodNullable) t = t.unwrap();
    else if (t instanceof z.ZodArray) t = t.element;
    else break;
  }
  return t instanceof z.ZodObject ? t : undefined;
}

function compare(where: string, doc: Map<string, Field>, schema: z.AnyZodObject, checkOptional: boolean): void {
  assert.deepEqual([...doc.keys()].sort(), Object.keys(schema.shape).sort(), `${where}: README fields vs schema`);
  for (const [name, f] of doc) {
    const s = schema.shape[name] as z.ZodTypeAny;
    if (checkOptional) assert.equal(f.optional, s.isOptional(), `${where}.${name}: README says ${f.optional ? "optional" : "always there"}`);
    if (f.fields) {
      const inner = objectOf(s);
      assert.ok(inner, `${where}.${name}: README lists fields of a non-object`);
      compare(`${where}.${name}`, f.fields, inner, true);
    }
  }
}

test("the README's result.json field list matches the schema", () => {
  compare("result", readmeFields(), resultSchema, false);
});
