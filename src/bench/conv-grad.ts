// One conv's gradients alone, each form alternating with another in the same run (graph/autodiff.ts,
// ConvGradForms): the weight gradient (flip's per-tap Gemms with dy transposed in the Gemm vs direct's with dy
// channel-major) at PreAct-ResNet18's four stage shapes, and the input gradient (the flipped-kernel Conv vs
// ConvTranspose) at DeepID's and PreAct-ResNet18's shapes, the measurements behind the direct form's rules.
//   node dist/bench/conv-grad.js [--rounds 6]
import { backward, type ConvGradForms } from "../graph/autodiff.js";
import { attr, Graph, tensor, type TensorData } from "../graph/ir.js";
import { Session } from "../runtime/session.js";
import { mulberry32 } from "../util/random.js";
import { benchArgs } from "./args.js";

const { values } = benchArgs(import.meta.url, { options: { rounds: { type: "string" } } });
const rounds = Number(values.rounds ?? 6);

interface ConvCase {
  label: string;
  n: number;
  c: number;
  h: number;
  w: number;
  m: number;
  k: number;
  pad: number;
}

const rand = mulberry32(11);
const randomTensor = (shape: number[]): TensorData => tensor("float32", shape, Float32Array.from({ length: shape.reduce((p, q) => p * q, 1) }, () => rand() - 0.5));

/** A session computing the gradient of one Conv with respect to `wrt`, from a given dy. */
async function gradSession(k: ConvCase, wrt: "x" | "w", forms: ConvGradForms): Promise<Session> {
  const g = new Graph("conv_grad");
  const [oh, ow] = [k.h - k.k + 1 + 2 * k.pad, k.w - k.k + 1 + 2 * k.pad];
  g.addInput("x", "float32", [k.n, k.c, k.h, k.w]);
  g.addInput("w", "float32", [k.m, k.c, k.k, k.k]);
  g.addInput("dy", "float32", [k.n, k.m, oh, ow]);
  const y = g.op("Conv", ["x", "w"], { pads: attr.ints([k.pad, k.pad, k.pad, k.pad]) });
  g.setOutputs([backward(g, y, [wrt], { convForms: forms, seed: "dy" }).get(wrt)!]);
  return Session.create(g);
}

/** Milliseconds per run of each form, alternating (the order rotating each round). */
async function compare(k: ConvCase, wrt: "x" | "w", forms: ConvGradForms[]): Promise<number[]> {
  const [oh, ow] = [k.h - k.k + 1 + 2 * k.pad, k.w - k.k + 1 + 2 * k.pad];
  const feeds = { x: randomTensor([k.n, k.c, k.h, k.w]), w: randomTensor([k.m, k.c, k.k, k.k]), dy: randomTensor([k.n, k.m, oh, ow]) };
  const sessions = await Promise.all(forms.map((f) => gradSession(k, wrt, f)));
  try {
    for (const s of sessions) await s.run(feeds);
    const spent = sessions.map(() => 0);
    for (let r = 0; r < rounds; r++)
      for (let j = 0; j < sessions.length; j++) {
        const i = (j + r) % sessions.length;
        const t = performance.now();
        await sessions[i].run(feeds);
        spent[i] += performance.now() - t;
      }
    return spent.map((ms) => ms / rounds);
  } finally {
    for (const s of sessions) await s.release();
  }
}

const PREACT: ConvCase[] = [64, 128, 256, 512].map((c, i) => ({ label: `PreAct 3×3 ${c}→${c} at ${32 >> i}²`, n: 64, c, h: 32 >> i, w: 32 >> i, m: c, k: 3, pad: 1 }));
const DEEPID: ConvCase[] = [
  { label: "DeepID conv1 4×4 3→20 at 55×47", n: 128, c: 3, h: 55, w: 47, m: 20, k: 4, pad: 0 },
  { label: "DeepID conv2 3×3 20→40 at 26×22", n: 256, c: 20, h: 26, w: 22, m: 40, k: 3, pad: 0 },
  { label: "DeepID conv3 3×3 40→60 at 12×10", n: 256, c: 40, h: 12, w: 10, m: 60, k: 3, pad: 0 },
  { label: "DeepID conv4 2×2 60→80 at 5×4", n: 256, c: 60, h: 5, w: 4, m: 80, k: 2, pad: 0 },
];

process.stdout.write(`Conv weight gradient, flip (dy transposed in each tap's Gemm) vs direct (dy channel-major), ms per run, ${rounds} alternating rounds\n`);
for (const k of PREACT) {
  const [flip, direct] = await compare(k, "w", ["flip", "direct"]);
  process.stdout.write(`  ${k.label.padEnd(36)} flip ${flip.toFixed(1).padStart(7)}  direct ${direct.toFixed(1).padStart(7)}  direct ${(flip / direct).toFixed(2)}× faster\n`);
}
process.stdout.write(`Conv input gradient, flipped-kernel Conv (flip) vs ConvTranspose (fast), ms per run\n`);
for (const k of [...DEEPID, ...PREACT.slice(0, 3)]) {
  const [flip, transposed] = await compare(k, "x", ["flip", "fast"]);
  process.stdout.write(`  ${k.label.padEnd(36)} flipped Conv ${flip.toFixed(1).padStart(7)}  ConvTranspose ${transposed.toFixed(1).padStart(7)}  ConvTranspose ${(flip / transposed).toFixed(2)}× faster (${k.c} channels)\n`);
}
