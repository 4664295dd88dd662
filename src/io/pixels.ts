// Checks of raw pixel values at the data boundary. Every source promises raw pixels in 0..255 that
// --input-scale then divides; a NaN, an infinity or data already scaled to [0, 1] would otherwise flow into
// the model and give silent nonsense (NaN logits, near-black images).
import { fail } from "../errors.js";

/** Where a flat index of a file's array lies: `data[n, a, b, c]` in the file's own dimension order. */
export function arrayIndex(flat: number, dims: readonly number[]): string {
  const idx: number[] = new Array<number>(dims.length);
  let rest = flat;
  for (let d = dims.length - 1; d >= 0; d--) {
    const size = dims[d]!;
    idx[d] = rest % size;
    rest = Math.floor(rest / size);
  }
  return idx.join(", ");
}

/**
 * UserError naming the file and the first bad value when `raw` (images starting at `firstImage`, each laid
 * out as `imageDims` in the file) holds a NaN, an infinity or a value outside 0..255.
 */
export function checkRawPixels(raw: ArrayLike<number>, where: string, imageDims: readonly number[], firstImage: number, array = "data"): void {
  for (let i = 0; i < raw.length; i++) {
    const v = raw[i]!;
    // NaN fails both comparisons.
    if (v >= 0 && v <= 255) continue;
    const per = imageDims.reduce((a, b) => a * b, 1);
    const at = `${array}[${firstImage + Math.floor(i / per)}, ${arrayIndex(i % per, imageDims)}]`;
    if (!Number.isFinite(v)) fail(`${where}: pixel ${at} is ${v}; pixels must be finite`);
    fail(`${where}: pixel ${at} is ${v}, outside 0..255; pixels must be raw 0..255 values (--input-scale divides them)`);
  }
}

const short = (v: number): string => String(Number(v.toPrecision(3)));

/** Smallest and largest of the values (NaN-free input). */
export function valueRange(raw: ArrayLike<number>): { min: number; max: number } {
  let min = Infinity;
  let max = -Infinity;
  for (let i = 0; i < raw.length; i++) {
    const v = raw[i]!;
    if (v < min) min = v;
    if (v > max) max = v;
  }
  return { min, max };
}

/**
 * UserError when pixels that look already scaled to [0, 1] (a non-zero maximum of at most 1) would be divided
 * by an input scale other than 1: the model would see near-black images and answer at chance, silently.
 */
export function checkScaleAgainstRange(range: { min: number; max: number }, inputScale: number, where: string): void {
  if (inputScale !== 1 && range.max > 0 && range.max <= 1) {
    fail(
      `${where}: pixel values lie in [${short(range.min)}, ${short(range.max)}], already scaled to [0, 1], but --input-scale ${inputScale} divides them again; pass --input-scale 1 for data stored in [0, 1]`,
    );
  }
}
