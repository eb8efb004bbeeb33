/**
 * @module sys/librbd-offload — librados and librbd calls that block, run on Workers of their
 * own (sys/librbd-worker.ts) so that the thread serving every connection never waits in them
 * (docs/rbd.md "What blocks"): connecting and opening an image, reading the size (librbd
 * re-reads the image header first when another client changed it), `rbd_resize`,
 * `rbd_diff_iterate2` (loads the object map from the OSDs), and closing.
 *
 * Two workers per process, each started on first use and kept (unref'd while idle, so it never
 * holds the process open), each running one call at a time in the order asked: one opens
 * images (`rados_connect` may wait `client_mount_timeout` for an unreachable cluster; a mirror
 * leg on such a cluster is reopened at every probe), the other runs every call on an open
 * image, so an unreachable cluster never delays another image's size, resize, block status or
 * close. Handles cross as their addresses (same process, same librados). The caller keeps an
 * image open until the answer arrives (RbdPort counts these calls in flight).
 *
 * Compiled executables embed the worker only as an extra entry point of the build (build.ts),
 * at its path relative to the common root of the entry points: `sys/librbd-worker.ts` for
 * dstd; both that and `src/sys/librbd-worker.ts` are tried, as kernel/resize.ts does.
 */
import { dirname } from "node:path";

/** What opening an image needs (sys/librbd.ts ClusterOptions and the image's place). */
export interface OpenCall {
  kind: "open";
  conf: string | null;
  clientId: string | null;
  keyring: string | null;
  /** client_mount_timeout and rados_mon_op_timeout, unless ceph.conf sets them. */
  connectTimeoutSeconds: number;
  /** rados_osd_op_timeout, unless ceph.conf sets it. */
  osdOpTimeoutSeconds: number;
  pool: string;
  namespace: string | null;
  image: string;
  snapshot: string | null;
  readOnly: boolean;
  /** rbd_update_watch's callback (a threadsafe JSCallback's address) and its argument. */
  watch: { callback: number; arg: number };
}

/** What the worker is asked: `image`, `ioctx` and `cluster` are addresses. */
export type OffloadCall =
  | OpenCall
  | { kind: "close"; image: number; ioctx: number; cluster: number }
  | { kind: "size"; image: number }
  | { kind: "resize"; image: number; size: number }
  | { kind: "allocated"; image: number; offset: number; length: number; maxExtents: number };
export type OffloadRequest = OffloadCall & { id: number };

/**
 * The worker's answer. `result` is librbd's (≥ 0, or a negative errno).
 * - "allocated": `extents` is null when the image keeps no valid fast-diff map (no cheap
 *   answer: treat all as data), else flat [offset, length, exists (1/0)] triples of whole
 *   objects, in image order, covering [offset, offset + `walked`) (the walk stops once it has
 *   more than maxExtents runs).
 * - "open", "size", "resize": `size`, the image's size afterwards.
 * - "open": `handles` on success; on failure `call` and `detail` say what failed.
 */
export interface OffloadReply {
  id: number;
  result: number;
  extents: number[] | null;
  walked?: number;
  size?: number;
  handles?: { cluster: number; ioctx: number; image: number };
  call?: string;
  detail?: string;
}

/** Objects in the first window of a block-status walk (4 GiB of 4 MiB objects); each next window doubles. */
export const WINDOW_OBJECTS = 1024;

/** Requests queued on one worker at most; beyond it a call fails with EAGAIN at once (but close). */
export const MAX_OFFLOAD_QUEUE = 4096;

const EAGAIN = 11;
const EIO = 5;

function workerUrls(moduleUrl = import.meta.url, modulePath = import.meta.path): string[] {
  if (!moduleUrl.startsWith("file:///$bunfs/")) return [new URL("./librbd-worker.ts", moduleUrl).href];
  const root = dirname(modulePath);
  return [`${root}/sys/librbd-worker.ts`, `${root}/src/sys/librbd-worker.ts`];
}

/** One worker and the calls waiting on it. */
class Lane {
  private worker: Worker | null = null;
  private readonly waiting = new Map<number, (reply: OffloadReply) => void>();
  /** Requests not yet answered, to re-send if the worker has to be started from another path. */
  private readonly pending = new Map<number, OffloadRequest>();
  failure: string | null = null;

  run(request: OffloadRequest): Promise<OffloadReply> {
    const { id } = request;
    if (this.failure !== null) return Promise.resolve({ id, result: -EIO, extents: null });
    // A close is never refused: the image would stay open (one per port, so few).
    if (this.waiting.size >= MAX_OFFLOAD_QUEUE && request.kind !== "close") return Promise.resolve({ id, result: -EAGAIN, extents: null });
    this.worker ??= this.start(workerUrls());
    return new Promise((resolve) => {
      this.waiting.set(id, (reply) => {
        this.pending.delete(id);
        resolve(reply);
      });
      this.pending.set(id, request);
      this.worker!.ref();
      this.worker!.postMessage(request);
    });
  }

  private start(urls: string[]): Worker {
    const url = urls[0]!;
    const w = new Worker(url);
    let answered = false;
    w.unref();
    w.addEventListener("message", (event: MessageEvent<OffloadReply>) => {
      answered = true;
      const resolve = this.waiting.get(event.data.id);
      if (resolve === undefined) return;
      this.waiting.delete(event.data.id);
      if (this.waiting.size === 0) w.unref();
      resolve(event.data);
    });
    w.addEventListener("error", (event: ErrorEvent) => {
      // Not loadable at this path (the compiled layout differs): try the next one.
      if (!answered && urls.length > 1) {
        w.terminate();
        this.worker = this.start(urls.slice(1));
        if (this.waiting.size > 0) this.worker.ref();
        for (const request of this.pending.values()) this.worker.postMessage(request);
        return;
      }
      this.failAll(`the librbd worker failed (${url}): ${event.message}`);
    });
    return w;
  }

  private failAll(reason: string): void {
    this.failure = reason;
    for (const [id, resolve] of this.waiting) resolve({ id, result: -EIO, extents: null });
    this.waiting.clear();
    this.worker?.terminate();
    this.worker = null;
  }
}

const opening = new Lane();
const images = new Lane();
let nextId = 1;

/** Run one blocking call on its worker. Never rejects: failures come back as a negative result. */
export function offload(call: OffloadCall): Promise<OffloadReply> {
  const id = nextId;
  nextId = id >= 0x7fffffff ? 1 : id + 1;
  return (call.kind === "open" ? opening : images).run({ ...call, id });
}

/** Why offloaded calls fail (a worker could not start), or null. For logs and tests. */
export function offloadFailure(): string | null {
  return opening.failure ?? images.failure;
}
