/**
 * transport/tcp.ts over real loopback sockets: a handler that closes its connection while it
 * is being made (a refusal at accept, as transport/guard.ts does) still hears onClose exactly
 * once. Bun runs the socket's close() synchronously inside open() in that case, before the
 * handler exists; without the re-delivery a guard's slots would leak with every refusal.
 */
import { afterAll, expect, test } from "bun:test";
import { listen } from "../../src/transport/tcp.ts";
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
