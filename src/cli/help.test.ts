// --help of every command lists exactly the options the command accepts, each with a description, and the
// defenses' defaults as their option specs give them.
import assert from "node:assert/strict";
import { test } from "node:test";
import { flagOf } from "../defenses/defense.js";
import { DEFENSES } from "../defenses/registry.js";
import { COMMON } from "./command.js";
import { COMMANDS } from "./commands/index.js";
import { commandHelp } from "./help.js";

/** The option lines of a help text: those after "options:". */
const optionLines = (help: string): string[] => help.slice(help.indexOf("\noptions:\n")).split("\n").slice(2);

/** The option names a help text lists (lines "  -m, --model <value>   ..." or "      --json  ..."). */
function listedOptions(help: string): string[] {
  return optionLines(help)
    .map((l) => /^\s+(?:-\w, )?--([\w-]+)/.exec(l)?.[1])
    .filter((x): x is string => x !== undefined);
}

test("every command's --help lists exactly the options it accepts, each with a description", () => {
  for (const c of COMMANDS) {
    const help = commandHelp(c);
    const accepted = Object.keys({ ...c.options, ...COMMON }).sort();
    assert.deepEqual(listedOptions(help).sort(), accepted, c.name);
    for (const line of optionLines(help).filter((l) => /^\s+(?:-\w, )?--/.test(l))) assert.match(line, /--[\w-]+(?: <value>)?\s{2,}\S/, `${c.name}: "${line.trim()}" has no description`);
  }
});

test("a defense command's --help shows each option's default from the defense's spec", () => {
  for (const d of DEFENSES) {
    const help = commandHelp(COMMANDS.find((c) => c.name === d.name)!);
    for (const [name, o] of Object.entries(d.options)) {
      if (o.default === undefined) continue;
      const shown = Array.isArray(o.default) ? o.default.join(",") : String(o.default);
      const line = optionLines(help).find((l) => new RegExp(`^\\s+(-\\w, )?--${flagOf(name, o)} `).test(l));
      assert.ok(line?.includes(`(default: ${shown})`), `${d.name} --${flagOf(name, o)}: ${line}`);
    }
  }
});
