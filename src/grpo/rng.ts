/**
 * The trainer's seeded random numbers: xoshiro128** (32-bit state words, fast with Math.imul),
 * seeded through splitmix32. The whole state is four uint32s, saved in checkpoints, so a resumed
 * run draws exactly the numbers the uninterrupted one would have.
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
    const hi = this.nextU32() >>> 5, lo = this.nextU32() >>> 6;
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
