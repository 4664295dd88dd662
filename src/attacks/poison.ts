// Backdoor (BadNet) poisoning attacks as pure functions on NCHW float32 batches in the model's scaled range
// (pixel max = 255 / inputScale). A trigger is a per-pixel blend mask plus a pattern, so the BadNets patch
// (mask 1 on a square), the blended attack (mask α everywhere) and any hand-made stamp share one code path.
import { fail } from "../errors.js";
import { shuffled, type TrainData } from "../train/trainer.js";
import { mulberry32 } from "../util/random.js";

export interface Trigger {
  /** [H, W] blend weight per pixel in [0, 1]: x' = (1 − m)·x + m·pattern, the same for every channel. */
  mask: Float32Array;
  /** [C, H, W] in the scaled range. */
  pattern: Float32Array;
  /** [C, H, W] */
  shape: [number, number, number];
  /** One line for manifests and reports, e.g. "3x3 white square at rows 24-26, cols 24-26". */
  description: string;
}

/** Pixel value of white in the scaled range. */
export function pixelMax(inputScale: number): number {
  if (!Number.isFinite(inputScale) || inputScale <= 0) fail(`input scale must be a positive number, got ${inputScale}`);
  return 255 / inputScale;
}

export type Corner = "top-left" | "top-right" | "bottom-left" | "bottom-right";

export interface Placement {
  /** Corner the stamp sits in (default bottom-right), `margin` pixels from both edges (default 1). */
  corner?: Corner;
  margin?: number;
  /** Explicit top-left pixel of the stamp; wins over corner/margin. */
  at?: { row: number; col: number };
}

function place(shape: [number, number, number], h: number, w: number, p: Placement, what: string): { row: number; col: number } {
  const [, H, W] = shape;
  let pos = p.at;
  if (!pos) {
    const m = p.margin ?? 1;
    const corner = p.corner ?? "bottom-right";
    pos = {
      row: corner.startsWith("top") ? m : H - h - m,
      col: corner.endsWith("left") ? m : W - w - m,
    };
  }
  const { row, col } = pos;
  if (!Number.isInteger(row) || !Number.isInteger(col) || row < 0 || col < 0 || row + h > H || col + w > W)
    fail(`${what}: a ${h}x${w} stamp at row ${row}, col ${col} does not fit in a ${H}x${W} image`);
  return pos;
}

const span = (start: number, len: number): string => (len === 1 ? `${start}` : `${start}-${start + len - 1}`);

/**
 * A stamp drawn from text rows: "x" = white (max), "o" = black (0), "." = pixel left alone. E.g. a cross
 * ["x.x", ".x.", "x.x"] or a checkerboard ["xo", "ox"]. Stamped pixels get the value in every channel.
 */
export function stampTrigger(
  shape: [number, number, number],
  rows: string[],
  opts: Placement & { max: number; name?: string },
): Trigger {
  const h = rows.length;
  const w = rows[0]?.length ?? 0;
  const what = `trigger ${opts.name ?? "stamp"}`;
  if (h === 0 || w === 0 || rows.some((r) => r.length !== w)) fail(`${what}: rows must be non-empty and of equal length`);
  if (rows.some((r) => /[^xo.]/.test(r))) fail(`${what}: rows may only contain "x" (white), "o" (black) and "." (untouched)`);
  const [C, H, W] = shape;
  const { row, col } = place(shape, h, w, opts, what);
  const mask = new Float32Array(H * W);
  const pattern = new Float32Array(C * H * W);
  for (let r = 0; r < h; r++)
    for (let c = 0; c < w; c++) {
      const ch = rows[r]![c];
      if (ch === ".") continue;
      const p = (row + r) * W + col + c;
      mask[p] = 1;
      for (let k = 0; k < C; k++) pattern[k * H * W + p] = ch === "x" ? opts.max : 0;
    }
  const description = `${opts.name ?? `${h}x${w} stamp`} at rows ${span(row, h)}, cols ${span(col, w)}`;
  return { mask, pattern, shape: [C, H, W], description };
}

/** The BadNets trigger: a size×size square of `value` (default white), by default 3×3 near the bottom-right corner. */
export function patchTrigger(
  shape: [number, number, number],
  opts: Placement & { size?: number; max: number; value?: number },
): Trigger {
  const k = opts.size ?? 3;
  if (!Number.isInteger(k) || k < 1) fail(`patch trigger: size must be a positive integer, got ${k}`);
  const value = opts.value ?? opts.max;
  const t = stampTrigger(shape, Array.from({ length: k }, () => "x".repeat(k)), { ...opts, name: `${k}x${k} square` });
  if (value !== opts.max) for (let i = 0; i < t.pattern.length; i++) if (t.pattern[i] !== 0) t.pattern[i] = value;
  const color = value === opts.max ? "white" : `value ${value}`;
  return { ...t, description: t.description.replace(`${k}x${k} square`, `${k}x${k} ${color} square`) };
}

/** The blended attack (Chen et al. 2017): a fixed uniform-random pattern from `seed`, blended with weight alpha. */
export function blendTrigger(shape: [number, number, number], opts: { seed: number; alpha?: number; max: number }): Trigger {
  const alpha = opts.alpha ?? 0.2;
  if (!(alpha > 0 && alpha <= 1)) fail(`blend trigger: alpha must be in (0, 1], got ${alpha}`);
  const [C, H, W] = shape;
  const rand = mulberry32(opts.seed);
  // Whole pixel levels, so the pattern itself survives a round trip through uint8 files.
  const pattern = Float32Array.from({ length: C * H * W }, () => (Math.floor(rand() * 256) / 255) * opts.max);
  const mask = new Float32Array(H * W).fill(alpha);
  return { mask, pattern, shape: [C, H, W], description: `random pattern (seed ${opts.seed}) blended with alpha ${alpha}` };
}

/**
 * An attack that is not one fixed mask-and-pattern stamp: an additive signal (SIG, LF), a warp (WaNet), or
 * a stamp whose position changes per image. `apply` poisons image i of an NCHW batch in place; `rand` is the
 * caller's seeded stream, for attacks with per-image randomness.
 */
export interface Transform {
  kind: "transform";
  /** [C, H, W] */
  shape: [number, number, number];
  description: string;
  apply(x: Float32Array, i: number, rand: () => number): void;
}

/** Anything poisonTrainingSet / poisonTestSet can apply. */
export type Attack = Trigger | Transform;

export const isTransform = (a: Attack): a is Transform => (a as Transform).kind === "transform";

function checkTrigger(t: Attack, shape: readonly number[]): void {
  const [C, H, W] = t.shape;
  if (shape.length !== 3 || shape[0] !== C || shape[1] !== H || shape[2] !== W)
    fail(`trigger is ${C}x${H}x${W} but the images are ${shape.join("x")}`);
  if (!isTransform(t) && (t.mask.length !== H * W || t.pattern.length !== C * H * W)) throw new Error(`trigger arrays do not match shape ${C}x${H}x${W}`);
}

/** Poisons image i of an NCHW batch in place with either kind of attack. */
export function attackInPlace(x: Float32Array, i: number, a: Attack, rand: () => number): void {
  if (isTransform(a)) a.apply(x, i, rand);
  else stampInPlace(x, i, a);
}

/** Stamps image `i` of an NCHW batch in place. */
export function stampInPlace(x: Float32Array, i: number, t: Trigger): void {
  const [C, H, W] = t.shape;
  const hw = H * W;
  const base = i * C * hw;
  for (let p = 0; p < hw; p++) {
    const m = t.mask[p]!;
    if (m === 0) continue;
    for (let k = 0; k < C; k++) {
      const j = base + k * hw + p;
      x[j] = (1 - m) * x[j]! + m * t.pattern[k * hw + p]!;
    }
  }
}

/** A copy of the NCHW batch `x` (images of `shape`) with the trigger applied to every image. */
export function applyTrigger(x: Float32Array, shape: [number, number, number], t: Attack, seed = 0): Float32Array {
  checkTrigger(t, shape);
  const per = shape[0] * shape[1] * shape[2];
  if (x.length % per !== 0) throw new Error(`applyTrigger: ${x.length} values is not a whole number of ${shape.join("x")} images`);
  const out = x.slice();
  const rand = mulberry32(seed);
  for (let i = 0; i < out.length / per; i++) attackInPlace(out, i, t, rand);
  return out;
}

/** Which label a poisoned image gets: one fixed target (all-to-one) or y → (y + shift) mod K (all-to-all). */
export type PoisonTarget = number | { kind: "all-to-all"; numClasses: number; shift?: number };

export function targetLabel(target: PoisonTarget, y: number): number {
  if (typeof target === "number") return target;
  const k = target.numClasses;
  return (((y + (target.shift ?? 1)) % k) + k) % k;
}

export function describeTarget(target: PoisonTarget): string {
  return typeof target === "number" ? `all-to-one → ${target}` : `all-to-all y → (y + ${target.shift ?? 1}) mod ${target.numClasses}`;
}

/** Images whose poisoned label equals their true label gain nothing from the trigger: they are never picked. */
function eligible(target: PoisonTarget, y: number): boolean {
  return targetLabel(target, y) !== y;
}

function checkTarget(target: PoisonTarget): void {
  if (typeof target === "number") {
    if (!Number.isInteger(target) || target < 0) fail(`poison target must be a class index >= 0, got ${target}`);
  } else if (!Number.isInteger(target.numClasses) || target.numClasses < 2 || !Number.isInteger(target.shift ?? 1) || (target.shift ?? 1) % target.numClasses === 0) {
    fail(`all-to-all poisoning needs numClasses >= 2 and a shift that is not a multiple of it`);
  }
}

export interface PoisonOptions {
  trigger: Attack;
  target: PoisonTarget;
  /** Share of ALL training images to poison, in [0, 1]. */
  rate: number;
  seed: number;
  /** Indices that must not be poisoned (e.g. already carrying another trigger). */
  exclude?: ArrayLike<number>;
  /**
   * Clean-label poisoning (SIG, Barni et al. 2019): only images already labelled `target` (a single
   * class) are stamped, and no label changes.
   */
  cleanLabel?: boolean;
}

export interface PoisonedTrainData extends TrainData {
  /** Indices of the stamped-and-relabelled images, ascending. */
  poisoned: Int32Array;
}

/**
 * A new TrainData where round(rate × N) images, drawn with the seed among those whose label changes, carry
 * the trigger and the target label. The input is not modified.
 */
export function poisonTrainingSet(data: TrainData, opts: PoisonOptions): PoisonedTrainData {
  checkTrigger(opts.trigger, data.shape);
  checkTarget(opts.target);
  if (!(opts.rate >= 0 && opts.rate <= 1)) fail(`poison rate must be in [0, 1], got ${opts.rate}`);
  const cleanLabel = opts.cleanLabel === true;
  if (cleanLabel && typeof opts.target !== "number") fail("clean-label poisoning needs one target class");
  const pickable = (y: number) => (cleanLabel ? y === opts.target : eligible(opts.target, y));
  const n = data.y.length;
  const want = Math.round(opts.rate * n);
  const skip = new Set<number>(Array.from(opts.exclude ?? []));
  const order = shuffled(n, mulberry32(opts.seed));
  const picked: number[] = [];
  for (let i = 0; i < n && picked.length < want; i++) {
    const j = order[i]!;
    if (!skip.has(j) && pickable(data.y[j]!)) picked.push(j);
  }
  if (picked.length < want)
    fail(`cannot poison ${want} of ${n} images: only ${picked.length} are eligible (${cleanLabel ? `clean-label, class ${String(opts.target)}` : describeTarget(opts.target)})`);
  picked.sort((a, b) => a - b);
  const x = data.x.slice();
  const y = data.y.slice();
  const rand = mulberry32(opts.seed ^ 0x5bd1e995);
  for (const j of picked) {
    attackInPlace(x, j, opts.trigger, rand);
    if (!cleanLabel) y[j] = targetLabel(opts.target, data.y[j]!);
  }
  return { x, y, shape: [data.shape[0], data.shape[1], data.shape[2]], poisoned: Int32Array.from(picked) };
}

/**
 * The attack's test set (CSAW convention): every image whose poisoned label differs from its true label,
 * stamped, with the attacker's label stored; ASR = share classified as the stored label.
 */
export function poisonTestSet(data: TrainData, trigger: Attack, target: PoisonTarget, seed = 0): TrainData {
  checkTrigger(trigger, data.shape);
  checkTarget(target);
  const per = data.shape[0] * data.shape[1] * data.shape[2];
  const keep: number[] = [];
  for (let i = 0; i < data.y.length; i++) if (eligible(target, data.y[i]!)) keep.push(i);
  const x = new Float32Array(keep.length * per);
  const y = new Int32Array(keep.length);
  const rand = mulberry32(seed);
  keep.forEach((j, i) => {
    x.set(data.x.subarray(j * per, (j + 1) * per), i * per);
    attackInPlace(x, i, trigger, rand);
    y[i] = targetLabel(target, data.y[j]!);
  });
  return { x, y, shape: [data.shape[0], data.shape[1], data.shape[2]] };
}

/** Scaled float pixels back to uint8 (rounded, clamped), e.g. to write a CSAW .h5 file. */
export function toPixels(x: Float32Array, inputScale: number): Uint8Array {
  const out = new Uint8Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = Math.min(255, Math.max(0, Math.round(x[i]! * inputScale)));
  return out;
}

/** uint8 pixels to the scaled float range. */
export function fromPixels(p: Uint8Array, inputScale: number): Float32Array {
  const out = new Float32Array(p.length);
  for (let i = 0; i < p.length; i++) out[i] = p[i]! / inputScale;
  return out;
}

/** The trigger as an RGBA image (HWC bytes): pattern in the colour channels, mask as alpha. For trigger.png. */
export function triggerRgba(t: Trigger, inputScale: number): Uint8Array {
  const [C, H, W] = t.shape;
  const hw = H * W;
  const out = new Uint8Array(hw * 4);
  for (let p = 0; p < hw; p++) {
    for (let k = 0; k < 3; k++) {
      const v = t.pattern[(C === 3 ? k : 0) * hw + p]! * inputScale;
      out[p * 4 + k] = Math.min(255, Math.max(0, Math.round(v)));
    }
    out[p * 4 + 3] = Math.round(t.mask[p]! * 255);
  }
  return out;
}
