// Translation evidence: does B answer the reversed trigger wherever it is stamped?
//
// Neural Cleanse reverses a trigger at one position. A backdoor trained on a patch at a random position per
// image (BackdoorBench's random-location BadNets) fires wherever the patch is, and unlearning the reversed
// trigger at its found position only teaches the network to ignore it there. A defender can see the difference
// on clean data alone: stamp the reversed trigger at a random position per image and compare its success with
// the success at the found position.
//
// "A random position" is a cyclic shift of the whole mask and pattern (a roll: what leaves one side enters the
// other), drawn uniformly from the rolls that move the trigger off itself: at most a tenth of the mask's mass
// (`MAX_SELF_OVERLAP`) lands where the mask was. The reversed masks are often a few blobs scattered over the
// image (random_pos seed 0: 7 support pixels spread over rows 1–26); moving them only as far as keeps every blob
// inside the image leaves shifts of 1–5 pixels, a jitter test rather than a position test (measured first:
// low_rate_patch, a fixed patch, then kept 45% of its success, random_pos seed 1 48%). A mask spread over the
// whole image (blend, wanet: L1 50–68) lands on itself under every roll: it has no position to leave, and is
// never position-free. Without that condition, rolled blend and wanet triggers kept 44–87% of their success,
// unlearning stamped them rolled, and auto left 21.8% on blend (6.9% before) and 14.1% on wanet (6.6%), seed 0.
//
// Rule: a flagged label is *position-free* when some roll moves its reversed trigger off itself and the trigger,
// rolled off itself to a random position per image, still succeeds on at least a quarter as many clean images
// (not of the label) as at its found position (`POSITION_FREE_RATIO`). A trigger tied to one position works
// after such a roll only by chance. Measured in auto's setting on the zoo (2026-12-03, seeds 0–2 where a label
// was flagged, selection split, B): the fixed triggers keep 0–6% of their success (badnet_patch 0.03,
// low_rate_patch 0.04–0.06, lf 0.00–0.01, multi_trigger 0.01–0.02, large_checker_tr 0.01), random_pos 0.41–0.44,
// blend and wanet have no roll off themselves. The first choice, half (auto's "halved" criterion), left
// random_pos under it in all three seeds; a quarter is the round figure in the gap, set after that measurement.
// No per-model constant and no poisoned data: only the network, the clean split and the reversed trigger.
//
// What follows from it (nc-mitigation.ts, prune-unlearn.ts, auto-select.ts): unlearning stamps a position-free
// label's trigger at random positions (rolled as here), and auto's attack score for that label is the higher of
// the trigger's success at its found position and at random positions, so that a repair that removed the
// trigger at one position only is not scored clean.
import { triggerHits } from "../eval/evaluate.js";
import { predictLabels, type BatchSource } from "../model/forward.js";
import type { Model } from "../model/model.js";
import { mulberry32 } from "../util/random.js";
import { stampTrigger } from "./neural-cleanse.js";
import type { ReversedTrigger } from "./nc-mitigation.js";

/** Success at random positions at least this share of the success at the found position: the label is position-free. */
export const POSITION_FREE_RATIO = 0.25;

/** A roll moves the trigger off itself when at most this share of the mask's mass lands on the mask's own place. */
export const MAX_SELF_OVERLAP = 0.1;

/** The trigger moved by (dy, dx) pixels (uncovered pixels get mask 0) with its mask scaled by `strength`. */
export function shiftedTrigger(t: ReversedTrigger, shape: readonly [number, number, number], dy: number, dx: number, strength = 1): ReversedTrigger {
  const [c, h, w] = shape;
  const mask = new Float32Array(h * w);
  const pattern = new Float32Array(c * h * w);
  for (let y = 0; y < h; y++) {
    const sy = y - dy;
    if (sy < 0 || sy >= h) continue;
    for (let x = 0; x < w; x++) {
      const sx = x - dx;
      if (sx < 0 || sx >= w) continue;
      mask[y * w + x] = t.mask[sy * w + sx] * strength;
      for (let ch = 0; ch < c; ch++) pattern[(ch * h + y) * w + x] = t.pattern[(ch * h + sy) * w + sx];
    }
  }
  return { label: t.label, mask, pattern };
}

/** The trigger rolled cyclically by (dy, dx) pixels: every mask value moves, those leaving one side enter the other. */
export function rolledTrigger(t: ReversedTrigger, shape: readonly [number, number, number], dy: number, dx: number): ReversedTrigger {
  const [c, h, w] = shape;
  const mask = new Float32Array(h * w);
  const pattern = new Float32Array(c * h * w);
  for (let y = 0; y < h; y++) {
    const ty = (((y + dy) % h) + h) % h;
    for (let x = 0; x < w; x++) {
      const tx = (((x + dx) % w) + w) % w;
      mask[ty * w + tx] = t.mask[y * w + x];
      for (let ch = 0; ch < c; ch++) pattern[(ch * h + ty) * w + tx] = t.pattern[(ch * h + y) * w + x];
    }
  }
  return { label: t.label, mask, pattern };
}

/**
 * The rolls that move the trigger off itself: those where at most `MAX_SELF_OVERLAP` of the mask's mass lands on
 * the mask's own place (Σ min(m, rolled m) / Σ m). Empty for a mask spread over the whole image (a blend or a
 * warp: every roll lands on itself), which therefore has no position to leave.
 */
export function offRolls(mask: Float32Array, h: number, w: number): [number, number][] {
  let total = 0;
  for (const v of mask) total += v;
  const out: [number, number][] = [];
  if (!(total > 0)) return out;
  for (let dy = 0; dy < h; dy++)
    for (let dx = 0; dx < w; dx++) {
      if (dy === 0 && dx === 0) continue;
      let self = 0;
      for (let y = 0; y < h; y++) {
        const ty = (y + dy) % h;
        for (let x = 0; x < w; x++) {
          const v = mask[y * w + x];
          if (v > 0) self += Math.min(v, mask[ty * w + ((x + dx) % w)]);
        }
      }
      if (self <= MAX_SELF_OVERLAP * total) out.push([dy, dx]);
    }
  return out;
}

/** The trigger at a random position: rolled by one of `rolls` (unchanged when there is none). */
export function randomlyPlaced(t: ReversedTrigger, shape: readonly [number, number, number], rolls: readonly [number, number][], rand: () => number): ReversedTrigger {
  if (rolls.length === 0) return t;
  const [dy, dx] = rolls[Math.floor(rand() * rolls.length)];
  return rolledTrigger(t, shape, dy, dx);
}

/** A view of `data` with image i stamped with the trigger rolled off itself by its own seeded random roll (the same every read). */
export function translatedSource(data: BatchSource, t: ReversedTrigger, seed: number, rolls = offRolls(t.mask, data.shape[1], data.shape[2])): BatchSource {
  const [c] = data.shape;
  const rand = mulberry32(seed ^ 0x7a11);
  const shifts = Array.from({ length: data.size }, (): [number, number] => (rolls.length ? rolls[Math.floor(rand() * rolls.length)] : [0, 0]));
  const per = c * data.shape[1] * data.shape[2];
  return {
    size: data.size,
    shape: data.shape,
    read(start, count) {
      const x = data.read(start, count);
      for (let i = 0; i < count; i++) {
        const [dy, dx] = shifts[start + i];
        const s = rolledTrigger(t, data.shape, dy, dx);
        x.set(stampTrigger(x.subarray(i * per, (i + 1) * per), 1, data.shape, s.mask, s.pattern), i * per);
      }
      return x;
    },
  };
}

/** One label's translation evidence. */
export interface ShiftEvidence {
  label: number;
  /** Success of the reversed trigger at its found position (clean images not of the label). */
  atFound: number;
  /** Success of the same trigger at a random position per image. */
  translated: number;
  /** translated / atFound (0 when atFound is 0 or no roll moves the trigger off itself). */
  ratio: number;
  /** Share of all rolls that move the trigger off itself (0: spread over the whole image, no position). */
  offShare: number;
  /** ratio ≥ POSITION_FREE_RATIO on a trigger some roll moves off itself. */
  positionFree: boolean;
}

function stampedView(data: BatchSource, t: ReversedTrigger): BatchSource {
  return { size: data.size, shape: data.shape, read: (s, n) => stampTrigger(data.read(s, n), n, data.shape, t.mask, t.pattern) };
}

/** Measures every trigger's success at its found position and at random positions on labelled clean `data`. */
export async function shiftEvidence(model: Model, data: BatchSource & { labels?: Int32Array | null }, triggers: readonly ReversedTrigger[], o: { seed?: number; batchSize?: number } = {}): Promise<ShiftEvidence[]> {
  const labels = data.labels;
  if (!labels) throw new Error("shiftEvidence: the data has no labels");
  const out: ShiftEvidence[] = [];
  for (const [k, t] of triggers.entries()) {
    const rate = (pred: Int32Array) => {
      const r = triggerHits(pred, labels, t.label);
      return r.n ? r.hits / r.n : 0;
    };
    const [, h, w] = data.shape;
    const rolls = offRolls(t.mask, h, w);
    const atFound = rate(await predictLabels(model, stampedView(data, t), { batchSize: o.batchSize }));
    const translated = rolls.length ? rate(await predictLabels(model, translatedSource(data, t, (o.seed ?? 0) + 31 * k, rolls), { batchSize: o.batchSize })) : atFound;
    const ratio = rolls.length && atFound > 0 ? translated / atFound : 0;
    out.push({ label: t.label, atFound, translated, ratio, offShare: rolls.length / (h * w), positionFree: rolls.length > 0 && ratio >= POSITION_FREE_RATIO });
  }
  return out;
}

/** The labels the evidence finds position-free (a label with several triggers: if any of them is). */
export function positionFreeLabels(ev: readonly ShiftEvidence[]): number[] {
  return [...new Set(ev.filter((e) => e.positionFree).map((e) => e.label))].sort((a, b) => a - b);
}

/** Where unlearning stamps a flagged label's reversed trigger: at its found position, anywhere, or as the evidence says. */
export const PLACEMENTS = ["auto", "found", "anywhere"] as const;
export type Placement = (typeof PLACEMENTS)[number];

/** A reversed trigger; `rolls`: unlearning stamps it rolled by one of them per image (else where it was found). */
export type PlacedTrigger = ReversedTrigger & { rolls?: [number, number][] };

/** The triggers of `labels` marked to be stamped anywhere off themselves (the others, and those no roll moves off themselves, unchanged). */
export function placeAnywhere(triggers: readonly PlacedTrigger[], labels: readonly number[], shape: readonly [number, number, number]): PlacedTrigger[] {
  return triggers.map((t) => {
    if (t.rolls || !labels.includes(t.label)) return t;
    const rolls = offRolls(t.mask, shape[1], shape[2]);
    return rolls.length ? { ...t, rolls } : t;
  });
}

/**
 * The labels whose triggers unlearning stamps anywhere: none for "found", all for "anywhere", and for "auto" the
 * position-free ones by the network's evidence on labelled clean `data` (see the head of the file).
 */
export async function resolvePlacement(model: Model, data: BatchSource & { labels?: Int32Array | null }, triggers: readonly ReversedTrigger[], placement: Placement, o: { seed?: number; batchSize?: number } = {}): Promise<{ labels: number[]; evidence?: ShiftEvidence[] }> {
  if (placement === "found") return { labels: [] };
  if (placement === "anywhere") return { labels: [...new Set(triggers.map((t) => t.label))].sort((a, b) => a - b) };
  const evidence = await shiftEvidence(model, data, triggers, o);
  return { labels: positionFreeLabels(evidence), evidence };
}
