// A one-line progress bar on stderr for long loops (Neural Cleanse per label, pruning sweeps, fine-tuning).
// It only ever draws on an interactive terminal, so logs, pipes and CI output stay clean.

export interface ProgressOptions {
  /** Where to draw; defaults to process.stderr. Nothing is drawn unless it is a TTY. */
  stream?: NodeJS.WriteStream;
  /** Suppress all output (the CLI's --quiet). */
  quiet?: boolean;
  /** Name of one unit of work, used in the rate ("3.2 labels/s"); defaults to "it". */
  unit?: string;
  /** Clock in milliseconds; injectable so tests can control throttling and rates. */
  now?: () => number;
}

/** True when progress bars should be drawn: stderr is an interactive terminal and --quiet was not given. */
export function progressEnabled(quiet: boolean): boolean {
  return !quiet && process.stderr.isTTY === true;
}

const MIN_REDRAW_MS = 100; // at most ~10 redraws per second: redrawing is cheap, flicker and log spam are not
const BAR_WIDTH = 24;

export class Progress {
  private readonly stream: NodeJS.WriteStream;
  private readonly enabled: boolean;
  private readonly unit: string;
  private readonly now: () => number;
  private readonly start: number;
  private count = 0;
  private info: string | undefined;
  private lastDraw = -Infinity;
  private finished = false;

  constructor(
    private readonly label: string,
    private readonly total: number,
    opts: ProgressOptions = {},
  ) {
    this.stream = opts.stream ?? process.stderr;
    this.enabled = opts.quiet !== true && this.stream.isTTY === true;
    this.unit = opts.unit ?? "it";
    this.now = opts.now ?? Date.now;
    this.start = this.now();
  }

  /** Record `n` finished units (0 to only update the info text, e.g. "loss 0.31") and redraw if due. */
  tick(n = 1, info?: string): void {
    if (this.finished) return;
    this.count += n;
    if (info !== undefined) this.info = info;
    if (!this.enabled) return;
    const t = this.now();
    // The final state is always drawn so the last line shows the true count.
    if (t - this.lastDraw >= MIN_REDRAW_MS || this.count >= this.total) this.draw(t, false);
  }

  /** Draw the final line (with elapsed time instead of ETA) and move to a new line. Safe to call twice. */
  done(): void {
    if (this.finished) return;
    this.finished = true;
    if (!this.enabled) return;
    this.draw(this.now(), true);
    this.stream.write("\n");
  }

  private draw(t: number, final: boolean): void {
    this.lastDraw = t;
    const elapsed = Math.max(t - this.start, 0) / 1000;
    const frac = this.total > 0 ? Math.min(Math.max(this.count / this.total, 0), 1) : 1;
    const filled = Math.round(frac * BAR_WIDTH);
    const bar = "█".repeat(filled) + "░".repeat(BAR_WIDTH - filled);
    const rate = elapsed > 0 ? this.count / elapsed : 0;
    const parts = [this.label, bar, `${this.count}/${this.total}`, `${formatRate(rate)} ${this.unit}/s`];
    if (final) parts.push(`in ${formatDuration(elapsed)}`);
    else parts.push(`ETA ${rate > 0 ? formatDuration(Math.max(this.total - this.count, 0) / rate) : "?"}`);
    if (this.info) parts.push(this.info);
    let line = parts.join(" ");
    const cols = this.stream.columns;
    // Wrapping would break the \r redraw, so cut the line to the terminal width.
    if (typeof cols === "number" && cols > 1 && line.length > cols - 1) line = line.slice(0, cols - 1);
    this.stream.write(`\r${line}\x1b[K`);
  }
}

function formatRate(rate: number): string {
  if (rate >= 100) return rate.toFixed(0);
  if (rate >= 10) return rate.toFixed(1);
  return rate.toFixed(2);
}

/** Seconds as "42s", "3:07" or "1:02:03". */
export function formatDuration(seconds: number): string {
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = String(s % 60).padStart(2, "0");
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${sec}` : `${m}:${sec}`;
}
