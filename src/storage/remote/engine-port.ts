/**
 * @module storage/remote/engine-port — a StoragePort backed by the DST client: the remote export,
 * reached through resend/reconnect/keepalive. Served to an NBD client (the kernel on a
 * socketpair for `dstd attach`, or qemu/libnbd on `--nbd-listen`), and used as a leg of a
 * storage tree (storage/remote/remote-port.ts, docs/tree.md).
 *
 * A request fails only when the engine's budget for it is spent (deadline, max_resends): an
 * outage shorter than that only delays it. Properties are read from the export's latest
 * WELCOME on every access (a reconnect or a resize notice may bring a new size). The engine
 * copies WRITE data at submit, so `data` is free for the caller to recycle as soon as write()
 * returns (`writeDataCopied`) — unless the caller hands the buffer over (`writeHandedOver`,
 * storage/port.ts BufferHold): the engine then sends and keeps the caller's buffer itself
 * (for resends, and in the replay log until a FLUSH covers it) and drops the hold when its
 * lease ends (engine/lease.ts). A tree node's export hands over the WRITE payloads it
 * received, so a hop copies nothing (docs/tree.md "Performance"). READ replies are decoded straight into `into`, and `readHashed` hands back the xxh3 digest
 * the engine verified them with (no second hash pass in a tree node's export). FLUSH completes
 * only when the export's disk has every write acknowledged before it. When the engine's
 * queues are full (submit says BUSY) requests wait here in order, with their write data
 * copied; the caller (the NBD front, a mirror) bounds how many it has in flight.
 *
 * Extents: DST has no block-status request, so the allocation map is unknown here and every
 * range is reported as data (never as zeroes): honest, if uninformative.
 *
 * An export that restarts may come back with a smaller MAX_PAYLOAD (docs/protocol.md §6.2,
 * §6.5 "Epoch"): `maxPayload` stays what it was when the port was made — a tree computed its
 * own limit from it once (storage/tree/legs.ts combinedFlags), a mirror checks a returning
 * leg against it, the kernel learnt it at the NBD handshake — and a READ or WRITE larger than
 * the live limit is split into pieces of it, as the engine's replay fits its pieces
 * (engine/replay-log.ts fitPieces), completing once when every piece did (first error wins);
 * the engine cuts what it took before the new WELCOME the same way (engine/fit.ts).
 * A TRIM or WRITE_ZEROES the export no longer offers fails with ENOTSUP and one log line
 * (docs/tree.md "Write intent and unclean stops").
 */
import { Errno } from "../../lib/errno.ts";
import { Feature } from "../../wire/dst/constants.ts";
import { BUSY, type Completion, type Request } from "../../engine/client-engine.ts";
import type { DstClient } from "../../client/dst-client.ts";
import type { BufferHold, Done, ExtentsDone, HashedDone, StoragePort, ZeroFlags } from "../port.ts";
import { validateRequest, type RequestKind } from "../validate.ts";

export function createEnginePort(client: DstClient, description: string): EnginePort {
  return new EnginePort(client, description);
}

export class EnginePort implements StoragePort {
  readonly kind: string = "remote";
  readonly canFastZero = false;
  // One DstClient serves every connection of the NBD front, and its FLUSH goes to every DST
  // link (client/dst-client.ts): a flush on any NBD connection covers all of them.
  readonly canMultiConn = true;
  readonly canBlockStatus = false;
  readonly synchronous = false;
  readonly writeDataCopied = true;
  /** Largest READ/WRITE taken: the export's limit when the port was made (module comment). */
  readonly maxPayload: number;
  private readonly queue: Array<{ request: Request; done: Completion }> = [];
  /** Features found withdrawn (already logged). */
  private withdrawn = 0;

  constructor(
    readonly client: DstClient,
    readonly description: string,
  ) {
    client.onRoom = () => this.drain();
    this.maxPayload = client.maxPayload;
  }

  private get features(): number {
    return this.client.engine.welcome!.features;
  }
  get size(): number {
    return this.client.size;
  }
  get blockSize(): number {
    return Math.max(512, this.client.blockSize);
  }
  get readOnly(): boolean {
    return !this.client.writable;
  }
  get canTrim(): boolean {
    return (this.features & Feature.TRIM) !== 0;
  }
  get canZero(): boolean {
    return (this.features & Feature.WRITE_ZEROES) !== 0;
  }
  get canFlush(): boolean {
    return (this.features & Feature.FLUSH) !== 0;
  }

  read(offset: number, into: Uint8Array, done: Done): void {
    const invalid = this.check("read", offset, into.length);
    if (invalid !== 0) return done(invalid);
    this.submitPieces({ kind: "read", offset, length: into.length, into }, (errno) => done(errno));
  }

  /** A READ whose reply's verified xxh3 digest comes back with it (engine Completion); none for one read in pieces. */
  readHashed(offset: number, into: Uint8Array, done: HashedDone): void {
    const invalid = this.check("read", offset, into.length);
    if (invalid !== 0) return done(invalid, null);
    this.submitPieces({ kind: "read", offset, length: into.length, into }, (errno, _data, _flags, xxh3) => done(errno, xxh3 ?? null));
  }

  write(offset: number, data: Uint8Array, fua: boolean, done: Done): void {
    const invalid = this.check("write", offset, data.length);
    if (invalid !== 0) return done(invalid);
    this.submitPieces({ kind: "write", offset, length: data.length, data, fua }, (errno) => done(errno));
  }

  /** `xxh3`: the data's XXH3-64 when the caller knows it (sent as the digest, no second pass: engine/txn.ts Request). */
  writeHandedOver(offset: number, data: Uint8Array, fua: boolean, hold: BufferHold, done: Done, xxh3?: bigint): void {
    const invalid = this.check("write", offset, data.length);
    if (invalid !== 0) return done(invalid);
    // One hold per piece: each piece's lease ends on its own (engine/lease.ts).
    const request: Request = { kind: "write", offset, length: data.length, data, fua, handOver: true, recycle: () => hold.drop(), xxh3 };
    this.submitPieces(request, (errno) => done(errno), () => hold.hold());
  }

  flush(done: Done): void {
    this.submit({ kind: "flush", offset: 0, length: 0 }, (errno) => done(errno));
  }

  trim(offset: number, length: number, fua: boolean, done: Done): void {
    const invalid = this.check("trim", offset, length) || this.offered(Feature.TRIM, "TRIM");
    if (invalid !== 0) return done(invalid);
    this.submit({ kind: "trim", offset, length, fua }, (errno) => done(errno));
  }

  zero(offset: number, length: number, flags: ZeroFlags, done: Done): void {
    // proto.md NBD_CMD_FLAG_FAST_ZERO: a remote zero cannot promise to be faster than a write.
    if (flags.fast) return done(Errno.ENOTSUP);
    const invalid = this.check("zero", offset, length) || this.offered(Feature.WRITE_ZEROES, "WRITE_ZEROES");
    if (invalid !== 0) return done(invalid);
    this.submit({ kind: "zero", offset, length, fua: flags.fua, noHole: flags.noHole }, (errno) => done(errno));
  }

  extents(offset: number, length: number, _maxExtents: number, done: ExtentsDone): void {
    const invalid = this.check("block-status", offset, length);
    if (invalid !== 0) return done(invalid, null);
    done(0, length === 0 ? [] : [{ length, hole: false, zero: false }]);
  }

  async close(): Promise<void> {}

  /** Requests taken but not yet submitted (the engine said BUSY). */
  get waiting(): number {
    return this.queue.length;
  }

  /**
   * Submits a READ or WRITE in pieces of at most the live limit (the export may have come back
   * with a smaller one: module comment); `done` runs once, after the last piece, with the
   * first error. `each` runs before each piece is submitted (a handed-over buffer's hold).
   */
  private submitPieces(request: Request, done: Completion, each?: () => void): void {
    const step = Math.max(1, this.client.maxPayload);
    if (request.length <= step) {
      each?.();
      return this.submit(request, done);
    }
    const count = Math.ceil(request.length / step);
    let left = count;
    let failure = 0;
    const joined: Completion = (errno) => {
      if (errno !== 0 && failure === 0) failure = errno;
      if (--left === 0) done(failure, null);
    };
    for (let at = 0; at < request.length; at += step) {
      const length = Math.min(step, request.length - at);
      // A piece's digest is not the whole buffer's: the engine hashes each piece itself.
      const piece: Request = { ...request, offset: request.offset + at, length, xxh3: undefined };
      if (request.data !== undefined) piece.data = request.data.subarray(at, at + length);
      if (request.into !== undefined) piece.into = request.into.subarray(at, at + length);
      each?.();
      this.submit(piece, joined);
    }
  }

  private submit(request: Request, done: Completion): void {
    if (this.queue.length === 0) {
      const accepted = this.client.submit(request, done);
      if (accepted === 0 && request.handOver === true) request.recycle?.(request.data!); // refused at once: not kept
      if (accepted !== BUSY) return;
    }
    // The caller recycles a plain write's buffer on return; a handed-over one is ours to keep.
    if (request.data !== undefined && request.handOver !== true) request.data = request.data.slice();
    // Its deadline runs from now, not from when room comes (the kernel's timer does too).
    request.since ??= this.client.now();
    this.queue.push({ request, done });
  }

  private drain(): void {
    while (this.queue.length > 0) {
      const next = this.queue[0]!;
      if (this.client.submit(next.request, next.done) === BUSY) return;
      this.queue.shift();
    }
  }

  /**
   * 0, or ENOTSUP when the export's latest WELCOME lacks `feature` (a caller sends it only
   * because it was offered before: the export came back without it); logged once per feature.
   */
  private offered(feature: number, name: string): number {
    if ((this.features & feature) !== 0) return 0;
    if ((this.withdrawn & feature) === 0) {
      this.withdrawn |= feature;
      this.client.log.warn(`${this.description}: the export no longer offers ${name} (its WELCOME after a reconnect lacks it): ${name} requests fail with ENOTSUP`);
    }
    return Errno.ENOTSUP;
  }

  /** Last line of defence before a request goes on the wire (storage/validate.ts). */
  private check(kind: RequestKind, offset: number, length: number): number {
    return validateRequest(kind, offset, length, { size: this.size, writable: !this.readOnly, maxPayload: this.maxPayload });
  }
}
