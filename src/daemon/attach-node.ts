/**
 * @module daemon/attach-node — composition root of `dstd attach`: a DST client (resend,
 * reconnect, keepalive, replay) to the remote export, served to local NBD consumers.
 *
 * This file holds the mode for machines without the kernel NBD driver (`--nbd-listen`):
 * a standard newstyle NBD endpoint on a Unix socket or loopback TCP port, so qemu, libnbd
 * tools or nbdfuse get dstd's protection in the path. It shares the NBD server code with
 * `dstd export` (nbd/connection.ts) through an engine-backed StoragePort.
 */
import type { ExportUrl, ListenAddress } from "../lib/address.ts";
import { DstdError } from "../lib/errors.ts";
import type { Log } from "../lib/log.ts";
import { quotePeer } from "../lib/peer-text.ts";
import { isLoopbackAddress } from "../crypto/suites.ts";
import type { EngineOptions } from "../engine/options.ts";
import { acceptNbd } from "../nbd/connection.ts";
import { describeListenAddress, listen, type Listener } from "../transport/tcp.ts";
import type { Peer } from "../transport/types.ts";
import { DstClient } from "../client/dst-client.ts";
import { removeState, writeState, type AttachmentState } from "../attach/state.ts";
import { formatExportUrl } from "../lib/address.ts";
import { createEnginePort } from "../storage/remote/engine-port.ts";

export interface AttachOptions {
  url: ExportUrl;
  /** Where this attachment's state file lives (attach/state.ts). */
  stateDir: string;
  engine: Partial<EngineOptions>;
  log: Log;
  nbdListen: ListenAddress;
}

export interface AttachNode {
  client: DstClient;
  bound: ListenAddress;
  stop(): Promise<void>;
}

function connectAddress(url: ExportUrl): ListenAddress {
  return url.transport === "unix"
    ? { transport: "unix", path: url.path }
    : { transport: "tcp", host: url.host, port: url.port };
}

export async function startNbdAttach(options: AttachOptions): Promise<AttachNode> {
  const { url, log } = options;
  if (url.protocol !== "dst") throw new DstdError("E_USAGE", "dstd attach connects to dst:// or dst+unix:// exports");
  if (options.nbdListen.transport === "tcp" && !isLoopbackAddress(options.nbdListen.host)) {
    throw new DstdError("E_USAGE", `--nbd-listen ${describeListenAddress(options.nbdListen)}: serve local clients only (unix:PATH or a loopback address)`);
  }
  const client = await DstClient.open({
    ...options.engine,
    address: connectAddress(url),
    exportName: url.exportName,
    log,
    // ready and failed matter; each reconnect step is debug (the engine warns when a link is lost)
    onStateChange: (state, detail) => (state === "ready" ? log.info : state === "failed" ? log.warn : log.debug)(`export link ${state}: ${detail}`),
  });
  const target = createEnginePort(client, `dstd attach of ${url.exportName}`);
  const access = client.writable ? ("rw" as const) : ("ro" as const);
  const local = (peer: Peer) => peer.transport === "unix" || isLoopbackAddress(peer.address);
  let listener: Listener;
  try {
    listener = await listen(
      [options.nbdListen],
      acceptNbd({
        resolve(name: string, peer: Peer) {
          if (!local(peer)) return { refuse: "only local clients may use this endpoint", code: "policy" };
          if (name !== "" && name !== url.exportName) return { refuse: `this endpoint serves ${quotePeer(url.exportName)}, not ${quotePeer(name)}` };
          return { target, access };
        },
        list: (peer: Peer) => (local(peer) ? [{ name: url.exportName, description: target.description }] : []),
        log,
      }),
    );
  } catch (error) {
    client.abort();
    throw error;
  }
  const bound = listener.bound[0]!;
  log.info(`attached '${url.exportName}' (${client.size} bytes, ${access}); serving NBD on ${describeListenAddress(bound)}`);
  const device = describeListenAddress(bound);
  const startedAt = new Date().toISOString();
  const report = () => {
    const c = client.engine.counters;
    const state: AttachmentState = {
      device,
      url: formatExportUrl(url),
      mode: "nbd-listen",
      backendId: null,
      pid: process.pid,
      state: client.engine.state,
      startedAt,
      updatedAt: new Date().toISOString(),
      counters: { inflight: c.inflight, resends: c.resends, reconnects: c.reconnects, replays: c.replays, keepaliveFailures: c.keepaliveFailures, timeouts: c.timeouts },
    };
    try {
      writeState(options.stateDir, state);
    } catch (error) {
      log.warn(`cannot write state file in ${options.stateDir}: ${(error as Error).message}`);
    }
  };
  report();
  const reporter = setInterval(report, 1000);
  return {
    client,
    bound,
    async stop() {
      clearInterval(reporter);
      removeState(options.stateDir, device);
      await listener.close();
      await client.flush().catch((error: Error) => log.warn(`final flush failed: ${error.message}`));
      await client.close();
    },
  };
}
