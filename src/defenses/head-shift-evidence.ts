// Head-shift evidence: does a reversed trigger still work once B's output layer is learned again from clean
// data? FST (fst.ts: the head re-initialised and trained on the clean images, pushed away from B's own) keeps
// what the clean data teaches and drops what only B's head knew. A natural label's smallest trigger draws
// that label's real features, which the new head learns again from the clean images, so it keeps most of its
// success; a backdoor target's trigger rides a feature direction that only B's head maps to the target, so it
// loses most of it. Measured on the Fashion-MNIST zoo (55 scans, docs/neural-cleanse-measurements.md, "Head-shift
// evidence"): the targets' mask triggers kept 0–4% of their held-out success on five models, 9–18% on
// large_checker_tr and 1–9% for multi_trigger's second target (both missed by the norm statistics in most seeds);
// of 225 natural labels with a norm below the median, one kept less than a quarter (11%, a label of the
// random-position BadNet) and three less than half. It does not see every backdoor: multi_trigger's first target
// kept 52–65%, the low-rate patch's 43–91% and sig's 91–98% (FST does not remove those backdoors either), nor the
// PyTorch fixtures' (41–56%).
// The rule: a label is flagged when its mask trigger's norm is below the family's median (the small
// side Neural Cleanse looks at), the trigger works on B (held-out success >= minHeldOutSuccess) and it keeps
// less than HEAD_SHIFT_MAX_SURVIVAL of that success on the head-shifted network. A fixed share, not an outlier
// index: natural labels' shares sit so close together on some models that their MAD is tiny and any share a
// little low gets a large index (measured: a clean model's label at 61% would have been flagged). The quarter
// was set while looking at 22 scans of seeds 0 and 1; seeds 2–4 were scanned after it was fixed.
// Cost: FST on stored features (one forward pass of the optimization images, then the head alone) and one
// held-out pass per measured trigger on B and on the shifted network; a scan of up to 2·HEAD_SHIFT_MAX_LABELS labels
// measures every label, a larger one at most HEAD_SHIFT_MAX_LABELS (the smallest norms below the median) per
// family, so a 1,283-label scan pays for 32 in each. The blend family's shares are measured too, but only
// `repair`'s choice of which triggers stand in for a backdoor reads them (otherFamilyStandsIn). Shards of a larger scan pick their own smallest norms, so
// a merge can carry measurements one whole scan would not have made (the rule reads only what was measured).
import { UserError } from "../errors.js";
import type { Dataset } from "../io/dataset.js";
import type { Model } from "../model/model.js";
import type { TriggerFamily } from "./neural-cleanse.js";
import { holdoutSplit } from "../train/split.js";
import { fstTrain, FST_OPTIONS } from "./fst.js";
import { median } from "./mad.js";

/** A trigger that keeps less than this share of its held-out success on the head-shifted network is evidence. */
export const HEAD_SHIFT_MAX_SURVIVAL = 0.25;
/**
 * The trigger families the evidence is measured and read in. Not the blend family: its whole-image triggers
 * gave natural labels low shares too (a clean zoo model's label kept 21% of its blend trigger's success in one
 * of five seeds, docs/neural-cleanse-measurements.md, "Head-shift evidence").
 */
export const HEAD_SHIFT_FAMILIES: readonly TriggerFamily[] = ["mask"];
/**
 * The families the shares are measured in: the blend family's too, not to flag (above) but so that `repair`
 * can tell whether a flagged label's trigger of the other family stands in for the backdoor
 * (otherFamilyStandsIn).
 */
export const HEAD_SHIFT_MEASURED_FAMILIES: readonly TriggerFamily[] = ["mask", "blend"];
/**
 * The families whose norm-statistics flags must also pass the head shift (headShiftVeto). The blend family: on
 * the zoo (55 scans, docs/neural-cleanse-measurements.md, "Head-shift evidence") its backdoor targets' triggers
 * kept 0–3% of their success (blend, LF, WaNet), while the two labels it flagged wrongly kept 88% and 105%. Not
 * the mask family: there partly reversed patch triggers of real targets keep 39–90% (the low-rate patch,
 * multi_trigger's first target).
 */
export const HEAD_SHIFT_VETO_FAMILIES: readonly TriggerFamily[] = ["blend"];
/** Fewest held-out images for the shares to count (a handful of faces says little either way). */
export const HEAD_SHIFT_MIN_IMAGES = 20;
/** Most labels measured in a scan of more than twice as many: those with the smallest norms below the median. */
export const HEAD_SHIFT_MAX_LABELS = 32;
/**
 * Fewest SGD steps FST takes on the head (more epochs over a smaller clean set). How far a backdoor target's
 * trigger falls on the shifted network depends on how far the head has moved from B's, that is on the steps
 * taken, not on the epochs: large_checker_tr's trigger (seed 0) kept 30% after FST's 15 epochs on 2,660
 * images (500 steps), 22% after 860 steps, 19% after 1,500 and 16% after 3,000, against 13% and 12% after 860
 * and 2,300 steps on 4,600 images, while the natural labels' shares stayed within a few points of where they
 * were (docs/neural-cleanse-measurements.md, "Head-shift evidence"). With a fixed number of epochs, `repair`,
 * which holds out part of the clean data before detection, reached a different verdict from `detect` on the same model.
 */
export const HEAD_SHIFT_MIN_STEPS = 3000;
/**
 * Most epochs FST takes for those steps: on a small set, many passes teach the new head the few images
 * themselves, and natural labels' triggers lose their success too. The unit test's synthetic models (154
 * images to train on, 3 steps an epoch) flagged nothing wrong up to 60 epochs; at 120 the clean model's label 0
 * was flagged, at 250 and 1,000 a natural label of the backdoored one.
 */
export const HEAD_SHIFT_MAX_EPOCHS = 60;
/** Most clean images FST learns the head on (a DeepID-sized set of 11,000 faces would hold 340 MB in memory). */
export const HEAD_SHIFT_MAX_IMAGES = 5000;

/**
 * Indices of the labels to measure, smallest norm first: every label of a scan of at most 2·max labels (so that
 * the shards of a small scan measure what the whole scan does, whatever each shard's own median), else the
 * norms below their median, at most `max`.
 */
export function headShiftCandidates(norms: readonly number[], max = HEAD_SHIFT_MAX_LABELS): number[] {
  const byNorm = norms.map((n, i) => [n, i] as const).sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  if (norms.length <= 2 * max) return byNorm.map(([, i]) => i);
  const med = median(norms);
  return byNorm.filter(([n]) => n < med).slice(0, max).map(([, i]) => i);
}

/**
 * One trigger's head-shift measurement: its success on the held-out images on B and on the head-shifted
 * network, and how many of its label's own held-out images there are and how many the shifted network answers
 * with that label (absent: not counted, e.g. unlabelled data or a scan saved before it was).
 */
export interface HeadShiftMeasure {
  success: number;
  shifted: number;
  own?: { images: number; recognised: number };
}

/**
 * Whether a share can be read: the shifted network still answers the label on some of its own held-out images.
 * Where it answers it on none, the new head lost the class, and every trigger of it keeps 0% whatever drew it
 * (the PyTorch fixtures inside `repair`: FST on ~170 images, label 4 at 0% in both families while the other
 * labels kept 55–118%). A label without held-out images of its own cannot be checked and is read as before.
 */
export function shiftReadable(hs: HeadShiftMeasure): boolean {
  return hs.own === undefined || hs.own.images === 0 || hs.own.recognised > 0;
}

/** Share of B's held-out success a trigger keeps on the head-shifted network (0 when it had none on B). */
export function survivalShare(success: number, shifted: number): number {
  return success > 0 ? shifted / success : 0;
}

/** The share a measurement says something with: measured, readable (shiftReadable), and the trigger worked on B; else undefined. */
export function readableShare(hs: HeadShiftMeasure | undefined): number | undefined {
  return hs !== undefined && shiftReadable(hs) && hs.success > 0 ? survivalShare(hs.success, hs.shifted) : undefined;
}

/**
 * Whether a flagged label's trigger of the other family (the one that did not flag it) behaves like the
 * backdoor: it loses its success on the head-shifted network as the flagging family's does (less than
 * HEAD_SHIFT_MAX_SURVIVAL). Only then can `repair --defense auto` score its candidates on it in place of the
 * trigger they unlearned. A natural trigger of the label (multi_trigger's blend triggers kept 50–62% of
 * their success, where its second target's patch trigger kept 4%) says nothing about what a repair left of the backdoor, and
 * scoring on it let the repair that removed more of it lose (docs/auto-measurements.md, "The other family's trigger").
 * Unmeasured (too few held-out images, no linear head, or not among the labels measured): false.
 */
export function otherFamilyStandsIn(headShift: HeadShiftMeasure | undefined): boolean {
  const share = readableShare(headShift);
  return share !== undefined && share < HEAD_SHIFT_MAX_SURVIVAL;
}

export interface HeadShiftVerdict {
  flagged: boolean;
  /** Why, or why not, in one line (null where the evidence does not apply: not measured, or too few images). */
  reason: string | null;
}

/**
 * The head-shift test of one label in one family. `headShift`: the trigger's success on B and on the
 * head-shifted network over the same held-out images (undefined: not measured); `attackSuccess` is the success
 * the norm statistics' own held-out test read; `median` is the family's median norm the statistics use.
 */
export function headShiftVerdict(
  m: { statNorm: number; attackSuccess: number; reached: boolean; headShift?: HeadShiftMeasure },
  o: { median: number; minHeldOutSuccess: number; heldOutImages: number },
): HeadShiftVerdict {
  const hs = m.headShift;
  if (hs === undefined || o.heldOutImages < HEAD_SHIFT_MIN_IMAGES) return { flagged: false, reason: null };
  if (!shiftReadable(hs)) return { flagged: false, reason: `head shift not read: B with its output layer learned again answers this label on none of its ${hs.own!.images} held-out image(s)` };
  const share = survivalShare(hs.success, hs.shifted);
  const pct = (x: number) => `${(100 * x).toFixed(0)}%`;
  const what = `head shift: the trigger keeps ${pct(share)} of its held-out success (${pct(hs.success)} → ${pct(hs.shifted)}) on B with its output layer learned again from clean data`;
  if (!m.reached || m.attackSuccess < o.minHeldOutSuccess) return { flagged: false, reason: `${what}; it does not work on B itself` };
  if (!(m.statNorm < o.median)) return { flagged: false, reason: `${what}; its norm is not below the median` };
  if (share >= HEAD_SHIFT_MAX_SURVIVAL) return { flagged: false, reason: `${what} (needs < ${pct(HEAD_SHIFT_MAX_SURVIVAL)})` };
  return { flagged: true, reason: `${what}, < ${pct(HEAD_SHIFT_MAX_SURVIVAL)}, with a norm below the median` };
}

/**
 * Why a flag of the norm statistics in a HEAD_SHIFT_VETO_FAMILIES family is withdrawn, or null where it stands:
 * measured with enough held-out images, the trigger worked on B and keeps at least HEAD_SHIFT_MAX_SURVIVAL of
 * its success on the head-shifted network, as a natural label's trigger does. Unmeasured: it stands.
 */
export function headShiftVeto(hs: HeadShiftMeasure | undefined, heldOutImages: number): string | null {
  const share = readableShare(hs);
  if (hs === undefined || share === undefined || heldOutImages < HEAD_SHIFT_MIN_IMAGES || share < HEAD_SHIFT_MAX_SURVIVAL) return null;
  const pct = (x: number) => `${(100 * x).toFixed(0)}%`;
  return `flag withdrawn: head shift: the trigger keeps ${pct(share)} of its held-out success (${pct(hs.success)} → ${pct(hs.shifted)}) on B with its output layer learned again from clean data, as a natural label's does (a backdoor target's loses it: needs < ${pct(HEAD_SHIFT_MAX_SURVIVAL)})`;
}

/**
 * Why a head-shifted network says nothing, or null: the evidence assumes the new head classifies clean images
 * about as well as B's (a natural label's features learned again). FST keeps the last epoch within its maxDrop
 * of B's held-out accuracy, else its most accurate one; when even that one is further below B than maxDrop and
 * than two standard errors of an accuracy on `heldOut` images (80 images: about 8 points), the clean data did not
 * teach the classes again (a few images per class of a 1,283-class network), and natural labels' triggers would
 * lose their success as well.
 */
export function headNotRelearned(bAccuracy: number, keptAccuracy: number, maxDrop: number, heldOut: number): string | null {
  const tolerance = Math.max(maxDrop, 2 * Math.sqrt((bAccuracy * (1 - bAccuracy)) / Math.max(1, heldOut)));
  if (bAccuracy - keptAccuracy <= tolerance + 1e-12) return null;
  const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
  return `FST's output layer reached ${pct(keptAccuracy)} held-out accuracy against B's ${pct(bAccuracy)} on ${heldOut} images (more than ${pct(tolerance)} below): the clean data does not teach the classes again`;
}

/**
 * FST's epochs for the head shift: its default, or more where a smaller clean set would take fewer than
 * `minSteps` steps of `batchSize` over the `trainImages` images FST trains on (those outside its own held-out
 * share), but at most `maxEpochs`.
 */
export function headShiftEpochs(trainImages: number, batchSize: number = FST_OPTIONS.batchSize.default, minSteps = HEAD_SHIFT_MIN_STEPS, maxEpochs = HEAD_SHIFT_MAX_EPOCHS): number {
  const perEpoch = Math.max(1, Math.ceil(trainImages / batchSize));
  return Math.max(FST_OPTIONS.epochs.default, Math.min(maxEpochs, Math.ceil(minSteps / perEpoch)));
}

/**
 * B with its output layer learned again by FST on the given clean images (its defaults, head only, its own
 * held-out share for the epoch, but the epochs of headShiftEpochs), or why not (no linear output layer, too
 * little data, a head that does not classify as well as B's: headNotRelearned).
 */
export async function headShiftedModel(model: Model, clean: Dataset, seed: number): Promise<{ model: Model } | { skipped: string }> {
  try {
    const heldOut = holdoutSplit(clean.size, FST_OPTIONS.holdout.default, seed).held.length;
    const r = await fstTrain(model, { clean }, { seed, epochs: headShiftEpochs(clean.size - heldOut) });
    const why = headNotRelearned(r.history[0].heldOutAccuracy, r.history[r.chosenEpoch].heldOutAccuracy, r.settings.maxDrop, heldOut);
    return why === null ? { model: r.model } : { skipped: why };
  } catch (e) {
    if (e instanceof UserError) return { skipped: e.message };
    throw e;
  }
}
