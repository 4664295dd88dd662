// badnet zoo build: train the ground-truth zoo of clean and backdoored Fashion-MNIST models.
import { fail } from "../../errors.js";
import { buildZoo, meetsTargets, ZOO_DEFAULTS } from "../../zoo/build.js";
import { num, optNum, pct, progress, str, type Command } from "../command.js";
import type { Progress } from "../progress.js";
import { FORCE_OPTION, prepareOutDir } from "../out-dir.js";

export const zooCommand: Command = {
  name: "zoo",
  summary: "build the ground-truth zoo of clean and backdoored Fashion-MNIST models (badnet zoo build)",
  usage: "build --dataset fashion-mnist --out DIR [--epochs E] [--train-size N] [--valid-size N] [--test-size N] [--seed S] [--only name1,name2] [--force] [--json]",
  positionals: true,
  options: {
    dataset: { type: "string", description: "the dataset (only fashion-mnist)", defaultText: "fashion-mnist" },
    "data-dir": { type: "string", description: "folder of the Fashion-MNIST idx files", defaultText: "the system's dataset folder" },
    out: { type: "string", short: "o", description: "folder to build the zoo in" },
    epochs: { type: "string", description: "training epochs per model", defaultText: String(ZOO_DEFAULTS.epochs) },
    "train-size": { type: "string", description: "training images per model", defaultText: String(ZOO_DEFAULTS.trainSize) },
    "valid-size": { type: "string", description: "held-out clean images (the defenses' valid.h5)", defaultText: String(ZOO_DEFAULTS.validSize) },
    "test-size": { type: "string", description: "clean test images", defaultText: String(ZOO_DEFAULTS.testSize) },
    seed: { type: "string", description: "seed of the split, the poisoning and the training", defaultText: String(ZOO_DEFAULTS.seed) },
    only: { type: "string", description: "build only these models (comma-separated names)", defaultText: "all" },
    "batch-size": { type: "string", description: "training batch size", defaultText: String(ZOO_DEFAULTS.batchSize) },
    lr: { type: "string", description: "learning rate", defaultText: String(ZOO_DEFAULTS.lr) },
    ...FORCE_OPTION,
  },
  async run(ctx) {
    const [sub, ...extra] = ctx.positionals;
    if (sub !== "build") fail(`zoo: expected the subcommand "build", got ${sub === undefined ? "nothing" : `"${sub}"`}`);
    if (extra.length) fail(`zoo build: unexpected argument "${extra[0]}"`);
    const dataset = str(ctx, "dataset") ?? "fashion-mnist";
    if (dataset !== "fashion-mnist") fail(`zoo build: --dataset ${dataset} is not supported (only fashion-mnist)`);
    const out = str(ctx, "out", true);
    // Built in a staging folder that appears as --out only when the whole zoo is done.
    const stage = prepareOutDir(ctx, out, "--out", "zoo.json");
    const only = str(ctx, "only")?.split(",").map((s) => s.trim());
    let bar: Progress | undefined;
    let shown = 0;
    const log = (line: string) => {
      if (!ctx.quiet) process.stderr.write(line + "\n");
    };
    const index = await buildZoo({
      out: stage,
      dataDir: str(ctx, "data-dir"),
      epochs: num(ctx, "epochs", ZOO_DEFAULTS.epochs, { min: 1, max: 1000, integer: true }),
      trainSize: optNum(ctx, "train-size", { min: 1, integer: true }),
      validSize: num(ctx, "valid-size", ZOO_DEFAULTS.validSize, { min: 1, integer: true }),
      testSize: optNum(ctx, "test-size", { min: 1, integer: true }),
      seed: num(ctx, "seed", ZOO_DEFAULTS.seed, { min: 0, max: 2 ** 31 - 1, integer: true }),
      batchSize: num(ctx, "batch-size", ZOO_DEFAULTS.batchSize, { min: 1, max: 65536, integer: true }),
      lr: num(ctx, "lr", ZOO_DEFAULTS.lr, { min: 1e-9, max: 10 }),
      only,
      log: (line) => {
        bar?.done();
        bar = undefined;
        shown = 0;
        log(line);
      },
      onModelStart: (name, epochs) => log(`training ${name} (${epochs} epochs)`),
      onBatch: (name, done, total, loss) => {
        bar ??= progress(ctx, name, total);
        bar.tick(done - shown, `loss ${loss.toFixed(4)}`);
        shown = done;
      },
    });
    const w = Math.max(...index.models.map((m) => m.name.length), 5);
    const lines = [
      `zoo of ${index.models.length} model(s) in ${out} (${index.trainSize} training images, ${index.epochs} epochs, seed ${index.seed})`,
      "",
      `${"model".padEnd(w)}  ${"attack".padEnd(22)}  clean acc  ASR (target)            train s  meets targets`,
      ...index.models.map((m) => {
        const asr = Object.entries(m.asr).map(([t, a]) => `${pct(a)} (→${t})`).join(", ") || "-";
        return `${m.name.padEnd(w)}  ${m.attack.padEnd(22)}  ${pct(m.cleanAccuracy).padStart(9)}  ${asr.padEnd(22)}  ${m.trainSeconds.toFixed(0).padStart(7)}  ${meetsTargets(m) ? "yes" : "NO (clean >= 88%, ASR >= 95%)"}`;
      }),
      "",
      `total ${index.totalSeconds.toFixed(0)} s`,
    ];
    return { json: index, text: lines.join("\n") };
  },
};
