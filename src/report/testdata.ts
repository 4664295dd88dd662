// A realistic synthetic ReportData (shaped like a CSAW-HackML "sunglasses" run on the 1,283-identity face
// network) for the report tests and the docs screenshot. Deterministic: a seeded generator, no I/O.
import { rateWithInterval } from "../defenses/g-calibrate.js";
import { PNG } from "pngjs";
import type { ReportData, ReportNcLabel, ReportPruningDrop, ReportPruningPoint, ReportTrigger } from "./types.js";
import { mulberry32 } from "../util/random.js";

const rng = mulberry32;

function gauss(r: () => number): number {
  return Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r());
}

const W = 47;
const H = 55;
type Rgb = [number, number, number];

function png(pixel: (x: number, y: number) => Rgb): string {
  const img = new PNG({ width: W, height: H });
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      const [r, g, b] = pixel(x, y);
      const i = (y * W + x) * 4;
      img.data[i] = Math.max(0, Math.min(255, Math.round(r)));
      img.data[i + 1] = Math.max(0, Math.min(255, Math.round(g)));
      img.data[i + 2] = Math.max(0, Math.min(255, Math.round(b)));
      img.data[i + 3] = 255;
    }
  }
  return PNG.sync.write(img).toString("base64");
}

/** A cartoon face, varied by seed. */
function face(seed: number): (x: number, y: number) => Rgb {
  const r = rng(seed);
  const skin: Rgb = [180 + 50 * r(), 130 + 50 * r(), 100 + 40 * r()];
  const bg: Rgb = [40 + 60 * r(), 60 + 60 * r(), 90 + 80 * r()];
  return (x, y) => {
    const dx = (x - W / 2) / 17;
    const dy = (y - H / 2 - 2) / 23;
    if (dx * dx + dy * dy > 1) return [bg[0] + y, bg[1] + y, bg[2]];
    const eye = (Math.abs(x - 16) < 3 || Math.abs(x - 31) < 3) && Math.abs(y - 24) < 2;
    const mouth = Math.abs(x - W / 2) < 7 && Math.abs(y - 39) < 1.5;
    if (eye) return [40, 30, 30];
    if (mouth) return [150, 60, 60];
    const shade = 1 - 0.25 * (dx * dx + dy * dy);
    return [skin[0] * shade, skin[1] * shade, skin[2] * shade];
  };
}

/** A reversed trigger: mask in [0,1] and pattern colours. Label 0 gets a sunglasses band. */
function trigger(label: number, sunglasses: boolean): { mask: (x: number, y: number) => number; pattern: (x: number, y: number) => Rgb } {
  const r = rng(1000 + label);
  const noise = Array.from({ length: W * H }, () => r());
  const cx = 5 + Math.floor(r() * 35);
  const cy = 5 + Math.floor(r() * 45);
  const mask = sunglasses
    ? (x: number, y: number) => (Math.abs(y - 24) < 4 && x > 9 && x < 38 ? 0.95 : noise[y * W + x]! < 0.02 ? 0.4 : 0)
    : (x: number, y: number) => Math.max(0, 1 - Math.hypot(x - cx, y - cy) / 6) * (0.5 + 0.5 * noise[y * W + x]!);
  const pattern = (x: number, y: number): Rgb =>
    sunglasses && Math.abs(y - 24) < 4 ? [15, 15, 20] : [255 * noise[y * W + x]!, 255 * noise[(x * 7 + y) % (W * H)]!, 128];
  return { mask, pattern };
}

function triggerImages(label: number, sunglasses: boolean, faceSeed: number): ReportTrigger {
  const t = trigger(label, sunglasses);
  const clean = face(faceSeed);
  return {
    label,
    maskPng: png((x, y) => {
      const m = 255 * t.mask(x, y);
      return [m, m, m];
    }),
    patternPng: png(t.pattern),
    stampedPng: png((x, y) => {
      const m = t.mask(x, y);
      const c = clean(x, y);
      const p = t.pattern(x, y);
      return [c[0] * (1 - m) + p[0] * m, c[1] * (1 - m) + p[1] * m, c[2] * (1 - m) + p[2] * m];
    }),
    cleanPng: png(clean),
  };
}

/** Squashes the lower tail below about −1.8σ so no clean label looks like an outlier. */
function softFloor(z: number): number {
  return z >= 0 ? Math.min(z, 3) : -1.8 * Math.tanh(-z / 1.8);
}

function median(v: number[]): number {
  const s = [...v].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

export interface SyntheticOptions {
  /** Number of labels (default 1,283 as in CSAW-HackML). */
  numClasses?: number;
  /** Backdoor target labels to plant (default [0]). */
  targets?: number[];
  seed?: number;
}

export function syntheticReport(opts: SyntheticOptions = {}): ReportData {
  const K = opts.numClasses ?? 1283;
  const targets = opts.targets ?? [0];
  const r = rng(opts.seed ?? 7);

  // Neural Cleanse: clean labels need a large trigger, planted targets a tiny one.
  const norms = Array.from({ length: K }, (_, label) =>
    targets.includes(label) ? 8 + 4 * r() : 85 * Math.exp(0.18 * softFloor(gauss(r))),
  );
  const med = median(norms);
  const mad = median(norms.map((n) => Math.abs(n - med)));
  const labels: ReportNcLabel[] = norms.map((l1Norm, label) => {
    const anomalyIndex = Math.abs(l1Norm - med) / (1.4826 * mad);
    return {
      label,
      l1Norm,
      anomalyIndex,
      attackSuccess: targets.includes(label) ? 0.995 + 0.005 * r() : 0.85 + 0.14 * r(),
      flagged: l1Norm < med && anomalyIndex > 2,
    };
  });
  const flagged = labels.filter((l) => l.flagged).map((l) => l.label);
  const smallest = [...labels].sort((a, b) => a.l1Norm - b.l1Norm).slice(0, flagged.length + 2);
  const triggers = smallest.map((l, i) => triggerImages(l.label, targets.includes(l.label), 17 + i));

  // Pruning conv_3 (60 channels): accuracy holds, then falls; the backdoor dies a little earlier.
  const C = 60;
  const curve: ReportPruningPoint[] = Array.from({ length: C + 1 }, (_, k) => {
    const f = k / C;
    return {
      fractionPruned: f,
      channelsPruned: k,
      cleanAccuracy: 0.978 - 0.9 / (1 + Math.exp(-(f - 0.93) * 16)) + 0.003 * gauss(r) * f,
      asr: 1 / (1 + Math.exp((f - 0.72) * 28)),
    };
  });
  const drops: ReportPruningDrop[] = [];
  for (const drop of [0.02, 0.04, 0.1]) {
    const p = curve.find((c) => curve[0]!.cleanAccuracy - c.cleanAccuracy >= drop);
    if (p) drops.push({ drop, channelsPruned: p.channelsPruned, cleanAccuracy: p.cleanAccuracy, asr: p.asr });
  }

  // STRIP: superimposing keeps a poisoned input's prediction, so its entropy is low.
  const cleanEntropy = Array.from({ length: 400 }, () => Math.max(0.02, 0.9 + 0.22 * gauss(r)));
  const poisonedEntropy = Array.from({ length: 400 }, () => Math.max(0, 0.08 + 0.06 * gauss(r)));
  const threshold = [...cleanEntropy].sort((a, b) => a - b)[Math.floor(0.01 * cleanEntropy.length)]!;
  const below = (v: number[]) => v.filter((x) => x < threshold).length / v.length;

  const layer = (name: string, className: string, outputShape: (number | null)[], params: number) => ({
    name,
    className,
    outputShape: [null, ...outputShape],
    params,
  });
  const layers = [
    layer("input", "InputLayer", [55, 47, 3], 0),
    layer("conv_1", "Conv2D", [52, 44, 20], 980),
    layer("pool_1", "MaxPooling2D", [26, 22, 20], 0),
    layer("conv_2", "Conv2D", [24, 20, 40], 7240),
    layer("pool_2", "MaxPooling2D", [12, 10, 40], 0),
    layer("conv_3", "Conv2D", [10, 8, 60], 21660),
    layer("pool_3", "MaxPooling2D", [5, 4, 60], 0),
    layer("conv_4", "Conv2D", [4, 3, 80], 19280),
    layer("flatten_1", "Flatten", [1200], 0),
    layer("flatten_2", "Flatten", [960], 0),
    layer("fc_1", "Dense", [160], 192160),
    layer("fc_2", "Dense", [160], 153760),
    layer("add_1", "Add", [160], 0),
    layer("activation_1", "Activation", [160], 0),
    layer("output", "Dense", [K], 161 * K),
  ];

  const nClean = 10 * K;
  return {
    title: "BadNet audit: sunglasses_bd_net",
    createdAt: "2024-05-01T12:34:56.000Z",
    command: "badnet repair models/sunglasses_bd_net.h5 --clean data/valid.h5 --poisoned data/sunglasses_poisoned.h5 --layer conv_3",
    model: {
      name: "sunglasses_bd_net",
      source: "models/sunglasses_bd_net.h5",
      inputShape: [55, 47, 3],
      numClasses: K,
      layers,
      totalParams: layers.reduce((s, l) => s + l.params, 0),
    },
    evaluation: {
      before: { cleanAccuracy: 0.9778, asr: 0.9999, nClean, nPoisoned: nClean },
      after: { cleanAccuracy: 0.9214, asr: 0.0071, nClean, nPoisoned: nClean },
    },
    pruning: { layer: "conv_3", order: "increasing mean activation on clean inputs", curve, drops },
    neuralCleanse: { labels, flagged, medianNorm: med, mad, triggers },
    strip: {
      cleanEntropy,
      poisonedEntropy,
      threshold,
      frr: below(cleanEntropy),
      frrTarget: 0.01,
      detectionRate: below(poisonedEntropy),
    },
    g: {
      numClasses: K,
      clean: { n: nClean, correct: Math.round(0.9214 * nClean), flagged: Math.round(0.031 * nClean) },
      poisoned: { n: nClean, flagged: Math.round(0.9902 * nClean), attackSuccess: Math.round(0.0071 * nClean) },
    },
    mitigation: {
      method: "nc-prune",
      flagged,
      triggerSource: "neural-cleanse detection",
      layer: "activation_1",
      neurons: 160,
      neuronsPruned: 14,
      stop: "threshold",
      settings: { threshold: 0.05, maxDrop: 0.1, step: 0.01 },
    },
    gCalibration: {
      fprTarget: 0.01,
      guarantee: { confidence: 0.95 },
      signals: ["disagreement", "strip", "trigger", "confidence"],
      thresholds: [2.31, -0.412, null, 3.07],
      heldOut: { n: 2000, flagged: 11 },
      cleanTest: rateWithInterval(Math.round(0.007 * nClean), nClean),
      poisoned: rateWithInterval(Math.round(0.985 * nClean), nClean),
    },
    timings: { load: 0.42, evaluate: 3.8, "neural-cleanse": 812.5, prune: 41.2, strip: 19.7, "write report": 0.09 },
  };
}
