/**
 * @module lib/prng — a small, seeded, deterministic pseudo-random number generator for
 * backoff jitter, the simulator, buggify decisions and fuzzers. It must never read the clock
 * or Math.random: the same seed has to give the same sequence on every machine and every Bun
 * version, forever, because a failing simulation seed is replayed from that number alone.
 *
 * Algorithm: sfc32 (Chris Doty-Humphrey's "Small Fast Counting" generator, from PractRand;
 * 128 bits of state, passes PractRand and BigCrush, period at least 2^32 thanks to the
 * counter word). Its state is filled from the seed with splitmix32, so nearby seeds (1, 2,
 * 3...) give unrelated streams, and the first 12 outputs are discarded to finish mixing.
 * Only 32-bit integer arithmetic (Math.imul, |0, >>>0) is used, so the output is exact.
 *
 * Not cryptographic: never use it for keys, nonces or session ids (crypto/ owns those).
 */
import { assert } from "./assert.ts";

const TWO_32 = 4294967296;
const TWO_53 = 9007199254740992;

/** One splitmix32 step: returns [next state, output]. */
function splitmix32(state: number): [number, number] {
  const next = (state + 0x9e3779b9) | 0;
  let z = next;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return [next, (z ^ (z >>> 16)) >>> 0];
}

export class Prng {
  /** The seed this generator was created with (print it when a seeded run fails). */
  readonly seed: number;
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  /**
   * @param seed any safe integer (negative and > 2^32 values are fine: both 32-bit halves
   *   feed the state, so Date-like 41-bit seeds do not collide modulo 2^32).
   */
  constructor(seed: number) {
    assert(Number.isSafeInteger(seed), `Prng seed must be a safe integer, got ${seed}`);
    this.seed = seed;
    const lo = seed >>> 0;
    const hi = Math.floor(seed / TWO_32) >>> 0;
    let s = lo ^ Math.imul(hi, 0x27d4eb2d);
    let out: number;
    [s, out] = splitmix32(s);
    this.a = out | 0;
    [s, out] = splitmix32(s);
    this.b = out | 0;
    [s, out] = splitmix32(s ^ hi);
    this.c = out | 0;
    this.d = 1;
    for (let i = 0; i < 12; i++) this.next();
  }

  /** Next uniformly distributed unsigned 32-bit integer (sfc32 step). */
  next(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return t >>> 0;
  }

  /** Uniform float in [0, 1) with 53 bits of precision (two outputs). */
  float(): number {
    const high = this.next() >>> 5; // 27 bits
    const low = this.next() >>> 6; // 26 bits
    return (high * 67108864 + low) / TWO_53;
  }

  /**
   * Uniform integer in [0, maxExclusive). Unbiased: rejection sampling for ranges up to
   * 2^32; above that (up to 2^53) a 53-bit float scaled down, whose bias is below 2^-21.
   */
  int(maxExclusive: number): number {
    assert(
      Number.isInteger(maxExclusive) && maxExclusive >= 1 && maxExclusive <= TWO_53,
      `Prng.int needs an integer bound >= 1, got ${maxExclusive}`,
    );
    if (maxExclusive > TWO_32) return Math.floor(this.float() * maxExclusive);
    // Largest multiple of the bound that fits in 2^32: values at or above it would bias.
    const limit = TWO_32 - (TWO_32 % maxExclusive);
    let r = this.next();
    while (r >= limit) r = this.next();
    return r % maxExclusive;
  }

  /** True with probability p (p <= 0 never, p >= 1 always). */
  chance(p: number): boolean {
    return this.float() < p;
  }

  /** n pseudo-random bytes (4 per step, little-endian order of each 32-bit output). */
  bytes(n: number): Uint8Array {
    assert(Number.isSafeInteger(n) && n >= 0, `Prng.bytes needs a length >= 0, got ${n}`);
    const out = new Uint8Array(n);
    let i = 0;
    for (; i + 4 <= n; i += 4) {
      const v = this.next();
      out[i] = v;
      out[i + 1] = v >>> 8;
      out[i + 2] = v >>> 16;
      out[i + 3] = v >>> 24;
    }
    if (i < n) {
      let v = this.next();
      for (; i < n; i++, v >>>= 8) out[i] = v;
    }
    return out;
  }

  /** A uniformly chosen element of a non-empty array. */
  pick<T>(a: readonly T[]): T {
    assert(a.length > 0, "Prng.pick from an empty array");
    return a[this.int(a.length)] as T;
  }
}
