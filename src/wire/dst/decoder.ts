/**
 * @module wire/dst/decoder — incremental DST frame decoder: socket chunks in, whole frames
 * out. Pure (no I/O); must never throw on any input and never loop: every loop iteration
 * consumes input or completes a frame, and a corrupt stream kills the decoder with a reason.
 *
 * Copies only what it must (perf-anchors: re-joining partial chunks was quadratic for 1 MiB
 * writes):
 * - a frame lying wholly inside one chunk is handed over as subarrays of that chunk;
 * - a frame spanning chunks is gathered into ONE buffer of the frame's exact size, allocated
 *   once its header is known, and each later chunk is copied into it exactly once.
 * The header is validated (invalidHeader with the current maxPayload) before any payload is
 * awaited, so a hostile length is refused at once instead of being buffered.
 */
import { errorMessage } from "../../lib/errors.ts";
import { HEADER_SIZE } from "./constants.ts";
import { decodeHeader, invalidHeader, type Header } from "./header.ts";

/**
 * Called once per frame, synchronously, in stream order. `frame` is the whole frame (header +
 * payload: what an AEAD tag will cover) and `payload` its tail. Both may be views of the pushed
 * chunk: Bun hands every socket `data` callback a fresh buffer, so keeping them is safe as long
 * as the pusher does not reuse its chunks.
 */
export type FrameHandler = (header: Header, payload: Uint8Array, frame: Uint8Array) => void;

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
  private frameFill = 0;

  /**
   * When true, frames that span chunks are gathered into one buffer reused for every such
   * frame (grown as needed), so the handler must be done with `payload`/`frame` when it
   * returns. The export's request handler is (its backend copies synchronously); the client,
   * which hands READ payloads to callers, is not. Saves an allocation and its page faults per
   * large frame.
   */
  private readonly reuse: boolean;
  private gather: Uint8Array | null = null;

  constructor(maxPayload: number, options: { reuseBuffers?: boolean } = {}) {
    this.maxPayload = maxPayload;
    this.reuse = options.reuseBuffers === true;
  }

  /** Bytes held back waiting for the rest of a frame. */
  get bufferedBytes(): number {
    return this.frame === null ? this.headerFill : this.frameFill;
  }

  /**
   * Feeds one chunk. Returns null while the stream is fine (possibly mid-frame), or the reason
   * the stream is corrupt; from then on the decoder is dead and returns that reason again.
   * If onFrame throws, the decoder dies too ("frame handler threw: ...") and the exception
   * propagates: the rest of the chunk can no longer be decoded in order. Not re-entrant.
   */
  push(chunk: Uint8Array, onFrame: FrameHandler): string | null {
    if (this.error !== null) return this.error;
    let pos = 0;
    for (;;) {
      if (this.frame !== null) {
        pos = this.fillFrame(chunk, pos);
        if (this.frameFill < this.frame.length) return null;
        const frame = this.frame;
        const header = this.frameHeader!;
        this.frame = null;
        this.frameHeader = null;
        this.frameFill = 0;
        this.deliver(onFrame, header, frame.subarray(HEADER_SIZE), frame);
        continue;
      }
      if (this.headerFill > 0) {
        pos = this.fillHeader(chunk, pos);
        if (this.headerFill < HEADER_SIZE) return null;
        this.headerFill = 0;
        const header = decodeHeader(this.headerBytes, 0);
        if (!this.accept(header)) return this.error;
        this.startFrame(header, this.headerBytes, 0, HEADER_SIZE);
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
        this.deliver(onFrame, header, frame.subarray(HEADER_SIZE), frame);
        continue;
      }
      this.startFrame(header, chunk, pos, available);
      return null;
    }
  }

  private accept(header: Header): boolean {
    const reason = invalidHeader(header, this.maxPayload);
    if (reason === null) return true;
    this.error = reason;
    this.headerFill = 0;
    return false;
  }

  /** Allocates the frame at its exact size and copies the `count` bytes seen so far. */
  private startFrame(header: Header, source: Uint8Array, at: number, count: number): void {
    const size = HEADER_SIZE + header.payloadLength;
    if (this.reuse) {
      if (this.gather === null || this.gather.length < size) this.gather = new Uint8Array(size);
      this.frame = this.gather.subarray(0, size);
    } else {
      this.frame = new Uint8Array(size);
    }
    this.frame.set(source.subarray(at, at + count), 0);
    this.frameFill = count;
    this.frameHeader = header;
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

  private deliver(onFrame: FrameHandler, header: Header, payload: Uint8Array, frame: Uint8Array): void {
    try {
      onFrame(header, payload, frame);
    } catch (error) {
      this.error = `frame handler threw: ${errorMessage(error)}`;
      throw error;
    }
  }
}
