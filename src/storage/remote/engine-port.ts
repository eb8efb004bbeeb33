/**
 * @module storage/remote/engine-port — a StoragePort backed by the DST client engine: the remote
 * export, reached through resend/reconnect/keepalive, served to an NBD client (the kernel
 * on a socketpair for `dstd attach`, or qemu/libnbd on `--nbd-listen`).
 *
 * The engine copies WRITE data at submit, so `data` is free for the caller to recycle as soon
 * as write() returns (`writeDataCopied`); READ replies are decoded straight into `into`.
 * FLUSH is sent to the export and completes only when the export's disk has it. When the
 * engine's queues are full (submit says BUSY) requests wait here in order, with their write
 * data copied; the caller (the NBD front) bounds how many it has in flight.
 */
import type { Extent } from "../local/backend.ts";
import { Perm, Feature } from "../../wire/dst/constants.ts";
import { BUSY, type Completion, type Request } from "../../engine/client-engine.ts";
import type { DstClient } from "../../client/dst-client.ts";
import type { StoragePort, ZeroFlags } from "../port.ts";

export function createEnginePort(client: DstClient, description: string): StoragePort {
  const welcome = client.engine.welcome!;
  const features = welcome.features;
  const waiting: Array<{ request: Request; done: Completion }> = [];
  const drain = () => {
    while (waiting.length > 0) {
      const next = waiting[0]!;
      if (client.submit(next.request, next.done) === BUSY) return;
      waiting.shift();
    }
  };
  client.onRoom = drain;
  const submit = (request: Request, done: Completion) => {
    if (waiting.length === 0 && client.submit(request, done) !== BUSY) return;
    if (request.data !== undefined) request.data = request.data.slice(); // the caller recycles it on return
    waiting.push({ request, done });
  };
  return {
    kind: "remote",
    size: welcome.size,
    blockSize: Math.max(512, welcome.blockPreferred),
    maxPayload: client.maxPayload,
    readOnly: (welcome.permissions & Perm.WRITE) === 0,
    canTrim: (features & Feature.TRIM) !== 0,
    canZero: (features & Feature.WRITE_ZEROES) !== 0,
    canFastZero: false,
    canFlush: (features & Feature.FLUSH) !== 0,
    // One DstClient serves every connection of the NBD front, and its FLUSH goes to every
    // DST link (client/dst-client.ts): a flush on any NBD connection covers all of them.
    canMultiConn: true,
    canBlockStatus: false,
    description,
    synchronous: false,
    writeDataCopied: true,
    read(offset: number, into: Uint8Array, done: (errno: number) => void) {
      submit({ kind: "read", offset, length: into.length, into }, (errno) => done(errno));
    },
    write(offset: number, data: Uint8Array, fua: boolean, done: (errno: number) => void) {
      submit({ kind: "write", offset, length: data.length, data, fua }, (errno) => done(errno));
    },
    flush(done: (errno: number) => void) {
      submit({ kind: "flush", offset: 0, length: 0 }, (errno) => done(errno));
    },
    trim(offset: number, length: number, fua: boolean, done: (errno: number) => void) {
      submit({ kind: "trim", offset, length, fua }, (errno) => done(errno));
    },
    zero(offset: number, length: number, flags: ZeroFlags, done: (errno: number) => void) {
      if (flags.fast) return done(95 /* ENOTSUP: we cannot promise a fast zero remotely */);
      submit({ kind: "zero", offset, length, fua: flags.fua, noHole: flags.noHole }, (errno) => done(errno));
    },
    extents(_offset: number, length: number, _maxExtents: number, done: (errno: number, extents: Extent[] | null) => void) {
      done(0, [{ length, hole: false, zero: false }]);
    },
    async close() {},
  };
}
