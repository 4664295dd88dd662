// Loads the Chart.js UMD bundle from node_modules so it can be inlined: reports must open offline,
// from a file:// URL, years later, so nothing may be fetched from a CDN.
import { readFileSync, existsSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";

let cached: string | undefined;

/** The minified Chart.js UMD build (defines the global `Chart`), safe to place inside a <script> element. */
export function chartJsSource(): string {
  if (cached !== undefined) return cached;
  const require = createRequire(import.meta.url);
  // The package's "exports" map hides dist/chart.umd.min.js, so locate it next to the CommonJS entry point.
  const entry = require.resolve("chart.js");
  const umd = join(dirname(entry), "chart.umd.min.js");
  if (!existsSync(umd)) {
    throw new Error(`chart.js UMD bundle not found at ${umd} (is the chart.js dependency installed?)`);
  }
  // "</script" would end the inline element early; "<\/script" means the same inside JS strings/regexes.
  cached = readFileSync(umd, "utf8").replace(/<\/(script)/gi, "<\\/$1");
  return cached;
}
