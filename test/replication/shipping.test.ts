/**
 * Replication between real processes (issue 11, docs/replication.md §10): two `dstd up` nodes
 * on loopback — a primary and a secondary fetching its log over DST with an identity key
 * granted `replica`, through the fault proxy. Each test writes with `dstd copy` into the
 * primary, waits for `dstd replica status` to report lag 0, and compares the images.
 */
import { afterAll, afterEach, expect, test } from "bun:test";
import { readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { scratchDir, writeRandomFile } from "../helpers/files.ts";
import { haveTools } from "../helpers/tools.ts";
import { copyInto, hashPrefix, MiB, ReplicaPair } from "./pair.ts";
import { RECORD_HEADER_SIZE } from "../../src/replication/record.ts";

const dir = scratchDir("replication");
afterAll(() => dir.remove());
let pair: ReplicaPair | null = null;
afterEach(async () => {
  await pair?.close();
  pair = null;
});

const SIZE = 64 * MiB;

/** Bytes of every log segment in a log directory (records back to back). */
function segmentBytes(logDir: string): number {
  return readdirSync(logDir)
    .filter((n) => n.endsWith(".dstl"))
    .reduce((sum, n) => sum + statSync(join(logDir, n)).size, 0);
}

test(
  "a secondary with a replica key catches up through a cut mid-stream: every log byte stored once, images identical",
  async () => {
    pair = await ReplicaPair.in(dir.path, "cut", { size: SIZE });
    await pair.start(pair.a);
    await pair.start(pair.b);
    const source = pair.file("source.bin");
    writeRandomFile(source, 48 * MiB);
    pair.proxy.throttle(16 * MiB); // so the cut lands while records stream
    const copy = copyInto(source, pair.a.port);
    await pair.proxy.whenDelivered("down", 12 * MiB);
    const reset = pair.proxy.cut();
    expect(reset).toBeGreaterThan(0);
    const copied = await copy;
    expect(copied.exitCode).toBe(0);
    pair.proxy.throttle(0);
    const status = await pair.caughtUp(120_000);
    const primary = await pair.status(pair.a);
    console.log(`cut ${reset} connection(s); secondary ${JSON.stringify(status)}`);
    expect(primary.secondaries.map((s) => s.name)).toEqual(["site-b"]);
    expect(hashPrefix(pair.b.image, SIZE)).toBe(hashPrefix(pair.a.image, SIZE));
    expect(hashPrefix(pair.a.image, 48 * MiB)).toBe(hashPrefix(source, 48 * MiB));
    // Resumed at the exact byte: the records stored add up to the primary's log, none twice.
    expect(status.received_bytes).toBe(segmentBytes(pair.a.logDir));
    expect(pair.b.node!.stderr()).toMatch(/FETCH from seq \d+ failed|retrying|connection lost/);
    // The same in the metrics, which promtool accepts.
    const metrics = await pair.metrics(pair.b);
    expect(metrics).toContain('dstd_replica_lag_bytes{export="disk"} 0');
    expect(metrics).toContain('dstd_replica_state{export="disk",role="secondary",state="replicating"} 1');
    expect(metrics).toContain(`dstd_replica_seq{export="disk"} ${status.seq}`);
    expect(await pair.metrics(pair.a)).toContain('dstd_replica_state{export="disk",role="primary",state="primary"} 1');
    if (haveTools({ promtool: "prometheus" })) {
      const checked = Bun.spawnSync(["promtool", "check", "metrics"], { stdin: new TextEncoder().encode(metrics) });
      expect(`${checked.stdout}${checked.stderr}`.trim()).toBe("");
      expect(checked.exitCode).toBe(0);
    }
  },
  240_000,
);

test(
  "kill -9 of the secondary and of the primary mid-workload: both restart, the secondary catches up, images identical",
  async () => {
    pair = await ReplicaPair.in(dir.path, "kill", { size: SIZE });
    await pair.start(pair.a);
    await pair.start(pair.b);
    const source = pair.file("source.bin");
    writeRandomFile(source, 48 * MiB);
    const copy = copyInto(source, pair.a.port, ["--flush-every", "4MiB"]);
    const fraction = 0.2 + Math.random() * 0.3;
    await pair.proxy.whenDelivered("down", fraction * 48 * MiB);
    await pair.stop(pair.b, "SIGKILL");
    await pair.start(pair.b);
    await pair.stop(pair.a, "SIGKILL");
    await pair.start(pair.a);
    const copied = await copy;
    console.log(`killed both at ~${(fraction * 100).toFixed(0)}% of the shipped bytes; copy exit ${copied.exitCode}`);
    if (copied.exitCode !== 0) console.log(copied.output);
    expect(copied.exitCode).toBe(0);
    const status = await pair.caughtUp(120_000);
    console.log(`secondary ${JSON.stringify(status)}`);
    expect(hashPrefix(pair.b.image, SIZE)).toBe(hashPrefix(pair.a.image, SIZE));
    expect(hashPrefix(pair.a.image, 48 * MiB)).toBe(hashPrefix(source, 48 * MiB));
  },
  240_000,
);

test(
  "a flipped byte in a stored log record stops shipping at that record, naming it; nothing past it is applied",
  async () => {
    pair = await ReplicaPair.in(dir.path, "flip", { size: SIZE });
    await pair.start(pair.a);
    await pair.start(pair.b);
    const first = pair.file("first.bin");
    writeRandomFile(first, 4 * MiB);
    expect((await copyInto(first, pair.a.port)).exitCode).toBe(0);
    const before = await pair.caughtUp(60_000);
    expect((await pair.replica(pair.b, "pause", "disk", "--fetch")).exitCode).toBe(0);
    const second = pair.file("second.bin");
    writeRandomFile(second, 8 * MiB);
    expect((await copyInto(second, pair.a.port)).exitCode).toBe(0);
    // Walk the primary's segment to the 4th record after what the secondary has, flip a payload byte.
    const segment = join(pair.a.logDir, readdirSync(pair.a.logDir).filter((n) => n.endsWith(".dstl")).sort()[0]!);
    const bytes = readFileSync(segment);
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    let at = 0;
    let target = -1;
    while (at < bytes.length) {
      const seq = Number(view.getBigUint64(at + 16));
      const payload = view.getUint32(at + 8);
      if (seq === before.seq + 4) {
        expect(payload).toBeGreaterThan(100);
        target = seq;
        bytes[at + RECORD_HEADER_SIZE + 100]! ^= 0x40;
        break;
      }
      at += RECORD_HEADER_SIZE + payload;
    }
    expect(target).toBeGreaterThan(0);
    writeFileSync(segment, bytes);
    expect((await pair.replica(pair.b, "resume", "disk", "--fetch")).exitCode).toBe(0);
    let status = await pair.status(pair.b);
    for (let i = 0; i < 100 && status.state !== "stalled"; i++) {
      await Bun.sleep(200);
      status = await pair.status(pair.b);
    }
    console.log(`secondary ${JSON.stringify(status)}`);
    expect(status.state).toBe("stalled");
    expect(status.reason).toContain(`seq ${target}`);
    // Retries change nothing: wait until the refused FETCH has been asked again twice more.
    const retried = status.retries;
    for (let i = 0; i < 150 && status.retries < retried + 2; i++) {
      await Bun.sleep(100);
      status = await pair.status(pair.b);
    }
    expect(status.retries).toBeGreaterThanOrEqual(retried + 2);
    expect(status.state).toBe("stalled");
    expect(status.seq).toBe(target - 1);
    const human = await pair.replica(pair.b, "status");
    expect(human.stdout).toContain("stalled");
  },
  240_000,
);

test(
  "a secondary started after the primary's log rotated still begins at seq 1 (the log waits for its first secondary)",
  async () => {
    pair = await ReplicaPair.in(dir.path, "late", { size: SIZE, logSize: "64MiB" });
    await pair.start(pair.a);
    const source = pair.file("source.bin");
    writeRandomFile(source, 40 * MiB);
    expect((await copyInto(source, pair.a.port)).exitCode).toBe(0);
    const segments = readdirSync(pair.a.logDir).filter((n) => n.endsWith(".dstl"));
    expect(segments.length).toBeGreaterThan(1); // 16 MiB segments: rotated, yet nothing released
    expect(segments).toContain("log-0000000000000001.dstl");
    await pair.start(pair.b);
    const status = await pair.caughtUp(120_000);
    expect(status.state).toBe("replicating");
    expect(hashPrefix(pair.b.image, SIZE)).toBe(hashPrefix(pair.a.image, SIZE));
    expect((await pair.status(pair.a)).secondaries.map((s) => s.name)).toEqual(["site-b"]);
  },
  240_000,
);
