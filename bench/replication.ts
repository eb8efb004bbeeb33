/**
 * @module bench/replication — what the replication log costs the primary (issue 11 targets),
 * as ratios measured in one run (docs/replication.md §9):
 *   seq-1MiB    sequential 1 MiB writes at QD32 then one FLUSH: log on vs off   (target ≥ 0.8×)
 *   rand-4KiB   random 4 KiB writes at QD32 then one FLUSH: log on vs off       (target ≥ 0.8×)
 *   fua-4KiB    4 KiB FUA writes at QD32: group commit (log on) vs one fdatasync per write
 *               (the local port with FUA, log off)                               (target ≥ 5×)
 * "Off" is the export's own port over a sparse file (storage/local, synchronous); "on" is
 * ReplicationPrimary over the same kind of port with its log directory on the same file
 * system, log limit large enough never to overflow. Each cell is the median of ROUNDS runs,
 * interleaved (off, on, on, off, ...) so load drift hits both alike; every run starts from
 * fresh files. Throughput counts the time until the FLUSH (or the last FUA write) completed.
 * Each write's data is one of RING distinct buffers (64 MiB of 1 MiB writes), as a front
 * hands over data it just received, not one cache-hot buffer written again and again; like
 * the DST export, each write is hashed (its exactly-once signature, XXH3-64) and handed over
 * under a hold to a port that takes buffers (storage/port.ts writeWithHold): a buffer is
 * used again only once every hold on it is dropped (more buffers are made when none is free).
 *
 * BASELINE=<commit> adds a column "on (BASELINE)": that commit's replication layer (its
 * src/ extracted with git archive), measured in the same rounds — before/after in one run.
 *
 *   bun bench/replication.ts
 *   BASELINE=c8a8c6a bun bench/replication.ts
 *   ROUNDS=5 SEQ_SIZE=1024 RAND_COUNT=32768 FUA_COUNT=4096 bun bench/replication.ts
 *   BENCH_DIR=/mnt/disk bun bench/replication.ts        # put files on another file system
 *   ONLY=seq-1MiB ACK_WINDOW_MIB=32 bun bench/replication.ts   # one workload, another ack window
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Prng } from "../src/lib/prng.ts";
import { openLogDirectory } from "../src/replication/files.ts";
import { ReplicationPrimary } from "../src/replication/primary.ts";
import { openFileBackend } from "../src/storage/local/file.ts";
import { createLocalPort } from "../src/storage/local/port.ts";
import { call, writeWithHold, type BufferHold, type StoragePort } from "../src/storage/port.ts";

const MiB = 1 << 20;
const ROUNDS = Number(process.env.ROUNDS ?? 3);
const SEQ_SIZE = Number(process.env.SEQ_SIZE ?? 256) * MiB;
const RAND_COUNT = Number(process.env.RAND_COUNT ?? 16384);
// 8,192: with 2,048 the group-commit run lasted ~65 ms, short enough for warm-up and one
// scheduling hiccup to move the ratio by a fifth.
const FUA_COUNT = Number(process.env.FUA_COUNT ?? 8192);
const QD = 32;
const DISK_SIZE = Math.max(SEQ_SIZE, 1024 * MiB);
const BASE = process.env.BENCH_DIR ?? os.tmpdir();
/** Comma-separated workload names to run (default: all); checked against the workloads below. */
const ONLY = (process.env.ONLY ?? "").split(",").filter((name) => name !== "");
/** The primary's ack window in MiB (default: the layer's own, DEFAULT_ACK_WINDOW_BYTES). */
const ACK_WINDOW = process.env.ACK_WINDOW_MIB === undefined ? undefined : Number(process.env.ACK_WINDOW_MIB) * MiB;
if (ACK_WINDOW !== undefined && !(Number.isSafeInteger(ACK_WINDOW) && ACK_WINDOW > 0)) {
  // NaN would make the window's bound check always pass: an unbounded window, not the one asked for.
  throw new Error(`ACK_WINDOW_MIB=${process.env.ACK_WINDOW_MIB} is not a positive whole number of MiB`);
}

interface Setup {
  port: StoragePort;
  cleanup: () => Promise<void>;
}

type Variant = "off" | "on" | "base";
type PrimaryModule = { ReplicationPrimary: typeof ReplicationPrimary; openLogDirectory: typeof openLogDirectory };
const BASELINE = process.env.BASELINE ?? "";
const baseline: PrimaryModule | null = BASELINE === "" ? null : await loadBaseline(BASELINE);

/** That commit's src/ in a temporary directory; its replication layer and log directory. */
async function loadBaseline(commit: string): Promise<PrimaryModule> {
  const root = path.resolve(import.meta.dir, "..");
  const tree = fs.mkdtempSync(path.join(os.tmpdir(), "dstd-bench-repl-base-"));
  const archive = Bun.spawnSync(["sh", "-c", `git -C "${root}" archive "${commit}" src | tar -x -C "${tree}"`]);
  if (archive.exitCode !== 0) throw new Error(`BASELINE=${commit}: git archive failed: ${archive.stderr.toString()}`);
  process.on("exit", () => fs.rmSync(tree, { recursive: true, force: true }));
  const primary = await import(path.join(tree, "src/replication/primary.ts"));
  const files = await import(path.join(tree, "src/replication/files.ts"));
  return { ReplicationPrimary: primary.ReplicationPrimary, openLogDirectory: files.openLogDirectory };
}

async function setup(variant: Variant): Promise<Setup> {
  const dir = fs.mkdtempSync(path.join(BASE, "dstd-bench-repl-"));
  const backend = openFileBackend(path.join(dir, "disk.img"), { size: DISK_SIZE });
  const local = createLocalPort(backend);
  const layer: PrimaryModule | null = variant === "on" ? { ReplicationPrimary, openLogDirectory } : variant === "base" ? baseline : null;
  const port = layer !== null
    ? await layer.ReplicationPrimary.open(local, layer.openLogDirectory(path.join(dir, "log")), { logLimit: 4 * DISK_SIZE, segmentSize: 64 * MiB, ackWindowBytes: ACK_WINDOW })
    : local;
  return {
    port,
    cleanup: async () => {
      await port.close();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A receive buffer of the bench's front: free again once the write completed and every hold is dropped. */
class RingBuffer implements BufferHold {
  holds = 0;
  constructor(readonly bytes: Uint8Array) {}
  hold(): void {
    this.holds++;
  }
  drop(): void {
    this.holds--;
  }
}

/** Runs `count` writes with QD requests in flight; returns seconds until all (and the flush) completed. */
const RING = 64;
async function run(port: StoragePort, count: number, size: number, offsetOf: (i: number) => number, fua: boolean, flush: boolean): Promise<number> {
  const prng = new Prng(7);
  const ring = Array.from({ length: RING }, () => new RingBuffer(prng.bytes(size)));
  let cursor = 0;
  /** The next buffer no one holds (a new one when the port holds them all). */
  const take = (): RingBuffer => {
    for (let tries = 0; tries < ring.length; tries++) {
      const b = ring[cursor++ % ring.length]!;
      if (b.holds === 0) return b;
    }
    const made = new RingBuffer(prng.bytes(size));
    ring.push(made);
    return made;
  };
  const start = performance.now();
  await new Promise<void>((resolve, reject) => {
    let issued = 0;
    let completed = 0;
    let looping = false;
    const next = (): void => {
      if (looping) return; // a synchronous port completes inside write(): the loop goes on
      looping = true;
      while (issued < count && issued - completed < QD) {
        const i = issued++;
        const buffer = take();
        buffer.hold(); // the front's own hold, until the completion
        const hash = Bun.hash.xxHash3(buffer.bytes); // the export's exactly-once signature of the payload
        writeWithHold(port, offsetOf(i), buffer.bytes, fua, buffer, (errno) => {
          buffer.drop();
          if (errno !== 0) return reject(new Error(`write ${i} failed: errno ${errno}`));
          completed++;
          if (completed === count) resolve();
          else next();
        }, hash);
      }
      looping = false;
    };
    next();
  });
  if (flush) await call.flush(port);
  return (performance.now() - start) / 1000;
}

type Workload = { name: string; bytes: number; ops: number; go: (port: StoragePort) => Promise<number>; offTarget: string };

const prng = new Prng(42);
const randomOffsets = Array.from({ length: RAND_COUNT }, () => prng.int(DISK_SIZE / 4096) * 4096);
const workloads: Workload[] = [
  {
    name: "seq-1MiB",
    bytes: SEQ_SIZE,
    ops: SEQ_SIZE / MiB,
    go: (port) => run(port, SEQ_SIZE / MiB, MiB, (i) => i * MiB, false, true),
    offTarget: "log off",
  },
  {
    name: "rand-4KiB",
    bytes: RAND_COUNT * 4096,
    ops: RAND_COUNT,
    go: (port) => run(port, RAND_COUNT, 4096, (i) => randomOffsets[i]!, false, true),
    offTarget: "log off",
  },
  {
    name: "fua-4KiB",
    bytes: FUA_COUNT * 4096,
    ops: FUA_COUNT,
    go: (port) => run(port, FUA_COUNT, 4096, (i) => i * 4096, true, false),
    offTarget: "fdatasync per write",
  },
];

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

const unknown = ONLY.filter((name) => !workloads.some((w) => w.name === name));
if (unknown.length > 0) throw new Error(`ONLY=${process.env.ONLY}: no workload ${unknown.join(", ")} (there are ${workloads.map((w) => w.name).join(", ")})`);

console.log(`replication bench: ${ROUNDS} rounds, QD${QD}, files in ${BASE}`);
const rows: string[][] = [
  ["workload", "off", ...(baseline !== null ? [`on (${BASELINE})`, "ratio"] : []), "on (log)", "ratio on/off", "target"],
];
for (const w of workloads) {
  if (ONLY.length > 0 && !ONLY.includes(w.name)) continue;
  const times: Record<Variant, number[]> = { off: [], on: [], base: [] };
  const variants: Variant[] = baseline !== null ? ["off", "base", "on"] : ["off", "on"];
  for (let round = 0; round < ROUNDS; round++) {
    const order = round % 2 === 0 ? variants : [...variants].reverse();
    for (const which of order) {
      const s = await setup(which);
      try {
        times[which].push(await w.go(s.port));
      } finally {
        await s.cleanup();
      }
    }
  }
  const off = median(times.off);
  const on = median(times.on);
  const rate = (seconds: number) =>
    w.name === "fua-4KiB" ? `${Math.round(w.ops / seconds)} writes/s` : `${(w.bytes / MiB / seconds).toFixed(0)} MiB/s`;
  const target = w.name === "fua-4KiB" ? "≥ 5×" : "≥ 0.8×";
  const base = baseline !== null ? median(times.base) : 0;
  const before = baseline !== null ? [rate(base), `${(off / base).toFixed(2)}×`] : [];
  rows.push([w.name, `${rate(off)} (${w.offTarget})`, ...before, rate(on), `${(off / on).toFixed(2)}×`, target]);
  const list = (ts: number[]) => ts.map((t) => t.toFixed(2)).join(" ");
  console.log(`  ${w.name}: off ${list(times.off)} s,${baseline !== null ? ` ${BASELINE} ${list(times.base)} s,` : ""} on ${list(times.on)} s`);
}
const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
for (const r of rows) console.log(r.map((cell, c) => cell.padEnd(widths[c]!)).join("  "));
