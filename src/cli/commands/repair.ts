import { join } from "node:path";
import { fail } from "../../errors.js";
import type { ReportData } from "../../report/types.js";
import { MODEL_OPTIONS, str, type Command, type Context, DATA_OPTIONS } from "../command.js";
import { OUTPUT_OPTIONS, outDir, readResult, writeResult } from "../output.js";
import { anpCommand, ibauCommand } from "./adversarial-repairs.js";
import { detectCommand } from "./detect.js";
import { finePruneCommand } from "./fine-prune.js";
import { ncPruneCommand } from "./nc-prune.js";
import { pruneCommand } from "./prune.js";
import { stripCommand } from "./strip.js";
import { unlearnCommand } from "./unlearn.js";

const DEFENSES: Record<string, Command> = {
  "fine-prune": finePruneCommand,
  prune: pruneCommand,
  "nc-prune": ncPruneCommand,
  unlearn: unlearnCommand,
  strip: stripCommand,
  anp: anpCommand,
  ibau: ibauCommand,
};
/** Defenses that start from the reversed trigger of the flagged labels. */
const NEEDS_TRIGGER = new Set(["nc-prune", "unlearn"]);

/** Runs another command with this run's parsed options, restricted to the ones it accepts. */
async function runSub(cmd: Command, ctx: Context, overrides: Record<string, string | boolean | undefined>, skip: string[] = []) {
  const values: Context["values"] = {};
  for (const k of Object.keys(cmd.options)) if (ctx.values[k] !== undefined && !skip.includes(k)) values[k] = ctx.values[k];
  Object.assign(values, overrides);
  return cmd.run({ ...ctx, values, positionals: [], json: true });
}

export const repairCommand: Command = {
  name: "repair",
  summary: "detect with Neural Cleanse, then repair (auto: unlearn if a label is flagged, else fine-prune; or prune, nc-prune, strip, anp, ibau); writes everything to --out",
  usage:
    "--model M [--arch deepid] --input-scale S --clean VALID [--test TEST] [--poisoned P] [--defense auto|fine-prune|prune|nc-prune|unlearn|strip|anp|ibau] " +
    "[--labels 0-9] [--skip-detect] --out DIR [--report] [--json]",
  options: {
    ...MODEL_OPTIONS,
    ...DATA_OPTIONS,
    defense: { type: "string" },
    labels: { type: "string" },
    "skip-detect": { type: "boolean" },
    seed: { type: "string" },
    ...OUTPUT_OPTIONS,
  },
  async run(ctx) {
    const t0 = performance.now();
    // "auto": unlearning from the reversed trigger when Neural Cleanse flags a label, else Fine-Pruning
    // (which needs no trigger).
    let defense = str(ctx, "defense") ?? "auto";
    if (defense !== "auto" && !DEFENSES[defense]) fail(`--defense must be auto or one of ${Object.keys(DEFENSES).join(", ")}; got "${defense}"`);
    const skipDetect = ctx.values["skip-detect"] === true;
    if (skipDetect && NEEDS_TRIGGER.has(defense)) fail(`--defense ${defense} needs Neural Cleanse's reversed trigger; drop --skip-detect`);
    const dir = outDir(ctx)!;
    const lines: string[] = [];

    let detected: ReportData | undefined;
    if (!skipDetect) {
      const detectDir = join(dir, "detect");
      // detect's --batch-size is Neural Cleanse's optimization batch, not an inference batch: not forwarded.
      const d = await runSub(detectCommand, ctx, { out: detectDir, report: false }, ["batch-size"]);
      detected = readResult(detectDir);
      lines.push(d.text, "");
      const flagged = detected.neuralCleanse?.flagged ?? [];
      if (defense === "auto") defense = flagged.length ? "unlearn" : "fine-prune";
      if (flagged.length === 0 && NEEDS_TRIGGER.has(defense)) {
        const result: ReportData = { ...detected, title: `Repair — nothing flagged` };
        const files = await writeResult(ctx, dir, result);
        lines.push(`Neural Cleanse flagged no label: ${defense} has no trigger to work from; nothing repaired.`, `wrote ${files.join(", ")}`);
        return { json: result, text: lines.join("\n") };
      }
    }
    if (defense === "auto") defense = "fine-prune";
    const cmd = DEFENSES[defense];
    const rep = await runSub(cmd, ctx, { out: dir, report: false, ...(NEEDS_TRIGGER.has(defense) ? { trigger: join(dir, "detect") } : {}) });
    lines.push(rep.text);
    const repaired = readResult(dir);
    const result: ReportData = {
      ...repaired,
      title: `Repair (${detected ? "Neural Cleanse + " : ""}${defense}) — ${repaired.model?.name ?? ""}`,
      command: undefined,
      createdAt: undefined,
      ...(detected?.neuralCleanse ? { neuralCleanse: detected.neuralCleanse } : {}),
      timings: { ...(detected?.timings ? Object.fromEntries(Object.entries(detected.timings).map(([k, v]) => [`detect.${k}`, v])) : {}), ...repaired.timings, total: (performance.now() - t0) / 1000 },
    };
    const files = await writeResult(ctx, dir, result);
    lines.push("", `wrote ${files.join(", ")}`);
    return { json: result, text: lines.join("\n") };
  },
};
