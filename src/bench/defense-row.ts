// One row of the defense table: a registered defense run through the repair pipeline (what `badnet repair
// --defense NAME` runs) on one model, with its numbers per poisoned set (one per target) cross-checked against
// the library's merged counts. No side effects on import: the bench and the tests share it.
import type { AnyDefense, DefenseData } from "../defenses/defense.js";
import { gRates } from "../eval/evaluate.js";
import type { NeuralCleanseResult } from "../defenses/neural-cleanse.js";
import { repair } from "../defenses/pipeline.js";
import { accuracyOf } from "../eval/evaluate.js";
import type { Dataset } from "../io/dataset.js";
import { predictLabels } from "../model/forward.js";
import type { Model } from "../model/model.js";
import type { Graph } from "../graph/ir.js";
import type { ReportEvalResult, ReportG } from "../report/types.js";

/** One poisoned test set of a model (one per target). */
export interface PoisonSet {
  target: number;
  file: string;
  ds: Dataset;
  /** B's predictions on it. */
  bPred: Int32Array;
}

/** Counts over one poisoned set: attack successes and G flags. */
export interface TargetCounts {
  target: number;
  n: number;
  asrBefore: number;
  /** ASR of the repaired network (STRIP: of G, i.e. accepted and sent to the target). */
  asrAfter: number;
  /** Inputs G sends to class N. */
  gFlagged: number;
  /** Inputs G answers with the target (accepted and sent there): the attack's success through G. */
  gAttack: number;
}

export interface DefenseRow {
  model: string;
  attack: string;
  defense: string;
  /** "ok", "skipped" (nothing flagged for the NC mitigations) or "failed". */
  status: "ok" | "skipped" | "failed";
  reason?: string;
  /** Clean test accuracy of B and of the repaired network (STRIP: of G, rejections counted wrong). */
  cleanBefore?: number;
  cleanAfter?: number;
  /** Library numbers over the (merged) poisoned set. */
  asrBefore?: number;
  asrAfter?: number;
  perTarget?: TargetCounts[];
  g?: ReportG;
  gDetection?: number;
  gFalsePositive?: number;
  /** G's own attack success: poisoned inputs G accepts and classifies as the target (library merged counts). */
  gAsr?: number;
  /** Neural Cleanse labels whose reversed triggers the mitigation used. */
  triggersFrom?: number[];
  /** "auto": the repair it chose, and the labels its own detection flagged. */
  chosen?: string;
  /** auto: why it chose (the report's selection.reason). */
  selection?: string;
  autoFlagged?: number[];
  notes: string;
  seconds?: number;
  /** Problems found while cross-checking per-target numbers against the library's. */
  warnings: string[];
}

const frac = (k: number, n: number): number => (n ? k / n : 0);
const hits = (pred: Int32Array, labels: Int32Array): number => accuracyOf(pred, labels).correct;

/**
 * Per-target ASR and G flags of a repaired network from B's and B''s predictions on each poisoned set
 * (gRates: G flags where B and B' disagree), checked against the library's merged counts.
 */
async function perTargetRepair(b: Model, repaired: Model, sets: PoisonSet[], lib: { after?: ReportEvalResult; g?: ReportG }, warnings: string[]): Promise<TargetCounts[]> {
  const out: TargetCounts[] = [];
  let success = 0, flagged = 0, n = 0;
  for (const p of sets) {
    const labels = p.ds.labels!;
    const rPred = await predictLabels(repaired, p.ds);
    const g = gRates(b.numClasses, { pred: p.bPred, repaired: rPred, labels }, { pred: p.bPred, repaired: rPred, labels });
    const h = hits(rPred, labels);
    out.push({ target: p.target, n: labels.length, asrBefore: frac(hits(p.bPred, labels), labels.length), asrAfter: frac(h, labels.length), gFlagged: g.poisoned!.flagged, gAttack: g.poisoned!.attackSuccess });
    success += h;
    flagged += g.poisoned!.flagged;
    n += labels.length;
  }
  if (lib.after?.asr !== undefined && lib.after.nPoisoned !== undefined) {
    const libHits = Math.round(lib.after.asr * lib.after.nPoisoned);
    if (lib.after.nPoisoned !== n || libHits !== success) warnings.push(`per-target ASR after (${success}/${n}) differs from the library's (${libHits}/${lib.after.nPoisoned})`);
  }
  if (lib.g?.poisoned && (lib.g.poisoned.flagged !== flagged || lib.g.poisoned.n !== n)) {
    warnings.push(`per-target G flags (${flagged}/${n}) differ from the library's (${lib.g.poisoned.flagged}/${lib.g.poisoned.n})`);
  }
  return out;
}

/** STRIP per poisoned set: the library's per-input entropies (merged order) against its threshold, B's predictions. */
function perTargetStrip(entropy: number[], threshold: number, sets: PoisonSet[], g: ReportG | undefined, warnings: string[]): TargetCounts[] {
  const out: TargetCounts[] = [];
  let off = 0, flaggedAll = 0, successAll = 0;
  for (const p of sets) {
    const labels = p.ds.labels!;
    let flagged = 0, success = 0;
    for (let i = 0; i < labels.length; i++) {
      if (entropy[off + i] < threshold) flagged++;
      else if (p.bPred[i] === labels[i]) success++;
    }
    off += labels.length;
    flaggedAll += flagged;
    successAll += success;
    out.push({ target: p.target, n: labels.length, asrBefore: frac(hits(p.bPred, labels), labels.length), asrAfter: frac(success, labels.length), gFlagged: flagged, gAttack: success });
  }
  if (off !== entropy.length) warnings.push(`STRIP returned ${entropy.length} poisoned entropies for ${off} poisoned inputs`);
  if (g?.poisoned && (g.poisoned.flagged !== flaggedAll || g.poisoned.attackSuccess !== successAll)) {
    warnings.push(`per-target STRIP counts (flagged ${flaggedAll}, success ${successAll}) differ from the library's G (${g.poisoned.flagged}, ${g.poisoned.attackSuccess})`);
  }
  return out;
}

function fillG(row: DefenseRow, g: ReportG | undefined): void {
  row.g = g;
  if (!g) return;
  row.gFalsePositive = frac(g.clean.flagged, g.clean.n);
  if (g.poisoned) {
    row.gDetection = frac(g.poisoned.flagged, g.poisoned.n);
    row.gAsr = frac(g.poisoned.attackSuccess, g.poisoned.n);
  }
}

export interface RowContext {
  inputScale: number;
  /** Neural Cleanse's run on this model (its triggers feed the defenses that need them). */
  detected?: NeuralCleanseResult;
  /** Why there is no detection, when it failed. */
  detectionError?: string;
  /** The poisoned sets `data.poisoned` was merged from, in order, with B's predictions. */
  sets: PoisonSet[];
  /** B's clean test accuracy (a detector's "before"). */
  cleanBefore: number;
  /** Seed given to the defense (when it has a seed option) and, for "auto", to its detection and splits. */
  seed?: number;
  /** "auto": G's false-alarm rate (calibrated G, as `repair` by default); absent: the defense's own G. */
  fpr?: number;
}

/** Network with N+1 outputs (a G graph) wrapped as a Model so the batched inference helpers run it. */
function graphModel(g: Graph, b: Model): Model {
  return { name: `${b.name}_G`, graph: g, input: "input", logits: g.outputs[0]!.name, inputShape: b.inputShape, numClasses: b.numClasses + 1, layerOutputs: new Map(), params: [] };
}

/**
 * Per-target counts of a calibrated G (auto): G itself is run on each poisoned set, since its flags do not follow
 * from B and B' (several signals and thresholds). ASR after is the repaired network's, as for the other repairs.
 */
async function perTargetCalibrated(b: Model, repaired: Model, g: Graph, sets: PoisonSet[], lib: ReportG | undefined, warnings: string[]): Promise<TargetCounts[]> {
  const gm = graphModel(g, b);
  const out: TargetCounts[] = [];
  let flaggedAll = 0, attackAll = 0, n = 0;
  for (const p of sets) {
    const labels = p.ds.labels!;
    const rPred = await predictLabels(repaired, p.ds);
    const gPred = await predictLabels(gm, p.ds);
    const flagged = gPred.reduce((a, v) => a + (v === b.numClasses ? 1 : 0), 0);
    const attack = hits(gPred, labels);
    out.push({ target: p.target, n: labels.length, asrBefore: frac(hits(p.bPred, labels), labels.length), asrAfter: frac(hits(rPred, labels), labels.length), gFlagged: flagged, gAttack: attack });
    flaggedAll += flagged;
    attackAll += attack;
    n += labels.length;
  }
  if (lib?.poisoned && (lib.poisoned.flagged !== flaggedAll || lib.poisoned.n !== n)) warnings.push(`per-target G flags (${flaggedAll}/${n}) differ from the library's (${lib.poisoned.flagged}/${lib.poisoned.n})`);
  if (lib?.poisoned && lib.poisoned.attackSuccess !== attackAll) warnings.push(`per-target attack success through G (${attackAll}) differs from the library's (${lib.poisoned.attackSuccess})`);
  return out;
}

/**
 * Runs one defense through the repair pipeline and fills its table row (model and attack are the caller's).
 * "auto" is `badnet repair` as a user runs it: its own detection (seeded), its candidates, G calibrated to `rc.fpr`.
 */
export async function defenseRow(model: Model, data: DefenseData, d: AnyDefense | "auto", rc: RowContext): Promise<DefenseRow> {
  const auto = d === "auto";
  const row: DefenseRow = { model: model.name, attack: "", defense: auto ? "auto" : d.name, status: "ok", notes: "", warnings: [] };
  const ts = performance.now();
  try {
    const needsTriggers = !auto && d.needs?.includes("triggers") === true;
    if (needsTriggers && !rc.detected) throw new Error(`Neural Cleanse detection failed (${rc.detectionError}), no triggers`);
    const common = { seed: rc.seed };
    const r = auto
      ? await repair(model, data, { defense: "auto", detect: { seed: rc.seed }, common, fpr: rc.fpr, inputScale: rc.inputScale })
      : await repair(model, data, { defense: d.name, detect: false, detected: needsTriggers ? rc.detected : undefined, common, fpr: rc.fpr, inputScale: rc.inputScale });
    const o = r.outcome;
    row.seconds = (performance.now() - ts) / 1000;
    row.triggersFrom = o.sections.mitigation?.flagged;
    if (auto) {
      row.chosen = r.defense.name;
      row.selection = o.sections.selection?.reason;
      row.autoFlagged = r.detection ? [...r.detection.flagged] : undefined;
    }
    if (o.notApplied) {
      row.status = "skipped";
      row.reason = needsTriggers ? "Neural Cleanse flagged no label, so there is no reversed trigger to prune or unlearn with" : o.notApplied;
      row.seconds = undefined;
      return row;
    }
    row.notes = o.note;
    const poisonedAll = rc.sets.reduce((s, p) => s + hits(p.bPred, p.ds.labels!), 0);
    if (o.evaluation?.after) {
      row.cleanBefore = o.evaluation.before.cleanAccuracy;
      row.cleanAfter = o.evaluation.after.cleanAccuracy;
      row.asrBefore = o.evaluation.before.asr;
      row.asrAfter = o.evaluation.after.asr;
      fillG(row, o.gRates);
      if (data.poisoned && o.repaired) {
        const calibrated = o.sections.gCalibration !== undefined && o.g !== undefined;
        if (!calibrated) row.perTarget = await perTargetRepair(model, o.repaired, rc.sets, { after: o.evaluation.after, g: o.gRates }, row.warnings);
        // One poisoned set: the library's counts are already per target (running G again would cost a STRIP pass).
        else if (rc.sets.length > 1) row.perTarget = await perTargetCalibrated(model, o.repaired, o.g!, rc.sets, o.gRates, row.warnings);
        else if (rc.sets.length === 1 && o.gRates?.poisoned) {
          const p = rc.sets[0]!;
          row.perTarget = [{ target: p.target, n: p.ds.size, asrBefore: frac(hits(p.bPred, p.ds.labels!), p.ds.size), asrAfter: o.evaluation.after.asr ?? 0, gFlagged: o.gRates.poisoned.flagged, gAttack: o.gRates.poisoned.attackSuccess }];
        }
      }
    } else {
      // A detector repairs nothing: "after" is G (B with rejection), a rejected clean input counts as wrong.
      row.cleanBefore = rc.cleanBefore;
      fillG(row, o.gRates);
      if (o.gRates) row.cleanAfter = frac(o.gRates.clean.correct, o.gRates.clean.n);
      row.asrAfter = row.gAsr;
      if (data.poisoned) row.asrBefore = frac(poisonedAll, data.poisoned.size);
      const s = o.sections.strip;
      if (data.poisoned && s?.poisonedEntropy) row.perTarget = perTargetStrip(s.poisonedEntropy, s.threshold, rc.sets, o.gRates, row.warnings);
    }
  } catch (e) {
    row.status = "failed";
    row.reason = e instanceof Error ? e.message : String(e);
    row.seconds = (performance.now() - ts) / 1000;
  }
  return row;
}
