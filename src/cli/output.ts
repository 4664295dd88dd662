// What the commands that write an output folder share: the folder, result.json, the HTML report.
import { existsSync, readFileSync, renameSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { DefenseOutcome } from "../defenses/defense.js";
import { writeOnnx } from "../defenses/g-model.js";
import { fail } from "../errors.js";
import { saveRepaired } from "../io/save-model.js";
import type { Model } from "../model/model.js";
import { summarize } from "../model/summary.js";
import { writeReport } from "../report/html.js";
import { parseResult, RESULT_SCHEMA_VERSION } from "../report/schema.js";
import type { ReportData, ReportModel } from "../report/types.js";
import { str, type Context, type Options } from "./command.js";
import { FORCE_OPTION, finalPath, finalPaths, prepareOutDir } from "./out-dir.js";

export const OUTPUT_OPTIONS: Options = {
  out: { type: "string", short: "o", description: "folder to write the results into (created if missing)" },
  report: { type: "boolean", description: "also write report.html (one self-contained HTML file)" },
  ...FORCE_OPTION,
};

/**
 * Checks --out before any work and returns the folder to write into: a staging folder that main moves into
 * place when the command succeeds (see out-dir.ts). A UserError for a path that is a file, not writable, an
 * earlier result without --force, or would overwrite an input.
 */
export function outDir(ctx: Context, required = true): string | undefined {
  const dir = required ? str(ctx, "out", true) : str(ctx, "out");
  if (dir === undefined) {
    if (ctx.values.report === true) fail("--report needs --out DIR to write report.html into");
    return undefined;
  }
  return prepareOutDir(ctx, dir);
}

/** Writes a JSON file atomically. */
export function writeJson(path: string, value: unknown): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, JSON.stringify(value, null, 2) + "\n");
  renameSync(tmp, path);
}

export const commandLine = (): string => ["badnet", ...process.argv.slice(2)].join(" ");

/** The model section of result.json. */
export function reportModelOf(model: Model, source = model.spec?.source ?? "onnx"): ReportModel {
  const s = summarize(model);
  const [c, h, w] = model.inputShape;
  return {
    name: s.name,
    source,
    inputShape: [h, w, c],
    numClasses: s.numClasses,
    layers: s.layers.map((l) => ({ name: l.name, className: l.className, outputShape: l.outputShape.map((d) => (typeof d === "number" ? d : null)), params: l.params })),
    totalParams: s.totalParams,
    ...(model.normalization ? { normalization: model.normalization } : {}),
  };
}

/**
 * Stamps `data` with createdAt and command, saves it as DIR/result.json and, with --report, renders DIR/report.html. Returns the files written.
 * `data` may carry extra command-specific fields beside the ReportData sections.
 */
export async function writeResult(ctx: Context, dir: string, data: ReportData): Promise<string[]> {
  // Stamped into the caller's object too, so what a command prints with --json equals result.json.
  data.schemaVersion = RESULT_SCHEMA_VERSION;
  data.createdAt ??= new Date().toISOString();
  data.command ??= commandLine();
  // Paths inside the staging folder are saved as the paths they will have once moved into place.
  const full = finalPaths(data);
  const files = [join(dir, "result.json")];
  writeJson(files[0], full);
  if (ctx.values.report === true) {
    const html = join(dir, "report.html");
    await writeReport(html, full);
    files.push(html);
  }
  return files.map(finalPath);
}

/** A result.json: the report sections plus a command's own fields. */
export type ResultJson = ReportData & Record<string, unknown>;

/**
 * Saves a defense's outcome into `dir`: its networks and G graphs, then result.json (and report.html with
 * --report). `timings` are the caller's steps before the defense (load, trigger); the defense's follow.
 */
export async function saveOutcome(
  ctx: Context,
  dir: string,
  model: Model,
  modelSource: string,
  outcome: DefenseOutcome,
  timings: Record<string, number>,
  /** A heading instead of the defense's; `started` (performance.now()) adds timings.total. */
  opts: { title?: string; started?: number } = {},
): Promise<{ result: ResultJson; files: string[] }> {
  const t0 = performance.now();
  const files: string[] = [];
  for (const a of outcome.artifacts) {
    let written: string[];
    if (a.kind === "model") written = await saveRepaired(dir, a.stem, a.model);
    else {
      written = [join(dir, a.file)];
      writeOnnx(written[0], a.graph, a.doc);
    }
    a.onWritten?.(written);
    files.push(...written);
  }
  const result: ResultJson = {
    title: opts.title ?? outcome.title,
    model: reportModelOf(model, modelSource),
    ...(outcome.evaluation ? { evaluation: outcome.evaluation } : {}),
    ...outcome.sections,
    ...(outcome.gRates ? { g: outcome.gRates } : {}),
    timings: { ...timings, ...outcome.timings, ...(outcome.artifacts.length ? { write: (performance.now() - t0) / 1000 } : {}) },
    ...outcome.extra,
  };
  if (opts.started !== undefined) result.timings!.total = (performance.now() - opts.started) / 1000;
  files.push(...(await writeResult(ctx, dir, result)));
  return { result, files };
}

/** Reads DIR/result.json (or a given JSON file) back. */
export function readResult(path: string): ReportData {
  const file = existsSync(path) && statSync(path).isDirectory() ? join(path, "result.json") : path;
  if (!existsSync(file)) fail(`${file}: no such file (run a command with --out first)`);
  let v: unknown;
  const text = readFileSync(file, "utf8");
  try {
    v = JSON.parse(text);
  } catch (e) {
    // A model or data file given for a result: V8's message quotes its binary bytes ("Unexpected token '\ufffd', "\ufffdHDF ").
    if (/[\u0000-\u0008\u000e-\u001f\ufffd]/.test(text.slice(0, 64))) {
      return fail(`${file} is not a result.json but a binary file; give a folder written by a badnet command with --out, or its result.json`);
    }
    return fail(`${file} is not valid JSON: ${(e as Error).message.split("\n")[0]}`);
  }
  const r = parseResult(v);
  if (!r.ok) return fail(`${file} is not a badnet result: ${r.reason}`);
  return r.data;
}
