// What a run found, as plain JSON. The CLI saves this object as result.json and renders it with
// renderReport(); every section is optional so each command fills in only what it computed.
//
// Units: accuracies, attack success rates, fractions and rates are fractions in [0, 1] (not percent);
// counts are integers; timings are seconds.

/** One layer of the model summary. */
export interface ReportLayer {
  /** Layer name, e.g. "conv_3". */
  name: string;
  /** Layer type, e.g. "Conv2D", "Dense", "MaxPooling2D". */
  className: string;
  /** Output shape without the batch dimension, channels-last as Keras prints it (null for unknown). */
  outputShape: (number | null)[];
  /** Number of parameters (weights + biases) in this layer. */
  params: number;
}

export interface ReportModel {
  /** Model name (file stem or Keras model name). */
  name: string;
  /** Where it was loaded from: file path, or "zoo:<name>". */
  source: string;
  /** Input shape without the batch dimension, e.g. [55, 47, 3] (height, width, channels). */
  inputShape: number[];
  /** Number of output classes. */
  numClasses: number;
  layers: ReportLayer[];
  /** Sum of `params` over all layers. */
  totalParams: number;
  /** Input normalisation (x − mean) / std per channel given with --mean/--std, baked into every saved network and G. */
  normalization?: { mean: number[]; std: number[] };
  /**
   * SHA-256 of the weights (every initializer's bytes, in graph order), written by detect: `detect --merge` tells
   * apart networks of one architecture with it (a model and its repaired copy). Equal for one file loaded twice.
   */
  weightsSha256?: string;
}

/** Accuracy of one network on the clean and poisoned evaluation sets. */
export interface ReportEvalResult {
  /** Top-1 accuracy on clean inputs, in [0, 1]. */
  cleanAccuracy: number;
  /** Attack success rate: fraction of poisoned inputs classified as the attacker's target, in [0, 1]. */
  asr?: number;
  /** Number of clean inputs evaluated. */
  nClean: number;
  /** Number of poisoned inputs evaluated. */
  nPoisoned?: number;
  /** The attack success rate per target, where the poisoned inputs carry more than one target (ascending). */
  asrByTarget?: { target: number; n: number; asr: number }[];
  /**
   * Attack success of the reverse-engineered (Neural Cleanse) trigger: fraction of clean inputs not of its
   * target class that are classified as the target once stamped with it, in [0, 1] (worst over the triggers).
   */
  triggerSuccess?: number;
}

export interface ReportEvaluation {
  /** The network as given (backdoored). */
  before: ReportEvalResult;
  /** The repaired network, when a repair was run. */
  after?: ReportEvalResult;
}

/** One point of the pruning sweep. */
export interface ReportPruningPoint {
  /** Fraction of the layer's channels pruned so far, in [0, 1]. */
  fractionPruned: number;
  /** Number of channels pruned so far. */
  channelsPruned: number;
  /** Clean accuracy of the pruned network, in [0, 1]. */
  cleanAccuracy: number;
  /** Attack success rate of the pruned network, in [0, 1]. */
  asr?: number;
  /** Attack success of the reverse-engineered trigger on the pruned network (see ReportEvalResult), in [0, 1]. */
  triggerSuccess?: number;
}

/** A network saved when clean accuracy first dropped by at least `drop`. */
export interface ReportPruningDrop {
  /** Accuracy drop that triggered the save, as a fraction (0.02 = 2 percentage points). */
  drop: number;
  /** Channels pruned in the saved network. */
  channelsPruned: number;
  /** Clean accuracy of the saved network, in [0, 1]. */
  cleanAccuracy: number;
  /** Attack success rate of the saved network, in [0, 1]. */
  asr?: number;
}

export interface ReportPruning {
  /** Layer whose channels were pruned, e.g. "conv_3". */
  layer: string;
  /** How channels were ordered for pruning, e.g. "increasing mean activation". */
  order: string;
  /** Accuracy after each pruning step, in increasing `fractionPruned`. */
  curve: ReportPruningPoint[];
  /** The saved networks (the chosen drop points), in increasing `drop`. */
  drops: ReportPruningDrop[];
}

/** Neural Cleanse result for one candidate target label. */
export interface ReportNcLabel {
  /** Class index. */
  label: number;
  /** L1 norm of the reverse-engineered trigger mask (sum of mask values). */
  l1Norm: number;
  /** Anomaly index: |l1Norm − median| / (1.4826 · MAD). */
  anomalyIndex: number;
  /** Fraction of clean inputs sent to `label` when stamped with the reversed trigger, in [0, 1]. */
  attackSuccess: number;
  /** True when the label is reported as a backdoor target (small norm and anomaly index > 2 in some trigger family). */
  flagged: boolean;
  /** Trigger families that flag the label ("mask", "blend"); absent in results that scanned masks only. */
  flaggedBy?: string[];
  /** Blend family: the reversed whole-image blend weight α and its anomaly index. */
  blendAlpha?: number;
  blendAnomalyIndex?: number;
  /** In [0, 1]: how strongly the evidence points to a backdoor target (absent in older results). */
  confidence?: number;
  /** Why the label is flagged (or not). */
  reasons?: string[];
}

/** Images of one reversed trigger, each a PNG as base64 (optionally with a "data:image/png;base64," prefix). */
export interface ReportTrigger {
  label: number;
  /** Trigger family ("mask" when absent; "blend": one blend weight for the whole image). */
  family?: string;
  /** The mask as a grey-scale image (white = trigger pixel). */
  maskPng: string;
  /** The pattern (trigger colours), shown in full. */
  patternPng: string;
  /** A clean input stamped with mask ⊙ pattern. */
  stampedPng: string;
  /** The same clean input without the trigger. */
  cleanPng: string;
}

export interface ReportNeuralCleanse {
  /** One entry per analysed label. */
  labels: ReportNcLabel[];
  /** Labels reported as backdoor targets. */
  flagged: number[];
  /** Median of the mask L1 norms. */
  medianNorm: number;
  /** Median absolute deviation of the mask L1 norms (of their natural logarithms when `scale` is "log"). */
  mad: number;
  /** Scale the anomaly indices were computed on: "linear" (the paper's; the default when absent) or "log". */
  scale?: string;
  /** Reversed triggers to show: the flagged labels and the smallest-norm labels. */
  triggers: ReportTrigger[];
}

export interface ReportStrip {
  /** Entropy of the superimposed predictions for each clean test input. */
  cleanEntropy: number[];
  /** Entropy for each poisoned test input, when poisoned inputs were available. */
  poisonedEntropy?: number[];
  /** Inputs with entropy below this are reported as poisoned. */
  threshold: number;
  /** False rejection rate on the clean inputs at `threshold`, in [0, 1]. */
  frr: number;
  /** False rejection rate the threshold was chosen for, in [0, 1]. */
  frrTarget: number;
  /** Fraction of poisoned inputs detected (entropy below threshold), in [0, 1]. */
  detectionRate?: number;
}

/** Outcome of the repaired network G, which has numClasses + 1 outputs; class numClasses means "backdoor". */
export interface ReportG {
  /** Number of classes of the original network (G outputs one more). */
  numClasses: number;
  clean: {
    /** Clean inputs evaluated. */
    n: number;
    /** Clean inputs given their true label. */
    correct: number;
    /** Clean inputs wrongly flagged as backdoored (output numClasses). */
    flagged: number;
  };
  poisoned?: {
    /** Poisoned inputs evaluated. */
    n: number;
    /** Poisoned inputs flagged as backdoored (output numClasses). */
    flagged: number;
    /** Poisoned inputs still classified as the attacker's target. */
    attackSuccess: number;
  };
}

/** A Neural Cleanse mitigation run (nc-prune or unlearn): what it acted on and how it ended. */
export interface ReportMitigation {
  method: "nc-prune" | "unlearn";
  /** Labels whose reversed triggers were used (empty: nothing flagged, nothing repaired). */
  flagged: number[];
  /** Where the triggers came from, e.g. "neural-cleanse detection", "trigger folder out/nc", "mask.png + pattern.png". */
  triggerSource: string;
  /** nc-prune: the pruned layer, its neuron count and how many were pruned. */
  layer?: string;
  neurons?: number;
  neuronsPruned?: number;
  /** nc-prune: why pruning stopped ("threshold" reached, "max-drop" hit, or "all-pruned"). */
  stop?: string;
  /** Settings used, e.g. {"threshold": 0.05, "maxDrop": 0.1, "step": 0.01} or {"epochs": 1, "ratio": 0.2, "lr": 0.001}. */
  settings?: Record<string, number | string>;
}

/** A rate with its exact (Clopper–Pearson) 95% interval. */
export interface ReportRate {
  n: number;
  count: number;
  rate: number;
  ci95: [number, number];
}

/** How a G calibrated to a false-alarm rate was built, and what it did on test data (src/defenses/g-calibrate.ts). */
export interface ReportGCalibration {
  fprTarget: number;
  /** "marginal" (rate ≤ target in expectation), or the probability that the rate holds over the held-out draw. */
  guarantee: "marginal" | { confidence: number };
  /** Input-level signals combined (disagreement, strip, trigger, confidence). */
  signals: string[];
  /** Per signal; null = that signal never flags. */
  thresholds: (number | null)[];
  /** Held-out clean images calibrated on (never seen by the repair), how many the rule flags, and how many of them
   * form the reference half the signals are ranked against (absent in results written before the split rule);
   * referenceOutside: the reference images were other clean images (auto's selection split), not of the n. */
  heldOut: { n: number; flagged: number; reference?: number; referenceOutside?: boolean };
  /** False alarms on clean test data. */
  cleanTest?: ReportRate;
  /** Detection on the poisoned data. */
  poisoned?: ReportRate;
  /** Detection per target, where the poisoned data carry more than one (ascending). */
  poisonedByTarget?: (ReportRate & { target: number })[];
  /** The Mahalanobis signal's fit (src/defenses/g-mahalanobis.ts), when it is one of the signals. */
  mahalanobis?: ReportMahalanobis;
  /** The class-gap signal's fit (d to B's class minus d to the closest class), when it is one of the signals. */
  mahalanobisGap?: ReportMahalanobis;
  /** Why a signal was left out, etc. */
  notes?: string[];
  /** How the signal set was chosen on reversed-trigger proxies (src/defenses/g-select.ts), when it was. */
  signalSelection?: { proxies: number; tried: { signals: string[]; proxyDetection: number }[] };
}

/** Class-conditional Gaussians of B's features fitted on clean data outside the calibration split. */
export interface ReportMahalanobis {
  /** "penultimate" (input of the last linear layer), "penultimate-preact" (before its ReLU), "conv-pooled", "conv-flat". */
  layer: string;
  dim: number;
  /** "shared": one full covariance for all classes; "diagonal": fewer fit images than 2 × dim. */
  covariance: "shared" | "diagonal";
  /** Ledoit–Wolf weight of the scaled identity. */
  shrinkage: number;
  fitImages: number;
  /** Classes with fewer than 5 fit images (their mean leans on the pooled mean). */
  sparseClasses: number;
}

/** A repair that broke its own accuracy budget (--max-drop): the budget and the kept round's held-out drop (fractions). */
export interface ReportOverBudget {
  maxDrop: number;
  drop: number;
}

/** How `repair --defense auto` chose: every candidate's scores on a held-out selection split (src/defenses/auto-select.ts). */
export interface ReportSelection {
  /** The rule, in words. */
  rule: string;
  /** Clean images in the selection split (no candidate and no detection saw them). */
  selectionSize: number;
  candidates: {
    defense: string;
    cleanAccuracy: number;
    triggerSuccess?: number;
    adversarialSuccess: number;
    seconds: number;
    /** Per counted label: the trigger reversed afresh on the candidate (L1 norm, B's flag threshold, its anomaly index among B's unflagged reference labels (absent in results written before 2026-12-07 evening; null where those labels have no spread), its success on the selection split, whether it counts: norm within the threshold); only candidates tied for the lowest score. */
    reinverted?: { label: number; l1Norm: number; bound: number; index: number; success: number; counts: boolean }[];
    reinvertSeconds?: number;
    /** Per position-free label: the reversed trigger's success at a random position per image (counted in triggerSuccess). */
    moved?: { label: number; success: number }[];
    /** Per flagged label: its reversed trigger of the other family, which no repair trained on (counted where some eligible repair halves B's success on it). */
    heldOut?: { label: number; success: number }[];
    /** The repair kept a round past its own --max-drop: not eligible while another candidate is. */
    overBudget?: ReportOverBudget;
  }[];
  chosen: string;
  reason: string;
  /** Candidates not run: time budget spent, nothing flagged, or not applicable to the model (with why). */
  skipped?: string[];
  /** When the chosen candidate leaves the reversed trigger working: the repair outside the accuracy window that removes it best (its selection figures). */
  tradeoff?: { defense: string; cleanAccuracy: number; triggerSuccess: number };
  /** Per flagged trigger, B's success on the selection split where found and moved at random (position-free labels are scored moved too). */
  shiftEvidence?: { label: number; atFound: number; translated: number; ratio: number; offShare: number; positionFree: boolean }[];
}

/** fine-prune's own section: what was pruned and how the network was fine-tuned afterwards. */
export interface ReportFinePruning {
  drop: number;
  reached: boolean;
  channels: number[];
  /** The pruned network before fine-tuning. */
  pruned: ReportEvalResult;
  epochs: number;
  lr: number;
  optimizer: string;
  seed?: number;
  history: { epoch: number; loss: number; accuracy: number; seconds: number }[];
  /** "all" parameters or only the "tail" (absent in files from before tail fine-tuning: all). */
  tune?: "all" | "tail";
  /** The value fine-tuning started from: the model input for "all", the tail cut for "tail". */
  tunedFrom?: string;
  tunedParams?: number;
  totalParams?: number;
}

export interface ReportData {
  /** Version of this layout (report/schema.ts RESULT_SCHEMA_VERSION); absent in files written before versioning. */
  schemaVersion?: number;
  /** Report heading. */
  title?: string;
  /** ISO 8601 time the run finished. */
  createdAt?: string;
  /** The command line that produced the run. */
  command?: string;
  model?: ReportModel;
  evaluation?: ReportEvaluation;
  pruning?: ReportPruning;
  neuralCleanse?: ReportNeuralCleanse;
  strip?: ReportStrip;
  g?: ReportG;
  gCalibration?: ReportGCalibration;
  selection?: ReportSelection;
  mitigation?: ReportMitigation;
  finePruning?: ReportFinePruning;
  /** Wall-clock seconds per step, in the order the steps ran, e.g. {"load": 0.4, "neural-cleanse": 812}. */
  timings?: Record<string, number>;
}
