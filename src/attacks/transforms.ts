// Attack families beyond one fixed stamp, as used by BackdoorBench: SIG (an additive sinusoid, clean-label),
// LF (a smooth low-frequency additive pattern), WaNet (a fixed, small warp of the whole image) and a stamp at
// a random position per image. All work on NCHW float32 images in the model's scaled range [0, max].
import { fail } from "../errors.js";
import { mulberry32 } from "../util/random.js";
import { stampInPlace, stampTrigger, type Transform } from "./poison.js";

type Shape = [number, number, number];

const clamp = (v: number, max: number): number => (v < 0 ? 0 : v > max ? max : v);

/** Adds `signal` ([H, W], the same in every channel) to image i, clipped to [0, max]. */
function addInPlace(x: Float32Array, i: number, shape: Shape, signal: Float32Array, max: number): void {
  const [C, H, W] = shape;
  const hw = H * W;
  const base = i * C * hw;
  for (let k = 0; k < C; k++) for (let p = 0; p < hw; p++) x[base + k * hw + p] = clamp(x[base + k * hw + p]! + signal[p]!, max);
}

/**
 * SIG (Barni et al., ICIP 2019): x' = clip(x + Δ·sin(2π·col·f / W)), a vertical-stripe sinusoid over the whole
 * image. BackdoorBench's defaults are Δ = 40 (of 255) and f = 6. Used clean-label: only target-class images
 * are poisoned and keep their labels (PoisonOptions.cleanLabel).
 */
export function sigTransform(shape: Shape, opts: { max: number; delta?: number; frequency?: number }): Transform {
  const delta = opts.delta ?? (40 / 255) * opts.max;
  const f = opts.frequency ?? 6;
  if (!(delta > 0 && delta <= opts.max)) fail(`SIG: delta must be in (0, ${opts.max}], got ${delta}`);
  if (!(f > 0)) fail(`SIG: frequency must be positive, got ${f}`);
  const [, H, W] = shape;
  const signal = new Float32Array(H * W);
  for (let r = 0; r < H; r++) for (let c = 0; c < W; c++) signal[r * W + c] = delta * Math.sin((2 * Math.PI * c * f) / W);
  return {
    kind: "transform",
    shape,
    description: `SIG sinusoid (delta ${+(delta / opts.max * 255).toFixed(1)}/255, frequency ${f}) added to the whole image`,
    apply: (x, i) => addInPlace(x, i, shape, signal, opts.max),
  };
}

/**
 * A low-frequency (LF-style) trigger: a random smooth pattern made of the 2-D DCT basis functions with
 * frequencies 0..maxFreq in each direction (seeded coefficients), scaled so its largest magnitude is
 * eps·max, added and clipped. LF (Zeng et al., ICCV 2021) low-pass filters an optimized universal
 * perturbation; this one is random, not optimized, but lives in the same frequency band.
 */
export function lowFrequencyTransform(shape: Shape, opts: { max: number; seed: number; eps?: number; maxFreq?: number }): Transform {
  const eps = opts.eps ?? 0.2;
  const fmax = opts.maxFreq ?? 3;
  if (!(eps > 0 && eps <= 1)) fail(`LF trigger: eps must be in (0, 1], got ${eps}`);
  if (!Number.isInteger(fmax) || fmax < 1) fail(`LF trigger: maxFreq must be a positive integer, got ${fmax}`);
  const [, H, W] = shape;
  const rand = mulberry32(opts.seed);
  const signal = new Float32Array(H * W);
  for (let u = 0; u <= fmax; u++)
    for (let v = 0; v <= fmax; v++) {
      if (u === 0 && v === 0) continue; // no constant offset: that would be a brightness change, not a pattern
      const a = 2 * rand() - 1;
      for (let r = 0; r < H; r++)
        for (let c = 0; c < W; c++) signal[r * W + c] += a * Math.cos((Math.PI * (2 * r + 1) * u) / (2 * H)) * Math.cos((Math.PI * (2 * c + 1) * v) / (2 * W));
    }
  const peak = signal.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
  for (let p = 0; p < signal.length; p++) signal[p] = (signal[p]! / peak) * eps * opts.max;
  return {
    kind: "transform",
    shape,
    description: `low-frequency random pattern (DCT frequencies <= ${fmax}, seed ${opts.seed}, peak ${eps} of the range) added to the whole image`,
    apply: (x, i) => addInPlace(x, i, shape, signal, opts.max),
  };
}

/** Bilinear sample of channel plane `src` ([H, W]) at fractional pixel (r, c), clamped to the border. */
function bilinear(src: Float32Array, off: number, H: number, W: number, r: number, c: number): number {
  const rr = Math.min(Math.max(r, 0), H - 1);
  const cc = Math.min(Math.max(c, 0), W - 1);
  const r0 = Math.floor(rr), c0 = Math.floor(cc);
  const r1 = Math.min(r0 + 1, H - 1), c1 = Math.min(c0 + 1, W - 1);
  const fr = rr - r0, fc = cc - c0;
  const at = (a: number, b: number) => src[off + a * W + b]!;
  return (1 - fr) * ((1 - fc) * at(r0, c0) + fc * at(r0, c1)) + fr * ((1 - fc) * at(r1, c0) + fc * at(r1, c1));
}

/**
 * WaNet (Nguyen & Tran, ICLR 2021): every poisoned image is resampled through one fixed, smooth warp field.
 * As in the paper, a random k×k field of offsets in [−1, 1] is normalized by its mean magnitude and upsampled
 * to H×W (bilinear here, bicubic in the paper); a pixel then moves by strength·offset·(W−1)/(2H) pixels (the
 * paper's grid + s·field/H in [−1, 1] coordinates), and the image is sampled bilinearly there.
 */
export function wanetTransform(shape: Shape, opts: { seed: number; k?: number; strength?: number }): Transform {
  const k = opts.k ?? 4;
  const s = opts.strength ?? 0.5;
  if (!Number.isInteger(k) || k < 2) fail(`WaNet: k must be an integer >= 2, got ${k}`);
  if (!(s > 0)) fail(`WaNet: strength must be positive, got ${s}`);
  const [C, H, W] = shape;
  const rand = mulberry32(opts.seed);
  const coarse = Float32Array.from({ length: 2 * k * k }, () => 2 * rand() - 1);
  const meanAbs = coarse.reduce((a, v) => a + Math.abs(v), 0) / coarse.length;
  for (let j = 0; j < coarse.length; j++) coarse[j] = coarse[j]! / meanAbs;
  // Upsample each of the two offset planes (row, col) from k×k to H×W, corners aligned.
  const dr = new Float32Array(H * W), dc = new Float32Array(H * W);
  for (let r = 0; r < H; r++)
    for (let c = 0; c < W; c++) {
      const gr = (r * (k - 1)) / (H - 1), gc = (c * (k - 1)) / (W - 1);
      dr[r * W + c] = bilinear(coarse, k * k, k, k, gr, gc); // plane 1: vertical offset
      dc[r * W + c] = bilinear(coarse, 0, k, k, gr, gc); // plane 0: horizontal offset (x first, as grid_sample)
    }
  const pxR = (s / H) * ((H - 1) / 2), pxC = (s / H) * ((W - 1) / 2);
  const hw = H * W;
  const plane = new Float32Array(hw);
  return {
    kind: "transform",
    shape,
    description: `WaNet warp (fixed ${k}x${k} random field, seed ${opts.seed}, strength ${s})`,
    apply: (x, i) => {
      for (let ch = 0; ch < C; ch++) {
        const off = (i * C + ch) * hw;
        plane.set(x.subarray(off, off + hw));
        for (let r = 0; r < H; r++)
          for (let c = 0; c < W; c++) x[off + r * W + c] = bilinear(plane, 0, H, W, r + pxR * dr[r * W + c]!, c + pxC * dc[r * W + c]!);
      }
    },
  };
}

/** A stamp (rows as in stampTrigger) placed at a uniformly random position in each poisoned image. */
export function randomPositionTransform(shape: Shape, rows: string[], opts: { max: number; name?: string }): Transform {
  const [, H, W] = shape;
  const h = rows.length, w = rows[0]?.length ?? 0;
  if (h > H || w > W) fail(`random-position trigger: a ${h}x${w} stamp does not fit in a ${H}x${W} image`);
  // One stamp per position, built on first use (validates the rows once, up front).
  stampTrigger(shape, rows, { max: opts.max, at: { row: 0, col: 0 }, name: opts.name });
  const cache = new Map<number, ReturnType<typeof stampTrigger>>();
  return {
    kind: "transform",
    shape,
    description: `${opts.name ?? `${h}x${w} stamp`} at a random position in each image`,
    apply: (x, i, rand) => {
      const row = Math.floor(rand() * (H - h + 1)), col = Math.floor(rand() * (W - w + 1));
      const key = row * W + col;
      let t = cache.get(key);
      if (!t) cache.set(key, (t = stampTrigger(shape, rows, { max: opts.max, at: { row, col }, name: opts.name })));
      stampInPlace(x, i, t);
    },
  };
}

/** The transform applied to a mid-grey image, as RGBA bytes (HWC), for trigger.png. */
export function transformPreviewRgba(t: Transform, inputScale: number, seed = 0): Uint8Array {
  const [C, H, W] = t.shape;
  const hw = H * W;
  const img = new Float32Array(C * hw).fill(127 / inputScale);
  t.apply(img, 0, mulberry32(seed));
  const out = new Uint8Array(hw * 4);
  for (let p = 0; p < hw; p++) {
    for (let k = 0; k < 3; k++) out[p * 4 + k] = Math.min(255, Math.max(0, Math.round(img[(C === 3 ? k : 0) * hw + p]! * inputScale)));
    out[p * 4 + 3] = 255;
  }
  return out;
}
