// The CLI command of a registered defense, derived from its Defense: flags and --help from the option spec,
// then load → (reversed triggers) → run → save. Nothing defense-specific lives here.
import { basename } from "node:path";
import { flagOf, resolveOptions, runDefense, type AnyDefense, type OptionSpec } from "../defenses/defense.js";
import type { Dataset } from "../io/dataset.js";
import { DATA_OPTIONS, defenseInputs, inputScale, MODEL_OPTIONS, progressBars, str, type CliOption, type Command, type Context, type Options } from "./command.js";
import { OUTPUT_OPTIONS, outDir, saveOutcome } from "./output.js";
import { checkTriggerSeed, resolveTriggers, TRIGGER_OPTIONS } from "./triggers.js";

function defaultText(o: OptionSpec): string | undefined {
  if (o.defaultText !== undefined) return o.defaultText;
  if (o.default === undefined) return undefined;
  return Array.isArray(o.default) ? o.default.join(",") : String(o.default);
}

/** The command-line options of a defense's spec, keyed by flag. */
export function specFlags(d: AnyDefense): Options {
  const out: Options = {};
  for (const [name, o] of Object.entries(d.options)) {
    const opt: CliOption = { type: o.kind === "boolean" ? "boolean" : "string", description: o.kind === "choice" ? `${o.description} (${o.choices.join(" | ")})` : o.description };
    const dt = defaultText(o);
    if (dt !== undefined) opt.defaultText = dt;
    out[flagOf(name, o)] = opt;
  }
  return out;
}

/** The defense's options as given on the command line (text), by library name; absent ones left out. */
export function optionsFromFlags(d: AnyDefense, ctx: Context): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [name, o] of Object.entries(d.options)) {
    const v = ctx.values[flagOf(name, o)];
    if (v !== undefined) out[name] = v;
  }
  return out;
}

function usage(d: AnyDefense): string {
  const needsTriggers = d.needs?.includes("triggers") === true;
  const shown = (name: string, o: OptionSpec) => (o.default === undefined ? flagOf(name, o).toUpperCase() : defaultText(o));
  const opt = Object.entries(d.options).map(([name, o]) => (o.kind === "boolean" ? `[--${flagOf(name, o)}]` : `[--${flagOf(name, o)} ${shown(name, o)}]`));
  return [
    "--model M [--arch deepid] [--input-scale S] --clean VALID [--test TEST] [--poisoned P ...]",
    ...(needsTriggers ? ["[--trigger DIR | --mask mask.png --pattern pattern.png --target L | --labels 0,1,..]"] : []),
    ...opt,
    "--out DIR [--report] [--json] [--quiet]",
  ].join(" ");
}

export function defenseCommand(d: AnyDefense): Command {
  const own = specFlags(d);
  const needsTriggers = d.needs?.includes("triggers") === true;
  return {
    name: d.name,
    summary: d.summary,
    usage: usage(d),
    options: { ...MODEL_OPTIONS, ...DATA_OPTIONS, ...(needsTriggers ? TRIGGER_OPTIONS : {}), ...own, ...OUTPUT_OPTIONS },
    async run(ctx) {
      const t0 = performance.now();
      const scale = await inputScale(ctx, "clean");
      const given = optionsFromFlags(d, ctx);
      resolveOptions(d.options, given); // bad options fail before anything is loaded
      if (needsTriggers) checkTriggerSeed(ctx, d.name, "seed" in d.options);
      const dir = outDir(ctx)!;
      const { model, valid: clean, test, poisoned } = await defenseInputs(ctx, scale);
      const timings: Record<string, number> = { load: (performance.now() - t0) / 1000 };
      const bars = progressBars(ctx);
      let outcome;
      try {
        let triggers;
        if (needsTriggers) {
          const { seconds, ...src } = await resolveTriggers(ctx, model, clean, scale);
          triggers = src;
          timings[src.neuralCleanse ? "neural-cleanse" : "trigger"] = seconds;
        }
        outcome = await runDefense(d, model, { clean, test, poisoned }, given, { inputScale: scale, triggers, progress: bars.progress });
      } finally {
        bars.done();
        for (const ds of [clean, test, poisoned] as (Dataset | undefined)[]) ds?.close();
      }
      const { result, files } = await saveOutcome(ctx, dir, model, str(ctx, "model", true), outcome, timings);
      const lines = [...outcome.lines, `wrote       ${dir}: ${files.map((f) => basename(f)).join(", ")}`];
      return { json: result, text: lines.join("\n") };
    },
  };
}
