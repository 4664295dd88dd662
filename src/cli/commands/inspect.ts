import { prunable } from "../../defenses/pruning.js";
import { summarize } from "../../model/summary.js";
import { MODEL_OPTIONS, modelFrom, type Command } from "../command.js";

export const inspectCommand: Command = {
  name: "inspect",
  summary: "layers, output shapes and parameter counts of a model (like Keras summary())",
  usage: "--model M [--arch deepid] [--json]",
  options: { model: MODEL_OPTIONS.model, arch: MODEL_OPTIONS.arch },
  async run(ctx) {
    const model = await modelFrom(ctx);
    const s = summarize(model);
    // Where prune/fine-prune may cut (--layer takes the name or the readable name); the rule is in model/prunable.ts.
    const cuts = prunable(model).map((l) => ({ name: l.name, readable: l.readable, kind: l.kind, channels: l.channels, default: l.isDefault }));
    const w = Math.max(10, ...s.layers.map((l) => l.name.length + l.className.length + 3));
    const lines = [
      `model ${s.name}  (${s.source})`,
      `input ${s.inputShape.join("x")} (C x H x W), ${s.numClasses} classes`,
      "",
      `${"layer (type)".padEnd(w)}  ${"output shape".padEnd(18)}  params`,
      ...s.layers.map((l) => `${`${l.name} (${l.className})`.padEnd(w)}  ${`[${l.outputShape.join(", ")}]`.padEnd(18)}  ${l.params}`),
      "",
      `total params: ${s.totalParams}`,
      "",
      "prunable layers (prune/fine-prune --layer; * = default):",
      ...cuts.map((l) => `${l.default ? "*" : " "} ${l.readable.padEnd(40)}  ${String(l.channels).padStart(5)} channels  ${l.name === l.readable ? "" : l.name}`.trimEnd()),
    ];
    return { json: { ...s, prunable: cuts }, text: lines.join("\n") };
  },
};
