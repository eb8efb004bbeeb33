/**
 * @module bench/crypto — single-thread throughput of every channel suite (seal + open of one
 * frame, in place) at 4 KiB and 1 MiB payloads, of every end-to-end checksum, and of the
 * HMAC-SHA256 alternative the integrity suite was measured against. Prints a Markdown table.
 *
 *   bun bench/crypto.ts            # ~0.6 s per cell, ~15 s in all
 *   BENCH_SECONDS=2 bun bench/crypto.ts
 */
import { createHmac, randomBytes } from "node:crypto";
import { RecordOpener, RecordSealer } from "../src/crypto/record.ts";
import { CHECKSUM_NAMES, computeDigest, digestSize } from "../src/crypto/checksum.ts";
import { SUITE_NAMES } from "../src/crypto/suites.ts";
import { HEADER, HEADER_SIZE } from "../src/wire/dst/constants.ts";

const SECONDS = Number(process.env.BENCH_SECONDS ?? "0.6");
const SIZES = [4096, 1024 * 1024];

interface Result {
  nsPerOp: number;
}

/**
 * Runs `op` for ~SECONDS after a warm-up (JIT tiers matter a lot for the pure-JS suites) and
 * returns the median time per call of three rounds, to ride out other load on the machine.
 */
function measure(op: () => void): Result {
  const warmUntil = Bun.nanoseconds() + SECONDS * 0.5e9;
  for (let n = 0; n < 30 || Bun.nanoseconds() < warmUntil; n++) op();
  const rounds: number[] = [];
  for (let round = 0; round < 3; round++) {
    let ops = 0;
    const start = Bun.nanoseconds();
    const end = start + (SECONDS / 3) * 1e9;
    let now = start;
    while (now < end || ops < 3) {
      op();
      ops++;
      now = Bun.nanoseconds();
    }
    rounds.push((now - start) / ops);
  }
  rounds.sort((a, b) => a - b);
  return { nsPerOp: rounds[1] ?? 0 };
}

function frameOf(size: number): Uint8Array {
  const frame = new Uint8Array(HEADER_SIZE + size);
  new DataView(frame.buffer).setUint32(HEADER.payloadLength, size);
  frame.set(randomBytes(Math.min(size, 65536)), HEADER_SIZE);
  return frame;
}

/** bytes per ns × 1000 = MB/s */
const mbps = (size: number, ns: number): string => ((size / ns) * 1e3).toFixed(0);
const micros = (ns: number): string => (ns / 1e3).toFixed(2);

const rows: string[] = [];
for (const suite of SUITE_NAMES.filter((s) => s !== "none")) {
  const cells: string[] = [];
  for (const size of SIZES) {
    const key = new Uint8Array(randomBytes(32));
    const sealer = new RecordSealer(suite, key, 0);
    const opener = new RecordOpener(suite, key, 0);
    const frame = frameOf(size);
    const r = measure(() => {
      // One record holding one frame: what a lone request or a large reply costs.
      if (typeof opener.push(sealer.seal([frame], frame.length)) === "string") throw new Error(`${suite}: open failed`);
    });
    cells.push(`${mbps(size, r.nsPerOp)} MB/s (${micros(r.nsPerOp)} µs)`);
  }
  rows.push(`| ${suite} | ${cells.join(" | ")} |`);
}

const sumRows: string[] = [];
for (const alg of CHECKSUM_NAMES.filter((a) => a !== "none")) {
  const cells: string[] = [];
  const out = new Uint8Array(digestSize(alg));
  for (const size of SIZES) {
    const data = frameOf(size).subarray(HEADER_SIZE);
    const r = measure(() => computeDigest(alg, data, out, 0));
    cells.push(`${mbps(size, r.nsPerOp)} MB/s (${micros(r.nsPerOp)} µs)`);
  }
  sumRows.push(`| ${alg} | ${cells.join(" | ")} |`);
}
{
  const key = randomBytes(32);
  const cells: string[] = [];
  for (const size of SIZES) {
    const frame = frameOf(size);
    const r = measure(() => {
      createHmac("sha256", key).update(frame).digest(); // seal side
      createHmac("sha256", key).update(frame).digest(); // open side
    });
    cells.push(`${mbps(size, r.nsPerOp)} MB/s (${micros(r.nsPerOp)} µs)`);
  }
  rows.push(`| (hmac-sha256 over the frame, not used) | ${cells.join(" | ")} |`);
}

console.log(
  `Bun ${Bun.version}, ${navigator.hardwareConcurrency} CPUs, ` +
    `${SECONDS} s per cell (median of 3), one thread.\n`,
);
console.log(
  "Channel suites: seal + open of one record holding one frame (MB/s of payload, time per record)\n",
);
console.log("| suite | 4 KiB | 1 MiB |\n|---|---|---|");
for (const row of rows) console.log(row);
console.log("\nEnd-to-end checksums: one digest (MB/s, time per digest)\n");
console.log("| checksum | 4 KiB | 1 MiB |\n|---|---|---|");
for (const row of sumRows) console.log(row);
