/**
 * Replication over a WAN-like link between real processes (issue 11 "Tests beyond the
 * simulation", at a moderate size): the fault proxy adds 25 ms each way, loses 1 % of the
 * segments (each loss delays its chunk by one round trip: test/fault/proxy.ts loss()), paces
 * the link to 8 MiB/s, holds all traffic for 5 s (a cut the keepalive sees) and resets the
 * connections once. A 128 MiB write workload on the primary finishes while the secondary is
 * still far behind — the primary's writes never wait for the link — and the secondary catches
 * up afterwards, byte-identical. The catch-up rate against the link rate is printed (no timed
 * assertion: the machine is shared). Environment knobs scale it to the shape:
 *   WAN_SIZE_MIB=512 WAN_DELAY_MS=50 WAN_LOSS=0.01 WAN_LINK_MIB=20 WAN_CUT_MS=60000 \
 *     bun test test/replication/wan.test.ts
 */
import { afterAll, afterEach, expect, test } from "bun:test";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { scratchDir, writeRandomFile } from "../helpers/files.ts";
import { copyInto, hashPrefix, MiB, ReplicaPair } from "./pair.ts";

const SIZE_MIB = Number(process.env.WAN_SIZE_MIB ?? 128);
const LINK = Number(process.env.WAN_LINK_MIB ?? 8) * MiB;
const DELAY_MS = Number(process.env.WAN_DELAY_MS ?? 25);
const LOSS = Number(process.env.WAN_LOSS ?? 0.01);
const CUT_MS = Number(process.env.WAN_CUT_MS ?? 5000);
const dir = scratchDir("replication-wan");
afterAll(() => dir.remove());
let pair: ReplicaPair | null = null;
afterEach(async () => {
  await pair?.close();
  pair = null;
});

test(
  `WAN: ${SIZE_MIB} MiB on the primary through ${DELAY_MS} ms, ${LOSS * 100} % loss, ${LINK / MiB} MiB/s, a ${CUT_MS / 1000} s blackhole and a reset; caught up and identical`,
  async () => {
    const size = SIZE_MIB * MiB;
    const where = join(dir.path, "wan");
    mkdirSync(where);
    pair = await ReplicaPair.create(where, { size, logSize: `${Math.max(256, SIZE_MIB * 2)}MiB` });
    await pair.start(pair.a);
    await pair.start(pair.b);
    pair.proxy.delay(DELAY_MS);
    pair.proxy.loss(LOSS, 2 * DELAY_MS);
    pair.proxy.throttle(LINK);
    const source = join(where, "source.bin");
    writeRandomFile(source, size);
    const started = performance.now();
    let copyDoneAt = 0;
    const copy = copyInto(source, pair.a.port).then((result) => {
      copyDoneAt = performance.now();
      return result;
    });
    await pair.proxy.whenDelivered("down", size * 0.1);
    await pair.proxy.blackhole(CUT_MS);
    await pair.proxy.whenDelivered("down", size * 0.2);
    expect(pair.proxy.cut()).toBeGreaterThan(0);
    const copied = await copy;
    const copySeconds = (copyDoneAt - started) / 1000;
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
    console.log(`caught up ${catchSeconds.toFixed(1)} s after the link came back (blackhole over and connections reset ${((catchStart - started) / 1000).toFixed(1)} s into the test); catch-up ${rate.toFixed(2)} MiB/s on a ${LINK / MiB} MiB/s link (${(rate / (LINK / MiB)).toFixed(2)}×); proxy ${JSON.stringify(pair.proxy.stats)}`);
    expect(status.state).toBe("replicating");
    expect(hashPrefix(pair.b.image, size)).toBe(hashPrefix(pair.a.image, size));
    expect(hashPrefix(pair.a.image, size)).toBe(hashPrefix(source, size));
  },
  900_000,
);
