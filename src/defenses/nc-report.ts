// Pictures and the report section of a Neural Cleanse result: reversed triggers as PNGs (mask, pattern,
// pattern·mask, a stamped clean example) and the ReportNeuralCleanse object the HTML report and result.json use.
import { fail } from "../errors.js";
import { encodePng, isPng } from "../io/images.js";
import { readPngText } from "../io/png-text.js";
import type { ReportNeuralCleanse, ReportTrigger } from "../report/types.js";
import { stampTrigger, type NeuralCleanseResult, type ReversedTrigger } from "./neural-cleanse.js";

export interface TriggerPngs {
  /** Mask, grey (white = 1). */
  mask: Buffer;
  /** Pattern in full colour. */
  pattern: Buffer;
  /** pattern·mask: what the trigger adds. */
  trigger: Buffer;
  /** The example image stamped with the trigger. */
  stamped: Buffer;
  /** The example image as is. */
  clean: Buffer;
}

export type TriggerPngRole = keyof TriggerPngs;

// Each picture says in tEXt chunks which one it is and the file name detect gives it, so that a mask and a
// pattern given the wrong way round (--mask P --pattern M) are caught instead of used.
const ROLE_KEY = "badnet-trigger";
const FILE_KEY = "badnet-trigger-file";

const ROLE_WORDS: Record<TriggerPngRole, string> = {
  mask: "a reversed trigger's mask",
  pattern: "a reversed trigger's pattern",
  trigger: "a reversed trigger's pattern·mask picture",
  stamped: "a clean example stamped with a reversed trigger",
  clean: "the clean example of a detection",
};

/** The file name `badnet detect --out` gives a picture of `t` (blend-family ones are named apart). */
export function triggerPngName(t: Pick<ReversedTrigger, "label" | "family">, role: TriggerPngRole): string {
  return role === "clean" ? "clean_example.png" : `label_${t.label}${t.family === "blend" ? "_blend" : ""}_${role}.png`;
}

/** Which picture of a reversed trigger a PNG says it is, and the name detect wrote it as; undefined for a PNG without our chunk (another program's, or older). */
export function triggerPngRole(png: Uint8Array): { role: string; file?: string } | undefined {
  if (!isPng(png)) return undefined;
  const text = readPngText(png);
  const role = text.get(ROLE_KEY);
  return role === undefined ? undefined : { role, file: text.get(FILE_KEY) };
}

/**
 * UserError when `png` says it is another picture than the `expected` one. `subject` names it in the message
 * (e.g. "--mask m.png"), `swapped` is the question asked when mask and pattern look exchanged.
 */
export function checkTriggerPngRole(png: Uint8Array, expected: "mask" | "pattern", subject: string, swapped: string): void {
  const r = triggerPngRole(png);
  if (!r || r.role === expected) return;
  const what = r.role in ROLE_WORDS ? ROLE_WORDS[r.role as TriggerPngRole] : `an image badnet marked as "${r.role}"`;
  const other = expected === "mask" ? "pattern" : "mask";
  fail(`${subject} is ${what} (written by badnet detect${r.file ? ` as ${r.file}` : ""}), not a ${expected}${r.role === other ? `: ${swapped}` : ""}`);
}

/** The label and family of the trigger a PNG was drawn from, read from the file name detect gave it; undefined without our chunk. */
export function triggerPngOrigin(png: Uint8Array): { label: number; family: "mask" | "blend"; file: string } | undefined {
  const file = triggerPngRole(png)?.file;
  const m = file === undefined ? null : /^label_(\d+)(_blend)?_[a-z]+\.png$/.exec(file);
  return m ? { label: Number(m[1]), family: m[2] ? "blend" : "mask", file: file! } : undefined;
}

/**
 * UserError when the mask and the pattern say they were drawn from different reversed triggers (another label
 * or family), or from another label than `label`, the one they are used for. PNGs without our chunk pass.
 * `subjects` name the two images, `labelSource` what gave `label` ("--target 5").
 */
export function checkTriggerPngPair(maskPng: Uint8Array, patternPng: Uint8Array, label: number, subjects: { mask: string; pattern: string }, labelSource: string): void {
  const m = triggerPngOrigin(maskPng);
  const p = triggerPngOrigin(patternPng);
  const name = (o: { label: number; family: string }) => `label ${o.label}'s ${o.family === "blend" ? "blend-family " : ""}trigger`;
  if (m && p && (m.label !== p.label || m.family !== p.family))
    fail(`${subjects.mask} is from ${name(m)} (${m.file}) but ${subjects.pattern} from ${name(p)} (${p.file}): give the mask and the pattern of one trigger`);
  for (const [o, subject] of [[m, subjects.mask], [p, subjects.pattern]] as const) {
    if (o && o.label !== label) fail(`${subject} is from ${name(o)} (${o.file}), not label ${label} as ${labelSource} says`);
  }
}

/** CHW floats (already in 0..255) → HWC bytes; 1 or 3 channels as they are, other counts as their mean (grey). */
function toPng(chw: Float32Array, c: number, h: number, w: number, text: Record<string, string>): Buffer {
  const hw = h * w;
  const outC = c === 3 ? 3 : 1;
  const bytes = new Uint8Array(hw * outC);
  const clamp = (v: number) => Math.max(0, Math.min(255, Math.round(v)));
  for (let p = 0; p < hw; p++) {
    if (outC === 3) for (let ch = 0; ch < 3; ch++) bytes[p * 3 + ch] = clamp(chw[ch * hw + p]);
    else {
      let sum = 0;
      for (let ch = 0; ch < c; ch++) sum += chw[ch * hw + p];
      bytes[p] = clamp(sum / c);
    }
  }
  return encodePng(bytes, w, h, outC, text);
}

/** PNGs of a reversed trigger and of `example` (a scaled clean image [C·H·W]) with and without it. */
export function triggerPngs(t: ReversedTrigger, example: Float32Array, shape: readonly [number, number, number], inputScale: number): TriggerPngs {
  const [c, h, w] = shape;
  const hw = h * w;
  const scaled = (v: Float32Array) => Float32Array.from(v, (x) => x * inputScale);
  const masked = Float32Array.from(t.pattern, (v, i) => v * t.mask[i % hw]);
  const tag = (role: TriggerPngRole) => ({ [ROLE_KEY]: role, [FILE_KEY]: triggerPngName(t, role) });
  return {
    mask: toPng(Float32Array.from(t.mask, (v) => v * 255), 1, h, w, tag("mask")),
    pattern: toPng(scaled(t.pattern), c, h, w, tag("pattern")),
    trigger: toPng(scaled(masked), c, h, w, tag("trigger")),
    stamped: toPng(scaled(stampTrigger(example, 1, shape, t.mask, t.pattern)), c, h, w, tag("stamped")),
    clean: toPng(scaled(example), c, h, w, tag("clean")),
  };
}

/**
 * The report's neuralCleanse section as `detect` saves it: the ReportNeuralCleanse fields plus per-label
 * measurements, time per phase, family statistics, images, image passes, settings (what `detect --merge` reads back)
 * and the head-shift evidence's outcome.
 */
export function ncSection(r: NeuralCleanseResult): ReportNeuralCleanse {
  return {
    ...neuralCleanseReport(r),
    seconds: r.seconds,
    phaseSeconds: r.phaseSeconds,
    families: r.families,
    images: r.images,
    imagePasses: r.imagePasses,
    settings: r.settings,
    ...(r.headShift ? { headShift: r.headShift } : {}),
  } as ReportNeuralCleanse;
}

/** The result as the report's neuralCleanse section (PNGs base64-encoded). */
export function neuralCleanseReport(r: NeuralCleanseResult): ReportNeuralCleanse {
  const triggers: ReportTrigger[] = r.triggers.map((t) => {
    const png = triggerPngs(t, r.example, r.shape, r.inputScale);
    return {
      label: t.label,
      family: t.family ?? "mask",
      maskPng: png.mask.toString("base64"),
      patternPng: png.pattern.toString("base64"),
      stampedPng: png.stamped.toString("base64"),
      cleanPng: png.clean.toString("base64"),
    };
  });
  const labels = r.labels.map((l) => ({
    ...l,
    ...(l.blend ? { blendAlpha: l.blend.alpha, blendAnomalyIndex: l.blend.anomalyIndex } : {}),
  }));
  return { labels, flagged: [...r.flagged], medianNorm: r.medianNorm, mad: r.mad, scale: r.settings.scale, triggers };
}
