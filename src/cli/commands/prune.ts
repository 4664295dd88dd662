import { basename, join } from "node:path";
import { writeOnnx } from "../../defenses/g-model.js";
import { checkDrops, pruneDefense, type PruneOrder } from "../../defenses/pruning.js";
import { fail } from "../../errors.js";
import { saveRepaired } from "../../io/save-model.js";
import type { ReportData, ReportEvalResult, ReportG } from "../../report/types.js";
import { batchSize, inputScale, MODEL_OPTIONS, numList, pct, progress, str, type Command, type Context, DATA_OPTIONS, defenseInputs } from "../command.js";
import { OUTPUT_OPTIONS, outDir, reportModelOf, writeResult } from "../output.js";

export function orderOption(ctx: Context): PruneOrder {
  const o = str(ctx, "order") ?? "increasing";
  if (o !== "increasing" && o !== "decreasing") fail(`--order must be increasing or decreasing, got "${o}"`);
  return o;
}

/** "12.34% acc, ASR 5.00%" */
export function evalLine(r: ReportEvalResult): string {
  return `accuracy ${pct(r.cleanAccuracy)}${r.asr !== undefined ? `, ASR ${pct(r.asr)}` : ""}`;
}

export function gLine(g: ReportG): string {
  const parts = [`clean: ${pct(g.clean.correct / g.clean.n)} correct, ${pct(g.clean.flagged / g.clean.n)} flagged (FPR)`];
  if (g.poisoned) parts.push(`poisoned: ${pct(g.poisoned.flagged / g.poisoned.n)} detected, ${pct(g.poisoned.attackSuccess / g.poisoned.n)} residual ASR`);
  return parts.join("; ");
}

/** File-name form of a drop: 2 → "2", 2.5 → "2.5". */
const tag = (x: number): string => String(x);

/** One saved network per drop, as written to result.json next to the ReportData sections. */
export interface PruneRepairJson {
  /** Percentage points. */
  drop: number;
  /** False when even pruning every channel did not lose that much accuracy (all channels pruned then). */
  reached: boolean;
  channelsPruned: number;
  channels: number[];
  /** B'_X on the evaluation data. */
  evaluation: ReportEvalResult;
  g: ReportG;
  files: string[];
}

export const pruneCommand: Command = {
  name: "prune",
  summary: "pruning defense: prune dormant channels of the last conv layer; writes repaired_X.{h5,onnx}, G_X.onnx",
  usage:
    "--model M [--arch deepid] [--input-scale S] --clean VALID [--test TEST] [--poisoned P] [--drop 2,4,10,30] " +
    "[--order increasing|decreasing] [--layer conv_3] [--report-drop X] --out DIR [--report] [--json] [--quiet]",
  options: {
    ...MODEL_OPTIONS,
    ...DATA_OPTIONS,
    drop: { type: "string" },
    order: { type: "string" },
    layer: { type: "string" },
    "report-drop": { type: "string" },
    ...OUTPUT_OPTIONS,
  },
  async run(ctx) {
    const t0 = performance.now();
    const scale = await inputScale(ctx, "clean");
    const drops = checkDrops(numList(ctx, "drop", [2, 4, 10, 30], { min: -Infinity, max: Infinity }));
    // The report's evaluation/g sections describe one repair: --report-drop, else 4 (the Fine-Pruning
    // paper's threshold) when listed, else the smallest drop.
    const rd = str(ctx, "report-drop");
    const reportDrop = rd === undefined ? (drops.includes(4) ? 4 : drops[0]) : Number(rd);
    if (!drops.includes(reportDrop)) fail(`--report-drop ${rd} is not one of --drop ${drops.join(",")}`);
    const order = orderOption(ctx);
    const dir = outDir(ctx)!;
    const { model, valid, test, poisoned } = await defenseInputs(ctx, scale);
    const tLoad = performance.now();

    const cacheBar = progress(ctx, "activations", valid.size + (test?.size ?? 0) + (poisoned?.size ?? 0));
    let cached = 0;
    let stepBar: ReturnType<typeof progress> | undefined;
    const r = await pruneDefense(model, {
      valid,
      test,
      poisoned,
      drops,
      order,
      layer: str(ctx, "layer"),
      batchSize: batchSize(ctx),
      onCache: (done) => {
        cacheBar.tick(done - cached);
        cached = done;
      },
      onStep: (k, total, p) => {
        if (!stepBar) {
          cacheBar.done();
          stepBar = progress(ctx, "prune", total + 1, "step");
        }
        stepBar.tick(1, `${k}/${total} pruned, acc ${pct(p.cleanAccuracy)}${p.asr !== undefined ? ` ASR ${pct(p.asr)}` : ""}`);
      },
    });
    cacheBar.done();
    stepBar?.done();
    const tPrune = performance.now();

    const repairs: PruneRepairJson[] = [];
    for (const rep of r.repairs) {
      const files = await saveRepaired(dir, `repaired_${tag(rep.drop)}`, rep.model);
      const gPath = join(dir, `G_${tag(rep.drop)}.onnx`);
      writeOnnx(gPath, rep.g, `pruning G of ${model.name} (drop ${rep.drop} pp, ${rep.channelsPruned} channels of ${r.sweep.target.layer}): class ${model.numClasses} = B and B' disagree`);
      files.push(gPath);
      repairs.push({ drop: rep.drop, reached: rep.reached, channelsPruned: rep.channelsPruned, channels: rep.channels, evaluation: rep.evaluation, g: rep.gRates, files });
    }
    const main = r.repairs.find((x) => x.drop === reportDrop)!;
    const report: ReportData & { repairs: PruneRepairJson[]; reportDrop: number; evaluatedOn: string; meanActivation: number[]; ranking: number[] } = {
      title: `Pruning defense — ${model.name}`,
      model: reportModelOf(model, str(ctx, "model", true)),
      evaluation: { before: r.before, after: main.evaluation },
      pruning: r.pruning,
      g: main.gRates,
      timings: { load: (tLoad - t0) / 1000, ...r.timings, write: (performance.now() - tPrune) / 1000 },
      reportDrop,
      evaluatedOn: r.evaluatedOn,
      meanActivation: r.sweep.meanActivation,
      ranking: r.sweep.ranking,
      repairs,
    };
    const [resultPath, reportPath] = await writeResult(ctx, dir, report);
    for (const d of [valid, test, poisoned]) d?.close();

    const t = r.sweep.target;
    const evalName = (test ?? valid).name;
    const lines = [
      `model       ${model.name}`,
      `layer       ${t.layer} (${t.channels} channels, activations at ${t.value}, ${order} order)`,
      `unpruned    ${evalLine(r.before)} on ${evalName}${poisoned ? ` / ${poisoned.name}` : ""}`,
      "",
      "drop   channels  valid acc   | final numbers on the evaluation data and G",
    ];
    for (const rep of r.repairs) {
      const p = r.sweep.curve[rep.channelsPruned];
      lines.push(
        `${`${rep.drop}pp`.padEnd(6)} ${String(rep.channelsPruned).padStart(8)}  ${pct(p.cleanAccuracy).padStart(9)}${rep.reached ? " " : "*"}  | B': ${evalLine(rep.evaluation)}`,
        `${"".padEnd(29)}| G:  ${gLine(rep.gRates)}`,
      );
    }
    if (r.repairs.some((x) => !x.reached)) lines.push("* drop not reached even with every channel pruned; that network is saved");
    lines.push("", `wrote       ${dir}: ${repairs.flatMap((x) => x.files.map((f) => basename(f))).join(", ")}, ${[resultPath, reportPath].filter(Boolean).map((f) => basename(f)).join(", ")}`);
    return { json: report, text: lines.join("\n") };
  },
};
