/**
 * @module test/crypto/fuzz — the crypto parsers of peer and user input never throw: mutated
 * key files (user input) always give key material or a reason without the secret in it, and
 * random or mutated records given to RecordOpener (peer input) always give a reason.
 * Seeded PRNG: a failure prints its seed and iteration. FUZZ_ITERATIONS scales the run.
 */
import { describe, expect, test } from "bun:test";
import { RecordOpener, RecordSealer } from "../../src/crypto/record.ts";
import { parseKeyFile } from "../../src/crypto/keys.ts";
import { SUITE_NAMES } from "../../src/crypto/suites.ts";
import { HEADER_SIZE } from "../../src/wire/dst/constants.ts";

const ITERATIONS = Number(process.env.FUZZ_ITERATIONS ?? "20000");
const SEED = Number(process.env.FUZZ_SEED ?? "20240604");
/** Long runs (FUZZ_ITERATIONS=1000000) need more than bun's default 5 s per test. */
const TIMEOUT_MS = Math.max(10_000, ITERATIONS / 10);

/** xorshift32: small, fast, reproducible. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
}

const SECRET = Buffer.from(Array.from({ length: 32 }, (_, i) => (i * 37 + 11) & 0xff)).toString(
  "base64",
);
const VALID = `# dstd key\nidentity = "alice"\nsecret = "${SECRET}"\n`;
const ALPHABET = ` \t\n\r"'#=\\abcdefghijklmnopqrstuvwxyz0123456789+/=._-é\u0000\uFEFF`;

function mutate(next: () => number, text: string): string {
  let out = text;
  const edits = 1 + (next() % 6);
  for (let e = 0; e < edits; e++) {
    const at = next() % (out.length + 1);
    const ch = ALPHABET[next() % ALPHABET.length] ?? "x";
    switch (next() % 4) {
      case 0:
        out = out.slice(0, at) + ch + out.slice(at);
        break;
      case 1:
        out = out.slice(0, at) + out.slice(at + 1 + (next() % 8));
        break;
      case 2:
        out = out.slice(0, at) + ch + out.slice(at + 1);
        break;
      default:
        out = out.slice(0, at) + out.slice(next() % (out.length + 1)); // splice a region
    }
  }
  return out;
}

test(
  `parseKeyFile: ${ITERATIONS} mutated key files never throw and never echo the secret`,
  () => {
    const next = rng(SEED);
    let accepted = 0;
    for (let i = 0; i < ITERATIONS; i++) {
      const text = mutate(next, VALID);
      let result: ReturnType<typeof parseKeyFile>;
      try {
        result = parseKeyFile(text, "f");
      } catch (error) {
        throw new Error(`seed ${SEED} iteration ${i}: threw ${error} on ${JSON.stringify(text)}`);
      }
      if (typeof result === "string") {
        if (result.includes(SECRET.slice(0, 16)))
          throw new Error(`seed ${SEED} iteration ${i}: secret in ${result}`);
      } else {
        expect(result.secret.length).toBe(32);
        accepted++;
      }
    }
    // The mutator also produces harmless edits (comments, spaces).
    expect(accepted).toBeGreaterThan(0);
    expect(accepted).toBeLessThan(ITERATIONS);
  },
  TIMEOUT_MS,
);

const PROTECTED = SUITE_NAMES.filter((s) => s !== "none") as Exclude<(typeof SUITE_NAMES)[number], "none">[];
describe.each(PROTECTED.map((s) => [s]))("RecordOpener %s", (suite) => {
  const key = new Uint8Array(32).fill(7);
  // ITERATIONS frames over all suites.
  const iterations = Math.max(100, Math.floor(ITERATIONS / PROTECTED.length));

  test(
    `${iterations} random and mutated records: plaintexts or a reason string, never a throw`,
    () => {
      const next = rng(SEED ^ suite.length);
      const genuine = new RecordSealer(suite, key, 0).seal([new Uint8Array(HEADER_SIZE + 300)], HEADER_SIZE + 300);
      let opened = 0;
      for (let i = 0; i < iterations; i++) {
        let frame: Uint8Array;
        if (next() % 2 === 0) {
          frame = new Uint8Array(next() % 700);
          for (let j = 0; j < frame.length; j++) frame[j] = next() & 0xff;
          if (frame.length >= 4 && next() % 2 === 0) {
            new DataView(frame.buffer).setUint32(0, Math.max(0, frame.length - 20)); // a plausible length
          }
        } else {
          frame = genuine.slice();
          const flips = next() % 4; // 0 flips: the genuine frame, which must open
          for (let f = 0; f < flips; f++) {
            const at = next() % frame.length;
            frame[at] = (frame[at] ?? 0) ^ (1 + (next() % 255));
          }
        }
        const intact = frame.length === genuine.length && frame.every((b, j) => b === genuine[j]);
        let result: Uint8Array[] | string;
        try {
          result = new RecordOpener(suite, key, 0).push(frame);
        } catch (error) {
          throw new Error(`${suite} seed ${SEED} iteration ${i}: threw ${error}`);
        }
        const complete = typeof result !== "string" && result.length > 0;
        if (complete) opened++;
        // Only the genuine record opens; anything else is refused or still incomplete.
        expect(complete).toBe(intact);
      }
      expect(opened).toBeGreaterThan(0);
    },
    TIMEOUT_MS,
  );
});
