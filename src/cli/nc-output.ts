// What `detect` writes, shared with `repair` (which writes it into DIR/detect): the reversed triggers as PNGs
// and the run as result.json.
import { createHash } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { ncSection, triggerPngName, triggerPngs } from "../defenses/nc-report.js";
import type { NeuralCleanseResult } from "../defenses/neural-cleanse.js";
import type { Model } from "../model/model.js";
import { RESULT_SCHEMA_VERSION } from "../report/schema.js";
import type { ReportData } from "../report/types.js";
import { commandLine, reportModelOf } from "./output.js";

/** Mask, pattern, trigger (pattern·mask) and stamped-example PNGs of every reported label, plus the clean example. */
export function writeTriggerPngs(dir: string, r: Pick<NeuralCleanseResult, "triggers" | "example" | "shape" | "inputScale">): string[] {
  const files: string[] = [];
  const put = (name: string, data: Buffer) => {
    writeFileSync(join(dir, name), data);
    files.push(join(dir, name));
  };
  r.triggers.forEach((t, i) => {
    const png = triggerPngs(t, r.example, r.shape, r.inputScale);
    // A label may have a trigger of each family; triggerPngName names blend ones apart.
    for (const role of ["mask", "pattern", "trigger", "stamped"] as const) put(triggerPngName(t, role), png[role]);
    if (i === 0) put(triggerPngName(t, "clean"), png.clean);
  });
  return files;
}

/** SHA-256 of a network's weights: every initializer's name, shape and bytes, in graph order. */
export function weightsSha256(model: Model): string {
  const h = createHash("sha256");
  for (const [name, t] of model.graph.initializers) {
    h.update(`${name}:${t.dtype}:${t.shape.join("x")};`);
    h.update(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
  }
  return h.digest("hex");
}

/** A detection run as result.json: the report section plus per-label measurements, time per phase, family statistics, images, settings (what `detect --merge` reads). */
export function detectResult(model: Model, modelPath: string, result: NeuralCleanseResult, loadSeconds: number): ReportData {
  return {
    schemaVersion: RESULT_SCHEMA_VERSION,
    title: `Neural Cleanse — ${model.name}`,
    createdAt: new Date().toISOString(),
    command: commandLine(),
    model: { ...reportModelOf(model, modelPath), weightsSha256: weightsSha256(model) },
    neuralCleanse: ncSection(result),
    timings: { load: loadSeconds, "neural-cleanse": result.seconds },
  };
}
