/**
 * transport/direct-receive.ts over real sockets: bytes land in the handler's receive target
 * when it names one (never also in onData), chunks given to onData stay valid after later
 * reads (no slab part is reused), sent buffers are released only once node:net is done with
 * them, and a refused connection names its address.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connectDirect } from "../../src/transport/direct-receive.ts";
import { listen, type Listener } from "../../src/transport/tcp.ts";
import type { ConnectionHandler, Sink } from "../../src/transport/types.ts";

const listeners: Listener[] = [];
const dirs: string[] = [];
afterEach(async () => {
  for (const l of listeners.splice(0)) await l.close();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function pattern(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed;
  for (let i = 0; i < length; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    out[i] = x >>> 24;
  }
  return out;
}

/** A server that writes `data` in pieces of `piece` bytes, one per macrotask, and collects what it receives. */
async function server(data: Uint8Array, piece: number, transport: "tcp" | "unix") {
  const received: Uint8Array[] = [];
  const address =
    transport === "tcp"
      ? ({ transport: "tcp", host: "127.0.0.1", port: 0 } as const)
      : ({ transport: "unix", path: join((dirs[dirs.push(mkdtempSync(join(tmpdir(), "dstd-direct-"))) - 1])!, "s.sock") } as const);
  const listener = await listen([address], (sink: Sink) => {
    let at = 0;
    const next = () => {
      if (at >= data.length) return;
      sink.write(data.subarray(at, Math.min(at + piece, data.length)));
      at += piece;
      setTimeout(next, 1);
    };
    setTimeout(next, 1);
    return { onData: (chunk) => void received.push(chunk.slice()), onDrain() {}, onClose() {} } satisfies ConnectionHandler;
  });
  listeners.push(listener);
  return { bound: listener.bound[0]!, received };
}

describe("connectDirect", () => {
  for (const transport of ["tcp", "unix"] as const) {
    test(`${transport}: bytes go to the receive target while it is named, else to onData chunks that stay intact`, async () => {
      const data = pattern(3 * 1024 * 1024 + 77, 9);
      const { bound } = await server(data, 100_000, transport);
      const chunks: Uint8Array[] = [];
      // The first 1000 bytes through onData, then [1000, 1000 + 2 MiB) into `destination`, then onData again.
      const destination = new Uint8Array(2 * 1024 * 1024);
      let viaData = 0;
      let direct = 0;
      let done: () => void = () => {};
      const finished = new Promise<void>((resolve) => (done = resolve));
      const check = () => {
        if (viaData + direct === data.length) done();
      };
      await connectDirect(bound, () => ({
        onData(chunk) {
          chunks.push(chunk);
          viaData += chunk.length;
          check();
        },
        receiveTarget: () => (viaData >= 1000 && direct < destination.length ? destination.subarray(direct) : null),
        onDirect(count) {
          direct += count;
          check();
        },
        onDrain() {},
        onClose() {},
      }));
      await finished;
      expect(direct).toBe(destination.length);
      const before = chunks.reduce((n, c) => n + c.length, 0);
      expect(before).toBe(data.length - destination.length);
      // onData got the head (one read may run past byte 1000), the target what came next, onData the tail;
      // comparing at the end proves no chunk was overwritten by a later read.
      const flat = new Uint8Array(data.length);
      let p = 0;
      let first = true;
      for (const chunk of chunks) {
        flat.set(chunk, p);
        p += chunk.length;
        if (first && p >= 1000) {
          flat.set(destination, p);
          p += destination.length;
          first = false;
        }
      }
      expect(Buffer.compare(flat, data)).toBe(0);
    });
  }

  test("a sent buffer is released once node:net is done with it, and the peer gets every byte", async () => {
    const { bound, received } = await server(new Uint8Array(0), 1, "tcp");
    const sink = await connectDirect(bound, () => ({ onData() {}, onDrain() {}, onClose() {} }));
    const data = pattern(8 * 1024 * 1024, 3);
    let released = 0;
    for (let at = 0; at < data.length; at += 1024 * 1024) sink.write(data.subarray(at, at + 1024 * 1024), () => released++);
    while (received.reduce((n, c) => n + c.length, 0) < data.length || released < 8) await Bun.sleep(5);
    expect(released).toBe(8);
    const got = new Uint8Array(data.length);
    let p = 0;
    for (const chunk of received) {
      got.set(chunk, p);
      p += chunk.length;
    }
    expect(Buffer.compare(got, data)).toBe(0);
    sink.end();
  });

  test("a refused connection rejects with E_CONNECT naming the address", async () => {
    const { bound } = await server(new Uint8Array(0), 1, "tcp");
    await listeners.pop()!.close();
    const error = await connectDirect(bound, () => ({ onData() {}, onDrain() {}, onClose() {} })).catch((e) => e);
    expect(error.code).toBe("E_CONNECT");
    expect(error.message).toContain(`127.0.0.1:${(bound as { port: number }).port}`);
  });
});
