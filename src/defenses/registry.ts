// The one list of defenses. The CLI's defense commands, `repair --defense`, the bench and the docs all derive
// from it: a new defense is one file exporting a Defense plus one line here.
import { anpDefinition, fstDefinition, ftSamDefinition, ibauDefinition, sauDefinition } from "./adversarial-repair-defenses.js";
import type { AnyDefense } from "./defense.js";
import { finePruneDefinition } from "./fine-prune-defense.js";
import { featureUnlearnDefinition, ncPruneDefinition, pruneUnlearnDefinition, unlearnDefinition } from "./nc-repair-defenses.js";
import { pruneDefinition } from "./prune-defense.js";
import { stripDefinition } from "./strip-defense.js";

export const DEFENSES: readonly AnyDefense[] = [pruneDefinition, finePruneDefinition, ncPruneDefinition, unlearnDefinition, pruneUnlearnDefinition, featureUnlearnDefinition, stripDefinition, anpDefinition, ibauDefinition, sauDefinition, ftSamDefinition, fstDefinition];

export const defenseNames = (): string[] => DEFENSES.map((d) => d.name);

/** The registered defense of that name, or undefined. */
export const findDefense = (name: string): AnyDefense | undefined => DEFENSES.find((d) => d.name === name);
