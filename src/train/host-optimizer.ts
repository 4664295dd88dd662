// The optimizer update done in place in JS on the parameter arrays, after the runtime has written the step's
// gradients: the same rules as graph/optimizers.ts (SGD with momentum, Adam with the bias correction folded
// into the learning rate), one pass over each parameter instead of ~12 elementwise graph nodes, each of which
// reads and writes whole tensors (on full-width PreAct-ResNet18 the update moved ~11M floats a dozen times per
// step; docs/pytorch-speed.md).
import type { OptimizerConfig } from "../graph/optimizers.js";

export class HostOptimizer {
  /** Per parameter: SGD's velocity, or Adam's first and second moments (zero at the start). */
  private readonly state: Float32Array[][];

  constructor(private readonly cfg: OptimizerConfig, sizes: number[]) {
    const slots = cfg.kind === "adam" ? 2 : (cfg.momentum ?? 0.9) === 0 ? 0 : 1;
    this.state = sizes.map((n) => Array.from({ length: slots }, () => new Float32Array(n)));
  }

  /** One update of every parameter from its gradient at learning rate lr (Adam: already bias-corrected, see stepLr). */
  step(params: Float32Array[], grads: Float32Array[], lr: number): void {
    params.forEach((p, i) => this.update(p, grads[i], this.state[i], lr));
  }

  private update(p: Float32Array, g: Float32Array, st: Float32Array[], lr: number): void {
    const cfg = this.cfg;
    const wd = cfg.weightDecay ?? 0;
    const n = p.length;
    if (cfg.kind === "sgd") {
      const mom = cfg.momentum ?? 0.9;
      if (mom === 0) {
        for (let j = 0; j < n; j++) p[j] -= lr * (g[j] + wd * p[j]);
        return;
      }
      const v = st[0];
      for (let j = 0; j < n; j++) {
        const vj = mom * v[j] + (g[j] + wd * p[j]);
        v[j] = vj;
        p[j] -= lr * vj;
      }
      return;
    }
    const b1 = cfg.beta1 ?? 0.9, b2 = cfg.beta2 ?? 0.999, eps = cfg.eps ?? 1e-8;
    const c1 = 1 - b1, c2 = 1 - b2;
    const [m, v] = st;
    for (let j = 0; j < n; j++) {
      const gj = g[j] + wd * p[j];
      const mj = b1 * m[j] + c1 * gj;
      const vj = b2 * v[j] + c2 * gj * gj;
      m[j] = mj;
      v[j] = vj;
      p[j] -= (lr * mj) / (Math.sqrt(vj) + eps);
    }
  }
}
