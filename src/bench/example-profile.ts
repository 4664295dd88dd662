// Where `npm run example` spends its time: the repair command run in this process on the example (the same
// arguments as the npm script, output to a temporary folder), then its phase timings (result.json's timings)
// and every onnxruntime session's creation and run time by graph, so that host-side work shows as the gap.
//   node dist/bench/example-profile.js [--out DIR] [--json]
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parse } from "../cli/command.js";
import { repairCommand } from "../cli/commands/repair.js";
import { withOutputs } from "../cli/out-dir.js";
import { recordSessionStats } from "../runtime/session.js";
import { benchArgs } from "./args.js";

const { values } = benchArgs(import.meta.url, { options: { out: { type: "string" }, json: { type: "boolean" } } });
const ex = "examples/badnet-fmnist";
const out = values.out ?? mkdtempSync(join(tmpdir(), "example-profile-"));
const argv = ["--model", `${ex}/model.h5`, "--input-scale", "255", "--clean", `${ex}/valid.h5`, "--test", `${ex}/clean_test.h5`, "--poisoned", `${ex}/poisoned_test.h5`, "--fpr", "0.05", "--out", out, "--report", "--force", "--quiet"];

const stats = recordSessionStats();
const t0 = performance.now();
const { json } = await withOutputs(() => repairCommand.run(parse(repairCommand, argv)));
const wall = (performance.now() - t0) / 1000;
const timings = (json as { timings?: Record<string, number> }).timings ?? {};
const sessions = [...stats].map(([graph, s]) => ({ graph, ...s })).sort((a, b) => b.runSeconds + b.createSeconds - (a.runSeconds + a.createSeconds));
if (!values.out) rmSync(out, { recursive: true, force: true });

if (values.json) process.stdout.write(JSON.stringify({ wall, timings, sessions }, null, 2) + "\n");
else {
  const f = (x: number) => x.toFixed(2).padStart(7);
  process.stdout.write(`example: ${wall.toFixed(1)} s in process (load average ${(await import("node:os")).loadavg().map((x) => x.toFixed(2)).join(" ")})\n\nphase timings (s, result.json):\n`);
  for (const [k, v] of Object.entries(timings)) process.stdout.write(`  ${k.padEnd(28)} ${f(v)}\n`);
  let create = 0, run = 0;
  process.stdout.write(`\nonnxruntime sessions by graph: count, create s, runs, run s\n`);
  for (const s of sessions) {
    create += s.createSeconds;
    run += s.runSeconds;
    process.stdout.write(`  ${s.graph.slice(0, 40).padEnd(40)} ${String(s.sessions).padStart(4)} ${f(s.createSeconds)} ${String(s.runs).padStart(6)} ${f(s.runSeconds)}\n`);
  }
  process.stdout.write(`  ${"all".padEnd(40)} ${String(sessions.reduce((a, s) => a + s.sessions, 0)).padStart(4)} ${f(create)} ${"".padStart(6)} ${f(run)}\n`);
  process.stdout.write(`  host-side (wall − create − run)          ${f(wall - create - run)}\n`);
}
