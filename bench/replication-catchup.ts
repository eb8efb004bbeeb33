/**
 * @module bench/replication-catchup — how fast a secondary catches up through a slow link
 * (issue 11 target: ≥ 0.8× the link's rate), between real processes (dist/dstd, two `dstd up`
 * nodes, the fault proxy of test/fault pacing the link and adding a delay each way).
 *
 * Per round: the secondary's fetching and replay are paused, SIZE MiB are written into the
 * primary; then fetching resumes (replay still paused) and the time until the copy holds the
 * primary's whole log is measured — the shipping rate against the link's pacing rate — then
 * replay resumes and the time until lag 0 is measured (the apply rate, bound by the
 * secondary's disk: each batch costs three fdatasyncs). The "link" is the proxy's pacing
 * rate; the bytes counted are those the proxy delivered. LOSS (0..1, default 0) loses that
 * share of the link's segments, each loss delaying its chunk by one round trip
 * (test/fault/proxy.ts loss()).
 *
 *   bun bench/replication-catchup.ts
 *   SIZE=256 LINK_MIB=20 DELAY_MS=50 LOSS=0.01 ROUNDS=3 bun bench/replication-catchup.ts
 */
import { mkdirSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { MiB, ReplicaPair } from "../test/replication/pair.ts";
import { writeRandomFile } from "../test/helpers/files.ts";

const SIZE = Number(process.env.SIZE ?? 96) * MiB;
const LINK = Number(process.env.LINK_MIB ?? 16) * MiB;
const DELAY_MS = Number(process.env.DELAY_MS ?? 25);
const ROUNDS = Number(process.env.ROUNDS ?? 2);
const LOSS = Number(process.env.LOSS ?? 0);
if (!(LOSS >= 0 && LOSS <= 1)) throw new Error(`LOSS=${process.env.LOSS} is not a share within 0..1`);

const base = path.join(process.env.BENCH_DIR ?? os.tmpdir(), `dstd-bench-catchup-${process.pid}`);
mkdirSync(base, { recursive: true });
const ratios: number[] = [];
try {
  for (let round = 0; round < ROUNDS; round++) {
    const dir = path.join(base, `r${round}`);
    mkdirSync(dir);
    const pair = await ReplicaPair.create(dir, { size: SIZE, logSize: `${Math.max(256, (2 * SIZE) / MiB)}MiB` });
    try {
      const source = path.join(dir, "source.bin");
      writeRandomFile(source, SIZE);
      await pair.pausedBehindLink(DELAY_MS, LINK, source, LOSS);
      // Useful bytes are the log bytes the copy received: a FETCH answer resent while the first
      // copy was still crossing the link costs wire bytes but ships nothing new.
      const log = (await pair.status(pair.a)).log_bytes;
      const before = await pair.status(pair.b);
      const wireBefore = pair.proxy.stats.bytesDown;
      const started = performance.now();
      // Where the time goes: the link's delivered bytes sampled every 10 ms (in this process,
      // next to the proxy) give when the first and last answer bytes crossed.
      const samples: { at: number; down: number }[] = [{ at: started, down: wireBefore }];
      const sampler = setInterval(() => samples.push({ at: performance.now(), down: pair.proxy.stats.bytesDown }), 10);
      await pair.replica(pair.b, "resume", "disk", "--fetch");
      const resumed = performance.now();
      let s = before;
      while (s.received_bytes - before.received_bytes < log) {
        await Bun.sleep(50);
        s = await pair.status(pair.b);
      }
      clearInterval(sampler);
      const seconds = (performance.now() - started) / 1000;
      const moving = samples.findIndex((x) => x.down > wireBefore);
      const last = samples.findIndex((x) => x.down === samples[samples.length - 1]!.down);
      const firstByte = moving < 0 ? NaN : samples[moving]!.at - started;
      const crossing = moving < 0 ? NaN : samples[last]!.at - samples[moving]!.at;
      const shipped = s.received_bytes - before.received_bytes;
      const wire = pair.proxy.stats.bytesDown - wireBefore;
      // The link delivers in pieces of 1/50 s, so "no byte in a 10 ms sample" is no sign of an
      // idle link: idle = the crossing time less what the bytes needed at the link's rate.
      const idleMs = Math.max(0, crossing - (wire / LINK) * 1000);
      const rate = shipped / seconds;
      ratios.push(rate / LINK);
      const applyStart = performance.now();
      await pair.replica(pair.b, "resume", "disk", "--replay");
      await pair.caughtUp(600_000);
      const applySeconds = (performance.now() - applyStart) / 1000;
      console.log(
        `  time: resume command ${(resumed - started).toFixed(0)} ms, first byte on the link at ${firstByte.toFixed(0)} ms, answers crossing for ${crossing.toFixed(0)} ms (link idle ${idleMs.toFixed(0)} ms of it), after the last byte ${(seconds * 1000 - firstByte - crossing).toFixed(0)} ms; while crossing ${((shipped / MiB / crossing) * 1000).toFixed(2)} MiB/s = ${((shipped / crossing) * 1000 / LINK).toFixed(2)}× the link`,
      );
      console.log(
        `round ${round + 1}: fetched ${(shipped / MiB).toFixed(1)} MiB of log (${(wire / MiB).toFixed(1)} MiB on the wire) in ${seconds.toFixed(1)} s = ${(rate / MiB).toFixed(2)} MiB/s on a ${(LINK / MiB).toFixed(0)} MiB/s link with ${DELAY_MS} ms each way, ${LOSS * 100} % loss: ${(rate / LINK).toFixed(2)}×; then applied in ${applySeconds.toFixed(1)} s (${(SIZE / MiB / applySeconds).toFixed(1)} MiB/s)`,
      );
    } finally {
      await pair.close();
    }
  }
  ratios.sort((a, b) => a - b);
  console.log(`fetch / link: median ${ratios[Math.floor(ratios.length / 2)]!.toFixed(2)}× (target ≥ 0.8×)`);
} finally {
  rmSync(base, { recursive: true, force: true });
}
