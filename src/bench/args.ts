// Arguments of the benchmark scripts: node's parseArgs (strict), plus `--help`, which prints the script's own
// header comment, so that a script's usage is written once, at its top. A bad option is a one-line error with
// exit code 2, as everywhere else in the project.
import { readFileSync } from "node:fs";
import { basename, extname } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs, type ParseArgsConfig } from "node:util";

/** The leading `//` comment lines of a source file, without the markers (blank lines inside it kept). */
export function headerComment(source: string): string {
  const lines: string[] = [];
  for (const line of source.replace(/^#!.*\n/, "").split("\n")) {
    const m = /^\s*\/\/ ?(.*)$/.exec(line);
    if (!m) break;
    lines.push(m[1]);
  }
  return lines.join("\n");
}

/** What `--help` prints for the script at `scriptUrl` (its header comment; a line naming it when there is none). */
export function benchUsage(scriptUrl: string): string {
  const file = fileURLToPath(scriptUrl);
  const text = headerComment(readFileSync(file, "utf8"));
  return text || `node dist/bench/${basename(file, extname(file))}.js (no usage written)`;
}

/**
 * parseArgs(config) with `--help`/`-h` added: help prints the usage and exits 0; an unknown option or a missing
 * value prints one line naming it and exits 2.
 */
export function benchArgs<T extends ParseArgsConfig>(scriptUrl: string, config: T): ReturnType<typeof parseArgs<T>> {
  const argv = config.args ?? process.argv.slice(2);
  let parsed: ReturnType<typeof parseArgs<T>>;
  try {
    parsed = parseArgs({ ...config, options: { ...config.options, help: { type: "boolean", short: "h" } } }) as ReturnType<typeof parseArgs<T>>;
  } catch (e) {
    // "--help" beside a bad option still asks for help.
    if (argv.includes("--help") || argv.includes("-h")) help(scriptUrl);
    const name = basename(fileURLToPath(scriptUrl), ".js");
    process.stderr.write(`bench ${name}: ${e instanceof Error ? e.message.split("\n")[0] : String(e)} (see --help)\n`);
    process.exit(2);
  }
  if ((parsed.values as Record<string, unknown>).help === true) help(scriptUrl);
  delete (parsed.values as Record<string, unknown>).help;
  return parsed;
}

function help(scriptUrl: string): never {
  process.stdout.write(`${benchUsage(scriptUrl)}\n`);
  process.exit(0);
}

/** A whole number ≥ 1 given on a bench's command line (`what` names it in the error), else `fallback`. */
export function countArg(scriptUrl: string, what: string, text: string | undefined, fallback: number): number {
  if (text === undefined) return fallback;
  if (/^[1-9]\d*$/.test(text)) return Number(text);
  process.stderr.write(`bench ${basename(fileURLToPath(scriptUrl), ".js")}: ${what} must be a whole number ≥ 1, got "${text}" (see --help)\n`);
  process.exit(2);
}
