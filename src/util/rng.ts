/**
 * Seeded pseudo-random numbers for everything that must be reproducible. The same seed gives the
 * same sequence on every machine and Node version.
 *
 * {@link Rng} is the generator: xoshiro128** (32-bit state words, fast with Math.imul), seeded
 * through splitmix32. Its whole state is four uint32s, saved in trainer checkpoints, so a resumed
 * run draws exactly the numbers the uninterrupted one would have; weight initialisation draws from
 * it too.
 *
 * {@link mulberry32} is a stateless one-word stream kept for what was generated with it before
 * {@link Rng} existed and must not change: the synthetic data set, dataset splits
 * ({@link permutation}) and test fixtures. New code takes an {@link Rng}.
 */

export type RngState = [number, number, number, number];

function splitmix32(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  };
}

export class Rng {
  private s: Uint32Array;

  constructor(seed: number | RngState) {
    this.s = new Uint32Array(4);
    if (typeof seed === 'number') {
      if (!Number.isInteger(seed)) throw new TypeError(`Expected integer for seed but received ${seed} of type number`);
      const next = splitmix32(seed);
      for (let i = 0; i < 4; i++) this.s[i] = next();
      if (this.s.every((v) => v === 0)) this.s[0] = 1;
    } else {
      if (!Array.isArray(seed) || seed.length !== 4 || seed.some((v) => !Number.isInteger(v))) {
        throw new TypeError(`Expected 4 uint32 words for an RNG state but received ${JSON.stringify(seed)}`);
      }
      this.s.set(seed);
    }
  }

  /** A copy of the state, for checkpoints. */
  state(): RngState {
    return [this.s[0]!, this.s[1]!, this.s[2]!, this.s[3]!];
  }

  /** Go back to a saved state. */
  restore(state: RngState): void {
    this.s.set(state);
  }

  /** Next uniform uint32. */
  nextU32(): number {
    const s = this.s;
    const result = Math.imul(rotl(Math.imul(s[1]!, 5), 7), 9) >>> 0;
    const t = (s[1]! << 9) >>> 0;
    s[2]! ^= s[0]!;
    s[3]! ^= s[1]!;
    s[1]! ^= s[2]!;
    s[0]! ^= s[3]!;
    s[2]! ^= t;
    s[3] = rotl(s[3]!, 11);
    return result;
  }

  /** Uniform in [0, 1) with 53 random bits. */
  uniform(): number {
    const hi = this.nextU32() >>> 5,
      lo = this.nextU32() >>> 6;
    return (hi * 67108864 + lo) / 9007199254740992;
  }

  /** Uniform integer in [0, n). */
  int(n: number): number {
    if (!Number.isInteger(n) || n <= 0) throw new TypeError(`Expected positive integer for n but received ${n}`);
    return Math.floor(this.uniform() * n);
  }

  /** Standard normal (Box–Muller; two uniforms per value, no cached spare, so the state stays four words). */
  normal(): number {
    let u = this.uniform();
    while (u <= 0) u = this.uniform();
    const v = this.uniform();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }

  /** Fisher–Yates shuffle in place. */
  shuffle<T>(items: T[]): T[] {
    for (let i = items.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      const tmp = items[i]!;
      items[i] = items[j]!;
      items[j] = tmp;
    }
    return items;
  }

  /** A fresh 31-bit seed for a sub-process (engine sampling, data shuffles). */
  seed(): number {
    return this.nextU32() >>> 1;
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

/** mulberry32: a small, fast 32-bit generator; returns floats in [0, 1). */
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

/** A permutation of 0..n-1, Fisher–Yates over {@link mulberry32} with the given seed. */
export function permutation(n: number, seed: number): Uint32Array {
  const p = new Uint32Array(n);
  for (let i = 0; i < n; i++) p[i] = i;
  const rand = mulberry32(seed);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    const t = p[i]!;
    p[i] = p[j]!;
    p[j] = t;
  }
  return p;
}
