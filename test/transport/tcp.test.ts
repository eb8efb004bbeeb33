/**
 * transport/tcp.ts over real loopback sockets: a handler that closes its connection while it
 * is being made (a refusal at accept, as transport/guard.ts does) still hears onClose exactly
 * once. Bun runs the socket's close() synchronously inside open() in that case, before the
 * handler exists; without the re-delivery a guard's slots would leak with every refusal.
 */
import { afterAll, expect, test } from "bun:test";
import { connect, listen } from "../../src/transport/tcp.ts";
import type { ConnectionHandler } from "../../src/transport/types.ts";
import { until } from "../helpers/wait.ts";

const closes: Array<{ kind: string; reason: string | null }> = [];
const listener = await listen([{ transport: "tcp", host: "127.0.0.1", port: 0 }], (sink, peer) => {
  const kind = peer.port % 2 === 0 ? "destroy" : "end";
  const handler: ConnectionHandler = {
    onData() {},
    onDrain() {},
    onClose: (reason) => closes.push({ kind, reason }),
  };
  if (kind === "destroy") sink.destroy();
  else sink.end();
  return handler;
});
afterAll(() => listener.close());

test("a connection ended or destroyed while its handler is made reports onClose once", async () => {
  const port = listener.bound[0]!.transport === "tcp" ? listener.bound[0]!.port : 0;
  const peers = 20;
  const closed: Promise<void>[] = [];
  for (let i = 0; i < peers; i++) {
    closed.push(
      new Promise<void>((resolve, reject) => {
        Bun.connect({ hostname: "127.0.0.1", port, socket: { data() {}, close: () => resolve(), error: () => resolve() } }).catch(reject);
      }),
    );
  }
  await Promise.all(closed);
  await until(() => closes.length >= peers, `${peers} onClose calls`);
  expect(closes).toHaveLength(peers);
});

test("a handler that throws on data loses its connection: the socket is closed, not left open with nobody holding it", async () => {
  let peerClosed = false;
  const server = Bun.listen({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      open(socket) {
        socket.write("boom");
      },
      data() {},
      close() {
        peerClosed = true;
      },
    },
  });
  const reasons: Array<string | null> = [];
  try {
    await connect({ transport: "tcp", host: "127.0.0.1", port: server.port }, () => ({
      onData() {
        throw new Error("a handler bug");
      },
      onDrain() {},
      onClose: (reason) => reasons.push(reason),
    }));
    await until(() => reasons.length === 1, "onClose");
    // Before, Bun's error() only marked the socket closed: the peer never saw a close.
    await until(() => peerClosed, "the peer to see the socket closed", 3000);
  } finally {
    server.stop(true);
  }
});

test("buffers queued for a peer that closed are released when the transport sees the close (a crypto pool slot has no other way back)", async () => {
  let released = 0;
  let queued = 0;
  let closedAt = -1;
  const server = await listen([{ transport: "tcp", host: "127.0.0.1", port: 0 }], (sink) => {
    // The peer never reads: write until the kernel stops taking and the sink queues.
    for (let i = 0; i < 64; i++) sink.write(new Uint8Array(1 << 20), () => released++);
    queued = sink.queuedBytes;
    return { onData() {}, onDrain() {}, onClose: () => void (closedAt = released) };
  });
  const port = server.bound[0]!.transport === "tcp" ? server.bound[0]!.port : 0;
  const client = await Bun.connect({ hostname: "127.0.0.1", port, socket: { data() {} } });
  client.pause();
  await until(() => queued > 0, "the server's sink to queue");
  client.terminate();
  await until(() => released === 64, "every written buffer released");
  expect(closedAt).toBeLessThan(64); // what was still queued at the close came back after it
  await server.close();
});
