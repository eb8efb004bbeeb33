/**
 * @module bench/fault-proxy-link — what the fault proxy (test/fault/proxy.ts) itself carries:
 * one bulk transfer from a fast sender through a throttled, delayed, lossy proxy link into a
 * sink, against the configured rate. The WAN test and bench/replication-catchup.ts read their
 * catch-up rate against this link, so the link must deliver its rate when the sender keeps it
 * busy (it did not before a fix: its source was resumed only once its queue had emptied).
 *
 *   bun bench/fault-proxy-link.ts
 *   MB=128 LINK_MIB=20 DELAY_MS=50 LOSS=0.01 bun bench/fault-proxy-link.ts
 */
import { FaultProxy } from "../test/fault/proxy.ts";

const MiB = 1 << 20;
const total = Number(process.env.MB ?? 64) * MiB;
const link = Number(process.env.LINK_MIB ?? 20) * MiB;
const delayMs = Number(process.env.DELAY_MS ?? 50);
const loss = Number(process.env.LOSS ?? 0.01);
if (!(total > 0 && link > 0 && delayMs >= 0 && loss >= 0 && loss <= 1)) throw new Error("MB, LINK_MIB > 0, DELAY_MS >= 0, LOSS within 0..1");

let received = 0;
let doneAt = 0;
let finished!: () => void;
const done = new Promise<void>((resolve) => (finished = resolve));
const sink = Bun.listen({
  hostname: "127.0.0.1",
  port: 0,
  socket: {
    binaryType: "uint8array",
    data(_socket, chunk) {
      received += chunk.length;
      if (received >= total && doneAt === 0) {
        doneAt = performance.now();
        finished();
      }
    },
  },
});
const proxy = FaultProxy.start({ upstream: { host: "127.0.0.1", port: sink.port } });
proxy.delay(delayMs);
proxy.throttle(link);
if (loss > 0) proxy.loss(loss, 2 * delayMs);

const data = new Uint8Array(total);
let sent = 0;
const started = performance.now();
const client = await Bun.connect({
  hostname: "127.0.0.1",
  port: proxy.port,
  socket: {
    binaryType: "uint8array",
    open(socket) {
      sent += Math.max(0, socket.write(data.subarray(sent)));
    },
    drain(socket) {
      if (sent < total) sent += Math.max(0, socket.write(data.subarray(sent)));
    },
    data() {},
  },
});
await done;
const seconds = (doneAt - started) / 1000;
// Best possible: the serialization time plus one delay (and one retransmission for a late last chunk).
const ideal = total / link + (delayMs + (loss > 0 ? 2 * delayMs : 0)) / 1000;
console.log(
  `${total / MiB} MiB through ${link / MiB} MiB/s, ${delayMs} ms, ${loss * 100} % loss: ${seconds.toFixed(2)} s = ${(total / MiB / seconds).toFixed(2)} MiB/s, ` +
    `${(ideal / seconds).toFixed(2)}× of the best possible ${ideal.toFixed(2)} s (${proxy.stats.lost} chunks late)`,
);
client.end();
proxy.close();
sink.stop(true);
