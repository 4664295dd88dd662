// Opens rendered reports in a real headless Chromium (Debian's /usr/bin/chromium) from file:// and checks
// that they work offline: no errors, every chart actually drew, every image decoded, and saves a screenshot
// in the temp dir. Skipped (not failed) where Chromium is not installed.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { writeReport } from "./html.js";
import { CHROMIUM as CHROMIUM_PATH, CHROMIUM_ARGS } from "./screenshot.js";
import { syntheticReport } from "./testdata.js";
import { chromiumSkip } from "../test/fixtures.js";
import type { ReportData } from "./types.js";

const CHROMIUM = CHROMIUM_PATH;
const ARGS = CHROMIUM_ARGS;

interface CanvasInfo {
  id: string;
  width: number;
  height: number;
  hasChart: boolean;
  painted: number;
  red: number;
}

interface PageCheck {
  canvases: CanvasInfo[];
  images: { alt: string; complete: boolean; naturalWidth: number }[];
  sections: string[];
}

async function openReport(
  browser: import("playwright-core").Browser,
  file: string,
  screenshot?: string,
): Promise<PageCheck> {
  const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
  const errors: string[] = [];
  const requests: string[] = [];
  page.on("console", (m) => {
    if (m.type() === "error") errors.push(`console.error: ${m.text()}`);
  });
  page.on("pageerror", (err) => errors.push(`page error: ${err.message}`));
  page.on("request", (r) => requests.push(r.url()));
  try {
    await page.goto(pathToFileURL(file).href, { waitUntil: "load" });
    // Two animation frames: charts are drawn synchronously (animation off) but let layout settle.
    await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
    const check = await page.evaluate((): PageCheck => {
      const g = globalThis as unknown as { Chart?: { getChart(c: HTMLCanvasElement): unknown } };
      const canvases = Array.from(document.querySelectorAll("canvas")).map((c) => {
        const ctx = c.getContext("2d")!;
        const px = ctx.getImageData(0, 0, c.width, c.height).data;
        let painted = 0;
        let red = 0;
        for (let i = 0; i < px.length; i += 4) {
          if (px[i + 3]! === 0) continue;
          painted++;
          // The highlight colour of flagged labels / ASR (#dc2626), allowing for anti-aliasing.
          if (px[i]! > 180 && px[i + 1]! < 90 && px[i + 2]! < 90) red++;
        }
        return { id: c.id, width: c.width, height: c.height, hasChart: !!g.Chart?.getChart(c), painted, red };
      });
      const images = Array.from(document.images).map((i) => ({
        alt: i.alt,
        complete: i.complete,
        naturalWidth: i.naturalWidth,
      }));
      const sections = Array.from(document.querySelectorAll("section[id]")).map((s) => s.id);
      return { canvases, images, sections };
    });
    if (screenshot) await page.screenshot({ path: screenshot, fullPage: true });
    assert.deepEqual(errors, [], "no console errors or page errors");
    const external = requests.filter((u) => !u.startsWith("file:") && !u.startsWith("data:"));
    assert.deepEqual(external, [], "the report loads nothing from the network");
    return check;
  } finally {
    await page.close();
  }
}

function assertChartsDrawn(check: PageCheck, expected: string[]): void {
  assert.deepEqual(check.canvases.map((c) => c.id).sort(), [...expected].sort());
  for (const c of check.canvases) {
    assert.ok(c.hasChart, `${c.id} has a Chart.js instance`);
    assert.ok(c.width > 100 && c.height > 100, `${c.id} has a real size (${c.width}x${c.height})`);
    // Axes, grid and data cover far more than 2% of a drawn chart; a blank canvas has 0 painted pixels.
    assert.ok(c.painted > 0.02 * c.width * c.height, `${c.id} is not blank (${c.painted} painted pixels)`);
  }
}

function assertImagesDecoded(check: PageCheck, expected: number): void {
  assert.equal(check.images.length, expected);
  for (const img of check.images) {
    assert.ok(img.complete && img.naturalWidth > 0, `image "${img.alt}" decoded`);
  }
}

const CHARTS = ["chart-pruning", "chart-nc-norm", "chart-nc-anomaly", "chart-strip"];

test("reports open offline in Chromium with every chart drawn and every image decoded", async (t) => {
  const skip = chromiumSkip();
  if (skip) {
    t.skip(skip);
    return;
  }
  const { chromium } = await import("playwright-core");
  const dir = await mkdtemp(join(tmpdir(), "badnet-report-"));
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS });
  try {
    await t.test("1,283-label run (CSAW-HackML shape)", async () => {
      const data = syntheticReport();
      const file = join(dir, "report.html");
      const shot = join(dir, "report.png");
      await writeReport(file, data);
      const check = await openReport(browser, file, shot);
      assertChartsDrawn(check, CHARTS);
      assertImagesDecoded(check, 4 * data.neuralCleanse!.triggers.length);
      assert.deepEqual(check.sections, ["model", "evaluation", "pruning", "neural-cleanse", "strip", "mitigation", "g", "g-calibration", "timings"]);
      // The flagged label is one bar among 1,283: its highlight must still reach the screen.
      const norm = check.canvases.find((c) => c.id === "chart-nc-norm")!;
      assert.ok(norm.red > 20, `flagged label visible in the norm chart (${norm.red} red pixels)`);
      t.diagnostic(`screenshot: ${shot}`);
    });

    await t.test("10-label run with two planted targets, no poisoned data and no repair", async () => {
      const full = syntheticReport({ numClasses: 10, targets: [3, 7], seed: 3 });
      const data: ReportData = {
        title: full.title,
        model: full.model,
        evaluation: { before: { cleanAccuracy: 0.91, nClean: 1000 } },
        neuralCleanse: full.neuralCleanse,
        strip: { ...full.strip!, poisonedEntropy: undefined, detectionRate: undefined },
      };
      const file = join(dir, "small.html");
      await writeReport(file, data);
      const check = await openReport(browser, file);
      assertChartsDrawn(check, ["chart-nc-norm", "chart-nc-anomaly", "chart-strip"]);
      assertImagesDecoded(check, 4 * data.neuralCleanse!.triggers.length);
      assert.deepEqual(check.sections, ["model", "evaluation", "neural-cleanse", "strip"]);
    });

    await t.test("a report without charts loads no script and still opens cleanly", async () => {
      const file = join(dir, "bare.html");
      await writeReport(file, { title: "nothing yet", timings: { load: 0.1 } });
      const check = await openReport(browser, file);
      assert.equal(check.canvases.length, 0);
      assert.deepEqual(check.sections, ["timings"]);
    });
  } finally {
    await browser.close();
    // Keep the screenshot in the temp dir (its path is printed) but not the reports.
    for (const f of ["report.html", "small.html", "bare.html"]) await rm(join(dir, f), { force: true });
  }
});
