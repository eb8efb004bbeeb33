/**
 * @module bench/replication-sync — how fast a new secondary's initial sync copies its
 * primary's disk through a slow link (issue 11 item 6: "at close to link speed"), between real
 * processes (dist/dstd, two `dstd up` nodes, the fault proxy of test/fault pacing the link and
 * adding a delay each way). docs/replication.md §10.1.
 *
 * Per round: a primary whose log was released past seq 1 (a first secondary caught up, then
 * its disk and log are wiped: a replacement node) holds DATA MiB of random data on a SIZE MiB
 * disk; the replacement starts through the paced link and the time until its copy is done is
 * measured. Two ratios: the copy's data rate against the link's pacing rate (the bytes counted
 * are those the proxy delivered), and the disk covered per second against the link (above 1×
 * because holes are not sent).
 *
 *   bun bench/replication-sync.ts
 *   SIZE=1024 DATA=256 LINK_MIB=32 DELAY_MS=25 ROUNDS=3 bun bench/replication-sync.ts
 */
import { mkdirSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { copyInto, MiB, ReplicaPair } from "../test/replication/pair.ts";
import { writeRandomFile } from "../test/helpers/files.ts";

const SIZE = Number(process.env.SIZE ?? 512) * MiB;
const DATA = Number(process.env.DATA ?? 128) * MiB;
const LINK = Number(process.env.LINK_MIB ?? 16) * MiB;
const DELAY_MS = Number(process.env.DELAY_MS ?? 25);
const ROUNDS = Number(process.env.ROUNDS ?? 2);

const base = path.join(process.env.BENCH_DIR ?? os.tmpdir(), `dstd-bench-sync-${process.pid}`);
mkdirSync(base, { recursive: true });
const rows: { rate: number; cover: number }[] = [];
try {
  for (let round = 0; round < ROUNDS; round++) {
    const dir = path.join(base, `r${round}`);
    mkdirSync(dir);
    const pair = await ReplicaPair.create(dir, { size: SIZE, logSize: "64MiB" });
    try {
      await pair.start(pair.a);
      await pair.start(pair.b);
      const source = path.join(dir, "source.bin");
      writeRandomFile(source, DATA);
      const copied = await copyInto(source, pair.a.port);
      if (copied.exitCode !== 0) throw new Error(copied.output);
      await pair.caughtUp(600_000);
      await pair.stop(pair.b, "SIGKILL");
      rmSync(pair.b.image);
      rmSync(pair.b.logDir, { recursive: true });
      pair.proxy.delay(DELAY_MS);
      pair.proxy.throttle(LINK);
      await pair.start(pair.b);
      // From the first status that shows the copy (BEGIN answered) to the end of the copy.
      let started = 0;
      let bytesBefore = 0;
      for (;;) {
        const s = await pair.status(pair.b);
        if (process.env.VERBOSE) console.log(s.state, JSON.stringify(s.sync));
        if (started === 0 && s.state === "syncing") {
          started = performance.now();
          bytesBefore = pair.proxy.stats.bytesDown - (s.sync?.moved_bytes ?? 0);
        }
        if (started > 0 && s.state !== "syncing") break;
        await Bun.sleep(20);
      }
      if (process.env.VERBOSE) console.log(pair.b.node?.stderr(), (await pair.metrics(pair.a)).split("\n").filter((l) => /dstd_export_(requests|duplicate)/.test(l)).join("\n"));
      const seconds = (performance.now() - started) / 1000;
      const moved = pair.proxy.stats.bytesDown - bytesBefore;
      rows.push({ rate: moved / seconds / LINK, cover: SIZE / seconds / LINK });
      console.log(
        `round ${round + 1}: ${(SIZE / MiB).toFixed(0)} MiB disk (${(DATA / MiB).toFixed(0)} MiB data) synced in ${seconds.toFixed(1)} s through a ${(LINK / MiB).toFixed(0)} MiB/s link with ${DELAY_MS} ms each way: ${(moved / MiB).toFixed(1)} MiB delivered = ${(moved / seconds / MiB).toFixed(2)} MiB/s (${rows[round]!.rate.toFixed(2)}× the link); disk covered ${rows[round]!.cover.toFixed(2)}× the link`,
      );
    } finally {
      await pair.close();
    }
  }
  const median = (xs: number[]) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  console.log(`| measure | median over ${ROUNDS} rounds |\n|---|---|\n| copy data rate / link | ${median(rows.map((r) => r.rate)).toFixed(2)}× (target: close to 1×) |\n| disk covered / link | ${median(rows.map((r) => r.cover)).toFixed(2)}× |`);
} finally {
  rmSync(base, { recursive: true, force: true });
}
