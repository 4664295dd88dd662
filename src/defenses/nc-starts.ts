// A saved scan rescored as if it had run fewer random starts per label. Every start of a label's inversion
// is seeded by (seed, family, label, start number) alone (runSeed in neural-cleanse.ts), so the first k starts
// of a scan with more starts are the starts a k-start scan runs, up to floating-point differences from how the
// starts are packed into graph runs (on the zoo, 30 of 3,300 starts differed between a 6-start and a 2+2 scan,
// by at most 5% in norm; no flag changed). A scan recorded with `recordStarts` keeps each start's norm, whether
// it reached the threshold and its trigger's held-out success, which is all the statistics read of a label.
// This lets one scan with many starts measure every smaller count on the same runs.
import { median } from "./mad.js";
import type { NcRawScore, NcStartScore } from "./neural-cleanse.js";

/** The better of two starts, as the scan keeps them: one that reached the threshold first, then the smaller norm. */
function betterStart(p: NcStartScore, q: NcStartScore): NcStartScore {
  if (p.reached !== q.reached) return p.reached ? p : q;
  return q.norm < p.norm ? q : p;
}

/**
 * One label's raw score as a scan with only starts 0..k-1 would have given it. A label without recorded starts
 * (screened out, or a scan saved without them) is returned as it is. Throws when the scan ran fewer than k starts
 * for a label it recorded: a rescore cannot invent starts.
 */
export function scoreWithFirstStarts(s: NcRawScore, k: number): NcRawScore {
  if (!Number.isInteger(k) || k < 1) throw new Error(`the number of starts must be a positive integer, got ${k}`);
  if (!s.starts?.length) return s;
  const first = s.starts.filter((x) => x.restart < k);
  if (first.length < k) throw new Error(`a label recorded ${s.starts.length} start(s), fewer than the ${k} asked for`);
  const best = first.reduce(betterStart);
  const reachedNorms = first.filter((x) => x.reached).map((x) => x.norm);
  const { restartNorms: _r, ...rest } = s;
  return {
    ...rest,
    l1Norm: best.norm,
    statNorm: best.norm,
    reached: best.reached,
    attackSuccess: best.heldOutSuccess,
    ...(reachedNorms.length > 1 ? { restartNorms: reachedNorms } : {}),
    starts: first,
  };
}

/**
 * A family's raw scores as a scan with `base` starts per label and `more` further starts for the labels below
 * the reference labels' median after those would have given them (the rule of detectBackdoor's moreStarts).
 * With `nullFromBase` the median and MAD are computed from the norms after `base` starts (an experiment).
 */
export function scoreWithStartsAtStake(scores: readonly NcRawScore[], base: number, more: number, opts: { nullFromBase?: boolean } = {}): NcRawScore[] {
  const first = scores.map((s) => scoreWithFirstStarts(s, base));
  const refs = first.filter((s) => s.reference).map((s) => s.l1Norm);
  if (more === 0 || refs.length === 0) return first;
  const cut = median(refs);
  return scores.map((s, i) => {
    if (!(first[i].l1Norm < cut && s.starts?.length)) return first[i];
    const further = scoreWithFirstStarts(s, base + more);
    // nullFromBase: the reference statistics keep every label's norm after the same `base` starts.
    return opts.nullFromBase && further.statNorm !== first[i].statNorm ? { ...further, nullNorm: first[i].statNorm } : further;
  });
}
