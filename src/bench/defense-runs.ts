// The defense bench's results file: one JSON line per (model, defense, seed) run, appended as each run ends, so
// that a long bench can be resumed, split over processes and sessions, and turned into a table at any time.
// Pure logic (no I/O beyond what callers pass in): parsing, which runs are still due, aggregation over seeds
// and the markdown table. src/bench/defenses.ts does the running and the file handling.

/** What one run measured. Rates are fractions (0.0123 = 1.23%); per-target maps are keyed by the target label. */
export interface RunRecord {
  model: string;
  /** A registered defense, "auto" (`repair --defense auto`) or "nc-detect" (Neural Cleanse detection alone). */
  defense: string;
  seed: number;
  /** Hash of the library sources the run used (src/ without the bench and tests): rows of other code are redone. */
  code: string;
  /** Hash of the model file: a rebuilt zoo model is redone too. */
  modelHash: string;
  /** ISO time the run ended, and the 1-minute load average then. */
  at: string;
  load: number;
  attack: string;
  targets: number[];
  status: "ok" | "skipped" | "failed";
  reason?: string;
  /** Whether the defense has a seed option (without one, seeds only differ through the detection they use). */
  seeded: boolean;
  cleanBefore?: number;
  cleanAfter?: number;
  asrBefore?: Record<string, number>;
  asrAfter?: Record<string, number>;
  gDetection?: Record<string, number>;
  /** Per target: poisoned inputs G accepts and answers with the target (absent in records before 2026-12-05). */
  gAsr?: Record<string, number>;
  gFalseAlarm?: number;
  /** G calibrated to this false-alarm rate (auto), else the defense's own G. */
  fpr?: number;
  seconds?: number;
  /** Labels whose reversed triggers a mitigation used; for nc-detect and auto, the labels detection flagged. */
  flagged?: number[];
  /** auto: the repair it chose. */
  chosen?: string;
  /** auto: why (its selection reason; absent in records before 2026-12-07). */
  selection?: string;
  notes: string;
  warnings: string[];
}

export const runKey = (r: Pick<RunRecord, "model" | "defense" | "seed">): string => `${r.model}\u0000${r.defense}\u0000${r.seed}`;

/**
 * Records from the file's text, in file order. A line that does not parse (a run killed while writing) is
 * reported and ignored, never fatal: the rest of the file is still good.
 */
export function parseRuns(text: string): { records: RunRecord[]; bad: number[] } {
  const records: RunRecord[] = [];
  const bad: number[] = [];
  text.split("\n").forEach((line, i) => {
    if (line.trim() === "") return;
    try {
      const r = JSON.parse(line) as RunRecord;
      if (typeof r.model !== "string" || typeof r.defense !== "string" || !Number.isInteger(r.seed)) throw new Error("not a run record");
      records.push(r);
    } catch {
      bad.push(i + 1);
    }
  });
  return { records, bad };
}

/** The last record of each (model, defense, seed): a rerun (--force, new code) replaces the earlier one. */
export function latestRuns(records: readonly RunRecord[]): RunRecord[] {
  const m = new Map<string, RunRecord>();
  for (const r of records) m.set(runKey(r), r);
  return [...m.values()];
}

/** Whether this run is still due: nothing recorded for the same code and model file, or forced. */
export function isDue(records: readonly RunRecord[], key: Pick<RunRecord, "model" | "defense" | "seed" | "code" | "modelHash">, force = false): boolean {
  if (force) return true;
  return !records.some((r) => runKey(r) === runKey(key) && r.code === key.code && r.modelHash === key.modelHash);
}

// ---------------------------------------------------------------------------------------------------------
// Aggregation over seeds

export interface Spread {
  mean: number;
  min: number;
  max: number;
  n: number;
}

export function spread(xs: readonly number[]): Spread | undefined {
  if (xs.length === 0) return undefined;
  return { mean: xs.reduce((a, b) => a + b, 0) / xs.length, min: Math.min(...xs), max: Math.max(...xs), n: xs.length };
}

/** The goal of the repair issue: every trigger ≤ 2% ASR at ≤ 1 point of clean accuracy, G ≥ 99% at ≤ 1%. */
export const GOAL = { asr: 0.02, cleanDrop: 0.01, detection: 0.99, falseAlarm: 0.01, cleanModelDrop: 0.005 } as const;

/**
 * Whether one run meets the goal. Backdoored model: every trigger's ASR after ≤ 2%, clean accuracy down ≤ 1
 * point, G detects ≥ 99% of every trigger's inputs at ≤ 1% false alarms. Clean model: clean accuracy moves
 * ≤ 0.5 point and G's false alarms ≤ 1%. Undefined when the run did not produce the numbers.
 */
export function meetsGoal(r: RunRecord): boolean | undefined {
  if (r.status !== "ok" || r.cleanBefore === undefined || r.cleanAfter === undefined || r.gFalseAlarm === undefined) return undefined;
  const fa = r.gFalseAlarm <= GOAL.falseAlarm;
  if (r.targets.length === 0) return fa && Math.abs(r.cleanBefore - r.cleanAfter) <= GOAL.cleanModelDrop + 1e-12;
  const asr = Object.values(r.asrAfter ?? {});
  const det = Object.values(r.gDetection ?? {});
  if (asr.length !== r.targets.length || det.length !== r.targets.length) return undefined;
  return fa && r.cleanBefore - r.cleanAfter <= GOAL.cleanDrop + 1e-12 && asr.every((a) => a <= GOAL.asr) && det.every((d) => d >= GOAL.detection);
}

export interface DefenseSummary {
  model: string;
  attack: string;
  targets: number[];
  defense: string;
  seeds: number[];
  statuses: RunRecord["status"][];
  cleanBefore?: Spread;
  cleanAfter?: Spread;
  /** Per target, in `targets` order. */
  asrBefore: (Spread | undefined)[];
  asrAfter: (Spread | undefined)[];
  gDetection: (Spread | undefined)[];
  gAsr: (Spread | undefined)[];
  gFalseAlarm?: Spread;
  seconds?: Spread;
  /** Runs meeting the goal / runs judged. */
  goal: { met: number; judged: number };
  runs: RunRecord[];
}

const defined = (xs: (number | undefined)[]): number[] => xs.filter((x): x is number => x !== undefined && Number.isFinite(x));

/** One summary per (model, defense) over its seeds, in the order the runs first appear. */
export function summarize(records: readonly RunRecord[]): DefenseSummary[] {
  const groups = new Map<string, RunRecord[]>();
  for (const r of latestRuns(records)) {
    const k = `${r.model}\u0000${r.defense}`;
    groups.set(k, [...(groups.get(k) ?? []), r]);
  }
  return [...groups.values()].map((runs) => {
    runs.sort((a, b) => a.seed - b.seed);
    const first = runs[0]!;
    const ok = runs.filter((r) => r.status === "ok");
    const perTarget = (f: (r: RunRecord) => Record<string, number> | undefined) => first.targets.map((t) => spread(defined(ok.map((r) => f(r)?.[String(t)]))));
    const judged = runs.map(meetsGoal).filter((g): g is boolean => g !== undefined);
    return {
      model: first.model,
      attack: first.attack,
      targets: first.targets,
      defense: first.defense,
      seeds: runs.map((r) => r.seed),
      statuses: runs.map((r) => r.status),
      cleanBefore: spread(defined(ok.map((r) => r.cleanBefore))),
      cleanAfter: spread(defined(ok.map((r) => r.cleanAfter))),
      asrBefore: perTarget((r) => r.asrBefore),
      asrAfter: perTarget((r) => r.asrAfter),
      gDetection: perTarget((r) => r.gDetection),
      gAsr: perTarget((r) => r.gAsr),
      gFalseAlarm: spread(defined(ok.map((r) => r.gFalseAlarm))),
      seconds: spread(defined(runs.filter((r) => r.status !== "skipped").map((r) => r.seconds))),
      goal: { met: judged.filter(Boolean).length, judged: judged.length },
      runs,
    };
  });
}

// ---------------------------------------------------------------------------------------------------------
// Markdown

/** Percent with two decimals: small but non-zero rates stay visible. */
export const pct = (x: number | undefined): string => (x === undefined || Number.isNaN(x) ? "—" : `${(100 * x).toFixed(2)}%`);

/** Mean, and the range over seeds when there are several: "89.53% (89.20–89.90)". */
export function spreadText(s: Spread | undefined): string {
  if (!s) return "—";
  if (s.n === 1 || s.min === s.max) return pct(s.mean);
  return `${pct(s.mean)} (${(100 * s.min).toFixed(2)}–${(100 * s.max).toFixed(2)})`;
}

const secs = (s: Spread | undefined): string => (s === undefined ? "—" : s.mean < 10 ? `${s.mean.toFixed(1)} s` : `${s.mean.toFixed(0)} s`);
const cell = (s: string): string => s.replace(/\|/g, "\\|").replace(/\n/g, " ");
const list = (xs: number[] | undefined): string => (xs === undefined ? "?" : `[${xs.join(", ")}]`);

/** Per-seed facts that the averages hide: flags, auto's choice, skipped or failed runs. */
function seedNotes(s: DefenseSummary): string {
  const parts: string[] = [];
  const by = (f: (r: RunRecord) => string) => s.runs.map((r) => `s${r.seed} ${f(r)}`).join(", ");
  if (s.defense === "nc-detect") parts.push(`flagged ${by((r) => list(r.flagged))}`);
  else if (s.defense === "auto") parts.push(`chose ${by((r) => (r.status === "ok" ? `${r.chosen ?? "?"} (flagged ${list(r.flagged)})` : r.status))}`);
  else if (s.runs.some((r) => r.flagged !== undefined)) parts.push(`triggers of ${by((r) => list(r.flagged))}`);
  for (const r of s.runs) {
    if (r.status === "failed") parts.push(`s${r.seed} FAILED: ${r.reason ?? "?"}`);
    else if (r.status === "skipped" && s.defense !== "nc-detect") parts.push(`s${r.seed} not applied: ${r.reason ?? "?"}`);
    for (const w of r.warnings) parts.push(`s${r.seed} WARNING: ${w}`);
  }
  if (!s.runs[0]!.seeded && s.defense !== "nc-detect" && s.runs.length > 1) parts.push("no seed option");
  // Seeds recorded on different code or a rebuilt model are not one experiment: say so rather than average quietly.
  const codes = [...new Set(s.runs.map((r) => r.code))];
  const builds = [...new Set(s.runs.map((r) => r.modelHash))];
  if (codes.length > 1) parts.push(`runs of different code (${s.runs.map((r) => `s${r.seed} ${r.code}`).join(", ")})`);
  if (builds.length > 1) parts.push(`runs on different builds of the model (${s.runs.map((r) => `s${r.seed} ${r.modelHash}`).join(", ")})`);
  const firstOk = s.runs.find((r) => r.status === "ok" && r.notes);
  if (firstOk && s.defense !== "nc-detect") parts.push(`s${firstOk.seed}: ${firstOk.notes}`);
  return parts.join("; ");
}

/** The table: one row per (model, defense), numbers as the mean over seeds with their range. */
export function runsTable(summaries: readonly DefenseSummary[]): string {
  const head = ["model", "attack (targets)", "defense", "seeds", "clean acc before → after", "ASR before → after (per trigger)", "G detection (per trigger)", "ASR through G (per trigger)", "G false alarms", "meets goal", "wall time", "notes"];
  const lines = [`| ${head.join(" | ")} |`, `|${head.map(() => "---").join("|")}|`];
  for (const s of summaries) {
    const attack = s.targets.length ? `${s.attack} (→ ${s.targets.join(", ")})` : s.attack;
    const seeds = s.seeds.join(",");
    const notes = seedNotes(s);
    if (s.defense === "nc-detect") {
      lines.push(`| ${[s.model, attack, "NC detection", seeds, "—", "—", "—", "—", "—", "—", secs(s.seconds), notes].map(cell).join(" | ")} |`);
      continue;
    }
    const hasPoison = s.targets.length > 0;
    const joined = (xs: (Spread | undefined)[]) => xs.map(spreadText).join(" / ");
    const clean = s.cleanAfter ? `${spreadText(s.cleanBefore)} → ${spreadText(s.cleanAfter)}` : "—";
    const asr = !s.cleanAfter ? "—" : hasPoison ? `${joined(s.asrBefore)} → ${joined(s.asrAfter)}` : "— (no trigger)";
    const det = !s.cleanAfter ? "—" : hasPoison ? joined(s.gDetection) : "—";
    const gAsr = !s.cleanAfter || !hasPoison || s.gAsr.every((x) => x === undefined) ? "—" : joined(s.gAsr);
    const goal = s.goal.judged ? `${s.goal.met}/${s.goal.judged}` : "—";
    lines.push(`| ${[s.model, attack, s.defense, seeds, clean, asr, det, gAsr, spreadText(s.gFalseAlarm), goal, secs(s.seconds), notes].map(cell).join(" | ")} |`);
  }
  return lines.join("\n");
}

/** Counts for the line above the table: which (model, seed) pairs are complete, goal met per model by auto. */
export function runsSummary(summaries: readonly DefenseSummary[], defenses: readonly string[]): string {
  const models = [...new Set(summaries.map((s) => s.model))];
  const seeds = [...new Set(summaries.flatMap((s) => s.seeds))].sort((a, b) => a - b);
  const complete = seeds.map((seed) => {
    const done = models.filter((m) => defenses.every((d) => summaries.some((s) => s.model === m && s.defense === d && s.seeds.includes(seed))));
    return `seed ${seed}: ${done.length}/${models.length} models complete`;
  });
  const auto = summaries.filter((s) => s.defense === "auto");
  const always = (xs: DefenseSummary[]) => xs.filter((s) => s.goal.judged > 0 && s.goal.met === s.goal.judged).map((s) => s.model);
  const autoBd = auto.filter((s) => s.targets.length > 0);
  const autoClean = auto.filter((s) => s.targets.length === 0);
  const bdMet = always(autoBd);
  const cleanMet = always(autoClean);
  const anyMet = [...new Set(summaries.filter((s) => s.defense !== "nc-detect" && s.targets.length > 0 && s.goal.met > 0).map((s) => s.model))];
  return (
    `${models.length} models × ${defenses.length} defenses; ${complete.join("; ") || "no runs"}. ` +
    `auto meets the goal in every recorded seed on ${bdMet.length}/${autoBd.length} backdoored models${bdMet.length ? ` (${bdMet.join(", ")})` : ""} ` +
    `and ${cleanMet.length}/${autoClean.length} clean models; ` +
    `backdoored models where some defense meets it in at least one seed: ${anyMet.length ? anyMet.join(", ") : "none"}`
  );
}

// ---------------------------------------------------------------------------------------------------------
// What a never-poisoned model does on the same poisoned inputs

/**
 * The rate at which each clean zoo model (trained without any trigger) sends one poisoned test set to its
 * target: natural misclassification into that label, which no repair can be expected to go below. On Fashion-MNIST
 * a shirt stamped with a warp or a square is still sometimes read as a pullover or a T-shirt.
 */
export interface CleanFloor {
  model: string;
  target: number;
  /** Rate per clean model name. */
  rates: Record<string, number>;
}

/** The highest clean-model rate on (model, target); undefined when none was measured. */
export function floorOf(floors: readonly CleanFloor[], model: string, target: number): number | undefined {
  const f = floors.find((x) => x.model === model && x.target === target);
  const rates = f ? Object.values(f.rates) : [];
  return rates.length ? Math.max(...rates) : undefined;
}

/**
 * Whether every trigger's ASR after the run is at most the goal's 2% or, where higher, the highest clean-model
 * rate on that trigger. Not the goal (meetsGoal is): a second, stated measure of what is left of the backdoor.
 * Undefined when a trigger has no ASR or no measured floor.
 */
export function withinFloor(r: RunRecord, floors: readonly CleanFloor[]): boolean | undefined {
  if (r.status !== "ok" || r.targets.length === 0) return undefined;
  let all = true;
  for (const t of r.targets) {
    const a = r.asrAfter?.[String(t)];
    const f = floorOf(floors, r.model, t);
    if (a === undefined || f === undefined) return undefined;
    all &&= a <= Math.max(GOAL.asr, f) + 1e-12;
  }
  return all;
}

/** The floors as a table: one row per poisoned set, the clean models' rates and whether 2% is below them. */
export function floorsTable(floors: readonly CleanFloor[]): string {
  const cleanModels = [...new Set(floors.flatMap((f) => Object.keys(f.rates)))].sort();
  const head = ["model", "target", ...cleanModels, "highest", "2% goal"];
  const lines = [`| ${head.join(" | ")} |`, `|${head.map(() => "---").join("|")}|`];
  for (const f of floors) {
    const hi = floorOf(floors, f.model, f.target)!;
    lines.push(`| ${[f.model, `→ ${f.target}`, ...cleanModels.map((c) => pct(f.rates[c])), pct(hi), hi > GOAL.asr ? "below a clean model's rate" : "above it"].map(cell).join(" | ")} |`);
  }
  return lines.join("\n");
}
