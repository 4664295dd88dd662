// Where a training step's time goes: onnxruntime's per-node profile of the step graph (forward, loss, backward
// and optimizer update in one session), summed per op type and per part of the graph, after a warm-up.
//   node dist/bench/step-profile.js [--model FILE.onnx] [--manifest DIR/manifest.json] [--batch 64] [--steps 3] [--update host|graph] [--forms direct|flip|fast|plain]
// Default model: the full-width PreAct-ResNet18 export (.bench/pytorch-full), normalised as its manifest says.
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { ConvGradForms } from "../graph/autodiff.js";
import { tensor } from "../graph/ir.js";
import { withNormalization } from "../model/normalize.js";
import { loadOnnxModel } from "../onnx/import.js";
import { buildStepGraph, DEFAULT_UPDATE, oneHot, StepRunner, UPDATE_PLACES, type UpdatePlace } from "../train/trainer.js";
import { mulberry32 } from "../util/random.js";
import { benchArgs } from "./args.js";

interface TraceEvent {
  cat: string;
  name: string;
  dur: number;
  args?: { op_name?: string };
}

const { values } = benchArgs(import.meta.url, { options: { model: { type: "string" }, manifest: { type: "string" }, batch: { type: "string" }, steps: { type: "string" }, update: { type: "string" }, forms: { type: "string" } } });
const convForms = (values.forms ?? "direct") as ConvGradForms;
const update = (values.update ?? DEFAULT_UPDATE) as UpdatePlace;
if (!UPDATE_PLACES.includes(update)) throw new Error(`--update must be one of ${UPDATE_PLACES.join(", ")}`);
const dir = process.env.BADNET_PYTORCH_FULL ?? ".bench/pytorch-full";
const manifest = JSON.parse(readFileSync(values.manifest ?? join(dir, "manifest.json"), "utf8")) as { mean: number[]; std: number[] };
const file = values.model ?? join(dir, "preact_resnet18_opset17.onnx");
const batch = Number(values.batch ?? 64);
const steps = Number(values.steps ?? 3);
const model = withNormalization(await loadOnnxModel(file), { mean: manifest.mean, std: manifest.std });

const t0 = performance.now();
const step = buildStepGraph(model, { optimizer: { kind: "adam", lr: 1e-4 }, update, convForms });
const built = performance.now();
const work = mkdtempSync(join(tmpdir(), "step-profile-"));
const runner = await StepRunner.create(step, { profilePrefix: join(work, "step") });
const created = performance.now();
process.stdout.write(`${file}: graph ${step.graph.nodes.length} nodes; build ${((built - t0) / 1000).toFixed(2)} s, session ${((created - built) / 1000).toFixed(2)} s\n`);

const rand = mulberry32(3);
const [c, h, w] = model.inputShape;
const x = tensor("float32", [batch, c, h, w], Float32Array.from({ length: batch * c * h * w }, () => rand()));
const y = Int32Array.from({ length: batch }, () => Math.floor(rand() * model.numClasses));
const target = tensor("float32", [batch, model.numClasses], oneHot(y, model.numClasses));
await runner.run(x, target, 1e-4); // warm-up, profiled too: dropped below by counting runs
const wall: number[] = [];
for (let i = 0; i < steps; i++) {
  const s = performance.now();
  await runner.run(x, target, 1e-4);
  wall.push(performance.now() - s);
}
runner.endProfiling();
await runner.release();

const profile = readdirSync(work).find((f) => f.endsWith(".json"))!;
const events = JSON.parse(readFileSync(join(work, profile), "utf8")) as TraceEvent[];
rmSync(work, { recursive: true, force: true });
const runs = events.filter((e) => e.cat === "Session" && e.name === "model_run");
// Node events of the timed runs only: the warm-up's come first, one per node, so skip its share.
const nodes = events.filter((e) => e.cat === "Node" && e.name.endsWith("_kernel_time"));
const perRun = nodes.length / runs.length;
const timed = nodes.slice(perRun);
// Node position in the step graph: forward, backward or optimizer (by the order buildStepGraph adds them).
const order = new Map(step.graph.nodes.map((n, i) => [n.name, i]));
// The optimizer's nodes all follow the first one that reads optimizer state or the learning rate.
const opt = step.optimizer;
const stateInputs = new Set(opt ? [opt.lrInput, ...opt.slots.flatMap((sl) => sl.state.map((st) => st.input))] : []);
const firstOpt = opt ? step.graph.nodes.findIndex((n) => n.inputs.some((i) => stateInputs.has(i))) : step.graph.nodes.length;
const byOp = new Map<string, number>();
const byPart = new Map<string, number>();
let total = 0;
for (const e of timed) {
  const op = e.args?.op_name ?? "?";
  byOp.set(op, (byOp.get(op) ?? 0) + e.dur);
  total += e.dur;
}
const fwdNodes = model.graph.nodes.length;
for (const e of timed) {
  const name = e.name.replace(/_kernel_time$/, "");
  const i = order.get(name);
  const part = i === undefined ? "fused/renamed" : i < fwdNodes ? "forward" : i < firstOpt ? "loss+backward" : "optimizer";
  byPart.set(part, (byPart.get(part) ?? 0) + e.dur);
}
const ms = (us: number) => `${(us / 1000 / steps).toFixed(1)} ms`;
const runWall = runs.slice(1).reduce((a, e) => a + e.dur, 0);
process.stdout.write(`update ${update}, ${convForms} forms, batch ${batch}: ${(wall.reduce((a, b) => a + b, 0) / steps).toFixed(0)} ms per step (wall, JS), ${ms(runWall)} in onnxruntime's run, ${ms(total)} in kernels\n`);
process.stdout.write("per op type (ms per step, share of kernel time):\n");
for (const [op, us] of [...byOp].sort((a, b) => b[1] - a[1]).slice(0, 25)) process.stdout.write(`  ${op.padEnd(22)} ${ms(us).padStart(10)}  ${((100 * us) / total).toFixed(1)}%\n`);
process.stdout.write("per part:\n");
for (const [p, us] of byPart) process.stdout.write(`  ${p.padEnd(24)} ${ms(us).padStart(10)}\n`);
