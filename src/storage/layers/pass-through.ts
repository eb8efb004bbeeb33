/**
 * @module storage/layers/pass-through — the base of every layer: a StoragePort that forwards
 * each call to the port it wraps. A layer subclasses it and overrides the few calls it
 * changes (nbdkit's filters over `next_ops` are the model: filters/error/error.c is a few
 * one-line callbacks). Properties are read through on every access, so a resize below is
 * seen above at once. Every property and optional call of StoragePort (storage/port.ts) is
 * forwarded, `resize`, `writeDataCopied`, `writeHandedOver` and `readHashed` included: a layer that dropped them would make an
 * export over it unresizable, or the NBD front hold each WRITE's buffer until the remote
 * acknowledged it although the engine below copied it.
 */
import type { BufferHold, Done, ExtentsDone, HashedDone, StoragePort, ZeroFlags } from "../port.ts";

export class PassThrough implements StoragePort {
  constructor(protected readonly next: StoragePort) {}

  /** The port this layer wraps: for lookups through layers (storage/tree/mirror-legs.ts), not for I/O. */
  get below(): StoragePort {
    return this.next;
  }

  get kind(): string {
    return this.next.kind;
  }
  get description(): string {
    return this.next.description;
  }
  get size(): number {
    return this.next.size;
  }
  get blockSize(): number {
    return this.next.blockSize;
  }
  get maxPayload(): number {
    return this.next.maxPayload;
  }
  get readOnly(): boolean {
    return this.next.readOnly;
  }
  get canTrim(): boolean {
    return this.next.canTrim;
  }
  get canZero(): boolean {
    return this.next.canZero;
  }
  get canFastZero(): boolean {
    return this.next.canFastZero;
  }
  get canFlush(): boolean {
    return this.next.canFlush;
  }
  get canMultiConn(): boolean {
    return this.next.canMultiConn;
  }
  get canBlockStatus(): boolean {
    return this.next.canBlockStatus;
  }
  get synchronous(): boolean {
    return this.next.synchronous;
  }
  /**
   * The port below's promise, kept only while `write` is this class's own (it hands `data`
   * down at once). A layer that overrides `write` may hold `data` past its return (queued,
   * logged later, deferred), so it promises nothing unless it overrides this getter too.
   */
  get writeDataCopied(): boolean {
    return this.write === PassThrough.prototype.write && this.next.writeDataCopied === true;
  }
  /**
   * Present exactly when the port below takes handed-over buffers and `write` is this
   * class's own (a layer that overrides `write` must decide for itself, as above).
   */
  get writeHandedOver(): StoragePort["writeHandedOver"] {
    const next = this.next;
    if (next.writeHandedOver === undefined || this.write !== PassThrough.prototype.write) return undefined;
    return (offset: number, data: Uint8Array, fua: boolean, hold: BufferHold, done: Done, xxh3?: bigint) =>
      next.writeHandedOver!(offset, data, fua, hold, done, xxh3);
  }
  /**
   * Present exactly when the port below reports hashes and `read` is this class's own (a
   * layer that overrides `read` may change the data, so the hash below would not be its own).
   */
  get readHashed(): StoragePort["readHashed"] {
    const next = this.next;
    if (next.readHashed === undefined || this.read !== PassThrough.prototype.read) return undefined;
    return (offset: number, into: Uint8Array, done: HashedDone) => next.readHashed!(offset, into, done);
  }
  /** Present exactly when the port below can resize. */
  get resize(): ((size: number, done: Done) => void) | undefined {
    const next = this.next;
    if (next.resize === undefined) return undefined;
    return (size: number, done: Done) => next.resize!(size, done);
  }
  /** The port below's reason to refuse a resize, when it gives one. */
  get resizeProblem(): ((size: number) => string | null) | undefined {
    const next = this.next;
    if (next.resizeProblem === undefined) return undefined;
    return (size: number) => next.resizeProblem!(size);
  }

  read(offset: number, into: Uint8Array, done: Done): void {
    this.next.read(offset, into, done);
  }
  write(offset: number, data: Uint8Array, fua: boolean, done: Done): void {
    this.next.write(offset, data, fua, done);
  }
  flush(done: Done): void {
    this.next.flush(done);
  }
  trim(offset: number, length: number, fua: boolean, done: Done): void {
    this.next.trim(offset, length, fua, done);
  }
  zero(offset: number, length: number, flags: ZeroFlags, done: Done): void {
    this.next.zero(offset, length, flags, done);
  }
  extents(offset: number, length: number, maxExtents: number, done: ExtentsDone): void {
    this.next.extents(offset, length, maxExtents, done);
  }
  close(): Promise<void> {
    return this.next.close();
  }
}
