// Median absolute deviation (MAD) outlier statistics, as Neural Cleanse applies them to the trigger norms of
// all labels: robust to the very outliers it is looking for, unlike mean and standard deviation.

/** 1/Φ⁻¹(3/4): scales the MAD so it estimates the standard deviation of normally distributed data. */
export const MAD_CONSISTENCY = 1.4826;

/** The paper's anomaly-index threshold: a label can be flagged only above it (and on the small side). */
export const ANOMALY_THRESHOLD = 2;

/** Median of the values (mean of the two middle ones for an even count). NaN for an empty list. */
export function median(values: ArrayLike<number>): number {
  const n = values.length;
  if (n === 0) return NaN;
  const s = Float64Array.from(values).sort();
  const mid = n >> 1;
  return n % 2 === 1 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

/** Raw median absolute deviation: median_i |x_i − median(x)| (without the consistency constant). */
export function mad(values: ArrayLike<number>, center = median(values)): number {
  return median(Array.from(values, (v) => Math.abs(v - center)));
}

export interface AnomalyStats {
  median: number;
  /** Raw MAD (not multiplied by the consistency constant). */
  mad: number;
  /** |x_i − median| / (1.4826 · MAD) per value, in input order. */
  index: Float64Array;
}

/**
 * Anomaly index of every value. When the MAD is zero (more than half the values equal) an index is 0 for
 * values at the median and Infinity for any other value: they deviate from a spread of exactly zero.
 */
export function anomalyIndices(values: ArrayLike<number>): AnomalyStats {
  const med = median(values);
  const m = mad(values, med);
  const scale = MAD_CONSISTENCY * m;
  const index = Float64Array.from(values, (v) => {
    const d = Math.abs(v - med);
    if (scale > 0) return d / scale;
    return d === 0 ? 0 : Infinity;
  });
  return { median: med, mad: m, index };
}

/**
 * "linear": the paper's index, |n − median| / (1.4826·MAD) over the norms n. "log": the same over ln n.
 * Norms are sizes, and natural labels' sizes spread by factors, skewed towards large: on the linear scale a
 * norm can sit at most median / (1.4826·MAD) below the median, so once the natural labels spread by more than
 * about ±34% (MAD/median > 1/(2·1.4826)) no trigger, however small, reaches index 2. On the log scale the
 * index measures how many typical spreads a norm is *times* smaller, without that ceiling.
 */
export type NormScale = "linear" | "log";

export interface NormStats extends AnomalyStats {
  /** Per value: below the median (on the small side). */
  small: boolean[];
}

/** MAD statistics of trigger norms on the given scale (median and mad are on that scale too). */
export function normStats(norms: readonly number[], scale: NormScale): NormStats {
  // A zero norm (nothing to stamp) cannot be logged; the smallest positive float stands in for it.
  const v = scale === "log" ? norms.map((n) => Math.log(Math.max(n, Number.MIN_VALUE))) : [...norms];
  const stats = anomalyIndices(v);
  return { ...stats, small: v.map((x) => x < stats.median) };
}
