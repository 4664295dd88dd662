#!/usr/bin/env node
// badnet: the command-line entry point. User errors print one line and exit 2; bugs exit 1 with a trace.
import { readFileSync } from "node:fs";
import { OptionError } from "../defenses/defense.js";
import { fileSystemError, UserError } from "../errors.js";
import { parse } from "./command.js";
import { COMMANDS } from "./commands/index.js";
import { withOutputs } from "./out-dir.js";
import { commandHelp, help } from "./help.js";

/** The installed package's version (package.json two levels above this file, in src/ and in dist/ alike). */
function version(): string {
  return (JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string }).version;
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === "--version" || name === "-V" || name === "version") {
    process.stdout.write(`badnet ${version()}\n`);
    return 0;
  }
  // "badnet help eval" is "badnet eval --help".
  if (name === "help" && rest.length) return main([rest[0], "--help"]);
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
    // A file-system error (EROFS, ENOSPC, ...) is the user's environment, not a bug: one line too.
    const user = e instanceof UserError ? e : fileSystemError(e);
    if (user) {
      // The library names options; on the command line they are flags.
      const msg = user instanceof OptionError ? `--${user.flag} ${user.complaint}` : user.message;
      process.stderr.write(`badnet: error: ${msg}\n`);
      process.exit(2);
    }
    process.stderr.write(`badnet: internal error: ${(e as Error)?.stack ?? String(e)}\n`);
    process.exit(1);
  },
);
