/**
 * @module storage/remote/remote-port — a remote DST export (`dst://HOST[:PORT]/NAME`,
 * `dst+unix:///NAME?socket=PATH`) as a storage leg, usable wherever a file or a device is:
 * as the backend of an export or as a leg of a linear, stripe or mirror node (docs/tree.md).
 *
 * It is a DstClient (client/dst-client.ts: the engine on real sockets and a timer) with an
 * EnginePort in front: every request has the engine's budget (resend_interval, max_resends,
 * deadline), reconnects and replays what the export had not flushed after an export restart,
 * and authenticates with the leg's key. Opening waits for the first handshake (and fails when
 * the export refuses, or stays unreachable for the deadline); close() waits for requests in
 * flight, then closes the session. WRITE payloads handed over (storage/port.ts BufferHold)
 * are sent and kept for replay without a copy; the pool they go back to keeps room for the
 * replay bound while the leg is open. `describe()` reports the link state and the engine's
 * counters for status.
 */
import type { ExportUrl, ListenAddress } from "../../lib/address.ts";
import { formatExportUrl } from "../../lib/address.ts";
import { DstdError } from "../../lib/errors.ts";
import { DstClient } from "../../client/dst-client.ts";
import type { EngineLog } from "../../engine/client-engine.ts";
import { ENGINE_DEFAULTS, type EngineOptions } from "../../engine/options.ts";
import { reservePoolBytes } from "../../lib/buffer-pool.ts";
import type { Describable, NodeSnapshot } from "../tree/describe.ts";
import { EnginePort } from "./engine-port.ts";

export interface RemotePortOptions {
  url: ExportUrl;
  /** Reliability, auth (key + suites), checksums, inflight: the leg's engine options. */
  engine: Partial<Omit<EngineOptions, "exportName">>;
  log: EngineLog;
  /** Called on every link state change (ready, connecting, failed, …). */
  onStateChange?: (state: string, detail: string) => void;
  /** Before the first handshake (client/dst-client.ts): "fail" (default here) or "retry" until the deadline. */
  firstContact?: "fail" | "retry";
  /**
   * The epochs of the DST exports this process serves (export/server.ts: random per server): a
   * leg whose export answers with one of them is this node itself, and is refused (a tree
   * reaching its own export would write into itself, shifted by a mirror's metadata area, or
   * write one disk twice) — at open, and on any later WELCOME: the leg then stops for good.
   */
  localEpochs?: ReadonlySet<number>;
}

export function remoteAddress(url: ExportUrl): ListenAddress {
  return url.transport === "unix" ? { transport: "unix", path: url.path } : { transport: "tcp", host: url.host, port: url.port };
}

/** Connect and handshake; rejects (DstdError) when the export refuses or cannot be reached. */
export async function openRemotePort(options: RemotePortOptions): Promise<RemotePort> {
  if (options.url.protocol !== "dst") throw new DstdError("E_USAGE", `${formatExportUrl(options.url)}: a storage leg must be a dst:// or dst+unix:// export`);
  const where = formatExportUrl(options.url);
  // On every WELCOME, not only the first: the leg's address may later reach this process (a
  // DNS name or a VIP moved to this node), and a reconnect taken for an export restart would
  // replay the unflushed writes into this node's own export.
  const own = `leg ${where} is an export of this dstd process: a leg must be storage of its own (reaching its own node, a tree would write into itself, or write one disk twice); name the file or device as the leg, or another node's export`;
  const refuse = (welcome: { epoch: number }) => (options.localEpochs?.has(welcome.epoch) === true ? own : null);
  let client: DstClient;
  try {
    client = await DstClient.open({
      ...options.engine,
      address: remoteAddress(options.url),
      exportName: options.url.exportName,
      log: options.log,
      onStateChange: options.onStateChange,
      // A leg that is down when the tree opens is retried by the mirror's probes, so give up
      // at the first lost connection instead of waiting a whole deadline in silence.
      firstContact: options.firstContact ?? "fail",
      refuse,
    });
  } catch (error) {
    throw new DstdError("E_CONNECT", `leg ${where}: ${(error as Error).message}`, { cause: error });
  }
  const welcome = client.engine.welcome;
  if (welcome !== null && refuse(welcome) !== null) {
    await client.close().catch(() => {});
    throw new DstdError("E_CONFIG", own);
  }
  const port = new RemotePort(client, where);
  // Room in the receive pool for the handed-over payloads the engine keeps for replay.
  port.releasePool = reservePoolBytes(options.engine.replayBufferBytes ?? ENGINE_DEFAULTS.replayBufferBytes);
  return port;
}

export class RemotePort extends EnginePort implements Describable {
  override readonly kind = "remote";
  private closing: Promise<void> | null = null;
  releasePool: () => void = () => {};

  override close(): Promise<void> {
    this.releasePool();
    this.closing ??= this.client.close();
    return this.closing;
  }

  describe(): NodeSnapshot {
    const c = this.client.counters;
    return {
      kind: this.kind,
      description: this.description,
      sizeBytes: this.size,
      link: this.client.engine.state,
      counters: { inflight: c.inflight, resends: c.resends, reconnects: c.reconnects, replays: c.replays, timeouts: c.timeouts, keepaliveFailures: c.keepaliveFailures },
    };
  }
}
