// Output safety. A command never writes over one of its inputs; a result folder appears complete or not at
// all: a run writes into a hidden staging folder beside --out and renames it into place when the command
// has finished, so a folder never mixes the files of two runs and an interrupted run leaves nothing that
// looks finished. Paths are checked (writable, sane, not an input, no old result without --force) before
// any work starts.
import { randomBytes } from "node:crypto";
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readSync,
  realpathSync,
  renameSync,
  rmdirSync,
  rmSync,
  statSync,
} from "node:fs";
import { basename, dirname, isAbsolute, join, relative, resolve, sep } from "node:path";
import { fail, FS_ERRORS, UserError } from "../errors.js";
import type { Context, Options } from "./command.js";

export const FORCE_OPTION: Options = {
  force: { type: "boolean", description: "replace an earlier result or file at the output path (never an input)" },
};

const STAGING_TAG = ".badnet-tmp-";
const OLD_TAG = ".badnet-old-";

/** One line for a failed file-system call: what we tried, the path, and the reason in words. */
export function fsError(what: string, path: string, e: unknown): never {
  const code = (e as NodeJS.ErrnoException)?.code;
  return fail(`cannot ${what} ${path}: ${(code && FS_ERRORS[code]) ?? (e as Error)?.message?.split("\n")[0] ?? String(e)}`);
}

/** The real path of p, or of its nearest existing ancestor joined with the rest (p need not exist). */
function realish(p: string): string {
  const abs = resolve(p);
  let head = abs;
  const tail: string[] = [];
  for (;;) {
    try {
      return join(realpathSync(head), ...tail.reverse());
    } catch {
      const up = dirname(head);
      if (up === head) return abs;
      tail.push(basename(head));
      head = up;
    }
  }
}

const within = (child: string, parent: string): boolean => child === parent || child.startsWith(parent.endsWith(sep) ? parent : parent + sep);

/**
 * The files and folders a command reads: every option value and positional that names an existing path.
 * Generic on purpose, so a command added later is covered without a list to keep in step.
 */
export function inputPaths(ctx: Context, outputKeys: readonly string[] = ["out", "output"]): string[] {
  const vals: string[] = [];
  for (const [k, v] of Object.entries(ctx.values)) {
    if (outputKeys.includes(k)) continue;
    if (typeof v === "string") vals.push(v);
    else if (Array.isArray(v)) vals.push(...v);
  }
  vals.push(...ctx.positionals);
  return vals.filter((v) => v !== "" && existsSync(v));
}

/** Fails when writing `out` (a file, or a folder that replaces everything under it) would destroy an input. */
export function checkNotInput(ctx: Context, out: string, flag: string, extraInputs: readonly string[] = []): void {
  const target = realish(out);
  for (const input of [...inputPaths(ctx), ...extraInputs]) {
    // Both where it leads and the name itself: a symlink inside --out is the user's too, and --force would remove it.
    const named = join(realish(dirname(resolve(input))), basename(resolve(input)));
    if ([realish(input), named].some((p) => within(p, target))) fail(`${flag} ${out} would overwrite the input ${input}; write the results somewhere else`);
  }
}

/**
 * mkdir -p, one level at a time: Node's recursive mkdir never returns under /proc. Returns the folders it
 * created, outermost first, so a failed run can remove them again.
 */
export function makeDirs(dir: string, flag: string): string[] {
  const abs = resolve(dir);
  const missing: string[] = [];
  let p = abs;
  while (!existsSync(p)) {
    missing.push(p);
    const up = dirname(p);
    if (up === p) break;
    p = up;
  }
  if (existsSync(p) && !statSync(p).isDirectory()) fail(`${flag} ${dir}: ${p} is not a folder`);
  const created: string[] = [];
  for (const m of missing.reverse()) {
    try {
      mkdirSync(m);
    } catch (e) {
      removeEmpty(created);
      fsError("create the folder", m, e);
    }
    created.push(m);
  }
  return created;
}

/** Removes folders this run created, innermost first, as long as they are still empty. */
function removeEmpty(created: readonly string[]): void {
  for (const d of [...created].reverse()) {
    try {
      rmdirSync(d);
    } catch {
      return;
    }
  }
}

/** A hidden name beside `abs` that says which process made it (so a later run can clear a dead run's). */
function besideName(abs: string, tag: string): string {
  return join(dirname(abs), `.${basename(abs)}${tag}${process.pid}-${randomBytes(4).toString("hex")}`);
}

/** Removes staging folders/files a killed run (its process gone) left beside `abs`. */
function clearDeadStaging(abs: string): void {
  const parent = dirname(abs);
  const prefix = `.${basename(abs)}`;
  let names: string[];
  try {
    names = readdirSync(parent);
  } catch {
    return;
  }
  for (const n of names) {
    if (!n.startsWith(prefix)) continue;
    const m = /^\.badnet-(?:tmp|old)-(\d+)-[0-9a-f]{8}$/.exec(n.slice(prefix.length));
    if (!m) continue;
    const pid = Number(m[1]);
    if (pid === process.pid || alive(pid)) continue;
    rmSync(join(parent, n), { recursive: true, force: true });
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** A staging folder (or file) not yet moved into place. */
interface Staged {
  /** Where it goes, as the user wrote it (for messages) and absolute. */
  target: string;
  abs: string;
  /** The staging path as the command sees it (same style as `target`: relative stays relative) and absolute. */
  staging: string;
  stagingAbs: string;
  /** Folders made for the parents of --out; removed again when the run fails. */
  created: string[];
  /** The target exists (an empty folder, or an old result replaced with --force). */
  replace: "none" | "empty" | "old";
  kind: "dir" | "file";
  /** The file that marks a finished result folder of this kind (result.json, zoo.json). */
  marker: string;
}

const live: Staged[] = [];
let session = false;
let handlersInstalled = false;

/** Interrupts and exits discard what is not in place yet, so nothing half-written is left behind. */
function installHandlers(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  process.on("exit", discardAll);
  for (const [sig, code] of [["SIGINT", 130], ["SIGTERM", 143], ["SIGHUP", 129]] as const) {
    process.once(sig, () => {
      const pending = live.length > 0;
      discardAll();
      process.stderr.write(`\nbadnet: interrupted (${sig})${pending ? "; nothing was written" : ""}\n`);
      process.exit(code);
    });
  }
}

function discard(s: Staged): void {
  rmSync(s.stagingAbs, { recursive: true, force: true });
  removeEmpty(s.created);
  const i = live.indexOf(s);
  if (i >= 0) live.splice(i, 1);
}

function discardAll(): void {
  for (const s of [...live].reverse()) discard(s);
}

/** The path `abs` in the style of `like` (absolute, or relative to the working folder). */
function styled(abs: string, like: string): string {
  if (isAbsolute(like)) return abs;
  const r = relative(process.cwd(), abs);
  return r === "" ? "." : r;
}

/** The active staging folder that holds `abs`, if any (a sub-command writing inside its caller's --out). */
function stagingHolding(abs: string): Staged | undefined {
  return live.find((s) => s.kind === "dir" && within(abs, s.stagingAbs));
}

/** fn(), with a file-system error (permission denied on a parent, say) turned into one line. */
function fsTry<T>(what: string, path: string, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof UserError) throw e;
    return fsError(what, path, e);
  }
}

/**
 * Checks --out DIR and returns the folder the command writes into: a fresh staging folder beside it,
 * moved into place when the command finishes (see withOutputs). Refuses, before any work:
 * a path that is a file; a folder holding files that are not a badnet result (such as the inputs' folder);
 * an earlier result without --force; a folder that holds one of the inputs; a place that cannot be written.
 */
export function prepareOutDir(ctx: Context, dir: string, flag = "--out", marker = "result.json"): string {
  if (dir.trim() === "") fail(`${flag} is empty`);
  const abs = resolve(dir);
  const holder = stagingHolding(abs);
  if (holder) {
    // A sub-command writing into (a sub-folder of) its caller's staging folder: already fresh and checked.
    makeDirs(abs, flag);
    return dir;
  }
  if (dirname(abs) === abs) fail(`${flag} ${dir}: cannot write results over the root folder`);
  const replace = fsTry("read", dir, (): Staged["replace"] => {
    if (!existsSync(abs)) return "none";
    if (!statSync(abs).isDirectory()) fail(`${flag} ${dir} exists and is not a folder`);
    if (readdirSync(abs).length === 0) return "empty";
    if (!existsSync(join(abs, marker))) fail(`${flag} ${dir} is a folder with other files in it (no ${marker}); give a new or empty folder`);
    if (ctx.values.force !== true) fail(`${flag} ${dir} holds an earlier result; add --force to replace it, or choose another folder`);
    return "old";
  });
  checkNotInput(ctx, dir, flag);
  clearDeadStaging(abs);
  // Before the folder exists: an interrupt in between would otherwise kill the process and leave it behind
  // (handlers run between synchronous steps, so the one below sees it in `live`).
  installHandlers();
  const created = makeDirs(dirname(abs), flag);
  const stagingAbs = besideName(abs, STAGING_TAG);
  try {
    mkdirSync(stagingAbs);
  } catch (e) {
    removeEmpty(created);
    fsError("write into", `${dirname(abs)} (for ${flag} ${dir})`, e);
  }
  const s: Staged = { target: dir, abs, staging: styled(stagingAbs, dir), stagingAbs, created, replace, kind: "dir", marker };
  live.push(s);
  if (!session) {
    // Called outside withOutputs (a library caller or a test): nothing would move it into place later, so
    // write straight into --out (after the same checks).
    discard(s);
    if (replace === "old") rmSync(abs, { recursive: true, force: true });
    makeDirs(abs, flag);
    return dir;
  }
  return s.staging;
}

/** Moves a finished staging folder into place. */
function commitDir(s: Staged): void {
  const exists = existsSync(s.abs);
  if (exists && s.replace === "none") fail(`--out ${s.target} appeared while this run was writing (another run?); nothing was written`);
  try {
    if (s.replace === "empty" && exists && readdirSync(s.abs).length === 0) {
      // Keep the user's own (empty) folder: move the contents in.
      for (const n of readdirSync(s.stagingAbs)) renameSync(join(s.stagingAbs, n), join(s.abs, n));
      rmdirSync(s.stagingAbs);
    } else if (exists) {
      if (!existsSync(join(s.abs, s.marker))) fail(`--out ${s.target} changed while this run was writing; nothing was written`);
      const old = besideName(s.abs, OLD_TAG);
      renameSync(s.abs, old);
      renameSync(s.stagingAbs, s.abs);
      rmSync(old, { recursive: true, force: true });
    } else renameSync(s.stagingAbs, s.abs);
  } catch (e) {
    if (e instanceof UserError) throw e;
    fsError("move the results into", s.target, e);
  }
  live.splice(live.indexOf(s), 1);
}

/** Rewrites strings that name a path inside a staging folder to the path it will have once in place. */
export function finalPath(p: string): string {
  for (const s of live) {
    if (s.kind !== "dir") continue;
    if (p === s.staging) return s.target;
    if (p.startsWith(s.staging + sep) || p.startsWith(s.staging + "/")) return s.target + p.slice(s.staging.length);
  }
  return p;
}

/** finalPath over every string inside a JSON-like value, in place (so a printed object equals the saved one). */
export function finalPaths<T>(value: T): T {
  if (live.length === 0) return value;
  const visit = (v: unknown): unknown => {
    if (typeof v === "string") return finalPath(v);
    if (Array.isArray(v)) {
      for (let i = 0; i < v.length; i++) v[i] = visit(v[i]);
      return v;
    }
    if (v && typeof v === "object" && Object.getPrototypeOf(v) === Object.prototype) {
      const o = v as Record<string, unknown>;
      for (const k of Object.keys(o)) o[k] = visit(o[k]);
    }
    return v;
  };
  return visit(value) as T;
}

function finalText(text: string): string {
  let t = text;
  for (const s of live) if (s.kind === "dir") t = t.split(s.staging).join(s.target);
  return t;
}

/**
 * Runs a command so that what it writes through prepareOutDir appears only when it succeeds: the staging
 * folders are moved into place, and the paths in its JSON and text are the final ones. On failure they
 * are removed, with any parent folders made for them.
 */
export async function withOutputs<R extends { json: unknown; text: string }>(run: () => Promise<R>): Promise<R> {
  if (session) return run();
  session = true;
  const mine = live.length;
  try {
    const r = await run();
    const json = finalPaths(r.json);
    const text = finalText(r.text);
    for (const s of live.slice(mine).filter((x) => x.kind === "dir")) commitDir(s);
    return { ...r, json, text };
  } catch (e) {
    for (const s of live.slice(mine).reverse()) discard(s);
    throw e;
  } finally {
    session = false;
  }
}

/** The first `bytes` bytes of a file as UTF-8 text; undefined when it cannot be read. */
function fileHead(path: string, bytes = 1024): string | undefined {
  try {
    const fd = openSync(path, "r");
    try {
      const head = Buffer.alloc(bytes);
      const n = readSync(fd, head, 0, head.length, 0);
      return head.subarray(0, n).toString("utf8");
    } finally {
      closeSync(fd);
    }
  } catch {
    return undefined;
  }
}

/** Whether an existing file is an HTML report this tool wrote (safe to render again in place). */
export function isBadnetReport(path: string): boolean {
  return fileHead(path)?.includes('<meta name="generator" content="badnet-defense">') ?? false;
}

/** Whether a file starts as an HTML document does (<!doctype html> or <html>, after a BOM, blanks or a comment). */
export function looksLikeHtml(path: string): boolean {
  const head = fileHead(path);
  if (head === undefined) return false;
  const text = head.replace(/^\ufeff/, "").replace(/^(\s|<!--[\s\S]*?-->)*/, "");
  return head.length === 0 || /^<(!doctype\s+html|html)[\s>]/i.test(text);
}

export interface OutputFiles {
  /** Writes the files through `write` and moves them into place; returns their final paths. */
  write(write: (stagingDir: string) => Promise<string[]>): Promise<string[]>;
}

export interface OutFileOptions {
  /** An existing file this returns true for may be replaced without --force (a report we rendered before). */
  replaceable?: (path: string) => boolean;
  /** Why an existing file may not be replaced even with --force (report: a model or data file is no report); undefined when it may. */
  keep?: (path: string) => string | undefined;
  /** Files the command reads that are not option values (report reads DIR/result.json). */
  inputs?: readonly string[];
}

/**
 * Checks output files before any work (each a plain file in an existing folder, not an input, not an
 * existing file unless --force or `replaceable` says it may go) and then writes them: `write` gets a
 * hidden staging folder beside them and returns the files it wrote there (named as the outputs are);
 * they are renamed into place together at the end, so no half-written file ever carries an output's name.
 */
export function prepareOutFiles(ctx: Context, outs: readonly string[], flag: string, opts: OutFileOptions = {}): OutputFiles {
  const replaceable = opts.replaceable ?? (() => false);
  const dir = dirname(resolve(outs[0]!));
  for (const out of outs) {
    if (out.trim() === "") fail(`${flag} is empty`);
    fsTry("read", out, () => {
      if (!existsSync(out)) return;
      if (statSync(out).isDirectory()) fail(`${flag} ${out} is a folder; give a file name${flag === "--output" ? ` such as ${join(out, "report.html")}` : ""}`);
      if (!statSync(out).isFile()) fail(`${flag} ${out} exists and is not a plain file`);
    });
    checkNotInput(ctx, out, flag, opts.inputs);
    if (existsSync(out) && ctx.values.force !== true && !replaceable(out)) fail(`${flag} ${out} already exists; add --force to replace it`);
    const kept = existsSync(out) && !replaceable(out) ? opts.keep?.(out) : undefined;
    if (kept !== undefined) fail(`${flag} ${out} ${kept}; --force does not replace it, give another file name`);
  }
  if (!existsSync(dir)) fail(`${flag} ${outs[0]}: folder ${dir} does not exist`);
  if (!statSync(dir).isDirectory()) fail(`${flag} ${outs[0]}: ${dir} is a file, not a folder`);
  const abs = resolve(outs[0]!);
  clearDeadStaging(abs);
  const stagingAbs = besideName(abs, STAGING_TAG);
  installHandlers(); // before the folder exists, as in prepareOutDir
  try {
    mkdirSync(stagingAbs);
  } catch (e) {
    fsError("write into", `${dir} (for ${flag} ${outs[0]})`, e);
  }
  // Checked now, written later: keep the staging folder (it is removed on failure, exit or interrupt).
  const s: Staged = { target: outs[0]!, abs, staging: stagingAbs, stagingAbs, created: [], replace: "none", kind: "file", marker: "" };
  live.push(s);
  const wanted = new Map(outs.map((o) => [basename(o), o]));
  return {
    async write(write) {
      try {
        const written = await write(stagingAbs);
        const finals: string[] = [];
        for (const f of written) {
          const dest = wanted.get(basename(f));
          if (!dest || dirname(resolve(f)) !== stagingAbs) throw new Error(`prepareOutFiles: unexpected output ${f}`);
          finals.push(dest);
        }
        for (let i = 0; i < written.length; i++) {
          try {
            renameSync(written[i]!, finals[i]!);
          } catch (e) {
            fsError("write", finals[i]!, e);
          }
        }
        return finals;
      } finally {
        discard(s);
      }
    },
  };
}
