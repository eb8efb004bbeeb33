/**
 * @module export/limits — every bound the DST export puts on what peers can make it hold or
 * do, with its default, in one place (docs/security.md "Resource limits"). A hostile client,
 * authenticated or not, can use at most these; past them the export stops reading from that
 * socket (backpressure) or refuses the request with a clear status, never allocates more.
 */

export interface ExportLimits {
  /** Requests one connection may have being served at once (advertised as MAX_INFLIGHT). */
  maxInflight: number;
  /**
   * Bytes the whole export may hold for peers: frames and records being received or waiting
   * to be handled, READ replies being produced, replies queued for slow readers. Half is for
   * receiving, half for replies, so a full receive side can never starve the replies that
   * would drain it (no deadlock).
   */
  memoryBudget: number;
  /** Bytes one connection may hold of the receive half (a frame in flight, writes awaiting completion). */
  connectionReceiveBytes: number;
  /** Bytes one connection may hold of the reply half (replies being produced and queued). */
  connectionReplyBytes: number;
  /** Requests one connection handles per turn before letting other connections run. */
  turnRequests: number;
  /**
   * Exactly-once entries one session may hold (advertised as MAX_TXID_SPAN: a dstd client
   * keeps nextTxid − floor below it, so it never meets the bound; it waits instead).
   */
  sessionEntries: number;
  /**
   * Exactly-once entries across all sessions (~150 bytes each). Past it, disconnected sessions
   * are forgotten first; if connected sessions alone hold it, their mutations are refused.
   */
  totalEntries: number;
  /**
   * Exactly-once entries one owner (an identity; anonymous sessions: their peer class) may hold
   * across its sessions: a client that opens many sessions and never lets their floors advance
   * fills its own share, not the table every other client needs (export/sessions.ts).
   */
  ownerEntries: number;
  /** Sessions remembered (connected or waiting for a reconnect). */
  sessions: number;
}

export const EXPORT_LIMITS: Readonly<ExportLimits> = {
  maxInflight: 256,
  memoryBudget: 256 * 1024 * 1024,
  connectionReceiveBytes: 64 * 1024 * 1024,
  connectionReplyBytes: 48 * 1024 * 1024,
  turnRequests: 128,
  sessionEntries: 512,
  totalEntries: 200_000,
  ownerEntries: 50_000,
  sessions: 4096,
};
