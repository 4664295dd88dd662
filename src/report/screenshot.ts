// Renders a report.html to a full-page PNG in headless Chromium (for the README's picture).
// Usage: node dist/report/screenshot.js REPORT.html OUT.png
import { pathToFileURL } from "node:url";

export const CHROMIUM = "/usr/bin/chromium";
/** Flags for a root, offline, GPU-less headless Chromium. */
export const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

export async function screenshot(html: string, png: string, width = 1200): Promise<void> {
  const { chromium } = await import("playwright-core");
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  try {
    const page = await browser.newPage({ viewport: { width, height: 900 } });
    await page.goto(pathToFileURL(html).href, { waitUntil: "load" });
    await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
    await page.screenshot({ path: png, fullPage: true });
  } finally {
    await browser.close();
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  const [html, png] = process.argv.slice(2);
  if (!html || !png) {
    process.stderr.write("usage: node dist/report/screenshot.js REPORT.html OUT.png\n");
    process.exit(2);
  }
  await screenshot(html, png);
  process.stdout.write(`wrote ${png}\n`);
}
