/**
 * @module test/replication/pair — real-process replication for tests: a primary and a
 * secondary `dstd up` node on loopback (the compiled dist/dstd), each with its own config,
 * state directory and log directory; the secondary fetches through the fault proxy
 * (test/fault/proxy.ts) with an identity key granted `replica` on the primary.
 * `status()` asks `dstd replica status --json` of a node; `caughtUp()` waits for lag 0.
 */
import { spawn } from "bun";
import { createHash, randomBytes } from "node:crypto";
import { closeSync, mkdirSync, openSync, readSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { ensureBinary, runDstd } from "../helpers/binary.ts";
import { startNode, type NodeProcess } from "../helpers/node-process.ts";
import { FaultProxy } from "../fault/proxy.ts";
import { recordingLog } from "../helpers/log.ts";
import { DstClient } from "../../src/client/dst-client.ts";
import type { ReplicaStatus } from "../../src/daemon/replica-status.ts";

export const MiB = 1024 * 1024;

/**
 * A free loopback port below the ephemeral range (32768+), so that no outgoing connection of
 * this test's own processes can be holding it when a node binds it later; bound then released
 * (another process could still take it in between: the node's restart then retries).
 */
const handedOut = new Set<number>();
export async function freePort(): Promise<number> {
  for (;;) {
    const port = 20000 + Math.floor(Math.random() * 12000);
    // Two calls before either port is bound both see it free: never hand one out twice.
    if (handedOut.has(port)) continue;
    const free = await new Promise<boolean>((resolve) => {
      const server = createServer();
      server.once("error", () => resolve(false));
      server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
    });
    if (free) {
      handedOut.add(port);
      return port;
    }
  }
}

export interface Side {
  name: "a" | "b";
  config: string;
  stateDir: string;
  image: string;
  logDir: string;
  port: number;
  /** Prometheus metrics of the node: http://127.0.0.1:PORT/metrics. */
  metricsPort: number;
  node: NodeProcess | null;
}

export interface PairOptions {
  size: number;
  /** Primary's log_size (default 256MiB). */
  logSize?: string;
  /** Secondary [export.replication] extras, e.g. replay_delay. */
  secondaryExtra?: string;
  /** The primary names the secondary as its peer too (fencing after a failover), with key site-a. */
  symmetric?: boolean;
}

export class ReplicaPair {
  readonly a: Side;
  readonly b: Side;
  proxy!: FaultProxy;
  private constructor(
    readonly dir: string,
    readonly options: PairOptions,
    ports: [number, number, number, number],
  ) {
    const side = (name: "a" | "b", port: number, metricsPort: number): Side => ({
      name,
      config: join(dir, `${name}.toml`),
      stateDir: join(dir, `${name}.state`),
      image: join(dir, `${name}.img`),
      logDir: join(dir, `${name}.log`),
      port,
      metricsPort,
      node: null,
    });
    this.a = side("a", ports[0], ports[2]);
    this.b = side("b", ports[1], ports[3]);
  }

  /** A pair in a new directory `name` under `parent` (keys and configs written; nothing started). */
  static async in(parent: string, name: string, options: PairOptions): Promise<ReplicaPair> {
    const where = join(parent, name);
    mkdirSync(where);
    return await ReplicaPair.create(where, options);
  }

  /** A path in the pair's directory (sources, scratch files). */
  file(name: string): string {
    return join(this.dir, name);
  }

  /** Keys and configs written; nothing started. */
  static async create(dir: string, options: PairOptions): Promise<ReplicaPair> {
    const pair = new ReplicaPair(dir, options, [await freePort(), await freePort(), await freePort(), await freePort()]);
    const key = join(dir, "site-b.key");
    const keyA = join(dir, "site-a.key");
    for (const [identity, path] of [["site-b", key], ["site-a", keyA]]) {
      const made = await runDstd(["keygen", "--identity", identity!, "--out", path!]);
      if (made.exitCode !== 0) throw new Error(`keygen failed: ${made.stderr}`);
    }
    const symmetric = options.symmetric === true;
    pair.proxy = FaultProxy.start({ upstream: { host: "127.0.0.1", port: pair.a.port } });
    const { a, b } = pair;
    writeFileSync(
      a.config,
      `state_dir = "${a.stateDir}"
metrics_listen = "127.0.0.1:${a.metricsPort}"
[[key]]
identity = "site-b"
file = "${key}"
[[export]]
name = "disk"
file = "${a.image}"
size = ${options.size}
listen = "127.0.0.1:${a.port}"
allow = ["127.0.0.1:rw", "site-b@127.0.0.1:replica"]
[export.replication]
log_dir = "${a.logDir}"
log_size = "${options.logSize ?? "256MiB"}"
${symmetric ? `peer = "dst://127.0.0.1:${b.port}/disk"\nkey_file = "${keyA}"` : ""}
`,
    );
    writeFileSync(
      b.config,
      `state_dir = "${b.stateDir}"
metrics_listen = "127.0.0.1:${b.metricsPort}"
${symmetric ? `[[key]]\nidentity = "site-a"\nfile = "${keyA}"` : ""}
[[export]]
name = "disk"
file = "${b.image}"
size = ${options.size}
listen = "127.0.0.1:${b.port}"
allow = ["127.0.0.1:rw"${symmetric ? `, "site-a@127.0.0.1:replica"` : ""}]
[export.replication]
role = "secondary"
log_dir = "${b.logDir}"
peer = "dst://127.0.0.1:${pair.proxy.port}/disk"
key_file = "${key}"
${options.secondaryExtra ?? ""}
[client]
resend_interval = "500ms"
reconnect_min = "50ms"
reconnect_max = "500ms"
keepalive_interval = "1s"
keepalive_timeout = "3s"
`,
    );
    return pair;
  }

  async start(side: Side): Promise<void> {
    const node = startNode(["--config", side.config, "--state-dir", side.stateDir], { DSTD_STATE_DIR: undefined });
    side.node = node;
    await node.waitForLog("ready:", `node ${side.name} ready`, 30_000);
    // "ready:" is printed once every unit was started once, also when a start failed and its
    // supervisor retries it (a port another process took between freePort and the bind):
    // wait for the export's listener itself.
    await node.waitForLog(`listening for DST on 127.0.0.1:${side.port}`, `node ${side.name}'s export listening`, 30_000);
  }

  async stop(side: Side, signal: NodeJS.Signals = "SIGTERM"): Promise<number> {
    const node = side.node;
    side.node = null;
    return node === null ? 0 : await node.stop(signal);
  }

  async status(side: Side): Promise<ReplicaStatus> {
    let result = await runDstd(["replica", "status", "disk", "--json", "--state-dir", side.stateDir]);
    // The export unit may be restarting (its supervisor retries a failed start every second).
    for (let i = 0; i < 20 && result.exitCode !== 0 && result.stderr.includes("no replicated export"); i++) {
      await Bun.sleep(250);
      result = await runDstd(["replica", "status", "disk", "--json", "--state-dir", side.stateDir]);
    }
    if (result.exitCode !== 0) throw new Error(`replica status on ${side.name} failed: ${result.stderr}\nits log:\n${side.node?.stderr().slice(-3000)}`);
    return (JSON.parse(result.stdout) as { replicas: ReplicaStatus[] }).replicas[0]!;
  }

  async metrics(side: Side): Promise<string> {
    return await (await fetch(`http://127.0.0.1:${side.metricsPort}/metrics`)).text();
  }

  async replica(side: Side, ...args: string[]): Promise<{ exitCode: number; stdout: string; stderr: string }> {
    return await runDstd(["replica", ...args, "--state-dir", side.stateDir]);
  }

  /** One gauge of a node's dstd_replica_* metrics (null: absent). */
  async gauge(side: Side, name: string, labels = 'export="disk"'): Promise<number | null> {
    const text = await this.metrics(side);
    const line = text.split("\n").find((l) => l.startsWith(`${name}{${labels}} `));
    return line === undefined ? null : Number(line.slice(line.lastIndexOf(" ") + 1));
  }

  /**
   * Waits until the secondary reports lag 0 with the primary's last durable seq applied, in the
   * state replicating. Polls the metrics endpoints (cheap: no process per poll), then confirms
   * with `dstd replica status`.
   */
  async caughtUp(limitMs: number): Promise<ReplicaStatus> {
    const deadline = performance.now() + limitMs;
    for (;;) {
      try {
        const [primarySeq, seq, lag, replicating] = await Promise.all([
          this.gauge(this.a, "dstd_replica_seq"),
          this.gauge(this.b, "dstd_replica_seq"),
          this.gauge(this.b, "dstd_replica_lag_bytes"),
          this.gauge(this.b, "dstd_replica_state", 'export="disk",role="secondary",state="replicating"'),
        ]);
        if (lag === 0 && seq === primarySeq && replicating === 1) {
          const status = await this.status(this.b);
          if (status.lag_bytes === 0 && status.seq === primarySeq && status.state === "replicating") return status;
        }
      } catch {
        // a node restarting: its endpoint is back in a moment
      }
      if (performance.now() > deadline) throw new Error(`secondary did not catch up in ${limitMs} ms: ${JSON.stringify(await this.status(this.b))} vs primary seq ${(await this.status(this.a)).seq}`);
      await Bun.sleep(100);
    }
  }

  /**
   * Both nodes up behind a paced link (`delayMs` each way, `bytesPerSecond`), the secondary's
   * fetching and replay paused, and `source` copied into the primary: what the shipping
   * benchmarks measure from (bench/replication-*.ts).
   */
  async pausedBehindLink(delayMs: number, bytesPerSecond: number, source: string, loss = 0): Promise<void> {
    await this.start(this.a);
    await this.start(this.b);
    this.proxy.delay(delayMs);
    if (loss > 0) this.proxy.loss(loss, 2 * delayMs);
    this.proxy.throttle(bytesPerSecond);
    await this.replica(this.b, "pause", "disk");
    const copied = await copyInto(source, this.a.port);
    if (copied.exitCode !== 0) throw new Error(copied.output);
  }

  /** Polls `side`'s `dstd replica status` until `ok` holds (an observable between processes). */
  async waitFor(side: Side, ok: (s: ReplicaStatus) => boolean, what: string, limitMs = 120_000): Promise<ReplicaStatus> {
    const deadline = performance.now() + limitMs;
    for (;;) {
      const s = await this.status(side);
      if (ok(s)) return s;
      if (performance.now() > deadline) throw new Error(`${what}: not reached in ${limitMs} ms: ${JSON.stringify(s)}\n${side.node?.stderr().slice(-3000) ?? ""}`);
      await Bun.sleep(100);
    }
  }

  /** Waits until `old` replicates `primary`: no sync, lag 0, at the primary's seq (after a handover or a resync). */
  async follows(old: Side, primary: Side, limitMs = 120_000): Promise<ReplicaStatus> {
    const deadline = performance.now() + limitMs;
    for (;;) {
      const seq = (await this.status(primary)).seq;
      const s = await this.status(old);
      if (s.state === "replicating" && (s.sync ?? null) === null && s.lag_bytes === 0 && s.seq === seq) return s;
      if (performance.now() > deadline) throw new Error(`node ${old.name} did not follow node ${primary.name} (seq ${seq}): ${JSON.stringify(s)}\n${old.node?.stderr().slice(-3000) ?? ""}`);
      await Bun.sleep(200);
    }
  }

  async close(): Promise<void> {
    await this.stop(this.a, "SIGKILL");
    await this.stop(this.b, "SIGKILL");
    this.proxy?.close();
  }
}

/** `dstd copy SOURCE dst://127.0.0.1:PORT/disk` to completion. */
export async function copyInto(source: string, port: number, extra: string[] = []): Promise<{ exitCode: number; output: string }> {
  const child = spawn([ensureBinary(), "copy", source, `dst://127.0.0.1:${port}/disk`, ...extra], { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  const [out, err] = await Promise.all([new Response(child.stdout).text(), new Response(child.stderr).text()]);
  return { exitCode: await child.exited, output: out + err };
}

/** sha256 of the first `length` bytes of a file. */
export function hashPrefix(path: string, length: number): string {
  const hash = createHash("sha256");
  const fd = openSync(path, "r");
  const buffer = new Uint8Array(4 * MiB);
  try {
    for (let at = 0; at < length; ) {
      const n = readSync(fd, buffer, 0, Math.min(buffer.length, length - at), at);
      if (n <= 0) {
        hash.update(new Uint8Array(Math.min(buffer.length, length - at)));
        at += Math.min(buffer.length, length - at);
        continue;
      }
      hash.update(buffer.subarray(0, n));
      at += n;
    }
  } finally {
    closeSync(fd);
  }
  return hash.digest("hex");
}

/** Writes `length` random bytes at `offset` of the export on `port` (1 MiB writes, then a flush); returns them. */
export async function writeAt(port: number, offset: number, length: number): Promise<Uint8Array> {
  const data = new Uint8Array(randomBytes(length));
  const client = await DstClient.open({ address: { transport: "tcp", host: "127.0.0.1", port }, exportName: "disk", log: recordingLog(), deadlineMs: 30_000 });
  try {
    const writes: Promise<void>[] = [];
    for (let at = 0; at < length; at += MiB) writes.push(client.write(offset + at, data.subarray(at, Math.min(length, at + MiB))));
    await Promise.all(writes);
    await client.flush();
  } finally {
    await client.close();
  }
  return data;
}
