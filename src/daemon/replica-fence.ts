/**
 * @module daemon/replica-fence — what a replica node asks its peer before a role change
 * (docs/replication.md §11): one FETCH probe (is the peer a replication primary, does its log
 * continue ours?), and the fencing at the start of a primary with a peer — never a second
 * primary: a peer whose log continues ours makes us its secondary, a fork makes us diverged.
 */
import { Errno, errnoMessage } from "../lib/errno.ts";
import { DstdError } from "../lib/errors.ts";
import type { Log } from "../lib/log.ts";
import type { ReplicationPrimary } from "../replication/primary.ts";
import type { ChainPoint } from "../replication/record.ts";
import { decodeFetchReason } from "../wire/dst/fetch.ts";
import type { ReplicaEnv } from "./replica-env.ts";

/** The node's surroundings the fencing needs: time and links, the peer's URL, names for messages. */
export interface FenceEnv {
  env: ReplicaEnv;
  peer: string;
  name: string;
  logger: Log;
}

/**
 * Before serving writes as a primary: is the peer a primary already? null: no (or it cannot
 * be reached); "secondary": its log continues ours (we are behind it); else the reason we
 * forked from it.
 */
export async function fence(primary: ReplicationPrimary, { env, peer, name, logger }: FenceEnv): Promise<"secondary" | string | null> {
  const last = primary.store.last;
  // Our state as of `last`, taken before the probe: while the probe is in flight the layer may
  // already resync its dirty regions into new log records (docs/replication.md §5), which
  // would make a diverged disk look clean (cluster simulation seed 2885, §8.2).
  const own = primary.status();
  let answer = await probePeer(env, last);
  // A primary failing the answer (EIO: it could not record us or read its log; EAGAIN) is one all the
  // same: ask again, never take it for "not a primary" (docs/replication.md §11; cluster sim seed 1098, §8.2).
  for (let tries = 1; answer.status === Errno.EIO || answer.status === Errno.EAGAIN; tries++) {
    if (tries === 5) {
      await primary.close();
      throw new DstdError("E_STATE", `the peer ${peer} is a replication primary but cannot answer (${answer.reason}): not starting as a second primary; start again later`);
    }
    await new Promise<void>((resolve) => env.timer.after(1000, resolve));
    answer = await probePeer(env, last);
  }
  const logged = primary.store.last.seq - last.seq;
  if (answer.status === 0 && (logged > 0 || own.mode !== "logging" || own.resyncPending || own.dirtyRegions > 0)) {
    // Our log is a prefix of the peer's, but our disk also holds writes made around the log
    // (overflow, docs/replication.md §5), or logged since the probe, that the peer never
    // received: it is not the state after that prefix, so following the peer would mix the two
    // (found by the cluster simulation, §8.2). Diverged: the regions are in our dirty bitmap
    // or our log for the repair.
    const why = `the peer ${peer} is a replication primary whose log continues ours (seq ${last.seq}), but our disk holds writes made around the log (${own.dirtyRegions} dirty regions, mode ${own.mode}${own.resyncPending ? ", resync pending" : ""}${logged > 0 ? `, ${logged} records logged since` : ""}) that it never received`;
    logger.error(`export '${name}': ${why}; serving the disk read-only (diverged) — repair with dstd replica resync`);
    return why;
  }
  if (answer.status === 0) {
    logger.warn(`export '${name}': the peer ${peer} is a replication primary and its log continues ours (seq ${last.seq}): starting as its secondary, not as a second primary`);
    return "secondary";
  }
  if (answer.status === Errno.ESTALE || answer.status === Errno.ENODATA) {
    const why = `the peer ${peer} is a replication primary and our log forked from its log: ${answer.reason}`;
    logger.error(`export '${name}': ${why}; serving the disk read-only (diverged) — repair with dstd replica demote/resync`);
    return why;
  }
  logger.info(`export '${name}': the peer ${peer} is not a replication primary (${answer.reason}): starting as primary`);
  return null;
}

/** One FETCH from after `last`: is the peer a primary, does its log continue ours? `applied`: what this disk applied durably (wire/dst/fetch.ts), never just what the copy holds. */
export async function probePeer(env: ReplicaEnv, last: ChainPoint, applied = last.seq): Promise<{ status: number; reason: string }> {
  const link = env.link("fail");
  try {
    const answer = await new Promise<{ status: number; payload: Uint8Array | null }>((resolve) =>
      link.transport(
        { seq: last.seq + 1, maxBytes: 2 << 20, segment: 0, offset: 0, applied, prevChain: last.chain, prevLamport: last.lamport, prevGeneration: last.generation },
        (status, payload) => resolve({ status, payload }),
      ),
    );
    const reason = answer.payload !== null && answer.status !== 0 ? decodeFetchReason(answer.payload) : errnoMessage(answer.status);
    return { status: answer.status, reason };
  } finally {
    link.close();
  }
}
