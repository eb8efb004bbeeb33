/**
 * @module daemon/nbd-front — wires the NBD front end (nbd/connection.ts) to the
 * export table: name lookup, the same allow list (by address only: plain NBD carries no
 * identity, so identity rules never admit an NBD client), and the same read-only rule as DST.
 * An export without an address rule refuses every NBD client (fail closed).
 *
 * One front per NBD listener, given only the exports that name that listener in their
 * `nbd_listen`: an export without `nbd_listen` is not reachable over NBD at all, not even
 * through another export's listener. When a listener serves exactly one export, the default
 * export name "" selects it, as nbdkit and qemu-nbd do (proto.md, NBD_OPT_EXPORT_NAME: an
 * empty name asks for the server's default export), so `nbdinfo nbd://host` works.
 */
import { matchAllow } from "../lib/acl.ts";
import type { Log } from "../lib/log.ts";
import { createLocalPort } from "../storage/local/port.ts";
import type { Export } from "../export/exports.ts";
import { acceptNbd } from "../nbd/connection.ts";
import type { StoragePort } from "../storage/port.ts";
import type { AcceptHandler, Peer } from "../transport/types.ts";

export function acceptNbdForExports(exports: Export[], log: Log): AcceptHandler {
  const targets = new Map<string, StoragePort>();
  for (const e of exports) {
    targets.set(
      e.name,
      createLocalPort(e.backend, { readOnly: e.readOnly, description: e.description, log }),
    );
  }
  const byName = new Map(exports.map((e) => [e.name, e]));
  const allowed = (e: Export, peer: Peer) => matchAllow(e.allow, peer, null);
  return acceptNbd({
    resolve(requested: string, peer: Peer) {
      const name = requested === "" && exports.length === 1 ? exports[0]!.name : requested;
      const e = byName.get(name);
      if (e === undefined) {
        if (requested === "") return { refuse: `no default export here (${exports.length} exports): name one (NBD_OPT_LIST lists them)` };
        return { refuse: `no export named '${name}'` };
      }
      const access = allowed(e, peer);
      if (access === null) {
        const who = peer.transport === "unix" ? "Unix socket clients are" : `address ${peer.address} is`;
        return { refuse: `${who} not allowed to use export '${name}'`, code: "policy" };
      }
      return { target: targets.get(name)!, access };
    },
    list(peer: Peer) {
      return exports.filter((e) => allowed(e, peer) !== null).map((e) => ({ name: e.name, description: e.description }));
    },
    log,
  });
}
