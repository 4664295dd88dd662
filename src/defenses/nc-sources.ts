// The natural-feature check of Neural Cleanse: is a small reversed trigger a backdoor (a switch that sends
// EVERY source class to the target: all-to-one) or a natural feature of the label (reachable cheaply only from
// similar classes, e.g. Fashion-MNIST "bag" or a face that looks like several others)?
//
// Measurement: the reversed trigger is stamped with its mask scaled by each κ of SOURCE_SCALES (κ = 1 is the
// trigger as reversed) on clean images, and the images sent to the label are counted per source class (the
// model's own prediction of the clean image, so unlabeled data works too; images already predicted as the
// label are left out). A source's κ50 is the smallest κ at which at least half of its images reach the label.
// From the per-source κ50 an estimate of every label-to-label trigger size follows: κ50 · |m|₁ is an upper
// bound on the smallest trigger from that source (the reversed trigger scaled down still works).
// The statistics here are pure functions of those counts.
import { median } from "./mad.js";

/** Mask scales κ the reversed trigger is tried at, largest first (geometric, ratio about 0.7). */
export const SOURCE_SCALES: readonly number[] = [1, 0.7, 0.5, 0.35, 0.25, 0.18, 0.12, 0.08];

/** Images of one source class and how many reached the label at each κ of SOURCE_SCALES. */
export interface SourceCurve {
  /** The model's prediction of the clean images. */
  source: number;
  images: number;
  /** hits[k]: images sent to the label with the mask scaled by SOURCE_SCALES[k]. */
  hits: number[];
}

/** Fewest images a source needs for its κ50 to count. */
export const MIN_SOURCE_IMAGES = 1;

/**
 * κ50 of one source: the smallest κ at which at least half of its images reach the label, with everything
 * above it also reaching (a curve is scanned from κ = 1 down and stops at the first failure); Infinity when
 * even κ = 1 does not.
 */
export function kappa50(c: SourceCurve, scales: readonly number[] = SOURCE_SCALES): number {
  let k50 = Infinity;
  for (let k = 0; k < scales.length; k++) {
    if (2 * c.hits[k] < c.images) break;
    k50 = scales[k];
  }
  return k50;
}

export interface SourceSummary {
  /** Sources measured (with at least MIN_SOURCE_IMAGES images). */
  sources: number;
  /** Smallest per-source success at κ = 1. */
  minSuccess: number;
  /** Fraction of the sources whose half reach the label at κ = 1. */
  reachedSources: number;
  /** κ50 per source, in the order of the curves (Infinity: not reached at κ = 1). */
  kappas: number[];
  /**
   * Spread of the label-to-label trigger sizes: the largest κ50 over the median κ50 (≥ 1; Infinity when a source
   * is not reached). A backdoor's switch needs about the same strength from every source; a natural feature is
   * cheap from similar classes and dear from the others.
   */
  spread: number;
}

/** Summary of a label's source curves (null when no source has enough images). */
export function summarizeSources(curves: readonly SourceCurve[], scales: readonly number[] = SOURCE_SCALES): SourceSummary | null {
  const cs = curves.filter((c) => c.images >= MIN_SOURCE_IMAGES);
  if (cs.length === 0) return null;
  const kappas = cs.map((c) => kappa50(c, scales));
  const finite = kappas.filter(Number.isFinite);
  const med = median(kappas.map((k) => (Number.isFinite(k) ? k : Number.MAX_VALUE)));
  const spread = finite.length < kappas.length ? Infinity : Math.max(...kappas) / med;
  return {
    sources: cs.length,
    minSuccess: Math.min(...cs.map((c) => c.hits[0] / c.images)),
    reachedSources: finite.length / cs.length,
    kappas,
    spread,
  };
}

/**
 * Per-source curves from predictions: `clean[j]` is image j's clean class, `stamped[k][j]` its class with the
 * mask scaled by scales[k]. Images whose clean class is the label are left out.
 */
export function sourceCurves(label: number, clean: ArrayLike<number>, stamped: readonly ArrayLike<number>[]): SourceCurve[] {
  const bySource = new Map<number, SourceCurve>();
  for (let j = 0; j < clean.length; j++) {
    const s = clean[j];
    if (s === label) continue;
    let c = bySource.get(s);
    if (!c) bySource.set(s, (c = { source: s, images: 0, hits: stamped.map(() => 0) }));
    c.images++;
    stamped.forEach((p, k) => {
      if (p[j] === label) c.hits[k]++;
    });
  }
  return [...bySource.values()].sort((p, q) => p.source - q.source);
}

/** The κ of the natural-feature check: about a third of the reversed trigger (SOURCE_SCALES' 0.35). */
export const NATURAL_SCALE = 0.35;
/** Fewest reference labels with a reach for the natural-feature check to be a test. */
export const MIN_NATURAL_REFERENCES = 5;

/**
 * The share of the images the full trigger sends to the label that a third of the trigger (κ = NATURAL_SCALE)
 * already sends, pooled over the sources; null when the full trigger moves none (or κ is not measured).
 * A backdoor's trigger is a switch: a third of it moves few images. A natural feature moves the images of similar
 * classes first, with little of the trigger.
 */
export function naturalReach(curves: readonly SourceCurve[], scales: readonly number[] = SOURCE_SCALES, kappa = NATURAL_SCALE): number | null {
  const k = scales.indexOf(kappa);
  if (k < 0) return null;
  let full = 0, half = 0;
  for (const c of curves) {
    full += c.hits[0];
    half += c.hits[k];
  }
  return full > 0 ? half / full : null;
}

/**
 * Rank p-value of a reach against the natural population: (1 + #references reaching at least as far) / (1 + n).
 * Under "this label is exchangeable with the reference labels" it is uniform on {1/(n+1), …, 1}: the smallest
 * value, 1/(n+1), says the label reaches further than every reference label. 1 without references.
 */
export function naturalRank(reach: number, references: readonly number[]): number {
  if (references.length === 0) return 1;
  const above = references.filter((x) => x >= reach).length;
  return (1 + above) / (1 + references.length);
}

/**
 * The other tail: (1 + #references reaching at most as far) / (1 + n); 1/(n+1) says the label's trigger moves
 * less at a third of its strength than every reference label's (more switch-like than all of them).
 */
export function switchRank(reach: number, references: readonly number[]): number {
  if (references.length === 0) return 1;
  const below = references.filter((x) => x <= reach).length;
  return (1 + below) / (1 + references.length);
}

/**
 * Where a trigger sends the images it does not send to its own label ("transfer"), per κ of SOURCE_SCALES:
 * the other labels reached and how many images each (images that stay at their clean class, or whose clean
 * class is the label, are left out), most first, at most `top` of them. A label whose weakened trigger sends
 * images to a confirmed target carries that target's trigger inside its own (nc-evidence.ts reads it).
 */
export interface TriggerTransfer {
  /** Images stamped (those whose clean class is not the label). */
  images: number;
  /** Per κ: [label, images] pairs. */
  to: [number, number][][];
}

/** Most destinations kept per κ in a TriggerTransfer (a 1,283-label model would otherwise list hundreds). */
export const TRANSFER_TOP = 5;

/** The transfer of one trigger from predictions: `clean[j]` image j's clean class, `stamped[k][j]` its class at κ k. */
export function transferCounts(label: number, clean: ArrayLike<number>, stamped: readonly ArrayLike<number>[], top = TRANSFER_TOP): TriggerTransfer {
  let images = 0;
  for (let j = 0; j < clean.length; j++) if (clean[j] !== label) images++;
  const to = stamped.map((p) => {
    const counts = new Map<number, number>();
    for (let j = 0; j < clean.length; j++) {
      const d = p[j];
      if (clean[j] === label || d === label || d === clean[j]) continue;
      counts.set(d, (counts.get(d) ?? 0) + 1);
    }
    return [...counts.entries()].sort((a, b) => b[1] - a[1] || a[0] - b[0]).slice(0, top);
  });
  return { images, to };
}
