/**
 * @module attach/shared-port — the one StoragePort every kernel socket of an attachment is
 * served from, and why it may advertise NBD_FLAG_CAN_MULTI_CONN (which the kernel requires
 * before it accepts more than one socket: docs/kernel.md §2).
 *
 * What the flag promises (the NBD protocol's NBD_FLAG_CAN_MULTI_CONN; docs/kernel.md §8): a FLUSH on
 * any connection covers every write whose reply went out, on any connection, before the
 * FLUSH was sent; FUA and reads likewise see each other across connections. Why it holds
 * here: all N sockets are served by one port over ONE client engine, i.e. one DST session
 * (storage/remote/engine-port.ts). A write acknowledged to the kernel on socket A was
 * acknowledged by the export to that engine; a FLUSH arriving on socket B is the same
 * engine's FLUSH, which covers every write the engine completed before it (the engine's own
 * FLUSH contract, which one socket already relies on: the engine does not know which socket a
 * request came from), and the engine's replay of unflushed writes after an export restart is
 * per engine, not per socket. So N sockets over one engine are exactly as consistent as one.
 *
 * The engine port itself says `canMultiConn: false` (a conservative default for anyone who
 * would put two engines behind one device); this layer states the property for the case it
 * is true: the sockets share the port it wraps. It must wrap the one engine port that all the
 * links use, never one port per link.
 *
 * Must not: change any request (a pass-through: storage/layers/pass-through.ts).
 */
import { PassThrough } from "../storage/layers/pass-through.ts";

export class SocketsShareOnePort extends PassThrough {
  override get canMultiConn(): boolean {
    return true;
  }
}
