/**
 * @module attach/nbd-endpoint — the attachment mode for machines without the kernel NBD
 * driver (`--nbd-listen`): the remote export offered as a standard newstyle NBD endpoint on a
 * Unix socket or loopback TCP port, so qemu, libnbd tools or nbdfuse get dstd's protection in
 * the path. It shares the NBD front with `dstd export` (nbd/connection.ts) and serves the
 * attachment's engine-backed port; its record (attach/state.ts) is rewritten every second.
 *
 * Like `dstd export`'s NBD listener it sits behind a ConnectionGuard (docs/security.md
 * "Resource limits"): any local user can reach it, so handshake and frame deadlines, the
 * handshake caps, the file-descriptor budget and rate-limited refusal lines apply here too.
 *
 * Must not: serve anyone but local clients (Unix sockets and loopback addresses).
 */
import type { ListenAddress } from "../lib/address.ts";
import { errorMessage } from "../lib/errors.ts";
import type { Log } from "../lib/log.ts";
import { quotePeer } from "../lib/peer-text.ts";
import { isLoopbackAddress } from "../crypto/suites.ts";
import { DEFAULT_CONNECTION_LIMITS } from "../config/defaults.ts";
import { Budget } from "../export/budget.ts";
import { EXPORT_LIMITS } from "../export/limits.ts";
import { acceptNbd } from "../nbd/connection.ts";
import { startConnectionBudget, type ConnectionBudget } from "../transport/fd-budget.ts";
import { ConnectionGuard, type ConnectionLimits } from "../transport/guard.ts";
import { describeListenAddress, listen, type Listener } from "../transport/tcp.ts";
import type { Peer } from "../transport/types.ts";
import type { ExportLink } from "./export-link.ts";
import { linkCounters, removeState, writeState, type AttachmentState } from "./state.ts";

export interface NbdEndpointOptions {
  /** The export URL, formatted (lib/address.ts formatExportUrl). */
  url: string;
  exportName: string;
  nbdListen: ListenAddress;
  stateDir: string;
  exportLink: ExportLink;
  log: Log;
  /** Deadlines and caps of the guard in front of the listener (default: the `[limits]` defaults). */
  limits?: ConnectionLimits;
  /** The process-wide connection budget (`dstd up` shares one among its units); default: made here. */
  budget?: ConnectionBudget;
}

export interface NbdEndpoint {
  bound: ListenAddress;
  /** Stop listening and forget the record (the export link is the caller's). */
  stop(): Promise<void>;
}

export async function serveNbdEndpoint(o: NbdEndpointOptions): Promise<NbdEndpoint> {
  const { exportLink: link, log } = o;
  const target = link.port;
  const access = target.readOnly ? ("ro" as const) : ("rw" as const);
  const local = (peer: Peer) => peer.transport === "unix" || isLoopbackAddress(peer.address);
  const limits = o.limits ?? DEFAULT_CONNECTION_LIMITS;
  // Shared by the endpoint's clients, as an export's (its reply half: export/limits.ts).
  const memory = new Budget(EXPORT_LIMITS.memoryBudget / 2, setImmediate);
  const accept = acceptNbd({
    resolve(name: string, peer: Peer) {
      if (!local(peer)) return { refuse: "only local clients may use this endpoint", code: "policy" };
      if (name !== "" && name !== o.exportName) return { refuse: `this endpoint serves ${quotePeer(o.exportName)}, not ${quotePeer(name)}` };
      return { target, access, name: o.exportName };
    },
    list: (peer: Peer) => (local(peer) ? [{ name: o.exportName, description: target.description }] : []),
    log,
    memory,
  });
  const budget = o.budget ?? startConnectionBudget(limits.maxConnections, log);
  const guard = new ConnectionGuard(accept, { protocol: "NBD", limits, budget, log, replyStarved: () => memory.starved, receiveStarved: () => memory.starved });
  let listener: Listener;
  try {
    listener = await listen([o.nbdListen], guard.accept);
  } catch (error) {
    guard.close();
    throw error;
  }
  const bound = listener.bound[0]!;
  log.info(`attached '${o.exportName}' (${target.size} bytes, ${access}); serving NBD on ${describeListenAddress(bound)}`);
  const device = describeListenAddress(bound);
  const startedAt = new Date().toISOString();
  const report = () => {
    const state: AttachmentState = {
      device,
      url: o.url,
      mode: "nbd-listen",
      backendId: null,
      pid: process.pid,
      state: link.state,
      startedAt,
      updatedAt: new Date().toISOString(),
      counters: linkCounters(link.counters),
    };
    try {
      writeState(o.stateDir, state);
    } catch (error) {
      log.warn(`cannot write state file in ${o.stateDir}: ${errorMessage(error)}`);
    }
  };
  report();
  const reporter = setInterval(report, 1000);
  return {
    bound,
    async stop() {
      clearInterval(reporter);
      removeState(o.stateDir, device);
      guard.close();
      await listener.close();
    },
  };
}

