// The evidence behind a Neural Cleanse flag. A small MAD anomaly index alone flags about 2.3% of labels by
// chance once the natural norms are roughly normal on the statistics' scale, some 30 of 1,283. So a flag
// needs all of:
//   - a reversed trigger that reached the success threshold on its optimization batch;
//   - an anomaly index > 2 on the small side (the paper's rule);
//   - a false-discovery rate below `fdr` over all N labels (Benjamini–Hochberg on the one-sided normal tail of
//     the index): at N = 10 and the default 0.05 the index must be about 2.6, at N = 1,283 about 3.9;
//   - a trigger that also works on held-out images (attack success ≥ `minHeldOutSuccess`), when at least
//     MIN_HELD_OUT_IMAGES were held out (one or two images say little either way; the reasons then say so).
// The median and MAD come from the reference labels: a seeded random sample that got the full budget. After a
// scheduled scan the other labels' norms are upper bounds from a smaller budget (they were stopped), and the
// shortlist's are the smallest by selection, so neither may set the scale.
// Compactness (mask family, opt-in): when every label carries its mask's spread (nc-compact.ts), the index that is
// tested is the combination z = (z_norm + z_spread) / √2 (Stouffer) of the norm's signed index and the spread's
// (both robust z of the log against the same reference labels, positive on the small side): a patch trigger is
// small and compact, a natural label's smallest trigger is small or compact by chance, rarely both. Under "not
// a target" each z is roughly standard normal; if they were independent, so is their combination, and the
// p-value, the FDR and the index > 2 test read it in place of the norm's alone. (Measured on clean zoo models in
// docs/neural-cleanse-measurements.md: natural labels' spreads are so alike that their MAD is tiny and a spread a
// little below the median already gets a large index, so the combination flags natural labels; hence off by
// default.)
// Several targets (opt-in, loop "all" or "candidates"): once targets are confirmed they leave the median and
// MAD, and the statistics are taken again over the other labels, until no further label is confirmed; small
// confirmed norms would otherwise drag the median down and widen the MAD, and hide a second target. Off by
// default: the confirmed labels leave the sample from its small end, so the rest's MAD is that of a truncated
// sample and natural labels next in line become "outliers" (measured on 110 zoo scans: 8 and 12 false flags
// more for 2 and 0 targets more, docs/neural-cleanse-measurements.md); the MAD itself tolerates a minority of
// targets among the labels.
import { ANOMALY_THRESHOLD, median, MAD_CONSISTENCY, type NormScale } from "./mad.js";
import { MIN_NATURAL_REFERENCES, naturalReach, naturalRank, switchRank, type SourceCurve } from "./nc-sources.js";

/** Benjamini–Hochberg false-discovery rate a flag must stay under (over the labels of one family). */
export const FDR_LEVEL = 0.05;
/** Held-out attack success a reversed trigger needs for its label to be flagged. */
export const MIN_HELD_OUT_SUCCESS = 0.5;
/** Fewest held-out images for the held-out success to count as evidence. */
export const MIN_HELD_OUT_IMAGES = 5;

/** One label's measurements in one trigger family. */
export interface LabelMeasure {
  label: number;
  /** The norm the statistics compare (budget-adjusted, see NcFamilyScore.anomalyIndex). */
  norm: number;
  /** Whether the trigger reached the success threshold on its batch. */
  reached: boolean;
  /** Attack success on held-out images. */
  heldOutSuccess: number;
  /** Norms of the label's successful restarts (for the agreement note), when it had several. */
  restartNorms?: number[];
  /** Whether the label is one of the reference labels the median and MAD come from (default true). */
  reference?: boolean;
  /**
   * The norm the label contributes to the reference median and MAD, when it differs from `norm` (default
   * `norm`): its norm after the first starts, when further starts searched it harder than the others.
   */
  nullNorm?: number;
  /** The natural-feature check's per-source curves (nc-sources.ts), when measured. */
  sources?: SourceCurve[];
  /** The mask's spread (radius of gyration, nc-compact.ts): mask family only. */
  spread?: number;
}

export interface LabelEvidence {
  /** Anomaly index of the norm against the labels not confirmed as targets (for a confirmed one: against the rest). */
  index: number;
  /** With spreads: the spread's signed index (positive = more compact than the median) and the combined index tested. */
  spreadIndex?: number;
  combined?: number;
  /** Below the median of those labels. */
  small: boolean;
  /** One-sided normal tail P(Z ≥ z) of the signed index z (positive on the small side). */
  pValue: number;
  /** Benjamini–Hochberg adjusted p-value over the family's labels. */
  qValue: number;
  /**
   * How strongly the measurements point to a backdoor target, in [0, 1]: (1 − qValue), times the held-out
   * success relative to minHeldOutSuccess (capped at 1; when it counts), and 0 for a trigger that never
   * reached the threshold.
   */
  confidence: number;
  flagged: boolean;
  /**
   * Natural-feature check: the share of the images its full trigger moves that half the trigger already moves
   * (naturalReach, nc-sources.ts), and the fraction of the reference labels (plus one) that reach at least as
   * far (naturalRank); absent without source curves.
   */
  reach?: number;
  naturalP?: number;
  /** Why the label is flagged (every test it passed), or the tests it failed. */
  reasons: string[];
}

export interface EvidenceOptions {
  scale: NormScale;
  /**
   * The index's distribution under "not a target" (default "normal"). "t": Student's t with n − 1 degrees of
   * freedom for a median and MAD from n labels, whose own error makes large indices likelier than the normal says.
   * "mad": Student's t with MAD_EFFICIENCY · (n − 1) degrees of freedom (madNullDf): the MAD is a noisier scale
   * than the standard deviation that t(n − 1) assumes.
   */
  nullDistribution?: NullDistribution;
  fdr?: number;
  /**
   * Families of triggers tested on the same labels (default 1): a label is flagged when any family flags it, so
   * each family's FDR bar is fdr / families (Bonferroni over the families), keeping the label's error at fdr.
   */
  families?: number;
  minHeldOutSuccess?: number;
  /** Held-out images the attack success was measured on (default: enough for it to count). */
  heldOutImages?: number;
  /**
   * Apply the natural-feature check and its second stage (default false: measured on the zoo it removed one
   * false flag in three seeds of multi_trigger and vetoed WaNet's target, whose warping trigger is no switch;
   * labels without source curves skip it). Off, its figures are still in the reasons, marked "not a test".
   */
  naturalCheck?: boolean;
  /** κ of the natural-feature check (default NATURAL_SCALE). */
  naturalScale?: number;
  /** Combine the norm's index with the mask spread's when every label has one (default false; see the head). */
  compactness?: boolean;
  /** The confirm-and-exclude loop (default "off": one round; see LoopRule). */
  loop?: LoopRule;
  /** Each label's index against the other labels only (default false; see signedIndex). */
  leaveOut?: boolean;
}

/**
 * The confirm-and-exclude loop for further targets. "all": every later round may confirm any label; "candidates":
 * a later round confirms only labels whose first-round index (every label in the statistics) was already > 2 on
 * the small side, since a label that was no anomaly then was not masked by a target, only the truncated rest
 * (the confirmed labels leave it from its small end) makes it look like one; "off": one round.
 */
export type LoopRule = "all" | "candidates" | "off";
export const LOOP_RULES: readonly LoopRule[] = ["all", "candidates", "off"];

/** The null distributions of the anomaly index (EvidenceOptions.nullDistribution). */
export type NullDistribution = "normal" | "t" | "mad";
export const NULL_DISTRIBUTIONS: readonly NullDistribution[] = ["normal", "t", "mad"];

/**
 * Asymptotic efficiency of the MAD as a scale estimate at the normal (Hampel 1974; Rousseeuw & Croux 1993:
 * 36.75%): its variance is that of a standard deviation from about 37% as many observations.
 */
export const MAD_EFFICIENCY = 0.3675;

/**
 * Degrees of freedom of the t that stands in for the null of a MAD index against n reference values. Checked
 * by simulation (normal references, a new normal value): the t's tail matches the simulated one at p 0.005 with
 * 3.75 df for n = 10 (here 3.3) and 5.75 for n = 16 (here 5.5); see nc-evidence.test.ts.
 */
export function madNullDf(n: number): number {
  return Math.max(1, MAD_EFFICIENCY * (n - 1));
}

export interface FamilyEvidence {
  perLabel: LabelEvidence[];
  /** Median and raw MAD (on the statistics' scale) of the labels not confirmed, as last computed. */
  median: number;
  mad: number;
  /** Rounds of the confirm-and-exclude loop (1 when nothing or everything was confirmed in the first). */
  rounds: number;
}

/** Complementary error function (Numerical Recipes' erfcc, relative error < 1.2e-7). */
export function erfc(x: number): number {
  const z = Math.abs(x);
  const t = 1 / (1 + 0.5 * z);
  const r =
    t *
    Math.exp(
      -z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))),
    );
  return x >= 0 ? r : 2 - r;
}

/** P(Z ≥ z) for a standard normal Z. */
export function normalTail(z: number): number {
  if (z === Infinity) return 0;
  if (z === -Infinity) return 1;
  return 0.5 * erfc(z / Math.SQRT2);
}

/** ln Γ(x) for x > 0 (Lanczos, g = 7, 9 terms; relative error about 1e-15). */
export function lnGamma(x: number): number {
  const c = [0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313, -176.61502916214059, 12.507343278686905, -0.13857109526572012, 9.9843695780195716e-6, 1.5056327351493116e-7];
  if (x < 0.5) return Math.log(Math.PI / Math.abs(Math.sin(Math.PI * x))) - lnGamma(1 - x);
  const z = x - 1;
  let a = c[0];
  const t = z + 7.5;
  for (let i = 1; i < 9; i++) a += c[i] / (z + i);
  return 0.5 * Math.log(2 * Math.PI) + (z + 0.5) * Math.log(t) - t + Math.log(a);
}

/** Regularized incomplete beta I_x(a, b) (Numerical Recipes' continued fraction). */
export function incompleteBeta(x: number, a: number, b: number): number {
  if (x <= 0) return 0;
  if (x >= 1) return 1;
  const front = Math.exp(lnGamma(a + b) - lnGamma(a) - lnGamma(b) + a * Math.log(x) + b * Math.log(1 - x));
  const cf = (x: number, a: number, b: number): number => {
    const tiny = 1e-300;
    let c = 1;
    let d = 1 - ((a + b) * x) / (a + 1);
    if (Math.abs(d) < tiny) d = tiny;
    d = 1 / d;
    let h = d;
    for (let m = 1; m <= 300; m++) {
      const m2 = 2 * m;
      let aa = (m * (b - m) * x) / ((a + m2 - 1) * (a + m2));
      d = 1 + aa * d;
      if (Math.abs(d) < tiny) d = tiny;
      c = 1 + aa / c;
      if (Math.abs(c) < tiny) c = tiny;
      d = 1 / d;
      h *= d * c;
      aa = (-(a + m) * (a + b + m) * x) / ((a + m2) * (a + m2 + 1));
      d = 1 + aa * d;
      if (Math.abs(d) < tiny) d = tiny;
      c = 1 + aa / c;
      if (Math.abs(c) < tiny) c = tiny;
      d = 1 / d;
      const del = d * c;
      h *= del;
      if (Math.abs(del - 1) < 1e-14) break;
    }
    return h;
  };
  return x < (a + 1) / (a + b + 2) ? (front * cf(x, a, b)) / a : 1 - (front * cf(1 - x, b, a)) / b;
}

/** P(T ≥ t) for Student's t with df degrees of freedom. */
export function studentTail(t: number, df: number): number {
  if (t === Infinity) return 0;
  if (t === -Infinity) return 1;
  const half = 0.5 * incompleteBeta(df / (df + t * t), df / 2, 0.5);
  return t >= 0 ? half : 1 - half;
}

/** Benjamini–Hochberg adjusted p-values (q-values), in input order. */
export function bhQValues(p: readonly number[]): number[] {
  const n = p.length;
  const order = p.map((_, i) => i).sort((a, b) => p[a] - p[b]);
  const q = new Array<number>(n);
  let running = 1;
  for (let k = n - 1; k >= 0; k--) {
    const i = order[k];
    running = Math.min(running, (p[i] * n) / (k + 1));
    q[i] = running;
  }
  return q;
}

const onScale = (norm: number, scale: NormScale): number => (scale === "log" ? Math.log(Math.max(norm, Number.MIN_VALUE)) : norm);

/** Median, raw MAD and count of the reference values not in `excluded` (all values not excluded when fewer than 3 are references). */
function nullStats(vNull: readonly number[], ref: readonly boolean[], excluded: ReadonlySet<number>): { median: number; mad: number; n: number } {
  let rest = vNull.filter((_, i) => ref[i] && !excluded.has(i));
  // Too few reference labels left for a spread: every label not excluded stands in.
  if (rest.length < 3) rest = vNull.filter((_, i) => !excluded.has(i));
  const med = median(rest);
  return { median: med, mad: median(rest.map((x) => Math.abs(x - med))), n: rest.length };
}

const robustZ = (x: number, med: number, mad: number): number => {
  const s = MAD_CONSISTENCY * mad;
  return s > 0 ? (med - x) / s : x === med ? 0 : x < med ? Infinity : -Infinity;
};

/**
 * Signed robust z of every value against the reference values not in `excluded` (positive = smaller than their
 * median). With `leaveOut`, each value is measured against the others only (its own value leaves the median and
 * MAD): the null a new value is compared with, which is also what madNullDf was simulated for.
 */
function signedIndex(v: readonly number[], ref: readonly boolean[], excluded: ReadonlySet<number>, vNull: readonly number[] = v, leaveOut = false): { z: number[]; median: number; mad: number; n: number } {
  const all = nullStats(vNull, ref, excluded);
  const z = v.map((x, i) => {
    if (!leaveOut || excluded.has(i)) return robustZ(x, all.median, all.mad);
    const own = nullStats(vNull, ref, new Set([...excluded, i]));
    return robustZ(x, own.median, own.mad);
  });
  return { z, ...all };
}

/** Stouffer's combination of two signed indices; an infinite one (a zero MAD) decides, opposite infinities cancel. */
export function stouffer(a: number, b: number): number {
  const z = (a + b) / Math.SQRT2;
  return Number.isNaN(z) ? 0 : z;
}

/** A level such as 0.025 as written (two significant digits). */
const level = (x: number): string => String(Number(x.toPrecision(2)));
const fmt = (x: number): string => (x >= 0.01 || x === 0 ? x.toFixed(2) : x.toExponential(1));

/** The evidence for every label of one family, with the confirm-and-exclude loop for several targets. */
export function familyEvidence(measures: readonly LabelMeasure[], opts: EvidenceOptions): FamilyEvidence {
  const fdr = (opts.fdr ?? FDR_LEVEL) / Math.max(1, opts.families ?? 1);
  const minSuccess = opts.minHeldOutSuccess ?? MIN_HELD_OUT_SUCCESS;
  const v = measures.map((m) => onScale(m.norm, opts.scale));
  const vNull = measures.map((m) => onScale(m.nullNorm ?? m.norm, opts.scale));
  const ref = measures.map((m) => m.reference ?? true);
  const useHeld = (opts.heldOutImages ?? MIN_HELD_OUT_IMAGES) >= MIN_HELD_OUT_IMAGES;
  const reach = measures.map((m) => (m.sources ? naturalReach(m.sources, undefined, opts.naturalScale) : null));
  const useNatural = opts.naturalCheck ?? false;
  const spreads = measures.map((m) => m.spread);
  const useSpread = (opts.compactness ?? false) && measures.length > 0 && spreads.every((x) => x !== undefined && x > 0 && Number.isFinite(x));
  const vs = useSpread ? spreads.map((x) => Math.log(x!)) : null;
  const confirmed = new Set<number>();
  // The first round's indices (every label in the statistics): a later round confirms only labels that were
  // already anomalies then (see the head).
  let firstZ: number[] | null = null;
  const loop = opts.loop ?? "off";
  const candidatesOnly = loop === "candidates";
  let rounds = 0;
  for (;;) {
    rounds++;
    const st = signedIndex(v, ref, confirmed, vNull, opts.leaveOut ?? false);
    const sp = vs ? signedIndex(vs, ref, confirmed, vs, opts.leaveOut ?? false).z : null;
    const zt = sp ? st.z.map((z, i) => stouffer(z, sp[i])) : st.z;
    firstZ ??= zt;
    const nd = opts.nullDistribution ?? "normal";
    const df = nd === "t" ? Math.max(1, st.n - 1) : nd === "mad" ? madNullDf(st.n) : Infinity;
    const p = df === Infinity ? zt.map(normalTail) : zt.map((z) => studentTail(z, df));
    const q = bhQValues(p);
    const perLabel = measures.map((m, i): LabelEvidence => {
      const index = Math.abs(st.z[i]);
      const z = zt[i];
      const small = z > 0;
      const okIndex = small && Math.abs(z) > ANOMALY_THRESHOLD;
      const others = confirmed.size - (confirmed.has(i) ? 1 : 0);
      const okFdr = q[i] <= fdr;
      const okHeld = !useHeld || m.heldOutSuccess >= minSuccess;
      // Natural-feature check against the reference labels not confirmed (the natural population).
      const r = reach[i];
      const refReach = reach.filter((x, j): x is number => x !== null && j !== i && ref[j] && !confirmed.has(j));
      const natP = r === null || refReach.length < MIN_NATURAL_REFERENCES ? null : naturalRank(r, refReach);
      // Explained as a natural feature: it reaches further than every reference label (rank p-value 1/(n+1)).
      const okNatural = !useNatural || natP === null || natP > 1 / (1 + refReach.length);
      // Second stage for a candidate the FDR bar misses: a trigger that moves less at a third of its strength
      // than every reference label's (a switch, rank p-value 1/(n+1)); see switchRank.
      const swP = r === null || refReach.length < MIN_NATURAL_REFERENCES ? null : switchRank(r, refReach);
      const okSwitch = useNatural && swP !== null && swP <= 1 / (1 + refReach.length);
      // A label the first round did not find anomalous (index <= 2 with every label in the statistics) is not
      // a target the confirmed ones masked: only the truncated rest makes it look like one.
      const okCandidate = !candidatesOnly || rounds === 1 || confirmed.has(i) || firstZ![i] > ANOMALY_THRESHOLD;
      const flagged = m.reached && okIndex && (okFdr || okSwitch) && okHeld && okNatural && okCandidate;
      const pass: string[] = [];
      const failed: string[] = [];
      (m.reached ? pass : failed).push(m.reached ? "trigger reached the success threshold" : "trigger never reached the success threshold");
      const what = sp ? `combined index ${Math.abs(z).toFixed(2)} (norm ${st.z[i].toFixed(2)}, spread ${sp[i].toFixed(2)})` : `anomaly index ${index.toFixed(2)}`;
      (okIndex ? pass : failed).push(`${what}${small ? "" : " (large side)"} ${okIndex ? ">" : "<="} ${ANOMALY_THRESHOLD}${others > 0 ? ` without the ${others} other confirmed target(s)` : ""}`);
      const fams = Math.max(1, opts.families ?? 1);
      const nullText = df === Infinity ? "" : `, index null t(${df.toFixed(1)}) from ${st.n} labels`;
      const fdrText = `false-discovery rate q ${fmt(q[i])} ${okFdr ? "<=" : ">"} ${level(fdr)} over ${measures.length} labels${fams > 1 ? ` (${level(fdr * fams)} over ${fams} trigger families)` : ""}${nullText}`;
      if (okFdr) pass.push(fdrText);
      else if (okSwitch && r !== null)
        pass.push(`${fdrText}, but confirmed as a switch: a third of the trigger moves ${(100 * r).toFixed(0)}% of the images the full one does, less than every one of the ${refReach.length} reference labels' (a natural label passes both stages with probability about ${fmt(p[i] / (1 + refReach.length))})`);
      else failed.push(fdrText);
      if (!okCandidate) failed.push(`index ${firstZ![i].toFixed(2)} <= ${ANOMALY_THRESHOLD} with every label in the statistics (not masked by the confirmed targets)`);
      if (useHeld) (okHeld ? pass : failed).push(`held-out attack success ${(100 * m.heldOutSuccess).toFixed(0)}% ${okHeld ? ">=" : "<"} ${(100 * minSuccess).toFixed(0)}%`);
      else pass.push(`held-out attack success ${(100 * m.heldOutSuccess).toFixed(0)}% (not a test: fewer than ${MIN_HELD_OUT_IMAGES} held-out images)`);
      if (natP !== null && r !== null) {
        const what = `a third of the trigger moves ${(100 * r).toFixed(0)}% of the images the full one does, ${okNatural ? `${Math.round(natP * (1 + refReach.length)) - 1} of` : "more than every one of"} the ${refReach.length} reference labels' trigger as far`;
        if (!useNatural) pass.push(`${what} (not a test)`);
        else (okNatural ? pass : failed).push(`${okNatural ? "not" : "explained as"} a natural feature: ${what}`);
      }
      const rn = m.restartNorms ?? [];
      if (rn.length > 1) pass.push(`restarts' norms ${rn.map((x) => x.toFixed(1)).join(", ")} (spread ×${(Math.max(...rn) / Math.min(...rn)).toFixed(2)})`);
      // 1 − the error rate of the stronger path: the FDR q, or for the two-stage path the chance that one of
      // the N labels passes both stages by chance (N · p · 1/(n+1), Bonferroni).
      const err = Math.min(q[i], okSwitch ? Math.min(1, (measures.length * p[i]) / (1 + refReach.length)) : 1);
      const confidence = m.reached ? (1 - err) * (useHeld ? Math.min(1, m.heldOutSuccess / minSuccess) : 1) : 0;
      return { index, ...(sp ? { spreadIndex: sp[i], combined: z } : {}), small, pValue: p[i], qValue: q[i], confidence: okNatural ? confidence : 0, flagged, ...(r !== null ? { reach: r } : {}), ...(natP !== null ? { naturalP: natP } : {}), reasons: flagged ? pass : failed };
    });
    const fresh = perLabel.map((e, i) => (e.flagged && !confirmed.has(i) ? i : -1)).filter((i) => i >= 0);
    // Stop when no new target is confirmed, or when the rest would be too few for statistics.
    if (fresh.length === 0 || confirmed.size + fresh.length > measures.length - 3 || loop === "off") return { perLabel, median: st.median, mad: st.mad, rounds };
    for (const i of fresh) confirmed.add(i);
  }
}
