// Compactness of a reversed mask: a second measurement of the mask family beside its norm. A patch backdoor's
// reversed trigger sits in one place (the patch), while the smallest trigger of a natural label is strokes
// scattered over the object, wherever its features differ from the others. TABOR (Guo et al., 2019) penalises
// scattered triggers during the inversion for the same reason; here the spread is measured, not optimised:
// the mask-weighted radius of gyration, sqrt(Σ m_p·|p − c|² / Σ m_p) around the mask's centre of mass c, in
// pixels. It is scale-free in the mask's values (a mask scaled by any factor has the same spread), so it adds
// evidence the norm does not carry: an 8×8 checkerboard is as large as a natural label's trigger by norm but
// a third as spread. nc-evidence.ts compares it against the reference labels like the norm.

/** Radius of gyration (pixels) of a mask [H·W] of non-negative weights; NaN for an all-zero mask. */
export function maskSpread(mask: ArrayLike<number>, h: number, w: number): number {
  if (mask.length !== h * w) throw new Error(`maskSpread: ${mask.length} values is not ${h}x${w}`);
  let sum = 0, sx = 0, sy = 0;
  for (let i = 0; i < mask.length; i++) {
    const m = mask[i];
    sum += m;
    sx += m * (i % w);
    sy += m * Math.floor(i / w);
  }
  if (!(sum > 0)) return NaN;
  const cx = sx / sum;
  const cy = sy / sum;
  let s2 = 0;
  for (let i = 0; i < mask.length; i++) {
    const dx = (i % w) - cx;
    const dy = Math.floor(i / w) - cy;
    s2 += mask[i] * (dx * dx + dy * dy);
  }
  return Math.sqrt(s2 / sum);
}
