// What the training repairs (i-BAU, SAU, FT-SAM) share: a held-out split of the clean data that training never
// sees, the rule that keeps the last round within the clean-accuracy budget on it, and the final evaluation of
// B′ with its G. One place, so the three defenses choose and report their rounds the same way.
import { countCorrect, evaluateModels, type PairEvaluation } from "../eval/evaluate.js";
import type { Dataset } from "../io/dataset.js";
import { predictLabels } from "../model/forward.js";
import type { Model } from "../model/model.js";
import type { Graph } from "../graph/ir.js";
import { gFromPair } from "./g-model.js";
import { ncEvalSets, type NcData } from "./nc-mitigation.js";
import { splitClean, type Images } from "../train/split.js";

export interface HeldOutSplit {
  /** The images the repair trains on. */
  train: Images;
  /** The held-out images (also as `held`, a Dataset). */
  heldOut: Images;
  held: Dataset;
  /** Accuracy of `m` on the held-out images (optionally a perturbed view of them, same labels). */
  accuracy(m: Model, ds?: Dataset): Promise<number>;
}

/** Splits `clean` into training and held-out images; `defense` names it in the error when one part is empty. */
export function heldOutSplit(clean: Dataset, holdout: number, seed: number, defense: string, evalBatchSize?: number): HeldOutSplit {
  const { train, held: heldOut, heldSet: held } = splitClean(clean, holdout, seed, defense);
  const accuracy = async (m: Model, ds: Dataset = held) => countCorrect(await predictLabels(m, ds, { batchSize: evalBatchSize }), heldOut.y) / heldOut.y.length;
  return { train, heldOut, held, accuracy };
}

/**
 * Keeps the latest round whose held-out accuracy is within `maxDrop` of B's (`base`). Round 0 would be B
 * itself: when every round broke the budget, the round with the best held-out accuracy is offered (the caller
 * reports its accuracy in the history).
 */
export class RoundPicker {
  private chosen: { model: Model; round: number };
  private best: { model: Model; round: number; acc: number };

  constructor(model: Model, private readonly base: number, private readonly maxDrop: number) {
    this.chosen = { model, round: 0 };
    this.best = { model, round: 0, acc: -1 };
  }

  offer(model: Model, round: number, acc: number): void {
    if (this.base - acc <= this.maxDrop) this.chosen = { model, round };
    if (acc > this.best.acc) this.best = { model, round, acc };
  }

  pick(): { model: Model; round: number } {
    return this.chosen.round === 0 ? { model: this.best.model, round: this.best.round } : this.chosen;
  }
}

/** B′ named `<B>_<suffix>`, evaluated against B on the data's test sets, with G built from the pair. */
export async function finishRepair(model: Model, chosen: Model, data: NcData, suffix: string, evalBatchSize?: number): Promise<PairEvaluation & { model: Model; gGraph: Graph }> {
  const repaired = { ...chosen, name: `${model.name}_${suffix}` };
  const ev = await evaluateModels(model, repaired, ncEvalSets(data, []), evalBatchSize);
  return { ...ev, model: repaired, gGraph: gFromPair(model, repaired, `${model.name}_${suffix}_G`) };
}
