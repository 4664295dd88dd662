// `repair` as a library pipeline: Neural Cleanse detection → its reversed triggers handed on in memory at full
// precision → the chosen defense → its repaired network and G. The model and the data are loaded once, by
// the caller. The CLI's `repair` and the bench both run this, so the bench's table measures `badnet repair`.
import { UserError } from "../errors.js";
import type { Model } from "../model/model.js";
import { lapTimer } from "../util/timing.js";
import { OptionError, runDefense, type AnyDefense, type DefenseData, type DefenseOutcome, type ProgressEvent, type ProgressFn, type TriggerInput } from "./defense.js";
import { calibrateOutcomeG, splitForCalibration } from "./g-calibrate.js";
import { neuralCleanseReport } from "./nc-report.js";
import { detectBackdoor, flaggedTriggers, type NcProgress, type NeuralCleanseOptions, type NeuralCleanseResult } from "./neural-cleanse.js";
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

/** Triggers at full precision from a detection run in this process. */
export function triggersFromDetection(r: NeuralCleanseResult): TriggerInput {
  return { flagged: [...r.flagged], triggers: flaggedTriggers(r), source: "neural-cleanse detection", neuralCleanse: neuralCleanseReport(r) };
}

export interface RepairRequest {
  /** A registered defense, or "auto": unlearning when Neural Cleanse flags a label, else Fine-Pruning. */
  defense?: string;
  /** The defense's options by their library names; missing ones take the spec's defaults. */
  options?: Readonly<Record<string, unknown>>;
  /** Options given to whichever defense runs, when its spec has them (e.g. seed, batchSize with "auto"). */
  common?: Readonly<Record<string, unknown>>;
  /** Neural Cleanse settings (inputScale and progress come from the request), or false to skip detection. */
  detect?: Omit<NeuralCleanseOptions, "inputScale" | "onProgress"> | false;
  /** A detection already run on this model and clean data (used instead of running one). */
  detected?: NeuralCleanseResult;
  inputScale: number;
  progress?: ProgressFn;
  /**
   * G's false-alarm rate: the clean data is split (seeded) into the part detection and the defense use and a
   * held-out part G is calibrated on (src/defenses/g-calibrate.ts). Absent: the defense's own G, all data used.
   */
  fpr?: number;
}

export interface RepairResult {
  /** The defense that ran ("auto" resolved). */
  defense: AnyDefense;
  detection?: NeuralCleanseResult;
  outcome: DefenseOutcome;
  /** Seconds: "neural-cleanse" (when it ran here), then the defense's own steps. */
  timings: Record<string, number>;
}

/** Which defense "auto" means after detection. */
export const autoDefense = (flagged: readonly number[]): string => (flagged.length ? "unlearn" : "fine-prune");

/** Checks the request before anything expensive runs; returns the named defense (undefined for "auto"). */
export function checkRepairRequest(req: Pick<RepairRequest, "defense" | "detect" | "detected">): AnyDefense | undefined {
  const name = req.defense ?? "auto";
  const d = name === "auto" ? undefined : findDefense(name);
  if (name !== "auto" && !d) throw new OptionError("defense", `must be auto or one of ${DEFENSES.map((x) => x.name).join(", ")}; got "${name}"`);
  if (d?.needs?.includes("triggers") && req.detect === false && !req.detected) {
    throw new UserError(`defense ${d.name} needs Neural Cleanse's reversed triggers: detection cannot be skipped`);
  }
  return d;
}

export async function repair(model: Model, all: DefenseData, req: RepairRequest): Promise<RepairResult> {
  let defense = checkRepairRequest(req);
  const { timings, lap } = lapTimer();
  // The calibration part is split off first: neither detection nor the defense ever sees it.
  const split = req.fpr === undefined ? undefined : splitForCalibration(all.clean, req.fpr);
  const data: DefenseData = split ? { ...all, clean: split.fit } : all;
  let detection = req.detected;
  if (!detection && req.detect !== false) {
    detection = await detectBackdoor(model, data.clean, { ...(req.detect ?? {}), inputScale: req.inputScale, onProgress: req.progress && ((p) => req.progress!(ncProgressEvent(p))) });
    lap("neural-cleanse");
  }
  defense ??= findDefense(detection ? autoDefense(detection.flagged) : "fine-prune")!;
  const triggers = detection ? triggersFromDetection(detection) : undefined;
  const common = Object.entries(req.common ?? {}).filter(([k, v]) => v !== undefined && k in defense.options);
  const outcome = await runDefense(defense, model, data, { ...Object.fromEntries(common), ...req.options }, { inputScale: req.inputScale, triggers, progress: req.progress });
  // Detection's section belongs in every repair's report, whichever defense ran.
  if (triggers?.neuralCleanse && !outcome.sections.neuralCleanse) outcome.sections.neuralCleanse = triggers.neuralCleanse;
  if (split) {
    await calibrateOutcomeG(outcome, model, data, split.calibration, { fpr: req.fpr!, triggers: triggers?.triggers });
    lap("g-calibration");
  }
  return { defense, detection, outcome, timings: { ...timings, ...outcome.timings } };
}
