/**
 * Fault test (issue 3 item 7b, "Done means"): a 30 s blackhole in the middle of writing
 * 256 MiB with `dstd copy`. Connections stay open during the blackhole (the proxy holds
 * bytes, see proxy.ts), so only the application keepalive can detect the dead link. The
 * copy must exit 0, log that keepalive declared the connection dead and reconnect, and
 * every 1 MiB block must be identical. Real time by nature: about 40 s.
 */
import { expect, test } from "bun:test";
import { join } from "node:path";
import {
  MiB,
  blockHashes,
  compareBlocks,
  connectionLostLines,
  faultSuite,
  reportedCounter,
  seconds,
  watchedCopy,
  writeClientConfig,
  writeRandomFile,
} from "./harness.ts";

const SIZE = 256 * MiB;
const BLACKHOLE_MS = 30_000;
const suite = faultSuite("blackhole");
const dir = suite.dir;

test(
  "copy of 256 MiB survives a 30 s blackhole: keepalive reconnects, exit 0, zero differing blocks",
  async () => {
    const started = performance.now();
    const source = join(dir.path, "source.img");
    const disk = join(dir.path, "disk.img");
    writeRandomFile(source, SIZE);
    const expected = blockHashes(source, SIZE);
    const { proxy, url } = await suite.exportBehindProxy({ file: disk, size: SIZE });
    const config = writeClientConfig(join(dir.path, "client.toml"), {
      keepalive_interval: "1s",
      keepalive_timeout: "3s",
      deadline: "120s",
      reconnect_max: "2s", // so the copy resumes within ~2 s of the link healing
    });

    const copy = watchedCopy(source, url, config);
    await Promise.race([proxy.whenDelivered("up", 0.4 * SIZE), copy.result]);
    expect(copy.exited()).toBe(false); // the blackhole must hit the middle of the copy
    const holeAt = performance.now();
    console.log(`blackhole of ${BLACKHOLE_MS / 1000} s starts at ${seconds(copy.startedAt)} s into the copy`);
    await proxy.blackhole(BLACKHOLE_MS);
    const lostDuringHole = connectionLostLines(copy.output());
    console.log(`blackhole over at ${seconds(copy.startedAt)} s; client reported meanwhile: ${lostDuringHole.length} lost connections`);

    const result = await copy.result;
    const afterHole = (performance.now() - holeAt - BLACKHOLE_MS) / 1000;
    console.log(`copy exit ${result.exitCode} after ${result.seconds.toFixed(1)} s (${afterHole.toFixed(1)} s after the link healed)`);
    console.log(`proxy ${JSON.stringify(proxy.stats)}`);
    const lost = connectionLostLines(result.output);
    for (const line of lost.slice(0, 3)) console.log(`  ${line.trim()}`);
    console.log(`reconnects reported: ${reportedCounter(result.output, "reconnects") ?? "n/a (copy prints no counters)"}`);
    if (result.exitCode !== 0) console.log(result.output);
    expect(result.exitCode).toBe(0);
    // Keepalive, not a TCP error, found the dead link, and did so during the blackhole.
    expect(lostDuringHole.some((line) => line.includes("keepalive timeout"))).toBe(true);
    expect(proxy.stats.accepted).toBeGreaterThanOrEqual(2);
    expect(result.seconds).toBeGreaterThan(BLACKHOLE_MS / 1000);

    const comparison = compareBlocks(expected, disk, SIZE);
    console.log(`verified ${comparison.blocks} blocks of 1 MiB: ${comparison.differing} differ; total ${seconds(started)} s`);
    expect(comparison).toEqual({ blocks: 256, differing: 0, examples: [] });
  },
  150_000,
);
