/**
 * @module sys/librbd-worker — the Worker entry that runs librbd's blocking calls for
 * sys/librbd-offload.ts: `rbd_resize` and `rbd_diff_iterate2` on an image the main thread
 * opened (its address arrives in the request). One call at a time, in arrival order; one reply
 * per request.
 *
 * Allocation map: `rbd_diff_iterate2(whole_object = 1, include_parent = 1)`, only where the
 * image has a valid fast-diff object map (otherwise librbd would list every object in the
 * range from the OSDs: too slow per BLOCK_STATUS; qemu's rbd driver makes the same choice and
 * reports such images as all data). librbd may call the extent callback on its own threads
 * (the listing path completes on them), so the callback is a threadsafe JSCallback: Bun queues
 * every call, from any thread, onto this worker's event loop, in order, and they run after
 * rbd_diff_iterate2 returned. A last call made from here with `exists = -1` is queued behind
 * all of them and marks the end.
 *
 * Must be an extra entry point of every `bun build --compile` that uses RBD (build.ts).
 */
import { CFunction, dlopen, FFIType as T, JSCallback, ptr, type Pointer } from "bun:ffi";
import { librbdPath } from "./librbd.ts";
import type { OffloadReply, OffloadRequest } from "./librbd-offload.ts";

declare const self: Worker;

/** include/rbd/features.h and librbd.h. */
const RBD_FEATURE_FAST_DIFF = 1n << 4n;
const RBD_FLAG_FAST_DIFF_INVALID = 1n << 1n;

const rbd = dlopen(librbdPath(), {
  rbd_resize: { args: [T.ptr, T.u64], returns: T.i32 },
  rbd_get_features: { args: [T.ptr, T.ptr], returns: T.i32 },
  rbd_get_flags: { args: [T.ptr, T.ptr], returns: T.i32 },
  rbd_diff_iterate2: { args: [T.ptr, T.ptr, T.u64, T.u64, T.u8, T.u8, T.ptr, T.ptr], returns: T.i32 },
}).symbols;

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

const out = new BigUint64Array(1);

function hasFastDiff(image: Pointer): boolean {
  if (rbd.rbd_get_features(image, ptr(out)) < 0 || (out[0]! & RBD_FEATURE_FAST_DIFF) === 0n) return false;
  return rbd.rbd_get_flags(image, ptr(out)) >= 0 && (out[0]! & RBD_FLAG_FAST_DIFF_INVALID) === 0n;
}

function allocated(request: Extract<OffloadRequest, { kind: "allocated" }>): Promise<OffloadReply> {
  const image = request.image as Pointer;
  if (!hasFastDiff(image)) return Promise.resolve({ id: request.id, result: 0, extents: null });
  return new Promise((resolve) => {
    const extents: number[] = [];
    let result = 0;
    walk = { id: request.id, extents, finish: () => resolve({ id: request.id, result, extents }) };
    result = rbd.rbd_diff_iterate2(image, null, request.offset, request.length, 1, 1, onExtent.ptr, request.id as unknown as Pointer);
    endMarker(0, 0, -1, request.id as unknown as Pointer);
  });
}

async function serve(request: OffloadRequest): Promise<OffloadReply> {
  if (request.kind === "resize") return { id: request.id, result: rbd.rbd_resize(request.image as Pointer, request.size), extents: null };
  try {
    return await allocated(request);
  } finally {
    walk = null;
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
