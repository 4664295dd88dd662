#!/usr/bin/env node
// badnet: the command-line entry point. User errors print one line and exit 2; bugs exit 1 with a trace.
import { UserError } from "../errors.js";
import { parse, type Command } from "./command.js";
import { COMMANDS } from "./commands/index.js";
import { withOutputs } from "./out-dir.js";

function help(): string {
  const w = Math.max(...COMMANDS.map((c) => c.name.length));
  return [
    "badnet — detect and repair backdoored image classifiers",
    "",
    "usage: badnet <command> [options]   (badnet <command> --help for its options)",
    "",
    ...COMMANDS.map((c) => `  ${c.name.padEnd(w)}  ${c.summary}`),
  ].join("\n");
}

function commandHelp(c: Command): string {
  const opts = Object.entries(c.options).map(([k, o]) => `  --${k}${o.type === "string" ? " <value>" : ""}`);
  return [`badnet ${c.name} — ${c.summary}`, "", `usage: badnet ${c.name} ${c.usage}`, "", "options:", ...opts, "  --json", "  --quiet"].join("\n");
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === "--help" || name === "-h" || name === "help") {
    process.stdout.write(help() + "\n");
    if (!name) throw new UserError("no command given (run badnet --help)");
    return 0;
  }
  const cmd = COMMANDS.find((c) => c.name === name);
  if (!cmd) throw new UserError(`unknown command "${name}" (run badnet --help)`);
  if (rest.includes("--help") || rest.includes("-h")) {
    process.stdout.write(commandHelp(cmd) + "\n");
    return 0;
  }
  const ctx = parse(cmd, rest);
  // Output folders appear only when the command succeeds (see out-dir.ts).
  const { json, text } = await withOutputs(() => cmd.run(ctx));
  process.stdout.write(ctx.json ? JSON.stringify(json, null, 2) + "\n" : text.endsWith("\n") ? text : text + "\n");
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e: unknown) => {
    if (e instanceof UserError) {
      process.stderr.write(`badnet: error: ${e.message}\n`);
      process.exit(2);
    }
    process.stderr.write(`badnet: internal error: ${(e as Error)?.stack ?? String(e)}\n`);
    process.exit(1);
  },
);
