/**
 * The NBD front under many clients that stop reading (docs/security.md "Resource limits"):
 * their READ replies, reads in flight and WRITEs being assembled count against the node's
 * shared memory budget, so sixteen of them asking for 4 × 32 MiB each cannot make the node
 * allocate half a gigabyte (each connection alone stays within its own bounds); and the guard's
 * reply deadline closes them, so an honest client that waited for the budget is then served.
 * A real `dstd up` node, raw NBD clients on real sockets.
 */
import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
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
const dir = mkdtempSync(join(tmpdir(), "dstd-nbd-memory-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function rssMiB(pid: number): number {
  const line = readFileSync(`/proc/${pid}/status`, "utf8").split("\n").find((l) => l.startsWith("VmHWM:"))!;
  return Number(line.split(/\s+/)[1]) / 1024;
}

test("16 NBD clients that stop reading hold at most the shared budget; the reply deadline closes them and an honest client is served", async () => {
  const { node, port } = await startDiskNode(dir, "node", { protocol: "nbd", size: "512MiB", frameTimeout: "3s" });
  const hostile: Array<{ sink: Sink; closed: boolean }> = [];
  try {
    const pid = node.child.pid;
    const before = rssMiB(pid);
    for (let i = 0; i < 16; i++) {
      const state = { sink: null as unknown as Sink, closed: false };
      state.sink = await connect({ transport: "tcp", host: "127.0.0.1", port }, () => ({
        onData: () => {},
        onDrain: () => {},
        onClose: () => (state.closed = true),
      }));
      hostile.push(state);
      const reads = Array.from({ length: 4 }, (_, k) => encodeRequest({ type: Cmd.READ, cookie: BigInt(k + 1), offset: k * 32 * MiB, length: 32 * MiB }));
      state.sink.pause(); // it reads nothing, not even the greeting
      state.sink.write(concat(u32(3), option(Opt.GO, infoData("disk")), ...reads));
    }
    // Each connection is served until the budget is spent; then they wait. Once all 16 are in
    // transmission, every READ that will be served before the reply deadline has been.
    await until(() => node.stderr().split("serving 'disk'").length - 1 >= 16, "all 16 hostile clients in transmission", 10_000);
    const grown = rssMiB(pid) - before;
    // An honest client: it waits for the budget until the reply deadline closes the readers.
    const started = performance.now();
    const honest = await NbdClient.open({ address: { transport: "tcp", host: "127.0.0.1", port }, exportName: "disk", log: recordingLog() });
    await honest.write(0, new Uint8Array(4096).fill(9));
    expect((await honest.read(0, 4096)).every((b) => b === 9)).toBe(true);
    const waited = performance.now() - started;
    await honest.close();
    console.log(`16 × 4 × 32 MiB READs unread: node peak grew ${grown.toFixed(0)} MiB; an honest write+read took ${waited.toFixed(0)} ms`);
    // Without the shared budget each reader held ~32–64 MiB: 16 of them, 0.5–1 GiB.
    expect(grown).toBeLessThan(300);
    // Those that filled their socket buffers first took that much (or, while the honest client
    // waited, had to take all they were behind by): "read too slowly" then, not "not read".
    await until(() => /replies (not read|read too slowly \(\d+ bytes\)) for 3s/.test(node.stderr()), "the reply deadline in the log", 10_000);
  } finally {
    for (const h of hostile) h.sink.destroy();
    await node.stop();
  }
}, 90_000);
