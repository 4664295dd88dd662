// What every CLI command looks like, and the options they share.
import { parseArgs, type ParseArgsConfig } from "node:util";
import { fail } from "../errors.js";
import { openDataset, type Dataset } from "../io/dataset.js";
import { loadModel } from "../io/load-model.js";
import type { NcProgress } from "../defenses/neural-cleanse.js";
import type { Model } from "../model/model.js";
import { parseChannelValues, withNormalization } from "../model/normalize.js";
import { Progress, progressEnabled } from "./progress.js";

export type Options = NonNullable<ParseArgsConfig["options"]>;
export type Values = Record<string, string | boolean | string[] | undefined>;

export interface Context {
  values: Values;
  positionals: string[];
  json: boolean;
  quiet: boolean;
}

export interface Command {
  name: string;
  summary: string;
  /** Usage line(s) after "badnet <name>". */
  usage: string;
  options: Options;
  positionals?: boolean;
  /** Returns the JSON result (printed with --json) and the human-readable text (printed otherwise). */
  run(ctx: Context): Promise<{ json: unknown; text: string }>;
}

export const COMMON: Options = {
  json: { type: "boolean" },
  quiet: { type: "boolean", short: "q" },
  help: { type: "boolean", short: "h" },
};

export const MODEL_OPTIONS: Options = {
  model: { type: "string", short: "m" },
  arch: { type: "string" },
  "input-scale": { type: "string" },
  layout: { type: "string" },
  "batch-size": { type: "string" },
  mean: { type: "string" },
  std: { type: "string" },
};

/** Clean validation data (the defenses' own), clean test data and poisoned data (labelled with the target). */
export const DATA_OPTIONS: Options = {
  clean: { type: "string" },
  test: { type: "string" },
  poisoned: { type: "string" },
};

export function parse(cmd: Command, argv: string[]): Context {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: { ...COMMON, ...cmd.options }, allowPositionals: cmd.positionals ?? false, strict: true });
  } catch (e) {
    // parseArgs puts its hint (e.g. "use '--input-scale=-XYZ'") on later lines: keep it, on one line.
    return fail(`${cmd.name}: ${(e as Error).message.trim().replace(/\s*\n\s*/g, " ")}`);
  }
  const values = parsed.values as Values;
  return { values, positionals: parsed.positionals, json: values.json === true, quiet: values.quiet === true };
}

export function str(ctx: Context, key: string, required: true): string;
export function str(ctx: Context, key: string, required?: false): string | undefined;
export function str(ctx: Context, key: string, required = false): string | undefined {
  const v = ctx.values[key];
  if (v === undefined || v === false) {
    if (required) fail(`missing required option --${key}`);
    return undefined;
  }
  return String(v);
}

export function num(ctx: Context, key: string, dflt?: number, range?: { min?: number; max?: number; integer?: boolean }): number {
  const s = str(ctx, key);
  if (s === undefined) {
    if (dflt === undefined) fail(`missing required option --${key}`);
    return dflt;
  }
  const v = Number(s);
  if (!Number.isFinite(v)) fail(`--${key} must be a number, got "${s}"`);
  if (range?.integer && !Number.isInteger(v)) fail(`--${key} must be an integer, got ${s}`);
  if (range?.min !== undefined && v < range.min) fail(`--${key} must be at least ${range.min}, got ${s}`);
  if (range?.max !== undefined && v > range.max) fail(`--${key} must be at most ${range.max}, got ${s}`);
  return v;
}

export function numList(ctx: Context, key: string, dflt: number[], range: { min: number; max: number }): number[] {
  const s = str(ctx, key);
  if (s === undefined) return dflt;
  return s.split(",").map((p) => {
    const v = Number(p.trim());
    if (p.trim() === "" || !Number.isFinite(v)) fail(`--${key}: "${p}" is not a number`);
    if (v < range.min || v > range.max) fail(`--${key}: ${v} is outside ${range.min}..${range.max}`);
    return v;
  });
}

/** --input-scale is explicit: 255 divides pixels by 255, 1 keeps raw 0..255. */
export function inputScale(ctx: Context): number {
  const s = str(ctx, "input-scale");
  if (s === undefined) fail("missing required option --input-scale (255 if the model expects pixels/255, 1 for raw 0..255 pixels)");
  const v = Number(s);
  // Name the option and echo what was typed: Number("abc") alone would report NaN.
  if (s.trim() === "" || !Number.isFinite(v) || v <= 0) fail(`--input-scale must be a positive number (255 or 1), got "${s}"`);
  return v;
}

export async function modelFrom(ctx: Context): Promise<Model> {
  const model = await loadModel(str(ctx, "model", true), { arch: str(ctx, "arch") });
  return normalizationFrom(ctx, model);
}

/** --mean R,G,B --std R,G,B (both or neither): the model with (x − mean) / std prepended to its graph. */
export function normalizationFrom(ctx: Context, model: Model): Model {
  const mean = str(ctx, "mean");
  const std = str(ctx, "std");
  if (mean === undefined && std === undefined) return model;
  if (mean === undefined || std === undefined) fail("--mean and --std go together: give both (one value per input channel)");
  const c = model.inputShape[0];
  return withNormalization(model, { mean: parseChannelValues(mean, "mean", c), std: parseChannelValues(std, "std", c) });
}

export function layout(ctx: Context): "nchw" | "nhwc" | undefined {
  const l = str(ctx, "layout");
  if (l === undefined) return undefined;
  if (l !== "nchw" && l !== "nhwc") fail(`--layout must be nchw or nhwc, got "${l}"`);
  return l;
}

export async function dataFrom(ctx: Context, key: string, scale: number, required: true): Promise<Dataset>;
export async function dataFrom(ctx: Context, key: string, scale: number, required?: false): Promise<Dataset | undefined>;
export async function dataFrom(ctx: Context, key: string, scale: number, required = false): Promise<Dataset | undefined> {
  const spec = required ? str(ctx, key, true) : str(ctx, key);
  if (spec === undefined) return undefined;
  return openDataset(spec, { inputScale: scale, layout: layout(ctx) });
}

/** The model and the --clean (required), --test and --poisoned data of a defense command (DATA_OPTIONS). */
export async function defenseInputs(ctx: Context, scale: number): Promise<{ model: Model; valid: Dataset; test?: Dataset; poisoned?: Dataset }> {
  const model = await modelFrom(ctx);
  const valid = await dataFrom(ctx, "clean", scale, true);
  const test = await dataFrom(ctx, "test", scale);
  const poisoned = await dataFrom(ctx, "poisoned", scale);
  return { model, valid, test, poisoned };
}

export function batchSize(ctx: Context, dflt = 256): number {
  return num(ctx, "batch-size", dflt, { min: 1, max: 65536, integer: true });
}

export function progress(ctx: Context, label: string, total: number, unit = "img"): Progress {
  return new Progress(label, total, { quiet: !progressEnabled(ctx.quiet), unit });
}

/** Progress of a Neural Cleanse scan: one bar per trigger family and phase; call done() when the scan ends. */
export function ncProgress(ctx: Context): { onProgress: (p: NcProgress) => void; done: () => void } {
  let bar: Progress | undefined;
  let key = "";
  return {
    onProgress(p) {
      if (`${p.family} ${p.phase}` !== key) {
        bar?.done();
        key = `${p.family} ${p.phase}`;
        bar = progress(ctx, `NC ${p.family} ${p.phase === "screen" ? "screening" : "full"}`, p.total, p.phase === "screen" ? "labels" : "runs");
      }
      bar!.tick(1, `label ${p.label} norm ${p.l1Norm.toFixed(1)}`);
    },
    done: () => bar?.done(),
  };
}

export const pct = (x: number): string => `${(100 * x).toFixed(2)}%`;
