/**
 * The kernel-facing NBD server without a kernel: a client that behaves like Linux's nbd driver
 * (drivers/block/nbd.c) drives the daemon side of `dstd attach` — NbdConnection in kernel mode
 * over an engine-backed target (storage/remote/engine-port.ts) talking through the real client
 * engine (DstClient) to an in-process DstServer over a Unix socket. Both socketpair ends are
 * driven by transport/fd.ts, as in the daemon.
 *
 * What the fake kernel does like the real one: no handshake; 8-byte cookies (cmd_cookie in the
 * high 32 bits, the tag in the low ones, so every byte must be echoed); header and payload as
 * separate writes, large payloads in pieces; simple replies only (a structured reply is a
 * protocol error); after its socket dies, it requeues unanswered requests onto the next socket
 * with a bumped cookie; NBD_CMD_DISC on disconnect, after which the server closes.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createMemoryBackend } from "../../src/storage/local/memory.ts";
import { createLocalPort } from "../../src/storage/local/port.ts";
import { DstClient } from "../../src/client/dst-client.ts";
import { createEnginePort } from "../../src/storage/remote/engine-port.ts";
import { parseAllowRule, type AllowRule } from "../../src/lib/acl.ts";
import { Errno } from "../../src/lib/errno.ts";
import { DstServer } from "../../src/export/server.ts";
import { NbdConnection } from "../../src/nbd/connection.ts";
import type { StoragePort } from "../../src/storage/port.ts";
import { closeFd, socketPair } from "../../src/sys/libc.ts";
import { adoptFd, type AdoptedFd } from "../../src/transport/fd.ts";
import { listen, type Listener } from "../../src/transport/tcp.ts";
import type { ConnectionHandler, Sink } from "../../src/transport/types.ts";
import { Cmd, CmdFlag, REQUEST_MAGIC, SIMPLE_REPLY_MAGIC } from "../../src/wire/nbd/constants.ts";
import { recordingLog } from "../helpers/log.ts";

const MiB = 1 << 20;
const SIZE = 16 * MiB;

interface Reply {
  error: number;
  data: Uint8Array | null;
}
interface Sent {
  type: number;
  flags: number;
  offset: number;
  length: number;
  data?: Uint8Array;
  resolve: (reply: Reply) => void;
}

/** The kernel's side of one socket: sends requests, parses simple replies only. */
class FakeKernel implements ConnectionHandler {
  sink!: Sink;
  readonly outstanding = new Map<bigint, Sent>();
  /** Protocol violations seen (structured replies, unknown cookies, bad magic). */
  readonly violations: string[] = [];
  closeReason: string | null | undefined = undefined;
  private buffer = new Uint8Array(0);
  private cmdCookie: number;
  private tag = 0;

  constructor(firstCmdCookie: number) {
    this.cmdCookie = firstCmdCookie;
  }

  submit(type: number, offset: number, length: number, options: { data?: Uint8Array; flags?: number } = {}): Promise<Reply> {
    return new Promise((resolve) => this.send({ type, offset, length, flags: options.flags ?? 0, data: options.data, resolve }));
  }

  /** Send (or re-send after a requeue) with a fresh cookie, as nbd_send_cmd bumps cmd_cookie. */
  send(request: Sent): void {
    const cookie = (BigInt(this.cmdCookie++ >>> 0) << 32n) | BigInt(this.tag++ & 0xffff);
    this.outstanding.set(cookie, request);
    const header = new Uint8Array(28);
    const view = new DataView(header.buffer);
    view.setUint32(0, REQUEST_MAGIC);
    view.setUint16(4, request.flags);
    view.setUint16(6, request.type);
    view.setBigUint64(8, cookie);
    view.setBigUint64(16, BigInt(request.offset));
    view.setUint32(24, request.length);
    this.sink.write(header);
    // The kernel sends the bio's pages after the header: here in 128 KiB pieces.
    const data = request.data;
    if (data !== undefined) for (let at = 0; at < data.length; at += 128 * 1024) this.sink.write(data.subarray(at, at + 128 * 1024));
  }

  disconnect(): void {
    this.send({ type: Cmd.DISC, flags: 0, offset: 0, length: 0, resolve: () => this.violations.push("the server answered NBD_CMD_DISC") });
  }

  /** What the kernel requeues when this socket dies: everything unanswered (DISC excluded). */
  takeUnanswered(): Sent[] {
    const list = [...this.outstanding.values()].filter((r) => r.type !== Cmd.DISC);
    this.outstanding.clear();
    return list;
  }

  onData(chunk: Uint8Array): void {
    const joined = new Uint8Array(this.buffer.length + chunk.length); // test code: clarity over speed
    joined.set(this.buffer);
    joined.set(chunk, this.buffer.length);
    this.buffer = joined;
    for (;;) {
      if (this.buffer.length < 16) return;
      const view = new DataView(this.buffer.buffer, this.buffer.byteOffset, this.buffer.byteLength);
      const magic = view.getUint32(0);
      if (magic !== SIMPLE_REPLY_MAGIC) {
        this.violations.push(`reply magic 0x${magic.toString(16)} (the kernel accepts only simple replies)`);
        this.sink.destroy();
        return;
      }
      const cookie = view.getBigUint64(8);
      const request = this.outstanding.get(cookie);
      if (request === undefined) {
        this.violations.push(`reply for unknown cookie 0x${cookie.toString(16)}`);
        this.sink.destroy();
        return;
      }
      const error = view.getUint32(4);
      const dataLength = request.type === Cmd.READ && error === 0 ? request.length : 0;
      if (this.buffer.length < 16 + dataLength) return;
      this.outstanding.delete(cookie);
      request.resolve({ error, data: dataLength > 0 ? this.buffer.slice(16, 16 + dataLength) : null });
      this.buffer = this.buffer.subarray(16 + dataLength);
    }
  }

  onDrain(): void {}

  onClose(reason: string | null): void {
    this.closeReason = reason;
  }
}

interface Pair {
  kernel: FakeKernel;
  kernelEnd: AdoptedFd;
  daemonEnd: AdoptedFd;
}

/** One socketpair: the daemon end served like kernel-attach.ts does, the other end a fake kernel. */
async function pair(target: StoragePort, access: "ro" | "rw", firstCmdCookie: number, afterDaemonData?: (bytes: number) => void): Promise<Pair> {
  const [a, b] = socketPair();
  const peer = { transport: "unix" as const, address: "kernel:test", port: 0 };
  let received = 0;
  const daemonEnd = await adoptFd(a, (sink) => {
    const connection = new NbdConnection(sink, peer, { mode: "kernel", exportName: "disk", resolve: () => ({ target, access }), list: () => [], log: recordingLog() });
    return {
      onData(chunk) {
        connection.onData(chunk); // requests go into the engine synchronously
        received += chunk.length;
        afterDaemonData?.(received);
      },
      onDrain: () => connection.onDrain(),
      onClose: (reason) => connection.onClose(reason),
    };
  });
  const kernel = new FakeKernel(firstCmdCookie);
  const kernelEnd = await adoptFd(b, (sink) => {
    kernel.sink = sink;
    return kernel;
  });
  return { kernel, kernelEnd, daemonEnd };
}

function pattern(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed | 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

function rules(...texts: string[]): AllowRule[] {
  return texts.map((t) => {
    const rule = parseAllowRule(t);
    if (typeof rule === "string") throw new Error(rule);
    return rule;
  });
}

const dir = mkdtempSync(join(tmpdir(), "dstd-kernel-client-"));
const socketPath = join(dir, "dst.sock");
const disk = createMemoryBackend(SIZE);
const server = new DstServer({
  log: recordingLog(),
  exports: [
    { name: "disk", description: "", port: createLocalPort(disk), readOnly: false, allow: rules("unix:rw") },
    { name: "ro", description: "", port: createLocalPort(createMemoryBackend(MiB)), readOnly: true, allow: rules("unix:rw") },
  ],
});
let listener: Listener;
let client: DstClient;
let target: StoragePort;

beforeAll(async () => {
  listener = await listen([{ transport: "unix", path: socketPath }], server.accept);
  client = await DstClient.open({ address: { transport: "unix", path: socketPath }, exportName: "disk", log: recordingLog(), deadlineMs: 10_000 });
  target = createEnginePort(client, "kernel-client test");
});
afterAll(async () => {
  await client.close();
  await listener.close();
  rmSync(dir, { recursive: true, force: true });
});

describe("kernel-mode NBD over a socketpair, through the engine to a DST export", () => {
  test("pipelined writes (FUA too), FLUSH, reads: 8-byte cookies echoed, simple replies only, data on the export", async () => {
    const { kernel, kernelEnd } = await pair(target, "rw", 0xfffffff0); // cookies cross 2^32 boundaries
    const data = pattern(2 * MiB, 7);
    const writes = [];
    for (let i = 0; i < 16; i++) {
      const piece = data.subarray(i * 128 * 1024, (i + 1) * 128 * 1024);
      writes.push(kernel.submit(Cmd.WRITE, MiB + i * 128 * 1024, piece.length, { data: piece, flags: i % 4 === 0 ? CmdFlag.FUA : 0 }));
    }
    const big = pattern(MiB, 9);
    writes.push(kernel.submit(Cmd.WRITE, 4 * MiB, big.length, { data: big }));
    expect((await Promise.all(writes)).map((r) => r.error)).toEqual(new Array(17).fill(0));
    expect((await kernel.submit(Cmd.FLUSH, 0, 0)).error).toBe(0);

    const stored = new Uint8Array(data.length);
    disk.read(MiB, stored);
    expect(Buffer.from(stored).equals(Buffer.from(data))).toBe(true);
    const reads = await Promise.all([kernel.submit(Cmd.READ, MiB, data.length), kernel.submit(Cmd.READ, 4 * MiB, big.length), kernel.submit(Cmd.READ, 0, 4096)]);
    expect(Buffer.from(reads[0]!.data!).equals(Buffer.from(data))).toBe(true);
    expect(Buffer.from(reads[1]!.data!).equals(Buffer.from(big))).toBe(true);
    expect(reads[2]!.data).toEqual(new Uint8Array(4096));
    expect(kernel.violations).toEqual([]);
    kernelEnd.terminate();
  });

  test("TRIM and WRITE_ZEROES reach the export; a request past the end fails with EINVAL, the connection stays", async () => {
    const { kernel, kernelEnd } = await pair(target, "rw", 1);
    const ones = new Uint8Array(64 * 1024).fill(0xab);
    expect((await kernel.submit(Cmd.WRITE, 8 * MiB, ones.length, { data: ones })).error).toBe(0);
    expect((await kernel.submit(Cmd.WRITE_ZEROES, 8 * MiB, 16 * 1024)).error).toBe(0);
    expect((await kernel.submit(Cmd.TRIM, 8 * MiB + 32 * 1024, 32 * 1024)).error).toBe(0);
    const back = await kernel.submit(Cmd.READ, 8 * MiB, ones.length);
    expect(back.data!.subarray(0, 16 * 1024)).toEqual(new Uint8Array(16 * 1024));
    expect(back.data!.subarray(16 * 1024, 32 * 1024)).toEqual(new Uint8Array(16 * 1024).fill(0xab));
    const past = await kernel.submit(Cmd.READ, SIZE - 4096, 8192);
    expect(past.error).toBe(Errno.EINVAL);
    expect((await kernel.submit(Cmd.READ, 0, 512)).error).toBe(0);
    expect(kernel.violations).toEqual([]);
    kernelEnd.terminate();
  });

  test("the serving end dies with requests in flight: the kernel requeues them on a new socket, all are served once", async () => {
    const data = pattern(4 * MiB, 21);
    const requestBytes = 32 * (28 + 128 * 1024) + 28;
    let killedWithInFlight = -1;
    // The daemon dies the moment it has read every request (all in the engine, none answered yet).
    const first: Pair = await pair(target, "rw", 100, (bytes) => {
      if (bytes < requestBytes || killedWithInFlight >= 0) return;
      killedWithInFlight = client.engine.outstanding;
      first.daemonEnd.terminate();
    });
    const results: Array<Promise<Reply>> = [];
    for (let i = 0; i < 32; i++) {
      const piece = data.subarray(i * 128 * 1024, (i + 1) * 128 * 1024);
      results.push(first.kernel.submit(Cmd.WRITE, 10 * MiB + i * 128 * 1024, piece.length, { data: piece }));
    }
    results.push(first.kernel.submit(Cmd.READ, MiB, 4096));
    await first.kernelEnd.closed;
    expect(killedWithInFlight).toBeGreaterThan(0); // the engine held requests whose answers now go nowhere
    const requeued = first.kernel.takeUnanswered();
    expect(requeued.length).toBeGreaterThanOrEqual(killedWithInFlight); // those at least never got an answer

    // A restarted daemon's socket (RECONFIGURE): the same requests, new cookies.
    const second = await pair(target, "rw", 200);
    for (const request of requeued) second.kernel.send(request);
    const replies = await Promise.all(results);
    expect(replies.map((r) => r.error)).toEqual(new Array(33).fill(0));
    expect((await second.kernel.submit(Cmd.FLUSH, 0, 0)).error).toBe(0);
    const stored = new Uint8Array(data.length);
    disk.read(10 * MiB, stored);
    expect(Buffer.from(stored).equals(Buffer.from(data))).toBe(true);
    expect(first.kernel.violations).toEqual([]);
    expect(second.kernel.violations).toEqual([]);
    second.kernelEnd.terminate();
  });

  test("NBD_CMD_DISC: requests before it are answered, DISC is not, then the server closes the socket", async () => {
    const { kernel, kernelEnd, daemonEnd } = await pair(target, "rw", 300);
    const data = pattern(256 * 1024, 5);
    const pending = [
      kernel.submit(Cmd.WRITE, 12 * MiB, data.length, { data }),
      kernel.submit(Cmd.READ, 12 * MiB - 4096, 4096),
      kernel.submit(Cmd.FLUSH, 0, 0),
    ];
    kernel.disconnect(); // same tick: the server sees all four in one chunk
    expect((await Promise.all(pending)).map((r) => r.error)).toEqual([0, 0, 0]);
    await kernelEnd.closed;
    await daemonEnd.closed;
    expect(daemonEnd.endedLocally).toBe(true); // the server ended it gracefully: how kernel-attach tells DISC from a kill
    expect(kernel.violations).toEqual([]);
    const stored = new Uint8Array(data.length);
    disk.read(12 * MiB, stored);
    expect(Buffer.from(stored).equals(Buffer.from(data))).toBe(true);
  });

  test("a read-only export: writes fail with EPERM, reads work", async () => {
    const roClient = await DstClient.open({ address: { transport: "unix", path: socketPath }, exportName: "ro", log: recordingLog(), deadlineMs: 10_000 });
    const roTarget = createEnginePort(roClient, "ro");
    expect(roTarget.readOnly).toBe(true);
    const { kernel, kernelEnd } = await pair(roTarget, "ro", 400);
    expect((await kernel.submit(Cmd.WRITE, 0, 4096, { data: new Uint8Array(4096) })).error).toBe(Errno.EPERM);
    expect((await kernel.submit(Cmd.READ, 0, 4096)).error).toBe(0);
    kernelEnd.terminate();
    await roClient.close();
  });
});

test("adoptFd: an end whose peer is already closed reports the close", async () => {
  const [a, b] = socketPair();
  closeFd(b);
  const end = await adoptFd(a, () => ({ onData() {}, onDrain() {}, onClose() {} }));
  // The peer is gone: Bun reports the close, and the adopted end says so.
  await end.closed;
  expect(end.isClosed).toBe(true);
});
