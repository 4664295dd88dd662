// npm run bench:repairs — the repairs that change B's weights, on every backdoored model of the zoo (and the
// bundled example): clean accuracy before → after, attack success before → after per trigger, wall time.
//   node dist/bench/repairs.js [--zoo DIR] [--only a,b] [--repairs unlearn-paper,unlearn,unlearn-reinvert,prune-unlearn,prune-unlearn-rounds,anp,ibau,sau,ft-sam] [--out FILE]
// The baseline, measured in the same run on the same model, is the paper's unlearning recipe (one epoch, the
// reversed trigger stamped on 20% of each batch); every other row prints its ratios to it (residual ASR and
// time). Neural Cleanse runs once per model (seed 0) and its flagged labels' triggers feed both unlearning
// rows. Every repair sees only valid.h5; clean_test.h5 and the poisoned test sets are only for the table.
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { anp } from "../defenses/anp.js";
import { ftSam } from "../defenses/ft-sam.js";
import { ibau } from "../defenses/ibau.js";
import { sau } from "../defenses/sau.js";
import { ncUnlearn } from "../defenses/nc-mitigation.js";
import { pruneUnlearn } from "../defenses/prune-unlearn.js";
import { detectBackdoor, flaggedTriggers } from "../defenses/neural-cleanse.js";
import { type Dataset } from "../io/dataset.js";
import { openDataset } from "../io/open-dataset.js";
import { loadModel } from "../io/load-model.js";
import { predictLabels } from "../model/forward.js";
import type { Model } from "../model/model.js";
import type { ZooManifest } from "../zoo/build.js";
import { benchArgs } from "./args.js";

const REPAIRS = ["unlearn-paper", "unlearn", "unlearn-reinvert", "prune-unlearn", "prune-unlearn-rounds", "anp", "ibau", "sau", "ft-sam"] as const;
type RepairName = (typeof REPAIRS)[number];

interface Row {
  model: string;
  repair: RepairName;
  note: string;
  cleanBefore: number;
  cleanAfter: number;
  /** Per target: ASR before → after. */
  asr: { target: number; before: number; after: number }[];
  seconds: number;
}

const pct = (v: number) => `${(100 * v).toFixed(2)}%`;

async function accuracy(m: Model, ds: Dataset): Promise<number> {
  const p = await predictLabels(m, ds);
  let ok = 0;
  p.forEach((v, i) => (ok += v === ds.labels![i] ? 1 : 0));
  return ok / ds.size;
}

function modelDirs(zoo: string, only?: string[]): string[] {
  const dirs: string[] = [];
  if (existsSync(zoo)) {
    for (const d of readdirSync(zoo).sort()) if (existsSync(join(zoo, d, "manifest.json"))) dirs.push(join(zoo, d));
  }
  dirs.push(resolve("examples/badnet-fmnist"));
  return dirs.filter((d) => !only || only.some((o) => d.endsWith(`/${o}`)));
}

async function main(): Promise<void> {
  const { values } = benchArgs(import.meta.url, { options: { zoo: { type: "string" }, only: { type: "string" }, repairs: { type: "string" }, out: { type: "string" } } });
  const zoo = values.zoo ?? "zoo";
  const repairs = (values.repairs?.split(",") ?? [...REPAIRS]) as RepairName[];
  for (const r of repairs) if (!REPAIRS.includes(r)) throw new Error(`unknown repair ${r} (known: ${REPAIRS.join(", ")})`);
  const rows: Row[] = [];
  for (const dir of modelDirs(zoo, values.only?.split(","))) {
    const man = JSON.parse(readFileSync(join(dir, "manifest.json"), "utf8")) as ZooManifest;
    if (man.targets.length === 0) continue;
    const scale = man.inputScale;
    const model = await loadModel(join(dir, man.files.model));
    const valid = await openDataset(join(dir, man.files.valid), { inputScale: scale });
    const test = await openDataset(join(dir, man.files.cleanTest), { inputScale: scale });
    const poison = await Promise.all(man.triggers.map(async (t) => ({ target: t.target, ds: await openDataset(join(dir, t.poisonedTest), { inputScale: scale }) })));
    const cleanBefore = await accuracy(model, test);
    const asrBefore = await Promise.all(poison.map((p) => accuracy(model, p.ds)));
    const needsNc = repairs.some((r) => r.startsWith("unlearn") || r.startsWith("prune-unlearn"));
    let triggers: ReturnType<typeof flaggedTriggers> = [];
    let ncNote = "";
    if (needsNc) {
      const t0 = performance.now();
      const nc = await detectBackdoor(model, valid, { inputScale: scale, seed: 0 });
      triggers = flaggedTriggers(nc);
      ncNote = `NC flagged [${nc.flagged.join(", ")}] (truth [${man.targets.join(", ")}]) in ${((performance.now() - t0) / 1000).toFixed(0)} s`;
      console.error(`${man.name}: ${ncNote}`);
    }
    for (const name of repairs) {
      const t0 = performance.now();
      let repaired: Model | undefined;
      let note = "";
      if (name.startsWith("unlearn")) {
        if (triggers.length === 0) {
          rows.push({ model: man.name, repair: name, note: `not applied: ${ncNote}`, cleanBefore, cleanAfter: NaN, asr: [], seconds: 0 });
          continue;
        }
        const r = await ncUnlearn(model, { clean: valid }, triggers, name === "unlearn-paper" ? { epochs: 1, holdout: 0 } : name === "unlearn-reinvert" ? { rounds: 3, inputScale: scale } : {});
        repaired = r.model;
        note = `${ncNote}; epoch ${r.chosenEpoch} of ${r.history.length - (r.settings.holdout > 0 ? 1 : 0)} kept, ${r.triggersUsed} trigger(s)`;
      } else if (name.startsWith("prune-unlearn")) {
        if (triggers.length === 0) {
          rows.push({ model: man.name, repair: name, note: `not applied: ${ncNote}`, cleanBefore, cleanAfter: NaN, asr: [], seconds: 0 });
          continue;
        }
        // prune-unlearn: one round (the earlier default); prune-unlearn-rounds: up to 3 (the default), each later one
        // re-inverting on the repaired network (bound: --bound x the first trigger's norm, no detection report here).
        const r = await pruneUnlearn(model, { clean: valid }, triggers, name === "prune-unlearn-rounds" ? { rounds: 3, inputScale: scale } : { rounds: 1 });
        repaired = r.model;
        note = `${ncNote}; ${r.pruned.length}/${r.site.units} channels of ${r.site.layer} pruned, epoch ${r.chosenEpoch} kept${r.rounds.length ? `; rounds: ${r.rounds.map((q) => `${q.round} ${q.outcome}`).join(", ")}` : ""}`;
      } else if (name === "anp") {
        const r = await anp(model, { clean: valid });
        repaired = r.model;
        note = `${r.pruned.length} neurons pruned (${r.belowThreshold} below ${r.settings.threshold}), held-out acc ${pct(r.heldOut.before)} → ${pct(r.heldOut.after)}`;
      } else if (name === "sau") {
        const r = await sau(model, { clean: valid }, { inputScale: scale });
        repaired = r.model;
        note = `${r.history.length - 1} rounds, held-out acc ${pct(r.history[0].heldOutAccuracy)} → ${pct(r.history[r.chosenRound].heldOutAccuracy)}, kept round ${r.chosenRound}`;
      } else if (name === "ft-sam") {
        const r = await ftSam(model, { clean: valid });
        repaired = r.model;
        note = `${r.history.length - 1} epochs, held-out acc ${pct(r.history[0].heldOutAccuracy)} → ${pct(r.history[r.chosenEpoch].heldOutAccuracy)}, kept epoch ${r.chosenEpoch}`;
      } else {
        const r = await ibau(model, { clean: valid });
        repaired = r.model;
        note = `${r.history.length - 1} rounds, held-out acc ${pct(r.history[0].heldOutAccuracy)} → ${pct(r.history[r.chosenRound].heldOutAccuracy)}, kept round ${r.chosenRound}`;
      }
      const seconds = (performance.now() - t0) / 1000;
      const cleanAfter = await accuracy(repaired, test);
      const asr = [];
      for (let i = 0; i < poison.length; i++) asr.push({ target: poison[i].target, before: asrBefore[i], after: await accuracy(repaired, poison[i].ds) });
      const row: Row = { model: man.name, repair: name, note, cleanBefore, cleanAfter, asr, seconds };
      rows.push(row);
      console.error(`${man.name} ${name}: clean ${pct(cleanBefore)} → ${pct(cleanAfter)}, ASR ${asr.map((a) => `${pct(a.before)} → ${pct(a.after)}`).join("; ")}, ${seconds.toFixed(1)} s`);
    }
    for (const d of [valid, test, ...poison.map((p) => p.ds)]) d.close();
  }
  const lines = [
    "| model | repair | clean acc before → after | ASR before → after (per target) | worst ASR ÷ paper unlearning | time | time ÷ paper unlearning | notes |",
    "|---|---|---|---|---|---|---|---|",
  ];
  for (const r of rows) {
    const base = rows.find((b) => b.model === r.model && b.repair === "unlearn-paper" && b.asr.length);
    const worst = r.asr.length ? Math.max(...r.asr.map((a) => a.after)) : NaN;
    const bworst = base ? Math.max(...base.asr.map((a) => a.after)) : NaN;
    lines.push(
      `| ${r.model} | ${r.repair} | ${Number.isNaN(r.cleanAfter) ? "—" : `${pct(r.cleanBefore)} → ${pct(r.cleanAfter)}`} | ` +
        `${r.asr.map((a) => `${a.target}: ${pct(a.before)} → ${pct(a.after)}`).join("; ") || "—"} | ` +
        `${base && r.asr.length ? (worst / Math.max(bworst, 1e-9)).toFixed(2) : "—"} | ${r.seconds ? `${r.seconds.toFixed(1)} s` : "—"} | ` +
        `${base && r.seconds ? (r.seconds / base.seconds).toFixed(2) : "—"} | ${r.note} |`,
    );
  }
  const table = lines.join("\n");
  console.log(table);
  if (values.out) writeFileSync(values.out, `${table}\n`);
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
