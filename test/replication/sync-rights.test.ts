/**
 * SYNC and the `replica` right (docs/protocol.md §12): a replica-only client may SYNC (BEGIN
 * registers it, COPY reads the disk's allocated data, holes not sent) and still neither READ
 * nor WRITE; a client without the right gets EPERM; an export without a log ENOTSUP. Real
 * `dstd export` processes, in-process DST clients.
 */
import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DstClient } from "../../src/client/dst-client.ts";
import { generateKeyFile, loadKeyFile } from "../../src/crypto/keys.ts";
import { Errno } from "../../src/lib/errno.ts";
import { SyncKind } from "../../src/wire/dst/constants.ts";
import { decodeFetchReason } from "../../src/wire/dst/fetch.ts";
import { decodeSyncBegin, decodeSyncCopy, encodeSyncRequest } from "../../src/wire/dst/sync.ts";
import { startExport } from "../helpers/binary.ts";

const MiB = 1024 * 1024;
const dir = mkdtempSync(join(tmpdir(), "dstd-sync-rights-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const quiet = { info() {}, warn() {} };
const keyFile = (identity: string) => {
  const path = join(dir, `${identity}.key`);
  writeFileSync(path, generateKeyFile(identity), { mode: 0o600 });
  return path;
};

function sync(client: DstClient, kind: number, offset: number, length: number): Promise<{ status: number; payload: Uint8Array | null }> {
  return new Promise((resolve) =>
    client.submit({ kind: "sync", offset, length, data: encodeSyncRequest({ kind: kind as 1 | 2, keepFrom: 0, chain: 0n, lamport: 0, generation: 0 }) }, (status, payload) => resolve({ status, payload: payload ?? null })),
  );
}

test("a replica-only client SYNCs (BEGIN, COPY without holes) but cannot READ or WRITE; others get EPERM; no log: ENOTSUP", async () => {
  const replicaKey = keyFile("site-b");
  const readerKey = keyFile("reader");
  const writerKey = keyFile("alice");
  const exp = await startExport(["--file", join(dir, "a.img"), "--size", "64MiB", "--log-dir", join(dir, "a.log"), "--key-file", replicaKey, "--key-file", readerKey, "--key-file", writerKey, "--allow", "site-b@127.0.0.1:replica", "--allow", "reader@127.0.0.1:ro", "--allow", "alice@127.0.0.1:rw"]);
  const plain = await startExport(["--file", join(dir, "b.img"), "--size", "64MiB", "--allow", "127.0.0.1:rw"]);
  const open = (port: number, identity: string | null, key?: string) =>
    DstClient.open({ address: { transport: "tcp", host: "127.0.0.1", port }, exportName: "disk", log: quiet, ...(identity !== null ? { auth: { key: loadKeyFile(key!), suites: ["aes-256-gcm"] } } : {}) });
  try {
    // 1 MiB of data at 8 MiB; the rest is a hole.
    const writer = await open(exp.port, "alice", writerKey);
    const data = new Uint8Array(MiB).fill(7);
    await writer.write(8 * MiB, data);
    await writer.flush();
    await writer.close();

    const replica = await open(exp.port, "site-b", replicaKey);
    const begun = await sync(replica, SyncKind.BEGIN, 0, 0);
    expect(begun.status).toBe(0);
    const begin = decodeSyncBegin(begun.payload!);
    if (typeof begin === "string") throw new Error(begin);
    expect(begin.size).toBe(64 * MiB);
    expect(begin.point.seq).toBeGreaterThan(0);
    const copied = await sync(replica, SyncKind.COPY, 0, 64 * MiB);
    expect(copied.status).toBe(0);
    const copy = decodeSyncCopy(copied.payload!, 0, 64 * MiB);
    if (typeof copy === "string") throw new Error(copy);
    expect(copy.end).toBe(64 * MiB);
    expect(copy.runs.map((r) => [r.offset, r.length])).toEqual([[8 * MiB, MiB]]);
    expect(copy.runs[0]!.data.every((b) => b === 7)).toBe(true);
    await expect(replica.read(0, 4096)).rejects.toThrow();
    await expect(replica.write(0, new Uint8Array(4096))).rejects.toThrow();
    await replica.close();

    const reader = await open(exp.port, "reader", readerKey);
    const refused = await sync(reader, SyncKind.BEGIN, 0, 0);
    expect(refused.status).toBe(Errno.EPERM);
    expect(decodeFetchReason(refused.payload!)).toContain('no "replica" allow rule');
    await reader.close();

    const other = await open(plain.port, null);
    const noLog = await sync(other, SyncKind.COPY, 0, MiB);
    expect(noLog.status).toBe(Errno.ENOTSUP);
    await other.close();
  } finally {
    await exp.stop();
    await plain.stop();
  }
}, 60_000);
