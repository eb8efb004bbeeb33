/**
 * Bounds of the DST export against a client that sends what is legal frame by frame but never
 * reads, or resends without end (export/connection.ts, export/requests.ts; docs/security.md
 * "Resource limits"). In process, on a FakeSink whose "kernel" takes a few KiB and then queues
 * (a peer that stopped reading), with the export's deferred work run by hand: each bound is
 * checked to the byte, and another client is served meanwhile.
 */
import { describe, expect, test } from "bun:test";
import type { Export } from "../../src/export/exports.ts";
import { DstServer } from "../../src/export/server.ts";
import { MAX_WAITERS } from "../../src/export/requests.ts";
import { parseAllowRule, type AllowRule } from "../../src/lib/acl.ts";
import { Errno } from "../../src/lib/errno.ts";
import { PassThrough } from "../../src/storage/layers/pass-through.ts";
import { createMemoryBackend } from "../../src/storage/local/memory.ts";
import { createLocalPort } from "../../src/storage/local/port.ts";
import type { Done, StoragePort, ZeroFlags } from "../../src/storage/port.ts";
import { Feature, HEADER_SIZE, Op, PAYLOAD_MAX_DEFAULT, REPLY_BIT } from "../../src/wire/dst/constants.ts";
import { decodeAttrs, encodeHello } from "../../src/wire/dst/handshake.ts";
import { ClientAuth } from "../../src/crypto/dst-auth.ts";
import { decodeHeader, encodeFrame, type Header } from "../../src/wire/dst/header.ts";
import { FakeSink } from "../helpers/fake-sink.ts";

const MiB = 1 << 20;

function rig(port: StoragePort = createLocalPort(createMemoryBackend(64 * MiB))) {
  const deferred: Array<() => void> = [];
  const entry: Export = { name: "disk", description: "", port, readOnly: false, allow: [parseAllowRule("127.0.0.1/32:rw") as AllowRule] };
  const server = new DstServer({ log: { info() {}, warn() {} }, defer: (work) => void deferred.push(work), exports: [entry] });
  const run = () => {
    for (let i = 0; i < 100_000 && deferred.length > 0; i++) deferred.shift()!();
  };
  const connect = (room = Number.POSITIVE_INFINITY) => {
    const sink = new FakeSink(room);
    const conn = server.accept(sink, { transport: "tcp", address: "127.0.0.1", port: 40_000 });
    sink.handler = conn;
    conn.onData(encodeHello({ exportName: "disk", version: 1, clientName: "t", maxPayload: PAYLOAD_MAX_DEFAULT, features: Feature.FLUSH | Feature.TRIM | Feature.WRITE_ZEROES | Feature.SESSIONS, sessionId: null, txidFloor: 0 }));
    run();
    const welcome = replies(sink);
    expect(welcome[0]!.opcode).toBe(Op.WELCOME);
    return { sink, conn };
  };
  return { server, run, connect, entry };
}

/** Reply headers the sink received so far. */
function replies(sink: FakeSink): Header[] {
  const bytes = sink.read();
  const out: Header[] = [];
  for (let at = 0; at + HEADER_SIZE <= bytes.length; ) {
    const header = decodeHeader(bytes, at);
    out.push(header);
    at += HEADER_SIZE + header.payloadLength;
  }
  return out;
}

describe("a client that never reads cannot make the export hold more than its share", () => {
  test("a PING flood: PONGs count against the reply share, the socket is paused, another client is served", () => {
    const { server, run, connect } = rig();
    const { sink, conn } = connect(4096);
    const ping = encodeFrame({ opcode: Op.PING, txid: 0, offset: 0 });
    const chunk = new Uint8Array(ping.length * 1000);
    for (let i = 0; i < 1000; i++) chunk.set(ping, i * ping.length);
    // A transport stops delivering once paused; up to 280 MB of PINGs are offered.
    let offered = 0;
    for (let i = 0; i < 5000 && !sink.paused; i++) {
      conn.onData(chunk);
      offered += chunk.length;
      run();
    }
    expect(sink.paused).toBe(true);
    expect(sink.queuedBytes).toBeLessThanOrEqual(server.limits.connectionReplyBytes + 256 * 1024);
    expect(offered).toBeLessThan(server.limits.connectionReplyBytes + 2 * MiB);
    // Another client: its READ is answered.
    const other = connect();
    other.conn.onData(encodeFrame({ opcode: Op.READ, txid: 1, offset: 0, length: 4096 }));
    run();
    expect(replies(other.sink).map((h) => [h.opcode, h.status])).toEqual([[Op.READ | REPLY_BIT, 0]]);
    // The flooder reads: PONGs flow again, and it is resumed.
    sink.drain();
    run();
    expect(replies(sink).every((h) => h.opcode === Op.PONG)).toBe(true);
  });

  test("one small reply per turn behind a queue pins its bytes, not a 256 KiB batch buffer each", () => {
    const { run, connect } = rig();
    const { sink, conn } = connect(4096);
    for (let i = 0; i < 500; i++) {
      conn.onData(encodeFrame({ opcode: Op.TRIM, txid: i + 1, offset: 0, length: 4096 }));
      run();
    }
    expect(sink.paused).toBe(false);
    expect(sink.queuedBytes).toBeGreaterThan(400 * HEADER_SIZE);
    expect(sink.queuedCapacity).toBeLessThan(2 * sink.queuedBytes + 300 * 1024);
  });

  test("a READ longer than the payload limit gets EINVAL at once, instead of waiting for room for 4 GiB", () => {
    const { run, connect } = rig();
    const { sink, conn } = connect();
    conn.onData(encodeFrame({ opcode: Op.READ, txid: 1, offset: 0, length: 0xffff_ffff }));
    conn.onData(encodeFrame({ opcode: Op.PING, txid: 0, offset: 0 }));
    run();
    expect(replies(sink).map((h) => [h.opcode, h.status])).toEqual([[Op.READ | REPLY_BIT, Errno.EINVAL], [Op.PONG, 0]]);
    expect(sink.paused).toBe(false);
  });
});

describe("resends of a txid still in progress", () => {
  test(`at most ${MAX_WAITERS} copies wait for its completion; 1,000 copies cost no more`, () => {
    let hold: Done | null = null;
    class StuckZero extends PassThrough {
      override zero(_offset: number, _length: number, _flags: ZeroFlags, done: Done): void {
        hold = done;
      }
    }
    const { server, run, connect } = rig(new StuckZero(createLocalPort(createMemoryBackend(64 * MiB))));
    const { sink, conn } = connect();
    const zero = encodeFrame({ opcode: Op.WRITE_ZEROES, txid: 7, offset: 0, length: 4096 });
    const inUse = server.replyBudget.inUse;
    for (let i = 0; i < 1000; i++) conn.onData(zero);
    run();
    expect(hold).not.toBeNull();
    expect(replies(sink)).toEqual([]);
    expect(server.replyBudget.inUse - inUse).toBeLessThanOrEqual((MAX_WAITERS + 1) * HEADER_SIZE);
    hold!(0);
    run();
    const answered = replies(sink);
    expect(answered.length).toBe(MAX_WAITERS + 1);
    expect(answered.every((h) => h.opcode === (Op.WRITE_ZEROES | REPLY_BIT) && h.txid === 7 && h.status === 0)).toBe(true);
    expect(server.replyBudget.inUse).toBe(inUse);
  });
});

describe("a replica role change reaches sessions already admitted", () => {
  test("rebind: the next request goes to the new port; a read-write session goes read-only with the export", () => {
    const disk = createLocalPort(createMemoryBackend(MiB));
    const layer = createLocalPort(createMemoryBackend(MiB)); // stands for the primary layer in front of the disk
    const { server, run, connect, entry } = rig(disk);
    const { sink, conn } = connect();
    const payload = new Uint8Array(4096).fill(5);
    layer.write(0, payload, false, () => {});
    entry.port = layer;
    entry.readOnly = true;
    server.rebind("disk");
    conn.onData(encodeFrame({ opcode: Op.READ, txid: 1, offset: 0, length: 4096 }));
    conn.onData(encodeFrame({ opcode: Op.WRITE, txid: 2, offset: 0, length: 4096 }, payload));
    run();
    const bytes = sink.read();
    const read = decodeHeader(bytes, 0);
    expect([read.opcode, read.status]).toEqual([Op.READ | REPLY_BIT, 0]);
    expect(bytes[HEADER_SIZE]).toBe(5); // from the new port
    const write = decodeHeader(bytes, HEADER_SIZE + read.payloadLength);
    expect([write.opcode, write.status]).toEqual([Op.WRITE | REPLY_BIT, Errno.EPERM]);
  });
});

describe("a replica role change undone", () => {
  test("rebind on the same port: a session read-write at its handshake, made read-only with the export (a demote under way), writes again once the export is writable (the demote failed)", () => {
    const { server, run, connect, entry } = rig(createLocalPort(createMemoryBackend(MiB)));
    const { sink, conn } = connect();
    const payload = new Uint8Array(4096).fill(5);
    const write = (txid: number): number => {
      conn.onData(encodeFrame({ opcode: Op.WRITE, txid, offset: 0, length: 4096 }, payload));
      run();
      return decodeHeader(sink.read(), 0).status;
    };
    entry.readOnly = true;
    server.rebind("disk");
    expect(write(1)).toBe(Errno.EPERM);
    entry.readOnly = false;
    server.rebind("disk");
    expect(write(2)).toBe(0);
  });
});

describe("a connection that ends in the middle of a frame gives its receive memory back", () => {
  test("plain channel: half a 1 MiB WRITE, then the peer is gone: the receive budget is as before", () => {
    const { server, run, connect } = rig();
    const before = server.receiveBudget.inUse;
    for (let i = 0; i < 4; i++) {
      const { sink, conn } = connect();
      const frame = encodeFrame({ opcode: Op.WRITE, txid: 1, offset: 0, length: MiB }, new Uint8Array(MiB).fill(3));
      conn.onData(frame.subarray(0, 64 * 1024)); // spans chunks: gathered into a counted buffer
      run();
      expect(server.receiveBudget.inUse).toBeGreaterThan(before);
      conn.onClose("connection reset");
      sink.destroy();
      run();
      expect(server.receiveBudget.inUse).toBe(before);
    }
  });
  test("sealed channel: half a 1 MiB record, then the peer is gone: the receive budget is as before", () => {
    const secret = new Uint8Array(32).fill(9);
    const deferred: Array<() => void> = [];
    const server = new DstServer({
      log: { info() {}, warn() {} },
      defer: (work) => void deferred.push(work),
      keys: new Map([["alice", [secret]]]),
      exports: [{ name: "disk", description: "", port: createLocalPort(createMemoryBackend(8 * MiB)), readOnly: false, allow: [parseAllowRule("alice@127.0.0.1/32:rw") as AllowRule] }],
    });
    const run = () => {
      while (deferred.length > 0) deferred.shift()!();
    };
    const before = server.receiveBudget.inUse;
    for (let i = 0; i < 4; i++) {
      const sink = new FakeSink();
      const conn = server.accept(sink, { transport: "tcp", address: "127.0.0.1", port: 40_001 });
      sink.handler = conn;
      const auth = new ClientAuth({ identity: "alice", secret: secret.slice() }, ["aes-256-gcm"]);
      const hello = encodeHello({ exportName: "disk", version: 1, clientName: "t", maxPayload: PAYLOAD_MAX_DEFAULT, features: Feature.FLUSH | Feature.SESSIONS, sessionId: null, txidFloor: 0 }, auth.helloAttrs());
      conn.onData(hello);
      run();
      const challenge = sink.read();
      const answer = auth.onChallenge(hello, decodeAttrs(challenge.subarray(HEADER_SIZE)) as Map<number, Uint8Array>);
      if (typeof answer === "string") throw new Error(answer);
      conn.onData(answer.auth);
      run();
      const frame = encodeFrame({ opcode: Op.WRITE, txid: 1, offset: 0, length: MiB }, new Uint8Array(MiB).fill(3));
      const record = answer.channel.records!.sealer.seal([frame], frame.length);
      conn.onData(record.subarray(0, 64 * 1024)); // the record's body buffer comes from the budget
      run();
      expect(server.receiveBudget.inUse).toBeGreaterThan(before);
      conn.onClose("connection reset");
      run();
      expect(server.receiveBudget.inUse).toBe(before);
    }
  });
});
