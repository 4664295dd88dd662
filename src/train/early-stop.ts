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

/**
 * Which epoch of an unlearning run to keep, and when to stop (nc-mitigation.ts, feature-unlearn.ts). The held-out
 * score is clean accuracy minus reversed-trigger success. After the first epoch or two the reversed trigger has
 * stopped working and the score moves only with held-out accuracy noise, while further epochs keep removing the
 * real trigger, which the reversed one only approximates. So the latest epoch whose score is within `tolerance`
 * of the best so far is kept (tolerance 0: the best epoch, the earlier one on ties), and a run stops `patience`
 * epochs after the last epoch kept.
 */
export class EpochKeeper<T> {
  private top: number;
  private chosen: { value: T; score: number; epoch: number };

  /** `start` is epoch 0 (B itself): never preferred to a trained epoch, so its score plays no part. */
  constructor(start: T, readonly tolerance: number, readonly patience: number) {
    if (!(tolerance >= 0)) throw new RangeError(`tolerance must be at least 0, got ${tolerance}`);
    if (!Number.isInteger(patience) || patience < 1) throw new RangeError(`patience must be a positive integer, got ${patience}`);
    this.top = -Infinity;
    this.chosen = { value: start, score: NaN, epoch: 0 };
  }

  /** The epoch kept so far (epoch 0: none trained yet). */
  get kept(): { value: T; score: number; epoch: number } {
    return this.chosen;
  }

  /** Records epoch `epoch`'s network and held-out score; true when the run should stop (counted from `since` at least). */
  after(epoch: number, value: T, score: number, since = 0): boolean {
    // The first trained epoch is always kept (B is no repair), and its score starts the comparison.
    if (this.chosen.epoch === 0 || score > this.top - this.tolerance) {
      this.top = Math.max(this.top, score); // -Infinity until the first trained epoch
      this.chosen = { value, score, epoch };
      return false;
    }
    return epoch - Math.max(this.chosen.epoch, since) >= this.patience;
  }

  /** Without a held-out split there is no score: every epoch is kept, and the run goes to its epoch budget. */
  keepUnscored(epoch: number, value: T): void {
    this.chosen = { value, score: NaN, epoch };
  }

  /** A later round starts from the kept network with a fresh score on its wider trigger set. */
  rescore(score: number): void {
    this.chosen = { ...this.chosen, score };
    this.top = score;
  }
}
