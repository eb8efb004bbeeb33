/**
 * @module test/vm/probe-serve — helpers for the in-VM probe: serve one socket-pair end with
 * the real kernel-mode NBD server (nbd/connection.ts) over an in-memory export, run a
 * guest command without blocking the event loop, and await with a deadline.
 *
 * Must not: do blocking I/O on the event loop — the same loop serves the kernel's NBD
 * requests, so a synchronous read of /dev/nbdN here would deadlock the probe.
 */
import { QueuedSink } from "../../src/transport/queued-sink.ts";
import { NbdConnection } from "../../src/nbd/connection.ts";
import type { StoragePort } from "../../src/storage/port.ts";
import "../../src/kernel/genl-socket.ts"; // the Bun.connect({ fd }) type augmentation

export interface Served {
  label: string;
  /** Bytes the kernel sent on this connection (requests + write payloads). */
  bytesIn: number;
  /** Resolves with the close reason when the connection ends (peer closed or we did). */
  closed: Promise<string>;
  /** Close our end now (simulates the serving daemon dying). */
  kill(): void;
}

/** Adopt `fd` into Bun's loop and serve the kernel's NBD requests on it from `target`. */
export async function serveKernelEnd(fd: number, target: StoragePort, label: string): Promise<Served> {
  const sink = new QueuedSink();
  let handler: NbdConnection | null = null;
  let markClosed: (reason: string) => void = () => {};
  const served: Served = {
    label,
    bytesIn: 0,
    closed: new Promise<string>((resolve) => (markClosed = resolve)),
    kill: () => sink.socket?.terminate(),
  };
  sink.socket = await Bun.connect({
    fd,
    socket: {
      binaryType: "uint8array",
      data(_s, chunk) {
        served.bytesIn += chunk.length;
        handler?.onData(chunk);
      },
      drain() {
        sink.flush();
        handler?.onDrain();
      },
      close(_s, error) {
        handler?.onClose(error ? String(error) : null);
        markClosed(error ? String(error) : "closed");
      },
      error(_s, error) {
        markClosed(`error: ${error.message}`);
      },
    },
  });
  handler = new NbdConnection(
    sink,
    { transport: "unix", address: `kernel:${label}`, port: 0 },
    {
      mode: "kernel",
      exportName: "probe",
      resolve: () => ({ target, access: "rw" }),
      list: () => [],
      log: { info: (m) => console.log(`INFO: [${label}] ${m}`), warn: (m) => console.log(`INFO: [${label}] warn: ${m}`) },
    },
  );
  return served;
}

export interface CommandResult {
  code: number;
  output: string;
  ms: number;
}

/** Run a guest command in a child process (never on this thread: it may do I/O we serve). */
export async function run(argv: string[], options: { uid?: number; gid?: number } = {}): Promise<CommandResult> {
  const started = performance.now();
  const child = Bun.spawn(argv, { stdout: "pipe", stderr: "pipe", stdin: "ignore", ...options });
  const [out, err, code] = await Promise.all([
    new Response(child.stdout).text(),
    new Response(child.stderr).text(),
    child.exited,
  ]);
  return { code, output: (out + err).trim(), ms: performance.now() - started };
}

/** `promise`, or "timeout" after `ms`. */
export async function within<T>(promise: Promise<T>, ms: number): Promise<T | "timeout"> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<"timeout">((resolve) => (timer = setTimeout(() => resolve("timeout"), ms)));
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Poll `probe` every 50 ms until it returns true or `ms` pass. */
export async function waitFor(probe: () => boolean, ms: number): Promise<boolean> {
  const deadline = performance.now() + ms;
  while (!probe()) {
    if (performance.now() > deadline) return false;
    await Bun.sleep(50);
  }
  return true;
}
