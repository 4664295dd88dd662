// --help texts: the command list, and per command every option with its description and default.
import { COMMON, type Command } from "./command.js";
import { COMMANDS } from "./commands/index.js";

export function help(): string {
  const w = Math.max(...COMMANDS.map((c) => c.name.length));
  return [
    "badnet — detect and repair backdoored image classifiers",
    "",
    "usage: badnet <command> [options]   (badnet <command> --help for its options; badnet --version)",
    "",
    ...COMMANDS.map((c) => `  ${c.name.padEnd(w)}  ${c.summary}`),
  ].join("\n");
}

/** Every option the command accepts, with its description and default. */
export function commandHelp(c: Command): string {
  const all = Object.entries({ ...c.options, ...COMMON });
  const heads = all.map(([k, o]) => `  ${o.short ? `-${o.short}, ` : "    "}--${k}${o.type === "string" ? " <value>" : ""}`);
  const w = Math.max(...heads.map((h) => h.length)) + 2;
  const opts = all.map(([, o], i) => `${heads[i].padEnd(w)}${o.description ?? ""}${o.defaultText !== undefined ? ` (default: ${o.defaultText})` : ""}`.trimEnd());
  return [`badnet ${c.name} — ${c.summary}`, "", `usage: badnet ${c.name} ${c.usage}`, "", "options:", ...opts].join("\n");
}
