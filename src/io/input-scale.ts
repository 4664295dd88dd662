// The input scale (pixels are divided by it before the model sees them) checked against labelled clean data:
// detected when the user gave none, and a loud warning when the model answers at about chance with it. A
// model run at the wrong scale still returns confident labels, so only accuracy on labelled data tells.
import { fail } from "../errors.js";
import { argmaxRows, forEachBatch, forwardGraph } from "../model/forward.js";
import { withSession, type Session } from "../runtime/session.js";
import type { Model } from "../model/model.js";
import { checkShape, memoryDataset, requireLabels, type Dataset } from "./dataset.js";

/** The scales models are trained with: pixels/255 ([0, 1] inputs) or raw 0..255 pixels. */
export const CANDIDATE_SCALES = [255, 1] as const;

/** Images per accuracy probe: enough to tell a working model from chance, cheap next to any defense. */
export const PROBE_IMAGES = 512;
const PROBE_CHUNKS = 8;

export interface ScaleAccuracy {
  scale: number;
  correct: number;
  n: number;
  accuracy: number;
  /** Per probe image: 1 when classified right. */
  right: Uint8Array;
}

export interface ScaleDecision {
  scale: number;
  /** Accuracy on the probe sample at every candidate scale, best first. */
  tried: ScaleAccuracy[];
  /** The accuracy a model without any skill reaches on this sample. */
  chance: number;
}

/**
 * Up to `max` images of `ds` with their labels, taken as a few contiguous runs spread over the whole set, so a
 * file sorted by label still gives a mix of labels.
 */
export function probeSample(ds: Dataset, max = PROBE_IMAGES): { x: Float32Array; labels: Int32Array } {
  const labels = requireLabels(ds, "checking the input scale");
  const n = Math.min(ds.size, max);
  const chunks = Math.min(PROBE_CHUNKS, n);
  const per = ds.shape[0] * ds.shape[1] * ds.shape[2];
  const x = new Float32Array(n * per);
  const y = new Int32Array(n);
  let filled = 0;
  for (let c = 0; c < chunks; c++) {
    const count = Math.floor((n * (c + 1)) / chunks) - Math.floor((n * c) / chunks);
    const start = Math.floor((ds.size * c) / chunks);
    x.set(ds.read(start, count), filled * per);
    y.set(labels.subarray(start, start + count), filled);
    filled += count;
  }
  return { x, labels: y };
}

/**
 * The accuracy a model without skill reaches: the larger of uniform guessing (1/K) and always answering the
 * sample's most common label (what a model stuck on one class, e.g. from black or NaN inputs, scores). When
 * every image has the same label that share is 100% and every accuracy would be "near chance" (one image, or a
 * one-class set): then a model stuck on that class cannot be told from a working one anyway, and 1/K is the
 * baseline left.
 */
export function chanceAccuracy(labels: Int32Array, numClasses: number): number {
  const counts = new Map<number, number>();
  let top = 0;
  for (const l of labels) {
    const c = (counts.get(l) ?? 0) + 1;
    counts.set(l, c);
    if (c > top) top = c;
  }
  if (labels.length > 0 && top === labels.length) return 1 / numClasses;
  return Math.max(1 / numClasses, labels.length ? top / labels.length : 0);
}

/**
 * True when `accuracy` is within a tenth of the way from chance to perfect: no working classifier scores that
 * low on its own task, while a model fed the wrong scale does.
 */
export function nearChance(accuracy: number, chance: number): boolean {
  return accuracy <= chance + 0.1 * (1 - chance);
}

async function accuracyAt(session: Session, model: Model, x: Float32Array, labels: Int32Array, shape: [number, number, number], scale: number): Promise<ScaleAccuracy> {
  const pred = new Int32Array(labels.length);
  await forEachBatch(session, memoryDataset("probe", shape, x, labels), (o, start) => pred.set(argmaxRows(o[model.logits].data as Float32Array, model.numClasses), start));
  const right = Uint8Array.from(pred, (p, i) => (p === labels[i] ? 1 : 0));
  const correct = right.reduce((a, b) => a + b, 0);
  return { scale, correct, n: labels.length, accuracy: labels.length ? correct / labels.length : 0, right };
}

/**
 * Accuracy of `model` on a probe of `ds` at each candidate scale, in order, through one session (creating a
 * large network's session costs seconds). `ds` must have been opened with input scale `openedAt`; the other
 * scales are the same pixels divided differently. `enough` ends the probe early: once it holds for a scale's
 * accuracy (given chance), the later scales are not tried.
 */
export async function accuracyByScale(
  model: Model,
  ds: Dataset,
  openedAt: number,
  scales: readonly number[] = CANDIDATE_SCALES,
  enough?: (t: ScaleAccuracy, chance: number) => boolean,
): Promise<{ tried: ScaleAccuracy[]; chance: number }> {
  checkShape(ds, model.inputShape, `model ${model.name}`);
  const { x, labels } = probeSample(ds);
  const chance = chanceAccuracy(labels, model.numClasses);
  const tried: ScaleAccuracy[] = [];
  await withSession(forwardGraph(model), async (session) => {
    for (const s of scales) {
      const factor = openedAt / s;
      const t = await accuracyAt(session, model, factor === 1 ? x : x.map((v) => v * factor), labels, ds.shape, s);
      tried.push(t);
      if (enough?.(t, chance)) break;
    }
  });
  return { tried, chance };
}

const pct = (x: number): string => `${(100 * x).toFixed(1)}%`;
const describe = (t: ScaleAccuracy): string => `${pct(t.accuracy)} at --input-scale ${t.scale}`;

/**
 * Picks the input scale from labelled clean data opened at scale 1 (raw pixels): the candidate with real
 * accuracy. A UserError when no candidate is clearly better than chance and than the others, so nothing is
 * silently guessed.
 */
export async function detectInputScale(model: Model, raw: Dataset): Promise<ScaleDecision> {
  const { tried, chance } = await accuracyByScale(model, raw, 1);
  tried.sort((a, b) => b.accuracy - a.accuracy);
  const [best, next] = tried as [ScaleAccuracy, ScaleAccuracy];
  const all = tried.map(describe).join(", ");
  if (nearChance(best.accuracy, chance))
    fail(`cannot detect the input scale: clean accuracy on ${best.n} images of ${raw.name} is near chance (${pct(chance)}) at every scale (${all}); give --input-scale`);
  // A runner-up that also works must be significantly worse on the same images, else the user decides.
  if (!nearChance(next.accuracy, chance) && pairedZ(best, next) < 3)
    fail(`cannot detect the input scale: clean accuracy on ${best.n} images of ${raw.name} is similar at every scale (${all}); give --input-scale`);
  return { scale: best.scale, tried, chance };
}

/**
 * McNemar's statistic for "a is more accurate than b" on the same images: images only a gets right minus those
 * only b gets right, over the square root of their sum.
 */
export function pairedZ(a: ScaleAccuracy, b: ScaleAccuracy): number {
  let onlyA = 0;
  let onlyB = 0;
  for (let i = 0; i < a.right.length; i++) {
    if (a.right[i]! > b.right[i]!) onlyA++;
    else if (b.right[i]! > a.right[i]!) onlyB++;
  }
  return onlyA + onlyB === 0 ? 0 : (onlyA - onlyB) / Math.sqrt(onlyA + onlyB);
}

/** The stderr line announcing a detected scale. */
export function detectedScaleNote(d: ScaleDecision, data: string): string {
  return `input scale not given: using --input-scale ${d.scale} (clean accuracy on ${d.tried[0]!.n} images of ${data}: ${d.tried.map(describe).join(", ")})`;
}

/**
 * With a scale the user gave: a loud warning (returned, not printed) when clean accuracy on a probe of `ds`
 * (opened at `scale`) is near chance, naming another scale that works when there is one. Undefined when fine
 * or when the data has no labels.
 */
export async function chanceWarning(model: Model, ds: Dataset, scale: number): Promise<string | undefined> {
  if (!ds.labels || ds.size === 0) return undefined;
  const others = CANDIDATE_SCALES.filter((s) => s !== scale);
  // The other scales only matter for the hint: a model that works at the given scale is probed once.
  const { tried, chance } = await accuracyByScale(model, ds, scale, [scale, ...others], (t, ch) => !nearChance(t.accuracy, ch));
  const given = tried[0]!;
  if (!nearChance(given.accuracy, chance)) return undefined;
  const better = tried.slice(1).find((t) => !nearChance(t.accuracy, chance));
  const hint = better ? `; ${describe(better)}: the model probably expects --input-scale ${better.scale}` : "; check --input-scale, the labels and the model";
  return `WARNING: clean accuracy ${describe(given)} is near chance (${pct(chance)}) on ${given.n} images of ${ds.name}${hint}`;
}
