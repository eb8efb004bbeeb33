/**
 * @module storage/remote/engine-port — a StoragePort backed by the DST client engine: the remote
 * export, reached through resend/reconnect/keepalive. Served to an NBD client (the kernel on a
 * socketpair for `dstd attach`, or qemu/libnbd on `--nbd-listen`), and used as a leg of a
 * storage tree (storage/remote/remote-port.ts, docs/tree.md).
 *
 * A request fails only when the engine's budget for it is spent (deadline, max_resends):
 * an outage shorter than that only delays it. Properties are read from the export's latest
 * WELCOME on every access (a reconnect may bring a new one). The engine copies WRITE data into
 * its own frame at submit, so `data` is free as soon as write() returns; READ data is copied
 * into `into`. FLUSH completes only when the export's disk has every write acknowledged
 * before it.
 *
 * Extents: DST has no block-status request, so the allocation map is unknown here and every
 * range is reported as data (never as zeroes): honest, if uninformative.
 */
import { Errno } from "../../lib/errno.ts";
import { Feature, Perm } from "../../wire/dst/constants.ts";
import type { ClientEngine } from "../../engine/client-engine.ts";
import type { Done, ExtentsDone, StoragePort, ZeroFlags } from "../port.ts";
import { validateRequest, type RequestKind } from "../validate.ts";

export function createEnginePort(engine: ClientEngine, description: string): StoragePort {
  return new EnginePort(engine, description);
}

export class EnginePort implements StoragePort {
  readonly kind: string = "remote";
  readonly canFastZero = false;
  readonly canMultiConn = false;
  readonly canBlockStatus = false;
  readonly synchronous = false;

  constructor(
    readonly engine: ClientEngine,
    readonly description: string,
  ) {}

  private get welcome() {
    return this.engine.welcome!;
  }
  get size(): number {
    return this.welcome.size;
  }
  get blockSize(): number {
    return Math.max(512, this.welcome.blockPreferred);
  }
  get maxPayload(): number {
    return this.engine.payloadLimit;
  }
  get readOnly(): boolean {
    return (this.welcome.permissions & Perm.WRITE) === 0;
  }
  get canTrim(): boolean {
    return (this.welcome.features & Feature.TRIM) !== 0;
  }
  get canZero(): boolean {
    return (this.welcome.features & Feature.WRITE_ZEROES) !== 0;
  }
  get canFlush(): boolean {
    return (this.welcome.features & Feature.FLUSH) !== 0;
  }

  read(offset: number, into: Uint8Array, done: Done): void {
    const invalid = this.check("read", offset, into.length);
    if (invalid !== 0) return done(invalid);
    this.engine.submit({ kind: "read", offset, length: into.length }, (errno, data) => {
      if (errno === 0 && data !== null) into.set(data);
      done(errno === 0 && data === null ? Errno.EIO : errno);
    });
  }

  write(offset: number, data: Uint8Array, fua: boolean, done: Done): void {
    const invalid = this.check("write", offset, data.length);
    if (invalid !== 0) return done(invalid);
    this.engine.submit({ kind: "write", offset, length: data.length, data, fua }, (errno) => done(errno));
  }

  flush(done: Done): void {
    this.engine.submit({ kind: "flush", offset: 0, length: 0 }, (errno) => done(errno));
  }

  trim(offset: number, length: number, fua: boolean, done: Done): void {
    const invalid = this.check("trim", offset, length);
    if (invalid !== 0) return done(invalid);
    this.engine.submit({ kind: "trim", offset, length, fua }, (errno) => done(errno));
  }

  zero(offset: number, length: number, flags: ZeroFlags, done: Done): void {
    // proto.md NBD_CMD_FLAG_FAST_ZERO: a remote zero cannot promise to be faster than a write.
    if (flags.fast) return done(Errno.ENOTSUP);
    const invalid = this.check("zero", offset, length);
    if (invalid !== 0) return done(invalid);
    this.engine.submit({ kind: "zero", offset, length, fua: flags.fua, noHole: flags.noHole }, (errno) => done(errno));
  }

  extents(offset: number, length: number, _maxExtents: number, done: ExtentsDone): void {
    const invalid = this.check("block-status", offset, length);
    if (invalid !== 0) return done(invalid, null);
    done(0, length === 0 ? [] : [{ length, hole: false, zero: false }]);
  }

  async close(): Promise<void> {}

  /** Last line of defence before a request goes on the wire (storage/validate.ts). */
  private check(kind: RequestKind, offset: number, length: number): number {
    return validateRequest(kind, offset, length, { size: this.size, writable: !this.readOnly, maxPayload: this.maxPayload });
  }
}
