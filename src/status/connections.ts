/**
 * @module status/connections — who is connected to a listener, seen from the transport
 * boundary: a wrapper around an AcceptHandler that counts bytes each way and knows each
 * live connection's peer and start time, whatever protocol runs inside. It never reads or
 * changes the bytes, so it is independent of the export's internals.
 *
 * Bounded: one small record per live connection (the listener's own limits bound how many
 * there are), removed at close; `snapshot` lists at most `listLimit` of them.
 */
import type { GuardHooks, GuardedAcceptHandler, GuardedHandler } from "../transport/guard.ts";
import type { Peer, Sink } from "../transport/types.ts";
import { describePeer } from "../transport/types.ts";
import type { ConnectionEntry } from "../control/schema.ts";

export type ConnectionProtocol = "dst" | "nbd";

interface Live {
  protocol: ConnectionProtocol;
  peer: string;
  since: number;
  bytesIn: number;
  bytesOut: number;
}

export interface ConnectionEvent {
  protocol: ConnectionProtocol;
  peer: string;
  /** close only: */
  durationMs?: number;
  bytesIn?: number;
  bytesOut?: number;
  reason?: string | null;
}

export class ConnectionTracker {
  private readonly live = new Set<Live>();
  opened = 0;
  bytesIn = 0;
  bytesOut = 0;

  constructor(
    private readonly onEvent: (kind: "open" | "close", event: ConnectionEvent) => void = () => {},
    private readonly now: () => number = Date.now,
    private readonly listLimit = 64,
  ) {}

  /** The same accept handler, observed. */
  wrap(accept: GuardedAcceptHandler, protocol: ConnectionProtocol): GuardedAcceptHandler {
    return (sink: Sink, peer: Peer, hooks: GuardHooks): GuardedHandler => {
      const record: Live = { protocol, peer: describePeer(peer), since: this.now(), bytesIn: 0, bytesOut: 0 };
      this.live.add(record);
      this.opened++;
      this.onEvent("open", { protocol, peer: record.peer });
      const tracker = this;
      const counted: Sink = {
        write(bytes: Uint8Array, release?: () => void) {
          record.bytesOut += bytes.length;
          tracker.bytesOut += bytes.length;
          sink.write(bytes, release);
        },
        get queuedBytes() {
          return sink.queuedBytes;
        },
        end: () => sink.end(),
        destroy: () => sink.destroy(),
        pause: () => sink.pause(),
        resume: () => sink.resume(),
      };
      const inner = accept(counted, peer, hooks);
      return {
        partialBytes: () => inner.partialBytes?.() ?? 0,
        onData(chunk: Uint8Array) {
          record.bytesIn += chunk.length;
          tracker.bytesIn += chunk.length;
          inner.onData(chunk);
        },
        onDrain: () => inner.onDrain(),
        onClose: (reason: string | null) => {
          if (this.live.delete(record)) {
            this.onEvent("close", {
              protocol,
              peer: record.peer,
              durationMs: this.now() - record.since,
              bytesIn: record.bytesIn,
              bytesOut: record.bytesOut,
              reason,
            });
          }
          inner.onClose(reason);
        },
      };
    };
  }

  get current(): number {
    return this.live.size;
  }

  snapshot(): { current: number; list: ConnectionEntry[]; truncated: boolean } {
    const list: ConnectionEntry[] = [];
    for (const record of this.live) {
      if (list.length >= this.listLimit) break;
      list.push({
        protocol: record.protocol,
        peer: record.peer,
        since: new Date(record.since).toISOString(),
        bytesIn: record.bytesIn,
        bytesOut: record.bytesOut,
      });
    }
    return { current: this.live.size, list, truncated: this.live.size > list.length };
  }
}
