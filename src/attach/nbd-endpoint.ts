/**
 * @module attach/nbd-endpoint — the attachment mode for machines without the kernel NBD
 * driver (`--nbd-listen`): the remote export offered as a standard newstyle NBD endpoint on a
 * Unix socket or loopback TCP port, so qemu, libnbd tools or nbdfuse get dstd's protection in
 * the path. It shares the NBD front with `dstd export` (nbd/connection.ts) and serves the
 * attachment's engine-backed port; its record (attach/state.ts) is rewritten every second.
 *
 * Must not: serve anyone but local clients (Unix sockets and loopback addresses).
 */
import type { ListenAddress } from "../lib/address.ts";
import { errorMessage } from "../lib/errors.ts";
import type { Log } from "../lib/log.ts";
import { quotePeer } from "../lib/peer-text.ts";
import { isLoopbackAddress } from "../crypto/suites.ts";
import { acceptNbd } from "../nbd/connection.ts";
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
  const listener: Listener = await listen(
    [o.nbdListen],
    acceptNbd({
      resolve(name: string, peer: Peer) {
        if (!local(peer)) return { refuse: "only local clients may use this endpoint", code: "policy" };
        if (name !== "" && name !== o.exportName) return { refuse: `this endpoint serves ${quotePeer(o.exportName)}, not ${quotePeer(name)}` };
        return { target, access };
      },
      list: (peer: Peer) => (local(peer) ? [{ name: o.exportName, description: target.description }] : []),
      log,
    }),
  );
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
      await listener.close();
    },
  };
}

