/**
 * The client engine against an export that answers wrongly or comes back changed, driven
 * without I/O (the engine's EngineIO is a recorder; replies are built by hand):
 *   - a READ reply for another range (short, long, elsewhere) is never used: the connection
 *     is dropped and the READ sent again, so the caller gets the range it asked for;
 *   - an export that restarts smaller drops the replays past its end (logged) instead of
 *     replaying them for ever behind the barrier, and the requests after them complete;
 *   - an automatic FLUSH is not held by MAX_TXID_SPAN (only mutations count, docs/protocol.md §6.5);
 *   - a request that waited for room before it was submitted (Request.since) has that much less
 *     of its deadline: the kernel's io_timeout assumes no request outlives the deadline.
 */
import { expect, test } from "bun:test";
import { computeDigest, type ChecksumName } from "../../src/crypto/checksum.ts";
import { ClientEngine } from "../../src/engine/client-engine.ts";
import { ENGINE_DEFAULTS, type EngineOptions } from "../../src/engine/options.ts";
import { Errno } from "../../src/lib/errno.ts";
import { Feature, Flag, Op, Perm, REPLY_BIT } from "../../src/wire/dst/constants.ts";
import { FrameDecoder } from "../../src/wire/dst/decoder.ts";
import { encodeWelcome } from "../../src/wire/dst/handshake.ts";
import { encodeFrame, type Header } from "../../src/wire/dst/header.ts";

interface Sent {
  connection: number;
  header: Header;
  payload: Uint8Array;
}

function rig(options: Partial<EngineOptions> = {}, checksums: ChecksumName[] = ["none"]) {
  const sent: Sent[] = [];
  const decoders = new Map<number, FrameDecoder>();
  const connects: number[] = [];
  const io = {
    connect: (connection: number) => void connects.push(connection),
    send: (connection: number, bytes: Uint8Array, release?: () => void) => {
      let decoder = decoders.get(connection);
      if (decoder === undefined) decoders.set(connection, (decoder = new FrameDecoder(64 << 20)));
      decoder.push(bytes.slice(), (header, payload) => void sent.push({ connection, header, payload: payload.slice() }));
      release?.();
    },
    close: () => {},
  };
  const warnings: string[] = [];
  const engine = new ClientEngine({ ...ENGINE_DEFAULTS, ...options, exportName: "x", clientName: "t", seed: 1, checksums } as EngineOptions, io, {
    info: () => {},
    warn: (m) => void warnings.push(m),
  });
  /** Connect (the first time, or the reconnect the engine asked for) and hand it `welcome`. */
  const up = (welcome: Uint8Array): number => {
    if (engine.state === "idle") engine.start(0);
    const connection = connects.at(-1)!;
    engine.connected(connection);
    engine.receive(connection, welcome);
    return connection;
  };
  return { engine, sent, connects, warnings, up };
}

const SESSION = new Uint8Array(16).fill(7);
function welcome(size: number, epoch: number, options: { span?: number; checksum?: ChecksumName; maxPayload?: number } = {}): Uint8Array {
  return encodeWelcome({
    size,
    blockMin: 512,
    blockPreferred: 4096,
    maxPayload: options.maxPayload ?? 1 << 20,
    permissions: Perm.READ | Perm.WRITE,
    features: Feature.FLUSH | Feature.FUA | Feature.SESSIONS,
    sessionId: SESSION,
    epoch,
    maxInflight: 64,
    maxTxidSpan: options.span ?? 0,
    checksum: options.checksum ?? "none",
  });
}

function reply(request: Sent, status: number, payload?: Uint8Array, over: Partial<Header> = {}): Uint8Array {
  const h = request.header;
  return encodeFrame({ opcode: h.opcode | REPLY_BIT, txid: h.txid, offset: h.offset, length: payload === undefined ? 0 : h.length, status, flags: 0, ...over }, payload);
}

function withDigest(data: Uint8Array): Uint8Array {
  const payload = new Uint8Array(data.length + 8);
  payload.set(data);
  computeDigest("xxh3", data, payload, data.length);
  return payload;
}

for (const [label, length, offset] of [
  ["short", 512, 0],
  ["long", 8192, 0],
  ["elsewhere", 4096, 4096],
] as const) {
  test(`a ${label} READ reply is not used: the connection is dropped and the READ answered by the next one`, () => {
    const r = rig({}, ["xxh3"]);
    const first = r.up(welcome(1 << 20, 1, { checksum: "xxh3" }));
    const into = new Uint8Array(4096).fill(0xee);
    let status: number | null = null;
    r.engine.submit({ kind: "read", offset: 0, length: 4096, into }, (s) => (status = s));
    const request = r.sent.find((s) => s.header.opcode === Op.READ)!;
    const wrong = new Uint8Array(length).fill(1);
    // A correct digest over the wrong bytes: the checksum alone would not catch it.
    expect(() => r.engine.receive(first, reply(request, 0, withDigest(wrong), { length, offset, flags: Flag.DIGEST }))).not.toThrow();
    expect(status).toBeNull();
    expect(r.warnings.some((w) => w.includes(`is ${offset}/${length}, not 0/4096`)) || r.engine.state !== "ready").toBe(true);
    // The engine reconnects (same session, same epoch) and sends the READ again.
    r.engine.tick(5_000);
    const second = r.up(welcome(1 << 20, 1, { checksum: "xxh3" }));
    expect(second).not.toBe(first);
    const again = r.sent.filter((s) => s.header.opcode === Op.READ && s.connection === second).at(-1)!;
    r.engine.receive(second, reply(again, 0, withDigest(new Uint8Array(4096).fill(2)), { flags: Flag.DIGEST }));
    expect(status as number | null).toBe(0);
    expect(into.every((b) => b === 2)).toBe(true);
  });
}

test("an export that restarted smaller: replays past its end are dropped and named, the FLUSH behind them completes", () => {
  const r = rig({ deadlineMs: 30_000 });
  const first = r.up(welcome(1 << 20, 1));
  let wrote: number | null = null;
  r.engine.submit({ kind: "write", offset: (1 << 20) - 8192, length: 8192, data: new Uint8Array(8192).fill(3) }, (s) => (wrote = s));
  const write = r.sent.find((s) => s.header.opcode === Op.WRITE)!;
  r.engine.receive(first, reply(write, 0));
  expect(wrote as number | null).toBe(0);
  expect(r.engine.replayEntries).toBe(1);
  r.engine.disconnected(first, "export died");
  let flushed: number | null = null;
  r.engine.submit({ kind: "flush", offset: 0, length: 0 }, (s) => (flushed = s));
  // It comes back (new epoch) 4 KiB smaller: the write's second half lies past its end.
  let connection = first;
  for (let now = 50; now < 60_000 && flushed === null; now += 50) {
    r.engine.tick(now);
    if (r.engine.state !== "connecting") continue;
    connection = r.up(welcome((1 << 20) - 4096, 2));
    for (const s of r.sent.filter((x) => x.connection === connection && x.header.opcode !== Op.HELLO)) {
      const fits = s.header.opcode !== Op.WRITE || s.header.offset + s.header.length <= (1 << 20) - 4096;
      r.engine.receive(connection, reply(s, fits ? 0 : Errno.ENOSPC));
    }
  }
  expect(flushed as number | null).toBe(0);
  const replays = r.sent.filter((s) => s.connection !== first && s.header.opcode === Op.WRITE);
  expect(replays.map((s) => [s.header.offset, s.header.length])).toEqual([[(1 << 20) - 8192, 4096]]);
  expect(r.warnings.some((w) => w.includes("4096 bytes of acknowledged, unflushed writes past its end cannot be replayed and are lost"))).toBe(true);
  expect(r.engine.state).toBe("ready");
});

test("an export that restarted with a smaller largest payload gets the replays cut to it", () => {
  const r = rig();
  const first = r.up(welcome(1 << 20, 1));
  r.engine.submit({ kind: "write", offset: 0, length: 65536, data: new Uint8Array(65536).fill(4) }, () => {});
  r.engine.receive(first, reply(r.sent.find((s) => s.header.opcode === Op.WRITE)!, 0));
  r.engine.disconnected(first, "export died");
  r.engine.tick(5_000);
  const second = r.up(welcome(1 << 20, 2, { maxPayload: 16384 }));
  const replays = r.sent.filter((s) => s.connection === second && s.header.opcode === Op.WRITE);
  expect(replays.map((s) => [s.header.offset, s.header.length])).toEqual([
    [0, 16384],
    [16384, 16384],
    [32768, 16384],
    [49152, 16384],
  ]);
  expect(replays.every((s) => s.payload.every((b) => b === 4))).toBe(true);
});

test("an automatic FLUSH is not held by MAX_TXID_SPAN: every write behind it completes", () => {
  const r = rig({ replayBufferBytes: 64 * 1024, inflight: 4, deadlineMs: 5_000 });
  const connection = r.up(welcome(1 << 20, 1, { span: 8 }));
  const statuses: number[] = [];
  for (let i = 0; i < 20; i++) r.engine.submit({ kind: "write", offset: i * 4096, length: 4096, data: new Uint8Array(4096).fill(i) }, (s) => void statuses.push(s));
  const answered = new Set<number>();
  for (let now = 50; now < 4_000; now += 50) {
    for (const s of r.sent) {
      if (answered.has(s.header.txid) || s.header.opcode === Op.PING || s.header.opcode === Op.HELLO) continue;
      answered.add(s.header.txid);
      r.engine.receive(connection, reply(s, 0));
    }
    r.engine.tick(now);
  }
  expect(statuses).toHaveLength(20);
  expect(statuses.every((s) => s === 0)).toBe(true);
});

test("a request's deadline counts from when the caller took it (since), not from submit", () => {
  const r = rig({ deadlineMs: 10_000 });
  const connection = r.up(welcome(1 << 20, 1));
  let early: number | null = null;
  let fresh: number | null = null;
  // Waited 9 s for room already: 1 s of its deadline is left. A fresh one has all 10 s.
  r.engine.submit({ kind: "read", offset: 0, length: 4096, into: new Uint8Array(4096), since: -9_000 }, (s) => (early = s));
  r.engine.submit({ kind: "read", offset: 4096, length: 4096, into: new Uint8Array(4096) }, (s) => (fresh = s));
  expect(r.sent.filter((s) => s.header.opcode === Op.READ && s.connection === connection)).toHaveLength(2);
  for (let now = 100; now <= 1_500; now += 100) r.engine.tick(now); // the export never answers
  expect(early as number | null).toBe(Errno.ETIMEDOUT);
  expect(fresh).toBeNull();
});
