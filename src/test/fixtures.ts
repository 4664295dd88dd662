// Where tests find the shared fixtures and the CLI.
import { existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));

/** The repository root (dist/test → ../..). */
export const ROOT = resolve(here, "../..");
export const FIXTURES = process.env.BADNET_FIXTURES ?? resolve(ROOT, "../shared/fixtures");
export const CLI = join(ROOT, "dist/cli/main.js");

export function fixture(rel: string): string {
  const p = join(FIXTURES, rel);
  if (!existsSync(p)) throw new Error(`fixture missing: ${p}`);
  return p;
}
