// Fine-Pruning's stopping rule (Liu, Dolan-Gavitt & Garg, RAID 2018, "fine-tune until accuracy recovers"):
// after each epoch the caller measures clean accuracy on images fine-tuning never sees; training stops once
// that accuracy is back at B's on the same images, or when it has not improved for `patience` epochs (more
// epochs would only spend time). The epoch budget (--epochs) stays the upper bound.

export type StopReason = "recovered" | "no-improvement";

export interface StopDecision {
  stop: boolean;
  reason?: StopReason;
}

export class RecoveryStop {
  private best = -Infinity;
  private stale = 0;

  /**
   * target: B's accuracy on the held-out images (a fraction); patience: epochs without a new best before
   * stopping (at least 1).
   */
  constructor(readonly target: number, readonly patience: number) {
    if (!Number.isInteger(patience) || patience < 1) throw new RangeError(`patience must be a positive integer, got ${patience}`);
  }

  /** The held-out accuracy after an epoch; says whether to stop now and why. */
  after(accuracy: number): StopDecision {
    if (accuracy >= this.target) return { stop: true, reason: "recovered" };
    if (accuracy > this.best) {
      this.best = accuracy;
      this.stale = 0;
      return { stop: false };
    }
    this.stale++;
    return this.stale >= this.patience ? { stop: true, reason: "no-improvement" } : { stop: false };
  }
}
