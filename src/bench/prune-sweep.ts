// Pruning sweep speed on the real CSAW DeepID (sunglasses BadNet): all 60 conv_3 channels pruned one at a
// time, clean accuracy measured after each step on 10,000 images (random pixels: the timing does not
// depend on the content). Target: the sweep itself (cached trunk → head per step) in <= 15 s.
// Usage: node dist/bench/prune-sweep.js [images]
import os from "node:os";
import { memoryDataset } from "../io/dataset.js";
import { PruneEngine, pruneTarget, sweep } from "../defenses/pruning.js";
import { predictLabels } from "../model/forward.js";
import { loadDeepId, randomImages } from "./common.js";
import { benchArgs, countArg } from "./args.js";

const { positionals } = benchArgs(import.meta.url, { allowPositionals: true });
const n = countArg(import.meta.url, "images", positionals[0], 10000);
const model = await loadDeepId();
const target = pruneTarget(model);
const labels = Int32Array.from({ length: n }, (_, i) => i % model.numClasses);
const data = memoryDataset("random", model.inputShape, randomImages(n, model.inputShape), labels);

const engine = await PruneEngine.create(model, target);
let t0 = performance.now();
const cached = await engine.cache(data, labels);
const tCache = (performance.now() - t0) / 1000;
t0 = performance.now();
const cpu0 = process.cpuUsage();
const s = await sweep(engine, cached, undefined, "increasing");
const tSweep = (performance.now() - t0) / 1000;
const cpu = process.cpuUsage(cpu0);
const cpuSeconds = (cpu.user + cpu.system) / 1e6;
await engine.release();

process.stdout.write(`layer ${target.layer} (${target.channels} channels, cached at ${target.value}), ${n} images\n`);
process.stdout.write(`trunk cache: ${tCache.toFixed(2)} s\n`);
process.stdout.write(`sweep: ${s.curve.length} accuracy evaluations (0..${target.channels} channels pruned)\n`);
// CPU time helps read a run on a busy machine: uncontended wall time is about cpu / cores.
process.stdout.write(`sweep cpu seconds: ${cpuSeconds.toFixed(2)} (${os.availableParallelism()} cores)\n`);
process.stdout.write(`sweep seconds: ${tSweep.toFixed(2)}\n`);

// Baseline in the same run: the uncached way, a full forward pass of the network over the data per step.
t0 = performance.now();
await predictLabels(model, data);
const tFull = (performance.now() - t0) / 1000;
const naive = tFull * s.curve.length;
process.stdout.write(`baseline: one full forward pass ${tFull.toFixed(2)} s → uncached sweep ~${naive.toFixed(1)} s (${s.curve.length} passes); cached sweep is ${(naive / (tCache + tSweep)).toFixed(1)}x faster including the cache\n`);
