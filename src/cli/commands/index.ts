import { DEFENSES } from "../../defenses/registry.js";
import type { Command } from "../command.js";
import { defenseCommand } from "../defense-command.js";
import { detectCommand } from "./detect.js";
import { evalCommand } from "./eval.js";
import { inspectCommand } from "./inspect.js";
import { predictCommand } from "./predict.js";
import { repairCommand } from "./repair.js";
import { reportCommand } from "./report.js";
import { trainCommand } from "./train.js";
import { zooCommand } from "./zoo.js";

/** One command per registered defense, named like it. */
export const DEFENSE_COMMANDS: Command[] = DEFENSES.map(defenseCommand);

export const COMMANDS: Command[] = [evalCommand, predictCommand, inspectCommand, repairCommand, detectCommand, ...DEFENSE_COMMANDS, reportCommand, trainCommand, zooCommand];

/** The command of a registered defense (throws for an unknown name: a programming error). */
export function defenseCommandNamed(name: string): Command {
  const c = DEFENSE_COMMANDS.find((x) => x.name === name);
  if (!c) throw new Error(`no defense command "${name}"`);
  return c;
}
