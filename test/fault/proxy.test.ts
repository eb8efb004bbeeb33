/**
 * The fault proxy's own behaviour, against a local echo server: forwarding is byte-exact
 * both ways, and each fault (cut, blackhole, delay, throttle, refuse) does what the fault
 * tests rely on, measured with timestamps rather than sleeps.
 */
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import type { Socket, TCPSocketListener } from "bun";
import { FaultProxy, scheduleOnLink } from "./proxy.ts";

interface EchoServer {
  port: number;
  /** performance.now() of the first byte the server received on each connection. */
  firstByteAt: number[];
  received: number;
  stop(): void;
}

function startEcho(): EchoServer {
  const state: EchoServer = { port: 0, firstByteAt: [], received: 0, stop: () => {} };
  const listener: TCPSocketListener<{ pending: Uint8Array[]; first: boolean }> = Bun.listen({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      binaryType: "uint8array",
      open(socket) {
        socket.data = { pending: [], first: true };
      },
      data(socket, chunk) {
        if (socket.data.first) {
          socket.data.first = false;
          state.firstByteAt.push(performance.now());
        }
        state.received += chunk.length;
        socket.data.pending.push(chunk);
        flushEcho(socket);
      },
      drain(socket) {
        flushEcho(socket);
      },
    },
  });
  state.port = listener.port;
  state.stop = () => listener.stop(true);
  return state;
}

function flushEcho(socket: Socket<{ pending: Uint8Array[] }>): void {
  const queue = socket.data.pending;
  while (queue.length > 0) {
    const head = queue[0]!;
    const written = Math.max(0, socket.write(head));
    if (written < head.length) {
      queue[0] = head.subarray(written);
      return;
    }
    queue.shift();
  }
}

interface TestClient {
  received: Uint8Array[];
  bytes: number;
  closed: Promise<number>;
  /** Resolves with performance.now() once `n` bytes have come back. */
  until(n: number): Promise<number>;
  send(data: Uint8Array): void;
  end(): void;
}

async function connectClient(port: number): Promise<TestClient> {
  let closedResolve: (at: number) => void = () => {};
  const waiters: Array<{ n: number; resolve: (at: number) => void }> = [];
  const out: Uint8Array[] = [];
  let socketRef: Socket<undefined> | null = null;
  const client: TestClient = {
    received: [],
    bytes: 0,
    closed: new Promise((resolve) => (closedResolve = resolve)),
    until(n) {
      if (client.bytes >= n) return Promise.resolve(performance.now());
      return new Promise((resolve) => waiters.push({ n, resolve }));
    },
    send(data) {
      out.push(data);
      pushOut();
    },
    end() {
      socketRef?.end();
    },
  };
  const pushOut = () => {
    while (socketRef && out.length > 0) {
      const head = out[0]!;
      const written = Math.max(0, socketRef.write(head));
      if (written < head.length) {
        out[0] = head.subarray(written);
        return;
      }
      out.shift();
    }
  };
  socketRef = await Bun.connect({
    hostname: "127.0.0.1",
    port,
    socket: {
      binaryType: "uint8array",
      data(_socket, chunk) {
        client.received.push(chunk);
        client.bytes += chunk.length;
        for (let i = waiters.length - 1; i >= 0; i--) {
          if (client.bytes >= waiters[i]!.n) waiters.splice(i, 1)[0]!.resolve(performance.now());
        }
      },
      drain() {
        pushOut();
      },
      close() {
        closedResolve(performance.now());
      },
    },
  });
  return client;
}

function concat(chunks: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

function randomBytes(n: number): Uint8Array {
  const data = new Uint8Array(n);
  for (let at = 0; at < n; at += 65536) crypto.getRandomValues(data.subarray(at, Math.min(n, at + 65536)));
  return data;
}

const withTimeout = <T>(promise: Promise<T>, ms: number, what: string): Promise<T> =>
  Promise.race([promise, Bun.sleep(ms).then(() => Promise.reject(new Error(`${what}: not within ${ms} ms`)))]);

let echo: EchoServer;
let proxy: FaultProxy;

beforeAll(() => {
  echo = startEcho();
});
afterAll(() => echo.stop());
afterEach(() => proxy?.close());

function newProxy(highWaterBytes?: number): FaultProxy {
  proxy = FaultProxy.start({ upstream: { host: "127.0.0.1", port: echo.port }, highWaterBytes });
  return proxy;
}

describe("fault proxy", () => {
  test("forwards 8 MiB both ways byte-exact, with backpressure", async () => {
    newProxy(256 * 1024);
    const client = await connectClient(proxy.port);
    const data = randomBytes(8 * 1024 * 1024);
    client.send(data);
    await withTimeout(client.until(data.length), 10_000, "echo");
    expect(Buffer.compare(concat(client.received), data)).toBe(0);
    expect(proxy.stats.bytesUp).toBe(data.length);
    expect(proxy.stats.bytesDown).toBe(data.length);
    expect(proxy.stats.accepted).toBe(1);
  });

  test("cut() resets every open connection; new ones still work", async () => {
    newProxy();
    const a = await connectClient(proxy.port);
    const b = await connectClient(proxy.port);
    a.send(new Uint8Array([1, 2, 3]));
    await a.until(3);
    b.send(new Uint8Array([4]));
    await b.until(1);
    expect(proxy.cut()).toBe(2);
    await withTimeout(Promise.all([a.closed, b.closed]), 2_000, "clients see the reset");
    expect(proxy.stats.active).toBe(0);
    const c = await connectClient(proxy.port);
    c.send(new Uint8Array([9, 9]));
    await withTimeout(c.until(2), 2_000, "echo after cut");
    expect(proxy.stats.cut).toBe(2);
  });

  test("refuse(true) resets new connections before any byte; refuse(false) restores", async () => {
    newProxy();
    proxy.refuse(true);
    const refused = await connectClient(proxy.port);
    refused.send(new Uint8Array([1]));
    await withTimeout(refused.closed, 2_000, "refused connection closes");
    expect(refused.bytes).toBe(0);
    expect(proxy.stats.refused).toBe(1);
    expect(proxy.stats.accepted).toBe(0);
    proxy.refuse(false);
    const ok = await connectClient(proxy.port);
    ok.send(new Uint8Array([7]));
    await withTimeout(ok.until(1), 2_000, "echo after refuse(false)");
  });

  test("delay(ms) delays each direction by ms, keeping order", async () => {
    newProxy();
    proxy.delay(120);
    const client = await connectClient(proxy.port);
    const sentAt = performance.now();
    const data = randomBytes(64 * 1024);
    client.send(data.subarray(0, 1000));
    client.send(data.subarray(1000));
    const backAt = await withTimeout(client.until(data.length), 3_000, "delayed echo");
    const elapsed = backAt - sentAt;
    console.log(`delay 120 ms each way: round trip ${elapsed.toFixed(0)} ms`);
    expect(elapsed).toBeGreaterThanOrEqual(238);
    expect(Buffer.compare(concat(client.received), data)).toBe(0);
    proxy.delay(0);
  });

  test("loss(p, ms): a chunk with a lost segment arrives ms late, bytes intact and in order; p = 0 loses nothing", async () => {
    newProxy();
    proxy.loss(1, 150); // every segment lost: each chunk waits one retransmission each way
    const client = await connectClient(proxy.port);
    const data = randomBytes(256 * 1024);
    const sentAt = performance.now();
    client.send(data.subarray(0, 100));
    client.send(data.subarray(100));
    const backAt = await withTimeout(client.until(data.length), 5_000, "echo through a lossy link");
    console.log(`loss 100 %, 150 ms retransmission each way: round trip ${(backAt - sentAt).toFixed(0)} ms, ${proxy.stats.lost} chunks late`);
    expect(backAt - sentAt).toBeGreaterThanOrEqual(298);
    expect(Buffer.compare(concat(client.received), data)).toBe(0);
    expect(proxy.stats.lost).toBeGreaterThanOrEqual(2);

    proxy.loss(0, 150);
    const before = proxy.stats.lost;
    const quick = randomBytes(64 * 1024);
    const other = await connectClient(proxy.port);
    other.send(quick);
    // No wall-clock upper bound (the machine is shared): the loss counter shows nothing was delayed.
    await withTimeout(other.until(quick.length), 3_000, "echo without loss");
    expect(proxy.stats.lost).toBe(before);
    expect(Buffer.compare(concat(other.received), quick)).toBe(0);
    expect(() => proxy.loss(1.5, 10)).toThrow(/not within 0..1/);
  });

  test("throttle(bps) paces the transfer", async () => {
    newProxy();
    const rate = 1024 * 1024; // 1 MiB/s each way; burst is 20 KiB
    proxy.throttle(rate);
    const client = await connectClient(proxy.port);
    const data = randomBytes(512 * 1024);
    const sentAt = performance.now();
    client.send(data);
    const backAt = await withTimeout(client.until(data.length), 5_000, "throttled echo");
    const elapsed = (backAt - sentAt) / 1000;
    console.log(`throttle 1 MiB/s: 512 KiB echoed in ${elapsed.toFixed(2)} s`);
    // Both directions are paced, but they overlap; a single pass needs (512 - 20) KiB / 1 MiB/s.
    expect(elapsed).toBeGreaterThanOrEqual((512 - 20) / 1024 - 0.01);
    expect(elapsed).toBeLessThan(2);
    expect(Buffer.compare(concat(client.received), data)).toBe(0);
    proxy.throttle(0);
  });

  test("blackhole(ms) holds traffic of open and new connections, then delivers it intact", async () => {
    newProxy();
    const open = await connectClient(proxy.port);
    open.send(new Uint8Array([1]));
    await open.until(1);
    const firstCount = echo.firstByteAt.length;
    const startedAt = performance.now();
    const ended = proxy.blackhole(400);
    const data = randomBytes(256 * 1024);
    open.send(data);
    const late = await connectClient(proxy.port); // accepted, but not forwarded yet
    late.send(new Uint8Array([5, 6, 7]));
    const [openBack, lateBack] = await withTimeout(Promise.all([open.until(1 + data.length), late.until(3)]), 3_000, "held data");
    await ended;
    console.log(`blackhole 400 ms: held data came back after ${(openBack - startedAt).toFixed(0)} / ${(lateBack - startedAt).toFixed(0)} ms`);
    expect(openBack - startedAt).toBeGreaterThanOrEqual(399);
    expect(lateBack - startedAt).toBeGreaterThanOrEqual(399);
    // The late connection reached the server only after the blackhole ended.
    expect(echo.firstByteAt.length).toBe(firstCount + 1);
    expect(echo.firstByteAt[firstCount]! - startedAt).toBeGreaterThanOrEqual(399);
    expect(Buffer.compare(concat(open.received).subarray(1), data)).toBe(0);
    expect(proxy.stats.active).toBe(2); // both stayed open throughout
  });

  test("a side that closes during a blackhole: the other side is reset when it ends", async () => {
    newProxy();
    const client = await connectClient(proxy.port);
    client.send(new Uint8Array([1]));
    await client.until(1);
    const startedAt = performance.now();
    const ended = proxy.blackhole(300);
    client.end();
    await withTimeout(ended, 2_000, "blackhole end");
    expect(performance.now() - startedAt).toBeGreaterThanOrEqual(299);
    expect(proxy.stats.brokenByBlackhole).toBe(1);
    expect(proxy.stats.active).toBe(0);
  });

  test("upstream refusing: the client's connection is closed", async () => {
    const dead = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    const port = dead.port;
    dead.stop(true);
    proxy = FaultProxy.start({ upstream: { host: "127.0.0.1", port } });
    const client = await connectClient(proxy.port);
    await withTimeout(client.closed, 2_000, "client closed after upstream refusal");
    expect(client.bytes).toBe(0);
  });

  test("whenDelivered resolves at the byte count", async () => {
    newProxy();
    const client = await connectClient(proxy.port);
    const reached = proxy.whenDelivered("up", 100_000);
    let done = false;
    void reached.then(() => (done = true));
    client.send(randomBytes(50_000));
    await client.until(50_000);
    expect(done).toBe(false);
    client.send(randomBytes(50_000));
    await withTimeout(reached, 2_000, "whenDelivered");
    expect(proxy.stats.bytesUp).toBeGreaterThanOrEqual(100_000);
  });
});

describe("link schedule (throttle + delay + loss)", () => {
  test("a lost chunk holds the ones behind it, which keep crossing the link: they arrive with it, not a serialization time later", () => {
    // 1,000 bytes per ms, 50 ms each way, the first of 200 chunks (1,000 bytes each, all queued at 0) lost: 100 ms late.
    const link = { linkFree: 0, lastReadyAt: 0 };
    const ready = Array.from({ length: 200 }, (_, i) => scheduleOnLink(link, 1000, i === 0 ? 100 : 0, 0, 1_000_000, 50));
    expect(ready[0]).toBe(1 + 50 + 100);
    // Chunks 2..101 crossed the link during the hole and wait for it; later ones are not held.
    expect(ready[1]).toBe(151);
    expect(ready[100]).toBe(151);
    expect(ready[101]).toBe(102 + 50);
    // The last leaves the link at 200 ms: the whole transfer took its serialization plus one delay, the loss cost nothing at the end.
    expect(ready[199]).toBe(250);
    // Order is kept, and nothing arrives before it crossed the link and its delay.
    for (let i = 1; i < ready.length; i++) expect(ready[i]!).toBeGreaterThanOrEqual(Math.max(ready[i - 1]!, i + 1 + 50));
  });

  test("unthrottled: only the delay and the loss; a link idle meanwhile starts from now", () => {
    const link = { linkFree: 0, lastReadyAt: 0 };
    expect(scheduleOnLink(link, 1 << 20, 0, 10, 0, 25)).toBe(35);
    expect(scheduleOnLink(link, 1 << 20, 100, 10, 0, 25)).toBe(135);
    const paced = { linkFree: 0, lastReadyAt: 0 };
    expect(scheduleOnLink(paced, 1000, 0, 0, 1_000_000, 0)).toBe(1);
    expect(scheduleOnLink(paced, 1000, 0, 500, 1_000_000, 0)).toBe(501); // idle link: no banked time
  });
});

