// --labels: which labels a Neural Cleanse scan covers.
import { fail } from "../errors.js";

/** "0,5,7", "0-9" or a mix ("0-3,7"); every label must be a class of the model. */
export function parseLabels(spec: string, numClasses: number, option = "--labels"): number[] {
  const out: number[] = [];
  const int = (s: string): number => {
    const t = s.trim();
    if (!/^\d+$/.test(t)) fail(`${option}: "${s}" is not a label (use e.g. 0,5,7 or 0-9)`);
    const v = Number(t);
    if (v >= numClasses) fail(`${option}: label ${v} is outside the model's ${numClasses} classes (0..${numClasses - 1})`);
    return v;
  };
  for (const part of spec.split(",")) {
    const range = /^\s*(\d+)\s*-\s*(\d+)\s*$/.exec(part);
    if (range) {
      const [lo, hi] = [int(range[1]), int(range[2])];
      if (lo > hi) fail(`${option}: range ${part.trim()} is empty (start above end)`);
      for (let l = lo; l <= hi; l++) out.push(l);
    } else out.push(int(part));
  }
  const seen = new Set<number>();
  for (const l of out) {
    if (seen.has(l)) fail(`${option}: label ${l} is listed twice`);
    seen.add(l);
  }
  return out;
}
