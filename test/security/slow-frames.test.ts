/**
 * Frames that arrive slowly cannot hold the node's receive memory for ever (docs/security.md
 * "Resource limits", transport/guard.ts). A WRITE header that claims 32 MiB takes 32 MiB of the
 * export's receive half (128 MiB) at once, so four such frames spend it and every other
 * client's WRITE waits. Each byte that arrives was progress to the frame deadline: a byte a
 * second kept a frame for ever. Now a connection that holds unfinished frames through a whole
 * window (`frame_timeout`, 4 s here) must have delivered MIN_READ_RATE's worth in it, and
 * while the receive memory turns away a client that holds little of it, all the frame it
 * holds. A real `dstd up` node, raw DST clients on real sockets, an honest DstClient.
 */
import { afterAll, afterEach, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DstClient } from "../../src/client/dst-client.ts";
import { HEADER_SIZE, Op } from "../../src/wire/dst/constants.ts";
import { encodeHeader } from "../../src/wire/dst/header.ts";
import { RawDst } from "../helpers/dst-raw.ts";
import { startDiskNode, type NodeProcess } from "../helpers/node-process.ts";

const MiB = 1024 * 1024;
const RECEIVE_HALF = 128 * MiB;
const dir = mkdtempSync(join(tmpdir(), "dstd-slow-frames-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const stops: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const stop of stops.splice(0).reverse()) await stop();
});

async function node(tag: string): Promise<{ node: NodeProcess; port: number }> {
  const started = await startDiskNode(dir, tag, { protocol: "dst", size: "256MiB", frameTimeout: "4s" });
  stops.push(async () => void (await started.node.stop()));
  return started;
}

/**
 * Four raw clients, each in the middle of a WRITE whose header claims nearly 32 MiB: together
 * all but 64 KiB of the receive half; each then sends `bytes` more every second.
 */
async function holders(port: number, bytes: number): Promise<{ raws: RawDst[] }> {
  const raws: RawDst[] = [];
  for (let i = 0; i < 4; i++) {
    const raw = await RawDst.connect(port);
    stops.push(() => raw.close());
    const answer = await raw.handshake({ exportName: "disk" });
    expect(answer.ok).toBe(true);
    const payload = i < 3 ? 32 * MiB : RECEIVE_HALF - 3 * (HEADER_SIZE + 32 * MiB) - HEADER_SIZE - 64 * 1024;
    const header = new Uint8Array(HEADER_SIZE);
    encodeHeader(header, 0, { version: 1, opcode: Op.WRITE, flags: 0, txid: 1, offset: 0, length: payload, payloadLength: payload, status: 0 });
    await raw.send(header);
    await raw.send(new Uint8Array(100));
    raws.push(raw);
  }
  const timer = setInterval(() => {
    for (const raw of raws) if (!raw.closed) void raw.send(new Uint8Array(bytes));
  }, 1000);
  stops.push(() => clearInterval(timer));
  return { raws };
}

async function honestWrite(port: number): Promise<number> {
  const client = await DstClient.open({ address: { transport: "tcp", host: "127.0.0.1", port }, exportName: "disk", log: { info() {}, warn() {} } });
  stops.push(() => client.close());
  const started = performance.now();
  await client.write(64 * MiB, new Uint8Array(MiB).fill(7));
  await client.flush();
  return performance.now() - started;
}

test("frames trickled a byte a second are closed after one window; an honest WRITE waiting for their memory is then served", async () => {
  const { node: n, port } = await node("trickle");
  const { raws } = await holders(port, 1);
  const waited = await honestWrite(port);
  console.log(`4 frames trickled at 1 B/s held the receive half: an honest 1 MiB WRITE + FLUSH took ${waited.toFixed(0)} ms`);
  expect(waited).toBeLessThan(15_000);
  expect(n.stderr()).toContain("frames arriving too slowly");
  expect(raws.some((r) => r.closed)).toBe(true);
}, 60_000);

test("frames sent at 32 KiB/s are left alone until an honest WRITE waits for their memory; then each must arrive whole within a window", async () => {
  const { node: n, port } = await node("slow");
  const { raws } = await holders(port, 32 * 1024);
  await Bun.sleep(9_000); // two windows: above MIN_READ_RATE, nobody else waiting
  expect(raws.every((r) => !r.closed)).toBe(true);
  expect(n.stderr()).not.toContain("frames arriving too slowly");
  const waited = await honestWrite(port);
  console.log(`4 frames sent at 32 KiB/s held the receive half: an honest 1 MiB WRITE + FLUSH took ${waited.toFixed(0)} ms`);
  expect(waited).toBeLessThan(15_000);
  expect(n.stderr()).toContain("other clients wait for the receive memory it holds");
}, 60_000);
