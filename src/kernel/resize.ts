/**
 * @module kernel/resize — a new size for a running /dev/nbdN, sent through netlink from a
 * Worker (kernel/resize-worker.ts) so that the thread serving the device's I/O never waits
 * inside the kernel's size change (docs/kernel.md §4: nbd_set_size may freeze the queue until
 * in-flight requests complete, and those are served by this thread). The caller keeps
 * serving while it awaits `resizeDevice`.
 *
 * One short-lived worker per call: a resize is rare, and a worker of its own cannot be left
 * holding state. The kernel decides the outcome; the reply carries the size sysfs reports
 * afterwards.
 *
 * Compiled executables: Bun embeds a worker only when it is an extra entry point of the
 * build, at its path relative to the common root of all entry points (`bun build --compile`
 * docs, "Worker"): `kernel/resize-worker.ts` for dstd (entry points under src/), and
 * `src/kernel/resize-worker.ts` for programs compiled from the repository root (the VM probe).
 * Both are tried, in that order.
 *
 * Must not: block the caller's event loop, or run the netlink send on the caller's thread.
 */
import { dirname } from "node:path";
import { DstdError, errorMessage } from "../lib/errors.ts";
import type { ResizeOptions } from "./device.ts";

/** What the worker is asked to do. */
export interface ResizeRequest extends ResizeOptions {
  /** How long the worker's netlink request may wait for the kernel's ack. */
  netlinkTimeoutMs: number;
}

/** The worker's answer; `sizeBytes` is what /sys/block/nbdN/size says afterwards. */
export type ResizeReply =
  | { ok: true; sizeBytes: number | null }
  | { ok: false; code: string; message: string; errno: number | null };

export interface ResizeDeviceOptions extends ResizeOptions {
  /** Give up waiting after this long (default 60 s); the kernel may still apply the size. */
  timeoutMs?: number;
}

const DEFAULT_TIMEOUT_MS = 60_000;

/**
 * Set the size of the running device `index` (same backend identifier) from a worker and
 * resolve with the size the kernel reports afterwards. Errors are DstdErrors naming the device.
 */
export async function resizeDevice(o: ResizeDeviceOptions): Promise<number | null> {
  const timeoutMs = o.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const request: ResizeRequest = { index: o.index, sizeBytes: o.sizeBytes, blockSize: o.blockSize, backendId: o.backendId, netlinkTimeoutMs: timeoutMs };
  const reasons: string[] = [];
  for (const url of workerUrls()) {
    const outcome = await runWorker(url, request, timeoutMs);
    if (outcome.kind === "missing") {
      reasons.push(outcome.reason);
      continue;
    }
    if (outcome.kind === "timeout") {
      throw new DstdError("E_TIMEOUT", `nbd${o.index}: the kernel did not finish the size change within ${Math.round(timeoutMs / 1000)} s (it waits for in-flight I/O); the new size may still take effect`);
    }
    const reply = outcome.reply;
    if (!reply.ok) throw new DstdError(reply.code, reply.message, reply.errno === null ? {} : { errno: reply.errno });
    return reply.sizeBytes;
  }
  throw new DstdError("E_INTERNAL", `cannot start the resize worker (${reasons.join("; ")}): it must be an entry point of the build`);
}

/** Where the worker module is: next to this file, or embedded in a compiled executable. */
export function workerUrls(moduleUrl = import.meta.url, modulePath = import.meta.path): string[] {
  if (!moduleUrl.startsWith("file:///$bunfs/")) return [new URL("./resize-worker.ts", moduleUrl).href];
  const root = dirname(modulePath); // the executable's embedded root, e.g. /$bunfs/root
  return [`${root}/kernel/resize-worker.ts`, `${root}/src/kernel/resize-worker.ts`];
}

type Outcome = { kind: "reply"; reply: ResizeReply } | { kind: "missing"; reason: string } | { kind: "timeout" };

/** Start the worker at `url`, hand it the request once it is loaded, and await its reply. */
function runWorker(url: string, request: ResizeRequest, timeoutMs: number): Promise<Outcome> {
  return new Promise<Outcome>((resolve) => {
    let worker: Worker;
    let loaded = false;
    let settled = false;
    const finish = (outcome: Outcome): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      worker.terminate();
      resolve(outcome);
    };
    const timer = setTimeout(() => finish(loaded ? { kind: "timeout" } : { kind: "missing", reason: `${url}: not loaded within ${timeoutMs} ms` }), timeoutMs);
    try {
      worker = new Worker(url);
    } catch (error) {
      clearTimeout(timer);
      resolve({ kind: "missing", reason: `${url}: ${errorMessage(error)}` });
      return;
    }
    worker.unref();
    worker.addEventListener("message", (event: MessageEvent<{ ready: true } | ResizeReply>) => {
      if ("ready" in event.data) {
        loaded = true;
        worker.postMessage(request);
      } else {
        finish({ kind: "reply", reply: event.data });
      }
    });
    worker.addEventListener("error", (event: ErrorEvent) => {
      const reason = `${url}: ${event.message}`;
      finish(loaded ? { kind: "reply", reply: { ok: false, code: "E_INTERNAL", message: `the resize worker failed: ${event.message}`, errno: null } } : { kind: "missing", reason });
    });
  });
}
