// Input normalisation for models trained behind transforms.Normalize(mean, std): (x − mean) / std per channel.
//
// The nodes are prepended to the model's own graph at load, so the model's input stays what every command
// feeds (pixels divided by --input-scale) and every defense, every repaired network and G get the
// normalisation for free: G takes the same raw input as B.
import { fail } from "../errors.js";
import { f32 } from "../graph/ir.js";
import type { Model, Normalization } from "./model.js";

/** Parses "0.4914,0.4822,0.4465" (one value per channel, or one value for all channels) for `--${flag}`. */
export function parseChannelValues(text: string, flag: string, channels: number): number[] {
  const parts = text.split(",").map((p) => p.trim());
  const values = parts.map((p) => {
    const v = Number(p);
    if (p === "" || !Number.isFinite(v)) fail(`--${flag}: "${p}" is not a number (expected ${channels} comma-separated values, e.g. 0.4914,0.4822,0.4465)`);
    return v;
  });
  if (values.length === 1) return new Array<number>(channels).fill(values[0]);
  if (values.length !== channels) fail(`--${flag} has ${values.length} values but the model's input has ${channels} channels`);
  return values;
}

/** Checks a normalisation against the model's channel count; a std of 0 (or below) is a user error. */
export function checkNormalization(n: Normalization, channels: number): void {
  if (n.mean.length !== channels) fail(`--mean has ${n.mean.length} values but the model's input has ${channels} channels`);
  if (n.std.length !== channels) fail(`--std has ${n.std.length} values but the model's input has ${channels} channels`);
  for (const s of n.std) if (!(s > 0) || !Number.isFinite(s)) fail(`--std values must be positive, got ${s}`);
  for (const m of n.mean) if (!Number.isFinite(m)) fail(`--mean values must be finite, got ${m}`);
}

/**
 * The model with (x − mean) / std in front of everything that read its input. The input keeps its name and
 * shape. A model that is already normalised is refused (normalising twice is never what a user meant).
 */
export function withNormalization(model: Model, n: Normalization): Model {
  const [c] = model.inputShape;
  checkNormalization(n, c);
  if (model.normalization) fail(`model ${model.name} already has an input normalisation`);
  const g = model.graph.clone();
  const others = new Set(g.nodes.filter((node) => !node.inputs.includes(model.input)));
  const mean = g.constant(f32([1, c, 1, 1], n.mean), "normalize_mean");
  const std = g.constant(f32([1, c, 1, 1], n.std), "normalize_std");
  // Sub then Div, as torchvision's Normalize computes it, so logits match PyTorch's to float rounding.
  const centered = g.op("Sub", [model.input, mean], {}, g.fresh("input_centered"));
  const normalized = g.op("Div", [centered, std], {}, g.fresh("input_normalized"));
  const added = new Set(g.nodes.slice(-2));
  g.replaceUses(model.input, normalized, new Set([...others, ...added]));
  g.toposort();
  return { ...model, graph: g, normalization: { mean: [...n.mean], std: [...n.std] } };
}
