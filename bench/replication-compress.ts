/**
 * @module bench/replication-compress — what compression on the wire (docs/protocol.md §11.1,
 * `compress = true`) does to a secondary's catch-up through a slow link, between real
 * processes (dist/dstd, two `dstd up` nodes, the fault proxy pacing the link with a delay each
 * way). Four rows in one run: text-like and random data, each with and without compression.
 *
 * Per row: the secondary's fetching and replay are paused, SIZE MiB are written into the
 * primary; fetching resumes (replay still paused) and the time until the copy holds the
 * primary's whole log is measured. Printed: log bytes fetched per second against the link's
 * pacing rate (above 1× means compression carried more log than the link carries bytes), the
 * bytes the proxy delivered, and the ratio of log bytes to wire bytes.
 *
 *   bun bench/replication-compress.ts
 *   SIZE=64 LINK_MIB=8 DELAY_MS=25 bun bench/replication-compress.ts
 */
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { MiB, ReplicaPair } from "../test/replication/pair.ts";
import { writeRandomFile } from "../test/helpers/files.ts";

const SIZE = Number(process.env.SIZE ?? 32) * MiB;
const LINK = Number(process.env.LINK_MIB ?? 8) * MiB;
const DELAY_MS = Number(process.env.DELAY_MS ?? 25);

/** Text-like data: numbered lines, compressible about 5–100× depending on the level. */
function writeTextFile(file: string, size: number): void {
  const lines: string[] = [];
  for (let i = 0; lines.length * 64 < size; i++) lines.push(`${i.toString().padStart(10, "0")} GET /api/v1/volumes/${i % 977} 200 ${(i * 7919) % 100000}us\n`.padEnd(64, " "));
  writeFileSync(file, lines.join("").slice(0, size));
}

const base = path.join(process.env.BENCH_DIR ?? os.tmpdir(), `dstd-bench-compress-${process.pid}`);
mkdirSync(base, { recursive: true });
const rows: string[] = [];
try {
  for (const data of ["text", "random"] as const) {
    for (const compress of [false, true]) {
      const dir = path.join(base, `${data}-${compress}`);
      mkdirSync(dir);
      const pair = await ReplicaPair.create(dir, { size: SIZE, logSize: `${Math.max(256, (2 * SIZE) / MiB)}MiB`, secondaryExtra: compress ? "compress = true" : "" });
      try {
        const source = path.join(dir, "source.bin");
        if (data === "text") writeTextFile(source, SIZE);
        else writeRandomFile(source, SIZE);
        await pair.pausedBehindLink(DELAY_MS, LINK, source);
        const log = (await pair.status(pair.a)).log_bytes;
        const before = await pair.status(pair.b);
        const wireBefore = pair.proxy.stats.bytesDown;
        const started = performance.now();
        await pair.replica(pair.b, "resume", "disk", "--fetch");
        let s = before;
        while (s.received_bytes - before.received_bytes < log) {
          await Bun.sleep(50);
          s = await pair.status(pair.b);
        }
        const seconds = (performance.now() - started) / 1000;
        const fetched = s.received_bytes - before.received_bytes;
        const wire = pair.proxy.stats.bytesDown - wireBefore;
        const rate = fetched / seconds;
        rows.push(
          `| ${data} | ${compress ? "zstd" : "off"} | ${(fetched / MiB).toFixed(1)} | ${(wire / MiB).toFixed(2)} | ${(fetched / wire).toFixed(1)}× | ${seconds.toFixed(1)} | ${(rate / MiB).toFixed(2)} | ${(rate / LINK).toFixed(2)}× |`,
        );
        console.log(rows[rows.length - 1]);
      } finally {
        await pair.close();
      }
    }
  }
  console.log(`\ncatch-up through a ${(LINK / MiB).toFixed(0)} MiB/s link, ${DELAY_MS} ms each way, ${(SIZE / MiB).toFixed(0)} MiB written (replay paused while fetching)\n`);
  console.log("| data | compression | log MiB | wire MiB | log/wire | seconds | log MiB/s | log rate / link |");
  console.log("|---|---|---:|---:|---:|---:|---:|---:|");
  for (const row of rows) console.log(row);
} finally {
  rmSync(base, { recursive: true, force: true });
}
