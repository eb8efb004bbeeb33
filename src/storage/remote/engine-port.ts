/**
 * @module storage/remote/engine-port — a StoragePort backed by the DST client engine: the remote
 * export, reached through resend/reconnect/keepalive, served to an NBD client (the kernel
 * on a socketpair for `dstd attach`, or qemu/libnbd on `--nbd-listen`).
 *
 * The engine copies WRITE data into its own frame at submit, so `data` is free for the
 * connection to recycle as soon as write() returns; READ data is copied into `into`.
 * FLUSH is sent to the export and completes only when the export's disk has it.
 */
import type { Extent } from "../local/backend.ts";
import { Perm, Feature } from "../../wire/dst/constants.ts";
import type { ClientEngine } from "../../engine/client-engine.ts";
import type { StoragePort, ZeroFlags } from "../port.ts";

export function createEnginePort(engine: ClientEngine, description: string): StoragePort {
  const welcome = engine.welcome!;
  const features = welcome.features;
  return {
    kind: "remote",
    size: welcome.size,
    blockSize: Math.max(512, welcome.blockPreferred),
    maxPayload: engine.payloadLimit,
    readOnly: (welcome.permissions & Perm.WRITE) === 0,
    canTrim: (features & Feature.TRIM) !== 0,
    canZero: (features & Feature.WRITE_ZEROES) !== 0,
    canFastZero: false,
    canFlush: (features & Feature.FLUSH) !== 0,
    canMultiConn: false,
    canBlockStatus: false,
    description,
    synchronous: false,
    read(offset: number, into: Uint8Array, done: (errno: number) => void) {
      engine.submit({ kind: "read", offset, length: into.length }, (errno, data) => {
        if (errno === 0 && data !== null) into.set(data);
        done(errno);
      });
    },
    write(offset: number, data: Uint8Array, fua: boolean, done: (errno: number) => void) {
      engine.submit({ kind: "write", offset, length: data.length, data, fua }, (errno) => done(errno));
    },
    flush(done: (errno: number) => void) {
      engine.submit({ kind: "flush", offset: 0, length: 0 }, (errno) => done(errno));
    },
    trim(offset: number, length: number, fua: boolean, done: (errno: number) => void) {
      engine.submit({ kind: "trim", offset, length, fua }, (errno) => done(errno));
    },
    zero(offset: number, length: number, flags: ZeroFlags, done: (errno: number) => void) {
      if (flags.fast) return done(95 /* ENOTSUP: we cannot promise a fast zero remotely */);
      engine.submit({ kind: "zero", offset, length, fua: flags.fua, noHole: flags.noHole }, (errno) => done(errno));
    },
    extents(_offset: number, length: number, _maxExtents: number, done: (errno: number, extents: Extent[] | null) => void) {
      done(0, [{ length, hole: false, zero: false }]);
    },
    async close() {},
  };
}
