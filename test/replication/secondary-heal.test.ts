/**
 * @module test/replication/secondary-heal — a secondary whose log copy fails a write (the copy
 * takes no more records after a failed write or fdatasync, docs/replication.md §3.2), or whose
 * replay failed saving its position (the state file latches), reports itself stalled naming the failure, and the replica node opens it again (daemon/replica-node.ts
 * `reopen`): once the files work again it catches up and its disk equals the primary's. Before,
 * it fetched and dropped records forever, reported as retrying. Two ReplicaNodes in one process
 * on real log directories, the secondary's wrapped to fail segment writes on demand.
 */
import { expect, test } from "bun:test";
import path from "node:path";
import { Errno } from "../../src/lib/errno.ts";
import type { Log } from "../../src/lib/log.ts";
import { ReplicaNode } from "../../src/daemon/replica-node.ts";
import type { ReplicaEnv } from "../../src/daemon/replica-env.ts";
import type { LogSource } from "../../src/export/fetch.ts";
import fs from "node:fs";
import { openLogDirectory } from "../../src/replication/files.ts";
import { LogReader, type ReadChunk } from "../../src/replication/log-reader.ts";
import { ReplicationPrimary } from "../../src/replication/primary.ts";
import { Secondary } from "../../src/replication/secondary.ts";
import { createMemoryBackend } from "../../src/storage/local/memory.ts";
import { createLocalPort } from "../../src/storage/local/port.ts";
import { call, type StoragePort } from "../../src/storage/port.ts";
import { encodeFetchReason } from "../../src/wire/dst/fetch.ts";
import { scratchDirsPerTest } from "../helpers/files.ts";
import { until } from "../helpers/wait.ts";
import { failingFiles, quickTimer, quiet, replicaConfig } from "./replica-fixtures.ts";

const tempDir = scratchDirsPerTest("secondary-heal");
const SIZE = 4 << 20;

for (const [prefix, named] of [
  ["log-", "the log copy failed"],
  ["applied.state", "replay failed: saving the replay position"],
] as const) {
test(`a secondary whose ${prefix === "log-" ? "log copy" : "replay position file"} failed a write is stalled naming it, opened again, and catches up once its files work (it ${prefix === "log-" ? "fetched and dropped records" : "stayed halted"} until restarted)`, async () => {
  const root = tempDir();
  let source: LogSource | undefined;
  const primaryDisk: StoragePort = createLocalPort(createMemoryBackend(SIZE));
  const primary = new ReplicaNode(replicaConfig("p", path.join(root, "p"), "primary", null), primaryDisk, openLogDirectory(path.join(root, "p")), quiet, (_port, log) => (source = log), { timer: quickTimer, wallMicros: () => Date.now() * 1000, link: () => { throw new Error("the primary has no peer"); } });
  await primary.start();
  const env: ReplicaEnv = {
    timer: quickTimer,
    wallMicros: () => Date.now() * 1000,
    link: () => ({
      transport: (request, done) => {
        if (source === undefined) return done(Errno.ENOTSUP, encodeFetchReason("not a replication primary"));
        source.fetch(request, "s", (answer) => ("payload" in answer ? done(0, answer.payload) : done(answer.status, encodeFetchReason(answer.reason))));
      },
      sync: (_request, _offset, _length, done) => done(Errno.ENOTSUP, null),
      close: () => {},
    }),
  };
  const failing = { on: false, failed: 0 };
  const secondaryDisk: StoragePort = createLocalPort(createMemoryBackend(SIZE));
  const errors: string[] = [];
  const logger: Log = { ...quiet, error: (m: string) => void errors.push(m) };
  const secondary = new ReplicaNode(replicaConfig("s", path.join(root, "s"), "secondary", "p"), secondaryDisk, failingFiles(openLogDirectory(path.join(root, "s")), prefix, failing), logger, () => {}, env);
  await secondary.start();
  try {
    const writeBlocks = async (from: number, count: number) => {
      for (let i = from; i < from + count; i++) await call.write(primary.port, i * 4096, new Uint8Array(4096).fill(i + 1));
      await call.flush(primary.port);
    };
    await writeBlocks(0, 8);
    await until(() => secondary.status().seq >= primary.status().seq, "the secondary to apply the first writes", 10_000);

    failing.on = true;
    await writeBlocks(8, 8);
    await until(() => secondary.status().state === "stalled", "the secondary to report its failed copy", 10_000);
    expect(secondary.status().reason).toContain(named);
    expect(secondary.status().reason).toContain("input/output error");
    expect(secondary.status().reason).toMatch(/opening the secondary again in \d+ s/);
    expect(errors.some((m) => m.includes(named))).toBe(true);

    failing.on = false;
    await writeBlocks(16, 4);
    await until(() => secondary.status().state === "replicating" && secondary.status().seq >= primary.status().seq, "the reopened secondary to catch up", 20_000);
    for (let i = 0; i < 20; i++) {
      const a = new Uint8Array(4096);
      const b = new Uint8Array(4096);
      await call.read(primaryDisk, i * 4096, a);
      await call.read(secondaryDisk, i * 4096, b);
      expect(b[0]).toBe(i + 1);
      expect(Buffer.compare(a, b)).toBe(0);
    }
    expect(failing.failed).toBeGreaterThan(0);
  } finally {
    await secondary.close();
    await primary.close();
  }
}, 40_000);
}

test("a secondary whose copy lost its first segments, not applied yet (a promotion clearing it broken off by an error), starts the copy over at the applier and applies everything fetched again (replay halted for good: cluster simulation seed 53638)", async () => {
  const root = tempDir();
  const primary = await ReplicationPrimary.open(createLocalPort(createMemoryBackend(SIZE)), openLogDirectory(path.join(root, "p")), { logLimit: 64 << 20 });
  for (let i = 0; i < 12; i++) await call.write(primary, i * 4096, new Uint8Array(4096).fill(i + 1));
  await call.flush(primary);
  const reader = new LogReader(primary.store, { seq: 1 });
  const chunk = await new Promise<ReadChunk>((resolve, reject) => reader.read(64 << 20, (e, c) => (e !== null ? reject(new Error(e)) : resolve(c!))));
  await reader.close();
  const clock = { now: () => Date.now() * 1000, after: quickTimer.after };
  const dir = path.join(root, "s");
  const disk = createLocalPort(createMemoryBackend(SIZE));
  const store = async (s: Secondary) => expect(await new Promise<number>((resolve) => expect(s.receive(chunk.bytes, resolve)).toBeNull())).toBe(0);
  let secondary = await Secondary.open(disk, openLogDirectory(dir), { clock, segmentSize: 8192 });
  secondary.applier.pause(); // nothing applied: the copy holds every record
  await store(secondary);
  await secondary.close();
  const segments = fs.readdirSync(dir).filter((n) => n.startsWith("log-")).sort();
  expect(segments.length).toBeGreaterThan(2);
  fs.rmSync(path.join(dir, segments[0]!));
  secondary = await Secondary.open(disk, openLogDirectory(dir), { clock, segmentSize: 8192 });
  expect(secondary.copy.last.seq).toBe(0); // started over at the applier (seq 0), not from a later segment
  await store(secondary);
  await until(() => secondary.applier.status().applied.seq === chunk.records.length || secondary.applier.status().halted !== null, "replay of the refetched copy", 10_000);
  expect(secondary.applier.status().halted).toBeNull();
  const into = new Uint8Array(4096);
  await call.read(disk, 11 * 4096, into);
  expect(into[0]).toBe(12);
  await secondary.close();
  await primary.close();
});
