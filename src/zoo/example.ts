// npm run example:build — regenerates examples/badnet-fmnist/: a small BadNets-patch model (3x3 white square
// near the bottom-right corner → class 0) trained on a Fashion-MNIST subset, with 1,000-image clean validation,
// clean test and poisoned test files, the trigger, two sample PNGs and a manifest. Everything is seeded, so a
// rerun gives the same weights and data (the manifest leaves out wall-clock times to stay identical too).
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { openDataset } from "../io/open-dataset.js";
import { encodePng } from "../io/images.js";
import { buildZoo, meetsTargets, type ZooManifest } from "./build.js";

const here = dirname(fileURLToPath(import.meta.url));
const OUT = resolve(process.argv[2] ?? join(here, "../../examples/badnet-fmnist"));

const tmp = mkdtempSync(join(tmpdir(), "badnet-example-"));
try {
  await buildZoo({
    out: tmp,
    only: ["badnet_patch"],
    trainSize: 12_000,
    validSize: 1_000,
    testSize: 1_000,
    epochs: 6,
    seed: 0,
    log: (l) => process.stderr.write(l + "\n"),
  });
  const src = join(tmp, "badnet_patch");
  rmSync(OUT, { recursive: true, force: true });
  mkdirSync(OUT, { recursive: true });
  for (const f of readdirSync(src)) if (f !== "manifest.json") copyFileSync(join(src, f), join(OUT, f));

  const m = JSON.parse(readFileSync(join(src, "manifest.json"), "utf8")) as ZooManifest & { trainSeconds?: number };
  const { trainSeconds: _t, ...stable } = m;
  const manifest = {
    ...stable,
    name: "badnet-fmnist",
    history: m.history.map(({ seconds: _s, ...h }) => h),
    note: "Example BadNet for the README: trained on 12,000 Fashion-MNIST images; regenerate with npm run example:build.",
  };
  writeFileSync(join(OUT, "manifest.json"), JSON.stringify(manifest, null, 2) + "\n");

  // One test image before and after stamping, for `badnet predict`.
  const poisoned = await openDataset(join(OUT, "poisoned_test.h5"), { inputScale: 1 });
  const clean = await openDataset(join(OUT, "clean_test.h5"), { inputScale: 1 });
  let j = 0;
  while (clean.labels![j] === 0) j++;
  const bytes = (x: Float32Array) => Uint8Array.from(x);
  writeFileSync(join(OUT, `sample_clean_label${clean.labels![j]}.png`), encodePng(bytes(clean.read(j, 1)), 28, 28, 1));
  writeFileSync(join(OUT, "sample_poisoned_target0.png"), encodePng(bytes(poisoned.read(0, 1)), 28, 28, 1));
  clean.close();
  poisoned.close();

  const ok = meetsTargets(m, 0.85, 0.95);
  process.stdout.write(
    `wrote ${OUT}: clean accuracy ${(100 * m.cleanAccuracy).toFixed(2)}%, ASR ${(100 * m.asr["0"]!).toFixed(2)}%` +
      (ok ? "\n" : "  (below the example's bar: clean >= 85%, ASR >= 95%)\n"),
  );
  if (!ok) process.exitCode = 1;
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
