/**
 * @module sys/librbd-worker — the Worker entry that runs librados's and librbd's blocking calls
 * for sys/librbd-offload.ts (docs/rbd.md "What blocks"): connect and open an image, read its
 * size, `rbd_resize`, `rbd_diff_iterate2`, close. Handles arrive and leave as addresses. One
 * call at a time, in arrival order; one reply per request.
 *
 * Opening: dstd's defaults (timeouts, no cache) are set only where the client's ceph.conf does
 * not set the option (sys/ceph-conf.ts: a value set through rados_conf_set would win over the
 * file). The image's update watch (`rbd_update_watch`) is registered before its size is read,
 * so a header change after that read always reaches the port. `rbd_close` shuts the watch down.
 *
 * Allocation map: `rbd_diff_iterate2(whole_object = 1, include_parent = 1)`, only where the
 * image has a valid fast-diff object map (otherwise librbd would list every object in the
 * range from the OSDs: too slow per BLOCK_STATUS; qemu's rbd driver makes the same choice and
 * reports such images as all data). librbd may call the extent callback on its own threads
 * (the listing path completes on them), so the callback is a threadsafe JSCallback: Bun queues
 * every call, from any thread, onto this worker's event loop, in order, and they run after
 * rbd_diff_iterate2 returned. A last call made from here with `exists = -1` is queued behind
 * all of them and marks the end. The range is walked in windows, the first WINDOW_OBJECTS
 * objects long and each next one twice the last, and the walk stops once it holds more runs
 * than asked for (storage/port.ts: the work is bounded by the reply): one call over a whole
 * image reports every object written in it. Windows grow because every call loads the whole
 * object map from the OSDs again.
 *
 * Must be an extra entry point of every `bun build --compile` that uses RBD (build.ts).
 */
import { CFunction, dlopen, FFIType as T, JSCallback, type Pointer } from "bun:ffi";
import { cephConfSets } from "./ceph-conf.ts";
import { allocationExtents } from "./librbd-extents.ts";
import { libradosPath, librbdPath } from "./librbd.ts";
import { WINDOW_OBJECTS, type OffloadReply, type OffloadRequest } from "./librbd-offload.ts";

declare const self: Worker;

/** include/rbd/features.h and librbd.h. */
const RBD_FEATURE_FAST_DIFF = 1n << 4n;
const RBD_FLAG_FAST_DIFF_INVALID = 1n << 1n;
/** sizeof(rbd_image_info_t) (librbd.h); obj_size is its second u64. */
const RBD_IMAGE_INFO_SIZE = 160;

const rados = dlopen(libradosPath(), {
  rados_create: { args: [T.ptr, T.ptr], returns: T.i32 },
  rados_conf_read_file: { args: [T.ptr, T.ptr], returns: T.i32 },
  rados_conf_set: { args: [T.ptr, T.ptr, T.ptr], returns: T.i32 },
  rados_conf_get: { args: [T.ptr, T.ptr, T.ptr, T.u64], returns: T.i32 },
  rados_connect: { args: [T.ptr], returns: T.i32 },
  rados_shutdown: { args: [T.ptr], returns: T.void },
  rados_ioctx_create: { args: [T.ptr, T.ptr, T.ptr], returns: T.i32 },
  rados_ioctx_destroy: { args: [T.ptr], returns: T.void },
  rados_ioctx_set_namespace: { args: [T.ptr, T.ptr], returns: T.void },
}).symbols;

const rbd = dlopen(librbdPath(), {
  rbd_open: { args: [T.ptr, T.ptr, T.ptr, T.ptr], returns: T.i32 },
  rbd_open_read_only: { args: [T.ptr, T.ptr, T.ptr, T.ptr], returns: T.i32 },
  rbd_close: { args: [T.ptr], returns: T.i32 },
  rbd_update_watch: { args: [T.ptr, T.ptr, T.ptr, T.ptr], returns: T.i32 },
  rbd_get_size: { args: [T.ptr, T.ptr], returns: T.i32 },
  rbd_stat: { args: [T.ptr, T.ptr, T.u64], returns: T.i32 },
  rbd_resize: { args: [T.ptr, T.u64], returns: T.i32 },
  rbd_get_features: { args: [T.ptr, T.ptr], returns: T.i32 },
  rbd_get_flags: { args: [T.ptr, T.ptr], returns: T.i32 },
  rbd_diff_iterate2: { args: [T.ptr, T.ptr, T.u64, T.u64, T.u8, T.u8, T.ptr, T.ptr], returns: T.i32 },
}).symbols;

/** A NUL-terminated copy of `text`; passed itself as the pointer, so it lives through the call. */
function cstring(text: string): Uint8Array {
  return new TextEncoder().encode(`${text}\0`);
}

type Req<K extends OffloadRequest["kind"]> = Extract<OffloadRequest, { kind: K }>;

const out = new BigUint64Array(1);

function open(request: Req<"open">): OffloadReply {
  const { id } = request;
  const fail = (call: string, result: number, detail = ""): OffloadReply => ({ id, result, extents: null, call, detail });
  const name = request.clientId === null ? null : cstring(request.clientId);
  const created = rados.rados_create(out, name);
  if (created < 0) return fail("rados_create", created, request.clientId === null ? "" : ` (id ${request.clientId})`);
  const cluster = Number(out[0]) as Pointer;
  let ioctx: Pointer | null = null;
  const undo = (reply: OffloadReply): OffloadReply => {
    if (ioctx !== null) rados.rados_ioctx_destroy(ioctx);
    rados.rados_shutdown(cluster);
    return reply;
  };
  const conf = request.conf === null ? null : cstring(request.conf);
  const read = rados.rados_conf_read_file(cluster, conf);
  if (read < 0) return undo(fail("reading the Ceph configuration", read, request.conf === null ? " (default search path)" : ` ${request.conf}`));
  const fileSets = cephConfSets(request.conf, request.clientId);
  const set = (key: string, value: string): number => rados.rados_conf_set(cluster, cstring(key), cstring(value));
  const defaults: [string, string][] = [
    ["client_mount_timeout", String(request.connectTimeoutSeconds)],
    ["rados_mon_op_timeout", String(request.connectTimeoutSeconds)],
    ["rados_osd_op_timeout", String(request.osdOpTimeoutSeconds)],
    // No librbd cache: a write is on the OSDs when it completes (docs/rbd.md "Cache and copies").
    ["rbd_cache", "false"],
  ];
  for (const [key, value] of defaults) {
    const result = fileSets.has(key) ? 0 : set(key, value);
    if (result < 0) return undo(fail("rados_conf_set", result, ` ${key}`));
  }
  // Without a cache librbd may send the caller's buffer itself instead of a copy (it holds the
  // completion until it lets go of the buffer); with a cache the copy is required.
  const value = new Uint8Array(16);
  const key = cstring("rbd_cache");
  if (rados.rados_conf_get(cluster, key, value, value.length) === 0 && new TextDecoder().decode(value.subarray(0, value.indexOf(0))) === "false" && !fileSets.has("rbd_disable_zero_copy_writes")) {
    set("rbd_disable_zero_copy_writes", "false");
  }
  if (request.keyring !== null) {
    const result = set("keyring", request.keyring);
    if (result < 0) return undo(fail("rados_conf_set", result, " keyring"));
  }
  const connected = rados.rados_connect(cluster);
  if (connected < 0) return undo(fail("connecting to the Ceph cluster (rados_connect)", connected));
  const pool = cstring(request.pool);
  const made = rados.rados_ioctx_create(cluster, pool, out);
  if (made < 0) return undo(fail("opening the pool", made, ` '${request.pool}'`));
  ioctx = Number(out[0]) as Pointer;
  const namespace = request.namespace === null ? null : cstring(request.namespace);
  if (namespace !== null) rados.rados_ioctx_set_namespace(ioctx, namespace);
  const image = cstring(request.image);
  const snap = request.snapshot === null ? null : cstring(request.snapshot);
  const opened = (request.readOnly ? rbd.rbd_open_read_only : rbd.rbd_open)(ioctx, image, out, snap);
  const what = ` '${request.image}'${request.snapshot === null ? "" : `@${request.snapshot}`}`;
  if (opened < 0) return undo(fail("opening the image", opened, what));
  const handle = Number(out[0]) as Pointer;
  const handles = { cluster: Number(cluster), ioctx: Number(ioctx), image: Number(handle) };
  const watched = rbd.rbd_update_watch(handle, out, request.watch.callback as Pointer, request.watch.arg as unknown as Pointer);
  const sized = watched < 0 ? watched : rbd.rbd_get_size(handle, out);
  if (sized < 0) {
    rbd.rbd_close(handle);
    return undo(fail(watched < 0 ? "rbd_update_watch" : "rbd_get_size", sized, what));
  }
  return { id, result: 0, extents: null, handles, size: Number(out[0]) };
}

function close(request: Req<"close">): OffloadReply {
  const result = rbd.rbd_close(request.image as Pointer);
  rados.rados_ioctx_destroy(request.ioctx as Pointer);
  rados.rados_shutdown(request.cluster as Pointer);
  return { id: request.id, result, extents: null };
}

function size(request: { id: number; image: number }, result = 0): OffloadReply {
  if (result < 0) return { id: request.id, result, extents: null };
  const got = rbd.rbd_get_size(request.image as Pointer, out);
  return { id: request.id, result: got < 0 ? got : result, extents: null, size: got < 0 ? undefined : Number(out[0]) };
}

/** The walk being collected: its request id (the callback's argument) and triples so far. */
let walk: { id: number; extents: number[]; finish: () => void } | null = null;

const onExtent = new JSCallback(
  (offset: number | bigint, length: number | bigint, exists: number, arg: number | null) => {
    if (walk === null || (arg ?? 0) !== walk.id) return 0;
    if (exists < 0) walk.finish();
    else walk.extents.push(Number(offset), Number(length), exists === 0 ? 0 : 1);
    return 0;
  },
  { args: [T.u64, T.u64, T.i32, T.ptr], returns: T.i32, threadsafe: true },
);
/** The same callback called from here: queued behind every call librbd made before it. */
const endMarker = CFunction({ ptr: onExtent.ptr!, args: [T.u64, T.u64, T.i32, T.ptr], returns: T.i32 });

function hasFastDiff(image: Pointer): boolean {
  if (rbd.rbd_get_features(image, out) < 0 || (out[0]! & RBD_FEATURE_FAST_DIFF) === 0n) return false;
  return rbd.rbd_get_flags(image, out) >= 0 && (out[0]! & RBD_FLAG_FAST_DIFF_INVALID) === 0n;
}

/** One rbd_diff_iterate2 over [offset, offset + length), its triples appended to `extents`. */
function walkWindow(image: Pointer, id: number, offset: number, length: number, extents: number[]): Promise<number> {
  return new Promise((resolve) => {
    let result = 0;
    walk = { id, extents, finish: () => resolve(result) };
    result = rbd.rbd_diff_iterate2(image, null, offset, length, 1, 1, onExtent.ptr, id as unknown as Pointer);
    endMarker(0, 0, -1, id as unknown as Pointer);
  });
}

async function allocated(request: Req<"allocated">): Promise<OffloadReply> {
  const { id, offset, length, maxExtents } = request;
  const image = request.image as Pointer;
  if (!hasFastDiff(image)) return { id, result: 0, extents: null };
  const info = new Uint8Array(RBD_IMAGE_INFO_SIZE);
  const stat = rbd.rbd_stat(image, info, info.length);
  if (stat < 0) return { id, result: stat, extents: null };
  const objectSize = Math.max(1, Number(new DataView(info.buffer).getBigUint64(8, true)));
  const end = offset + length;
  const extents: number[] = [];
  let at = offset;
  for (let objects = WINDOW_OBJECTS; at < end; objects *= 2) {
    const stop = Math.min(end, (Math.floor(at / objectSize) + objects) * objectSize);
    const result = await walkWindow(image, id, at, stop - at, extents);
    if (result < 0) return { id, result, extents: null };
    at = stop;
    // More runs than asked for: the first maxExtents are complete, the walk is done.
    if (allocationExtents(offset, at - offset, extents, maxExtents + 1).length > maxExtents) break;
  }
  return { id, result: 0, extents, walked: at - offset };
}

async function serve(request: OffloadRequest): Promise<OffloadReply> {
  switch (request.kind) {
    case "open":
      return open(request);
    case "close":
      return close(request);
    case "size":
      return size(request);
    case "resize":
      return size(request, rbd.rbd_resize(request.image as Pointer, request.size));
    case "allocated":
      try {
        return await allocated(request);
      } finally {
        walk = null;
      }
  }
}

let queue: Promise<void> = Promise.resolve();
self.onmessage = (event: MessageEvent<OffloadRequest>) => {
  const request = event.data;
  // A failure answers its request (EIO) and never stops the queue behind it.
  queue = queue.then(() => serve(request)).then(
    (reply) => self.postMessage(reply),
    () => self.postMessage({ id: request.id, result: -5, extents: null } satisfies OffloadReply),
  );
};
