// Seeded pseudo-random numbers, so initial weights, shuffles and sampled triggers are reproducible runs.

/** The largest seed: mulberry32 keeps 32 bits, so 2^32 would run as seed 0 (a seed option stops here). */
export const MAX_SEED = 2 ** 32 - 1;

/** mulberry32: a small 32-bit PRNG; returns a function yielding floats uniform in [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Fills `out` with floats uniform in [lo, hi). */
export function fillUniform(out: Float32Array, lo: number, hi: number, rand: () => number): Float32Array {
  for (let i = 0; i < out.length; i++) out[i] = lo + (hi - lo) * rand();
  return out;
}

/** 0..n−1 in a random order (Fisher–Yates, driven by `rand`). */
export function shuffled(n: number, rand: () => number): Int32Array {
  const idx = Int32Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    const t = idx[i];
    idx[i] = idx[j];
    idx[j] = t;
  }
  return idx;
}
