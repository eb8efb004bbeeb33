/**
 * @module attach/export-link — what an attachment needs from its way to the export: the port
 * it serves, the export's geometry as announced, the engine's deadline, live counters for the
 * record, and flush/close. The composition root (daemon/attach-node.ts) builds it from a
 * DstClient and its engine port; attach/ never reaches into the engine itself.
 *
 * Must not: grow into a second client API; it is the narrow view the lifecycle uses.
 */
import type { StoragePort } from "../storage/port.ts";
import type { LinkCounters } from "./state.ts";

export interface ExportLink {
  /** The port every kernel socket (or NBD client) is served from. */
  readonly port: StoragePort;
  /** Export size in bytes, as the export last announced it (it may change on reconnect). */
  readonly exportSize: number;
  /** The export's preferred and minimum request sizes (the block size comes from them). */
  readonly blockPreferred: number;
  readonly blockMin: number;
  /** Largest payload per request the export grants. */
  readonly maxPayload: number;
  /** How long the engine holds a request before answering it with an error. */
  readonly deadlineMs: number;
  /** The engine's link state ("ready", "reconnecting", …) for the record. */
  readonly state: string;
  readonly counters: Readonly<LinkCounters>;
  /** Requests taken and not answered yet. */
  readonly outstanding: number;
  /** FLUSH to the export; resolves when its disk has every write answered before. */
  flush(): Promise<void>;
  /** Orderly close (outstanding requests finish). */
  close(): Promise<void>;
  /** Close now. */
  abort(): void;
}
