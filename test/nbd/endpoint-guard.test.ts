/**
 * `dstd attach --nbd-listen`'s endpoint (attach/nbd-endpoint.ts) against hostile local
 * clients on a real Unix socket: like `dstd export`'s NBD listener it sits behind a
 * ConnectionGuard, so a client that never finishes its handshake, or stops in the middle of
 * a WRITE, is closed at its deadline, handshakes past the per-source cap are refused at once,
 * and an honest client keeps working throughout.
 */
import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { ExportLink } from "../../src/attach/export-link.ts";
import { serveNbdEndpoint } from "../../src/attach/nbd-endpoint.ts";
import { NbdClient } from "../../src/client/nbd-client.ts";
import { createMemoryBackend } from "../../src/storage/local/memory.ts";
import { createLocalPort } from "../../src/storage/local/port.ts";
import { Cmd, Opt } from "../../src/wire/nbd/constants.ts";
import { encodeRequest } from "../../src/wire/nbd/transmission.ts";
import { recordingLog } from "../helpers/log.ts";
import { until } from "../helpers/wait.ts";
import { concat, infoData, option, u32 } from "./harness.ts";

const dir = mkdtempSync(join(tmpdir(), "dstd-endpoint-guard-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function link(): ExportLink {
  const port = createLocalPort(createMemoryBackend(4 << 20), { description: "memory" });
  return {
    port,
    exportSize: port.size,
    blockPreferred: 4096,
    blockMin: 512,
    maxPayload: 1 << 20,
    deadlineMs: 10_000,
    state: "ready",
    counters: { inflight: 0, resends: 0, reconnects: 0, replays: 0, keepaliveFailures: 0, timeouts: 0 },
    outstanding: 0,
    flush: async () => {},
    close: async () => {},
    abort: () => {},
  };
}

interface Raw {
  received: number;
  closed: boolean;
  socket: import("bun").Socket<undefined>;
}

async function raw(path: string): Promise<Raw> {
  const r = { received: 0, closed: false } as Raw;
  r.socket = await Bun.connect({
    unix: path,
    socket: {
      data(_s, chunk) {
        r.received += chunk.length;
      },
      close() {
        r.closed = true;
      },
    },
  });
  return r;
}

test("handshake and frame deadlines, and the per-source cap, apply to the attach endpoint; an honest client is unaffected", async () => {
  const socket = join(dir, "nbd.sock");
  const log = recordingLog();
  const endpoint = await serveNbdEndpoint({
    url: "dst://127.0.0.1:1/disk",
    exportName: "disk",
    nbdListen: { transport: "unix", path: socket },
    stateDir: join(dir, "state"),
    exportLink: link(),
    log: { ...log, error: log.warn },
    limits: { handshakeTimeoutMs: 300, frameTimeoutMs: 300, maxConnections: 64, maxUnauthenticated: 8, maxUnauthenticatedPerSource: 3 },
  });
  try {
    // Three silent clients fill the per-source handshake cap; a fourth is refused at once.
    const silent = [await raw(socket), await raw(socket), await raw(socket)];
    const fourth = await raw(socket);
    await until(() => fourth.closed, "the fourth handshake refused");
    expect(silent.some((s) => s.closed)).toBe(false);
    // The silent three are closed at their handshake deadline.
    await until(() => silent.every((s) => s.closed), "the silent clients closed at the handshake deadline", 5000);

    // A client that goes into transmission and stops in the middle of a WRITE's payload.
    const stuck = await raw(socket);
    await until(() => stuck.received > 0, "greeting");
    stuck.socket.write(concat(u32(3), option(Opt.GO, infoData(""))));
    const write = encodeRequest({ type: Cmd.WRITE, cookie: 1n, offset: 0, data: new Uint8Array(65536) });
    stuck.socket.write(write.subarray(0, 1000));
    // An honest client does its work meanwhile, by the default name too.
    const honest = await NbdClient.open({ address: { transport: "unix", path: socket }, exportName: "", log: recordingLog() });
    await honest.write(8192, new Uint8Array(4096).fill(5));
    expect((await honest.read(8192, 4096)).every((b) => b === 5)).toBe(true);
    await until(() => stuck.closed, "the half-sent WRITE closed at the frame deadline", 5000);
    // Its partial write landed nowhere.
    expect((await honest.read(0, 4096)).every((b) => b === 0)).toBe(true);
    await honest.close();
    expect(log.lines.some((l) => l.includes("handshake"))).toBe(true);
  } finally {
    await endpoint.stop();
  }
}, 20_000);
