/**
 * @module sys/librbd-offload — librbd calls that block, run on a Worker of their own
 * (sys/librbd-worker.ts) so that the thread serving every connection never waits in them
 * (docs/rbd.md "What blocks"): `rbd_resize` (a header update, or deleting objects when
 * shrinking) and `rbd_diff_iterate2` (loads the object map from the OSDs).
 *
 * One worker per process, started on first use and kept (unref'd while idle, so it never
 * holds the process open). The worker runs one call at a time, in the order asked; the image
 * handle crosses as its address (same process, same librbd). The caller keeps the image open
 * until the answer arrives (RbdPort counts these calls in flight).
 *
 * Compiled executables embed the worker only as an extra entry point of the build (build.ts),
 * at its path relative to the common root of the entry points: `sys/librbd-worker.ts` for
 * dstd; both that and `src/sys/librbd-worker.ts` are tried, as kernel/resize.ts does.
 */
import { dirname } from "node:path";

/** What the worker is asked: `image` is the rbd_image_t's address. */
export type OffloadCall = { kind: "resize"; image: number; size: number } | { kind: "allocated"; image: number; offset: number; length: number };
export type OffloadRequest = OffloadCall & { id: number };

/**
 * The worker's answer. `result` is librbd's (≥ 0, or a negative errno). For "allocated":
 * `extents` is null when the image keeps no valid fast-diff map (no cheap answer: treat all as
 * data), else flat [offset, length, exists (1/0)] triples of whole objects, in image order.
 */
export interface OffloadReply {
  id: number;
  result: number;
  extents: number[] | null;
}

/** Requests queued on the worker at most; beyond it a call fails with EAGAIN at once. */
export const MAX_OFFLOAD_QUEUE = 4096;

const EAGAIN = 11;
const EIO = 5;

let worker: Worker | null = null;
let nextId = 1;
const waiting = new Map<number, (reply: OffloadReply) => void>();
let failure: string | null = null;

function workerUrls(moduleUrl = import.meta.url, modulePath = import.meta.path): string[] {
  if (!moduleUrl.startsWith("file:///$bunfs/")) return [new URL("./librbd-worker.ts", moduleUrl).href];
  const root = dirname(modulePath);
  return [`${root}/sys/librbd-worker.ts`, `${root}/src/sys/librbd-worker.ts`];
}

function failAll(reason: string): void {
  failure = reason;
  for (const [id, resolve] of waiting) resolve({ id, result: -EIO, extents: null });
  waiting.clear();
  worker?.terminate();
  worker = null;
}

function start(urls: string[]): Worker {
  const url = urls[0]!;
  const w = new Worker(url);
  let answered = false;
  w.unref();
  w.addEventListener("message", (event: MessageEvent<OffloadReply>) => {
    answered = true;
    const resolve = waiting.get(event.data.id);
    if (resolve === undefined) return;
    waiting.delete(event.data.id);
    if (waiting.size === 0) w.unref();
    resolve(event.data);
  });
  w.addEventListener("error", (event: ErrorEvent) => {
    // Not loadable at this path (the compiled layout differs): try the next one.
    if (!answered && urls.length > 1) {
      w.terminate();
      worker = start(urls.slice(1));
      if (waiting.size > 0) worker.ref();
      for (const request of pendingRequests.values()) worker.postMessage(request);
      return;
    }
    failAll(`the librbd worker failed (${url}): ${event.message}`);
  });
  return w;
}

/** Requests not yet answered, to re-send if the worker has to be started from another path. */
const pendingRequests = new Map<number, OffloadRequest>();

/** Run one blocking call on the worker. Never rejects: failures come back as a negative result. */
export function offload(request: OffloadCall): Promise<OffloadReply> {
  const id = nextId;
  nextId = id >= 0x7fffffff ? 1 : id + 1;
  if (failure !== null) return Promise.resolve({ id, result: -EIO, extents: null });
  if (waiting.size >= MAX_OFFLOAD_QUEUE) return Promise.resolve({ id, result: -EAGAIN, extents: null });
  worker ??= start(workerUrls());
  const full: OffloadRequest = { ...request, id };
  return new Promise((resolve) => {
    waiting.set(id, (reply) => {
      pendingRequests.delete(id);
      resolve(reply);
    });
    pendingRequests.set(id, full);
    worker!.ref();
    worker!.postMessage(full);
  });
}

/** Why offloaded calls fail (the worker could not start), or null. For logs and tests. */
export function offloadFailure(): string | null {
  return failure;
}
