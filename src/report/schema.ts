// The result.json schema, checked on read (`badnet report`, `--trigger`). It mirrors report/types.ts field by
// field (a compile-time check below keeps the two in step) and is versioned: writers stamp schemaVersion,
// readers refuse a version they do not know. Files from before versioning carry none and are read as version 1.
// Objects let unknown fields through: commands add their own fields beside the sections.
import { z } from "zod";
import type { ReportData } from "./types.js";

export const RESULT_SCHEMA_VERSION = 1;

const num = z.number();
const int = z.number().int();
const frac = z.number().min(0).max(1);

const layer = z.object({ name: z.string(), className: z.string(), outputShape: z.array(z.number().nullable()), params: int }).passthrough();
const model = z.object({ name: z.string(), source: z.string(), inputShape: z.array(int), numClasses: int, layers: z.array(layer), totalParams: int, weightsSha256: z.string().optional() }).passthrough();
const targetRate = z.object({ target: int, n: int, asr: frac }).passthrough();
const evalResult = z.object({ cleanAccuracy: frac, asr: frac.optional(), nClean: int, nPoisoned: int.optional(), asrByTarget: z.array(targetRate).optional(), triggerSuccess: frac.optional() }).passthrough();
const evaluation = z.object({ before: evalResult, after: evalResult.optional() }).passthrough();
const pruningPoint = z.object({ fractionPruned: frac, channelsPruned: int, cleanAccuracy: frac, asr: frac.optional(), triggerSuccess: frac.optional() }).passthrough();
const pruningDrop = z.object({ drop: num, channelsPruned: int, cleanAccuracy: frac, asr: frac.optional() }).passthrough();
const pruning = z.object({ layer: z.string(), order: z.string(), curve: z.array(pruningPoint), drops: z.array(pruningDrop) }).passthrough();
const ncLabel = z
  .object({
    label: int,
    l1Norm: num,
    anomalyIndex: num,
    attackSuccess: frac,
    flagged: z.boolean(),
    flaggedBy: z.array(z.string()).optional(),
    blendAlpha: num.optional(),
    blendAnomalyIndex: num.optional(),
  })
  .passthrough();
const trigger = z.object({ label: int, family: z.string().optional(), maskPng: z.string(), patternPng: z.string(), stampedPng: z.string(), cleanPng: z.string() }).passthrough();
const neuralCleanse = z.object({ labels: z.array(ncLabel), flagged: z.array(int), medianNorm: num, mad: num, scale: z.string().optional(), triggers: z.array(trigger) }).passthrough();
const strip = z
  .object({ cleanEntropy: z.array(num), poisonedEntropy: z.array(num).optional(), threshold: num, frr: frac, frrTarget: frac, detectionRate: frac.optional() })
  .passthrough();
const g = z
  .object({
    numClasses: int,
    clean: z.object({ n: int, correct: int, flagged: int }).passthrough(),
    poisoned: z.object({ n: int, flagged: int, attackSuccess: int }).passthrough().optional(),
  })
  .passthrough();
const mitigation = z
  .object({
    method: z.enum(["nc-prune", "unlearn"]),
    flagged: z.array(int),
    triggerSource: z.string(),
    layer: z.string().optional(),
    neurons: int.optional(),
    neuronsPruned: int.optional(),
    stop: z.string().optional(),
    settings: z.record(z.union([num, z.string()])).optional(),
  })
  .passthrough();

const epochStats = z.object({ epoch: int, loss: num, accuracy: frac, seconds: num }).passthrough();
const finePruning = z
  .object({
    drop: num,
    reached: z.boolean(),
    channels: z.array(int),
    pruned: evalResult,
    epochs: int,
    lr: num,
    optimizer: z.string(),
    seed: int.optional(),
    history: z.array(epochStats),
    // Added with tail fine-tuning; absent in files written before it (they tuned all parameters).
    tune: z.enum(["all", "tail"]).optional(),
    tunedFrom: z.string().optional(),
    tunedParams: int.optional(),
    totalParams: int.optional(),
    // Added with --stop: when fine-tuning ended and what the stopping rule saw; absent in older files.
    stop: z
      .object({
        rule: z.enum(["epochs", "recovered"]),
        epochsRun: int,
        reason: z.enum(["epochs", "recovered", "no-improvement"]),
        holdout: frac.optional(),
        heldOutImages: int.optional(),
        baseAccuracy: frac.optional(),
        heldOutAccuracy: z.array(frac).optional(),
      })
      .passthrough()
      .optional(),
    // Added with BatchNorm training: how fine-tuning treated BatchNorm, where the network has any.
    batchNorm: z.string().optional(),
  })
  .passthrough();

const rate = z.object({ n: int, count: int, rate: frac, ci95: z.tuple([frac, frac]) }).passthrough();
const mahalanobis = z.object({ layer: z.string(), dim: int, covariance: z.enum(["shared", "diagonal"]), shrinkage: frac, fitImages: int, sparseClasses: int }).passthrough();
const gCalibration = z
  .object({
    fprTarget: frac,
    guarantee: z.union([z.literal("marginal"), z.object({ confidence: frac }).passthrough()]),
    signals: z.array(z.string()),
    thresholds: z.array(num.nullable()),
    heldOut: z.object({ n: int, flagged: int, reference: int.optional(), referenceOutside: z.boolean().optional() }).passthrough(),
    cleanTest: rate.optional(),
    poisoned: rate.optional(),
    poisonedByTarget: z.array(rate.extend({ target: int })).optional(),
    mahalanobis: mahalanobis.optional(),
    mahalanobisGap: mahalanobis.optional(),
    notes: z.array(z.string()).optional(),
    signalSelection: z.object({ proxies: int, tried: z.array(z.object({ signals: z.array(z.string()), proxyDetection: frac }).passthrough()) }).passthrough().optional(),
  })
  .passthrough();

const selection = z
  .object({
    rule: z.string(),
    selectionSize: int,
    candidates: z.array(z.object({ defense: z.string(), cleanAccuracy: frac, triggerSuccess: frac.optional(), adversarialSuccess: frac, seconds: num }).passthrough()),
    chosen: z.string(),
    reason: z.string(),
    skipped: z.array(z.string()).optional(),
    tradeoff: z.object({ defense: z.string(), cleanAccuracy: frac, triggerSuccess: frac }).optional(),
  })
  .passthrough();

export const resultSchema = z
  .object({
    schemaVersion: z.literal(RESULT_SCHEMA_VERSION).optional(),
    title: z.string(),
    createdAt: z.string().optional(),
    command: z.string().optional(),
    model: model.optional(),
    evaluation: evaluation.optional(),
    pruning: pruning.optional(),
    neuralCleanse: neuralCleanse.optional(),
    strip: strip.optional(),
    g: g.optional(),
    gCalibration: gCalibration.optional(),
    selection: selection.optional(),
    mitigation: mitigation.optional(),
    finePruning: finePruning.optional(),
    timings: z.record(num).optional(),
  })
  .passthrough();

export type ResultData = z.infer<typeof resultSchema>;

// The schema and the hand-written types describe the same fields: each is assignable to the other.
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const sameFields: Same<{ [K in keyof Omit<ResultData, "title">]: unknown }, { [K in keyof Omit<ReportData, "title">]: unknown }> = true;
const assignable = (r: ResultData): ReportData => r;
void sameFields;
void assignable;

/** Where in the document the first problem is and what it is, on one line. */
function firstIssue(e: z.ZodError): string {
  const i = e.issues[0];
  const at = i.path.length ? i.path.map((p) => (typeof p === "number" ? `[${p}]` : `.${p}`)).join("").replace(/^\./, "") : "the document";
  return `${at}: ${i.message}`;
}

/** A parsed JSON value as a result, or a one-line reason why it is not one. */
export function parseResult(v: unknown): { ok: true; data: ResultData } | { ok: false; reason: string } {
  if (typeof v !== "object" || v === null || Array.isArray(v)) return { ok: false, reason: "expected a JSON object" };
  const version = (v as { schemaVersion?: unknown }).schemaVersion;
  if (version !== undefined && version !== RESULT_SCHEMA_VERSION) {
    return { ok: false, reason: `schema version ${JSON.stringify(version)} is not one this badnet reads (${RESULT_SCHEMA_VERSION})` };
  }
  const r = resultSchema.safeParse(v);
  return r.success ? { ok: true, data: r.data } : { ok: false, reason: firstIssue(r.error) };
}
