// Which signals G combines (opt-in: `selectSignals`; by default G keeps every available signal, see below).
// The max-rank combination pays for every signal: with J signals each one's threshold must leave roughly fpr/J
// of clean inputs above it, so a signal that catches nothing only makes the others stricter. The set is chosen
// per model on evidence a user has, never on a poisoned test file:
//   - "clean": images of the repair's part of the clean data (NOT the held-out calibration part, so the final
//     calibration stays an untouched conformal split);
//   - "proxy": repair-part images of other classes stamped with Neural Cleanse's reversed triggers that B
//     sends to the trigger's label (proxy attacks).
// Every subset of the judgeable signals is calibrated on the clean scores to the same rate and scored by the
// share of proxies it flags; the best wins, and a subset with fewer signals wins a tie (within 1.96 binomial
// standard errors of the best). A signal that is computed FROM the reversed triggers cannot be judged on them:
// closeness to the reversed trigger (always ≈ 0 on its own stamp), and B′'s disagreement and confidence when the
// repair was trained on those triggers (unlearning). Those are left out when the selection runs. Without proxies
// (nothing flagged) every available signal is kept.
// Measured on the zoo (npm run bench:g, README): reversed triggers are patch-like whatever the real trigger is,
// so the proxies misjudge signals that answer to the real trigger's kind (they rate STRIP at 4–30% on patch,
// blend and LF models whose real triggers STRIP catches 86–100%). Against every signal, the chosen subset lost up
// to 13 points of detection (WaNet 53.9% → 40.7%, low-rate patch 91.7% → 79.6%) and gained at most 0.25
// (patch 99.20% → 99.45%, at 0.87% instead of 0.73% false alarms). Hence not the default.
import { fail } from "../errors.js";
import type { BatchSource } from "../model/forward.js";
import { memoryDataset, type Dataset } from "../io/dataset.js";
import { calibrate, decide, type Guarantee, type SignalName } from "./g-calibrate.js";
import { stampTrigger } from "./neural-cleanse.js";

export interface ProxyTrigger {
  mask: Float32Array;
  pattern: Float32Array;
  /** The flagged label; absent: any change of B's answer counts as a successful proxy. */
  label?: number;
}

/** Fewest successful proxies for the selection to run (fewer: every signal is kept). */
export const MIN_PROXIES = 20;

/**
 * Proxy attacks: up to `perTrigger` images of `clean` (in order) stamped with each trigger. The caller keeps
 * those B sends to the label (`successful`).
 */
export function proxyImages(clean: BatchSource, triggers: readonly ProxyTrigger[], perTrigger: number): { data: Dataset; trigger: Int32Array } {
  const [c, h, w] = clean.shape;
  const per = c * h * w;
  const n = Math.min(perTrigger, clean.size);
  const x = new Float32Array(triggers.length * n * per);
  const which = new Int32Array(triggers.length * n);
  triggers.forEach((t, i) => {
    x.set(stampTrigger(clean.read(0, n), n, clean.shape, t.mask, t.pattern), i * n * per);
    which.fill(i, i * n, (i + 1) * n);
  });
  return { data: memoryDataset("reversed-trigger proxies", [c, h, w], x, null), trigger: which };
}

/** Rows of the proxy set that are successful attacks on B: B's answer is the trigger's label and was not before. */
export function successfulProxies(proxyPred: Int32Array, trigger: Int32Array, cleanPred: Int32Array, triggers: readonly ProxyTrigger[]): Int32Array {
  const n = cleanPred.length === 0 ? 0 : proxyPred.length / triggers.length;
  const keep: number[] = [];
  for (let r = 0; r < proxyPred.length; r++) {
    const t = triggers[trigger[r]!]!;
    const before = cleanPred[r % n]!;
    if (t.label === undefined ? proxyPred[r] !== before : proxyPred[r] === t.label && before !== t.label) keep.push(r);
  }
  return Int32Array.from(keep);
}

export interface SignalChoice {
  signals: SignalName[];
  /** Why, in one line. */
  reason: string;
  /** Each subset tried: its signals, proxy detection and the clean rate on the selection data. */
  tried: { signals: SignalName[]; proxyDetection: number }[];
  proxies: number;
}

/**
 * Chooses the subset of `judgeable` signals (see the file comment). `clean[j]` and `proxy[j]` are the scores of
 * `names[j]`; the proxies are only the successful ones.
 */
export function chooseSignals(names: readonly SignalName[], clean: Float32Array[], proxy: Float32Array[], judgeable: readonly SignalName[], fpr: number, guarantee?: Guarantee): SignalChoice {
  if (names.length !== clean.length || names.length !== proxy.length) throw new Error("chooseSignals: one score array per signal");
  const cand = names.filter((s) => judgeable.includes(s));
  const np = proxy[0]?.length ?? 0;
  if (cand.length === 0) fail(`G signal selection: none of the signals ${names.join(", ")} can be judged on reversed-trigger proxies`);
  const tried: SignalChoice["tried"] = [];
  for (let bits = 1; bits < 1 << cand.length; bits++) {
    const sub = cand.filter((_, i) => bits & (1 << i));
    const idx = sub.map((s) => names.indexOf(s));
    const cal = calibrate(idx.map((j) => clean[j]!), fpr, sub, guarantee);
    const f = decide(idx.map((j) => proxy[j]!), cal.thresholds);
    tried.push({ signals: sub, proxyDetection: np ? f.reduce((a, v) => a + v, 0) / np : 0 });
  }
  const best = Math.max(...tried.map((t) => t.proxyDetection));
  const se = Math.sqrt(Math.max(best * (1 - best), 1 / np) / np);
  const ties = tried.filter((t) => t.proxyDetection >= best - 1.96 * se);
  ties.sort((a, b) => a.signals.length - b.signals.length || b.proxyDetection - a.proxyDetection);
  const pick = ties[0]!;
  const left = names.filter((s) => !pick.signals.includes(s));
  const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
  return {
    signals: pick.signals,
    tried,
    proxies: np,
    reason: `signals chosen on ${np} reversed-trigger proxies and repair-part clean images: ${pick.signals.join(", ")} flags ${pct(pick.proxyDetection)} (best subset ${pct(best)})${left.length ? `; left out ${left.join(", ")}` : ""}`,
  };
}

/** The signals that can be judged on proxies stamped with the reversed triggers (see the file comment). */
export function judgeableSignals(available: readonly SignalName[], repairUsedTriggers: boolean): SignalName[] {
  return available.filter((s) => s !== "trigger" && !(repairUsedTriggers && (s === "disagreement" || s === "confidence")));
}
