/**
 * End-to-end over real loopback TCP and Unix sockets: the real client engine (through
 * DstClient) against the real DST export server and a memory backend. Covers pipelining,
 * every request type, read-only and ACL enforcement, refusals with clear messages, and a
 * misbehaving client that must not disturb a well-behaved one.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createMemoryBackend } from "../../src/storage/local/memory.ts";
import { createLocalPort } from "../../src/storage/local/port.ts";
import { parseAllowRule, type AllowRule } from "../../src/lib/acl.ts";
import { DstClient } from "../../src/client/dst-client.ts";
import { DstServer } from "../../src/export/server.ts";
import { listen, type Listener } from "../../src/transport/tcp.ts";
import { recordingLog } from "../helpers/log.ts";
import { until } from "../helpers/wait.ts";

const MiB = 1024 * 1024;
function rules(...texts: string[]): AllowRule[] {
  return texts.map((t) => {
    const rule = parseAllowRule(t);
    if (typeof rule === "string") throw new Error(rule);
    return rule;
  });
}

const serverLog = recordingLog();
const disk = createMemoryBackend(64 * MiB);
const server = new DstServer({
  log: serverLog,
  exports: [
    { name: "disk", description: "", port: createLocalPort(disk), readOnly: false, allow: rules("127.0.0.1/32:rw", "unix:rw") },
    { name: "ro", description: "", port: createLocalPort(createMemoryBackend(MiB)), readOnly: true, allow: rules("127.0.0.1/32:rw") },
    { name: "rogrant", description: "", port: createLocalPort(createMemoryBackend(MiB)), readOnly: false, allow: rules("127.0.0.1/32:ro") },
    { name: "nobody", description: "", port: createLocalPort(createMemoryBackend(MiB)), readOnly: false, allow: [] },
  ],
});
let listener: Listener;
let port = 0;
const socketDir = mkdtempSync(join(tmpdir(), "dstd-loopback-"));
const socketPath = join(socketDir, "dst.sock");

beforeAll(async () => {
  listener = await listen(
    [
      { transport: "tcp", host: "127.0.0.1", port: 0 },
      { transport: "unix", path: socketPath },
    ],
    server.accept,
  );
  port = (listener.bound[0] as { port: number }).port;
});
afterAll(async () => {
  await listener.close();
  rmSync(socketDir, { recursive: true, force: true });
});

function open(exportName: string, unix = false) {
  return DstClient.open({
    address: unix ? { transport: "unix", path: socketPath } : { transport: "tcp", host: "127.0.0.1", port },
    exportName,
    log: recordingLog(),
    deadlineMs: 5000,
  });
}

describe("DST over loopback", () => {
  test("handshake reports size and permissions", async () => {
    const client = await open("disk");
    expect(client.size).toBe(64 * MiB);
    expect(client.writable).toBe(true);
    await client.close();
  });

  test("pipelined writes then reads return identical bytes", async () => {
    const client = await open("disk");
    const blocks = 256;
    const data = new Uint8Array(blocks * 4096);
    crypto.getRandomValues(data.subarray(0, 65536));
    for (let i = 65536; i < data.length; i++) data[i] = (i * 31) & 0xff;
    await Promise.all(
      Array.from({ length: blocks }, (_, i) => client.write(i * 4096, data.subarray(i * 4096, (i + 1) * 4096))),
    );
    await client.flush();
    const parts = await Promise.all(Array.from({ length: blocks }, (_, i) => client.read(i * 4096, 4096)));
    const joined = new Uint8Array(blocks * 4096);
    parts.forEach((p, i) => joined.set(p, i * 4096));
    expect(Buffer.compare(joined, data)).toBe(0);
    await client.close();
  });

  test("a long busy stream of writes never meets the export's exactly-once bound (the floor travels)", async () => {
    const client = await open("disk");
    const span = client.engine.welcome!.maxTxidSpan!;
    expect(span).toBeGreaterThan(0);
    const writes: Promise<void>[] = [];
    for (let i = 0; i < span * 4; i++) writes.push(client.write((i % 64) * 4096, new Uint8Array(4096).fill(i & 0xff)));
    await Promise.all(writes);
    expect(client.engine.counters.timeouts).toBe(0);
    await client.close();
  });

  test("submit says BUSY past the queue bound; callers waiting on room all complete", async () => {
    const client = await DstClient.open({
      address: { transport: "tcp", host: "127.0.0.1", port },
      exportName: "disk",
      log: recordingLog(),
      queueDepth: 8,
    });
    let busy = 0;
    const done: Promise<void>[] = [];
    for (let i = 0; i < 8; i++) done.push(new Promise((resolve) => client.submit({ kind: "read", offset: 0, length: 4096 }, () => resolve())));
    if (client.submit({ kind: "read", offset: 0, length: 4096 }, () => {}) === -1) busy++;
    expect(busy).toBe(1);
    // The promise API waits for room instead of failing.
    for (let i = 0; i < 64; i++) done.push(client.read(0, 4096).then(() => {}));
    await Promise.all(done);
    expect(client.engine.outstanding).toBe(0);
    await client.close();
  });

  test("1 MiB requests, trim and write-zeroes", async () => {
    const client = await open("disk", true);
    const big = new Uint8Array(MiB).fill(0x5a);
    await client.write(8 * MiB, big, true);
    expect((await client.read(8 * MiB, MiB)).every((b) => b === 0x5a)).toBe(true);
    await client.trim(8 * MiB, 4096);
    await client.zero(8 * MiB + 4096, 4096, true);
    const back = await client.read(8 * MiB, 3 * 4096);
    expect(back.subarray(0, 8192).every((b) => b === 0)).toBe(true);
    expect(back.subarray(8192).every((b) => b === 0x5a)).toBe(true);
    await client.close();
  });

  test("out-of-range requests fail with a clear errno, the connection stays usable", async () => {
    const client = await open("disk");
    await expect(client.read(64 * MiB - 100, 4096)).rejects.toThrow(/invalid argument \(EINVAL\)/);
    await expect(client.write(64 * MiB, new Uint8Array(1))).rejects.toThrow(/no space left on device \(ENOSPC\)/);
    expect((await client.read(0, 16)).length).toBe(16);
    await client.close();
  });

  test("read-only export and read-only grant refuse writes on every request", async () => {
    for (const name of ["ro", "rogrant"]) {
      const client = await open(name);
      expect(client.writable).toBe(false);
      await expect(client.write(0, new Uint8Array(512))).rejects.toThrow(/EPERM/);
      await expect(client.trim(0, 512)).rejects.toThrow(/EPERM/);
      await expect(client.zero(0, 512)).rejects.toThrow(/EPERM/);
      expect((await client.read(0, 512)).every((b) => b === 0)).toBe(true);
      await client.close();
    }
  });

  test("unknown export and empty allow list are refused with a clear message", async () => {
    await expect(open("nope")).rejects.toThrow(/no export named 'nope'/);
    await expect(open("nobody")).rejects.toThrow(/access denied: anonymous clients from 127.0.0.1 are not allowed to use export 'nobody'/);
    expect(serverLog.lines.some((l) => l.includes("refused: no export named 'nope'"))).toBe(true);
  });

  test("garbage from one client is refused and does not disturb another", async () => {
    const good = await open("disk");
    await good.write(0, new Uint8Array(4096).fill(7));
    // The export answers garbage with a refusal frame and closes: wait for that close.
    let received = 0;
    let markClosed: () => void = () => {};
    const closed = new Promise<void>((resolve) => (markClosed = resolve));
    const garbage = await Bun.connect({
      hostname: "127.0.0.1",
      port,
      socket: { binaryType: "uint8array", data: (_s, d) => void (received += d.length), close: () => markClosed() },
    });
    garbage.write(new TextEncoder().encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n".repeat(4)));
    await closed;
    expect(received).toBeGreaterThan(56); // the refusal (a WELCOME with EPROTO and a message)
    expect(serverLog.lines.some((l) => l.includes("protocol error: bad magic"))).toBe(true);
    expect((await good.read(0, 4096)).every((b) => b === 7)).toBe(true);
    await good.close();
  });

  test("oversized lengths and truncated frames: refused or dropped, others unaffected", async () => {
    const { encodeHello } = await import("../../src/wire/dst/handshake.ts");
    const { encodeHeader } = await import("../../src/wire/dst/header.ts");
    const { Op } = await import("../../src/wire/dst/constants.ts");
    const good = await open("disk");
    await good.write(32 * MiB + 4096, new Uint8Array(4096).fill(3));
    const raw = async (bytes: Uint8Array[], closeAfter: boolean) => {
      const socket = await Bun.connect({ hostname: "127.0.0.1", port, socket: { data() {}, binaryType: "uint8array" } });
      for (const b of bytes) socket.write(b);
      if (closeAfter) socket.end();
      return socket;
    };
    // A valid HELLO, then a WRITE header claiming a 64 MiB payload: refused at once, before
    // any payload is buffered.
    const hello = encodeHello({ version: 1, exportName: "disk", clientName: "raw", maxPayload: 1 << 20, features: 0, sessionId: null, txidFloor: 0 });
    const huge = new Uint8Array(56);
    encodeHeader(huge, 0, { version: 1, opcode: Op.WRITE, flags: 0, txid: 1, offset: 0, length: 64 << 20, payloadLength: 64 << 20, status: 0 });
    await raw([hello, huge], false);
    await until(() => serverLog.lines.some((l) => l.includes("payload length 67108864 exceeds max payload")), "the oversized frame's refusal");
    // Half a header, then the client vanishes: the export just closes that connection.
    await raw([hello, huge.subarray(0, 20)], true);
    // A write whose frame is cut short in the payload: nothing is applied.
    const partial = new Uint8Array(56 + 4096).fill(0xee);
    encodeHeader(partial, 0, { version: 1, opcode: Op.WRITE, flags: 0, txid: 2, offset: 32 * MiB + 8192, length: 4096, payloadLength: 4096, status: 0 });
    const closes = serverLog.lines.filter((l) => l.endsWith(": closed")).length;
    await raw([hello, partial.subarray(0, 56 + 1000)], true);
    await until(() => serverLog.lines.filter((l) => l.endsWith(": closed")).length > closes, "the cut connection to close");
    expect((await good.read(32 * MiB + 8192, 4096)).every((b) => b === 0)).toBe(true);
    expect((await good.read(32 * MiB + 4096, 4096)).every((b) => b === 3)).toBe(true);
    await good.close();
  });
});
