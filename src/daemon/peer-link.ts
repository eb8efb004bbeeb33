/**
 * @module daemon/peer-link — a replica's DST client to its peer, for FETCH and SYNC
 * (docs/protocol.md §11, §12): opened lazily, opened again after the engine gave up (a deadline
 * spent during a long outage) — FETCH and SYNC only read: always safe to ask again. A FETCH that
 * wants compression carries Flag.ZSTD only when the peer's WELCOME granted Feature.FETCH_ZSTD
 * (docs/protocol.md §11.1): an older primary, which would refuse the flag, gets plain FETCHes.
 * A FETCH with `follows` (a second one in flight, §11.2) goes out only when the WELCOME granted
 * Feature.FETCH_FOLLOWS; otherwise it fails at once with ENOTSUP and no reason, and the shipper
 * keeps one FETCH in flight.
 */
import { Errno } from "../lib/errno.ts";
import type { Log } from "../lib/log.ts";
import { DstClient, type DstClientOptions } from "../client/dst-client.ts";
import { Feature } from "../wire/dst/constants.ts";
import { encodeFetchRequest } from "../wire/dst/fetch.ts";
import type { FetchTransport } from "../replication/shipper.ts";
import type { SyncTransport } from "../replication/initial-sync.ts";
import { encodeSyncRequest } from "../wire/dst/sync.ts";

export class PeerLink {
  private client: DstClient | null = null;
  private opening: Promise<DstClient> | null = null;
  private closed = false;

  constructor(
    private readonly options: DstClientOptions,
    private readonly log: Log,
  ) {}

  readonly transport: FetchTransport = (request, done) => {
    this.submit("fetch", request.seq, request.maxBytes, encodeFetchRequest(request), request.zstd === true, done, request.follows === true);
  };

  /** SYNC (initial sync, docs/protocol.md §12) over the same connection. */
  readonly sync: SyncTransport = (request, offset, length, done) => {
    this.submit("sync", offset, length, encodeSyncRequest(request), false, done);
  };

  private submit(
    kind: "fetch" | "sync",
    offset: number,
    length: number,
    data: Uint8Array,
    wantsZstd: boolean,
    done: (status: number, payload: Uint8Array | null, flags?: number) => void,
    follows = false,
  ): void {
    this.get().then(
      (client) => {
        const granted = client.engine.welcome?.features ?? 0;
        if (follows && (granted & Feature.FETCH_FOLLOWS) === 0) return done(Errno.ENOTSUP, null);
        const zstd = wantsZstd && (granted & Feature.FETCH_ZSTD) !== 0;
        const accepted = client.submit(
          { kind, offset, length, data, zstd, follows },
          (errno, data, flags) => {
            if (errno === Errno.EIO || errno === Errno.ESHUTDOWN || errno === Errno.ETIMEDOUT) this.drop(client);
            done(errno, data, flags);
          },
        );
        if (accepted <= 0) {
          this.drop(client);
          if (accepted !== 0) done(Errno.EAGAIN, null);
        }
      },
      (error: Error) => done(Errno.ECONNREFUSED, new TextEncoder().encode(error.message)),
    );
  }

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
