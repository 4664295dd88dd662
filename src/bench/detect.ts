// npm run bench:detect — Neural Cleanse detection against the truth:
//   1. every model of the Fashion-MNIST zoo × N seeds: flagged labels against the manifest's targets;
//   2. the five real CSAW-HackML networks with the 5 clean fixture faces: flagged labels, the smallest norms, time.
//   node dist/bench/detect.js [--zoo DIR] [--seeds 5] [--first-seed 0] [--only a,b] [--skip-zoo] [--skip-csaw] [--out FILE.md] [--raw FILE.jsonl]
// --raw appends every zoo scan's per-label measurements (what the statistics read) as a JSON line, so that a
// change of the statistics can be measured on the same scans with --rescore FILE.jsonl (no optimization runs);
// --natural rescores with the natural-feature check and its second stage (off by default, see nc-evidence.ts);
// --null normal|t|mad and --family-fdr split|each choose the index's null and whether the FDR level is split over
// the trigger families, --compact on|off whether the mask family's spread is combined with its norm, --head-shift on|off whether the
// head-shift evidence flags (where the scans measured it; head-shift-evidence.ts), --head-shift-exclude on|off
// whether its targets leave the statistics for one more round, --head-shift-veto on|off whether a blend-family
// flag whose trigger keeps its success under the head shift is withdrawn (defaults: DEFAULT_SCORE_RULE), --loop all|candidates|off the confirm-and-exclude loop; --restarts N overrides the starts per label of new scans,
// --more-starts M the further starts below the reference median (default: as many as --restarts), --mask-threshold
// T the attack success a mask-family trigger must reach in new scans (default 0.99, as the blend family's; an
// experiment: the raw lines record it).
// --raw scans record every start of each label (norm, reached, held-out success), so --first-starts K rescores
// them as the K-start scan (the first K starts are those a K-start scan runs, up to float rounding: nc-starts.ts), and
// --starts-at-stake B+M as a scan of B starts with M more for the labels below the reference median, in the
// families detect gives further starts to (MORE_STARTS_FAMILIES; B starts in the others) (--stake-null
// base: the median and MAD from every label's norm after B starts, an experiment; all, the default: as detect does).
import { appendFileSync, existsSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import { DEFAULT_SCORE_RULE, detectBackdoor, MORE_STARTS_FAMILIES, scoreScan, TRIGGER_FAMILIES, type NcRawScore, type NeuralCleanseResult, type ScoreRule, type TriggerFamily } from "../defenses/neural-cleanse.js";
import { LOOP_RULES, NULL_DISTRIBUTIONS, type LoopRule, type NullDistribution } from "../defenses/nc-evidence.js";
import { maskSpread } from "../defenses/nc-compact.js";
import { scoreWithFirstStarts, scoreWithStartsAtStake } from "../defenses/nc-starts.js";
import { openDataset } from "../io/open-dataset.js";
import { openImageFiles } from "../io/image-folder.js";
import { loadModel } from "../io/load-model.js";
import type { ZooManifest } from "../zoo/build.js";
import { fixturesDir, loadDeepId } from "./common.js";
import { benchArgs } from "./args.js";

const { values } = benchArgs(import.meta.url, {
  options: {
    zoo: { type: "string" },
    seeds: { type: "string" },
    "first-seed": { type: "string" },
    only: { type: "string" },
    "skip-zoo": { type: "boolean" },
    "skip-csaw": { type: "boolean" },
    out: { type: "string" },
    raw: { type: "string" },
    rescore: { type: "string" },
    natural: { type: "boolean" },
    null: { type: "string" },
    "family-fdr": { type: "string" },
    restarts: { type: "string" },
    "more-starts": { type: "string" },
    "mask-threshold": { type: "string" },
    compact: { type: "string" },
    "head-shift": { type: "string" },
    "head-shift-exclude": { type: "string" },
    "head-shift-veto": { type: "string" },
    loop: { type: "string" },
    "leave-out": { type: "string" },
    "first-starts": { type: "string" },
    "starts-at-stake": { type: "string" },
    "stake-null": { type: "string" },
  },
});

/** One zoo scan as --raw saves it. */
interface RawScan {
  model: string;
  seed: number;
  targets: number[];
  labels: number[];
  raw: Partial<Record<TriggerFamily, NcRawScore[]>>;
  scoring: { scale: "log" | "linear"; fdr: number; minHeldOutSuccess: number; hw: number; heldOutImages: number };
  /** The success bar of the mask family's triggers (absent in scans saved before it could be set: 0.99). */
  maskThreshold?: number;
  seconds: number;
  /**
   * Every label's reversed trigger per family, in the order of `labels`: mask and pattern as 8-bit base64
   * (mask·255; pattern·255/range), so that a later session can measure overlaps or stamp them again; null for
   * a label stopped while screening.
   */
  triggers?: Partial<Record<TriggerFamily, ({ mask: string; pattern: string } | null)[]>>;
}

const to8 = (v: Float32Array, max: number): string => Buffer.from(Uint8Array.from(v, (x) => Math.round((255 * Math.min(max, Math.max(0, x))) / max))).toString("base64");

/**
 * Scans saved before the mask spread was measured, but with their triggers: the spread from the saved 8-bit
 * mask (quantisation moves it by well under 1%). Without triggers the scan stays as it is (norms only).
 */
function fillSpreads(x: RawScan): void {
  const masks = x.triggers?.mask;
  const scores = x.raw.mask;
  if (!masks || !scores || scores.every((r) => r.spread !== undefined)) return;
  const side = Math.round(Math.sqrt(x.scoring.hw));
  // The zoo's images are square; other shapes are not saved with triggers by this bench.
  if (side * side !== x.scoring.hw) return;
  scores.forEach((r, i) => {
    const m = masks[i];
    if (r.spread === undefined && m) r.spread = maskSpread(Uint8Array.from(Buffer.from(m.mask, "base64")), side, side);
  });
}

function rawOf(model: string, seed: number, targets: number[], r: NeuralCleanseResult): RawScan {
  const raw: RawScan["raw"] = {};
  for (const f of TRIGGER_FAMILIES) {
    if (!r.families[f]) continue;
    raw[f] = r.labels.map((l) => {
      const { anomalyIndex: _a, flagged: _f, confidence: _c, qValue: _q, reasons: _r, naturalReach: _n, spreadIndex: _s, combinedIndex: _ci, ...rest } = l[f]!;
      return rest;
    });
  }
  const s = r.settings;
  const range = 255 / r.inputScale;
  const triggers: RawScan["triggers"] = {};
  // Only the full phase's triggers (on a 1,283-label scan the screened labels' would take tens of megabytes).
  const phaseOf = new Map(r.labels.flatMap((l) => TRIGGER_FAMILIES.map((f) => [`${f}:${l.label}`, l[f]?.phase] as const)));
  for (const t of r.allTriggers ?? []) {
    const f = t.family ?? "mask";
    (triggers[f] ??= []).push(phaseOf.get(`${f}:${t.label}`) === "full" ? { mask: to8(t.mask, 1), pattern: to8(t.pattern, range) } : null);
  }
  return { model, seed, targets, labels: r.labels.map((l) => l.label), raw, scoring: { scale: s.scale, fdr: s.fdr, minHeldOutSuccess: s.minHeldOutSuccess, hw: r.shape[1] * r.shape[2], heldOutImages: r.images.heldOut }, maskThreshold: s.maskThreshold, seconds: r.seconds, ...(r.allTriggers ? { triggers } : {}) };
}
const seeds = Number(values.seeds ?? 5);
if (!Number.isInteger(seeds) || seeds < 1) throw new Error(`--seeds must be a positive integer, got ${values.seeds}`);
// --first-seed resumes an interrupted --raw run: seeds first-seed .. seeds-1 (the table then shows those only).
const firstSeed = Number(values["first-seed"] ?? 0);
if (!Number.isInteger(firstSeed) || firstSeed < 0 || firstSeed >= seeds) throw new Error(`--first-seed must be an integer in [0, --seeds), got ${values["first-seed"]}`);
const only = values.only?.split(",").map((s) => s.trim());
// --restarts: random starts per label in the full phase (default: the model's budget, nc-budget.ts).
const restarts = values.restarts === undefined ? undefined : Number(values.restarts);
if (restarts !== undefined && (!Number.isInteger(restarts) || restarts < 1)) throw new Error(`--restarts must be a positive integer, got ${values.restarts}`);
const moreStarts = values["more-starts"] === undefined ? undefined : Number(values["more-starts"]);
if (moreStarts !== undefined && (!Number.isInteger(moreStarts) || moreStarts < 0)) throw new Error(`--more-starts must be an integer >= 0, got ${values["more-starts"]}`);
const maskThreshold = values["mask-threshold"] === undefined ? undefined : Number(values["mask-threshold"]);
if (maskThreshold !== undefined && !(maskThreshold > 0 && maskThreshold <= 1)) throw new Error(`--mask-threshold must be in (0, 1], got ${values["mask-threshold"]}`);
const lines: string[] = [];
const say = (s = "") => {
  process.stdout.write(s + "\n");
  lines.push(s);
};
const log = (s: string) => process.stderr.write(`[bench:detect] ${s}\n`);
const list = (xs: number[]) => (xs.length ? xs.join(", ") : "none");
const smallest = (r: NeuralCleanseResult, n = 5) =>
  [...r.labels].sort((p, q) => p.l1Norm - q.l1Norm).slice(0, n).map((l) => `${l.label} (${l.l1Norm.toFixed(1)})`).join(", ");

/**
 * Known targets of the CSAW networks: sunglasses and lab3 send their triggered faces to label 0 (the
 * competition's description); the other three networks' targets were not published, so none is listed.
 */
/** The CSAW-HackML 2020 networks and their input scales. */
const CSAW_NETS: [string, number][] = [
  ["sunglasses_bd_weights.h5", 255],
  ["anonymous_1_bd_weights.h5", 255],
  ["anonymous_2_bd_weights.h5", 255],
  ["multi_trigger_multi_target_bd_weights.h5", 255],
  ["lab3_bd_weights.h5", 1],
];
const CSAW_TARGETS: Record<string, number[]> = { "sunglasses_bd_weights.h5": [0], "lab3_bd_weights.h5": [0] };

// ---- 0. --rescore: the zoo table from saved scans, through the statistics of this build
if (values.rescore) {
  // A (model, seed) scanned twice (files concatenated from several runs) counts once: the last line wins.
  const byKey = new Map<string, RawScan>();
  // A .gz file (the saved scans in docs/data) is read through gunzip.
  const buf = readFileSync(values.rescore);
  const text = values.rescore.endsWith(".gz") ? gunzipSync(buf).toString("utf8") : buf.toString("utf8");
  for (const line of text.split("\n").filter((l) => l.trim())) {
    const x = JSON.parse(line) as RawScan;
    fillSpreads(x);
    byKey.set(`${x.model}\u0000${x.seed}`, x);
  }
  const naturalCheck = values.natural === true;
  const nd = values.null ?? DEFAULT_SCORE_RULE.nullDistribution;
  if (!NULL_DISTRIBUTIONS.includes(nd as NullDistribution)) throw new Error(`--null must be one of ${NULL_DISTRIBUTIONS.join(", ")}, got ${nd}`);
  // The rule's choices beside the natural-feature check: the index's null and the FDR split over the families.
  const ff = values["family-fdr"] ?? (DEFAULT_SCORE_RULE.splitFamilies ? "split" : "each");
  if (ff !== "split" && ff !== "each") throw new Error(`--family-fdr must be split or each, got ${ff}`);
  const lp = values.loop ?? DEFAULT_SCORE_RULE.loop;
  if (!LOOP_RULES.includes(lp as LoopRule)) throw new Error(`--loop must be one of ${LOOP_RULES.join(", ")}, got ${lp}`);
  const onOff = (flag: keyof typeof values, dflt: boolean): boolean => {
    const v = values[flag] ?? (dflt ? "on" : "off");
    if (v !== "on" && v !== "off") throw new Error(`--${flag} must be on or off, got ${String(v)}`);
    return v === "on";
  };
  const rule: Required<ScoreRule> = {
    nullDistribution: nd as NullDistribution,
    splitFamilies: ff === "split",
    compactness: onOff("compact", DEFAULT_SCORE_RULE.compactness),
    loop: lp as LoopRule,
    headShift: onOff("head-shift", DEFAULT_SCORE_RULE.headShift),
    headShiftExclude: onOff("head-shift-exclude", DEFAULT_SCORE_RULE.headShiftExclude),
    headShiftVeto: onOff("head-shift-veto", DEFAULT_SCORE_RULE.headShiftVeto),
    leaveOut: onOff("leave-out", DEFAULT_SCORE_RULE.leaveOut),
  };
  const firstStarts = values["first-starts"] === undefined ? undefined : Number(values["first-starts"]);
  if (firstStarts !== undefined && (!Number.isInteger(firstStarts) || firstStarts < 1)) throw new Error(`--first-starts must be a positive integer, got ${values["first-starts"]}`);
  const stake = values["starts-at-stake"]?.match(/^(\d+)\+(\d+)$/);
  if (values["starts-at-stake"] !== undefined && (!stake || Number(stake[1]) < 1)) throw new Error(`--starts-at-stake must be B+M (starts for every label, further starts below the median; B >= 1), got ${values["starts-at-stake"]}`);
  if (stake && firstStarts !== undefined) throw new Error("--first-starts and --starts-at-stake cannot be combined");
  const stakeNull = values["stake-null"] ?? "all";
  if (stakeNull !== "all" && stakeNull !== "base") throw new Error(`--stake-null must be all or base, got ${stakeNull}`);
  if (stakeNull === "base" && !stake) throw new Error("--stake-null base needs --starts-at-stake");
  for (const x of byKey.values()) {
    for (const f of TRIGGER_FAMILIES) {
      if (!x.raw[f]) continue;
      if (firstStarts !== undefined) x.raw[f] = x.raw[f]!.map((l) => scoreWithFirstStarts(l, firstStarts));
      if (stake && !MORE_STARTS_FAMILIES.includes(f)) x.raw[f] = x.raw[f]!.map((l) => scoreWithFirstStarts(l, Number(stake[1])));
      else if (stake) x.raw[f] = scoreWithStartsAtStake(x.raw[f]!, Number(stake[1]), Number(stake[2]), { nullFromBase: stakeNull === "base" });
    }
  }
  const csawNames = new Set(CSAW_NETS.map(([f]) => f.replace("_bd_weights.h5", "")));
  const all = [...byKey.values()];
  const scans = all.filter((x) => !csawNames.has(x.model));
  const models = [...new Set(scans.map((x) => x.model))].sort();
  say(`## Zoo, rescored from ${values.rescore} (${scans.length} scans${firstStarts ? `, as ${firstStarts}-start scans` : ""}${stake ? `, as scans of ${stake[1]} starts and ${stake[2]} more below the reference median` : ""}${naturalCheck ? ", with the natural-feature check" : ""}; index null ${rule.nullDistribution}${rule.splitFamilies ? ", FDR split over the families" : ", FDR level per family"}${rule.compactness ? ", mask spread combined with the norm" : ", norms only"}, loop ${rule.loop}, head shift ${rule.headShift ? "on" : "off"}${rule.headShift ? `, its targets out of the reference ${rule.headShiftExclude ? "on" : "off"}` : ""}${rule.leaveOut ? ", leave-one-out indices" : ""})`);
  say();
  say("| model | targets | flagged per seed | every target flagged | wrong flags |");
  say("|---|---|---|---|---|");
  let good = 0, hits = 0, scored = 0, wrongAll = 0, cleanFlagged = 0;
  for (const name of models) {
    const mine = scans.filter((x) => x.model === name).sort((p, q) => p.seed - q.seed);
    const targets = mine[0].targets;
    const flags = mine.map((x) => scoreScan(x.labels, x.raw, { ...x.scoring, naturalCheck, ...rule }).flagged);
    const all = flags.filter((f) => targets.every((t) => f.includes(t))).length;
    const wrong = flags.reduce((n, f) => n + f.filter((l) => !targets.includes(l)).length, 0);
    if (targets.length ? all >= Math.min(4, mine.length) && wrong === 0 : wrong === 0) good++;
    if (targets.length) {
      hits += all;
      scored += mine.length;
    } else cleanFlagged += flags.filter((f) => f.length > 0).length;
    wrongAll += wrong;
    say(`| ${name} | ${list(targets)} | ${flags.map((f) => `[${f.join(",")}]`).join(" ")} | ${targets.length ? `${all}/${mine.length}` : "—"} | ${wrong} |`);
  }
  say();
  say(`Goal met on ${good}/${models.length} models; every target flagged in ${hits}/${scored} scans of backdoored models; ${wrongAll} wrong flags; ${cleanFlagged} clean-model scans with a flag.`);
  const csaw = all.filter((x) => csawNames.has(x.model));
  if (csaw.length) {
    say();
    say(`## CSAW networks, rescored (${csaw.length} scans)`);
    say();
    say("| network | known target | flagged (confidence) | smallest mask norms | scan time |");
    say("|---|---|---|---|---|");
    for (const x of csaw) {
      const r = scoreScan(x.labels, x.raw, { ...x.scoring, naturalCheck, ...rule });
      const flagged = r.labels.filter((l) => l.flagged).map((l) => `${l.label} (${(100 * l.confidence).toFixed(0)}%)`);
      const small = [...r.labels].sort((p, q) => p.l1Norm - q.l1Norm).slice(0, 5).map((l) => `${l.label} (${l.l1Norm.toFixed(1)})`).join(", ");
      say(`| ${x.model} | ${list(x.targets)} | ${flagged.length ? flagged.join(", ") : "none"} | ${small} | ${x.seconds.toFixed(0)} s |`);
    }
  }
  if (values.out) writeFileSync(values.out, lines.join("\n") + "\n");
  process.exit(0);
}

// ---- 1. the zoo
if (!values["skip-zoo"]) {
  const zoo = values.zoo ?? "zoo";
  if (!existsSync(zoo)) {
    say(`no zoo at ${zoo}: build one with \`badnet zoo build --dataset fashion-mnist --out ${zoo}\` (or pass --zoo DIR)`);
  } else {
    const dirs = readdirSync(zoo).filter((d) => statSync(join(zoo, d)).isDirectory() && existsSync(join(zoo, d, "manifest.json")) && (!only || only.includes(d))).sort();
    say(`## Zoo (${zoo}): ${seeds} seeds per model`);
    say();
    say("| model | targets | flagged per seed | every target flagged | wrong flags | time per scan |");
    say("|---|---|---|---|---|---|");
    let goodModels = 0;
    for (const d of dirs) {
      const m = JSON.parse(readFileSync(join(zoo, d, "manifest.json"), "utf8")) as ZooManifest;
      const model = await loadModel(join(zoo, d, m.files.model));
      const flagsPerSeed: number[][] = [];
      let allTargets = 0, wrong = 0, seconds = 0;
      for (let seed = firstSeed; seed < seeds; seed++) {
        const valid = await openDataset(join(zoo, d, m.files.valid), { inputScale: m.inputScale });
        const r = await detectBackdoor(model, valid, { inputScale: m.inputScale, seed, sourceCurves: true, keepTriggers: values.raw !== undefined, recordStarts: values.raw !== undefined, restarts, moreStarts, maskThreshold });
        valid.close();
        if (values.raw) appendFileSync(values.raw, JSON.stringify(rawOf(d, seed, m.targets, r)) + "\n");
        flagsPerSeed.push(r.flagged);
        if (m.targets.every((t) => r.flagged.includes(t))) allTargets++;
        wrong += r.flagged.filter((l) => !m.targets.includes(l)).length;
        seconds += r.seconds;
        log(`${d} seed ${seed}: flagged [${r.flagged}] (targets [${m.targets}]) in ${r.seconds.toFixed(1)} s`);
      }
      const ran = seeds - firstSeed;
      const ok = m.targets.length ? allTargets >= Math.min(4, ran) && wrong === 0 : wrong === 0;
      if (ok) goodModels++;
      say(`| ${d} | ${list(m.targets)} | ${flagsPerSeed.map((f) => `[${f.join(",")}]`).join(" ")} | ${m.targets.length ? `${allTargets}/${ran}` : "—"} | ${wrong} | ${(seconds / ran).toFixed(1)} s |`);
    }
    say();
    say(`Goal (every target flagged in >= 4 of 5 seeds, nothing else ever flagged): met on ${goodModels}/${dirs.length} models.`);
    say();
  }
}

// ---- 2. the real CSAW networks with the 5 clean faces
if (!values["skip-csaw"]) {
  const dir = join(fixturesDir(), "csaw2020/images");
  const faces = readdirSync(dir).filter((f) => f.startsWith("clean_")).sort().map((f) => join(dir, f));
  say(`## CSAW-HackML 2020 networks, ${faces.length} clean faces, all 1,283 labels`);
  say();
  say("| network | flagged (confidence) | smallest mask norms | time |");
  say("|---|---|---|---|");
  for (const [file, scale] of CSAW_NETS) {
    if (only && !only.some((o) => file.startsWith(o))) continue;
    const model = await loadDeepId(`csaw2020/models/${file}`);
    const data = await openImageFiles(faces, { inputScale: scale });
    log(`${file}: scanning`);
    const r = await detectBackdoor(model, data, { inputScale: scale, sourceCurves: true, recordStarts: values.raw !== undefined, restarts, moreStarts, maskThreshold });
    // The CSAW scans too, for --rescore (their targets: see CSAW_TARGETS), without their triggers (3-channel
    // patterns of some 40 full-phase labels per family: megabytes per network).
    if (values.raw) appendFileSync(values.raw, JSON.stringify(rawOf(file.replace("_bd_weights.h5", ""), 0, CSAW_TARGETS[file] ?? [], r)) + "\n");
    const flagged = r.labels.filter((l) => l.flagged).map((l) => `${l.label} (${(100 * l.confidence).toFixed(0)}%)`);
    say(`| ${file.replace("_bd_weights.h5", "")} | ${flagged.length ? flagged.join(", ") : "none"} | ${smallest(r)} | ${r.seconds.toFixed(0)} s (${r.imagePasses} image passes) |`);
  }
  say();
}
if (values.out) writeFileSync(values.out, lines.join("\n") + "\n");
