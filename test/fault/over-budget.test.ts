/**
 * Fault test (issue 3 item 7d): an outage LONGER than the client's budget (deadline 5 s,
 * blackhole 20 s) must end `dstd copy` with a non-zero exit and a clear message naming the
 * timeout, during the outage, instead of hanging or exiting 0 with data missing.
 */
import { expect, test } from "bun:test";
import { join } from "node:path";
import { MiB, faultSuite, seconds, watchedCopy, writeClientConfig, writeRandomFile } from "./harness.ts";

const SIZE = 256 * MiB;
const BLACKHOLE_MS = 20_000;
const suite = faultSuite("budget");
const dir = suite.dir;

test(
  "a 20 s outage with a 5 s deadline: copy exits non-zero naming the timeout, before the outage ends",
  async () => {
    const source = join(dir.path, "source.img");
    writeRandomFile(source, SIZE);
    const { proxy, url } = await suite.exportBehindProxy({ memory: "256MiB" });
    const config = writeClientConfig(join(dir.path, "client.toml"), {
      keepalive_interval: "1s",
      keepalive_timeout: "3s",
      deadline: "5s",
    });

    const copy = watchedCopy(source, url, config);
    await Promise.race([proxy.whenDelivered("up", 0.3 * SIZE), copy.result]);
    expect(copy.exited()).toBe(false);
    const holeAt = performance.now();
    const holeEnded = proxy.blackhole(BLACKHOLE_MS);
    console.log(`blackhole of ${BLACKHOLE_MS / 1000} s starts at ${seconds(copy.startedAt)} s into the copy`);

    const result = await copy.result;
    const intoHole = (performance.now() - holeAt) / 1000;
    console.log(`copy exit ${result.exitCode} ${intoHole.toFixed(1)} s into the blackhole (total ${result.seconds.toFixed(1)} s)`);
    const lastLine = result.output.trim().split("\n").at(-1) ?? "";
    console.log(`final message: ${lastLine}`);
    expect(result.exitCode).not.toBe(0);
    expect(proxy.blackholed).toBe(true); // it gave up during the outage, not after it
    expect(intoHole).toBeLessThan(BLACKHOLE_MS / 1000);
    expect(intoHole).toBeGreaterThan(2); // ...and not before the budget could be spent
    // The last line is the error dstd exits with; it must say what ran out.
    expect(lastLine).toMatch(/^dstd copy: /);
    expect(lastLine).toMatch(/timed out|timeout|deadline/i);
    proxy.close();
    await holeEnded;
  },
  60_000,
);
