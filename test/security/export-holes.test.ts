/**
 * Issue "Close the holes", items 1, 2, 4 and the DST side of 8, against the compiled binary
 * over real sockets: each attack is refused or bounded, and a well-behaved client keeps
 * working. Figures (RSS growth, wait of the other client) are printed for the closing note.
 *
 * - Session hijack: another identity, a holder of the same key without the session's secret,
 *   a read-only identity, or another anonymous client cannot resume a session whose id it
 *   knows; the victim's copy finishes with every byte in place and its connection survives.
 * - A resend under a used txid with other data is refused (EPROTO), never acknowledged.
 * - READ amplification: 20 × 32 MiB READs in one send, and 100,000 small READs in one send,
 *   from clients that do not read, grow the export by a bounded amount.
 * - Exactly-once growth: mutations past the session's bound are refused with EOVERFLOW.
 * - Export names cannot be probed by an authenticating client without a valid key.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DstClient } from "../../src/client/dst-client.ts";
import { generateKeyFile, loadKeyFile, type KeyMaterial } from "../../src/crypto/keys.ts";
import { Errno } from "../../src/lib/errno.ts";
import { Op, PAYLOAD_MAX_DEFAULT, REPLY_BIT } from "../../src/wire/dst/constants.ts";
import { encodeFrame } from "../../src/wire/dst/header.ts";
import { startExport, type RunningExport } from "../helpers/binary.ts";
import { RawDst } from "../helpers/dst-raw.ts";

const MiB = 1024 * 1024;
const dir = mkdtempSync(join(tmpdir(), "dstd-holes-"));
const keys: Record<string, KeyMaterial> = {};
const keyFiles: string[] = [];
for (const identity of ["alice", "mallory", "reader"]) {
  const path = join(dir, `${identity}.key`);
  writeFileSync(path, generateKeyFile(identity), { mode: 0o600 });
  keys[identity] = loadKeyFile(path);
  keyFiles.push("--key-file", path);
}

let exp: RunningExport;
const quiet = { info() {}, warn() {} };

function rssKiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]);
}

beforeAll(async () => {
  exp = await startExport([
    "--memory", "1GiB",
    ...keyFiles,
    "--allow", "alice@127.0.0.1/32:rw",
    "--allow", "mallory@127.0.0.1/32:rw",
    "--allow", "reader@127.0.0.1/32:ro",
    "--allow", "127.0.0.1/32:rw",
  ]);
});

afterAll(async () => {
  if (process.env.SHOW_EXPORT_LOG) console.log(exp.log().slice(-4000));
  await exp.stop();
  rmSync(dir, { recursive: true, force: true });
});

function client(identity: string | null): Promise<DstClient> {
  return DstClient.open({
    address: { transport: "tcp", host: "127.0.0.1", port: exp.port },
    exportName: "disk",
    log: quiet,
    ...(identity ? { auth: { key: keys[identity]!, suites: ["aes-256-gcm"] } } : {}),
  });
}

function pattern(seed: number, length: number): Uint8Array {
  const data = new Uint8Array(length);
  for (let i = 0; i < length; i += 4) data[i] = (seed * 31 + i / 4) & 0xff;
  return data;
}

/** Try to resume `sessionId` as `identity` (raw client, no proof of the session's secret). */
async function hijack(sessionId: Uint8Array, identity: string | null, token: Uint8Array | null = null) {
  const raw = await RawDst.connect(exp.port);
  const answer = await raw.handshake(
    { exportName: "disk", sessionId, txidFloor: 1_000_000, ...(token ? { resumeToken: token } : {}) },
    identity ? { key: keys[identity]! } : {},
  );
  raw.close();
  return answer;
}

describe("sessions belong to the identity that made them", () => {
  test("another identity, the same key without the session's secret, a read-only identity: all refused; the victim's copy is intact", async () => {
    const alice = await client("alice");
    const sessionId = alice.engine.welcome!.sessionId;
    const chunks = 16;
    const writes: Promise<void>[] = [];
    for (let i = 0; i < chunks; i++) writes.push(alice.write(i * MiB, pattern(i, MiB)));
    // While alice writes, three attackers who know her session id try to take it over.
    const attempts = await Promise.all([hijack(sessionId, "mallory"), hijack(sessionId, "alice"), hijack(sessionId, "reader")]);
    for (const attempt of attempts) {
      expect(attempt.ok).toBe(false);
      if (!attempt.ok) {
        expect(attempt.status).toBe(Errno.ESTALE);
        expect(attempt.message).toMatch(/cannot resume session [0-9a-f]{8}: /);
      }
    }
    const messages = attempts.map((a) => (a.ok ? "" : a.message));
    expect(messages[0]).toContain("it belongs to another identity");
    expect(messages[1]).toContain("did not prove the session's resumption key");
    expect(messages[2]).toContain("it belongs to another identity");
    await Promise.all(writes);
    await alice.flush();
    // The victim's connection was never disturbed, and every chunk is on the disk.
    expect(alice.engine.counters.reconnects).toBe(0);
    for (let i = 0; i < chunks; i++) expect(Buffer.from(await alice.read(i * MiB, MiB)).equals(pattern(i, MiB))).toBe(true);
    await alice.close();
    expect(exp.log()).toMatch(/refused: cannot resume session/);
  }, 60_000);

  test("an anonymous session needs its resumption token; the rightful client still resumes", async () => {
    const victim = await RawDst.connect(exp.port);
    const made = await victim.handshake({ exportName: "disk" });
    expect(made.ok).toBe(true);
    if (!made.ok) return;
    expect(made.welcome.resumeToken?.length).toBe(32);
    const sessionId = made.welcome.sessionId;
    const wrong = await hijack(sessionId, null, new Uint8Array(32).fill(7));
    expect(wrong.ok).toBe(false);
    if (!wrong.ok) expect(wrong.message).toContain("the resumption token does not match");
    const none = await hijack(sessionId, null);
    expect(none.ok).toBe(false);
    // The victim's connection is still served after both attempts.
    await victim.sendFrames(encodeFrame({ opcode: Op.PING, txid: 0, offset: 1 }));
    expect((await victim.next()).header.opcode).toBe(Op.PONG);
    // A keyholder's session cannot be taken over anonymously either.
    const alice = await client("alice");
    const anonymous = await hijack(alice.engine.welcome!.sessionId, null);
    expect(anonymous.ok).toBe(false);
    if (!anonymous.ok) expect(anonymous.message).toContain("different kind of authentication");
    await alice.close();
    // The rightful owner resumes with its token.
    const again = await RawDst.connect(exp.port);
    const resumed = await again.handshake({ exportName: "disk", sessionId, resumeToken: made.welcome.resumeToken!, txidFloor: 1 });
    expect(resumed.ok && Buffer.from(resumed.welcome.sessionId).equals(Buffer.from(sessionId))).toBe(true);
    again.close();
    victim.close();
  }, 60_000);

  test("a late handshake of an older connection is refused (EALREADY); the newer connection keeps its session", async () => {
    const first = await RawDst.connect(exp.port);
    const made = await first.handshake({ exportName: "disk", connectionSeq: 1 });
    expect(made.ok).toBe(true);
    if (!made.ok) return;
    const session = { exportName: "disk", sessionId: made.welcome.sessionId, resumeToken: made.welcome.resumeToken!, txidFloor: 1 };
    const newer = await RawDst.connect(exp.port);
    const taken = await newer.handshake({ ...session, connectionSeq: 3 });
    expect(taken.ok).toBe(true); // a newer connection takes over (and fences the first)
    const late = await RawDst.connect(exp.port);
    const refused = await late.handshake({ ...session, connectionSeq: 2 });
    expect(refused).toMatchObject({ ok: false, status: Errno.EALREADY });
    if (!refused.ok) expect(refused.message).toMatch(/stale handshake for session [0-9a-f]{8}: connection 2 is not newer than connection 3/);
    const replayed = await RawDst.connect(exp.port);
    expect(await replayed.handshake({ ...session, connectionSeq: 3 })).toMatchObject({ ok: false, status: Errno.EALREADY });
    // The newer connection is still served: nothing was fenced by the late ones.
    await newer.sendFrames(encodeFrame({ opcode: Op.PING, txid: 0, offset: 1 }));
    expect((await newer.next()).header.opcode).toBe(Op.PONG);
    for (const c of [first, newer, late, replayed]) c.close();
  }, 60_000);

  test("a resend under a used txid with other data is refused loudly; the applied data stays", async () => {
    const raw = await RawDst.connect(exp.port);
    const made = await raw.handshake({ exportName: "disk" });
    if (!made.ok) throw new Error(made.message);
    const offset = 900 * MiB;
    const first = pattern(1, 4096);
    await raw.sendFrames(encodeFrame({ opcode: Op.WRITE, txid: 5, offset, length: 4096 }, first));
    expect((await raw.next()).header.status).toBe(0);
    raw.close();
    // Reconnect into the same session (with its token) and reuse txid 5 for other data.
    const again = await RawDst.connect(exp.port);
    const resumed = await again.handshake({
      exportName: "disk",
      sessionId: made.welcome.sessionId,
      resumeToken: made.welcome.resumeToken!,
      txidFloor: 5,
    });
    expect(resumed.ok).toBe(true);
    await again.sendFrames(encodeFrame({ opcode: Op.WRITE, txid: 5, offset, length: 4096 }, pattern(2, 4096)));
    const refused = await again.next();
    expect(refused.header.opcode).toBe(Op.WRITE | REPLY_BIT);
    expect(refused.header.status).toBe(Errno.EPROTO);
    // The true resend is answered from the table (not applied twice), and the data is the first.
    await again.sendFrames(encodeFrame({ opcode: Op.WRITE, txid: 5, offset, length: 4096 }, first));
    expect((await again.next()).header.status).toBe(0);
    await again.sendFrames(encodeFrame({ opcode: Op.READ, txid: 6, offset, length: 4096 }));
    const read = await again.next();
    expect(Buffer.from(read.payload).equals(Buffer.from(first))).toBe(true);
    again.close();
    expect(exp.log()).toContain("txid 5 reused for a different request");
  }, 60_000);
});

describe("no client can make the export allocate without bound", () => {
  test("20 READs of 32 MiB in one send from a client that never reads: bounded growth, others served", async () => {
    const before = rssKiB(exp.process.pid);
    const hostile = await RawDst.connect(exp.port);
    const made = await hostile.handshake({ exportName: "disk" });
    expect(made.ok).toBe(true);
    hostile.pause(); // from now on it reads nothing
    const reads: Uint8Array[] = [];
    for (let i = 0; i < 20; i++) reads.push(encodeFrame({ opcode: Op.READ, txid: i + 1, offset: i * 32 * MiB, length: PAYLOAD_MAX_DEFAULT }));
    await hostile.sendFrames(...reads);
    await Bun.sleep(500);
    const other = await client(null);
    const started = performance.now();
    await other.write(1000 * MiB, pattern(3, 64 * 1024));
    expect(Buffer.from(await other.read(1000 * MiB, 64 * 1024)).equals(pattern(3, 64 * 1024))).toBe(true);
    const waited = performance.now() - started;
    const grown = (rssKiB(exp.process.pid) - before) / 1024;
    console.log(`20 × 32 MiB READs, reader stopped: export grew ${grown.toFixed(0)} MiB; another client's write+read took ${waited.toFixed(0)} ms`);
    expect(grown).toBeLessThan(160);
    await other.close();
    hostile.close();
  }, 60_000);

  test("100,000 small READs in one send from a client that never reads: bounded growth, others served", async () => {
    const before = rssKiB(exp.process.pid);
    const hostile = await RawDst.connect(exp.port);
    expect((await hostile.handshake({ exportName: "disk" })).ok).toBe(true);
    hostile.pause();
    const frames: Uint8Array[] = [];
    for (let i = 0; i < 100_000; i++) frames.push(encodeFrame({ opcode: Op.READ, txid: i + 1, offset: (i % 1024) * 4096, length: 4096 }));
    await hostile.sendFrames(...frames);
    await Bun.sleep(500);
    const other = await client(null);
    const started = performance.now();
    await other.read(0, 4096);
    const waited = performance.now() - started;
    const grown = (rssKiB(exp.process.pid) - before) / 1024;
    console.log(`100,000 × 4 KiB READs in one send: export grew ${grown.toFixed(0)} MiB; another client's read took ${waited.toFixed(0)} ms`);
    expect(grown).toBeLessThan(160);
    await other.close();
    hostile.close();
  }, 60_000);

  test("mutations that never let the txid floor advance are refused past the session's bound", async () => {
    const raw = await RawDst.connect(exp.port);
    const made = await raw.handshake({ exportName: "disk" });
    if (!made.ok) throw new Error(made.message);
    const span = made.welcome.maxTxidSpan!;
    expect(span).toBeGreaterThan(0);
    const frames: Uint8Array[] = [];
    for (let i = 0; i < span + 100; i++) frames.push(encodeFrame({ opcode: Op.WRITE, txid: i + 1, offset: 0, length: 0 }, new Uint8Array(0)));
    await raw.sendFrames(...frames);
    const statuses = new Map<number, number>();
    while (statuses.size < span + 100) {
      const reply = await raw.next();
      statuses.set(reply.header.txid, reply.header.status);
    }
    expect(statuses.get(1)).toBe(0);
    expect(statuses.get(span)).toBe(0);
    expect(statuses.get(span + 1)).toBe(Errno.EOVERFLOW);
    expect(statuses.get(span + 100)).toBe(Errno.EOVERFLOW);
    // Advancing the floor (PING carries it) makes room again.
    await raw.sendFrames(
      encodeFrame({ opcode: Op.PING, txid: 0, offset: span + 101 }),
      encodeFrame({ opcode: Op.WRITE, txid: span + 101, offset: 0, length: 0 }, new Uint8Array(0)),
    );
    expect((await raw.next()).header.opcode).toBe(Op.PONG);
    expect((await raw.next()).header.status).toBe(0);
    raw.close();
    expect(exp.log()).toContain("its txid floor does not advance");
  }, 60_000);
});

describe("the end-to-end digest cannot be left out", () => {
  test("with a checksum in force, a WRITE without its digest is answered EBADMSG and not applied", async () => {
    const reader = await client(null);
    const before = await reader.read(900 * MiB, 4096);
    const raw = await RawDst.connect(exp.port);
    const made = await raw.handshake({ exportName: "disk" }, { checksums: ["xxh3"] });
    if (!made.ok) throw new Error(made.message);
    expect(made.welcome.checksum).toBe("xxh3");
    const data = new Uint8Array(4096).fill(0x5a);
    await raw.sendFrames(encodeFrame({ opcode: Op.WRITE, txid: 1, offset: 900 * MiB, length: data.length }, data));
    const reply = await raw.next();
    expect(reply.header.status).toBe(Errno.EBADMSG);
    raw.close();
    expect(exp.log()).toContain("no data checksum, though xxh3 is in force; not applied");
    expect(Buffer.compare(await reader.read(900 * MiB, 4096), before)).toBe(0);
    expect(before.every((b) => b === 0x5a)).toBe(false);
    await reader.close();
  }, 30_000);
});

describe("export names cannot be probed", () => {
  test("an unknown name and a known one look the same to a client without a valid key", async () => {
    const stranger: KeyMaterial = { identity: "alice", secret: new Uint8Array(32).fill(9) };
    const known = await RawDst.connect(exp.port);
    const a = await known.handshake({ exportName: "disk" }, { key: stranger });
    const unknown = await RawDst.connect(exp.port);
    const b = await unknown.handshake({ exportName: "no-such-export" }, { key: stranger });
    expect(a).toEqual(b);
    known.close();
    unknown.close();
    // A client that proved its key learns that the name does not exist.
    const alice = await RawDst.connect(exp.port);
    const c = await alice.handshake({ exportName: "no-such-export" }, { key: keys.alice! });
    expect(c.ok).toBe(false);
    if (!c.ok) expect(c.status).toBe(Errno.ENOENT);
    alice.close();
  }, 60_000);
});
