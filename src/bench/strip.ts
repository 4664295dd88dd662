// STRIP throughput on the CSAW DeepID: inputs scored per second (each costs k+1 forward passes inside one
// graph), next to plain forward throughput measured in the same run.
// Usage: node dist/bench/strip.js [inputs] [k]
import { memoryDataset } from "../io/dataset.js";
import { forEachBatch, forwardGraph } from "../model/forward.js";
import { Session } from "../runtime/session.js";
import { StripScorer } from "../defenses/strip.js";
import { loadDeepId, randomImages, row } from "./common.js";
import { benchArgs, countArg } from "./args.js";

const { positionals } = benchArgs(import.meta.url, { allowPositionals: true });
const n = countArg(import.meta.url, "inputs", positionals[0], 512);
const k = countArg(import.meta.url, "k", positionals[1], 32);
const model = await loadDeepId();
const data = memoryDataset("random", model.inputShape, randomImages(n, model.inputShape, 5), null);
const overlays = randomImages(k, model.inputShape, 6);

const scorer = await StripScorer.create(model, overlays);
await scorer.score(memoryDataset("warmup", model.inputShape, data.read(0, Math.min(n, 16)), null));
let t0 = performance.now();
await scorer.score(data);
const tStrip = (performance.now() - t0) / 1000;
await scorer.release();

const fwd = await Session.create(forwardGraph(model));
await forEachBatch(fwd, memoryDataset("warmup", model.inputShape, data.read(0, Math.min(n, 64)), null), () => {});
t0 = performance.now();
await forEachBatch(fwd, data, () => {});
const tFwd = (performance.now() - t0) / 1000;

process.stdout.write(`STRIP on DeepID (${model.inputShape.join("x")}), ${n} inputs, k = ${k} overlays\n`);
row("STRIP scoring", `${(n / tStrip).toFixed(0)} inputs/s`, `${((n * (k + 1)) / tStrip).toFixed(0)} forward img/s inside the graph`);
row("plain forward (same run)", `${(n / tFwd).toFixed(0)} img/s`, `STRIP forward efficiency ${((n * (k + 1)) / tStrip / (n / tFwd)).toFixed(2)}`);
