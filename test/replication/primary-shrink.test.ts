/**
 * @module test/replication/primary-shrink — a resize racing the mutations a client sends while
 * it is queued in the replication primary (src/replication/primary.ts, docs/replication.md §4
 * "Mutations"): the RESIZE record waits for its group commit and its write-back, and the disk
 * below keeps its old size until then. A mutation past a queued shrink's end must be refused
 * as out of range on arrival: before the fence it was acknowledged (ack window), logged after
 * the RESIZE, refused by the disk at write-back (ENOSPC), which failed the primary closed, and
 * left a record past the end for a restart's replay and every secondary.
 */
import { expect, test } from "bun:test";
import path from "node:path";
import { Errno } from "../../src/lib/errno.ts";
import { Applier } from "../../src/replication/applier.ts";
import { openLogDirectory } from "../../src/replication/files.ts";
import { LogReader } from "../../src/replication/log-reader.ts";
import { ReplicationPrimary } from "../../src/replication/primary.ts";
import { RecordOp, type LogRecord } from "../../src/replication/record.ts";
import { createMemoryBackend } from "../../src/storage/local/memory.ts";
import { createLocalPort } from "../../src/storage/local/port.ts";
import { PassThrough } from "../../src/storage/layers/pass-through.ts";
import { ShrinkGate } from "../../src/storage/layers/shrink-gate.ts";
import { call, type StoragePort } from "../../src/storage/port.ts";
import { validateRequest } from "../../src/storage/validate.ts";
import { scratchDirsPerTest } from "../helpers/files.ts";

const tempDir = scratchDirsPerTest("primary-shrink");
const SIZE = 8 << 20;
const HALF = SIZE / 2;
const block = (n: number) => new Uint8Array(4096).fill(n);

/** A disk that outlives the primary over it (a restart keeps the data disk). */
class Kept extends PassThrough {
  override async close(): Promise<void> {}
}

/** What the DST export and the NBD front do with a request: validate it against `port.size` now, then hand it over. */
function sendWrite(port: StoragePort, offset: number, data: Uint8Array): Promise<number> {
  const invalid = validateRequest("write", offset, data.length, { size: port.size, writable: true, maxPayload: 1 << 20 });
  if (invalid !== 0) return Promise.resolve(invalid);
  return new Promise((resolve) => port.write(offset, data, false, resolve));
}

async function records(primary: ReplicationPrimary): Promise<LogRecord[]> {
  const reader = new LogReader(primary.store, { seq: 1 });
  const out: LogRecord[] = [];
  for (;;) {
    const chunk = await new Promise<{ records: LogRecord[] }>((resolve, reject) => reader.read(1 << 20, (e, c) => (e !== null ? reject(new Error(e)) : resolve(c!))));
    if (chunk.records.length === 0) break;
    out.push(...chunk.records);
  }
  await reader.close();
  return out;
}

test("mutations past the new end sent while a shrink waits for its RESIZE record are refused as out of range, never logged after it: the primary stays healthy, a secondary and a restart replay the whole log, a regrow reads zeros", async () => {
  const root = tempDir();
  const disk = new Kept(createLocalPort(createMemoryBackend(SIZE)));
  let primary = await ReplicationPrimary.open(disk, openLogDirectory(path.join(root, "p")), { logLimit: 64 << 20 });
  await call.write(primary, SIZE - 4096, block(1));
  const shrunk = new Promise<number>((resolve) => primary.resize!(HALF, resolve));
  // The RESIZE record is not durable yet (group commit): the disk below is still SIZE bytes, the layer is HALF to new requests.
  expect(primary.size).toBe(HALF);
  // A request checked by the export now, and ones that reach the layer unchecked (its own line of defence).
  const checked = sendWrite(primary, SIZE - 4096, block(2));
  const direct = new Promise<number>((resolve) => primary.write(SIZE - 8192, block(3), false, resolve));
  const trimmed = new Promise<number>((resolve) => primary.trim(HALF, 4096, false, resolve));
  const zeroed = new Promise<number>((resolve) => primary.zero(HALF - 4096, 8192, { fua: false, noHole: false, fast: false }, resolve));
  const inside = sendWrite(primary, 0, block(4));
  expect(await shrunk).toBe(0);
  expect([await checked, await direct, await trimmed, await zeroed, await inside]).toEqual([Errno.ENOSPC, Errno.ENOSPC, Errno.EINVAL, Errno.ENOSPC, 0]);
  expect(primary.size).toBe(HALF);
  await call.flush(primary); // fails once the disk failed a write-back
  expect(primary.status().diskFailure).toBeNull();
  const log = await records(primary);
  const at = log.findIndex((r) => r.op === RecordOp.RESIZE);
  expect(at).toBeGreaterThan(0);
  expect(log.slice(at + 1).every((r) => r.offset + r.length <= HALF)).toBe(true);

  // Every record replays onto a secondary's disk (one past the end would halt it), and a regrow reads zeros in the cut area.
  const secondaryDisk = createLocalPort(createMemoryBackend(SIZE));
  const applier = await Applier.open(secondaryDisk, openLogDirectory(path.join(root, "s")), {
    source: (from, after) => new LogReader(primary.store, from, after),
    clock: { now: () => Date.now() * 1000, after: (ms, run) => { const t = setTimeout(run, ms); return () => clearTimeout(t); } },
  });
  const deadline = Date.now() + 20_000;
  while (applier.status().applied.seq < primary.status().durable && applier.status().halted === null && Date.now() < deadline) await Bun.sleep(5);
  expect(applier.status().halted).toBeNull();
  expect(secondaryDisk.size).toBe(HALF);
  await applier.close();
  // A restart replays every record after the checkpoint onto the disk (one past the end made the restart fail).
  await primary.close();
  primary = await ReplicationPrimary.open(disk, openLogDirectory(path.join(root, "p")), { logLimit: 64 << 20 });
  expect(await new Promise<number>((resolve) => primary.resize!(SIZE, resolve))).toBe(0);
  const into = new Uint8Array(4096);
  await call.read(primary, SIZE - 4096, into);
  expect(into.every((b) => b === 0)).toBe(true);
  await primary.close();
});

test("while a grow waits for its RESIZE record the layer keeps its old size: a write into the new tail is refused until the grow is done, then taken", async () => {
  const primary = await ReplicationPrimary.open(createLocalPort(createMemoryBackend(HALF)), openLogDirectory(tempDir()), { logLimit: 64 << 20 });
  const grown = new Promise<number>((resolve) => primary.resize!(SIZE, resolve));
  expect(primary.size).toBe(HALF);
  const early = new Promise<number>((resolve) => primary.write(SIZE - 4096, block(5), false, resolve));
  expect([await grown, await early]).toEqual([0, Errno.ENOSPC]);
  expect(primary.size).toBe(SIZE);
  await call.write(primary, SIZE - 4096, block(6));
  const into = new Uint8Array(4096);
  await call.read(primary, SIZE - 4096, into);
  expect(into[0]).toBe(6);
  expect(primary.status().diskFailure).toBeNull();
  await primary.close();
});

test("a record past the end of the disk that no later RESIZE cuts still fails the restart, naming it: a disk smaller than the log says loses nothing silently", async () => {
  const root = tempDir();
  const options = { logLimit: 64 << 20 };
  const primary = await ReplicationPrimary.open(createLocalPort(createMemoryBackend(SIZE)), openLogDirectory(root), options);
  await call.write(primary, HALF - 4096, new Uint8Array(8192).fill(7)); // across the end of the disk below
  await primary.close();
  const small = createLocalPort(createMemoryBackend(HALF));
  await expect(ReplicationPrimary.open(small, openLogDirectory(root), options)).rejects.toThrow(`record seq 1 (8192 B at offset ${HALF - 4096}) lies past the disk's end (${HALF} bytes)`);
});

test("a secondary that crashed after applying a tail write and a later shrink, before saving its position, re-applies both: the write up to the shrunk disk's end (it halted with ENOSPC for good); one no RESIZE cuts still halts it, naming the record", async () => {
  const root = tempDir();
  const primary = await ReplicationPrimary.open(createLocalPort(createMemoryBackend(SIZE)), openLogDirectory(path.join(root, "p")), { logLimit: 64 << 20 });
  await call.write(primary, 0, block(1));
  await call.write(primary, SIZE - 8192, new Uint8Array(8192).fill(2)); // crosses nothing yet: the disk is SIZE
  expect(await new Promise<number>((resolve) => primary.resize!(HALF, resolve))).toBe(0);
  await call.write(primary, 4096, block(3));
  await call.flush(primary);
  const last = primary.status().durable;
  const clock = { now: () => Date.now() * 1000, after: (ms: number, run: () => void) => { const t = setTimeout(run, ms); return () => clearTimeout(t); } };
  const replay = async (disk: StoragePort, dir: string): Promise<Applier> => {
    // The crash: every record had reached the disk (the shrink too), the position says nothing was applied.
    await Applier.writePosition(openLogDirectory(dir), { point: { seq: 0, chain: 0n, lamport: 0, generation: 0 }, applyingThrough: last, inResync: false });
    const applier = await Applier.open(disk, openLogDirectory(dir), { source: (from, after) => new LogReader(primary.store, from, after), clock });
    const deadline = Date.now() + 20_000;
    while (applier.status().applied.seq < last && applier.status().halted === null && Date.now() < deadline) await Bun.sleep(5);
    return applier;
  };
  const shrunk = createLocalPort(createMemoryBackend(HALF));
  const applier = await replay(shrunk, path.join(root, "s"));
  expect(applier.status().halted).toBeNull();
  expect(applier.status().applied.seq).toBe(last);
  expect(applier.status().consistent).toBe(true);
  const into = new Uint8Array(4096);
  await call.read(shrunk, 4096, into);
  expect(into[0]).toBe(3);
  await applier.close();
  // A disk smaller than any RESIZE among the re-applied records says: nothing is dropped silently.
  const small = createLocalPort(createMemoryBackend(HALF / 2));
  const halted = await replay(small, path.join(root, "t"));
  expect(halted.status().halted).toContain("re-applying the log after a crash: record seq");
  expect(halted.status().halted).toContain("no later RESIZE record cuts it");
  await halted.close();
  await primary.close();
});

test("a checked shrink (dstd resize --allow-shrink, no --force) waits for a write past the new end that is still being logged: it finds the data and refuses, and the write is acknowledged and kept (storage/layers/shrink-gate.ts)", async () => {
  const disk = new Kept(createLocalPort(createMemoryBackend(SIZE)));
  const primary = await ReplicationPrimary.open(disk, openLogDirectory(tempDir()), { logLimit: 64 << 20 });
  const gate = new ShrinkGate(primary);
  // In flight: its record's group commit (an fdatasync on the I/O pool) has not run yet.
  const written = sendWrite(gate, SIZE - 4096, block(7));
  let resized = false;
  const resize = () =>
    new Promise<void>((resolve, reject) =>
      gate.resize!(HALF, (errno) => {
        resized = true;
        if (errno === 0) resolve();
        else reject(new Error(`resize failed: ${errno}`));
      }),
    );
  const data = await gate.shrinkIfEmpty(HALF, resize);
  expect(await written).toBe(0);
  // The map's extent the write lies in is data (the ack window marks the whole extent under an early write).
  const at = Number(/^data at offset (\d+)$/.exec(data ?? "")?.[1] ?? -1);
  expect(at).toBeGreaterThanOrEqual(HALF);
  expect(at).toBeLessThanOrEqual(SIZE - 4096);
  expect(resized).toBe(false);
  expect(gate.size).toBe(SIZE);
  const into = new Uint8Array(4096);
  await call.read(gate, SIZE - 4096, into);
  expect(into.every((b) => b === 7)).toBe(true);
  // The refusal lifted the fence: the tail takes writes again.
  expect(await sendWrite(gate, SIZE - 8192, block(8))).toBe(0);
  // Cut to an empty tail once the data is gone: the shrink runs, and the tail is refused by size after it.
  await call.trim(gate, HALF, HALF);
  expect(await gate.shrinkIfEmpty(HALF, resize)).toBeNull();
  expect(resized).toBe(true);
  expect(gate.size).toBe(HALF);
  expect(await sendWrite(gate, SIZE - 4096, block(9))).toBe(Errno.ENOSPC);
  await primary.close();
});
