import { test } from "node:test";
import assert from "node:assert/strict";
import { Progress, progressEnabled, formatDuration } from "./progress.js";

interface FakeStream {
  isTTY: boolean;
  columns?: number;
  chunks: string[];
  write(s: string): boolean;
}

function fakeStream(isTTY: boolean, columns?: number): FakeStream {
  const s: FakeStream = {
    isTTY,
    columns,
    chunks: [],
    write(chunk: string) {
      s.chunks.push(chunk);
      return true;
    },
  };
  return s;
}

const asStream = (s: FakeStream) => s as unknown as NodeJS.WriteStream;

function clock(start = 1000) {
  const c = { t: start, now: () => c.t };
  return c;
}

test("nothing is written when quiet or when the stream is not a TTY", () => {
  for (const [isTTY, quiet] of [
    [true, true],
    [false, false],
    [false, true],
  ] as const) {
    const s = fakeStream(isTTY);
    const p = new Progress("labels", 3, { stream: asStream(s), quiet });
    p.tick();
    p.tick(2, "loss 0.5");
    p.done();
    assert.deepEqual(s.chunks, [], `isTTY=${isTTY} quiet=${quiet}`);
  }
});

test("progressEnabled is false when quiet and follows stderr's TTY state otherwise", () => {
  assert.equal(progressEnabled(true), false);
  assert.equal(progressEnabled(false), process.stderr.isTTY === true);
});

test("draws label, bar, count, rate, ETA and info on one \\r-redrawn line", () => {
  const s = fakeStream(true, 200);
  const c = clock();
  const p = new Progress("Neural Cleanse", 10, { stream: asStream(s), unit: "labels", now: c.now });
  c.t += 2000; // 4 labels in 2 s → 2 labels/s, 6 left → ETA 3 s
  p.tick(4, "loss 0.31");
  assert.equal(s.chunks.length, 1);
  const line = s.chunks[0]!;
  assert.ok(line.startsWith("\r"), "redraws from column 0");
  assert.ok(!line.includes("\n"), "stays on one line");
  assert.match(line, /^\rNeural Cleanse /);
  assert.match(line, / 4\/10 /);
  assert.match(line, / 2\.00 labels\/s /);
  assert.match(line, / ETA 3s /);
  assert.match(line, / loss 0\.31/);
  // 4/10 of a 24-wide bar, rounded: 10 filled cells.
  assert.match(line, /█{10}░{14}/);
});

test("redraws at most ~10 times per second but always draws the final count", () => {
  const s = fakeStream(true, 200);
  const c = clock();
  const p = new Progress("prune", 1000, { stream: asStream(s), now: c.now });
  for (let i = 0; i < 999; i++) {
    c.t += 1; // 999 ticks within ~1 s
    p.tick();
  }
  // First tick draws, then one redraw per 100 ms: about 10 draws, certainly not 999.
  assert.ok(s.chunks.length >= 9 && s.chunks.length <= 11, `drew ${s.chunks.length} times`);
  c.t += 1;
  p.tick(); // reaches the total: drawn even though < 100 ms since the last draw
  assert.match(s.chunks.at(-1)!, / 1000\/1000 /);
});

test("info-only ticks (n = 0) update the text without counting", () => {
  const s = fakeStream(true, 200);
  const c = clock();
  const p = new Progress("fine-tune", 5, { stream: asStream(s), now: c.now });
  c.t += 500;
  p.tick(0, "loss 1.20");
  c.t += 500;
  p.tick(1);
  const last = s.chunks.at(-1)!;
  assert.match(last, / 1\/5 /);
  assert.match(last, /loss 1\.20/, "info persists until replaced");
});

test("done() draws the final line with elapsed time, ends it with a newline, and is idempotent", () => {
  const s = fakeStream(true, 200);
  const c = clock();
  const p = new Progress("strip", 3, { stream: asStream(s), now: c.now });
  p.tick();
  c.t += 65_000;
  p.done();
  p.done();
  p.tick(); // ignored after done
  assert.equal(s.chunks.at(-1), "\n");
  assert.equal(s.chunks.filter((x) => x === "\n").length, 1);
  assert.match(s.chunks.at(-2)!, / 1\/3 .* in 1:05/);
});

test("lines are cut to the terminal width so \\r redraws never wrap", () => {
  const s = fakeStream(true, 40);
  const c = clock();
  const p = new Progress("a very long label for a narrow terminal", 10, { stream: asStream(s), now: c.now });
  p.tick(1, "some info text that would overflow");
  const visible = s.chunks[0]!.replace("\r", "").replace("\x1b[K", "");
  assert.ok(visible.length <= 39, `visible length ${visible.length}`);
});

test("formatDuration", () => {
  assert.equal(formatDuration(0.4), "0s");
  assert.equal(formatDuration(59), "59s");
  assert.equal(formatDuration(187), "3:07");
  assert.equal(formatDuration(3723), "1:02:03");
});
