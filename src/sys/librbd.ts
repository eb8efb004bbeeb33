/**
 * @module sys/librbd — Ceph's librados and librbd C APIs through bun:ffi (docs/rbd.md "Design"):
 * open an image (optionally at a snapshot) and run asynchronous I/O on it with `rbd_aio_*`
 * completions. Nothing above this file sees a pointer.
 *
 * Completions: librbd calls its completion callback on one of its own threads. The callback
 * is one `JSCallback` with `threadsafe: true`, which Bun queues onto the JavaScript thread;
 * there the request's handler reads the return value and releases the completion. No call made
 * on this thread blocks (docs/rbd.md "What blocks"): connecting, opening, closing, the size,
 * rbd_resize and rbd_diff_iterate2 run on worker threads (sys/librbd-offload.ts,
 * sys/librbd-worker.ts). The size in particular: librbd's rbd_get_size first re-reads the image
 * header from the OSDs when another client changed it, so it is read on a worker when the
 * image's update watch (`rbd_update_watch`, another threadsafe JSCallback) says it changed.
 *
 * Buffers handed to read and write stay referenced (and must stay unchanged) until their
 * completion: without librbd's cache, writes are zero-copy (librbd sends the caller's bytes).
 *
 * The libraries are loaded on first use, by absolute path (Debian: librbd1, librados2), so a
 * build without Ceph installed runs everything else and names the package when asked for RBD.
 */
import { existsSync } from "node:fs";
import { dlopen, FFIType as T, JSCallback, ptr, type Pointer } from "bun:ffi";
import { Errno, errnoMessage } from "../lib/errno.ts";
import { offload, type OffloadReply } from "./librbd-offload.ts";

/** Where Debian and other distributions install the libraries, in the order tried. */
const LIBRARY_DIRS = ["/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib"];

export class RbdError extends Error {
  /** A positive errno. */
  readonly errno: number;
  readonly call: string;
  constructor(call: string, errno: number, detail = "") {
    super(`${call}${detail}: ${errnoMessage(errno)} (errno ${errno})`);
    this.name = "RbdError";
    this.errno = errno;
    this.call = call;
  }
}

function find(file: string, pkg: string): string {
  for (const dir of LIBRARY_DIRS) {
    const path = `${dir}/${file}`;
    if (existsSync(path)) return path;
  }
  throw new RbdError(`loading ${file}`, 2, ` (install the Debian package ${pkg}; looked in ${LIBRARY_DIRS.join(", ")})`);
}

/** null when both libraries are installed; else what is missing and which package brings it. */
export function rbdLibraryProblem(): string | null {
  try {
    find("librados.so.2", "librados2");
    find("librbd.so.1", "librbd1");
    return null;
  } catch (error) {
    return (error as Error).message;
  }
}

/** Absolute path of librbd (for sys/librbd-worker.ts, which opens it on its own thread). */
export function librbdPath(): string {
  return find("librbd.so.1", "librbd1");
}

/** Absolute path of librados (for sys/librbd-worker.ts). */
export function libradosPath(): string {
  return find("librados.so.2", "librados2");
}

function loadRbd() {
  return dlopen(librbdPath(), {
    rbd_aio_read: { args: [T.ptr, T.u64, T.u64, T.ptr, T.ptr], returns: T.i32 },
    rbd_aio_write: { args: [T.ptr, T.u64, T.u64, T.ptr, T.ptr], returns: T.i32 },
    rbd_aio_discard: { args: [T.ptr, T.u64, T.u64, T.ptr], returns: T.i32 },
    rbd_aio_write_zeroes: { args: [T.ptr, T.u64, T.u64, T.ptr, T.i32, T.i32], returns: T.i32 },
    rbd_aio_flush: { args: [T.ptr, T.ptr], returns: T.i32 },
    rbd_aio_create_completion: { args: [T.ptr, T.ptr, T.ptr], returns: T.i32 },
    rbd_aio_get_return_value: { args: [T.ptr], returns: T.i64 },
    rbd_aio_release: { args: [T.ptr], returns: T.void },
  });
}

type Rbd = ReturnType<typeof loadRbd>["symbols"];

/** Completion of an asynchronous call: librbd's return value (≥ 0, or a negative errno). */
export type RbdDone = (result: number) => void;

interface Loaded {
  rbd: Rbd;
  callback: JSCallback;
  /** rbd_update_watch's callback: calls the handler registered under its argument. */
  watchCallback: JSCallback;
  watchers: Map<number, () => void>;
  nextWatch: number;
  /** Requests in flight by the id passed as the completion's argument; ids start at 1. */
  pending: Map<number, { done: RbdDone; keep: unknown }>;
  nextId: number;
  /** One out-parameter slot for rbd_aio_create_completion (JS is single-threaded). */
  slot: BigUint64Array;
}

let loaded: Loaded | null = null;

function libs(): Loaded {
  if (loaded !== null) return loaded;
  const rbd = loadRbd().symbols;
  const pending = new Map<number, { done: RbdDone; keep: unknown }>();
  const callback = new JSCallback(
    (completion: Pointer | null, arg: number | null) => {
      // On the JavaScript thread (threadsafe: Bun queued it from librbd's thread).
      const result = Number(rbd.rbd_aio_get_return_value(completion));
      rbd.rbd_aio_release(completion);
      const entry = pending.get(arg ?? 0);
      if (entry === undefined) return;
      pending.delete(arg!);
      entry.done(result);
    },
    { args: [T.ptr, T.ptr], returns: T.void, threadsafe: true },
  );
  const watchers = new Map<number, () => void>();
  // On the JavaScript thread too (threadsafe): librbd calls it on its own thread, and its
  // rbd_close waits for calls in flight, which only queue this one.
  const watchCallback = new JSCallback((arg: number | null) => watchers.get(arg ?? 0)?.(), { args: [T.ptr], returns: T.void, threadsafe: true });
  loaded = { rbd, callback, watchCallback, watchers, nextWatch: 1, pending, nextId: 1, slot: new BigUint64Array(1) };
  return loaded;
}

/** Requests submitted and not yet completed, in the whole process (tests and status). */
export function rbdRequestsInFlight(): number {
  return loaded?.pending.size ?? 0;
}

/**
 * Start one asynchronous call: create a completion whose callback resolves `done`, then
 * `submit(completion)`. A refused submission (negative return) completes at once with it.
 * `keep` (the buffer the call reads or fills) stays referenced until the completion.
 */
function start(submit: (completion: Pointer) => number, done: RbdDone, keep: unknown): void {
  const l = libs();
  const id = l.nextId;
  l.nextId = id >= 0x7fffffff ? 1 : id + 1;
  const made = l.rbd.rbd_aio_create_completion(id as unknown as Pointer, l.callback.ptr, l.slot);
  if (made < 0) return done(made);
  const completion = Number(l.slot[0]) as Pointer;
  l.pending.set(id, { done, keep });
  let submitted: number;
  try {
    submitted = submit(completion);
  } catch {
    // An argument bun:ffi cannot pass (ptr() of an empty view throws): nothing was submitted.
    l.pending.delete(id);
    l.rbd.rbd_aio_release(completion);
    return done(-Errno.EINVAL);
  }
  if (submitted < 0) {
    l.pending.delete(id);
    l.rbd.rbd_aio_release(completion);
    done(submitted);
  }
}

export interface ClusterOptions {
  /** ceph.conf to read; null: librados's default search (CEPH_CONF, /etc/ceph/ceph.conf, …). */
  conf: string | null;
  /** Client id without "client." (e.g. "admin"); null: librados's default. */
  id: string | null;
  keyring: string | null;
  /** rados_connect and monitor commands give up after this many seconds (client_mount_timeout, rados_mon_op_timeout). */
  connectTimeoutSeconds: number;
  /** An OSD operation fails with ETIMEDOUT after this many seconds (rados_osd_op_timeout). */
  osdOpTimeoutSeconds: number;
}

/** Which image to open: `snapshot` (if any) is served read-only. */
export interface ImageLocation {
  pool: string;
  namespace: string | null;
  image: string;
  snapshot: string | null;
  readOnly: boolean;
}

/** Object extents reported by block-status walks, in the whole process (tests). */
let objectsWalked = 0;

/** Objects the worker's block-status walks have reported so far, in the whole process (tests). */
export function rbdObjectsWalked(): number {
  return objectsWalked;
}

/**
 * An open image on its own cluster connection. Offsets and lengths are bytes; results are
 * librbd's (negative errno).
 */
export class RbdImage {
  private readonly rbd: Rbd;
  private readonly image: Pointer;
  private handler: (() => void) | null = null;
  private updatedEarly = false;
  private closed = false;

  private constructor(
    private readonly handles: { cluster: number; ioctx: number; image: number },
    /** The size when opened; later sizes come from `readSize` and `resize`. */
    readonly openedSize: number,
    private readonly watchKey: number,
  ) {
    this.rbd = libs().rbd;
    this.image = handles.image as Pointer;
  }

  /**
   * Connect, open the pool and the image, all on the opening worker (rados_connect waits up to
   * `connectTimeoutSeconds` for an unreachable cluster; this thread serves on meanwhile).
   */
  static async open(cluster: ClusterOptions, at: ImageLocation): Promise<RbdImage> {
    const l = libs();
    const key = l.nextWatch;
    l.nextWatch = key >= 0x7fffffff ? 1 : key + 1;
    let image: RbdImage | null = null;
    let early = false;
    // Registered before the size is read: a change after that read always arrives here.
    l.watchers.set(key, () => (image === null ? (early = true) : image.updated()));
    const reply: OffloadReply = await offload({
      kind: "open",
      conf: cluster.conf,
      clientId: cluster.id,
      keyring: cluster.keyring,
      connectTimeoutSeconds: cluster.connectTimeoutSeconds,
      osdOpTimeoutSeconds: cluster.osdOpTimeoutSeconds,
      ...at,
      watch: { callback: Number(l.watchCallback.ptr), arg: key },
    });
    if (reply.result < 0 || reply.handles === undefined) {
      l.watchers.delete(key);
      throw new RbdError(reply.call ?? "opening the image", reply.result < 0 ? -reply.result : 5, reply.detail ?? "");
    }
    image = new RbdImage(reply.handles, reply.size ?? 0, key);
    image.updatedEarly = early;
    return image;
  }

  /**
   * `handler` runs (on this thread) whenever another client changed the image's header (a
   * resize, a snapshot, a lock): the size may have changed. At once if that happened already.
   */
  onUpdate(handler: () => void): void {
    this.handler = handler;
    if (this.updatedEarly) {
      this.updatedEarly = false;
      handler();
    }
  }

  private updated(): void {
    if (this.closed) return;
    if (this.handler === null) this.updatedEarly = true;
    else this.handler();
  }

  /** The image's size, read on the worker (where librbd may first re-read the header). */
  readSize(done: (result: number, size: number) => void): void {
    void offload({ kind: "size", image: this.handles.image }).then((reply) => done(reply.result, reply.size ?? 0));
  }

  /**
   * rbd_resize on the worker (sys/librbd-offload.ts): growing updates the header, shrinking
   * deletes objects; either way this thread keeps serving meanwhile. `size` is the image's size
   * afterwards.
   */
  resize(size: number, done: (result: number, size: number) => void): void {
    void offload({ kind: "resize", image: this.handles.image, size }).then((reply) => done(reply.result, reply.size ?? 0));
  }

  /**
   * The allocation map of [offset, offset + length) on the worker (rbd_diff_iterate2, whole
   * objects, parent included): flat [offset, length, exists] triples in image order covering
   * [offset, offset + walked) (the walk stops once it holds more than `maxExtents` runs), or
   * null when the image has no valid fast-diff map (no cheap answer).
   */
  allocated(offset: number, length: number, maxExtents: number, done: (result: number, extents: number[] | null, walked: number) => void): void {
    void offload({ kind: "allocated", image: this.handles.image, offset, length, maxExtents }).then((reply) => {
      objectsWalked += (reply.extents?.length ?? 0) / 3;
      done(reply.result, reply.extents, reply.walked ?? length);
    });
  }

  read(offset: number, into: Uint8Array, done: RbdDone): void {
    start((c) => this.rbd.rbd_aio_read(this.image, offset, into.length, ptr(into), c), done, into);
  }

  write(offset: number, data: Uint8Array, done: RbdDone): void {
    start((c) => this.rbd.rbd_aio_write(this.image, offset, data.length, ptr(data), c), done, data);
  }

  discard(offset: number, length: number, done: RbdDone): void {
    start((c) => this.rbd.rbd_aio_discard(this.image, offset, length, c), done, null);
  }

  /** `thick`: keep the range allocated (RBD_WRITE_ZEROES_FLAG_THICK_PROVISION). */
  writeZeroes(offset: number, length: number, thick: boolean, done: RbdDone): void {
    start((c) => this.rbd.rbd_aio_write_zeroes(this.image, offset, length, c, thick ? 1 : 0, 0), done, null);
  }

  flush(done: RbdDone): void {
    start((c) => this.rbd.rbd_aio_flush(this.image, c), done, null);
  }

  /**
   * Close the image (rbd_close, which also ends its update watch), the pool and the cluster
   * connection, on the worker (releasing the exclusive lock writes to the OSDs). Once.
   */
  close(done: RbdDone): void {
    if (this.closed) return done(0);
    this.closed = true;
    libs().watchers.delete(this.watchKey);
    void offload({ kind: "close", ...this.handles }).then((reply) => done(reply.result));
  }
}
