/**
 * Fault test (issue 3 item 7a): `dstd copy` of 256 MiB of random data through the fault
 * proxy while the proxy resets every connection five times. The copy must exit 0 and every
 * 1 MiB block of the export's file must equal the source (sha256 per block).
 * Real processes (the compiled dist/dstd), real loopback TCP.
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
const suite = faultSuite("cut");
const dir = suite.dir;

test(
  "copy of 256 MiB survives 5 connection resets: exit 0, zero differing blocks",
  async () => {
    const started = performance.now();
    const source = join(dir.path, "source.img");
    const disk = join(dir.path, "disk.img");
    writeRandomFile(source, SIZE);
    const expected = blockHashes(source, SIZE);
    const { proxy, url } = await suite.exportBehindProxy({ file: disk, size: SIZE });
    const config = writeClientConfig(join(dir.path, "client.toml"), {
      deadline: "120s",
      keepalive_interval: "1s",
      keepalive_timeout: "3s",
      reconnect_min: "50ms",
      reconnect_max: "1s",
    });
    console.log(`setup ${seconds(started)} s`);

    const copy = watchedCopy(source, url, config);
    const cuts: string[] = [];
    for (const fraction of [0.15, 0.3, 0.45, 0.6, 0.75]) {
      await Promise.race([proxy.whenDelivered("up", fraction * SIZE), copy.result]);
      if (copy.exited()) break;
      const reset = proxy.cut();
      cuts.push(`${(fraction * 100).toFixed(0)}% at ${seconds(copy.startedAt)} s (${reset} conn)`);
    }
    const result = await copy.result;
    console.log(`cuts: ${cuts.join(", ")}`);
    console.log(`copy exit ${result.exitCode} after ${result.seconds.toFixed(1)} s; proxy ${JSON.stringify(proxy.stats)}`);
    const lost = connectionLostLines(result.output);
    console.log(`client logged ${lost.length} lost connections; reconnects reported: ${reportedCounter(result.output, "reconnects") ?? "n/a"}`);
    if (result.exitCode !== 0) console.log(result.output);
    expect(result.exitCode).toBe(0);
    expect(cuts.length).toBe(5); // every cut happened while the copy was running
    expect(proxy.stats.cut).toBeGreaterThanOrEqual(5);
    expect(proxy.stats.accepted).toBeGreaterThanOrEqual(6); // it reconnected after each cut
    expect(lost.length).toBeGreaterThanOrEqual(5);

    const comparison = compareBlocks(expected, disk, SIZE);
    console.log(`verified ${comparison.blocks} blocks of 1 MiB: ${comparison.differing} differ; total ${seconds(started)} s`);
    expect(comparison).toEqual({ blocks: 256, differing: 0, examples: [] });
  },
  180_000,
);
