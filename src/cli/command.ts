// What every CLI command looks like, and the options they share.
import { parseArgs } from "node:util";
import { decimal } from "../util/decimal.js";
import { fail } from "../errors.js";
import { checkLabels, checkShape, concatDatasets, type Dataset } from "../io/dataset.js";
import { openDataset } from "../io/open-dataset.js";
import { chanceWarning, detectedScaleNote, detectInputScale } from "../io/input-scale.js";
import { loadModel } from "../io/load-model.js";
import type { ProgressFn } from "../defenses/defense.js";
import type { NcProgress } from "../defenses/neural-cleanse.js";
import { ncProgressEvent } from "../defenses/pipeline.js";
import type { Model } from "../model/model.js";
import { parseChannelValues, withNormalization } from "../model/normalize.js";
import { Progress, progressEnabled } from "./progress.js";

/** One command-line option: its parseArgs type plus what --help prints about it. */
export interface CliOption {
  type: "string" | "boolean";
  short?: string;
  description?: string;
  /** The default as --help shows it. */
  defaultText?: string;
  /** May be given several times (each value kept, in order); read it with `strs`. */
  repeatable?: boolean;
}
export type Options = Record<string, CliOption>;
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
  json: { type: "boolean", description: "print one JSON document on stdout (logs go to stderr)" },
  quiet: { type: "boolean", short: "q", description: "no progress bars" },
  help: { type: "boolean", short: "h", description: "print this help" },
};

export const MODEL_OPTIONS: Options = {
  model: { type: "string", short: "m", description: "the model: Keras .h5 (full model, or weights with --arch) or .onnx" },
  arch: { type: "string", description: "architecture of a weights-only .h5 file (deepid)" },
  "input-scale": { type: "string", description: "pixels are divided by this: 255 if the model expects pixels/255, 1 for raw 0..255 (commands with labelled --clean data detect it when it is not given)" },
  layout: { type: "string", description: "layout of 4-D .h5 data arrays when the shape does not tell (nchw or nhwc)" },
  "batch-size": { type: "string", description: "images per inference run", defaultText: "256" },
  mean: { type: "string", description: "per-channel mean of a model trained behind transforms.Normalize, e.g. 0.4914,0.4822,0.4465 (with --std)" },
  std: { type: "string", description: "per-channel std of that normalisation, e.g. 0.2470,0.2435,0.2616 (with --mean)" },
};

/** Clean validation data (the defenses' own), clean test data and poisoned data (labelled with the target). */
export const DATA_OPTIONS: Options = {
  clean: { type: "string", description: "labelled clean data the defense works on (.h5, image folder with labels.csv, fashion-mnist:test)" },
  test: { type: "string", description: "labelled clean data for the final numbers", defaultText: "--clean" },
  poisoned: { type: "string", repeatable: true, description: "poisoned inputs labelled with the attacker's target (attack success rate); repeat it for several triggers or targets (--poisoned t1.h5 --poisoned t2.h5): the rate is also given per target" },
};

export function parse(cmd: Command, argv: string[]): Context {
  let parsed;
  try {
    // parseArgs takes only its own keys: the help texts stay behind.
    const options = Object.fromEntries(Object.entries({ ...COMMON, ...cmd.options }).map(([k, o]) => [k, { type: o.type, ...(o.short ? { short: o.short } : {}), ...(o.repeatable ? { multiple: true } : {}) }]));
    parsed = parseArgs({ args: argv, options, allowPositionals: cmd.positionals ?? false, strict: true, tokens: true });
  } catch (e) {
    // parseArgs puts its hint (e.g. "use '--input-scale=-XYZ'") on later lines: keep it, on one line.
    return fail(`${cmd.name}: ${(e as Error).message.trim().replace(/\s*\n\s*/g, " ")}`);
  }
  // parseArgs keeps the last of a repeated option: `--clean valid.h5 --clean test.h5` would drop valid.h5
  // without a word. A value given twice is an error; a repeated switch (--quiet --quiet) is harmless. A
  // repeatable option keeps every value, but the same value twice (one file counted twice) is an error.
  const given = new Map<string, string[]>();
  for (const t of parsed.tokens) {
    if (t.kind !== "option" || t.value === undefined) continue;
    // No option takes an empty value, and some would read one as something else (Number("") is 0: --seed "").
    if (t.value.trim() === "") fail(`${cmd.name}: --${t.name} is empty`);
    const before = given.get(t.name) ?? [];
    if (cmd.options[t.name]?.repeatable) {
      if (before.includes(t.value)) fail(`${cmd.name}: --${t.name} "${t.value}" is given twice; give each value once`);
    } else if (before.length > 0) fail(`${cmd.name}: --${t.name} is given twice ("${before[0]}" and "${t.value}"); give it once`);
    given.set(t.name, [...before, t.value]);
  }
  const blank = parsed.positionals.findIndex((p) => p.trim() === "");
  if (blank >= 0) fail(`${cmd.name}: argument ${blank + 1} is empty (an unset shell variable?)`);
  const values = parsed.values as Values;
  return { values, positionals: parsed.positionals, json: values.json === true, quiet: values.quiet === true };
}

export function str(ctx: Context, key: string, required: true): string;
export function str(ctx: Context, key: string, required?: false): string | undefined;
export function str(ctx: Context, key: string, required = false): string | undefined {
  const v = ctx.values[key];
  if (Array.isArray(v)) throw new Error(`--${key} is repeatable: read it with strs`);
  if (v === undefined || v === false) {
    if (required) fail(`missing required option --${key}`);
    return undefined;
  }
  return String(v);
}

/** Every value of a repeatable option, in the order given (none: []). */
export function strs(ctx: Context, key: string): string[] {
  const v = ctx.values[key];
  if (v === undefined || v === false) return [];
  return Array.isArray(v) ? v : [String(v)];
}

export function num(ctx: Context, key: string, dflt?: number, range?: { min?: number; max?: number; integer?: boolean }): number {
  const s = str(ctx, key);
  if (s === undefined) {
    if (dflt === undefined) fail(`missing required option --${key}`);
    return dflt;
  }
  const v = decimal(s);
  if (!Number.isFinite(v)) fail(`--${key} must be a number, got "${s}"`);
  if (range?.integer && !Number.isInteger(v)) fail(`--${key} must be an integer, got ${s}`);
  if (range?.min !== undefined && v < range.min) fail(`--${key} must be at least ${range.min}, got ${s}`);
  if (range?.max !== undefined && v > range.max) fail(`--${key} must be at most ${range.max}, got ${s}`);
  return v;
}

/** An optional numeric option: undefined when absent, else checked as `num` checks it. */
export function optNum(ctx: Context, key: string, range?: { min?: number; max?: number; integer?: boolean }): number | undefined {
  return str(ctx, key) === undefined ? undefined : num(ctx, key, undefined, range);
}

export function numList(ctx: Context, key: string, dflt: number[], range: { min: number; max: number }): number[] {
  const s = str(ctx, key);
  if (s === undefined) return dflt;
  return s.split(",").map((p) => {
    const v = decimal(p);
    if (!Number.isFinite(v)) fail(`--${key}: "${p}" is not a number`);
    if (v < range.min || v > range.max) fail(`--${key}: ${v} is outside ${range.min}..${range.max}`);
    return v;
  });
}

/**
 * The input scale (255 divides pixels by 255, 1 keeps raw 0..255): --input-scale when given; otherwise detected
 * from the labelled data of option `detectFrom` (said on stderr), and required when there is none.
 */
export async function inputScale(ctx: Context, detectFrom?: string): Promise<number> {
  const s = str(ctx, "input-scale");
  if (s === undefined) {
    const spec = detectFrom === undefined ? undefined : str(ctx, detectFrom);
    const why = "255 if the model expects pixels/255, 1 for raw 0..255 pixels";
    if (spec === undefined) fail(`missing required option --input-scale (${why}${detectFrom ? `; or give labelled --${detectFrom} data to detect it from` : ""})`);
    const model = await modelFrom(ctx);
    const raw = await openDataset(spec, { inputScale: 1, layout: layout(ctx) });
    try {
      if (!raw.labels) fail(`missing required option --input-scale (${why}); it can only be detected from labelled data and ${raw.name} has no labels`);
      checkLabels(raw, model.numClasses);
      const d = await detectInputScale(model, raw);
      process.stderr.write(`badnet: ${detectedScaleNote(d, raw.name)}\n`);
      return d.scale;
    } finally {
      raw.close();
    }
  }
  const v = decimal(s);
  // Name the option and echo what was typed: the number alone would report NaN.
  if (!Number.isFinite(v) || v <= 0) fail(`--input-scale must be a positive number (255 or 1), got "${s}"`);
  return v;
}

const loadedModels = new WeakMap<Context, Promise<Model>>();

/** The --model of this command (with --mean/--std applied), loaded once (scale detection and the command share it). */
export function modelFrom(ctx: Context): Promise<Model> {
  let m = loadedModels.get(ctx);
  if (!m) {
    m = loadModel(str(ctx, "model", true), { arch: str(ctx, "arch") }).then((model) => normalizationFrom(ctx, model));
    loadedModels.set(ctx, m);
  }
  return m;
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
  const ds = await openDataset(spec, { inputScale: scale, layout: layout(ctx) });
  if (key === "clean" && ds.labels) await warnNearChance(ctx, ds, scale);
  return ds;
}

/** A loud stderr warning when the model scores about chance on the labelled clean data at this scale. */
async function warnNearChance(ctx: Context, ds: Dataset, scale: number): Promise<void> {
  const model = await modelFrom(ctx);
  // The command would stop on these anyway; checked first so no warning precedes that error.
  checkShape(ds, model.inputShape, `model ${model.name}`);
  checkLabels(ds, model.numClasses);
  const warning = await chanceWarning(model, ds, scale);
  if (warning) process.stderr.write(`badnet: ${warning}\n`);
}

/**
 * The --poisoned data: one set, or several (one per trigger or target) read as one, in the order given. Each
 * image's label is its attacker's target, so the rates split by target wherever the sets hold more than one.
 */
export async function poisonedFrom(ctx: Context, scale: number): Promise<Dataset | undefined> {
  const specs = strs(ctx, "poisoned");
  if (specs.length === 0) return undefined;
  const sets: Dataset[] = [];
  try {
    for (const spec of specs) sets.push(await openDataset(spec, { inputScale: scale, layout: layout(ctx) }));
    return concatDatasets(sets);
  } catch (e) {
    for (const ds of sets) ds.close();
    throw e;
  }
}

/** The model and the --clean (required), --test and --poisoned data of a defense command (DATA_OPTIONS). */
export async function defenseInputs(ctx: Context, scale: number): Promise<{ model: Model; valid: Dataset; test?: Dataset; poisoned?: Dataset }> {
  const model = await modelFrom(ctx);
  const valid = await dataFrom(ctx, "clean", scale, true);
  const test = await dataFrom(ctx, "test", scale);
  const poisoned = await poisonedFrom(ctx, scale);
  return { model, valid, test, poisoned };
}

export function batchSize(ctx: Context, dflt = 256): number {
  return num(ctx, "batch-size", dflt, { min: 1, max: 65536, integer: true });
}

export function progress(ctx: Context, label: string, total: number, unit = "img"): Progress {
  return new Progress(label, total, { quiet: !progressEnabled(ctx.quiet), unit });
}

/** Progress bars for a run's progress events: one bar per stage; call done() when the run ends. */
export function progressBars(ctx: Context): { progress: ProgressFn; done: () => void } {
  let bar: Progress | undefined;
  let stage: string | undefined;
  let shown = 0;
  return {
    progress(e) {
      if (e.stage !== stage) {
        bar?.done();
        stage = e.stage;
        shown = 0;
        bar = progress(ctx, e.stage, e.total, e.unit);
      }
      bar!.tick(e.done - shown, e.note);
      shown = e.done;
    },
    done: () => bar?.done(),
  };
}

/** Progress of a Neural Cleanse scan: one bar per trigger family and phase; call done() when the scan ends. */
export function ncProgress(ctx: Context): { onProgress: (p: NcProgress) => void; done: () => void } {
  const bars = progressBars(ctx);
  return { onProgress: (p) => bars.progress(ncProgressEvent(p)), done: bars.done };
}

export { pct } from "../report/text.js";
