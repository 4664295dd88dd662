import { join } from "node:path";
import { existsSync, statSync } from "node:fs";
import { fail } from "../../errors.js";
import { writeReport } from "../../report/html.js";
import type { Command } from "../command.js";
import { readResult } from "../output.js";

export const reportCommand: Command = {
  name: "report",
  summary: "render DIR/result.json (written by repair, detect, prune, ...) as one self-contained HTML file",
  usage: "DIR [--output FILE]",
  options: { output: { type: "string", description: "where to write the HTML file", defaultText: "report.html beside result.json" } },
  positionals: true,
  async run(ctx) {
    if (ctx.positionals.length !== 1) fail("report: give exactly one result folder (or result.json)");
    const src = ctx.positionals[0];
    const data = readResult(src);
    const dir = existsSync(src) && statSync(src).isDirectory() ? src : join(src, "..");
    const out = typeof ctx.values.output === "string" ? ctx.values.output : join(dir, "report.html");
    await writeReport(out, data);
    return { json: { report: out }, text: `wrote ${out}` };
  },
};
