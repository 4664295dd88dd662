// The one shape every defense has (after ART's PoisonFilteringDefence and trojanzoo's defense classes): a
// name, a one-line summary, an option spec and run(model, data, options, context) → DefenseOutcome.
//
// The option spec is the single source for an option's name, description, default and validation: the
// library resolves and checks options from it, the CLI derives its flags and --help from it. Validation
// errors are OptionErrors that name the option ("option maxDrop: must be in [0, 1], got 2"); the CLI turns
// the option's name into its flag ("--max-drop must be in [0, 1], got 2").
//
// Data is {clean, test?, poisoned?} everywhere: `clean` is the labelled clean data the defense works on
// (activations, thresholds, fine-tuning), `test` the clean data its final numbers are measured on (default:
// `clean`), `poisoned` inputs labelled with the attacker's target (attack success rate).
import { BATCH_NORM_MODES, DEFAULT_BATCH_NORM, type BatchNormMode } from "../train/batch-norm-stats.js";
import { UserError } from "../errors.js";
import type { Graph } from "../graph/ir.js";
import type { Dataset } from "../io/dataset.js";
import type { Model } from "../model/model.js";
import type { ReportData, ReportEvalResult, ReportEvaluation, ReportG, ReportNeuralCleanse, ReportOverBudget } from "../report/types.js";
import type { ReversedTrigger } from "./nc-mitigation.js";
import { refuseG } from "./g-model.js";
import { decimal } from "../util/decimal.js";
import { MAX_SEED } from "../util/random.js";

// ---------------------------------------------------------------------------------------------------------
// Options

interface OptionBase {
  /** One line for --help and the docs. */
  description: string;
  /** CLI flag without the dashes; default: the option's name in kebab-case (maxDrop → max-drop). */
  flag?: string;
  /** Shown in --help instead of the default (e.g. "the model's last conv layer"). */
  defaultText?: string;
}
export interface NumberOption extends OptionBase {
  kind: "number" | "integer";
  default?: number;
  min?: number;
  max?: number;
  /** The bound itself is not allowed (min < v, v < max) instead of min ≤ v ≤ max. */
  exclusiveMin?: boolean;
  exclusiveMax?: boolean;
}
export interface NumberListOption extends OptionBase {
  kind: "numbers";
  default?: readonly number[];
  min?: number;
  max?: number;
}
export interface ChoiceOption<C extends string = string> extends OptionBase {
  kind: "choice";
  choices: readonly C[];
  default?: C;
}
export interface StringOption extends OptionBase {
  kind: "string";
  default?: string;
}
export interface BooleanOption extends OptionBase {
  kind: "boolean";
  default?: boolean;
}
export type OptionSpec = NumberOption | NumberListOption | ChoiceOption | StringOption | BooleanOption;
export type OptionSpecs = Readonly<Record<string, OptionSpec>>;

type ValueOf<O extends OptionSpec> = O extends NumberOption
  ? number
  : O extends NumberListOption
    ? number[]
    : O extends { kind: "choice"; choices: readonly (infer C)[] }
      ? C
      : O extends BooleanOption
        ? boolean
        : string;
/** The resolved options of a spec: options with a default are always present. */
export type OptionValues<S extends OptionSpecs> = { [K in keyof S]: S[K] extends { default: unknown } ? ValueOf<S[K]> : ValueOf<S[K]> | undefined };

/** An option's name in kebab-case: maxDrop → max-drop. */
export const kebab = (name: string): string => name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
export const flagOf = (name: string, o: OptionSpec): string => o.flag ?? kebab(name);

/** An invalid option value. `option` is the library name; the CLI maps it to its flag. */
export class OptionError extends UserError {
  constructor(
    readonly option: string,
    /** The complaint without the option's name, e.g. "must be at least 1, got 0". */
    readonly complaint: string,
    /** The option's command-line flag when its spec names one (default: kebab-case of `option`). */
    readonly flag = kebab(option),
  ) {
    super(`option ${option}: ${complaint}`);
    this.name = "OptionError";
  }
}

function checkNumber(name: string, o: NumberOption | NumberListOption, v: number, text: string): number {
  if (!Number.isFinite(v)) throw new OptionError(name, `must be a number, got "${text}"`);
  if (o.kind === "integer" && !Number.isInteger(v)) throw new OptionError(name, `must be an integer, got ${text}`);
  const exMin = o.kind !== "numbers" && o.exclusiveMin === true;
  const exMax = o.kind !== "numbers" && o.exclusiveMax === true;
  if (o.min !== undefined && (exMin ? v <= o.min : v < o.min)) throw new OptionError(name, `must be ${exMin ? "above" : "at least"} ${o.min}, got ${text}`);
  if (o.max !== undefined && (exMax ? v >= o.max : v > o.max)) throw new OptionError(name, `must be ${exMax ? "below" : "at most"} ${o.max}, got ${text}`);
  return v;
}

/** One option's value from a typed value or its text (as typed on the command line); undefined → default. */
function resolveOne(name: string, o: OptionSpec, given: unknown): unknown {
  if (given === undefined) return o.kind === "numbers" && o.default ? [...o.default] : o.default;
  switch (o.kind) {
    case "number":
    case "integer": {
      const text = String(given);
      if (typeof given === "string" && given.trim() === "") throw new OptionError(name, `must be a number, got ""`);
      return checkNumber(name, o, typeof given === "number" ? given : decimal(text), text);
    }
    case "numbers": {
      const list = typeof given === "string" ? given.split(",") : Array.isArray(given) ? given : [given];
      if (list.length === 0) throw new OptionError(name, "needs at least one value");
      return list.map((p) => {
        const t = String(p).trim();
        if (t === "") throw new OptionError(name, `"${String(p)}" is not a number`);
        return checkNumber(name, o, typeof p === "number" ? p : decimal(t), t);
      });
    }
    case "choice":
      if (!o.choices.includes(String(given))) throw new OptionError(name, `must be ${o.choices.join(" or ")}, got "${String(given)}"`);
      return String(given);
    case "boolean":
      if (typeof given !== "boolean") throw new OptionError(name, `is a switch (true or false), got "${String(given)}"`);
      return given;
    case "string":
      return String(given);
  }
}

/**
 * The options of a spec from what the caller gave (typed values, or command-line text): defaults filled in,
 * every value checked. Unknown keys are an OptionError.
 */
export function resolveOptions<S extends OptionSpecs>(spec: S, given: Readonly<Record<string, unknown>> = {}): OptionValues<S> {
  for (const k of Object.keys(given)) if (!(k in spec) && given[k] !== undefined) throw new OptionError(k, `unknown option (known: ${Object.keys(spec).join(", ")})`);
  const out: Record<string, unknown> = {};
  for (const [name, o] of Object.entries(spec)) {
    let v: unknown;
    try {
      v = resolveOne(name, o, given[name]);
    } catch (e) {
      throw e instanceof OptionError ? new OptionError(e.option, e.complaint, flagOf(name, o)) : e;
    }
    if (v !== undefined) out[name] = v;
  }
  return out as OptionValues<S>;
}

/** The entries of `given` that `spec` describes (a library options object also carries hooks and data). */
export function pickOptions(spec: OptionSpecs, given: object): Record<string, unknown> {
  const g = given as Record<string, unknown>;
  return Object.fromEntries(Object.keys(spec).map((k) => [k, g[k]]));
}

// ---------------------------------------------------------------------------------------------------------
// Data, context, progress

export interface DefenseData {
  /** Labelled clean data the defense works on (activations, thresholds, fine-tuning). */
  clean: Dataset;
  /** Labelled clean data the final numbers are measured on (default: clean). */
  test?: Dataset;
  /** Inputs labelled with the attacker's target: the attack success rate and G's detection rate. */
  poisoned?: Dataset;
}

/** One progress report: `done` of `total` units of the named stage (a new stage name starts a new bar). */
export interface ProgressEvent {
  stage: string;
  done: number;
  total: number;
  /** Unit of work, e.g. "img", "step", "label". */
  unit?: string;
  /** A short status, e.g. "acc 91.2%, ASR 3.0%". */
  note?: string;
}
export type ProgressFn = (e: ProgressEvent) => void;

/** Reversed triggers handed to a defense that starts from them (nc-prune, unlearn), at full precision. */
export interface TriggerInput {
  /** Labels flagged as backdoor targets (empty: nothing flagged, nothing to repair). */
  flagged: number[];
  triggers: ReversedTrigger[];
  /** Where they came from, for the report: "neural-cleanse detection", "trigger folder out/nc", ... */
  source: string;
  /** Neural Cleanse's report section when detection ran in this process. */
  neuralCleanse?: ReportNeuralCleanse;
  /**
   * The flagged labels' reversed triggers of the other family, which no repair trains on: `repair --defense auto`
   * scores its candidates on them too (auto-select.ts, countedHeldOut).
   */
  heldOut?: ReversedTrigger[];
  /**
   * Flagged labels whose trigger of the other family was left out of `heldOut`, with the share of its success it
   * keeps when B's output layer is learned again (head-shift-evidence.ts, otherFamilyStandsIn; absent where not
   * measured or not readable): a trigger that keeps it is a natural one, not the backdoor's.
   */
  otherFamilyLeftOut?: { label: number; kept?: number }[];
}

export interface DefenseContext {
  /** Pixels were divided by this when the data was read (STRIP's "add" blend needs the top of the range). */
  inputScale: number;
  /** Present for defenses that declare needs: ["triggers"]. */
  triggers?: TriggerInput;
  progress?: ProgressFn;
}

// ---------------------------------------------------------------------------------------------------------
// Outcome

/** A network the defense hands back, saved by the caller. */
export interface ModelArtifact {
  kind: "model";
  /** File stem: the CLI writes STEM.h5 (Keras input) and STEM.onnx. */
  stem: string;
  model: Model;
}
/** A graph (G) the defense hands back, saved as one ONNX file. */
export interface GraphArtifact {
  kind: "graph";
  /** File name, e.g. "G.onnx". */
  file: string;
  graph: Graph;
  /** ONNX doc string: what class N means for this G. */
  doc: string;
}
export type Artifact = (ModelArtifact | GraphArtifact) & {
  /** Called with the paths written for this artifact, so the defense's JSON can name its files. */
  onWritten?: (files: string[]) => void;
};

export interface DefenseOutcome {
  /** Report heading, e.g. "Fine-Pruning — model". */
  title: string;
  /** The repaired network B′ (the main one when there are several). */
  repaired?: Model;
  /** G, the N+1-class network (class N = input judged backdoored). */
  g?: Graph;
  /** B and B′ on the evaluation data (test, else clean) and the poisoned data. */
  evaluation?: ReportEvaluation;
  /** G's outcome on the same data. */
  gRates?: ReportG;
  /** Report sections (pruning curve, STRIP entropies, mitigation...). */
  sections: Omit<ReportData, "title" | "createdAt" | "command" | "model" | "evaluation" | "g" | "timings">;
  /** Defense-specific JSON fields saved beside the sections (e.g. prune's repairs[]). */
  extra: Record<string, unknown>;
  /** Everything to save, in order. */
  artifacts: Artifact[];
  /** Human-readable summary lines (the CLI prints them). */
  lines: string[];
  /** One line for tables (the bench's notes column). */
  note: string;
  /** Wall-clock seconds per step. */
  timings: Record<string, number>;
  /** Set when the defense had nothing to act on (e.g. no flagged label): nothing repaired, no artifacts. */
  notApplied?: string;
  /**
   * Set when the repair's own held-out check found no round within its accuracy budget (--max-drop) and it
   * kept the most accurate one: `repair --defense auto` does not choose it while another candidate is eligible.
   */
  overBudget?: OverBudget;
}

/** A repair that broke its own accuracy budget (the report's type: the selection section records it as is). */
export type OverBudget = ReportOverBudget;

/** The usual artifacts of a repair: B′ as repaired.{h5,onnx} and G.onnx; `files` collects the paths written. */
export function repairArtifacts(repaired: Model, g: Graph, doc: string, files: string[]): Artifact[] {
  const onWritten = (f: string[]) => void files.push(...f);
  return [
    { kind: "model", stem: "repaired", model: repaired, onWritten },
    { kind: "graph", file: "G.onnx", graph: g, doc, onWritten },
  ];
}

/** A repair's result as the library functions return it: B′, G, and B and B′ evaluated. */
export interface RepairRun {
  model: Model;
  gGraph: Graph;
  before: ReportEvalResult;
  after: ReportEvalResult;
  g: ReportG;
  /** How BatchNorm was trained, where the network has any (train/batch-norm-training.ts). */
  batchNorm?: string;
}

/** The output line saying how a repair trained BatchNorm (none for a network without BatchNorm); `label` columns wide. */
export function batchNormLines(r: { batchNorm?: string }, label = 11): string[] {
  return r.batchNorm ? [`${"batchnorm".padEnd(label)} ${r.batchNorm}`] : [];
}

/** The outcome fields every repair fills the same way from its run. */
export function repairOutcomeCore(title: string, r: RepairRun): Pick<DefenseOutcome, "title" | "repaired" | "g" | "evaluation" | "gRates"> {
  return { title, repaired: r.model, g: r.gGraph, evaluation: { before: r.before, after: r.after }, gRates: r.g };
}

/** What a defense needs beyond the model and data. */
export type DefenseNeed = "triggers";

export interface Defense<S extends OptionSpecs = OptionSpecs> {
  /** Registry key and CLI command name, e.g. "fine-prune". */
  name: string;
  /** One line for --help and the docs. */
  summary: string;
  /** "repair": hands back a repaired network (and G); "detector": hands back only G (input-level). */
  kind: "repair" | "detector";
  options: S;
  needs?: readonly DefenseNeed[];
  run(model: Model, data: DefenseData, options: OptionValues<S>, ctx: DefenseContext): Promise<DefenseOutcome>;
}

/** A Defense with its option types erased, as the registry holds it. */
export type AnyDefense = Defense<OptionSpecs>;

/** Keeps a defense's option types for its own run() and erases them for the registry. */
export const defineDefense = <S extends OptionSpecs>(d: Defense<S>): AnyDefense => d as unknown as AnyDefense;

/** Resolves `options` against the defense's spec and runs it; checks that what it needs is there. */
export async function runDefense(d: AnyDefense, model: Model, data: DefenseData, options: Readonly<Record<string, unknown>>, ctx: DefenseContext): Promise<DefenseOutcome> {
  const values = resolveOptions(d.options, options);
  // The trigger check first: it needs neither the model nor the data.
  if (d.needs?.includes("triggers") && !ctx.triggers) throw new UserError(`${d.name} needs Neural Cleanse's reversed triggers`);
  refuseG(model);
  try {
    return await d.run(model, data, values, ctx);
  } catch (e) {
    // An algorithm's own check names the option; the spec knows its flag.
    const o = e instanceof OptionError ? d.options[e.option] : undefined;
    throw o && e instanceof OptionError ? new OptionError(e.option, e.complaint, flagOf(e.option, o)) : e;
  }
}

/** The outcome of a defense that had nothing to act on. */
export function notApplied(title: string, reason: string, sections: DefenseOutcome["sections"] = {}, timings: Record<string, number> = {}): DefenseOutcome {
  return { title, sections, extra: {}, artifacts: [], lines: [reason], note: reason, timings, notApplied: reason };
}

/** A (done, total, note?) callback that reports one named stage to `progress` (nothing when it is absent). */
export function stageReporter(progress: ProgressFn | undefined, stage: string, unit?: string): (done: number, total: number, note?: string) => void {
  return (done, total, note) => progress?.({ stage, done, total, unit, note });
}

/** The inference batch-size option most defenses share. */
export const BATCH_SIZE_OPTION: NumberOption = { kind: "integer", description: "images per inference run", default: 256, min: 1, max: 65536 };
/**
 * Upper bound of a defense's epoch, round, iteration and step counts (train's --epochs has the same): a typo
 * such as --epochs 1e9 is an error at once, not a run that never ends.
 */
export const MAX_LOOPS = 10_000;
/** The seed option of defenses with a random choice in them. */
/** BatchNorm while a repair trains (train/batch-norm-training.ts). */
export const BATCH_NORM_OPTION: ChoiceOption<BatchNormMode> & { default: BatchNormMode } = {
  kind: "choice",
  choices: BATCH_NORM_MODES,
  description: "BatchNorm while training: batch statistics, with a BatchNorm put back after every conv an ONNX export folded one into (batch), or B's running statistics kept and nothing put back (frozen)",
  default: DEFAULT_BATCH_NORM,
};
export const SEED_OPTION: NumberOption & { default: number } = { kind: "integer", description: "seed of every random choice (same seed, same result)", default: 0, min: 0, max: MAX_SEED };
