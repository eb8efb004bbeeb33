/**
 * @module wire/dst/decoder — incremental DST frame decoder: socket chunks in, whole frames
 * out. Pure (no I/O); must never throw on any input and never loop: every loop iteration
 * consumes input or completes a frame, and a corrupt stream kills the decoder with a reason.
 *
 * Copies only what it must (re-joining partial chunks was measured quadratic for 1 MiB
 * writes):
 * - a frame lying wholly inside one chunk is handed over as subarrays of that chunk;
 * - a frame spanning chunks is gathered into ONE buffer of the frame's exact size, allocated
 *   once its header is known, and each later chunk is copied into it exactly once.
 * The header is validated (invalidHeader with the current maxPayload) before any payload is
 * awaited, so a hostile length is refused at once instead of being buffered.
 */
import { assert } from "../../lib/assert.ts";
import { errorMessage } from "../../lib/errors.ts";
import { HEADER_SIZE } from "./constants.ts";
import { decodeHeader, invalidHeader, type Header } from "./header.ts";

/**
 * Called once per frame, synchronously, in stream order. `frame` is the whole frame (header +
 * payload: what an AEAD tag will cover) and `payload` its tail. Both may be views of the pushed
 * chunk: Bun hands every socket `data` callback a fresh buffer, so keeping them is safe as long
 * as the pusher does not reuse its chunks. `owner` is what the allocator returned for a frame
 * gathered across chunks (null: the frame is a view of the pushed chunk, or was gathered into
 * a buffer the decoder owns). Returning `false` stops decoding after this frame: push() returns
 * and `stoppedAt` says where the unconsumed rest of the chunk begins.
 */
export type FrameHandler = (header: Header, payload: Uint8Array, frame: Uint8Array, owner: unknown) => unknown;

/**
 * Supplies the buffer a frame spanning chunks is gathered into (its exact size), with an owner
 * handed back in onFrame so the caller can account and release it. Returning null refuses for
 * now (a memory budget is exhausted): push() stops before the frame's body and the next push
 * asks again. Or, knowing the (validated) header, it may scatter the payload where it is
 * finally wanted (a READ reply straight into the caller's buffer, so the data is copied once,
 * from the socket chunk): `into` takes the payload's first into.length bytes, `rest` the
 * others (a digest); onFrame then gets `into` as both payload and frame, and `owner` (which
 * must say where `rest` is). A frame wholly inside one chunk is never scattered.
 */
export type FrameAllocator = (size: number, header: Header) => FrameBuffer | ScatterBuffer | null;
export interface FrameBuffer {
  bytes: Uint8Array;
  owner: unknown;
}
export interface ScatterBuffer {
  into: Uint8Array;
  rest: Uint8Array;
  owner: unknown;
}

export class FrameDecoder {
  /** Largest payload accepted; raise it after the handshake settles max_payload. */
  maxPayload: number;
  private error: string | null = null;
  /** Partial header bytes (fewer than HEADER_SIZE seen yet). */
  private readonly headerBytes = new Uint8Array(HEADER_SIZE);
  private headerFill = 0;
  /** Frame being gathered across chunks, with its validated header. */
  private frame: Uint8Array | null = null;
  private frameHeader: Header | null = null;
  private frameOwner: unknown = null;
  private frameFill = 0;
  /** Payload being scattered (see FrameAllocator), with its header; `frame` is null then. */
  private scatter: ScatterBuffer | null = null;
  private scatterHeader: Header | null = null;
  private scatterFill = 0;
  /** A validated header whose body buffer the allocator refused; retried on the next push. */
  private waiting: { header: Header; head: Uint8Array } | null = null;
  private stopped = -1;

  /**
   * When true (and no allocator is given), frames that span chunks are gathered into one
   * buffer reused for every such frame (grown as needed), so the handler must be done with
   * `payload`/`frame` when it returns. Saves an allocation and its page faults per large frame.
   */
  private readonly reuse: boolean;
  private readonly allocate: FrameAllocator | null;
  private gather: Uint8Array | null = null;

  constructor(maxPayload: number, options: { reuseBuffers?: boolean; allocate?: FrameAllocator } = {}) {
    this.maxPayload = maxPayload;
    this.reuse = options.reuseBuffers === true;
    this.allocate = options.allocate ?? null;
  }

  /** Bytes held back waiting for the rest of a frame. */
  /** Memory the unfinished frame holds: its whole size once it is gathered into its own buffer, else what is buffered. */
  get heldBytes(): number {
    return this.frame === null ? this.bufferedBytes : this.frame.length;
  }

  get bufferedBytes(): number {
    if (this.waiting !== null) return HEADER_SIZE;
    if (this.scatter !== null) return HEADER_SIZE + this.scatterFill;
    return this.frame === null ? this.headerFill : this.frameFill;
  }

  /** After push(): index in the chunk where decoding stopped early, or -1 if all was consumed. */
  get stoppedAt(): number {
    return this.stopped;
  }

  /**
   * Feeds one chunk. Returns null while the stream is fine (possibly mid-frame, or stopped
   * early: see stoppedAt), or the reason the stream is corrupt; from then on the decoder is
   * dead and returns that reason again. If onFrame throws, the decoder dies too ("frame handler
   * threw: ...") and the exception propagates. Not re-entrant.
   */
  push(chunk: Uint8Array, onFrame: FrameHandler): string | null {
    this.stopped = -1;
    if (this.error !== null) return this.error;
    let pos = 0;
    for (;;) {
      if (this.waiting !== null) {
        if (!this.startFrame(this.waiting.header, this.waiting.head, 0, HEADER_SIZE)) return this.stop(pos);
        this.waiting = null;
        continue;
      }
      if (this.scatter !== null) {
        pos = this.fillScatter(chunk, pos);
        const scatter = this.scatter;
        if (this.scatterFill < scatter.into.length + scatter.rest.length) return null;
        const header = this.scatterHeader!;
        this.scatter = null;
        this.scatterHeader = null;
        this.scatterFill = 0;
        if (!this.deliver(onFrame, header, scatter.into, scatter.into, scatter.owner)) return this.stop(pos);
        continue;
      }
      if (this.frame !== null) {
        pos = this.fillFrame(chunk, pos);
        if (this.frameFill < this.frame.length) return null;
        const frame = this.frame;
        const header = this.frameHeader!;
        const owner = this.frameOwner;
        this.frame = null;
        this.frameHeader = null;
        this.frameOwner = null;
        this.frameFill = 0;
        if (!this.deliver(onFrame, header, frame.subarray(HEADER_SIZE), frame, owner)) return this.stop(pos);
        continue;
      }
      if (this.headerFill > 0) {
        pos = this.fillHeader(chunk, pos);
        if (this.headerFill < HEADER_SIZE) return null;
        this.headerFill = 0;
        const header = decodeHeader(this.headerBytes, 0);
        if (!this.accept(header)) return this.error;
        if (!this.startFrame(header, this.headerBytes, 0, HEADER_SIZE)) {
          this.waiting = { header, head: this.headerBytes.slice() };
          return this.stop(pos);
        }
        continue;
      }
      const available = chunk.length - pos;
      if (available === 0) return null;
      if (available < HEADER_SIZE) {
        this.fillHeader(chunk, pos);
        return null;
      }
      const header = decodeHeader(chunk, pos);
      if (!this.accept(header)) return this.error;
      const size = HEADER_SIZE + header.payloadLength;
      if (available >= size) {
        // Fast path: the whole frame is in this chunk; hand out views, copy nothing.
        const frame = chunk.subarray(pos, pos + size);
        pos += size;
        if (!this.deliver(onFrame, header, frame.subarray(HEADER_SIZE), frame, null)) return this.stop(pos);
        continue;
      }
      if (!this.startFrame(header, chunk, pos, available)) return this.stop(pos);
      return null;
    }
  }

  private stop(pos: number): null {
    this.stopped = pos;
    return null;
  }

  private accept(header: Header): boolean {
    const reason = invalidHeader(header, this.maxPayload);
    if (reason === null) return true;
    this.error = reason;
    this.headerFill = 0;
    return false;
  }

  /**
   * Takes the frame's buffer at its exact size and copies the `count` bytes seen so far.
   * False when the allocator refused: nothing was consumed.
   */
  private startFrame(header: Header, source: Uint8Array, at: number, count: number): boolean {
    const size = HEADER_SIZE + header.payloadLength;
    if (this.allocate !== null) {
      const given = this.allocate(size, header);
      if (given === null) return false;
      if ("into" in given) {
        assert(given.into.length + given.rest.length === header.payloadLength, "scatter buffers do not add up to the payload");
        this.scatter = given;
        this.scatterHeader = header;
        this.scatterFill = 0;
        this.fillScatter(source.subarray(at + HEADER_SIZE, at + count), 0);
        return true;
      }
      this.frame = given.bytes.subarray(0, size);
      this.frameOwner = given.owner;
    } else if (this.reuse) {
      if (this.gather === null || this.gather.length < size) this.gather = new Uint8Array(size);
      this.frame = this.gather.subarray(0, size);
    } else {
      this.frame = new Uint8Array(size);
    }
    this.frame.set(source.subarray(at, at + count), 0);
    this.frameFill = count;
    this.frameHeader = header;
    return true;
  }

  /**
   * The stream ends here (the connection is gone): forget a frame being gathered and return
   * the allocator's owners it held, for the caller to release — a frame cut off mid-way never
   * reaches onFrame, and its counted memory would otherwise stay taken for good.
   */
  abandon(): unknown[] {
    const owners: unknown[] = [];
    if (this.frame !== null && this.frameOwner !== null) owners.push(this.frameOwner);
    if (this.scatter !== null && this.scatter.owner !== null) owners.push(this.scatter.owner);
    this.frame = null;
    this.frameOwner = null;
    this.frameHeader = null;
    this.scatter = null;
    this.scatterHeader = null;
    this.waiting = null;
    this.headerFill = 0;
    return owners;
  }

  /**
   * The frame being scattered into `into` must not touch it any more (its request ended some
   * other way, e.g. a deadline): the rest of its payload goes to a private buffer, and the
   * frame is delivered from there, incomplete (`owner` as given) — for a request that no
   * longer wants it, which is all it is good for.
   */
  release(into: Uint8Array): void {
    const scatter = this.scatter;
    if (scatter === null || scatter.into !== into) return;
    this.scatter = { into: new Uint8Array(into.length), rest: scatter.rest, owner: scatter.owner };
  }

  /**
   * Where the next received bytes may land without a copy: the unfilled part of the data of a
   * payload being scattered into its destination (a READ reply into the caller's buffer), or
   * null (push a chunk as usual). A transport that can read into a given buffer (node:net
   * `onread`, transport/direct-receive.ts) reads there and reports the count with
   * receivedDirect() before anything else runs; the destination is then never copied into.
   */
  get directTarget(): Uint8Array | null {
    const scatter = this.scatter;
    if (scatter === null || this.error !== null || this.scatterFill >= scatter.into.length) return null;
    return scatter.into.subarray(this.scatterFill);
  }

  /**
   * `count` bytes were received straight into directTarget (at most its length): account
   * them, and deliver the frame if that completed it. Same result as push().
   */
  receivedDirect(count: number, onFrame: FrameHandler): string | null {
    const scatter = this.scatter;
    assert(scatter !== null && count >= 0 && this.scatterFill + count <= scatter.into.length, "bytes received beyond the direct target");
    this.scatterFill += count;
    return this.push(EMPTY, onFrame);
  }

  private fillScatter(chunk: Uint8Array, pos: number): number {
    const { into, rest } = this.scatter!;
    let at = this.scatterFill;
    if (at < into.length) {
      const n = Math.min(into.length - at, chunk.length - pos);
      into.set(chunk.subarray(pos, pos + n), at);
      pos += n;
      at += n;
    }
    if (at >= into.length) {
      const n = Math.min(into.length + rest.length - at, chunk.length - pos);
      rest.set(chunk.subarray(pos, pos + n), at - into.length);
      pos += n;
      at += n;
    }
    this.scatterFill = at;
    return pos;
  }

  private fillHeader(chunk: Uint8Array, pos: number): number {
    const n = Math.min(HEADER_SIZE - this.headerFill, chunk.length - pos);
    this.headerBytes.set(chunk.subarray(pos, pos + n), this.headerFill);
    this.headerFill += n;
    return pos + n;
  }

  private fillFrame(chunk: Uint8Array, pos: number): number {
    const frame = this.frame!;
    const n = Math.min(frame.length - this.frameFill, chunk.length - pos);
    frame.set(chunk.subarray(pos, pos + n), this.frameFill);
    this.frameFill += n;
    return pos + n;
  }

  /** False when the handler asked to stop. */
  private deliver(onFrame: FrameHandler, header: Header, payload: Uint8Array, frame: Uint8Array, owner: unknown): boolean {
    try {
      return onFrame(header, payload, frame, owner) !== false;
    } catch (error) {
      this.error = `frame handler threw: ${errorMessage(error)}`;
      throw error;
    }
  }
}

const EMPTY = new Uint8Array(0);
