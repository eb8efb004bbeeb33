/**
 * @module daemon/replica-node — composition of one replicated export (docs/replication.md §10,
 * §11): a primary (the replication layer over the export's disk, and the FETCH server for its
 * log) or a secondary (the log copy + applier over the disk, the shipper fetching from the
 * peer through a DST client, the disk served read-only). Gives the control socket and the
 * metrics one status per export and the operations on it.
 */
import type { ExportConfig } from "../config/types.ts";
import { DEFAULT_SUITES } from "../crypto/suites.ts";
import { loadKeyFile } from "../crypto/keys.ts";
import { formatExportUrl } from "../lib/address.ts";
import { Errno } from "../lib/errno.ts";
import type { Log } from "../lib/log.ts";
import type { StoragePort } from "../storage/port.ts";
import { DstClient, type DstClientOptions } from "../client/dst-client.ts";
import { remoteAddress } from "../storage/remote/remote-port.ts";
import { encodeFetchRequest } from "../wire/dst/fetch.ts";
import { openLogDirectory } from "../replication/files.ts";
import { ReplicationPrimary } from "../replication/primary.ts";
import { Secondary } from "../replication/secondary.ts";
import { LogShipServer } from "../replication/ship-server.ts";
import { Shipper, type FetchTransport } from "../replication/shipper.ts";
import type { LogSource } from "../export/fetch.ts";
import { replicaStatusOf, type ReplicaStatus, type StatusSample } from "./replica-status.ts";

export type PauseWhat = "fetch" | "replay" | "both";

export interface ReplicaHandle {
  readonly name: string;
  readonly role: "primary" | "secondary";
  /** What the export serves: the replication layer (primary) or the disk (secondary, read-only). */
  readonly port: StoragePort;
  /** The log FETCH reads (primary only). */
  readonly log: LogSource | undefined;
  status(): ReplicaStatus;
  pause(what: PauseWhat): string;
  resume(what: PauseWhat): string;
  close(): Promise<void>;
}

const realTimer = {
  now: () => performance.now(),
  after(ms: number, run: () => void): () => void {
    const timer = setTimeout(run, ms);
    return () => clearTimeout(timer);
  },
};

/** Opens the replication of `config` over its disk `disk`. */
export async function openReplica(config: ExportConfig, disk: StoragePort, log: Log): Promise<ReplicaHandle> {
  const replication = config.replication!;
  const dir = openLogDirectory(replication.logDir);
  if (replication.role === "primary") {
    const primary = await ReplicationPrimary.open(disk, dir, { logLimit: replication.logSize, log });
    const server = new LogShipServer(primary, realTimer, { log });
    log.info(`export '${config.name}': replication primary, log ${replication.logDir} (${primary.status().last} records, generation ${primary.status().generation})`);
    return new PrimaryHandle(config.name, primary, server);
  }
  const secondary = await Secondary.open(disk, dir, {
    clock: { now: () => Date.now() * 1000, after: realTimer.after },
    replayDelayMs: replication.replayDelayMs,
    log,
  });
  const peer = replication.peer!;
  const client = new PeerLink(
    {
      address: remoteAddress(peer),
      exportName: peer.exportName,
      clientName: `dstd secondary of ${config.name}`,
      log,
      auth: replication.keyFile !== null ? { key: loadKeyFile(replication.keyFile), suites: DEFAULT_SUITES } : null,
      firstContact: "retry",
      // Shipping waits out any outage: a FETCH that fails is simply asked again.
      deadlineMs: 60_000,
    },
    log,
  );
  const shipper = new Shipper(secondary, client.transport, realTimer, { log });
  shipper.start();
  log.info(`export '${config.name}': replication secondary of ${formatExportUrl(peer)}, applied through seq ${secondary.applier.status().applied.seq}`);
  return new SecondaryHandle(config.name, disk, secondary, shipper, client, formatExportUrl(peer));
}

class PrimaryHandle implements ReplicaHandle {
  readonly role = "primary";
  constructor(
    readonly name: string,
    private readonly primary: ReplicationPrimary,
    private readonly server: LogShipServer,
  ) {}

  get port(): StoragePort {
    return this.primary;
  }

  get log(): LogSource {
    return this.server;
  }

  status(): ReplicaStatus {
    return replicaStatusOf({ name: this.name, role: "primary", primary: this.primary.status(), contacts: this.server.secondaries(), now: realTimer.now() });
  }

  pause(): string {
    return `export '${this.name}' is a primary: nothing to pause (pause fetching or replay on its secondary)`;
  }

  resume(): string {
    return this.pause();
  }

  async close(): Promise<void> {
    await this.primary.close();
  }
}

class SecondaryHandle implements ReplicaHandle {
  readonly role = "secondary";
  readonly log = undefined;
  private readonly samples: StatusSample[] = [];

  constructor(
    readonly name: string,
    readonly port: StoragePort,
    private readonly secondary: Secondary,
    private readonly shipper: Shipper,
    private readonly link: PeerLink,
    private readonly peer: string,
  ) {}

  status(): ReplicaStatus {
    return replicaStatusOf({
      name: this.name,
      role: "secondary",
      peer: this.peer,
      applier: this.secondary.applier.status(),
      copyLast: this.secondary.copy.last.seq,
      copyBytes: this.secondary.copy.bytes,
      shipper: this.shipper.status(),
      samples: this.samples,
      now: realTimer.now(),
    });
  }

  pause(what: PauseWhat): string {
    if (what !== "replay") this.shipper.pause();
    if (what !== "fetch") this.secondary.applier.pause();
    return `export '${this.name}': ${what === "both" ? "fetching and replay" : what === "fetch" ? "fetching" : "replay"} paused`;
  }

  resume(what: PauseWhat): string {
    if (what !== "replay") this.shipper.resume();
    if (what !== "fetch") this.secondary.applier.resume();
    return `export '${this.name}': ${what === "both" ? "fetching and replay" : what === "fetch" ? "fetching" : "replay"} resumed`;
  }

  async close(): Promise<void> {
    this.shipper.stop();
    this.link.close();
    await this.secondary.close();
  }
}

/**
 * The secondary's DST client to its primary, opened lazily and opened again after the engine
 * gave up (a deadline spent during a long outage): FETCH is always safe to ask again.
 */
class PeerLink {
  private client: DstClient | null = null;
  private opening: Promise<DstClient> | null = null;
  private closed = false;

  constructor(
    private readonly options: DstClientOptions,
    private readonly log: Log,
  ) {}

  readonly transport: FetchTransport = (request, done) => {
    this.get().then(
      (client) => {
        const accepted = client.submit(
          { kind: "fetch", offset: request.seq, length: request.maxBytes, data: encodeFetchRequest(request) },
          (errno, data) => {
            if (errno === Errno.EIO || errno === Errno.ESHUTDOWN || errno === Errno.ETIMEDOUT) this.drop(client);
            done(errno, data);
          },
        );
        if (accepted <= 0) {
          this.drop(client);
          if (accepted !== 0) done(Errno.EAGAIN, null);
        }
      },
      (error: Error) => done(Errno.ECONNREFUSED, new TextEncoder().encode(error.message)),
    );
  };

  private get(): Promise<DstClient> {
    if (this.closed) return Promise.reject(new Error("shipping stopped"));
    if (this.client !== null) return Promise.resolve(this.client);
    this.opening ??= DstClient.open(this.options).then(
      (client) => {
        this.opening = null;
        if (this.closed) {
          void client.close();
          throw new Error("shipping stopped");
        }
        this.client = client;
        return client;
      },
      (error: Error) => {
        this.opening = null;
        this.log.warn(`replication: cannot reach the primary: ${error.message}`);
        throw error;
      },
    );
    return this.opening;
  }

  private drop(client: DstClient): void {
    if (this.client !== client) return;
    const state = client.engine.state;
    if (state === "failed" || state === "closed") {
      this.client = null;
      void client.close();
    }
  }

  close(): void {
    this.closed = true;
    const client = this.client;
    this.client = null;
    if (client !== null) void client.close();
  }
}
