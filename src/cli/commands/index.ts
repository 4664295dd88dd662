import type { Command } from "../command.js";
import { evalCommand } from "./eval.js";
import { inspectCommand } from "./inspect.js";
import { predictCommand } from "./predict.js";

export const COMMANDS: Command[] = [evalCommand, predictCommand, inspectCommand];
