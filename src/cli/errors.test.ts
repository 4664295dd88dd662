// Bad input through the real CLI: every case must exit 2 with exactly one `badnet: error: ...` line on stderr
// that names the offending file, layer, label, shape or option, and print nothing on stdout.
import assert from "node:assert/strict";
import { mkdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { writeCsawH5 } from "../io/csaw-h5.js";
import { fixture } from "../test/fixtures.js";
import { writeTriggerPngs } from "./nc-output.js";
import { inPool, listedCommands, makeBadFiles, makeFaceData, runCli, tempDir, type BadFiles, type FaceData, type CliResult } from "../test/make-bad-files.js";

const dir = tempDir("cli-errors");
let bad: BadFiles;
let faces: FaceData;

before(async () => {
  bad = await makeBadFiles(dir);
  faces = await makeFaceData(dir);
  // A reversed trigger for the 55x47 RGB faces, its pictures as badnet detect writes them.
  mkdirSync(join(dir, "detect"));
  const t = { label: 3, l1Norm: 1, mask: new Float32Array(55 * 47).fill(0.5), pattern: new Float32Array(3 * 55 * 47).fill(0.5) };
  writeTriggerPngs(join(dir, "detect"), { triggers: [t], example: new Float32Array(3 * 55 * 47), shape: [3, 55, 47], inputScale: 1 });
  await writeCsawH5(join(dir, "one_label.h5"), new Uint8Array(2 * 28 * 28).fill(9), [2, 1, 28, 28], Int32Array.of(4, 4));
});
after(() => rmSync(dir, { recursive: true, force: true }));

const KERAS24 = fixture("thirdparty/keras24_functional_deepid.h5");
const SUNGLASSES = fixture("csaw2020/models/sunglasses_bd_weights.h5");
const FACE = fixture("csaw2020/images/clean_0_label43.png");

interface Case {
  name: string;
  /** Built lazily: the bad files exist only once `before` has run. */
  args: () => string[];
  /** Each must appear in the error line: the thing at fault, and what is wrong with it. */
  names: () => (string | RegExp)[];
  /** What stdout must be (empty unless the command prints something useful before failing). */
  stdout?: RegExp;
}

const cases: Case[] = [
  {
    name: "missing model file",
    args: () => ["eval", "--model", join(dir, "missing.h5"), "--input-scale", "255", "--clean", faces.clean],
    names: () => [join(dir, "missing.h5"), /no such file/],
  },
  {
    name: "model path that is a directory",
    args: () => ["inspect", "--model", bad.dirModel],
    names: () => [bad.dirModel, /directory/],
  },
  {
    name: "non-HDF5 file with an .h5 extension",
    args: () => ["inspect", "--model", bad.notHdf5],
    names: () => [bad.notHdf5, /not an HDF5 file/],
  },
  {
    name: "truncated HDF5 model (first 4 KB of a real file)",
    args: () => ["predict", "--model", bad.truncated, "--input-scale", "255", FACE],
    names: () => [bad.truncated, /truncated/],
  },
  {
    name: "HDF5 model with damaged metadata (full length, noise inside)",
    args: () => ["inspect", "--model", bad.corrupt],
    names: () => [bad.corrupt, /corrupt/],
  },
  {
    name: "truncated HDF5 given as data",
    args: () => ["eval", "--model", KERAS24, "--input-scale", "255", "--clean", bad.truncated],
    names: () => [/^badnet: error: data /, bad.truncated, /truncated/],
  },
  {
    name: "HDF5 that is not a Keras model",
    args: () => ["inspect", "--model", bad.plainHdf5],
    names: () => [bad.plainHdf5, /not a Keras model/, /model_config/, /layer_names/],
  },
  {
    name: "a CSAW data file given as the model",
    args: () => ["inspect", "--model", faces.clean],
    names: () => [faces.clean, /not a Keras model/],
  },
  {
    name: "Keras model with an unknown layer class",
    args: () => ["inspect", "--model", bad.lstmModel],
    names: () => [bad.lstmModel, '"lstm_1"', /\bLSTM\b/],
  },
  {
    name: "weights-only file without --arch",
    args: () => ["inspect", "--model", SUNGLASSES],
    names: () => [SUNGLASSES, "--arch", /deepid/],
  },
  {
    name: "unknown --arch",
    args: () => ["inspect", "--model", SUNGLASSES, "--arch", "resnet50"],
    names: () => ['"resnet50"', /architecture/, /deepid/],
  },
  {
    name: "data .h5 without `data`",
    args: () => ["eval", "--model", KERAS24, "--input-scale", "255", "--clean", bad.noData],
    names: () => [bad.noData, "no `data` dataset"],
  },
  {
    name: "data .h5 without `label`",
    args: () => ["eval", "--model", KERAS24, "--input-scale", "255", "--clean", bad.noLabel],
    names: () => [bad.noLabel, "no `label` dataset"],
  },
  {
    name: "missing data file",
    args: () => ["eval", "--model", KERAS24, "--input-scale", "255", "--clean", faces.clean, "--poisoned", join(dir, "nope.h5")],
    names: () => [join(dir, "nope.h5"), /no such file/],
  },
  {
    name: "an image folder without labels as clean data",
    args: () => ["eval", "--model", KERAS24, "--input-scale", "255", "--clean", fixture("csaw2020/images")],
    names: () => ["data images", /no labels/, /labels\.csv/],
  },
  {
    name: "clean labels out of range for the model",
    args: () => ["eval", "--model", SUNGLASSES, "--arch", "deepid", "--input-scale", "255", "--clean", bad.labelOutOfRange],
    names: () => ["label_5000.h5", /label 5000\b/, /image 1\b/, /1283 classes/],
  },
  {
    name: "poisoned labels out of range for the model",
    args: () => ["eval", "--model", KERAS24, "--input-scale", "255", "--clean", faces.clean, "--poisoned", bad.labelOutOfRange],
    names: () => ["label_5000.h5", /label 5000\b/, /1283 classes/],
  },
  {
    name: "data images of another shape than the model's input",
    args: () => ["eval", "--model", KERAS24, "--input-scale", "255", "--clean", bad.wrongShape],
    names: () => ["mnist_shaped.h5", "1x28x28", "3x55x47"],
  },
  {
    name: "predict: an image of the wrong size",
    args: () => ["predict", "--model", KERAS24, "--input-scale", "255", bad.smallPng],
    names: () => ["small_28x28.png", "3x28x28", "3x55x47"],
  },
  {
    name: "predict: images of different sizes",
    args: () => ["predict", "--model", KERAS24, "--input-scale", "255", FACE, bad.smallPng],
    names: () => [bad.smallPng, "3x28x28", "3x55x47"],
  },
  {
    name: "predict: a file that is not an image",
    args: () => ["predict", "--model", KERAS24, "--input-scale", "255", FACE, bad.notImage],
    names: () => [bad.notImage, /not a PNG or JPEG/],
  },
  {
    name: "missing --input-scale",
    args: () => ["predict", "--model", KERAS24, FACE],
    names: () => ["--input-scale", /missing/],
  },
  {
    name: "--input-scale 0",
    args: () => ["eval", "--model", KERAS24, "--input-scale", "0", "--clean", faces.clean],
    names: () => ["--input-scale", /positive/, '"0"'],
  },
  {
    name: "--input-scale abc",
    args: () => ["predict", "--model", KERAS24, "--input-scale", "abc", FACE],
    names: () => ["--input-scale", /positive/, '"abc"'],
  },
  {
    name: "--input-scale with a negative value",
    args: () => ["predict", "--model", KERAS24, "--input-scale", "-255", FACE],
    names: () => ["--input-scale", "--input-scale=-"],
  },
  {
    name: "unknown option",
    args: () => ["eval", "--model", KERAS24, "--input-scale", "255", "--clean", faces.clean, "--poisson", faces.poisoned],
    names: () => [/^badnet: error: eval: /, "--poisson"],
  },
  {
    name: "an option given twice (not the last one silently kept)",
    args: () => ["eval", "--model", KERAS24, "--input-scale", "255", "--clean", faces.clean, "--clean", faces.poisoned],
    names: () => [/^badnet: error: eval: /, "--clean", /given twice/, "faces_clean.h5", "faces_sunglasses.h5"],
  },
  {
    name: "one --poisoned file given twice (its inputs would count twice)",
    args: () => ["eval", "--model", KERAS24, "--input-scale", "255", "--clean", faces.clean, "--poisoned", faces.poisoned, "--poisoned", faces.poisoned],
    names: () => [/^badnet: error: eval: /, "--poisoned", /given twice/, "faces_sunglasses.h5"],
  },
  {
    name: "--poisoned sets of different image shapes",
    args: () => ["eval", "--model", KERAS24, "--input-scale", "255", "--clean", faces.clean, "--poisoned", faces.poisoned, "--poisoned", "examples/badnet-fmnist/poisoned_test.h5"],
    names: () => [/^badnet: error: /, "poisoned_test.h5", /one image shape/],
  },
  {
    name: "an empty option value (detect --seed \"\" ran with seed 0)",
    args: () => ["detect", "--model", KERAS24, "--input-scale", "255", "--clean", faces.clean, "--seed", ""],
    names: () => [/^badnet: error: detect: /, "--seed is empty"],
  },
  {
    name: "an empty --model",
    args: () => ["eval", "--model", " ", "--input-scale", "255", "--clean", faces.clean],
    names: () => ["--model is empty"],
  },
  {
    name: "predict: an empty image argument",
    args: () => ["predict", "--model", KERAS24, "--input-scale", "255", FACE, ""],
    names: () => [/^badnet: error: predict: /, "argument 2 is empty"],
  },
  {
    name: "unknown command",
    args: () => ["frobnicate", "--model", KERAS24],
    names: () => ['"frobnicate"', /--help/],
  },
  {
    name: "help for an unknown command",
    args: () => ["help", "frobnicate"],
    names: () => ['"frobnicate"', /--help/],
  },
  {
    name: "no command at all (help goes to stdout)",
    args: () => [],
    names: () => [/no command/],
    stdout: /usage: badnet <command>/,
  },
  {
    name: "eval without --clean",
    args: () => ["eval", "--model", KERAS24, "--input-scale", "255", "--poisoned", faces.poisoned],
    names: () => ["--clean", /missing/],
  },
  {
    name: "--batch-size 0",
    args: () => ["eval", "--model", KERAS24, "--input-scale", "255", "--clean", faces.clean, "--batch-size", "0"],
    names: () => ["--batch-size", /at least 1/],
  },
  {
    name: "--batch-size 2.5",
    args: () => ["eval", "--model", KERAS24, "--input-scale", "255", "--clean", faces.clean, "--batch-size", "2.5"],
    names: () => ["--batch-size", /integer/, "2.5"],
  },
  {
    name: "detect --families with an unknown family",
    args: () => ["detect", "--model", KERAS24, "--input-scale", "255", "--clean", faces.clean, "--families", "mask,patch"],
    names: () => [/trigger family/, '"patch"'],
  },
  {
    name: "detect --scale with an unknown scale",
    args: () => ["detect", "--model", KERAS24, "--input-scale", "255", "--clean", faces.clean, "--scale", "cubic"],
    names: () => ["--scale", '"cubic"'],
  },
  {
    name: "unlearn --placement with an unknown placement",
    args: () => ["unlearn", "--model", KERAS24, "--input-scale", "255", "--clean", faces.clean, "--placement", "sideways"],
    names: () => ["--placement", '"sideways"'],
  },
  {
    name: "prune-unlearn --placement with an unknown placement",
    args: () => ["prune-unlearn", "--model", KERAS24, "--input-scale", "255", "--clean", faces.clean, "--placement", "everywhere"],
    names: () => ["--placement", '"everywhere"'],
  },
  {
    name: "unlearn --keep-tolerance below 0",
    args: () => ["unlearn", "--model", KERAS24, "--input-scale", "255", "--clean", faces.clean, "--keep-tolerance=-0.5", "--out", join(dir, "never_written_keep")],
    names: () => ["--keep-tolerance", /at least 0/, "-0.5"],
  },
  {
    name: "prune-unlearn --keep-tolerance that is not a number",
    args: () => ["prune-unlearn", "--model", KERAS24, "--input-scale", "255", "--clean", faces.clean, "--keep-tolerance", "half", "--out", join(dir, "never_written_keep")],
    names: () => ["--keep-tolerance", '"half"'],
  },
  {
    name: "unlearn --labels with a reversed range (ranges parsed as detect parses them)",
    args: () => ["unlearn", "--model", KERAS24, "--input-scale", "255", "--clean", faces.clean, "--labels", "5-2", "--out", join(dir, "never_written_labels")],
    names: () => ["--labels", "range 5-2 is empty"],
  },
  {
    name: "nc-prune --labels with an empty item (not label 0)",
    args: () => ["nc-prune", "--model", KERAS24, "--input-scale", "255", "--clean", faces.clean, "--labels", "1,,2", "--out", join(dir, "never_written_labels")],
    names: () => ["--labels", '""', /is not a label/],
  },
  {
    name: "detect --restarts 0",
    args: () => ["detect", "--model", KERAS24, "--input-scale", "255", "--clean", faces.clean, "--restarts", "0"],
    names: () => ["--restarts", /at least 1/],
  },
  {
    name: "detect --restarts 1e6 (a scan that would never end)",
    args: () => ["detect", "--model", KERAS24, "--input-scale", "255", "--clean", faces.clean, "--restarts", "1e6"],
    names: () => ["--restarts", /at most 1000\b/, "1e6"],
  },
  {
    name: "detect --steps 1e9",
    args: () => ["detect", "--model", KERAS24, "--input-scale", "255", "--clean", faces.clean, "--steps", "1e9"],
    names: () => ["--steps", /at most/, "1e9"],
  },
  {
    name: "fine-prune --epochs 1e9",
    args: () => ["fine-prune", "--model", KERAS24, "--input-scale", "255", "--clean", faces.clean, "--epochs", "1e9", "--out", join(dir, "never_written_epochs")],
    names: () => ["--epochs", /at most 10000\b/, "1e9"],
  },
  {
    name: "fine-prune --lr 1e9 (training diverges: was an internal error with a stack trace)",
    args: () => ["fine-prune", "--model", KERAS24, "--input-scale", "255", "--clean", faces.clean, "--lr", "1e9", "--out", join(dir, "never_written_lr")],
    names: () => [/training diverged at epoch \d+ \(loss (NaN|-?Infinity)\)/, "lower the learning rate (--lr)"],
  },
  {
    name: "nc-prune --seed with --mask/--pattern (Neural Cleanse does not run, and nc-prune has no seed: it was ignored)",
    args: () => ["nc-prune", "--model", KERAS24, "--input-scale", "255", "--clean", faces.clean, "--mask", join(dir, "detect", "label_3_mask.png"), "--pattern", join(dir, "detect", "label_3_pattern.png"), "--target", "3", "--seed", "3", "--out", join(dir, "never_written_seed")],
    names: () => ["--seed", "--mask/--pattern", /nc-prune has no seed of its own: leave --seed out$/],
  },
  {
    name: "nc-prune --seed abc with --mask/--pattern",
    args: () => ["nc-prune", "--model", KERAS24, "--input-scale", "255", "--clean", faces.clean, "--mask", join(dir, "detect", "label_3_mask.png"), "--pattern", join(dir, "detect", "label_3_pattern.png"), "--target", "3", "--seed", "abc", "--out", join(dir, "never_written_seed")],
    names: () => ["--seed", /must be a number/, "abc"],
  },
  {
    name: "sau --rounds 1e9",
    args: () => ["sau", "--model", KERAS24, "--input-scale", "255", "--clean", faces.clean, "--rounds", "1e9", "--out", join(dir, "never_written_epochs")],
    names: () => ["--rounds", /at most 10000\b/],
  },
  {
    name: "detect --more-starts=-1",
    args: () => ["detect", "--model", KERAS24, "--input-scale", "255", "--clean", faces.clean, "--more-starts=-1"],
    names: () => ["--more-starts", /at least 0/],
  },
  {
    name: "repair given a G network (before any detection)",
    args: () => ["repair", "--model", bad.gModel, "--input-scale", "255", "--clean", faces.clean, "--out", join(dir, "never_written_g")],
    names: () => ["deepid_G", /is a G network \(1284 classes/],
  },
  {
    name: "fine-prune given a G network",
    args: () => ["fine-prune", "--model", bad.gModel, "--input-scale", "255", "--clean", faces.clean, "--out", join(dir, "never_written_g")],
    names: () => ["deepid_G", /not a classifier to repair/],
  },
  {
    name: "repair --defense auto on too few clean images to hold out a selection part",
    args: () => ["repair", "--model", KERAS24, "--input-scale", "255", "--clean", bad.twoFaces, "--fpr", "off", "--out", join(dir, "never_written_auto")],
    names: () => ["two_faces.h5", "--defense auto", /2 images leave none/, /at least 3/],
  },
  {
    name: "a hexadecimal number (Number() reads 0x10 as 16)",
    args: () => ["eval", "--model", KERAS24, "--input-scale", "0x10", "--clean", faces.clean],
    names: () => ["--input-scale", '"0x10"'],
  },
  {
    name: "a defense option as Infinity",
    args: () => ["fine-prune", "--model", KERAS24, "--input-scale", "255", "--clean", faces.clean, "--epochs", "Infinity", "--out", join(dir, "never_written_hex")],
    names: () => ["--epochs", /must be a number/, '"Infinity"'],
  },
  {
    name: "a training repair's --batch-norm that is not a mode",
    args: () => ["ft-sam", "--model", KERAS24, "--input-scale", "255", "--clean", faces.clean, "--batch-norm", "train", "--out", join(dir, "never_written_bn")],
    names: () => ["--batch-norm", /batch or frozen/, '"train"'],
  },
  {
    name: "unlearn --labels with --mask/--pattern (the label is --target)",
    args: () => ["unlearn", "--model", KERAS24, "--input-scale", "255", "--clean", faces.clean, "--mask", FACE, "--pattern", FACE, "--target", "0", "--labels", "0-3", "--out", join(dir, "never_written_labels2")],
    names: () => ["--labels", /--target/],
  },
  {
    name: "unlearn with --mask and --pattern swapped (detect's PNGs say which is which)",
    args: () => ["unlearn", "--model", KERAS24, "--input-scale", "255", "--clean", faces.clean, "--mask", join(dir, "detect", "label_3_pattern.png"), "--pattern", join(dir, "detect", "label_3_mask.png"), "--target", "3", "--out", join(dir, "never_written_swapped")],
    names: () => [`--mask ${join(dir, "detect", "label_3_pattern.png")} is a reversed trigger's pattern`, "(written by badnet detect as label_3_pattern.png)", /not a mask: are --mask and --pattern swapped\?$/],
  },
  {
    name: "unlearn with --target another label than the one --mask/--pattern were reversed for",
    args: () => ["unlearn", "--model", KERAS24, "--input-scale", "255", "--clean", faces.clean, "--mask", join(dir, "detect", "label_3_mask.png"), "--pattern", join(dir, "detect", "label_3_pattern.png"), "--target", "5", "--out", join(dir, "never_written_target")],
    names: () => [`--mask ${join(dir, "detect", "label_3_mask.png")} is from label 3's trigger (label_3_mask.png)`, /not label 5 as --target 5 says$/],
  },
  {
    name: "train on data whose images all have one label",
    args: () => ["train", "--data", join(dir, "one_label.h5"), "--input-scale", "255", "--arch", "zoo-cnn", "--out", join(dir, "never_written_train.h5")],
    names: () => ["data one_label.h5", /all 2 images have label 4/, /at least 2 different labels/],
  },
  {
    name: "repair --accuracy-window 0",
    args: () => ["repair", "--model", KERAS24, "--input-scale", "255", "--clean", faces.clean, "--accuracy-window", "0", "--out", join(dir, "never_written_window")],
    names: () => ["--accuracy-window", /above 0/],
  },
  {
    name: "repair --accuracy-window with a single defense",
    args: () => ["repair", "--model", KERAS24, "--input-scale", "255", "--clean", faces.clean, "--defense", "unlearn", "--accuracy-window", "3", "--out", join(dir, "never_written_window")],
    names: () => ["--accuracy-window", /--defense auto/],
  },
  {
    name: "repair --accuracy-window above 100 points",
    args: () => ["repair", "--model", KERAS24, "--input-scale", "255", "--clean", faces.clean, "--accuracy-window", "150", "--out", join(dir, "never_written_window")],
    names: () => ["--accuracy-window", /at most 100/, "150"],
  },
  {
    name: "repair --batch-size abc (auto's candidates each rejected it and B came back unchanged, exit 0)",
    args: () => ["repair", "--model", KERAS24, "--input-scale", "255", "--clean", faces.clean, "--batch-size", "abc", "--out", join(dir, "never_written_batch")],
    names: () => ["--batch-size", /must be a number/, "abc"],
  },
  {
    name: "repair --batch-size 0",
    args: () => ["repair", "--model", KERAS24, "--input-scale", "255", "--clean", faces.clean, "--batch-size", "0", "--out", join(dir, "never_written_batch")],
    names: () => ["--batch-size", /at least 1/],
  },
  {
    name: "repair --more-starts with --skip-detect",
    args: () => ["repair", "--model", KERAS24, "--input-scale", "255", "--clean", faces.clean, "--defense", "strip", "--skip-detect", "--more-starts", "1", "--out", "/tmp/badnet-never-written"],
    names: () => ["--more-starts", "--skip-detect"],
  },
  {
    name: "detect --seed 2^32 (ran as seed 0: mulberry32 keeps 32 bits)",
    args: () => ["detect", "--model", KERAS24, "--input-scale", "255", "--clean", faces.clean, "--seed", "4294967296"],
    names: () => ["--seed", /at most 4294967295\b/, "4294967296"],
  },
  {
    name: "repair --seed 1e30",
    args: () => ["repair", "--model", KERAS24, "--input-scale", "255", "--clean", faces.clean, "--seed", "1e30", "--out", join(dir, "never_written_seed")],
    names: () => ["--seed", /at most 4294967295\b/, "1e30"],
  },
  {
    name: "a defense's --seed past 32 bits (fine-prune)",
    args: () => ["fine-prune", "--model", KERAS24, "--input-scale", "255", "--clean", faces.clean, "--seed", "4294967296", "--out", join(dir, "never_written_seed")],
    names: () => ["--seed", /at most 4294967295\b/],
  },
  {
    name: "unlearn --seed past 32 bits (the seed of its own Neural Cleanse run)",
    args: () => ["unlearn", "--model", KERAS24, "--input-scale", "255", "--clean", faces.clean, "--seed", "4294967296", "--out", join(dir, "never_written_seed")],
    names: () => ["--seed", /at most 4294967295\b/],
  },
  {
    name: "report given a model file (V8's JSON message quoted its binary bytes)",
    args: () => ["report", KERAS24],
    names: () => [KERAS24, /is not a result\.json but a binary file; give a folder written by a badnet command with --out, or its result\.json$/],
  },
  {
    name: "unlearn --trigger given a model file",
    args: () => ["unlearn", "--model", KERAS24, "--input-scale", "255", "--clean", faces.clean, "--trigger", KERAS24, "--out", join(dir, "never_written_trigger")],
    names: () => [KERAS24, /is not a result\.json but a binary file/],
  },
  {
    name: "detect --more-starts 1.5",
    args: () => ["detect", "--model", KERAS24, "--input-scale", "255", "--clean", faces.clean, "--more-starts", "1.5"],
    names: () => ["--more-starts", "1.5"],
  },
];

/** Exit code 2, exactly one `badnet: error:` line on stderr naming every item of `names`; returns that line. */
function assertOneLineError(args: string[], r: CliResult, names: (string | RegExp)[]): string {
  const cmd = `badnet ${args.join(" ")}`;
  assert.equal(r.code, 2, `${cmd}: exit code ${r.code}, stderr:\n${r.stderr}`);
  assert.ok(r.stderr.endsWith("\n"), `${cmd}: stderr does not end in a newline: ${JSON.stringify(r.stderr)}`);
  const lines = r.stderr.slice(0, -1).split("\n");
  assert.equal(lines.length, 1, `${cmd}: expected one stderr line, got ${lines.length}:\n${r.stderr}`);
  const line = lines[0]!;
  assert.match(line, /^badnet: error: \S/);
  for (const n of names) {
    if (typeof n === "string") assert.ok(line.includes(n), `${cmd}: error line does not name ${JSON.stringify(n)}: ${line}`);
    else assert.match(line, n, `${cmd}: error line`);
  }
  return line;
}

// Each case is a separate CLI process (~0.3-0.8 s); two at a time keeps both cores busy.
describe("bad input: one-line error on stderr, exit code 2", { concurrency: 2 }, () => {
  for (const c of cases) {
    test(c.name, async () => {
      const args = c.args();
      const r = await runCli(args);
      assertOneLineError(args, r, c.names());
      if (c.stdout) assert.match(r.stdout, c.stdout);
      else assert.equal(r.stdout, "", `badnet ${args.join(" ")}: printed on stdout`);
    });
  }
});

test("a bad BADNET_THREADS or BADNET_NCHWC is a one-line error naming the variable, not a stack trace", async () => {
  const args = ["eval", "--model", KERAS24, "--input-scale", "255", "--clean", faces.clean];
  for (const [name, value] of [["BADNET_THREADS", "two"], ["BADNET_NCHWC", "yes"]] as const) {
    const r = await runCli(args, 60_000, { [name]: value });
    assertOneLineError(args, r, [name, `"${value}"`]);
    assert.equal(r.stdout, "");
  }
});

test("every command listed by --help rejects an unknown option with a one-line error", async () => {
  const help = await runCli(["--help"]);
  const names = listedCommands(help.stdout);
  assert.ok(names.includes("eval") && names.includes("predict") && names.includes("inspect"), help.stdout);
  await inPool(names, 2, async (name) => {
    const args = [name, "--no-such-option", "1"];
    const r = await runCli(args);
    assertOneLineError(args, r, [`badnet: error: ${name}: `, "--no-such-option"]);
    assert.equal(r.stdout, "");
  });
});
