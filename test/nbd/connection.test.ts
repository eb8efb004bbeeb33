import { describe, expect, test } from "bun:test";
import { createMemoryBackend } from "../../src/storage/local/memory.ts";
import type { Backend, Extent } from "../../src/storage/local/backend.ts";
import { Errno } from "../../src/lib/errno.ts";
import { BackendError } from "../../src/lib/errors.ts";
import { createLocalPort } from "../../src/storage/local/port.ts";
import type { BufferHold, StoragePort } from "../../src/storage/port.ts";
import { giveBuffer, pooledBufferBytes, takeBuffer } from "../../src/lib/buffer-pool.ts";
import { DeferredLayer, HeldWork } from "../../src/storage/layers/deferred.ts";
import { Cmd, CmdFlag, REPLY_FLAG_DONE, ReplyType, State } from "../../src/wire/nbd/constants.ts";
import { encodeRequest } from "../../src/wire/nbd/transmission.ts";
import { concat, harness, negotiate, parseReplies, randomBytes, view, type Harness, type Reply } from "./harness.ts";

const MiB = 1 << 20;

function simple(h: Harness, reads = new Map<bigint, number>()): Reply[] {
  return parseReplies(h.sink.read(), reads);
}

function errorOf(reply: Reply | undefined): number {
  if (!reply) throw new Error("no reply");
  if (reply.kind === "simple") return reply.error;
  if (reply.type === ReplyType.ERROR) return view(reply.payload).getUint32(0);
  return 0;
}

function ready(options: Parameters<typeof harness>[0] & { structured?: boolean; meta?: boolean } = {}): Harness {
  const h = harness(options);
  if ((options.mode ?? "newstyle") === "newstyle") negotiate(h, options);
  return h;
}

describe("simple replies (no structured negotiation)", () => {
  test("WRITE then READ returns the bytes, cookies echoed", () => {
    const h = ready();
    const data = randomBytes(8192, 3);
    h.send(encodeRequest({ type: Cmd.WRITE, cookie: 0xdead_beef_0000_0001n, offset: 4096, data }));
    h.send(encodeRequest({ type: Cmd.READ, cookie: 0xdead_beef_0000_0002n, offset: 4096, length: 8192 }));
    const replies = simple(h, new Map([[0xdead_beef_0000_0002n, 8192]]));
    expect(replies).toEqual([
      { kind: "simple", error: 0, cookie: 0xdead_beef_0000_0001n, data: null },
      { kind: "simple", error: 0, cookie: 0xdead_beef_0000_0002n, data },
    ]);
  });

  test("many requests in one chunk are answered in one sink write", () => {
    const h = ready();
    h.sink.writes = 0;
    const requests = Array.from({ length: 32 }, (_, i) => encodeRequest({ type: Cmd.READ, cookie: BigInt(i), offset: i * 4096, length: 4096 }));
    h.send(concat(...requests));
    expect(h.sink.writes).toBe(1);
    expect(simple(h, new Map(requests.map((_, i) => [BigInt(i), 4096])))).toHaveLength(32);
  });

  test("FLUSH, TRIM, WRITE_ZEROES (with NO_HOLE, FAST_ZERO, FUA) and CACHE succeed", () => {
    const h = ready({ size: 4 * MiB });
    h.send(encodeRequest({ type: Cmd.WRITE, cookie: 1n, offset: 0, data: new Uint8Array(MiB).fill(7) }));
    h.send(encodeRequest({ type: Cmd.FLUSH, cookie: 2n }));
    h.send(encodeRequest({ type: Cmd.WRITE_ZEROES, flags: CmdFlag.NO_HOLE | CmdFlag.FUA, cookie: 3n, offset: 0, length: 4096 }));
    h.send(encodeRequest({ type: Cmd.WRITE_ZEROES, flags: CmdFlag.FAST_ZERO, cookie: 4n, offset: 4096, length: 4096 }));
    h.send(encodeRequest({ type: Cmd.TRIM, flags: CmdFlag.FUA, cookie: 5n, offset: 2 * MiB, length: MiB }));
    h.send(encodeRequest({ type: Cmd.CACHE, cookie: 6n, offset: 0, length: MiB }));
    expect(simple(h).map((r) => [r.cookie, errorOf(r)])).toEqual([[1n, 0], [2n, 0], [3n, 0], [4n, 0], [5n, 0], [6n, 0]]);
    const check = new Uint8Array(8192);
    h.backend.read(0, check);
    expect(check.every((b) => b === 0)).toBe(true);
  });

  test("spec error numbers: ranges, unknown commands and flags", () => {
    const h = ready({ size: MiB });
    const cases: Array<[Uint8Array, number]> = [
      [encodeRequest({ type: Cmd.READ, offset: MiB - 512, length: 1024 }), Errno.EINVAL],
      [encodeRequest({ type: Cmd.READ, offset: 0xffff_ffff_ffff_f000n, length: 4096 }), Errno.EINVAL],
      [encodeRequest({ type: Cmd.WRITE, offset: MiB, data: new Uint8Array(1) }), Errno.ENOSPC],
      [encodeRequest({ type: Cmd.WRITE_ZEROES, offset: MiB - 1, length: 2 }), Errno.ENOSPC],
      [encodeRequest({ type: Cmd.READ, offset: 0, length: 33 * MiB }), Errno.EINVAL],
      [encodeRequest({ type: 99 }), Errno.EINVAL],
      [encodeRequest({ type: Cmd.READ, flags: 1 << 9, length: 1 }), Errno.EINVAL],
      [encodeRequest({ type: Cmd.READ, flags: CmdFlag.DF, length: 1 }), Errno.EINVAL], // DF needs structured replies
      [encodeRequest({ type: Cmd.WRITE, flags: CmdFlag.NO_HOLE, data: new Uint8Array(1) }), Errno.EINVAL],
      [encodeRequest({ type: Cmd.FLUSH, offset: 1 }), Errno.EINVAL],
      [encodeRequest({ type: Cmd.BLOCK_STATUS, length: 512 }), Errno.EINVAL], // no meta context
      [encodeRequest({ type: Cmd.CACHE, offset: MiB, length: 1 }), Errno.EINVAL],
    ];
    for (const [request, errno] of cases) {
      h.send(request);
      const replies = simple(h);
      expect(replies).toHaveLength(1);
      expect(errorOf(replies[0])).toBe(errno);
    }
    expect(h.sink.closed).toBe(false);
  });

  test("an export resized online serves its new range on a connection made before (port.ts: size is read per request)", () => {
    const h = ready({ size: MiB });
    h.send(encodeRequest({ type: Cmd.READ, cookie: 1n, offset: MiB, length: 4096 }));
    expect(errorOf(simple(h)[0])).toBe(Errno.EINVAL);
    let resized = -1;
    h.target.resize!(2 * MiB, (error) => (resized = error));
    expect(resized).toBe(0);
    h.send(encodeRequest({ type: Cmd.READ, cookie: 2n, offset: MiB, length: 4096 }));
    expect(simple(h, new Map([[2n, 4096]])).map(errorOf)).toEqual([0]);
    h.target.resize!(MiB / 2, (error) => (resized = error));
    h.send(encodeRequest({ type: Cmd.READ, cookie: 3n, offset: (3 * MiB) / 4, length: 4096 }));
    expect(errorOf(simple(h)[0])).toBe(Errno.EINVAL);
  });

  test("a WRITE above the maximum payload but under 32 MiB is consumed and refused; the stream continues", () => {
    const backend = createMemoryBackend(MiB);
    const h = ready({ target: createLocalPort(backend, { maxPayload: 4096 }) });
    h.send(concat(encodeRequest({ type: Cmd.WRITE, cookie: 1n, data: new Uint8Array(8192) }), encodeRequest({ type: Cmd.FLUSH, cookie: 2n })));
    expect(simple(h).map((r) => [r.cookie, errorOf(r)])).toEqual([[1n, Errno.EINVAL], [2n, 0]]);
  });

  test("a WRITE header claiming more than 32 MiB is a hard disconnect", () => {
    const h = ready();
    h.send(encodeRequest({ type: Cmd.WRITE, length: 33 * MiB }));
    expect(h.sink.destroyed).toBe(true);
    expect(h.logs.join("\n")).toContain("exceeds");
  });

  test("bad request magic closes this connection with a logged reason", () => {
    const h = ready();
    h.send(new Uint8Array(28).fill(0xee));
    expect(h.sink.destroyed).toBe(true);
    expect(h.logs.join("\n")).toContain("magic");
  });
});

describe("WRITE payloads split over many socket reads (streamed to a synchronous target)", () => {
  function spyBackend() {
    const backend = createMemoryBackend(MiB);
    const calls: Array<[number, number, boolean]> = [];
    let failAt = -1;
    const spy: Backend = Object.assign(Object.create(Object.getPrototypeOf(backend)), backend, {
      write(offset: number, source: Uint8Array, fua: boolean) {
        calls.push([offset, source.length, fua]);
        if (calls.length === failAt) throw new BackendError("media error", Errno.EIO);
        backend.write(offset, source, fua);
      },
    });
    return { spy, calls, backend, failOn: (n: number) => void (failAt = n) };
  }

  function sendInPieces(h: Harness, bytes: Uint8Array, size: number): void {
    for (let at = 0; at < bytes.length; at += size) h.send(bytes.subarray(at, at + size));
  }

  test("each piece is written in place, FUA only on the last, one reply", () => {
    const { spy, calls, backend } = spyBackend();
    const h = ready({ backend: spy });
    const data = randomBytes(10_000, 8);
    sendInPieces(h, concat(encodeRequest({ type: Cmd.WRITE, flags: CmdFlag.FUA, cookie: 1n, offset: 100, data }), encodeRequest({ type: Cmd.FLUSH, cookie: 2n })), 3000);
    expect(simple(h).map((r) => [r.cookie, errorOf(r)])).toEqual([[1n, 0], [2n, 0]]);
    expect(calls.length).toBeGreaterThan(1);
    expect(calls.map((c) => c[2])).toEqual([...calls.slice(1).map(() => false), true]);
    expect(calls.reduce((n, c) => n + c[1], 0)).toBe(10_000);
    const check = new Uint8Array(10_000);
    backend.read(100, check);
    expect([...check]).toEqual([...data]);
  });

  test("a failure in one piece fails the request once, after its payload is consumed", () => {
    const { spy, failOn } = spyBackend();
    failOn(2);
    const h = ready({ backend: spy });
    sendInPieces(h, concat(encodeRequest({ type: Cmd.WRITE, cookie: 1n, data: new Uint8Array(9000) }), encodeRequest({ type: Cmd.FLUSH, cookie: 2n })), 2000);
    expect(simple(h).map((r) => [r.cookie, errorOf(r)])).toEqual([[1n, Errno.EIO], [2n, 0]]);
  });

  test("read-only: a split WRITE writes nothing and gets one EPERM", () => {
    const { spy, calls } = spyBackend();
    const h = ready({ backend: spy, access: "ro" });
    sendInPieces(h, encodeRequest({ type: Cmd.WRITE, cookie: 1n, data: new Uint8Array(9000).fill(1) }), 1000);
    expect(simple(h).map(errorOf)).toEqual([Errno.EPERM]);
    expect(calls).toEqual([]);
  });
});

describe("read-only access", () => {
  test("every WRITE, TRIM and WRITE_ZEROES gets EPERM; reads still work", () => {
    const h = ready({ access: "ro", size: MiB });
    for (let i = 0; i < 3; i++) {
      h.send(encodeRequest({ type: Cmd.WRITE, cookie: 1n, data: new Uint8Array(512).fill(1) }));
      h.send(encodeRequest({ type: Cmd.TRIM, cookie: 2n, length: 512 }));
      h.send(encodeRequest({ type: Cmd.WRITE_ZEROES, cookie: 3n, length: 512 }));
      h.send(encodeRequest({ type: Cmd.WRITE, cookie: 4n, offset: 2 * MiB, data: new Uint8Array(1) })); // EPERM beats ENOSPC
      expect(simple(h).map(errorOf)).toEqual([Errno.EPERM, Errno.EPERM, Errno.EPERM, Errno.EPERM]);
    }
    h.send(encodeRequest({ type: Cmd.READ, cookie: 5n, length: 512 }));
    expect(simple(h, new Map([[5n, 512]]))[0]).toEqual({ kind: "simple", error: 0, cookie: 5n, data: new Uint8Array(512) });
    const check = new Uint8Array(512);
    h.backend.read(0, check);
    expect(check.every((b) => b === 0)).toBe(true);
  });
});

describe("structured replies", () => {
  test("READ is one OFFSET_DATA chunk with DONE", () => {
    const h = ready({ structured: true });
    const data = randomBytes(4096, 9);
    h.backend.write(8192, data, false);
    h.send(encodeRequest({ type: Cmd.READ, flags: CmdFlag.DF, cookie: 7n, offset: 8192, length: 4096 }));
    const [reply] = simple(h);
    expect(reply).toMatchObject({ kind: "chunk", flags: REPLY_FLAG_DONE, type: ReplyType.OFFSET_DATA, cookie: 7n });
    if (reply?.kind !== "chunk") throw new Error("expected a chunk");
    expect(view(reply.payload).getBigUint64(0)).toBe(8192n);
    expect(reply.payload.subarray(8)).toEqual(data);
  });

  test("zero-length READ is a NONE chunk, never a simple reply", () => {
    const h = ready({ structured: true });
    h.send(encodeRequest({ type: Cmd.READ, cookie: 1n, offset: 0, length: 0 }));
    expect(simple(h)).toEqual([{ kind: "chunk", flags: REPLY_FLAG_DONE, type: ReplyType.NONE, cookie: 1n, payload: new Uint8Array(0) }]);
  });

  test("errors are ERROR chunks carrying a message", () => {
    const h = ready({ structured: true, size: MiB });
    h.send(encodeRequest({ type: Cmd.READ, cookie: 3n, offset: MiB, length: 1 }));
    const [reply] = simple(h);
    if (reply?.kind !== "chunk") throw new Error("expected a chunk");
    expect(reply.type).toBe(ReplyType.ERROR);
    expect(reply.flags).toBe(REPLY_FLAG_DONE);
    const length = view(reply.payload).getUint16(4);
    expect(view(reply.payload).getUint32(0)).toBe(Errno.EINVAL);
    expect(new TextDecoder().decode(reply.payload.subarray(6, 6 + length))).toContain("READ");
  });

  test("BLOCK_STATUS reports holes and data from the backend, merged and clipped", () => {
    const h = ready({ structured: true, meta: true, size: 8 * MiB });
    h.backend.write(2 * MiB, new Uint8Array(MiB).fill(1), false);
    h.send(encodeRequest({ type: Cmd.BLOCK_STATUS, cookie: 1n, offset: MiB, length: 4 * MiB }));
    const [reply] = simple(h);
    if (reply?.kind !== "chunk") throw new Error("expected a chunk");
    expect(reply.type).toBe(ReplyType.BLOCK_STATUS);
    expect(reply.flags).toBe(REPLY_FLAG_DONE);
    const v = view(reply.payload);
    expect(v.getUint32(0)).toBe(1); // context id from SET_META_CONTEXT
    const descriptors = [];
    for (let at = 4; at < reply.payload.length; at += 8) descriptors.push([v.getUint32(at), v.getUint32(at + 4)]);
    const holeZero = State.HOLE | State.ZERO;
    expect(descriptors).toEqual([[MiB, holeZero], [MiB, 0], [2 * MiB, holeZero]]);
  });

  test("BLOCK_STATUS with REQ_ONE gives exactly one descriptor within the length", () => {
    const h = ready({ structured: true, meta: true, size: 8 * MiB });
    h.backend.write(0, new Uint8Array(MiB).fill(1), false);
    h.send(encodeRequest({ type: Cmd.BLOCK_STATUS, flags: CmdFlag.REQ_ONE, cookie: 1n, offset: 512, length: 4 * MiB }));
    const [reply] = simple(h);
    if (reply?.kind !== "chunk") throw new Error("expected a chunk");
    expect(reply.payload.length).toBe(4 + 8);
    expect([view(reply.payload).getUint32(4), view(reply.payload).getUint32(8)]).toEqual([MiB - 512, 0]);
  });

  test("BLOCK_STATUS past the end, or of length 0, is EINVAL (64-bit safe)", () => {
    const h = ready({ structured: true, meta: true, size: MiB });
    for (const [offset, length] of [[MiB - 512, 1024], [0xffff_ffff_ffff_fe00n, 0xffff_ffff], [0, 0]] as const) {
      h.send(encodeRequest({ type: Cmd.BLOCK_STATUS, cookie: 2n, offset, length }));
      expect(errorOf(simple(h)[0])).toBe(Errno.EINVAL);
    }
  });

  test("a broken extent map still yields a truthful reply (status 0, never an empty chunk)", () => {
    const target = syncTarget(MiB, { extents: () => [{ length: 0, hole: true, zero: true }] });
    const h = ready({ structured: true, meta: true, target });
    h.send(encodeRequest({ type: Cmd.BLOCK_STATUS, cookie: 1n, offset: 0, length: 4096 }));
    const [reply] = simple(h);
    if (reply?.kind !== "chunk") throw new Error("expected a chunk");
    expect([...reply.payload.subarray(4)]).toEqual([0, 0, 0x10, 0, 0, 0, 0, 0]);
  });
});

describe("backend failures are never success", () => {
  function failing(errno: number): Backend {
    const backend = createMemoryBackend(MiB);
    const fail = () => {
      throw new BackendError("disk on fire", errno);
    };
    return { ...backend, kind: "memory", size: MiB, blockSize: 4096, readOnly: false, description: "x", read: fail, write: fail, flush: fail, trim: fail, zero: fail, extents: fail, close() {} };
  }

  test.each([
    [Errno.EIO, Errno.EIO],
    [Errno.ENOSPC, Errno.ENOSPC],
    [Errno.EDQUOT, Errno.ENOSPC],
    [Errno.EFBIG, Errno.ENOSPC],
    [Errno.EROFS, Errno.EPERM],
    [Errno.EBADF, Errno.EIO],
  ])("backend errno %d is sent as %d for every command", (local, wire) => {
    const h = ready({ backend: failing(local) });
    h.send(encodeRequest({ type: Cmd.READ, cookie: 1n, length: 4096 }));
    h.send(encodeRequest({ type: Cmd.WRITE, cookie: 2n, data: new Uint8Array(16) }));
    h.send(encodeRequest({ type: Cmd.FLUSH, cookie: 3n }));
    h.send(encodeRequest({ type: Cmd.TRIM, cookie: 4n, length: 16 }));
    h.send(encodeRequest({ type: Cmd.WRITE_ZEROES, cookie: 5n, length: 16 }));
    const replies = simple(h);
    expect(replies.map((r) => [r.cookie, errorOf(r)])).toEqual([[1n, wire], [2n, wire], [3n, wire], [4n, wire], [5n, wire]]);
    // A failed simple READ carries no payload: the next reply follows right after its header.
    expect(replies[0]).toEqual({ kind: "simple", error: wire, cookie: 1n, data: null });
  });

  test("FAST_ZERO that would be slow fails fast with ENOTSUP and changes nothing", () => {
    const backend = createMemoryBackend(MiB);
    backend.write(0, new Uint8Array(4096).fill(5), false);
    const device: Backend = Object.assign(Object.create(Object.getPrototypeOf(backend)), backend, { kind: "device" });
    const h = ready({ backend: device });
    h.send(encodeRequest({ type: Cmd.WRITE_ZEROES, flags: CmdFlag.FAST_ZERO, cookie: 1n, length: 4096 }));
    expect(errorOf(simple(h)[0])).toBe(Errno.ENOTSUP);
    const check = new Uint8Array(4096);
    backend.read(0, check);
    expect(check.every((b) => b === 5)).toBe(true);
  });
});

describe("pipelining with an asynchronous target", () => {
  test("replies go out as requests complete, out of order, with the right data", async () => {
    const target = asyncTarget(MiB);
    const h = ready({ target });
    h.send(concat(
      encodeRequest({ type: Cmd.WRITE, cookie: 1n, offset: 0, data: new Uint8Array(4096).fill(1) }),
      encodeRequest({ type: Cmd.READ, cookie: 2n, offset: 0, length: 4096 }),
      encodeRequest({ type: Cmd.FLUSH, cookie: 3n }),
    ));
    expect(target.pending).toHaveLength(3);
    expect(h.sink.read().length).toBe(0);
    target.complete(2); // FLUSH first
    target.complete(1); // then the READ (served from memory before the write landed: zeroes)
    await Promise.resolve();
    expect(simple(h, new Map([[2n, 4096]]))).toEqual([
      { kind: "simple", error: 0, cookie: 3n, data: null },
      { kind: "simple", error: 0, cookie: 2n, data: new Uint8Array(4096) },
    ]);
    target.complete(0);
    await Promise.resolve();
    expect(simple(h)).toEqual([{ kind: "simple", error: 0, cookie: 1n, data: null }]);
  });

  test("in-flight bytes are bounded: reading pauses, and resumes when requests complete", async () => {
    const target = asyncTarget(16 * MiB);
    const h = ready({ target, limits: { maxInFlightBytes: 3 * MiB } });
    const requests = Array.from({ length: 8 }, (_, i) => encodeRequest({ type: Cmd.READ, cookie: BigInt(i), offset: i * MiB, length: MiB }));
    h.send(concat(...requests));
    expect(target.pending.length).toBe(4); // 4 MiB > 3 MiB stops the loop
    expect(h.sink.paused).toBe(true);
    while (target.pending.length > 0) {
      target.complete(0);
      await Promise.resolve();
    }
    expect(h.sink.paused).toBe(false);
    expect(simple(h, new Map(requests.map((_, i) => [BigInt(i), MiB])))).toHaveLength(8);
  });

  test("DISC waits for in-flight requests, then ends the connection without a reply", async () => {
    const target = asyncTarget(MiB);
    const h = ready({ target });
    h.send(concat(encodeRequest({ type: Cmd.WRITE, cookie: 1n, data: new Uint8Array(512) }), encodeRequest({ type: Cmd.DISC, cookie: 2n })));
    expect(h.sink.ended).toBe(false);
    target.complete(0);
    await Promise.resolve();
    expect(simple(h)).toEqual([{ kind: "simple", error: 0, cookie: 1n, data: null }]);
    expect(h.sink.ended).toBe(true);
    expect(h.sink.destroyed).toBe(false);
  });

  test("completions after the connection closed are ignored", async () => {
    const target = asyncTarget(MiB);
    const h = ready({ target });
    h.send(encodeRequest({ type: Cmd.READ, cookie: 1n, length: 512 }));
    h.connection.onClose("peer went away");
    target.complete(0);
    await Promise.resolve();
    expect(h.sink.read().length).toBe(0);
  });
});

describe("WRITE payloads handed over to a target that takes buffers (issue 10 item 3)", () => {
  /** An asynchronous target that keeps handed-over buffers past the completion, as the remote engine's replay log does. */
  class KeepingLayer extends DeferredLayer {
    readonly kept: Array<{ data: Uint8Array; copy: Uint8Array; hold: BufferHold }> = [];
    plainWrites = 0;
    constructor(
      size: number,
      readonly held = new HeldWork(),
    ) {
      super(createLocalPort(createMemoryBackend(size)), held.schedule);
    }
    get pending() {
      return this.held.pending;
    }
    complete(index: number) {
      this.held.release(index);
    }
    override write(offset: number, data: Uint8Array, fua: boolean, done: (errno: number) => void): void {
      this.plainWrites++;
      super.write(offset, data, fua, done);
    }
    override get writeHandedOver(): StoragePort["writeHandedOver"] {
      return (offset, data, fua, hold, done) => {
        hold.hold();
        this.kept.push({ data, copy: data.slice(), hold });
        super.write(offset, data, fua, done);
      };
    }
  }
  const keepingTarget = (size: number) => new KeepingLayer(size);

  test("a split payload is the target's until its last hold is dropped; then it goes back to the pool", async () => {
    const target = keepingTarget(4 * MiB);
    const h = ready({ target });
    const data = randomBytes(MiB, 21);
    const bytes = encodeRequest({ type: Cmd.WRITE, cookie: 1n, offset: MiB, data });
    for (let at = 0; at < bytes.length; at += 200_000) h.send(bytes.subarray(at, at + 200_000));
    expect(target.kept).toHaveLength(1);
    expect(target.plainWrites).toBe(0);
    const { data: handed, hold } = target.kept[0]!;
    expect(handed.length).toBe(MiB);
    target.complete(0);
    await Promise.resolve();
    expect(simple(h).map((r) => [r.cookie, errorOf(r)])).toEqual([[1n, 0]]);
    // Replied, but the target still holds the buffer: the pool must not have it back yet.
    const pooled = pooledBufferBytes();
    const again = takeBuffer(MiB);
    expect(again.buffer).not.toBe(handed.buffer);
    giveBuffer(again);
    expect([...handed.subarray(0, 64)]).toEqual([...data.subarray(0, 64)]);
    hold.drop();
    expect(pooledBufferBytes()).toBeGreaterThan(pooled);
    // Nobody changed the bytes while they were held (the engine's digest is taken over them).
    expect(Buffer.compare(target.kept[0]!.copy, data)).toBe(0);
    const check = new Uint8Array(MiB);
    target.read(MiB, check, () => {});
    target.complete(0);
    expect(Buffer.compare(check, data)).toBe(0);
  });

  test("a refused split WRITE is not handed over; a payload that arrived whole is written as before", async () => {
    const target = keepingTarget(MiB);
    const h = ready({ target });
    const big = encodeRequest({ type: Cmd.WRITE, cookie: 1n, offset: MiB - 4096, data: new Uint8Array(8192) });
    for (let at = 0; at < big.length; at += 3000) h.send(big.subarray(at, at + 3000));
    expect(simple(h).map((r) => [r.cookie, errorOf(r)])).toEqual([[1n, Errno.ENOSPC]]);
    h.send(encodeRequest({ type: Cmd.WRITE, cookie: 2n, offset: 0, data: new Uint8Array(4096).fill(3) }));
    expect(target.kept).toHaveLength(0);
    expect(target.plainWrites).toBe(1);
    target.complete(0);
    await Promise.resolve();
    expect(simple(h).map((r) => [r.cookie, errorOf(r)])).toEqual([[2n, 0]]);
  });

  test("a connection closed before the completion still lets its payload go back once the target drops it", async () => {
    const target = keepingTarget(4 * MiB);
    const h = ready({ target });
    const bytes = encodeRequest({ type: Cmd.WRITE, cookie: 1n, data: randomBytes(256 * 1024, 5) });
    h.send(bytes.subarray(0, 1000));
    h.send(bytes.subarray(1000));
    h.connection.onClose("peer went away");
    target.complete(0);
    await Promise.resolve();
    const pooled = pooledBufferBytes();
    target.kept[0]!.hold.drop();
    expect(pooledBufferBytes()).toBeGreaterThan(pooled);
  });
});

describe("socket backpressure", () => {
  test("large READ frames queued by the sink are not reused until it drains; reading pauses meanwhile", () => {
    const h = ready({ size: 16 * MiB, limits: { maxQueuedBytes: 2 * MiB } });
    h.sink.room = 64 * 1024;
    for (let i = 0; i < 8; i++) h.backend.write(i * MiB, new Uint8Array(MiB).fill(i + 1), false);
    const reads = new Map<bigint, number>();
    const requests = [];
    for (let i = 0; i < 8; i++) {
      requests.push(encodeRequest({ type: Cmd.READ, cookie: BigInt(i), offset: i * MiB, length: MiB }));
      reads.set(BigInt(i), MiB);
    }
    h.send(concat(...requests));
    expect(h.sink.paused).toBe(true);
    const out: Uint8Array[] = [];
    for (let round = 0; round < 20 && (h.sink.queuedBytes > 0 || h.sink.paused); round++) {
      h.sink.drain(); // peer reads everything; the connection hears onDrain and continues
      out.push(h.sink.read());
    }
    const replies = parseReplies(concat(...out), reads);
    expect(replies).toHaveLength(8);
    for (const reply of replies) {
      expect(reply.kind === "simple" && reply.data?.every((b) => b === Number(reply.cookie) + 1)).toBe(true);
    }
  });

  test("small replies batched while the sink holds the previous batch are not corrupted", () => {
    const h = ready({ size: MiB });
    h.sink.room = 100;
    h.backend.write(0, randomBytes(64 * 1024, 4), false);
    const reads = new Map<bigint, number>();
    const chunks = [];
    for (let i = 0; i < 16; i++) {
      chunks.push(encodeRequest({ type: Cmd.READ, cookie: BigInt(i), offset: i * 4096, length: 4096 }));
      reads.set(BigInt(i), 4096);
    }
    for (const chunk of chunks) h.send(chunk); // one batch per onData, each queued by the sink
    h.sink.drain();
    const replies = parseReplies(h.sink.read(), reads);
    const expected = randomBytes(64 * 1024, 4);
    expect(replies.map((r) => r.kind === "simple" && r.data)).toEqual(chunks.map((_, i) => expected.subarray(i * 4096, (i + 1) * 4096)));
  });
});

describe("kernel mode", () => {
  test("no greeting; simple replies only; DISC ends", () => {
    const h = ready({ mode: "kernel", size: MiB });
    h.send(encodeRequest({ type: Cmd.WRITE, cookie: 0x1234_0000_0000_0042n, offset: 512, data: new Uint8Array(512).fill(9) }));
    h.send(encodeRequest({ type: Cmd.READ, cookie: 0x1234_0000_0000_0043n, offset: 512, length: 512 }));
    const bytes = h.sink.read();
    expect(parseReplies(bytes, new Map([[0x1234_0000_0000_0043n, 512]]))).toEqual([
      { kind: "simple", error: 0, cookie: 0x1234_0000_0000_0042n, data: null },
      { kind: "simple", error: 0, cookie: 0x1234_0000_0000_0043n, data: new Uint8Array(512).fill(9) },
    ]);
    h.send(encodeRequest({ type: Cmd.DISC }));
    expect(h.sink.ended).toBe(true);
  });
});

/** A memory target whose operations complete only when the test says so (storage/layers/deferred.ts). */
function asyncTarget(size: number) {
  const held = new HeldWork();
  const target = new DeferredLayer(createLocalPort(createMemoryBackend(size)), held.schedule);
  return Object.assign(target, { pending: held.pending, complete: (index: number) => held.release(index) });
}

function syncTarget(size: number, overrides: { extents?: () => Extent[] }): StoragePort {
  const inner = createLocalPort(createMemoryBackend(size));
  return Object.assign(Object.create(Object.getPrototypeOf(inner)), inner, {
    extents: (_o: number, _l: number, _m: number, done: (e: number, x: Extent[] | null) => void) => done(0, overrides.extents!()),
  });
}
