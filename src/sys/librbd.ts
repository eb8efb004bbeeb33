/**
 * @module sys/librbd — Ceph's librados and librbd C APIs through bun:ffi (docs/rbd.md "Design"):
 * connect to a cluster, open an image (optionally at a snapshot) and run asynchronous I/O on
 * it with `rbd_aio_*` completions. Nothing above this file sees a pointer.
 *
 * Completions: librbd calls its completion callback on one of its own threads. The callback
 * is one `JSCallback` with `threadsafe: true`, which Bun queues onto the JavaScript thread;
 * there the request's handler reads the return value and releases the completion. No call
 * here blocks the event loop per request; `connectCluster` (rados_connect, bounded by
 * `client_mount_timeout`) blocks once, while starting. rbd_resize and rbd_diff_iterate2,
 * which block, run on a worker thread (sys/librbd-offload.ts, sys/librbd-worker.ts).
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
import { offload } from "./librbd-offload.ts";

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

function loadRados() {
  return dlopen(find("librados.so.2", "librados2"), {
    rados_create: { args: [T.ptr, T.cstring], returns: T.i32 },
    rados_conf_read_file: { args: [T.ptr, T.cstring], returns: T.i32 },
    rados_conf_set: { args: [T.ptr, T.cstring, T.cstring], returns: T.i32 },
    rados_conf_get: { args: [T.ptr, T.cstring, T.ptr, T.u64], returns: T.i32 },
    rados_connect: { args: [T.ptr], returns: T.i32 },
    rados_shutdown: { args: [T.ptr], returns: T.void },
    rados_ioctx_create: { args: [T.ptr, T.cstring, T.ptr], returns: T.i32 },
    rados_ioctx_destroy: { args: [T.ptr], returns: T.void },
    rados_ioctx_set_namespace: { args: [T.ptr, T.cstring], returns: T.void },
  });
}

function loadRbd() {
  return dlopen(find("librbd.so.1", "librbd1"), {
    rbd_aio_open: { args: [T.ptr, T.cstring, T.ptr, T.ptr, T.ptr], returns: T.i32 },
    rbd_aio_open_read_only: { args: [T.ptr, T.cstring, T.ptr, T.ptr, T.ptr], returns: T.i32 },
    rbd_aio_close: { args: [T.ptr, T.ptr], returns: T.i32 },
    rbd_get_size: { args: [T.ptr, T.ptr], returns: T.i32 },
    rbd_get_stripe_unit: { args: [T.ptr, T.ptr], returns: T.i32 },
    rbd_resize: { args: [T.ptr, T.u64], returns: T.i32 },
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

type Rados = ReturnType<typeof loadRados>["symbols"];
type Rbd = ReturnType<typeof loadRbd>["symbols"];

/** Completion of an asynchronous call: librbd's return value (≥ 0, or a negative errno). */
export type RbdDone = (result: number) => void;

interface Loaded {
  rados: Rados;
  rbd: Rbd;
  callback: JSCallback;
  /** Requests in flight by the id passed as the completion's argument; ids start at 1. */
  pending: Map<number, { done: RbdDone; keep: unknown }>;
  nextId: number;
  /** One out-parameter slot for rbd_aio_create_completion (JS is single-threaded). */
  slot: BigUint64Array;
}

let loaded: Loaded | null = null;

function libs(): Loaded {
  if (loaded !== null) return loaded;
  const rados = loadRados().symbols;
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
  loaded = { rados, rbd, callback, pending, nextId: 1, slot: new BigUint64Array(1) };
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
  const made = l.rbd.rbd_aio_create_completion(id as unknown as Pointer, l.callback.ptr, ptr(l.slot));
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

function cstring(text: string): Uint8Array {
  return new TextEncoder().encode(`${text}\0`);
}

export interface ClusterOptions {
  /** ceph.conf to read; null: librados's default search (CEPH_CONF, /etc/ceph/ceph.conf, …). */
  conf: string | null;
  /** Client id without "client." (e.g. "admin"); null: librados's default. */
  id: string | null;
  keyring: string | null;
  /** rados_connect gives up after this many seconds (client_mount_timeout). */
  connectTimeoutSeconds: number;
}

/** A connected cluster handle with an I/O context on one pool. */
export class RbdCluster {
  private closed = false;
  private constructor(
    private readonly cluster: Pointer,
    private readonly ioctx: Pointer,
  ) {}

  /** Connect (blocks up to `connectTimeoutSeconds`) and open an I/O context on `pool`. */
  static connect(options: ClusterOptions, pool: string, namespace: string | null): RbdCluster {
    const { rados } = libs();
    const out = new BigUint64Array(1);
    const check = (call: string, result: number, detail = "") => {
      if (result < 0) throw new RbdError(call, -result, detail);
    };
    check("rados_create", rados.rados_create(ptr(out), options.id === null ? null : ptr(cstring(options.id))), options.id === null ? "" : ` (id ${options.id})`);
    const cluster = Number(out[0]) as Pointer;
    try {
      const set = (key: string, value: string) => check("rados_conf_set", rados.rados_conf_set(cluster, ptr(cstring(key)), ptr(cstring(value))), ` ${key}`);
      // Defaults first, so that ceph.conf may override them.
      set("client_mount_timeout", String(options.connectTimeoutSeconds));
      set("rados_mon_op_timeout", String(options.connectTimeoutSeconds));
      // No librbd cache: a write is on the OSDs when it completes (docs/rbd.md "Design").
      set("rbd_cache", "false");
      const conf = options.conf === null ? null : ptr(cstring(options.conf));
      check("reading the Ceph configuration", rados.rados_conf_read_file(cluster, conf), options.conf === null ? " (default search path)" : ` ${options.conf}`);
      // Without a cache librbd may send the caller's buffer itself instead of a copy (it holds
      // the completion until it lets go of the buffer); with a cache the copy is required.
      const value = new Uint8Array(16);
      if (rados.rados_conf_get(cluster, ptr(cstring("rbd_cache")), ptr(value), value.length) === 0 && new TextDecoder().decode(value.subarray(0, value.indexOf(0))) === "false") {
        set("rbd_disable_zero_copy_writes", "false");
      }
      if (options.keyring !== null) set("keyring", options.keyring);
      check("connecting to the Ceph cluster (rados_connect)", rados.rados_connect(cluster));
      check("opening the pool", rados.rados_ioctx_create(cluster, ptr(cstring(pool)), ptr(out)), ` '${pool}'`);
      const ioctx = Number(out[0]) as Pointer;
      if (namespace !== null) rados.rados_ioctx_set_namespace(ioctx, ptr(cstring(namespace)));
      return new RbdCluster(cluster, ioctx);
    } catch (error) {
      rados.rados_shutdown(cluster);
      throw error;
    }
  }

  /** Open `image` (at `snapshot`, read-only, when given) asynchronously. */
  openImage(image: string, snapshot: string | null, readOnly: boolean): Promise<RbdImage> {
    const l = libs();
    const out = new BigUint64Array(1);
    const name = cstring(image);
    const snap = snapshot === null ? null : cstring(snapshot);
    const open = readOnly ? l.rbd.rbd_aio_open_read_only : l.rbd.rbd_aio_open;
    return new Promise((resolve, reject) => {
      start(
        (c) => open(this.ioctx, ptr(name), ptr(out), snap === null ? null : ptr(snap), c),
        (result) => {
          if (result < 0) reject(new RbdError("opening the image", -result, ` '${image}'${snapshot === null ? "" : `@${snapshot}`}`));
          else resolve(new RbdImage(Number(out[0]) as Pointer));
        },
        [out, name, snap],
      );
    });
  }

  /** Destroy the I/O context and shut the connection down. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    const { rados } = libs();
    rados.rados_ioctx_destroy(this.ioctx);
    rados.rados_shutdown(this.cluster);
  }
}

/** An open image. Offsets and lengths are bytes; results are librbd's (negative errno). */
export class RbdImage {
  private readonly out = new BigUint64Array(1);
  private readonly rbd: Rbd;
  constructor(private readonly image: Pointer) {
    this.rbd = libs().rbd;
  }

  size(): number {
    const result = this.rbd.rbd_get_size(this.image, ptr(this.out));
    if (result < 0) throw new RbdError("rbd_get_size", -result);
    return Number(this.out[0]);
  }

  /** The object size (the stripe unit of an image without fancy striping). */
  stripeUnit(): number {
    const result = this.rbd.rbd_get_stripe_unit(this.image, ptr(this.out));
    if (result < 0) throw new RbdError("rbd_get_stripe_unit", -result);
    return Number(this.out[0]);
  }

  /**
   * rbd_resize on the worker (sys/librbd-offload.ts): growing updates the header, shrinking
   * deletes objects; either way this thread keeps serving meanwhile.
   */
  resize(size: number, done: RbdDone): void {
    void offload({ kind: "resize", image: Number(this.image), size }).then((reply) => done(reply.result));
  }

  /**
   * The allocation map of [offset, offset + length) on the worker (rbd_diff_iterate2, whole
   * objects, parent included): flat [offset, length, exists] triples in image order, or null
   * when the image has no valid fast-diff map (no cheap answer).
   */
  allocated(offset: number, length: number, done: (result: number, extents: number[] | null) => void): void {
    void offload({ kind: "allocated", image: Number(this.image), offset, length }).then((reply) => done(reply.result, reply.extents));
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

  close(done: RbdDone): void {
    start((c) => this.rbd.rbd_aio_close(this.image, c), done, null);
  }
}

