// The bench's results file on synthetic rows: parsing (a torn last line is skipped), what is still due (same
// code and model file: skipped; new code, rebuilt model or --force: due), the latest row winning, the mean and
// range over seeds, the goal test and the markdown table.
import assert from "node:assert/strict";
import { test } from "node:test";
import { floorOf, floorsTable, isDue, latestRuns, meetsGoal, parseRuns, runsSummary, runsTable, spreadText, summarize, withinFloor, type CleanFloor, type RunRecord } from "./defense-runs.js";

function rec(p: Partial<RunRecord> & Pick<RunRecord, "model" | "defense" | "seed">): RunRecord {
  return {
    code: "c1",
    modelHash: "m1",
    at: "2026-12-03T18:00:00.000Z",
    load: 5,
    attack: "badnets-patch",
    targets: [0],
    status: "ok",
    seeded: true,
    cleanBefore: 0.9,
    cleanAfter: 0.895,
    asrBefore: { "0": 0.99 },
    asrAfter: { "0": 0.01 },
    gDetection: { "0": 0.995 },
    gFalseAlarm: 0.005,
    seconds: 12,
    notes: "",
    warnings: [],
    ...p,
  };
}

test("parseRuns keeps good lines and reports a torn one", () => {
  const a = rec({ model: "m", defense: "prune", seed: 0 });
  const text = `${JSON.stringify(a)}\n{"model":"m","defen\n\n${JSON.stringify({ hello: 1 })}\n`;
  const { records, bad } = parseRuns(text);
  assert.equal(records.length, 1);
  assert.deepEqual(records[0], a);
  assert.deepEqual(bad, [2, 4]);
});

test("isDue: recorded runs of the same code and model are skipped; new code, a rebuilt model or force redo them", () => {
  const records = [rec({ model: "m", defense: "prune", seed: 0 })];
  const key = { model: "m", defense: "prune", seed: 0, code: "c1", modelHash: "m1" };
  assert.equal(isDue(records, key), false);
  assert.equal(isDue(records, key, true), true);
  assert.equal(isDue(records, { ...key, code: "c2" }), true);
  assert.equal(isDue(records, { ...key, modelHash: "m2" }), true);
  assert.equal(isDue(records, { ...key, seed: 1 }), true);
  assert.equal(isDue(records, { ...key, defense: "auto" }), true);
});

test("latestRuns: a later line for the same model, defense and seed replaces the earlier one", () => {
  const old = rec({ model: "m", defense: "prune", seed: 0, cleanAfter: 0.5 });
  const redo = rec({ model: "m", defense: "prune", seed: 0, cleanAfter: 0.6, code: "c2" });
  const other = rec({ model: "m", defense: "prune", seed: 1 });
  const l = latestRuns([old, other, redo]);
  assert.equal(l.length, 2);
  assert.equal(l.find((r) => r.seed === 0)!.cleanAfter, 0.6);
});

test("summarize: mean and range over seeds per target, goal counted per run", () => {
  const runs = [
    rec({ model: "multi", defense: "auto", seed: 0, targets: [1, 5], asrBefore: { "1": 1, "5": 1 }, asrAfter: { "1": 0.01, "5": 0.02 }, gDetection: { "1": 1, "5": 0.99 }, gAsr: { "1": 0.004, "5": 0.001 }, chosen: "unlearn", flagged: [1, 5] }),
    rec({ model: "multi", defense: "auto", seed: 1, targets: [1, 5], asrBefore: { "1": 1, "5": 1 }, asrAfter: { "1": 0.05, "5": 0.0 }, gDetection: { "1": 1, "5": 1 }, chosen: "sau", flagged: [1] }),
    rec({ model: "multi", defense: "auto", seed: 2, targets: [1, 5], status: "failed", reason: "boom", cleanAfter: undefined, asrAfter: undefined }),
  ];
  const [s] = summarize(runs);
  assert.deepEqual(s!.seeds, [0, 1, 2]);
  assert.equal(s!.asrAfter.length, 2);
  assert.ok(Math.abs(s!.asrAfter[0]!.mean - 0.03) < 1e-12);
  assert.equal(s!.asrAfter[0]!.min, 0.01);
  assert.equal(s!.asrAfter[0]!.max, 0.05);
  assert.equal(s!.asrAfter[1]!.n, 2, "the failed run adds no numbers");
  assert.deepEqual(s!.goal, { met: 1, judged: 2 }, "seed 1 misses on trigger 1 (5% > 2%); the failed run is not judged");
  const table = runsTable([s!]);
  assert.match(table, /\| multi \| badnets-patch \(→ 1, 5\) \| auto \| 0,1,2 \|/);
  assert.match(table, /3\.00% \(1\.00–5\.00\) \/ 1\.00% \(0\.00–2\.00\)/);
  // ASR through G: only seed 0 recorded it (older records have none), so its value alone.
  assert.match(table, /\| 0\.40% \/ 0\.10% \|/);
  assert.match(runsTable(summarize([{ ...runs[1]! }])), /\| 100\.00% \/ 100\.00% \| — \| 0\.50% \|/, "no record with G's attack success: a dash");
  assert.match(table, /s0 unlearn \(flagged \[1, 5\]\), s1 sau \(flagged \[1\]\), s2 failed/);
  assert.match(table, /s2 FAILED: boom/);
  assert.match(table, /\| 1\/2 \|/);
  assert.doesNotMatch(table, /different/);
  const mixed = runsTable(summarize([runs[0]!, { ...runs[1]!, code: "c2" }, { ...runs[2]!, modelHash: "m2" }]));
  assert.match(mixed, /runs of different code \(s0 c1, s1 c2, s2 c1\)/);
  assert.match(mixed, /runs on different builds of the model \(s0 m1, s1 m1, s2 m2\)/);
});

test("meetsGoal: each bound on its own, and the clean-model rule", () => {
  const ok = rec({ model: "m", defense: "d", seed: 0 });
  assert.equal(meetsGoal(ok), true);
  assert.equal(meetsGoal({ ...ok, cleanAfter: 0.885 }), false, "1.5 points lost");
  assert.equal(meetsGoal({ ...ok, asrAfter: { "0": 0.021 } }), false);
  assert.equal(meetsGoal({ ...ok, gDetection: { "0": 0.98 } }), false);
  assert.equal(meetsGoal({ ...ok, gFalseAlarm: 0.011 }), false);
  assert.equal(meetsGoal({ ...ok, status: "skipped" }), undefined);
  const clean = rec({ model: "c", defense: "d", seed: 0, targets: [], asrBefore: undefined, asrAfter: undefined, gDetection: undefined });
  assert.equal(meetsGoal(clean), true, "0.5 point moved is allowed");
  assert.equal(meetsGoal({ ...clean, cleanAfter: 0.91 }), false, "1 point up is a change too");
});

test("spreadText: one value, or the mean with the range", () => {
  assert.equal(spreadText(undefined), "—");
  assert.equal(spreadText({ mean: 0.5, min: 0.5, max: 0.5, n: 3 }), "50.00%");
  assert.equal(spreadText({ mean: 0.5, min: 0.4, max: 0.6, n: 2 }), "50.00% (40.00–60.00)");
});

test("runsSummary: complete (model, seed) pairs and where auto meets the goal", () => {
  const runs = [
    rec({ model: "a", defense: "nc-detect", seed: 0, cleanAfter: undefined }),
    rec({ model: "a", defense: "auto", seed: 0 }),
    rec({ model: "b", defense: "nc-detect", seed: 0, cleanAfter: undefined }),
    rec({ model: "b", defense: "auto", seed: 0, asrAfter: { "0": 0.3 } }),
    rec({ model: "a", defense: "nc-detect", seed: 1, cleanAfter: undefined }),
  ];
  const line = runsSummary(summarize(runs), ["nc-detect", "auto"]);
  assert.match(line, /seed 0: 2\/2 models complete; seed 1: 0\/2 models complete/);
  assert.match(line, /auto meets the goal in every recorded seed on 1\/2 backdoored models \(a\) and 0\/0 clean models/);
});

test("clean-model floors: the highest rate per trigger, the within-floor measure apart from the goal, the table", () => {
  const floors: CleanFloor[] = [
    { model: "w", target: 2, rates: { clean_a: 0.0426, clean_b: 0.0329 } },
    { model: "m", target: 1, rates: { clean_a: 0.001, clean_b: 0.003 } },
    { model: "m", target: 5, rates: { clean_a: 0.025, clean_b: 0.0 } },
  ];
  assert.equal(floorOf(floors, "w", 2), 0.0426);
  assert.equal(floorOf(floors, "w", 3), undefined);
  // Above 2% but at or below the clean models' highest rate: within the floor, and still not the goal.
  const w = rec({ model: "w", defense: "auto", seed: 0, targets: [2], asrAfter: { "2": 0.04 } });
  assert.equal(withinFloor(w, floors), true);
  assert.equal(meetsGoal(w), false);
  assert.equal(withinFloor({ ...w, asrAfter: { "2": 0.0427 } }, floors), false);
  // Where the floor is below 2%, 2% is the bound; every trigger must be within.
  const m = rec({ model: "m", defense: "auto", seed: 0, targets: [1, 5], asrAfter: { "1": 0.02, "5": 0.025 } });
  assert.equal(withinFloor(m, floors), true);
  assert.equal(withinFloor({ ...m, asrAfter: { "1": 0.021, "5": 0.0 } }, floors), false);
  // No floor or no ASR for a trigger: not judged.
  assert.equal(withinFloor({ ...w, model: "x" }, floors), undefined);
  assert.equal(withinFloor({ ...w, asrAfter: {} }, floors), undefined);
  assert.equal(withinFloor({ ...w, status: "failed" }, floors), undefined);
  const table = floorsTable(floors).split("\n");
  assert.equal(table[0], "| model | target | clean_a | clean_b | highest | 2% goal |");
  assert.equal(table[2], "| w | → 2 | 4.26% | 3.29% | 4.26% | below a clean model's rate |");
  assert.equal(table[3], "| m | → 1 | 0.10% | 0.30% | 0.30% | above it |");
});
