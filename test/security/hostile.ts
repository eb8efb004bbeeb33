/**
 * @module test/security/hostile — tools for attacking the compiled export over real sockets:
 * start `dstd export` with a `[limits]` table and an optional descriptor limit, open raw
 * sockets from chosen loopback source addresses (127.0.0.0/8 is all loopback on Linux, so
 * each address is a distinct "source" to the export), speak just enough NBD to be admitted,
 * and read the export's CPU time from /proc.
 */
import { spawn, type Subprocess } from "bun";
import { readFileSync, writeFileSync } from "node:fs";
import net from "node:net";
import { ensureBinary } from "../helpers/binary.ts";
import { until } from "../helpers/wait.ts";
import { IHAVEOPT, Opt } from "../../src/wire/nbd/constants.ts";

export interface HostileExport {
  process: Subprocess<"ignore", "ignore", "pipe">;
  dstPort: number;
  nbdPort: number;
  log(): string;
  stop(): Promise<void>;
}

/**
 * `dstd export --memory 16MiB` on loopback (DST and NBD, allow 127.0.0.0/8 rw) with `limits`
 * written as a `[limits]` table in a config file, under `ulimit -n nofile` when given.
 */
export async function startHostileExport(
  dir: string,
  limits: Record<string, string | number>,
  options: { nofile?: number; args?: string[] } = {},
): Promise<HostileExport> {
  const body = Object.entries(limits).map(([k, v]) => `${k} = ${typeof v === "string" ? JSON.stringify(v) : v}`);
  const config = `${dir}/limits-${Math.random().toString(36).slice(2)}.toml`;
  if (body.length > 0) writeFileSync(config, `[limits]\n${body.join("\n")}\n`);
  const args = [
    ensureBinary(), "export", ...(body.length > 0 ? ["--config", config] : []),
    ...(options.args ?? ["--memory", "16MiB"]),
    "--listen", "127.0.0.1:0", "--nbd-listen", "127.0.0.1:0", "--allow", "127.0.0.0/8:rw",
  ];
  const command = options.nofile === undefined ? args : ["sh", "-c", `ulimit -n ${options.nofile} && exec "$@"`, "sh", ...args];
  const child = spawn(command, { stdin: "ignore", stdout: "ignore", stderr: "pipe" });
  let text = "";
  const decoder = new TextDecoder();
  void (async () => {
    for await (const chunk of child.stderr) text += decoder.decode(chunk);
  })();
  await until(() => /listening for NBD on 127\.0\.0\.1:\d+/.test(text) || child.exitCode !== null, "the export to listen", 15000);
  if (child.exitCode !== null) throw new Error(`export exited:\n${text}`);
  return {
    process: child,
    dstPort: Number(/listening for DST on 127\.0\.0\.1:(\d+)/.exec(text)![1]),
    nbdPort: Number(/listening for NBD on 127\.0\.0\.1:(\d+)/.exec(text)![1]),
    log: () => text,
    async stop() {
      child.kill("SIGTERM");
      await child.exited;
    },
  };
}

/** A raw TCP connection with its close observable. */
export interface RawPeer {
  socket: net.Socket;
  received: number;
  connected: Promise<void>;
  /** Resolves when the export closed it (EOF or reset). */
  closed: Promise<void>;
  isClosed: boolean;
  write(bytes: Uint8Array): void;
  /** Resolves once `n` bytes in all have arrived. */
  receive(n: number): Promise<void>;
  destroy(): void;
}

export function rawPeer(port: number, localAddress = "127.0.0.1"): RawPeer {
  const socket = net.connect({ host: "127.0.0.1", port, localAddress });
  let markClosed = () => {};
  let waiting: { n: number; resolve: () => void } | null = null;
  const peer: RawPeer = {
    socket,
    received: 0,
    connected: new Promise<void>((resolve) => socket.once("connect", () => resolve())),
    closed: new Promise<void>((resolve) => (markClosed = resolve)),
    isClosed: false,
    write: (bytes) => void socket.write(bytes),
    receive(n) {
      if (peer.received >= n) return Promise.resolve();
      return new Promise<void>((resolve) => (waiting = { n, resolve }));
    },
    destroy: () => socket.destroy(),
  };
  socket.on("data", (chunk: Buffer) => {
    peer.received += chunk.length;
    if (waiting !== null && peer.received >= waiting.n) {
      waiting.resolve();
      waiting = null;
    }
  });
  socket.on("error", () => {});
  socket.on("close", () => {
    peer.isClosed = true;
    markClosed();
  });
  return peer;
}

/**
 * NBD greeting (18 bytes), then flags + OPT_GO "disk" with no info requests. Rejects when the
 * export closes the connection first.
 */
export async function admitNbd(peer: RawPeer): Promise<void> {
  const closed = peer.closed.then(() => {
    throw new Error("closed by the export during the handshake");
  });
  await Promise.race([handshake(peer), closed]);
}

async function handshake(peer: RawPeer): Promise<void> {
  await peer.receive(18);
  const name = new TextEncoder().encode("disk");
  const go = new Uint8Array(16 + 4 + name.length + 2);
  const view = new DataView(go.buffer);
  view.setBigUint64(0, IHAVEOPT);
  view.setUint32(8, Opt.GO);
  view.setUint32(12, 4 + name.length + 2);
  view.setUint32(16, name.length);
  go.set(name, 20);
  const flags = new Uint8Array([0, 0, 0, 3]);
  peer.write(flags);
  peer.write(go);
  // INFO_EXPORT (20 + 12), INFO_BLOCK_SIZE (20 + 14), ACK (20)
  await peer.receive(18 + 32 + 34 + 20);
}

/** User + system CPU seconds the process has used (/proc/PID/stat, clock ticks of 1/100 s). */
export function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}
