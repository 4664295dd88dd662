// Output safety through the real CLI (issue 12): no command writes over one of its inputs, a result folder
// appears complete or not at all, old results are replaced only with --force, and unwritable or odd output
// paths are one-line errors before any work. Runs on the bundled example model and 120 of its images.
import assert from "node:assert/strict";
import { execFile, spawn, spawnSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, watch, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import h5wasm from "h5wasm/node";
import { requireLabels } from "../io/dataset.js";
import { openDataset } from "../io/open-dataset.js";
import { writeCsawH5 } from "../io/csaw-h5.js";
import { CLI, ROOT } from "../test/fixtures.js";
import { runCli, tempDir, type CliResult } from "../test/make-bad-files.js";

const EX = join(ROOT, "examples/badnet-fmnist");
const dir = tempDir("out-safety");
const MODEL = join(dir, "model.h5");
const VALID = join(dir, "valid.h5");
const N = 120;
// --drop 4 unless `extra` gives its own (an option given twice is an error).
const prune = (out: string, ...extra: string[]) => ["prune", "--model", MODEL, "--input-scale", "255", "--clean", VALID, ...(extra.includes("--drop") ? [] : ["--drop", "4"]), "--quiet", "--out", out, ...extra];
const train = (out: string, ...extra: string[]) => ["train", "--data", VALID, "--input-scale", "255", "--epochs", "1", "--quiet", "--out", out, ...extra];
/** A finished prune result, made once: the input of the report cases. */
const RESULT = join(dir, "result");

before(async () => {
  copyFileSync(join(EX, "model.h5"), MODEL);
  const src = await openDataset(join(EX, "valid.h5"), { inputScale: 1 });
  try {
    await writeCsawH5(VALID, Uint8Array.from(src.read(0, N)), [N, 1, 28, 28], requireLabels(src, "test data").slice(0, N));
  } finally {
    src.close();
  }
  const r = await runCli(prune(RESULT));
  assert.equal(r.code, 0, r.stderr);
});
after(() => rmSync(dir, { recursive: true, force: true }));


/** Exit 2 with exactly one `badnet: error:` line matching `re`. */
function oneLine(r: CliResult, re: RegExp): void {
  assert.equal(r.code, 2, `exit ${r.code}\n${r.stderr}`);
  const lines = r.stderr.trim().split("\n");
  assert.equal(lines.length, 1, r.stderr);
  assert.match(lines[0]!, /^badnet: error: /);
  assert.match(lines[0]!, re);
}

/** A fresh folder holding copies of the given files (to prove they are left byte-identical). */
function folderWith(name: string, files: Record<string, string>): string {
  const d = join(dir, name);
  mkdirSync(d, { recursive: true });
  for (const [to, from] of Object.entries(files)) copyFileSync(from, join(d, to));
  return d;
}

const hidden = (d: string): string[] => readdirSync(d).filter((n) => n.startsWith("."));

test("prune with --out = the input's folder does not overwrite an input named like an output (repaired_4.h5)", async () => {
  const d = folderWith("prune-into-inputs", { "repaired_4.h5": MODEL, "valid.h5": VALID });
  const before = readFileSync(join(d, "repaired_4.h5"));
  const r = await runCli(["prune", "--model", join(d, "repaired_4.h5"), "--input-scale", "255", "--clean", join(d, "valid.h5"), "--drop", "4", "--quiet", "--out", d]);
  oneLine(r, /other files in it|would overwrite the input/);
  assert.deepEqual(readFileSync(join(d, "repaired_4.h5")), before);
  assert.deepEqual(readdirSync(d).sort(), ["repaired_4.h5", "valid.h5"]);
});

test("fine-prune with --out = the input's folder does not overwrite an input named repaired.h5", async () => {
  const d = folderWith("fine-prune-into-inputs", { "repaired.h5": MODEL, "valid.h5": VALID });
  const before = readFileSync(join(d, "repaired.h5"));
  const r = await runCli(["fine-prune", "--model", join(d, "repaired.h5"), "--input-scale", "255", "--clean", join(d, "valid.h5"), "--epochs", "1", "--quiet", "--out", d, "--force"]);
  oneLine(r, /other files in it|would overwrite the input/);
  assert.deepEqual(readFileSync(join(d, "repaired.h5")), before);
  assert.deepEqual(readdirSync(d).sort(), ["repaired.h5", "valid.h5"]);
});

test("--force never replaces a result folder that holds one of the inputs", async () => {
  const out = join(dir, "holds-input");
  assert.equal((await runCli(prune(out))).code, 0);
  const model = join(out, "repaired_4.h5");
  const before = readFileSync(model);
  const r = await runCli(["prune", "--model", model, "--input-scale", "255", "--clean", VALID, "--quiet", "--out", out, "--force"]);
  oneLine(r, /would overwrite the input/);
  assert.deepEqual(readFileSync(model), before);
});

test("a second prune into the same folder: refused without --force; with --force no stale G_*/repaired_* files stay", async () => {
  const out = join(dir, "twice");
  assert.equal((await runCli(prune(out))).code, 0);
  assert.ok(existsSync(join(out, "G_4.onnx")));
  oneLine(await runCli(prune(out, "--drop", "10")), /earlier result.*--force/);
  assert.ok(existsSync(join(out, "G_4.onnx")), "the refused run changed nothing");
  const r = await runCli(prune(out, "--drop", "10", "--force"));
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(readdirSync(out).sort(), ["G_10.onnx", "repaired_10.h5", "repaired_10.onnx", "result.json"]);
  assert.deepEqual(hidden(dir), []);
});

test("result.json and the printed JSON name the final paths, never the staging folder", async () => {
  const out = join(dir, "paths", "nested");
  const r = await runCli([...prune(out), "--json"]);
  assert.equal(r.code, 0, r.stderr);
  const saved = readFileSync(join(out, "result.json"), "utf8");
  assert.deepEqual(JSON.parse(r.stdout), JSON.parse(saved));
  assert.doesNotMatch(saved + r.stdout, /badnet-tmp/);
  const files = (JSON.parse(saved) as { repairs: { files: string[] }[] }).repairs.flatMap((x) => x.files);
  for (const f of files) assert.ok(existsSync(f), f);
});

test("--out into an existing empty folder fills that folder", async () => {
  const out = join(dir, "empty-out");
  mkdirSync(out);
  assert.equal((await runCli(prune(out))).code, 0);
  assert.ok(existsSync(join(out, "result.json")));
});

test("train --out model.h5 --model model.h5 leaves the start model and the .onnx beside it untouched", async () => {
  const d = folderWith("train-over-start", { "model.h5": MODEL, "model.onnx": join(EX, "model.onnx") });
  const h5 = readFileSync(join(d, "model.h5")), onnx = readFileSync(join(d, "model.onnx"));
  for (const extra of [[], ["--force"]]) {
    const r = await runCli(train(join(d, "model.h5"), "--model", join(d, "model.h5"), ...extra));
    oneLine(r, /would overwrite the input/);
  }
  // The .onnx beside is written too: starting from it is the same overwrite.
  oneLine(await runCli(train(join(d, "model.h5"), "--model", join(d, "model.onnx"), "--force")), /would overwrite the input/);
  assert.deepEqual(readFileSync(join(d, "model.h5")), h5);
  assert.deepEqual(readFileSync(join(d, "model.onnx")), onnx);
  assert.deepEqual(hidden(d), []);
});

test("train --out valid.h5 does not replace the data with a model", async () => {
  const d = folderWith("train-over-data", { "valid.h5": VALID, "other.h5": VALID });
  const before = readFileSync(join(d, "valid.h5"));
  oneLine(await runCli(["train", "--data", join(d, "valid.h5"), "--input-scale", "255", "--arch", "zoo-cnn", "--epochs", "1", "--quiet", "--out", join(d, "valid.h5"), "--force"]), /would overwrite the input/);
  // A file that is not an input is still only replaced with --force.
  oneLine(await runCli(train(join(d, "other.h5"), "--arch", "zoo-cnn")), /already exists.*--force/);
  assert.deepEqual(readFileSync(join(d, "valid.h5")), before);
  assert.deepEqual(readFileSync(join(d, "other.h5")), before);
});

test("report --output model.onnx does not overwrite a model with HTML; --output DIR (EISDIR) and --output result.json are one line", async () => {
  const out = RESULT;
  const d = folderWith("report-over-model", { "model.onnx": join(EX, "model.onnx") });
  const before = readFileSync(join(d, "model.onnx"));
  oneLine(await runCli(["report", out, "--output", join(d, "model.onnx")]), /already exists.*--force/);
  assert.deepEqual(readFileSync(join(d, "model.onnx")), before);
  oneLine(await runCli(["report", out, "--output", d]), /is a folder; give a file name/);
  oneLine(await runCli(["report", out, "--output", join(out, "result.json"), "--force"]), /would overwrite the input/);
  // --force replaced the model with HTML: a report only ever replaces an HTML file.
  oneLine(await runCli(["report", out, "--output", join(d, "model.onnx"), "--force"]), /--output \S*model\.onnx exists and is not an HTML file .*--force does not replace it/);
  assert.deepEqual(readFileSync(join(d, "model.onnx")), before);
  writeFileSync(join(d, "old.html"), "<!DOCTYPE html>\n<html><body>mine</body></html>\n");
  assert.equal((await runCli(["report", out, "--output", join(d, "old.html")])).code, 2, "another HTML file needs --force");
  const forced = await runCli(["report", out, "--output", join(d, "old.html"), "--force"]);
  assert.equal(forced.code, 0, forced.stderr);
  assert.ok(readFileSync(join(d, "old.html"), "utf8").includes("badnet-defense"));
  // Rendering again over our own report needs no --force.
  for (let i = 0; i < 2; i++) assert.equal((await runCli(["report", out])).code, 0);
  assert.deepEqual(hidden(out), []);
});

test("--out /proc/x returns at once with one line (Node's recursive mkdir never returns there)", async () => {
  oneLine(await runCli(prune("/proc/x"), 15_000), /cannot write into \/proc/);
  oneLine(await runCli(prune("/proc/x/y/z"), 15_000), /cannot create the folder \/proc\/x/);
  oneLine(await runCli(["report", RESULT, "--output", "/proc/x/report.html"], 15_000), /\/proc\/x.*does not exist/);
});

test("--output under a file says the file is not a folder", async () => {
  const file = join(dir, "plain.txt");
  writeFileSync(file, "not a folder\n");
  oneLine(await runCli(["report", RESULT, "--output", join(file, "report.html")], 15_000), new RegExp(`${file.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")} is a file, not a folder`));
});

test("a failed run leaves no empty --out folder (nor the parents it made)", async () => {
  const top = join(dir, "failed-new");
  oneLine(await runCli(["prune", "--model", MODEL, "--input-scale", "255", "--clean", join(dir, "missing.h5"), "--quiet", "--out", join(top, "a", "b")]), /missing\.h5/);
  assert.ok(!existsSync(top), "no folder made for a failed run");
  assert.deepEqual(hidden(dir), []);
});

/** Whether this process may make a private mount namespace (root with unshare): a real read-only mount. */
const canUnshare = process.platform === "linux" && spawnSync("unshare", ["-m", "--propagation", "private", "true"]).status === 0;

test("--out on a read-only file system is one line for prune, train and report", { skip: canUnshare ? false : "needs root and unshare(1) to mount a read-only file system" }, async () => {
  const ro = join(dir, "ro");
  mkdirSync(ro);
  const src = RESULT;
  const node = JSON.stringify(process.execPath), cli = JSON.stringify(CLI);
  const q = (args: string[]) => args.map((a) => JSON.stringify(a)).join(" ");
  const script = [
    `mount -t tmpfs -o ro tmpfs ${JSON.stringify(ro)}`,
    ...[prune(join(ro, "out")), prune(join(ro, "a", "b")), train(join(ro, "m.h5"), "--arch", "zoo-cnn"), ["report", src, "--output", join(ro, "r.html")]].map(
      (args) => `${node} ${cli} ${q(args)}; echo "rc=$?"`,
    ),
  ].join("\n");
  const r = spawnSync("unshare", ["-m", "--propagation", "private", "sh", "-c", script], { encoding: "utf8", timeout: 120_000 });
  assert.deepEqual(r.stdout.trim().split("\n"), ["rc=2", "rc=2", "rc=2", "rc=2"], r.stderr);
  const errors = r.stderr.trim().split("\n");
  assert.equal(errors.length, 4, r.stderr);
  for (const e of errors) assert.match(e, /^badnet: error: cannot (write into|create the folder) .*: read-only file system$/);
});

test("an interrupted run leaves nothing that looks finished and no hidden files", async () => {
  const parent = join(dir, "interrupt");
  mkdirSync(parent);
  const out = join(parent, "out");
  const child = spawn(process.execPath, [CLI, "fine-prune", "--model", MODEL, "--input-scale", "255", "--clean", VALID, "--epochs", "50", "--quiet", "--out", out], { stdio: ["ignore", "pipe", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (b: Buffer) => (stderr += b.toString()));
  // "close", not "exit": only then has all of the child's stderr been read.
  let done = false;
  const exited = new Promise<number | string | null>((res) => child.on("close", (code, signal) => ((done = true), res(code ?? signal))));
  // Interrupt once the run is writing (its staging folder exists), however long a loaded machine takes to
  // get there; a run that ends before that fails here with its stderr rather than at some deadline. The
  // watcher wakes us the moment the folder appears (the hardest time to be interrupted), the timer is the
  // fallback should it miss an event.
  const watcher = watch(parent);
  const wake = () =>
    new Promise<void>((res) => {
      const go = () => {
        clearTimeout(timer);
        watcher.off("change", go);
        res();
      };
      const timer = setTimeout(go, 20);
      watcher.on("change", go);
    });
  try {
    while (hidden(parent).length === 0 && !done) await wake();
  } finally {
    watcher.close();
  }
  assert.ok(!done, `the run ended before it started writing: ${stderr}`);
  child.kill("SIGINT");
  assert.equal(await exited, 130, stderr);
  assert.match(stderr, /interrupted \(SIGINT\); nothing was written/);
  assert.deepEqual(readdirSync(parent), []);
});

test("a killed run's staging folder is cleared by the next run into the same place", async () => {
  const parent = join(dir, "killed");
  mkdirSync(parent);
  const dead = await new Promise<number>((res) => {
    const c = execFile(process.execPath, ["-e", "0"], () => res(c.pid!));
  });
  const leftover = join(parent, `.out.badnet-tmp-${dead}-0123abcd`);
  mkdirSync(leftover);
  writeFileSync(join(leftover, "G_4.onnx"), "half-written");
  assert.equal((await runCli(prune(join(parent, "out")))).code, 0);
  assert.deepEqual(readdirSync(parent), ["out"]);
});

test("NaN pixels in train and fine-prune data are a one-line error, not 'training diverged'", async () => {
  const nan = join(dir, "nan.h5");
  await h5wasm.ready;
  const f = new h5wasm.File(nan, "w");
  try {
    const x = new Float32Array(32 * 784).fill(0.5);
    x[5 * 784 + 100] = NaN;
    f.create_dataset({ name: "data", data: x, shape: [32, 1, 28, 28], dtype: "<f" });
    f.create_dataset({ name: "label", data: Float64Array.from({ length: 32 }, (_, i) => i % 10), shape: [32], dtype: "<d" });
  } finally {
    f.close();
  }
  const trainRun = await runCli(["train", "--data", nan, "--input-scale", "1", "--arch", "zoo-cnn", "--epochs", "1", "--quiet", "--out", join(dir, "nan-model.h5")]);
  oneLine(trainRun, /NaN|non-finite/);
  assert.doesNotMatch(trainRun.stderr, /diverged/);
  const fp = await runCli(["fine-prune", "--model", MODEL, "--input-scale", "1", "--clean", nan, "--epochs", "1", "--quiet", "--out", join(dir, "nan-fp")]);
  oneLine(fp, /NaN|non-finite/);
  assert.ok(!existsSync(join(dir, "nan-fp")) && !existsSync(join(dir, "nan-model.h5")));
});

test("zoo build --out into a folder of other files is refused before any work", async () => {
  const d = folderWith("zoo-into-inputs", { "model.h5": MODEL });
  oneLine(await runCli(["zoo", "build", "--out", d, "--quiet"]), /other files in it \(no zoo\.json\)/);
  assert.deepEqual(readdirSync(d), ["model.h5"]);
});
