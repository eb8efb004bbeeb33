/**
 * @module daemon/nbd-front — wires the NBD front end (nbd/connection.ts) to the
 * export table: name lookup, the same allow list (by address only: plain NBD carries no
 * identity, so identity rules never admit an NBD client), and the same read-only rule as DST.
 * An export without an address rule refuses every NBD client (fail closed).
 *
 * A client learns of an export only if it may use it (issue 9 item 8): OPT_LIST shows the
 * exports this peer may use, and a name that exists but is not allowed to this peer gets
 * exactly the answer of a name that does not exist; only the local log tells them apart.
 *
 * One front per NBD listener, given only the exports that name that listener in their
 * `nbd_listen`: an export without `nbd_listen` is not reachable over NBD at all, not even
 * through another export's listener. When a listener serves exactly one export, the default
 * export name "" selects it, as nbdkit and qemu-nbd do (proto.md, NBD_OPT_EXPORT_NAME: an
 * empty name asks for the server's default export), so `nbdinfo nbd://host` works.
 */
import { matchAllow, type Access } from "../lib/acl.ts";
import type { Log } from "../lib/log.ts";
import { quotePeer } from "../lib/peer-text.ts";
import type { Budget } from "../export/budget.ts";
import type { Export } from "../export/exports.ts";
import { acceptNbd, type NbdConnection } from "../nbd/connection.ts";
import type { GuardedAcceptHandler } from "../transport/guard.ts";
import type { Peer } from "../transport/types.ts";

/** The NBD front of some exports, and the re-check a configuration reload runs on its live connections. */
export type NbdFront = GuardedAcceptHandler & {
  /** Close or downgrade live connections whose export no longer grants them (returns what it did). */
  recheck(): string[];
  /** Export `name` now serves another port or is read-only (a replica's role change): close or downgrade its connections (NbdConnection.rebound). */
  rebind(name: string): string[];
};

/** `memory`: the node's budget its DST export also charges (DstServer.replyBudget): NBD replies, reads in flight and WRITEs being assembled count against it. */
export function acceptNbdForExports(exports: Export[], log: Log, memory?: Budget): NbdFront {
  const byName = new Map(exports.map((e) => [e.name, e]));
  // The export's port and read-only flag as they are now: a replicated export's change with its
  // role (a secondary serves its disk read-only, docs/replication.md §6), as for DST.
  const allowed = (e: Export, peer: Peer): Access | null => {
    const access = matchAllow(e.allow, peer, null);
    return access === "rw" && e.readOnly ? "ro" : access;
  };
  const accept = acceptNbd({
    resolve(requested: string, peer: Peer) {
      const name = requested === "" && exports.length === 1 ? exports[0]!.name : requested;
      const e = byName.get(name);
      const access = e === undefined ? null : allowed(e, peer);
      if (e === undefined || access === null) {
        // The same words, code and path for "no such export" and "not yours" (item 8).
        const refuse =
          requested === "" && exports.length !== 1
            ? "no default export here: name one (NBD_OPT_LIST lists the exports this client may use)"
            : `no export named ${quotePeer(requested)} is available to this client`;
        if (e === undefined) return { refuse };
        const who = peer.transport === "unix" ? "Unix socket clients are" : `address ${peer.address} is`;
        return { refuse, detail: `${who} not allowed to use export ${quotePeer(name)}` };
      }
      return { target: e.port, access, description: e.description, name };
    },
    list(peer: Peer) {
      return exports.filter((e) => allowed(e, peer) !== null).map((e) => ({ name: e.name, description: e.description }));
    },
    log,
    ...(memory === undefined ? {} : { memory }),
  });
  // Live connections (each leaves the set when its socket closes): what a reload re-checks.
  const live = new Set<NbdConnection>();
  const handler: GuardedAcceptHandler = (sink, peer, hooks) => {
    const connection = accept(sink, peer, hooks);
    live.add(connection);
    const onClose = connection.onClose.bind(connection);
    connection.onClose = (reason) => {
      live.delete(connection);
      onClose(reason);
    };
    return connection;
  };
  const recheck = () => {
    const changes: string[] = [];
    for (const connection of live) {
      const change = connection.recheck((name, peer) => {
        const e = byName.get(name);
        return e === undefined ? null : allowed(e, peer);
      });
      if (change !== null) changes.push(change);
    }
    return changes;
  };
  const rebind = (name: string) => {
    const e = byName.get(name);
    if (e === undefined) return [];
    const changes: string[] = [];
    for (const connection of live) {
      const change = connection.rebound(name, e.port, (peer) => allowed(e, peer));
      if (change !== null) changes.push(change);
    }
    return changes;
  };
  return Object.assign(handler, { recheck, rebind });
}
