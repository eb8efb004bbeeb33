/**
 * @module test/replication/role-errors — role changes and fencing under I/O errors, found by the
 * cluster simulation with data disk and log directory errors (docs/replication.md §8.2). Two
 * ReplicaNodes in one process on real log directories, their disks wrapped to fail on demand:
 * - demote of a primary failed closed over its disk (a write-back refused) is refused: its disk
 *   lacks a logged write, so the applied position at its last record would be a lie (seed 133);
 * - promote --force of a secondary whose replay halted in the middle of records is refused: its
 *   disk holds part of them (seed 3); restarted, it re-applies them and catches up;
 * - fencing: a peer primary that answers EIO ("ask again") is no sign it is not a primary: the
 *   start asks again and then fails, never starting a second primary (seed 1098);
 * - a secondary whose registration failed to save is not answered until it is saved: the log
 *   is released by the saved state, which does not name it (seed 1550);
 * - a planned promote of a secondary that never heard from the primary's log is refused: the
 *   demote drained the secondaries registered, not it, and it took over at seq 0 (seed 34972);
 * - a handover's promote broken off after its generation's MARK was logged (its role file
 *   failed to save): restarted, the node cuts that MARK, which no other node has, so promoted
 *   again the old primary follows it, and abandoned it follows the old primary — neither needs
 *   resync --full (seeds 550, 1221, 1224, docs/replication.md §8.2, §11).
 */
import { expect, test } from "bun:test";
import path from "node:path";
import { Errno } from "../../src/lib/errno.ts";
import { ReplicaNode } from "../../src/daemon/replica-node.ts";
import type { ReplicaEnv } from "../../src/daemon/replica-env.ts";
import type { LogSource } from "../../src/export/fetch.ts";
import { openLogDirectory } from "../../src/replication/files.ts";
import { PRIMARY_STATE_FILE, type ReplicationPrimary } from "../../src/replication/primary.ts";
import { ROLE_FILE } from "../../src/replication/role-file.ts";
import { AWAITING_FIRST_SECONDARY } from "../../src/replication/ship-server.ts";
import { createMemoryBackend } from "../../src/storage/local/memory.ts";
import { createLocalPort } from "../../src/storage/local/port.ts";
import { call, type StoragePort } from "../../src/storage/port.ts";
import { encodeFetchReason, type FetchRequest } from "../../src/wire/dst/fetch.ts";
import { scratchDirsPerTest } from "../helpers/files.ts";
import { until } from "../helpers/wait.ts";
import { failingFiles, quickTimer, quiet, replicaConfig } from "./replica-fixtures.ts";

const tempDir = scratchDirsPerTest("role-errors");
const SIZE = 4 << 20;
const BLOCK = 4096;

/** A disk whose writes fail with EIO while `failing.on` (those at `failing.at` only, when set). */
function failingDisk(failing: { on: boolean; at?: number; failed: number }): StoragePort {
  const port = createLocalPort(createMemoryBackend(SIZE));
  const wrapped = Object.create(port) as StoragePort;
  wrapped.write = (offset, data, fua, done) => {
    if (!failing.on || (failing.at !== undefined && failing.at !== offset)) return port.write(offset, data, fua, done);
    failing.failed++;
    queueMicrotask(() => done(Errno.EIO));
  };
  return wrapped;
}

/** What each node serves: its log (a primary), by name; FETCH goes to the peer's. */
class Net {
  readonly sources = new Map<string, LogSource | undefined>();
  /** Nodes whose FETCHes time out (a cut link). */
  readonly cut = new Set<string>();

  bind(name: string) {
    return (_port: StoragePort, log: LogSource | undefined) => void this.sources.set(name, log);
  }

  env(from: string, to: string): ReplicaEnv {
    return {
      timer: quickTimer,
      wallMicros: () => Date.now() * 1000,
      link: () => ({
        transport: (request, done) => {
          if (this.cut.has(from)) return done(Errno.ETIMEDOUT, null);
          const source = this.sources.get(to);
          if (source === undefined) return done(Errno.ENOTSUP, encodeFetchReason("export disk is not a replication primary"));
          source.fetch(request, from, (answer) => ("payload" in answer ? done(0, answer.payload) : done(answer.status, encodeFetchReason(answer.reason))));
        },
        sync: (_request, _offset, _length, done) => done(Errno.ENOTSUP, null),
        close: () => {},
      }),
    };
  }
}

async function writeBlocks(port: StoragePort, from: number, count: number): Promise<void> {
  for (let i = from; i < from + count; i++) await call.write(port, i * BLOCK, new Uint8Array(BLOCK).fill(i + 1));
  await call.flush(port);
}

async function sameDisks(a: StoragePort, b: StoragePort, blocks: number): Promise<void> {
  for (let i = 0; i < blocks; i++) {
    const x = new Uint8Array(BLOCK);
    const y = new Uint8Array(BLOCK);
    await call.read(a, i * BLOCK, x);
    await call.read(b, i * BLOCK, y);
    expect(y[0]).toBe(i + 1);
    expect(Buffer.compare(x, y)).toBe(0);
  }
}

/** A primary `p` and its secondary `s`, peers of each other, caught up after 4 blocks. */
async function runningPair(root: string, pFailing = { on: false, failed: 0 } as { on: boolean; at?: number; failed: number }, sFailing = { on: false, failed: 0 } as { on: boolean; at?: number; failed: number }) {
  const net = new Net();
  const pDisk = failingDisk(pFailing);
  const sDisk = failingDisk(sFailing);
  const p = new ReplicaNode(replicaConfig("p", path.join(root, "p"), "primary", "s"), pDisk, openLogDirectory(path.join(root, "p")), quiet, net.bind("p"), net.env("p", "s"));
  await p.start();
  const s = new ReplicaNode(replicaConfig("s", path.join(root, "s"), "secondary", "p"), sDisk, openLogDirectory(path.join(root, "s")), quiet, net.bind("s"), net.env("s", "p"));
  await s.start();
  await writeBlocks(p.port, 0, 4);
  await until(() => s.status().seq >= p.status().seq, "the secondary to apply the first writes", 10_000);
  return { net, p, s, pDisk, sDisk };
}

test("demote of a primary failed closed over its disk is refused (it lacks a logged write; a restart replays it)", async () => {
  const failing = { on: false, failed: 0 };
  const { p, s } = await runningPair(tempDir(), failing);
  try {
    failing.on = true;
    await call.write(p.port, 4 * BLOCK, new Uint8Array(BLOCK).fill(5)).catch(() => {});
    await until(() => /write-back/.test(p.status().reason ?? ""), "the primary to fail closed over its disk", 10_000);
    failing.on = false; // the disk works again; the layer refuses writes until restarted
    await until(() => s.status().seq >= p.status().seq, "the secondary to apply the record the disk lost", 10_000);
    await expect(p.demote()).rejects.toThrow(/restart the export first/);
    expect(p.role).toBe("primary");
    expect(failing.failed).toBeGreaterThan(0);
  } finally {
    await s.close();
    await p.close();
  }
}, 30_000);

test("promote --force of a secondary whose replay halted in the middle of records is refused; restarted, it re-applies them", async () => {
  const root = tempDir();
  const failing = { on: false, at: 5 * BLOCK, failed: 0 } as { on: boolean; at?: number; failed: number };
  const { net, p, s, pDisk, sDisk } = await runningPair(root, undefined, failing);
  let again: ReplicaNode | null = null;
  try {
    failing.on = true;
    await writeBlocks(p.port, 4, 4);
    await until(() => s.status().state === "stalled", "the secondary's replay to halt on its disk", 10_000);
    expect(s.status().reason).toContain("replay halted");
    await expect(s.promote(true)).rejects.toThrow(/replay halted .* restart the export/);
    expect(s.role).toBe("secondary");
    // The restart: replay resumes from the saved position over a disk that works.
    failing.on = false;
    await s.close();
    again = new ReplicaNode(replicaConfig("s", path.join(root, "s"), "secondary", "p"), sDisk, openLogDirectory(path.join(root, "s")), quiet, net.bind("s"), net.env("s", "p"));
    await again.start();
    await until(() => again!.status().state === "replicating" && again!.status().seq >= p.status().seq, "the restarted secondary to catch up", 10_000);
    await sameDisks(pDisk, sDisk, 8);
  } finally {
    await again?.close();
    await p.close();
  }
}, 30_000);

test("fencing: a peer primary that answers EIO is asked again, and the start fails rather than start a second primary", async () => {
  const root = tempDir();
  let probes = 0;
  const env: ReplicaEnv = {
    timer: quickTimer,
    wallMicros: () => Date.now() * 1000,
    link: () => ({
      transport: (_request, done) => {
        probes++;
        done(Errno.EIO, encodeFetchReason("secondary p could not be recorded (input/output error (EIO)); ask again"));
      },
      sync: (_request, _offset, _length, done) => done(Errno.ENOTSUP, null),
      close: () => {},
    }),
  };
  let served: LogSource | undefined;
  const p = new ReplicaNode(replicaConfig("p", path.join(root, "p"), "primary", "s"), createLocalPort(createMemoryBackend(SIZE)), openLogDirectory(path.join(root, "p")), quiet, (_port, log) => (served = log), env);
  await expect(p.start()).rejects.toThrow(/is a replication primary but cannot answer/);
  expect(probes).toBeGreaterThan(1);
  expect(served).toBeUndefined(); // never served as a primary
  await p.close();
}, 30_000);

test("a secondary whose registration failed to save is not answered until it is saved", async () => {
  const root = tempDir();
  const failing = { on: false, failed: 0 };
  const net = new Net();
  const p = new ReplicaNode(replicaConfig("p", path.join(root, "p"), "primary", "s"), createLocalPort(createMemoryBackend(SIZE)), failingFiles(openLogDirectory(path.join(root, "p")), PRIMARY_STATE_FILE, failing), quiet, net.bind("p"), net.env("p", "s"));
  await p.start();
  try {
    await writeBlocks(p.port, 0, 2);
    const fetch = () =>
      new Promise<number>((resolve) => {
        const request: FetchRequest = { seq: 1, maxBytes: 1 << 20, segment: 0, offset: 0, applied: 0, prevChain: 0n, prevLamport: 0, prevGeneration: 0 };
        p.log!.fetch(request, "s", (answer) => resolve("payload" in answer ? 0 : answer.status));
      });
    failing.on = true;
    expect(await fetch()).toBe(Errno.EIO); // "could not be recorded; ask again"
    // Its name is in the primary's state now, not in the state on disk: asked again, the
    // FETCH is not answered from the log (it used to be).
    expect(await fetch()).toBe(Errno.EIO);
    expect(failing.failed).toBeGreaterThan(0);
  } finally {
    await p.close();
  }
}, 30_000);

test("a planned promote of a secondary that never heard from the primary's log is refused (it took over at seq 0, losing the log)", async () => {
  const root = tempDir();
  const net = new Net();
  net.cut.add("s"); // the secondary never reaches the primary
  const p = new ReplicaNode(replicaConfig("p", path.join(root, "p"), "primary", "s"), createLocalPort(createMemoryBackend(SIZE)), openLogDirectory(path.join(root, "p")), quiet, net.bind("p"), net.env("p", "s"));
  await p.start();
  const s = new ReplicaNode(replicaConfig("s", path.join(root, "s"), "secondary", "p"), createLocalPort(createMemoryBackend(SIZE)), openLogDirectory(path.join(root, "s")), quiet, net.bind("s"), net.env("s", "p"));
  await s.start();
  try {
    await writeBlocks(p.port, 0, 4);
    // Another secondary, caught up, is the only one registered (its FETCH dropped the placeholder).
    const layer = (p as unknown as { side: { primary: ReplicationPrimary } }).side.primary;
    const last = layer.store.last.seq;
    await new Promise((resolve) => layer.addSecondary("c", last, resolve));
    await new Promise((resolve) => layer.removeSecondary(AWAITING_FIRST_SECONDARY, resolve));
    await p.demote();
    net.cut.delete("s");
    await expect(s.promote(false)).rejects.toThrow(/no answer from it since this node started/);
    expect(s.role).toBe("secondary");
  } finally {
    await s.close();
    await p.close();
  }
}, 30_000);

for (const after of ["promoted again", "abandoned"] as const) {
  test(`a promotion broken off after its MARK leaves no fork: restarted, the node cuts it; ${after}, nothing is copied again`, async () => {
    const root = tempDir();
    const net = new Net();
    const failing = { on: false, failed: 0 };
    const pDisk = createLocalPort(createMemoryBackend(SIZE));
    const sDisk = createLocalPort(createMemoryBackend(SIZE));
    const sDir = () => failingFiles(openLogDirectory(path.join(root, "s")), ROLE_FILE, failing);
    const warnings: string[] = [];
    const sLog = { ...quiet, warn: (message: string) => void warnings.push(message) };
    const p = new ReplicaNode(replicaConfig("p", path.join(root, "p"), "primary", "s"), pDisk, openLogDirectory(path.join(root, "p")), quiet, net.bind("p"), net.env("p", "s"));
    await p.start();
    let s = new ReplicaNode(replicaConfig("s", path.join(root, "s"), "secondary", "p"), sDisk, sDir(), sLog, net.bind("s"), net.env("s", "p"));
    await s.start();
    try {
      await writeBlocks(p.port, 0, 4);
      await until(() => s.status().seq >= p.status().seq, "the secondary to apply the first writes", 10_000);
      const point = p.status().seq;
      await p.demote();
      // The handover's promote: its MARK is durable, then its role file fails to save.
      failing.on = true;
      await expect(s.promote(false)).rejects.toThrow(/input\/output error/);
      expect(s.role).toBe("secondary");
      expect(failing.failed).toBeGreaterThan(0);
      failing.on = false;
      await s.close();
      s = new ReplicaNode(replicaConfig("s", path.join(root, "s"), "secondary", "p"), sDisk, sDir(), sLog, net.bind("s"), net.env("s", "p"));
      await s.start();
      expect(warnings.some((w) => /MARK at seq \d+ that replay had not applied .*: cut; replay stays at seq \d+/.test(w))).toBe(true);
      const side = (s as unknown as { side: { secondary: { copy: { last: { seq: number } }; applier: { status(): { applied: { seq: number } } } } } }).side;
      expect(side.secondary.applier.status().applied.seq).toBe(point);
      expect(side.secondary.copy.last.seq).toBe(point);
      // Promoted again (--force: restarted, it has had no answer from a primary's log since), the
      // old primary follows from its last record; abandoned, the node follows the old primary.
      const [primary, secondary] = after === "promoted again" ? [s, p] : [p, s];
      await primary.promote(true);
      await writeBlocks(primary.port, 4, 4);
      await until(() => secondary.status().seq >= primary.status().seq, `the ${after === "promoted again" ? "old primary" : "broken-off node"} to follow`, 10_000);
      expect(secondary.status().state).toBe("replicating");
      expect(secondary.status().seq).toBe(point + 1 + 4);
      await sameDisks(pDisk, sDisk, 8);
    } finally {
      await s.close();
      await p.close();
    }
  }, 30_000);
}
