/**
 * @module daemon/nbd-front — wires the NBD front end (server/nbd-connection.ts) to the
 * export table: name lookup, the same allow list (by address: plain NBD has no identity),
 * and the same read-only rule as DST.
 */
import type { Log } from "../lib/log.ts";
import type { Export } from "../server/exports.ts";
import type { AcceptHandler } from "../transport/types.ts";

export function acceptNbdForExports(_exports: Export[], _log: Log): AcceptHandler {
  throw new Error("the NBD front end is not wired yet");
}
