// `repair` as a library pipeline: Neural Cleanse detection → its reversed triggers handed on in memory at full
// precision → the chosen defense → its repaired network and G. The model and the data are loaded once, by
// the caller. The CLI's `repair` and the bench both run this, so the bench's table measures `badnet repair`.
import { fail, UserError } from "../errors.js";
import type { Dataset } from "../io/dataset.js";
import type { Model } from "../model/model.js";
import { lapTimer } from "../util/timing.js";
import { OptionError, runDefense, type AnyDefense, type DefenseData, type DefenseOutcome, type ProgressEvent, type ProgressFn, type TriggerInput } from "./defense.js";
import { autoPlan, chooseCandidate, DEFAULT_ACCURACY_WINDOW, NO_CHANGE, noChangeDefinition, pendingReinversion, scoreCandidate, selectionSection, splitForSelection, type CandidateScore } from "./auto-select.js";
import { flagReference, reinvertEvidence, type FlagReference } from "./reinvert-evidence.js";
import { positionFreeLabels, shiftEvidence } from "./shift-evidence.js";
import { refuseG } from "./g-model.js";
import { calibrateOutcomeG, splitForCalibration, type Guarantee } from "./g-calibrate.js";
import { neuralCleanseReport } from "./nc-report.js";
import { detectBackdoor, flaggedTriggers, type NcProgress, type NeuralCleanseOptions, type NeuralCleanseResult, type ReversedTrigger } from "./neural-cleanse.js";
import { HEAD_SHIFT_MAX_SURVIVAL, otherFamilyStandsIn, readableShare } from "./head-shift-evidence.js";
import { DEFENSES, findDefense } from "./registry.js";

/** Neural Cleanse's progress as a generic progress event: one stage per trigger family and phase. */
export function ncProgressEvent(p: NcProgress): ProgressEvent {
  return {
    stage: `NC ${p.family} ${p.phase === "screen" ? "screening" : "full"}`,
    done: p.done,
    total: p.total,
    unit: p.phase === "screen" ? "labels" : "runs",
    note: `label ${p.label} norm ${p.l1Norm.toFixed(1)}`,
  };
}

/**
 * Triggers at full precision from a detection run in this process. `suspects` are labels the user names as
 * targets: they join the flagged labels with their first family's trigger from the scan (needs the scan run with
 * keepTriggers, or the label among the reported triggers), and the source says which labels were not flagged.
 */
export function triggersFromDetection(r: NeuralCleanseResult, suspects: readonly number[] = []): TriggerInput {
  const flagged = [...r.flagged];
  const triggers = flaggedTriggers(r);
  const added = suspects.filter((l) => !flagged.includes(l));
  const family = r.settings.families[0];
  for (const label of added) {
    if (!r.labels.some((m) => m.label === label)) fail(`--suspect: label ${label} was not scanned by Neural Cleanse (add it to --labels)`);
    const t = [...(r.allTriggers ?? []), ...r.triggers].find((x) => x.label === label && (x.family ?? "mask") === family);
    if (!t) throw new Error(`Neural Cleanse result: suspected label ${label} has no ${family} trigger (scan run without keepTriggers)`);
    flagged.push(label);
    triggers.push(t);
  }
  const source = added.length ? `neural-cleanse detection; not flagged, suspected by the user: ${added.join(", ")}` : "neural-cleanse detection";
  // The flagged labels' triggers of the families not used above (present when the scan kept every trigger),
  // where they behave like the backdoor under the head shift (otherFamilyStandsIn).
  const other = (r.allTriggers ?? []).filter((t) => flagged.includes(t.label) && !triggers.some((u) => u.label === t.label && (u.family ?? "mask") === (t.family ?? "mask")));
  const shiftOf = (t: ReversedTrigger) => r.labels.find((m) => m.label === t.label)?.[t.family ?? "mask"]?.headShift;
  const heldOut = other.filter((t) => otherFamilyStandsIn(shiftOf(t)));
  const left = other.filter((t) => !heldOut.includes(t)).map((t) => {
    const kept = readableShare(shiftOf(t));
    return { label: t.label, ...(kept === undefined ? {} : { kept }) };
  });
  return { flagged, triggers, source, neuralCleanse: neuralCleanseReport(r), ...(heldOut.length ? { heldOut } : {}), ...(left.length ? { otherFamilyLeftOut: left } : {}) };
}

export interface RepairRequest {
  /**
   * A registered defense, or "auto": candidates (unlearn when a label is flagged, SAU, FT-SAM, i-BAU, fine-prune,
   * B unchanged) run on the clean data less a held-out selection split and the one the selection split favours is
   * kept (auto-select.ts).
   */
  defense?: string;
  /** The defense's options by their library names; missing ones take the spec's defaults. */
  options?: Readonly<Record<string, unknown>>;
  /** Options given to whichever defense runs, when its spec has them (e.g. seed, batchSize with "auto"). */
  common?: Readonly<Record<string, unknown>>;
  /** Neural Cleanse settings (inputScale and progress come from the request), or false to skip detection. */
  detect?: Omit<NeuralCleanseOptions, "inputScale" | "onProgress"> | false;
  /** A detection already run on this model and clean data (used instead of running one). */
  detected?: NeuralCleanseResult;
  /**
   * Labels the user suspects are attack targets: the trigger repairs (and auto's scoring) take their reversed
   * triggers from the scan as if Neural Cleanse had flagged them. Needs detection.
   */
  suspects?: readonly number[];
  inputScale: number;
  progress?: ProgressFn;
  /**
   * G's false-alarm rate: the clean data is split (seeded) into the part detection and the defense use and a
   * held-out part G is calibrated on (src/defenses/g-calibrate.ts). Absent: the defense's own G, all data used.
   */
  fpr?: number;
  /** With `fpr`: the probability over the held-out draw that G's false-alarm rate stays at or below it (default 0.9). */
  fprConfidence?: number;
  /** "auto": share of the clean data (after G's calibration part) held out to choose by (default 0.2). */
  selectionFraction?: number;
  /** "auto": seconds after which no further candidate starts (the first always runs; default: no limit). */
  budgetSeconds?: number;
  /**
   * "auto": the clean-accuracy window, as a fraction: candidates within max(this, 1.96 standard errors) of the best
   * selection accuracy are eligible (default DEFAULT_ACCURACY_WINDOW, the goal's 1 point). A wider window is the
   * user's choice to pay accuracy for removing a trigger the narrower one could not (selection.tradeoff).
   */
  accuracyWindow?: number;
  /** "auto": candidates to try, in order, each on all flagged labels (default autoPlan(flagged, detection)). */
  candidates?: readonly string[];
  /**
   * "auto": re-invert the flagged labels' triggers on the candidates tied for the lowest attack score and count
   * the fresh trigger's success too (reinvert-evidence.ts; default true). Needs the detection run here or given.
   */
  reinvert?: boolean;
}

export interface RepairResult {
  /** The defense that ran ("auto" resolved). */
  defense: AnyDefense;
  detection?: NeuralCleanseResult;
  outcome: DefenseOutcome;
  /** Seconds: "neural-cleanse" (when it ran here), then the defense's own steps. */
  timings: Record<string, number>;
}


/** Checks the request before anything expensive runs; returns the named defense (undefined for "auto"). */
export function checkRepairRequest(req: Pick<RepairRequest, "defense" | "detect" | "detected" | "accuracyWindow" | "suspects">): AnyDefense | undefined {
  const name = req.defense ?? "auto";
  const d = name === "auto" ? undefined : findDefense(name);
  if (name !== "auto" && !d) throw new OptionError("defense", `must be auto or one of ${DEFENSES.map((x) => x.name).join(", ")}; got "${name}"`);
  const w = req.accuracyWindow;
  if (w !== undefined && !(w > 0 && w <= 1)) throw new OptionError("accuracyWindow", `must be above 0 and at most 1 (a share of clean accuracy), got ${w}`);
  if (w !== undefined && d) throw new UserError("an accuracy window only applies to --defense auto");
  if (req.suspects?.length && req.detect === false && !req.detected) {
    throw new UserError("--suspect takes the suspected labels' reversed triggers from Neural Cleanse's scan: detection cannot be skipped");
  }
  if (d?.needs?.includes("triggers") && req.detect === false && !req.detected) {
    throw new UserError(`defense ${d.name} needs Neural Cleanse's reversed triggers: detection cannot be skipped`);
  }
  return d;
}

export async function repair(model: Model, all: DefenseData, req: RepairRequest): Promise<RepairResult> {
  let defense = checkRepairRequest(req);
  // Before detection: its minutes would be spent on a model no defense can take.
  refuseG(model);
  const { timings, lap } = lapTimer();
  // The calibration part is split off first: neither detection nor the defense ever sees it.
  const guarantee: Guarantee | undefined = req.fprConfidence === undefined ? undefined : { delta: 1 - req.fprConfidence };
  // Drawn from the seed like every other choice: runs at different seeds calibrate on different draws.
  const split = req.fpr === undefined ? undefined : splitForCalibration(all.clean, req.fpr, { guarantee, seed: numberOr(req.common?.seed, 0) });
  let data: DefenseData = split ? { ...all, clean: split.fit } : all;
  // "auto" holds out its selection part next: no candidate and no detection sees it either.
  const sel = defense ? undefined : splitForSelection(data.clean, req.selectionFraction ?? 0.2, numberOr(req.common?.seed, 0));
  if (sel) data = { ...data, clean: sel.fit };
  let detection = req.detected;
  if (!detection && req.detect !== false) {
    // auto also scores its candidates on the flagged labels' triggers of the other family (TriggerInput.heldOut).
    const keepTriggers = req.detect?.keepTriggers || !!req.suspects?.length || !defense;
    detection = await detectBackdoor(model, data.clean, { ...(req.detect ?? {}), keepTriggers, inputScale: req.inputScale, onProgress: req.progress && ((p) => req.progress!(ncProgressEvent(p))) });
    lap("neural-cleanse");
  }
  const triggers = detection ? triggersFromDetection(detection, req.suspects) : undefined;
  const run = (d: AnyDefense, labels?: readonly number[]) => {
    const common = Object.entries(req.common ?? {}).filter(([k, v]) => v !== undefined && k in d.options);
    // An auto candidate restricted to some flagged labels sees only their triggers.
    const t = triggers && labels ? { ...triggers, flagged: triggers.flagged.filter((l) => labels.includes(l)), triggers: triggers.triggers.filter((x) => labels.includes(x.label)) } : triggers;
    return runDefense(d, model, data, { ...Object.fromEntries(common), ...(d === defense ? req.options : {}) }, { inputScale: req.inputScale, triggers: t, progress: req.progress });
  };
  let outcome: DefenseOutcome;
  if (defense) outcome = await run(defense);
  else {
    const reference = detection && req.reinvert !== false ? flagReference(detection) : undefined;
    const picked = await autoRepair(model, sel!.selection, triggers, req, run, reference === undefined ? undefined : { fit: data.clean, reference });
    ({ defense, outcome } = picked);
    Object.assign(timings, picked.timings);
    // So that "g-calibration" below is G's own time, not the candidates' too.
    lap("auto");
  }
  // Detection's section belongs in every repair's report, whichever defense ran.
  if (triggers?.neuralCleanse && !outcome.sections.neuralCleanse) outcome.sections.neuralCleanse = triggers.neuralCleanse;
  if (split) {
    // auto's selection split ranks the signals (no candidate trained on it), so every held-out image sets τ.
    await calibrateOutcomeG(outcome, model, data, split.calibration, { fpr: req.fpr!, triggers: triggers?.triggers, guarantee, reference: sel?.selection });
    lap("g-calibration");
  }
  return { defense, detection, outcome, timings: { ...timings, ...outcome.timings } };
}

/** Why the other family's triggers of some flagged labels do not score the candidates, in one line. */
export function otherFamilyLine(left: readonly { label: number; kept?: number }[]): string {
  const pct = (x: number) => `${(100 * x).toFixed(0)}%`;
  const each = left.map((l) => `label ${l.label} ${l.kept === undefined ? "(no head-shift share to read)" : `(keeps ${pct(l.kept)})`}`);
  return `  other family's trigger not scored: ${each.join(", ")}; it counts only where it keeps under ${pct(HEAD_SHIFT_MAX_SURVIVAL)} of its success on B with the output layer learned again, as a backdoor's trigger does`;
}

const numberOr = (v: unknown, d: number): number => (typeof v === "number" ? v : typeof v === "string" && v.trim() !== "" && Number.isFinite(Number(v)) ? Number(v) : d);

/** Runs the candidates within the budget, scores each on the selection split, keeps the chosen one's outcome. */
async function autoRepair(
  model: Model,
  selection: Dataset,
  triggers: TriggerInput | undefined,
  req: RepairRequest,
  run: (d: AnyDefense, labels?: readonly number[]) => Promise<DefenseOutcome>,
  reinvert?: { fit: Dataset; reference: FlagReference },
): Promise<{ defense: AnyDefense; outcome: DefenseOutcome; timings: Record<string, number> }> {
  const plan = req.candidates?.map((n) => ({ name: n, defense: n, labels: undefined })) ?? autoPlan(triggers?.flagged ?? [], triggers?.neuralCleanse);
  const defenses = plan.map((c) => (c.defense === NO_CHANGE ? noChangeDefinition : findDefense(c.defense)) ?? fail(`auto: unknown candidate defense "${c.defense}"`));
  // Translation evidence on B (shift-evidence.ts), on the selection split: the position-free labels are scored
  // with their triggers moved too, so that a repair that removed a trigger at one position only is not clean.
  const shift = triggers?.triggers.length ? await shiftEvidence(model, selection, triggers.triggers, { seed: numberOr(req.common?.seed, 0) }) : [];
  const anywhere = positionFreeLabels(shift);
  const t0 = performance.now();
  const minTolerance = req.accuracyWindow ?? DEFAULT_ACCURACY_WINDOW;
  const scores: CandidateScore[] = [];
  const outcomes: { defense: AnyDefense; outcome: DefenseOutcome }[] = [];
  const skipped: string[] = [];
  const timings: Record<string, number> = {};
  for (const [k, d] of defenses.entries()) {
    const name = plan[k].name;
    // "none" costs nothing to run: the budget never skips it.
    if (d !== noChangeDefinition && outcomes.length > 0 && req.budgetSeconds !== undefined && (performance.now() - t0) / 1000 >= req.budgetSeconds) {
      skipped.push(name);
      continue;
    }
    if (d.needs?.includes("triggers") && !triggers?.flagged.length) {
      skipped.push(name);
      continue;
    }
    const s0 = performance.now();
    let outcome: DefenseOutcome;
    try {
      outcome = await run(d, plan[k].labels);
    } catch (e) {
      // A candidate that does not fit this model (e.g. fine-prune without a conv layer) is skipped, with why; a
      // setting the caller gave that it rejects (req.common) is the caller's error, not the candidate's, and
      // skipping every candidate for it would hand B back unchanged.
      if (e instanceof OptionError && e.option in (req.common ?? {})) throw new UserError(`auto: candidate ${name}: --${e.flag} ${e.complaint}`);
      if (!(e instanceof UserError)) throw e;
      skipped.push(`${name} (${e.message})`);
      continue;
    }
    const seconds = (performance.now() - s0) / 1000;
    if (outcome.notApplied || !outcome.repaired) {
      skipped.push(name);
      continue;
    }
    req.progress?.({ stage: "auto: scoring", done: outcomes.length, total: defenses.length, unit: "candidate", note: name });
    const q0 = performance.now();
    const sc = await scoreCandidate(name, outcome.repaired, selection, { triggers: triggers?.triggers ?? [], heldOut: triggers?.heldOut, anywhere, inputScale: req.inputScale, seed: numberOr(req.common?.seed, 0) }, seconds);
    scores.push({ ...sc, ...(plan[k].labels ? { labels: plan[k].labels } : {}), ...(outcome.overBudget ? { overBudget: outcome.overBudget } : {}) });
    timings[`auto: ${name}`] = seconds;
    timings[`auto: score ${name}`] = (performance.now() - q0) / 1000;
    outcomes.push({ defense: d, outcome });
  }
  if (outcomes.length === 0) fail(`auto: no candidate repair could run (${skipped.join(", ")})`);
  // Re-inversion: only the candidates tied for the lowest attack score, until no tied one is left without it.
  for (let pending = pendingReinversion(scores, minTolerance, selection.size); reinvert && pending.indices.length; pending = pendingReinversion(scores, minTolerance, selection.size)) {
    for (const i of pending.indices) {
      req.progress?.({ stage: "auto: re-inverting", done: 0, total: 1, unit: "candidate", note: scores[i].defense });
      const r0 = performance.now();
      const reinverted = await reinvertEvidence(outcomes[i].outcome.repaired!, reinvert.fit, selection, pending.labels, reinvert.reference, { inputScale: req.inputScale, seed: numberOr(req.common?.seed, 0) + 1 });
      const seconds = (performance.now() - r0) / 1000;
      scores[i] = { ...scores[i], reinverted, reinvertSeconds: seconds };
      timings[`auto: re-invert ${scores[i].defense}`] = seconds;
    }
  }
  const { index, reason, tolerance, tradeoff } = chooseCandidate(scores, minTolerance, selection.size);
  const { defense, outcome } = outcomes[index];
  const section = { ...selectionSection(scores, index, reason, selection.size, { tolerance, window: minTolerance, skipped, tradeoff }), ...(shift.length ? { shiftEvidence: shift } : {}), ...(triggers?.otherFamilyLeftOut?.length ? { otherFamilyLeftOut: triggers.otherFamilyLeftOut } : {}) };
  outcome.sections.selection = section;
  const p = (v: number | undefined) => (v === undefined ? "—" : `${(100 * v).toFixed(1)}%`);
  outcome.lines = [
    `auto        ${scores.length} candidate(s) scored on ${selection.size} held-out clean images (clean acc / reversed-trigger / adversarial success):`,
    ...scores.map((s, i) => `  ${i === index ? "*" : " "} ${s.defense.padEnd(11)} ${p(s.cleanAccuracy).padStart(6)} / ${p(s.triggerSuccess).padStart(6)} / ${p(s.adversarialSuccess).padStart(6)}  (${s.seconds.toFixed(1)} s)${s.overBudget ? `  over its --max-drop (${(100 * s.overBudget.drop).toFixed(1)} points on its own held-out part)` : ""}${s.perLabel && s.perLabel.length > 1 ? `  per label ${s.perLabel.map((q) => `${q.label}: ${p(q.success)}`).join(", ")}` : ""}${s.heldOut ? `  other family ${s.heldOut.map((q) => `${q.label}: ${p(q.success)}`).join(", ")}` : ""}${s.reinverted ? `  re-inverted ${s.reinverted.map((q) => `${q.label}: L1 ${q.l1Norm.toFixed(1)} (index ${q.index.toFixed(2)}) ${q.counts ? `<= ${q.bound.toFixed(1)}, ${p(q.success)}` : `> ${q.bound.toFixed(1)}, not counted`}`).join("; ")}` : ""}`),
    ...(skipped.length ? [`  not run: ${skipped.join(", ")}`] : []),
    ...(triggers?.otherFamilyLeftOut?.length ? [otherFamilyLine(triggers.otherFamilyLeftOut)] : []),
    ...shift.map((e) => `  label ${e.label} on B: reversed trigger ${p(e.atFound)} where found, ${p(e.translated)} moved at random (ratio ${e.ratio.toFixed(2)}; ${p(e.offShare)} of the rolls move it off itself): ${e.positionFree ? "position-free, scored moved too" : "fixed position"}`),
    `chose       ${reason}`,
    ...outcome.lines,
  ];
  outcome.timings = { ...timings, ...outcome.timings };
  return { defense, outcome, timings: {} };
}
