#!/usr/bin/env node
// badnet: the command-line entry point. User errors print one line and exit 2; bugs exit 1 with a trace.
import { OptionError } from "../defenses/defense.js";
import { UserError } from "../errors.js";
import { parse } from "./command.js";
import { COMMANDS } from "./commands/index.js";
import { commandHelp, help } from "./help.js";

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
  const { json, text } = await cmd.run(ctx);
  process.stdout.write(ctx.json ? JSON.stringify(json, null, 2) + "\n" : text.endsWith("\n") ? text : text + "\n");
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e: unknown) => {
    if (e instanceof UserError) {
      // The library names options; on the command line they are flags.
      const msg = e instanceof OptionError ? `--${e.flag} ${e.complaint}` : e.message;
      process.stderr.write(`badnet: error: ${msg}\n`);
      process.exit(2);
    }
    process.stderr.write(`badnet: internal error: ${(e as Error)?.stack ?? String(e)}\n`);
    process.exit(1);
  },
);
