// Which classes labelled training data covers: training needs two labels at least, and a class without a
// single image is one the trained model never learns to predict.

/** The distinct labels of `y`, ascending. */
export function distinctLabels(y: Int32Array): number[] {
  return [...new Set(y)].sort((a, b) => a - b);
}

/** The classes 0..numClasses-1 that no label of `y` names, ascending. */
export function emptyClasses(y: Int32Array, numClasses: number): number[] {
  const seen = new Uint8Array(numClasses);
  for (const l of y) if (l >= 0 && l < numClasses) seen[l] = 1;
  const out: number[] = [];
  for (let k = 0; k < numClasses; k++) if (!seen[k]) out.push(k);
  return out;
}

/**
 * Ascending labels as runs in the --labels syntax ("2, 5-9, 12"), the first `max` runs only and then how many
 * labels are left out ("… and 40 more"), so that a 1,283-class model's list stays one readable line.
 */
export function labelRuns(labels: readonly number[], max = 8): string {
  const runs: [number, number][] = [];
  for (const l of labels) {
    const last = runs[runs.length - 1];
    if (last && l === last[1] + 1) last[1] = l;
    else runs.push([l, l]);
  }
  const shown = runs.slice(0, max);
  const text = shown.map(([a, b]) => (a === b ? `${a}` : b === a + 1 ? `${a}, ${b}` : `${a}-${b}`)).join(", ");
  const left = runs.slice(max).reduce((n, [a, b]) => n + b - a + 1, 0);
  return left > 0 ? `${text} … and ${left} more` : text;
}
