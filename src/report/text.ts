// One-line, human-readable forms of report sections, shared by the defenses' summaries and the CLI.
import type { ReportEvalResult, ReportG } from "./types.js";

/** 0.1234 → "12.34%" */
export const pct = (x: number): string => `${(100 * x).toFixed(2)}%`;

/** "ASR 5.00%", or with several targets "ASR 5.00% (→ 1: 9.00%, → 5: 1.00%)". */
export function asrText(r: Pick<ReportEvalResult, "asr" | "asrByTarget">): string {
  if (r.asr === undefined) return "";
  const by = r.asrByTarget?.length ? ` (${r.asrByTarget.map((t) => `→ ${t.target}: ${pct(t.asr)}`).join(", ")})` : "";
  return `ASR ${pct(r.asr)}${by}`;
}

/** "accuracy 12.34%, ASR 5.00%" */
export function evalLine(r: ReportEvalResult): string {
  return `accuracy ${pct(r.cleanAccuracy)}${r.asr !== undefined ? `, ${asrText(r)}` : ""}`;
}

/** "accuracy 98.10%, reversed trigger 2.00%, ASR 1.50%": with the reversed trigger's success when measured. */
export function triggerEvalLine(r: ReportEvalResult): string {
  return [`accuracy ${pct(r.cleanAccuracy)}`, r.triggerSuccess !== undefined ? `reversed trigger ${pct(r.triggerSuccess)}` : "", asrText(r)].filter(Boolean).join(", ");
}

/** G's outcome: correct and falsely flagged clean inputs; detected and still-successful poisoned ones. */
export function gLine(g: ReportG): string {
  const parts = [`clean: ${pct(g.clean.correct / g.clean.n)} correct, ${pct(g.clean.flagged / g.clean.n)} flagged (FPR)`];
  if (g.poisoned) parts.push(`poisoned: ${pct(g.poisoned.flagged / g.poisoned.n)} detected, ${pct(g.poisoned.attackSuccess / g.poisoned.n)} residual ASR`);
  return parts.join("; ");
}

/** pct, or "—" for a figure that was not measured. */
export const pctOrDash = (x: number | undefined): string => (x === undefined || Number.isNaN(x) ? "—" : pct(x));
