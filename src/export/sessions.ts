/**
 * @module export/sessions — client sessions of the DST export and their exactly-once tables
 * (docs/protocol.md §6.5 "Sessions").
 *
 * A session belongs to the identity that made it (anonymous sessions: to the same peer class
 * and export) and is resumed only by a handshake that proves a secret of the session: the
 * resumption key derived in the authenticated handshake that made the session (proven over each
 * new handshake's transcript, so a proof seen on the wire is worthless for the next), or
 * (anonymous, loopback / Unix only) the resumption token the export handed out when it made
 * the session. The secret does not change for the session's life: a rotation whose WELCOME
 * was lost in a cut would lock the rightful client out.
 *
 * The exactly-once table remembers every mutating request by txid from the client's txid floor
 * on: its signature (opcode, flags, offset, length, payload hash) and its status, or "in
 * progress" while the storage port still works on it. A resent request is answered from the
 * table only when its signature matches what was applied; a different request under a used
 * txid fails loudly instead of being acknowledged without effect.
 *
 * Bounds (export/limits.ts): entries per session, entries per owner (an identity, or the peer
 * class of anonymous sessions: one client opening many sessions cannot fill the table the others
 * need), entries in total, and the number of sessions (least recently used disconnected ones
 * are forgotten first).
 */
import { randomBytes, timingSafeEqual } from "node:crypto";
import type { ExportLimits } from "./limits.ts";

export type PeerClass = "unix" | "loopback" | "network";

export interface SessionOwner {
  exportName: string;
  /** Authenticated identity, or null for an anonymous (loopback / Unix) session. */
  identity: string | null;
  peerClass: PeerClass;
}

/** What a session needs from the connection serving it. */
export interface SessionConnection {
  /** A newer connection of the session took over: stop at once, read nothing more. */
  fence(): void;
}

/** One remembered mutation. `status` is -1 while the port still works on it. */
export interface Entry {
  opcode: number;
  flags: number;
  offset: number;
  length: number;
  hash: bigint;
  status: number;
  /** Resends of this txid that arrived while it was in progress: answered on completion (null: let go). */
  waiters: Array<(status: number | null) => void> | null;
}

export class Session {
  readonly key: string;
  /** Whose share of the exactly-once table the entries count against. */
  readonly ownerKey: string;
  connection: SessionConnection | null = null;
  /** CONNECTION_SEQ of the newest handshake admitted for the session (0: the client sends none). */
  connectionSeq = 0;
  /** The session's resumption secret (set when it is made; empty until then). */
  secrets: Uint8Array[] = [];
  readonly entries = new Map<number, Entry>();

  constructor(
    readonly id: Uint8Array,
    readonly owner: SessionOwner,
  ) {
    this.key = Buffer.from(id).toString("hex");
    this.ownerKey = owner.identity !== null ? `identity ${owner.identity}` : `anonymous ${owner.peerClass} clients`;
  }

  /** Short form for logs. */
  get label(): string {
    return this.key.slice(0, 8);
  }

  /** Set the session's resumption secret (once, when the session is made). */
  setSecret(secret: Uint8Array): void {
    for (const old of this.secrets) old.fill(0);
    this.secrets = [secret.slice()];
  }

  /** Constant-time check of an anonymous resumption token. */
  tokenMatches(token: Uint8Array): boolean {
    let match = false;
    for (const secret of this.secrets) if (secret.length === token.length && timingSafeEqual(secret, token)) match = true;
    return match;
  }
}

export type BeginResult = { kind: "new"; entry: Entry } | { kind: "known"; entry: Entry } | { kind: "full"; reason: string };

export class SessionTable {
  private readonly sessions = new Map<string, Session>();
  private total = 0;
  /** Entries per owner key (Session.ownerKey). */
  private readonly owned = new Map<string, number>();

  constructor(private readonly limits: ExportLimits) {}

  get size(): number {
    return this.sessions.size;
  }

  /** Exactly-once entries held across all sessions. */
  get entries(): number {
    return this.total;
  }

  find(id: Uint8Array): Session | undefined {
    return this.sessions.get(Buffer.from(id).toString("hex"));
  }

  create(owner: SessionOwner): Session {
    const session = new Session(new Uint8Array(randomBytes(16)), owner);
    this.sessions.set(session.key, session);
    this.evict();
    return session;
  }

  /** Mark used: the map's order is least recently used first. */
  touch(session: Session): void {
    if (this.sessions.get(session.key) !== session) return;
    this.sessions.delete(session.key);
    this.sessions.set(session.key, session);
  }

  /** Why `owner` may not resume `session`, or null when it may (the secret is checked by the caller). */
  ownerMismatch(session: Session, owner: SessionOwner): string | null {
    if (session.owner.exportName !== owner.exportName) return "it belongs to another export";
    if (session.owner.identity !== owner.identity) {
      return owner.identity === null || session.owner.identity === null
        ? "it was made with a different kind of authentication"
        : "it belongs to another identity";
    }
    if (session.owner.peerClass !== owner.peerClass) return "it was made over another kind of connection";
    return null;
  }

  /** Forget what the client no longer waits for: every txid below its floor. */
  prune(session: Session, floor: number): void {
    for (const txid of session.entries.keys()) {
      if (txid >= floor) break; // insertion order is txid order for a well-behaved client
      session.entries.delete(txid);
      this.count(session, -1);
    }
  }

  /**
   * Look up or start the entry of a mutation. "known": the txid was seen (compare signatures);
   * "new": a fresh in-progress entry; "full": the table is at its bound for this session.
   */
  begin(session: Session, txid: number, opcode: number, flags: number, offset: number, length: number, hash: bigint): BeginResult {
    const known = session.entries.get(txid);
    if (known !== undefined) return { kind: "known", entry: known };
    const held = session.entries.size;
    if (held >= this.limits.sessionEntries) {
      return { kind: "full", reason: `this session holds ${held} unacknowledged results: its txid floor does not advance` };
    }
    const owned = this.owned.get(session.ownerKey) ?? 0;
    if (owned >= this.limits.ownerEntries) {
      return { kind: "full", reason: `the sessions of ${session.ownerKey} hold ${owned} unacknowledged results (at most ${this.limits.ownerEntries} for one owner): their txid floors do not advance` };
    }
    if (this.total >= this.limits.totalEntries && !this.evictOne(session)) {
      return { kind: "full", reason: `the export holds ${this.total} results across all sessions` };
    }
    const entry: Entry = { opcode, flags, offset, length, hash, status: -1, waiters: null };
    session.entries.set(txid, entry);
    this.count(session, 1);
    return { kind: "new", entry };
  }

  /** A mutation finished: record its status and answer the resends that waited for it. */
  finish(entry: Entry, status: number): void {
    entry.status = status;
    const waiters = entry.waiters;
    entry.waiters = null;
    if (waiters !== null) for (const answer of waiters) answer(status);
  }

  /** Forget a result (a request that was not applied must not be answered from the table). */
  drop(session: Session, txid: number, entry: Entry): void {
    if (session.entries.get(txid) === entry) {
      session.entries.delete(txid);
      this.count(session, -1);
    }
  }

  private evict(): void {
    for (const [key, session] of this.sessions) {
      if (this.sessions.size <= this.limits.sessions) return;
      if (session.connection === null) this.remove(key, session);
    }
  }

  /** `delta` entries more (or fewer) held by `session`, in the total and in its owner's share. */
  private count(session: Session, delta: number): void {
    this.total += delta;
    const owned = (this.owned.get(session.ownerKey) ?? 0) + delta;
    if (owned === 0) this.owned.delete(session.ownerKey);
    else this.owned.set(session.ownerKey, owned);
  }

  /** Free room for `keep`: drop the least recently used disconnected session holding entries. */
  private evictOne(keep: Session): boolean {
    for (const [key, session] of this.sessions) {
      if (session === keep || session.connection !== null || session.entries.size === 0) continue;
      this.remove(key, session);
      return true;
    }
    return false;
  }

  private remove(key: string, session: Session): void {
    this.sessions.delete(key);
    this.count(session, -session.entries.size);
    session.entries.clear();
    for (const secret of session.secrets) secret.fill(0);
  }
}
