/**
 * Readers that keep reading, slowly, cannot hold the node's reply memory for ever
 * (docs/security.md "Resource limits", transport/guard.ts CONTENDED_SWEEPS). Five NBD clients
 * each ask for 4 × 32 MiB and then take their replies a socket read every 0.5 s (about 1 MiB/s):
 * above MIN_READ_RATE, so alone they are never closed, but together they hold the node's whole
 * reply budget (each a share large enough not to count as starved: export/budget.ts
 * STARVED_BELOW), and at that rate would keep it for over half an hour. While an honest client waits for that
 * memory, each must take all it is behind by within a reply window (`frame_timeout`, 10 s
 * here) or be closed; the honest client is then served. A real `dstd up` node, raw NBD
 * clients on real sockets.
 */
import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { NbdClient } from "../../src/client/nbd-client.ts";
import { connect } from "../../src/transport/tcp.ts";
import type { Sink } from "../../src/transport/types.ts";
import { Cmd, Opt } from "../../src/wire/nbd/constants.ts";
import { encodeRequest } from "../../src/wire/nbd/transmission.ts";
import { recordingLog } from "../helpers/log.ts";
import { startDiskNode } from "../helpers/node-process.ts";
import { until } from "../helpers/wait.ts";
import { concat, infoData, option, u32 } from "../nbd/harness.ts";

const MiB = 1024 * 1024;
const READERS = 5;
const dir = mkdtempSync(join(tmpdir(), "dstd-slow-readers-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

test("slow readers holding the reply budget are closed once an honest client waits for it, and the honest client is served", async () => {
  const { node, port } = await startDiskNode(dir, "node", { protocol: "nbd", size: "512MiB", frameTimeout: "10s" });
  const slow: Array<{ sink: Sink; closed: boolean; taken: number }> = [];
  let pacer: ReturnType<typeof setInterval> | null = null;
  try {
    for (let i = 0; i < READERS; i++) {
      const state = { sink: null as unknown as Sink, closed: false, taken: 0 };
      state.sink = await connect({ transport: "tcp", host: "127.0.0.1", port }, () => ({
        // One socket read per resume: the pacer below lets it take one every 0.5 s.
        onData: (chunk: Uint8Array) => {
          state.taken += chunk.length;
          state.sink.pause();
        },
        onDrain: () => {},
        onClose: () => (state.closed = true),
      }));
      slow.push(state);
      const reads = Array.from({ length: 4 }, (_, k) => encodeRequest({ type: Cmd.READ, cookie: BigInt(k + 1), offset: k * 32 * MiB, length: 32 * MiB }));
      state.sink.write(concat(u32(3), option(Opt.GO, infoData("disk")), ...reads));
    }
    await until(() => node.stderr().split("serving 'disk'").length - 1 >= READERS, `all ${READERS} slow readers in transmission`, 10_000);
    pacer = setInterval(() => {
      for (const s of slow) if (!s.closed) s.sink.resume();
    }, 500);
    // Past the first reply windows: alone, taking this much, nobody is closed.
    await Bun.sleep(22_000);
    expect(slow.every((s) => !s.closed)).toBe(true);
    expect(node.stderr()).not.toContain("replies read too slowly");
    // An honest client: it waits for the budget until the slow readers let it go.
    const started = performance.now();
    const honest = await NbdClient.open({ address: { transport: "tcp", host: "127.0.0.1", port }, exportName: "disk", log: recordingLog() });
    expect((await honest.read(0, MiB)).length).toBe(MiB);
    const waited = performance.now() - started;
    await honest.close();
    console.log(`${READERS} slow readers (taken ${slow.map((s) => Math.round(s.taken / 1024)).join(", ")} KiB): an honest 1 MiB read took ${waited.toFixed(0)} ms`);
    // Within a reply window or two (10 s each), not when the readers are done (minutes at this pace).
    expect(waited).toBeLessThan(25_000);
    expect(node.stderr()).toContain("other clients wait for the reply memory it holds");
    expect(slow.some((s) => s.closed)).toBe(true);
  } finally {
    if (pacer !== null) clearInterval(pacer);
    for (const s of slow) s.sink.destroy();
    await node.stop();
  }
}, 90_000);
