import { test } from "node:test";
import assert from "node:assert/strict";
import os from "node:os";
import { attr, Graph } from "../graph/ir.js";
import { gradientWork, MIN_MACS_PER_NODE, threadsForWork } from "./threads.js";
import { sessionSettings } from "./session.js";

test("threadsForWork: one thread below MIN_MACS_PER_NODE per node, every core at or above it", () => {
  assert.equal(threadsForWork({ macsPerRun: MIN_MACS_PER_NODE * 100 - 1 }, 100, 8), 1);
  assert.equal(threadsForWork({ macsPerRun: MIN_MACS_PER_NODE * 100 }, 100, 8), 8);
  // An empty graph counts as one node rather than dividing by zero.
  assert.equal(threadsForWork({ macsPerRun: MIN_MACS_PER_NODE }, 0, 4), 4);
});

test("gradientWork: the network's forward MACs per image times the images of a run", () => {
  const g = new Graph("tiny");
  g.addInput("x", "float32", ["N", 2, 4, 4]);
  g.addInitializer("w", { dtype: "float32", shape: [3, 2, 3, 3], data: new Float32Array(54) });
  g.setOutputs([g.op("Conv", ["x", "w"], { pads: attr.ints([1, 1, 1, 1]) })]);
  // 3 output channels × 4×4 positions × 2·3·3 taps = 864 per image.
  assert.deepEqual(gradientWork({ graph: g }, 10), { work: { macsPerRun: 8640 } });
});

test("sessionSettings: explicit threads, then $BADNET_THREADS, then the work rule, then every core", () => {
  const saved = process.env.BADNET_THREADS;
  try {
    delete process.env.BADNET_THREADS;
    const small = { work: { macsPerRun: 1 } };
    const big = { work: { macsPerRun: MIN_MACS_PER_NODE * 1000 } };
    assert.equal(sessionSettings(small, 10).threads, 1);
    assert.equal(sessionSettings(big, 10).threads, os.availableParallelism());
    assert.equal(sessionSettings({}).threads, os.availableParallelism());
    assert.equal(sessionSettings({ ...small, threads: 3 }, 10).threads, 3);
    process.env.BADNET_THREADS = "2";
    assert.equal(sessionSettings(small, 10).threads, 2);
    assert.equal(sessionSettings({ ...small, threads: 5 }, 10).threads, 5);
  } finally {
    if (saved === undefined) delete process.env.BADNET_THREADS;
    else process.env.BADNET_THREADS = saved;
  }
});

test("sessionSettings: memory pattern off for gradient graphs (given work), on otherwise, unless set", () => {
  assert.equal(sessionSettings({}).memoryPattern, true);
  assert.equal(sessionSettings({ work: { macsPerRun: 1 } }).memoryPattern, false);
  assert.equal(sessionSettings({ work: { macsPerRun: 1 }, memoryPattern: true }).memoryPattern, true);
  assert.equal(sessionSettings({ memoryPattern: false }).memoryPattern, false);
});
