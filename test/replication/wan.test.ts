/**
 * Replication over a WAN-like link between real processes (issue 11 "Tests beyond the
 * simulation", at a moderate size): the fault proxy adds 25 ms each way, paces the link to
 * 8 MiB/s, holds all traffic for 5 s (a cut the keepalive sees) and resets the connections
 * once. A 128 MiB write workload on the primary finishes while the secondary is still far
 * behind — the primary's writes never wait for the link — and the secondary catches up
 * afterwards, byte-identical. WAN_SIZE_MIB scales it (the 512 MiB: WAN_SIZE_MIB=512,
 * about 4× the time at the same link rate). The catch-up rate against the link rate is printed
 * (no timed assertion: the machine is shared).
 */
import { afterAll, afterEach, expect, test } from "bun:test";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { scratchDir, writeRandomFile } from "../helpers/files.ts";
import { copyInto, hashPrefix, MiB, ReplicaPair } from "./pair.ts";

const SIZE_MIB = Number(process.env.WAN_SIZE_MIB ?? 128);
const LINK = 8 * MiB;
const dir = scratchDir("replication-wan");
afterAll(() => dir.remove());
let pair: ReplicaPair | null = null;
afterEach(async () => {
  await pair?.close();
  pair = null;
});

test(
  `WAN: ${SIZE_MIB} MiB on the primary through 25 ms, ${LINK / MiB} MiB/s, a 5 s blackhole and a reset; caught up and identical`,
  async () => {
    const size = SIZE_MIB * MiB;
    const where = join(dir.path, "wan");
    mkdirSync(where);
    pair = await ReplicaPair.create(where, { size, logSize: `${Math.max(256, SIZE_MIB * 2)}MiB` });
    await pair.start(pair.a);
    await pair.start(pair.b);
    pair.proxy.delay(25);
    pair.proxy.throttle(LINK);
    const source = join(where, "source.bin");
    writeRandomFile(source, size);
    const started = performance.now();
    const copy = copyInto(source, pair.a.port);
    await pair.proxy.whenDelivered("down", size * 0.1);
    await pair.proxy.blackhole(5000);
    await pair.proxy.whenDelivered("down", size * 0.2);
    expect(pair.proxy.cut()).toBeGreaterThan(0);
    const copied = await copy;
    const copySeconds = (performance.now() - started) / 1000;
    expect(copied.exitCode).toBe(0);
    // The workload is done while the secondary is still well behind: the primary never waited for the link.
    const behind = await pair.status(pair.b);
    console.log(`copy of ${SIZE_MIB} MiB into the primary: ${copySeconds.toFixed(1)} s (${(SIZE_MIB / copySeconds).toFixed(1)} MiB/s); secondary then at seq ${behind.seq}, lag ${(behind.lag_bytes / MiB).toFixed(1)} MiB`);
    expect(behind.lag_bytes).toBeGreaterThan(0);
    const catchStart = performance.now();
    const bytesBefore = pair.proxy.stats.bytesDown;
    const status = await pair.caughtUp(600_000);
    const catchSeconds = (performance.now() - catchStart) / 1000;
    const rate = (pair.proxy.stats.bytesDown - bytesBefore) / MiB / catchSeconds;
    console.log(`caught up ${catchSeconds.toFixed(1)} s after the copy; catch-up ${rate.toFixed(2)} MiB/s on a ${LINK / MiB} MiB/s link (${(rate / (LINK / MiB)).toFixed(2)}×); proxy ${JSON.stringify(pair.proxy.stats)}`);
    expect(status.state).toBe("replicating");
    expect(hashPrefix(pair.b.image, size)).toBe(hashPrefix(pair.a.image, size));
    expect(hashPrefix(pair.a.image, size)).toBe(hashPrefix(source, size));
  },
  900_000,
);
