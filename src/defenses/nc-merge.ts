// Sharded Neural Cleanse scans: `detect --labels A-B --out DIR` scans a part of the labels and saves every
// label's measurements; merging the parts recomputes the statistics (reference median and MAD, FDR over all
// labels, the confirm-and-exclude loop) over all of them, as one scan would. A label's run depends only on
// (seed, family, label, restart) and the images, so a shard measures each label as the whole scan does when
// the shards run the same settings on the same data; the screening rungs, though, choose among the shard's
// own labels, so with screening a label may go on in one and stop in the other.
import { fail } from "../errors.js";
import type { ReportNeuralCleanse, ReportTrigger } from "../report/types.js";
import { median } from "./mad.js";
import { scoreScan, TRIGGER_FAMILIES, type NcFamilyStats, type NcLabelResult, type NcRawScore, type TriggerFamily } from "./neural-cleanse.js";

/** What merging needs from one shard's result.json. */
export interface NcShard {
  /** Where it was read from (for messages). */
  source: string;
  model: { name: string; numClasses: number; inputShape: number[]; source?: string; weightsSha256?: string };
  neuralCleanse: ReportNeuralCleanse & {
    labels: NcLabelResult[];
    settings: Record<string, unknown> & { families: TriggerFamily[]; scale: "log" | "linear"; fdr: number; minHeldOutSuccess: number };
    images: { optimize: number; heldOut: number; sha256?: string };
    families: Partial<Record<TriggerFamily, NcFamilyStats>>;
  };
}

/** Settings that change what a label's run measures or how it is judged: they must agree across shards. */
const SAME_SETTINGS = [
  "inputScale", "families", "restarts", "moreStarts", "scale", "steps", "screenSteps", "batchSize", "screenBatchSize", "lr", "initLambda",
  "threshold", "maskThreshold", "patience", "earlyStopPatience", "holdout", "maxImages", "evalImages", "seed", "schedule", "eta", "fdr",
  "minHeldOutSuccess", "reference",
] as const;

/** Checks a parsed result.json is a shard of a Neural Cleanse scan with per-label measurements; one-line errors. */
export function asShard(v: unknown, source: string): NcShard {
  const o = v as Partial<NcShard> | null;
  const nc = o?.neuralCleanse;
  if (!nc || !Array.isArray(nc.labels)) fail(`--merge: ${source} has no Neural Cleanse result (run badnet detect --out there first)`);
  if (!o.model || typeof o.model.numClasses !== "number") fail(`--merge: ${source} has no model section`);
  const fams = nc.settings?.families;
  if (!nc.settings || !Array.isArray(fams) || !nc.images) fail(`--merge: ${source} lacks the scan's settings (written by an older badnet? run detect again)`);
  // The statistics are computed per family: a scan of no (or an unknown) family has none to merge.
  const unknown = fams.find((f) => !(TRIGGER_FAMILIES as readonly unknown[]).includes(f));
  if (fams.length === 0 || unknown !== undefined || new Set(fams).size !== fams.length)
    fail(`--merge: ${source} has trigger families ${JSON.stringify(fams)} in its settings; expected one or more of ${TRIGGER_FAMILIES.join(", ")} (a damaged result.json?)`);
  for (const l of nc.labels)
    for (const f of fams) {
      const sc = (l as unknown as Record<string, Partial<NcRawScore> | undefined>)[f];
      if (!sc || typeof sc.statNorm !== "number" || typeof sc.reference !== "boolean") fail(`--merge: ${source} has no ${f} measurements for label ${l.label} (written by an older badnet? run detect again)`);
    }
  // Scans written before the mask family's bar could be set apart used `threshold` for it too.
  const settings = { ...nc.settings, maskThreshold: nc.settings.maskThreshold ?? nc.settings.threshold };
  return { ...(o as NcShard), neuralCleanse: { ...(nc as NcShard["neuralCleanse"]), settings }, source };
}

export interface MergedScan {
  labels: NcLabelResult[];
  flagged: number[];
  families: Partial<Record<TriggerFamily, NcFamilyStats>>;
  /** Every shard's reversed-trigger pictures, flagged labels' first. */
  triggers: ReportTrigger[];
  medianNorm: number;
  mad: number;
  scale: "log" | "linear";
  settings: NcShard["neuralCleanse"]["settings"];
  images: { optimize: number; heldOut: number; sha256?: string };
  /** Sum of the shards' scan times. */
  seconds: number;
}

/** Merges shards of one scan: same model, same settings, disjoint labels; the statistics over all labels. */
export function mergeShards(shards: readonly NcShard[]): MergedScan {
  if (shards.length < 2) fail(`--merge: give at least two result folders (got ${shards.length})`);
  const [first] = shards;
  const set0 = first.neuralCleanse.settings;
  const seen = new Map<number, string>();
  for (const sh of shards) {
    const m = sh.model;
    if (m.name !== first.model.name || m.numClasses !== first.model.numClasses || JSON.stringify(m.inputShape) !== JSON.stringify(first.model.inputShape))
      fail(`--merge: ${sh.source} scanned model ${m.name} (${m.numClasses} classes), ${first.source} scanned ${first.model.name} (${first.model.numClasses} classes)`);
    // One architecture with other weights (a model and its repaired copy): the names and shapes above agree.
    // Results written before detect recorded the weights carry no fingerprint and are let through.
    if (m.weightsSha256 !== undefined && first.model.weightsSha256 !== undefined && m.weightsSha256 !== first.model.weightsSha256)
      fail(`--merge: ${sh.source} scanned other weights (${m.source ?? m.name}) than ${first.source} (${first.model.source ?? first.model.name}); the shards must scan one model`);
    for (const k of SAME_SETTINGS) {
      const a = JSON.stringify(sh.neuralCleanse.settings[k]);
      const b = JSON.stringify(set0[k]);
      if (a !== b) fail(`--merge: ${sh.source} was scanned with ${k} ${a}, ${first.source} with ${b}`);
    }
    const [im, im0] = [sh.neuralCleanse.images, first.neuralCleanse.images];
    if (im.optimize !== im0.optimize || im.heldOut !== im0.heldOut)
      fail(`--merge: ${sh.source} used ${im.optimize}+${im.heldOut} images, ${first.source} ${im0.optimize}+${im0.heldOut} (not the same clean data)`);
    // As many images, other pixels (valid.h5 and test.h5 of one size). Older results carry no fingerprint.
    if (im.sha256 !== undefined && im0.sha256 !== undefined && im.sha256 !== im0.sha256)
      fail(`--merge: ${sh.source} and ${first.source} were scanned on other clean images (${im.optimize}+${im.heldOut} each, not the same pixels)`);
    for (const l of sh.neuralCleanse.labels) {
      const other = seen.get(l.label);
      if (other !== undefined) fail(`--merge: label ${l.label} is in both ${other} and ${sh.source}`);
      seen.set(l.label, sh.source);
    }
  }
  const all = shards.flatMap((sh) => sh.neuralCleanse.labels).sort((p, q) => p.label - q.label);
  const fams = set0.families.filter((f) => (TRIGGER_FAMILIES as readonly string[]).includes(f));
  const raw: Partial<Record<TriggerFamily, NcRawScore[]>> = {};
  for (const f of fams)
    raw[f] = all.map((l) => {
      const sc = (f === "blend" ? l.blend : l.mask)!;
      const { anomalyIndex: _i, flagged: _f, confidence: _c, qValue: _q, reasons: _r, naturalReach: _n, spreadIndex: _s, combinedIndex: _ci, ...rest } = sc as typeof sc & { alpha?: number };
      delete (rest as { alpha?: number }).alpha;
      return rest;
    });
  const scored = scoreScan(all.map((l) => l.label), raw, {
    scale: set0.scale,
    fdr: set0.fdr,
    minHeldOutSuccess: set0.minHeldOutSuccess,
    hw: first.model.inputShape[0] * first.model.inputShape[1], // the report's model section is [H, W, C]
    heldOutImages: first.neuralCleanse.images.heldOut,
  });
  const families: MergedScan["families"] = {};
  for (const f of fams)
    families[f] = { ...scored.families[f]!, budgetShrink: median(shards.map((sh) => sh.neuralCleanse.families[f]?.budgetShrink ?? 1)) };
  const flaggedSet = new Set(scored.flagged);
  const triggers = shards.flatMap((sh) => sh.neuralCleanse.triggers).sort((p, q) => Number(flaggedSet.has(q.label)) - Number(flaggedSet.has(p.label)));
  return {
    labels: scored.labels,
    flagged: scored.flagged,
    families,
    triggers,
    medianNorm: families[fams[0]]!.median,
    mad: families[fams[0]]!.mad,
    scale: set0.scale,
    settings: set0,
    images: first.neuralCleanse.images,
    seconds: shards.reduce((s, sh) => s + (Number((sh.neuralCleanse as { seconds?: number }).seconds) || 0), 0),
  };
}
