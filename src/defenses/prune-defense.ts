// The pruning defense behind the Defense interface: one repaired network and one G per accuracy drop.
import { checkDrops, pruneDefense, type PruneRepair } from "./pruning.js";
import { BATCH_SIZE_OPTION, defineDefense, OptionError, stageReporter, type Artifact } from "./defense.js";
import { evalLine, gLine, pct } from "../report/text.js";
import type { ReportEvalResult, ReportG } from "../report/types.js";

/** One saved network per drop, as written to result.json next to the report sections. */
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

export const PRUNE_OPTIONS = {
  drops: { kind: "numbers", flag: "drop", description: "clean-accuracy drops (percentage points) at which a pruned network is saved", default: [2, 4, 10, 30] },
  order: { kind: "choice", choices: ["increasing", "decreasing"] as const, description: "prune by increasing (most dormant first) or decreasing mean activation", default: "increasing" },
  layer: { kind: "string", description: "convolutional layer to prune", defaultText: "the last conv layer every path goes through" },
  reportDrop: { kind: "number", description: "the drop whose network the report's evaluation and G describe", defaultText: "4 when listed, else the smallest drop" },
  batchSize: BATCH_SIZE_OPTION,
} as const;

/** File-name form of a drop: 2 → "2", 2.5 → "2.5". */
const tag = (x: number): string => String(x);

export const pruneDefinition = defineDefense({
  name: "prune",
  summary: "pruning defense: prune dormant channels of the last conv layer; writes repaired_X.{h5,onnx}, G_X.onnx",
  kind: "repair",
  options: PRUNE_OPTIONS,
  async run(model, data, o, ctx) {
    const drops = checkDrops(o.drops);
    // The report's evaluation/g sections describe one repair: reportDrop, else 4 (the Fine-Pruning paper's
    // threshold) when listed, else the smallest drop.
    const reportDrop = o.reportDrop ?? (drops.includes(4) ? 4 : drops[0]);
    if (!drops.includes(reportDrop)) throw new OptionError("reportDrop", `${reportDrop} is not one of the drops ${drops.join(",")}`);
    const r = await pruneDefense(model, {
      valid: data.clean,
      test: data.test,
      poisoned: data.poisoned,
      drops,
      order: o.order,
      layer: o.layer,
      batchSize: o.batchSize,
      onCache: stageReporter(ctx.progress, "activations", "img"),
      onStep: (k, total, p) => ctx.progress?.({ stage: "prune", done: k + 1, total: total + 1, unit: "step", note: `${k}/${total} pruned, acc ${pct(p.cleanAccuracy)}${p.asr !== undefined ? ` ASR ${pct(p.asr)}` : ""}` }),
    });
    const main = r.repairs.find((x) => x.drop === reportDrop)!;
    const repairs: PruneRepairJson[] = r.repairs.map((rep) => ({ drop: rep.drop, reached: rep.reached, channelsPruned: rep.channelsPruned, channels: rep.channels, evaluation: rep.evaluation, g: rep.gRates, files: [] }));
    const artifacts: Artifact[] = r.repairs.flatMap((rep: PruneRepair, i): Artifact[] => {
      const onWritten = (f: string[]) => void repairs[i].files.push(...f);
      return [
        { kind: "model", stem: `repaired_${tag(rep.drop)}`, model: rep.model, onWritten },
        {
          kind: "graph",
          file: `G_${tag(rep.drop)}.onnx`,
          graph: rep.g,
          doc: `pruning G of ${model.name} (drop ${rep.drop} pp, ${rep.channelsPruned} channels of ${r.sweep.target.layer}): class ${model.numClasses} = B and B' disagree`,
          onWritten,
        },
      ];
    });

    const t = r.sweep.target;
    const lines = [
      `model       ${model.name}`,
      `layer       ${t.layer} (${t.channels} channels, activations at ${t.value}, ${o.order} order)`,
      `unpruned    ${evalLine(r.before)} on ${(data.test ?? data.clean).name}${data.poisoned ? ` / ${data.poisoned.name}` : ""}`,
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
    return {
      title: `Pruning defense — ${model.name}`,
      repaired: main.model,
      g: main.g,
      evaluation: { before: r.before, after: main.evaluation },
      gRates: main.gRates,
      sections: { pruning: r.pruning },
      extra: { reportDrop, evaluatedOn: r.evaluatedOn, meanActivation: r.sweep.meanActivation, ranking: r.sweep.ranking, repairs },
      artifacts,
      lines,
      note: `${r.pruning.layer}: ${main.channelsPruned}/${r.sweep.ranking.length} channels pruned${main.reached ? "" : ` (${main.drop}-point drop never reached: all pruned)`}`,
      timings: r.timings,
    };
  },
});
