/**
 * @module daemon/attach-node — composition root of `dstd attach`: a DST client (resend,
 * reconnect, keepalive, replay; client/dst-client.ts) to the remote export, its engine-backed
 * StoragePort (storage/remote/engine-port.ts), and one of the two attachment modes of
 * attach/:
 * - kernel (default): attach/preflight.ts settles the device with the kernel first, then
 *   attach/attachment.ts makes or takes over /dev/nbdN and serves it;
 * - `--nbd-listen`: attach/nbd-endpoint.ts serves local NBD clients.
 * The export link the attachment sees (attach/export-link.ts) is built here from the client,
 * so attach/ never reaches into the engine.
 *
 * Must not: hold lifecycle logic (attach/ does), or open the export before the kernel side
 * said yes (a refused or already-attached device never bothers the export).
 */
import { formatExportUrl, type ExportUrl, type ListenAddress } from "../lib/address.ts";
import { DstdError } from "../lib/errors.ts";
import type { Log } from "../lib/log.ts";
import { isLoopbackAddress } from "../crypto/suites.ts";
import type { EngineState } from "../engine/client-engine.ts";
import { ENGINE_DEFAULTS, type EngineOptions } from "../engine/options.ts";
import { describeListenAddress } from "../transport/tcp.ts";
import { DstClient } from "../client/dst-client.ts";
import { createEnginePort } from "../storage/remote/engine-port.ts";
import { reservePoolBytes } from "../lib/buffer-pool.ts";
import { KernelAttachment, type AttachmentEnd } from "../attach/attachment.ts";
import type { ExportLink } from "../attach/export-link.ts";
import { serveNbdEndpoint } from "../attach/nbd-endpoint.ts";
import type { ConnectionBudget } from "../transport/fd-budget.ts";
import { preflight } from "../attach/preflight.ts";

// ---- --nbd-listen ----------------------------------------------------------------------------

export interface AttachOptions {
  url: ExportUrl;
  /** Where this attachment's state file lives (attach/state.ts). */
  stateDir: string;
  engine: Partial<EngineOptions>;
  log: Log;
  nbdListen: ListenAddress;
  /** The process-wide connection budget of `dstd up` (default: the endpoint makes its own). */
  budget?: ConnectionBudget;
}

export interface AttachNode {
  client: DstClient;
  bound: ListenAddress;
  stop(): Promise<void>;
}

export async function startNbdAttach(options: AttachOptions): Promise<AttachNode> {
  const { url, log } = options;
  requireDst(url);
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
  const link = exportLinkOf(client, `dstd attach of ${url.exportName}`, options.engine);
  let endpoint;
  try {
    endpoint = await serveNbdEndpoint({ url: formatExportUrl(url), exportName: url.exportName, nbdListen: options.nbdListen, stateDir: options.stateDir, exportLink: link, log, budget: options.budget });
  } catch (error) {
    client.abort();
    throw error;
  }
  return {
    client,
    bound: endpoint.bound,
    async stop() {
      await endpoint.stop();
      await client.flush().catch((error: Error) => log.warn(`final flush failed: ${error.message}`));
      await client.close();
    },
  };
}

// ---- kernel ----------------------------------------------------------------------------------

export interface KernelAttachRequest {
  url: ExportUrl;
  /** "/dev/nbdN", or null: the kernel picks a free device. */
  device: string | null;
  stateDir: string;
  engine: Partial<EngineOptions>;
  /** How long the kernel holds I/O for a new daemon after ours dies (NBD_ATTR_DEAD_CONN_TIMEOUT). */
  deadConnTimeoutSec: number;
  /** Sockets to give the kernel at CONNECT (NBD_ATTR_SOCKETS entries); default 1. */
  connections?: number;
  log: Log;
}

/** A running kernel attachment and the client under it (what `dstd status` reads). */
export interface KernelAttachNode {
  readonly client: DstClient;
  readonly attachment: KernelAttachment;
  readonly device: string;
  /** Resolves when the attachment ends without detach()/handover(). */
  readonly ended: Promise<AttachmentEnd>;
  detach(): Promise<void>;
  /** "serving": the export did not confirm the flush and `stayOnFailure` kept the daemon serving. */
  handover(options?: { stayOnFailure?: boolean }): Promise<"left" | "serving">;
  /**
   * Give the device the size of an export of `exportSize` bytes, from a worker while I/O goes
   * on (attach/attachment.ts resize; the hook for `dstd resize`). Resolves with the new size.
   */
  resize(exportSize: number, options?: { allowShrink?: boolean }): Promise<number>;
}

export type KernelAttachResult = { kind: "already"; message: string } | { kind: "attached"; attachment: KernelAttachNode };

/** Connect to the export and attach it to a kernel NBD device (or resume a dead daemon's). */
export async function attachKernel(o: KernelAttachRequest): Promise<KernelAttachResult> {
  requireDst(o.url);
  const url = formatExportUrl(o.url);
  const ready = await preflight({ url, device: o.device, stateDir: o.stateDir, log: o.log });
  if (ready.kind === "already") return ready;
  try {
    const client = await DstClient.open({
      ...o.engine,
      address: connectAddress(o.url),
      exportName: o.url.exportName,
      log: o.log,
      onStateChange: exportLinkLogger(o.log),
    });
    try {
      const attachment = new KernelAttachment(
        { url, exportName: o.url.exportName, stateDir: o.stateDir, deadConnTimeoutSec: o.deadConnTimeoutSec, connections: o.connections ?? 1, log: o.log },
        ready.control,
        exportLinkOf(client, `dstd attach of ${url}`, o.engine),
        ready.watch,
      );
      await attachment.start(ready.plan);
      client.onResize = () => attachment.exportResized();
      return {
        kind: "attached",
        attachment: {
          client,
          attachment,
          get device() {
            return attachment.device;
          },
          ended: attachment.ended,
          detach: () => attachment.detach(),
          handover: (options) => attachment.handover(options),
          resize: (exportSize, options) => attachment.resize(exportSize, options),
        },
      };
    } catch (error) {
      client.abort();
      throw error;
    }
  } catch (error) {
    ready.control.close();
    throw error;
  }
}

// ---- wiring ----------------------------------------------------------------------------------

/** The attachment's view of the export: the engine port plus what the lifecycle reads. */
function exportLinkOf(client: DstClient, description: string, engine: Partial<EngineOptions>): ExportLink {
  const port = createEnginePort(client, description);
  const deadlineMs = engine.deadlineMs ?? ENGINE_DEFAULTS.deadlineMs;
  // The NBD front hands its WRITE payloads (pooled buffers) over to the engine, which keeps
  // them in its replay log until a FLUSH covers them (nbd/transmission.ts PayloadHold): room
  // in the pool for what the replay bound holds, so they come back to be filled again instead
  // of going to the GC (the room the engine's own copy pool would otherwise take).
  const releasePool = reservePoolBytes(engine.replayBufferBytes ?? ENGINE_DEFAULTS.replayBufferBytes);
  return {
    port,
    get exportSize() {
      return client.size;
    },
    get blockPreferred() {
      return client.engine.welcome!.blockPreferred;
    },
    get blockMin() {
      return client.engine.welcome!.blockMin;
    },
    get maxPayload() {
      return client.maxPayload;
    },
    deadlineMs,
    get state() {
      return client.engine.state;
    },
    get counters() {
      return client.engine.counters;
    },
    get outstanding() {
      return client.outstanding + port.waiting; // every link's engine, and requests waiting for room in them
    },
    flush: () => client.flush(),
    close: () => {
      releasePool();
      return client.close();
    },
    abort: () => {
      releasePool();
      client.abort();
    },
  };
}

function requireDst(url: ExportUrl): void {
  if (url.protocol !== "dst") throw new DstdError("E_USAGE", "dstd attach connects to dst:// or dst+unix:// exports");
}

function connectAddress(url: ExportUrl): ListenAddress {
  return url.transport === "unix" ? { transport: "unix", path: url.path } : { transport: "tcp", host: url.host, port: url.port };
}

/** Link changes that matter at info/warn (ready, lost, failed); each reconnect attempt at debug. */
function exportLinkLogger(log: Log): (state: EngineState, detail: string) => void {
  let previous: EngineState = "idle";
  return (state, detail) => {
    const line = `export link ${state}: ${detail}`;
    if (state === "ready" || (state === "closed" && previous !== "failed")) log.info(line);
    else if (state === "failed" || previous === "ready") log.warn(line);
    else log.debug(line);
    previous = state;
  };
}
