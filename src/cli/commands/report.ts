import { basename, join } from "node:path";
import { existsSync, statSync } from "node:fs";
import { fail } from "../../errors.js";
import { writeReport } from "../../report/html.js";
import type { Command } from "../command.js";
import { readResult } from "../output.js";
import { FORCE_OPTION, isBadnetReport, looksLikeHtml, prepareOutFiles } from "../out-dir.js";

export const reportCommand: Command = {
  name: "report",
  summary: "render DIR/result.json (written by repair, detect, prune, ...) as one self-contained HTML file",
  usage: "DIR [--output FILE] [--force]",
  options: { output: { type: "string", description: "where to write the HTML file", defaultText: "report.html beside result.json" }, ...FORCE_OPTION },
  positionals: true,
  async run(ctx) {
    if (ctx.positionals.length !== 1) fail("report: give exactly one result folder (or result.json)");
    const src = ctx.positionals[0];
    const data = readResult(src);
    const dir = existsSync(src) && statSync(src).isDirectory() ? src : join(src, "..");
    const out = typeof ctx.values.output === "string" ? ctx.values.output : join(dir, "report.html");
    // An earlier report of ours is rendered again in place; another HTML file needs --force; a file that is
    // not HTML (--output repaired.h5 --force) is never replaced by a report.
    const input = dir === src ? join(src, "result.json") : src;
    const keep = (p: string) => (looksLikeHtml(p) ? undefined : "exists and is not an HTML file (a model, data or other file)");
    const dest = prepareOutFiles(ctx, [out], "--output", { replaceable: isBadnetReport, keep, inputs: [input] });
    const [written] = await dest.write(async (stage) => {
      const tmp = join(stage, basename(out));
      await writeReport(tmp, data);
      return [tmp];
    });
    return { json: { report: written }, text: `wrote ${written}` };
  },
};
