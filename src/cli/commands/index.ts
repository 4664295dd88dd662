import type { Command } from "../command.js";
import { anpCommand, ibauCommand } from "./adversarial-repairs.js";
import { detectCommand } from "./detect.js";
import { evalCommand } from "./eval.js";
import { finePruneCommand } from "./fine-prune.js";
import { inspectCommand } from "./inspect.js";
import { ncPruneCommand } from "./nc-prune.js";
import { predictCommand } from "./predict.js";
import { pruneCommand } from "./prune.js";
import { repairCommand } from "./repair.js";
import { reportCommand } from "./report.js";
import { stripCommand } from "./strip.js";
import { trainCommand } from "./train.js";
import { unlearnCommand } from "./unlearn.js";
import { zooCommand } from "./zoo.js";

export const COMMANDS: Command[] = [
  evalCommand,
  predictCommand,
  inspectCommand,
  repairCommand,
  detectCommand,
  pruneCommand,
  finePruneCommand,
  ncPruneCommand,
  unlearnCommand,
  anpCommand,
  ibauCommand,
  stripCommand,
  reportCommand,
  trainCommand,
  zooCommand,
];
