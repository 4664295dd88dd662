// `badnet repair --defense X` and the bench's row for X run the same pipeline, so they give the same numbers
// for the same model, data and seed (the tiny backdoor task, read back from the files the CLI reads).
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { parse } from "../cli/command.js";
import { repairCommand } from "../cli/commands/repair.js";
import { findDefense } from "../defenses/registry.js";
import { evaluate } from "../eval/evaluate.js";
import { openDataset } from "../io/open-dataset.js";
import { writeKerasModel } from "../io/keras-save.js";
import { loadModel } from "../io/load-model.js";
import { predictLabels } from "../model/forward.js";
import type { ReportData } from "../report/types.js";
import { tinyBackdoorData, trainTinyBackdoor } from "../test/tiny-backdoor.js";
import { defenseRow } from "./defense-row.js";

let dir: string;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "defense-row-test-"));
  const model = await trainTinyBackdoor();
  await tinyBackdoorData(dir);
  await writeKerasModel(join(dir, "bd.h5"), model.spec!);
});
after(() => rmSync(dir, { recursive: true, force: true }));

for (const name of ["prune", "fine-prune", "strip"]) {
  test(`repair --defense ${name} and the bench's ${name} row agree`, async () => {
    const files = { model: join(dir, "bd.h5"), clean: join(dir, "valid.h5"), poisoned: join(dir, "poisoned.h5") };
    const out = join(dir, `out-${name}`);
    // --fpr off: the bench row runs the defense on all of --clean with its own G, as repair did before --fpr.
    const argv = ["--model", files.model, "--input-scale", "255", "--clean", files.clean, "--poisoned", files.poisoned, "--defense", name, "--skip-detect", "--seed", "0", "--fpr", "off", "--out", out, "--quiet"];
    const cli = (await repairCommand.run(parse(repairCommand, argv))).json as ReportData;

    const model = await loadModel(files.model);
    const clean = await openDataset(files.clean, { inputScale: 255 });
    const poisoned = await openDataset(files.poisoned, { inputScale: 255 });
    try {
      const sets = [{ target: 0, file: files.poisoned, ds: poisoned, bPred: await predictLabels(model, poisoned) }];
      const cleanBefore = (await evaluate(model, clean)).clean.accuracy;
      const row = await defenseRow(model, { clean, poisoned }, findDefense(name)!, { inputScale: 255, sets, cleanBefore });
      assert.equal(row.status, "ok", row.reason);
      assert.deepEqual(row.warnings, []);
      assert.deepEqual(row.g, cli.g);
      // The one set's counts are the library's, G's attack success included.
      assert.equal(row.perTarget?.length, 1);
      assert.equal(row.perTarget![0]!.gAttack, cli.g!.poisoned!.attackSuccess);
      assert.equal(row.perTarget![0]!.gFlagged, cli.g!.poisoned!.flagged);
      if (cli.evaluation) {
        assert.equal(row.cleanBefore, cli.evaluation.before.cleanAccuracy);
        assert.equal(row.cleanAfter, cli.evaluation.after!.cleanAccuracy);
        assert.equal(row.asrBefore, cli.evaluation.before.asr);
        assert.equal(row.asrAfter, cli.evaluation.after!.asr);
      } else {
        assert.equal(row.cleanAfter, cli.g!.clean.correct / cli.g!.clean.n);
        assert.equal(row.gDetection, cli.strip!.detectionRate);
      }
    } finally {
      clean.close();
      poisoned.close();
    }
  });
}
