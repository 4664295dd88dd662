// The option spec: defaults, text from the command line, typed values, and errors that name the option.
import assert from "node:assert/strict";
import { test } from "node:test";
import { Graph } from "../graph/ir.js";
import type { Model } from "../model/model.js";
import { flagOf, OptionError, resolveOptions, runDefense, type OptionSpecs } from "./defense.js";
import { DEFENSES, findDefense } from "./registry.js";

const SPEC = {
  drops: { kind: "numbers", flag: "drop", description: "d", default: [2, 4] },
  maxDrop: { kind: "number", description: "m", default: 0.1, min: 0, max: 1 },
  frr: { kind: "number", description: "f", default: 0.01, min: 0, max: 1, exclusiveMin: true, exclusiveMax: true },
  epochs: { kind: "integer", description: "e", default: 5, min: 0 },
  order: { kind: "choice", choices: ["increasing", "decreasing"] as const, description: "o", default: "increasing" },
  layer: { kind: "string", description: "l" },
} as const satisfies OptionSpecs;

test("resolveOptions: defaults fill in, command-line text and typed values give the same options", () => {
  const d = resolveOptions(SPEC);
  assert.deepEqual(d, { drops: [2, 4], maxDrop: 0.1, frr: 0.01, epochs: 5, order: "increasing" });
  const fromText = resolveOptions(SPEC, { drops: "1, 3", maxDrop: "0.5", epochs: "2", order: "decreasing", layer: "conv_3" });
  const typed = resolveOptions(SPEC, { drops: [1, 3], maxDrop: 0.5, epochs: 2, order: "decreasing", layer: "conv_3" });
  assert.deepEqual(fromText, typed);
  assert.deepEqual(fromText.drops, [1, 3]);
  // The default list is a copy: changing a result does not change the spec.
  d.drops.push(9);
  assert.deepEqual(SPEC.drops.default, [2, 4]);
});

test("resolveOptions: a bad value is an OptionError naming the option and its flag", () => {
  const cases: [Record<string, unknown>, string, RegExp][] = [
    [{ maxDrop: "2" }, "maxDrop", /at most 1/],
    [{ maxDrop: "abc" }, "maxDrop", /must be a number, got "abc"/],
    [{ frr: 0 }, "frr", /above 0/],
    [{ frr: "1" }, "frr", /below 1/],
    [{ epochs: "1.5" }, "epochs", /integer/],
    [{ epochs: -1 }, "epochs", /at least 0/],
    [{ order: "random" }, "order", /increasing or decreasing/],
    [{ drops: "2,x" }, "drops", /must be a number, got "x"/],
    [{ bogus: 1 }, "bogus", /unknown option/],
  ];
  for (const [given, option, complaint] of cases) {
    assert.throws(
      () => resolveOptions(SPEC, given),
      (e: unknown) => e instanceof OptionError && e.option === option && complaint.test(e.complaint) && e.message.includes(option),
      JSON.stringify(given),
    );
  }
  assert.throws(() => resolveOptions(SPEC, { drops: "" }), (e: unknown) => e instanceof OptionError && e.flag === "drop");
  assert.throws(() => resolveOptions(SPEC, { maxDrop: 5 }), (e: unknown) => e instanceof OptionError && e.flag === "max-drop");
});

test("registry: unique names; every option has a description, a flag, and a default that passes its own check", () => {
  const names = DEFENSES.map((d) => d.name);
  assert.equal(new Set(names).size, names.length);
  for (const d of DEFENSES) {
    assert.equal(findDefense(d.name), d);
    assert.ok(d.summary.length > 0, d.name);
    const flags = Object.entries(d.options).map(([n, o]) => flagOf(n, o));
    assert.equal(new Set(flags).size, flags.length, `${d.name}: two options share a flag`);
    for (const [n, o] of Object.entries(d.options)) assert.ok(o.description.length > 0, `${d.name}.${n} has no description`);
    assert.doesNotThrow(() => resolveOptions(d.options), d.name);
  }
});

test("runDefense refuses a trigger-based defense without triggers, before running anything", async () => {
  const unlearn = findDefense("unlearn")!;
  // No model or data is touched: the check comes first.
  await assert.rejects(runDefense(unlearn, undefined as never, undefined as never, {}, { inputScale: 1 }), /needs Neural Cleanse's reversed triggers/);
});

test("an algorithm's own option check reaches the caller with the option's flag from the spec", async () => {
  // prune checks its drops before touching the model or the data; runDefense only asks whether the model is a G
  // (an empty graph is not).
  const stub = { graph: new Graph("stub"), logits: "y", name: "stub", numClasses: 2 } as unknown as Model;
  await assert.rejects(
    runDefense(findDefense("prune")!, stub, undefined as never, { drops: [0] }, { inputScale: 1 }),
    (e: unknown) => e instanceof OptionError && e.option === "drops" && e.flag === "drop" && /\(0, 100\]/.test(e.complaint),
  );
});
