/**
 * @module replication/ship-server — the primary's side of log shipping: answers a secondary's
 * FETCH (docs/protocol.md §11, docs/replication.md §10) from the replication primary's log.
 *
 * Per FETCH: register the secondary (by identity) or record the applied seq it reports (the
 * log keeps what it has not applied); refuse a position before the log ("released": it needs
 * a full sync) or one that does not continue the primary's log ("diverged at seq N": its last
 * record differs from the primary's, or it holds records the primary does not have); read at
 * most `maxBytes` of durable records from the exact position (segment + offset) and answer
 * with them and the position after them. When nothing new is durable, the answer waits up to
 * `waitMs` for the next durable record (a long poll), then answers empty.
 *
 * SYNC (a secondary's initial sync, §10.1) is answered by sync-server.ts through `sync`.
 *
 * Memory: one reader and one read buffer (≤ maxBytes + one record) per FETCH being answered;
 * the export bounds the FETCHes in flight by their reply reservations.
 */
import { Errno, errnoMessage } from "../lib/errno.ts";
import type { Log } from "../lib/log.ts";
import type { FetchAnswer, LogSource } from "../export/fetch.ts";
import { encodeFetchReply, type FetchRequest } from "../wire/dst/fetch.ts";
import type { SyncRequest } from "../wire/dst/sync.ts";
import { answerSync } from "./sync-server.ts";
import { SyncKind } from "../wire/dst/constants.ts";
import type { ReplicationPrimary } from "./primary.ts";
import { chainPointOf, hex64, invalidSuccessor, MAX_RECORD_SIZE, type ChainPoint } from "./record.ts";
import type { LogPosition, ReadChunk } from "./log-reader.ts";

export interface ShipServerClock {
  /** Milliseconds. */
  now(): number;
  after(ms: number, run: () => void): () => void;
}

/** What the primary knows of one secondary, for status. */
export interface SecondaryContact {
  name: string;
  /** Last FETCH (ms on the server's clock). */
  lastContact: number;
  applied: number;
  /** The seq it asked for last. */
  wanted: number;
  /** Why its last FETCH was refused (released, diverged), or null. */
  refused: string | null;
  /**
   * It began a sync (SYNC BEGIN answered) and has not fetched past its sync point since: its
   * disk is being copied, and its registration is the sync point, not what it applied (a
   * handover waits for it). Known to this process only: a restart of the primary forgets it.
   */
  copying: boolean;
  /** The sync point of its last SYNC BEGIN: a FETCH from below it is one sent before the sync (a resend arriving late), not the end of the copy. */
  syncPoint: number;
}

/**
 * Registered on a new log until the first real secondary fetches: the log keeps every record
 * for it (past the log's size the primary writes around the log into the dirty bitmap, and
 * the secondary resyncs those regions), so a secondary started after the primary's first
 * writes still begins at seq 1 instead of "released".
 */
export const AWAITING_FIRST_SECONDARY = "awaiting-first-secondary";

export class LogShipServer implements LogSource {
  readonly minFetchBytes = MAX_RECORD_SIZE;
  private readonly contacts = new Map<string, SecondaryContact>();
  /** Per secondary: where its recent answers ended (FOLLOWS, docs/protocol.md §11.2). */
  private readonly answerEnds = new Map<string, AnswerEnds>();
  /** FETCHes being answered (long polls included). */
  active = 0;

  constructor(
    private readonly primary: ReplicationPrimary,
    private readonly clock: ShipServerClock,
    private readonly options: { waitMs?: number; log?: Log } = {},
  ) {}

  secondaries(): SecondaryContact[] {
    return [...this.contacts.values()].map((c) => ({ ...c }));
  }

  /**
   * A reload took the replica right from registered secondaries: forget them, so the log is no
   * longer kept for them. Without this a decommissioned secondary, or a peer that fetched once,
   * held every record after its position for ever: the log filled, stayed in overflow, the
   * real secondaries never got the regions written around it, and demote never finished.
   * Returns a line per secondary forgotten.
   */
  forgetUngranted(granted: (secondary: string) => boolean): string[] {
    const lines: string[] = [];
    for (const [name, applied] of Object.entries(this.primary.status().secondaries)) {
      if (name === AWAITING_FIRST_SECONDARY || granted(name)) continue;
      this.primary.removeSecondary(name);
      this.contacts.delete(name);
      this.answerEnds.delete(name);
      lines.push(`secondary ${name} (applied seq ${applied}) no longer has the replica right: the log is not kept for it any more (given the right again, it may need a full sync)`);
    }
    return lines;
  }

  /** `secondary`'s contact (made at its first request), its last contact now. */
  private contact(secondary: string): SecondaryContact {
    const contact = this.contacts.get(secondary) ?? { name: secondary, lastContact: 0, applied: 0, wanted: 0, refused: null, copying: false, syncPoint: 0 };
    this.contacts.set(secondary, contact);
    contact.lastContact = this.clock.now();
    return contact;
  }

  /** A SYNC (initial sync: BEGIN registers the secondary at the sync point; COPY reads the disk): replication/sync-server.ts. */
  sync(request: SyncRequest, offset: number, length: number, budget: number, secondary: string, done: (answer: FetchAnswer) => void): void {
    const contact = this.contact(secondary);
    const primary = this.primary;
    const registered = () => {
      if (secondary !== AWAITING_FIRST_SECONDARY && AWAITING_FIRST_SECONDARY in primary.status().secondaries) primary.removeSecondary(AWAITING_FIRST_SECONDARY);
    };
    // Copying from the moment a BEGIN arrives: its registration at the sync point shows in the
    // primary's status before the answer goes out, and a handover that looked in between took
    // the secondary for one that had applied the whole log (cluster sim seed 381777).
    const before = { copying: contact.copying, syncPoint: contact.syncPoint };
    if (request.kind === SyncKind.BEGIN) Object.assign(contact, { copying: true, syncPoint: Number.MAX_SAFE_INTEGER });
    answerSync(primary, request, offset, length, budget, secondary, registered, (answer) => {
      contact.refused = "reason" in answer ? answer.reason : null;
      if (request.kind === SyncKind.BEGIN) {
        if (answer.status === 0) contact.syncPoint = primary.status().secondaries[secondary] ?? 0;
        else Object.assign(contact, before);
      }
      done(answer);
    });
  }

  /** Secondaries whose first registration is being written: the FETCHes that came meanwhile. Bounded by the FETCHes in flight. */
  private readonly registering = new Map<string, Array<() => void>>();
  /**
   * Secondaries whose registration failed to save: the primary's state names them, its state
   * on disk (what the log is released by, and what a restart loads) does not. Answering them
   * let the log be released under them (cluster simulation seed 1550, docs/replication.md §8.2):
   * they register again first.
   */
  private readonly unrecorded = new Set<string>();

  fetch(request: FetchRequest, secondary: string, done: (answer: FetchAnswer) => void): void {
    const primary = this.primary;
    const store = primary.store;
    const contact = this.contact(secondary);
    contact.wanted = request.seq;
    // A FETCH from its sync point on ends the copy; one from below it was sent before the sync
    // began (a resend arriving late) and must not make a handover take the copying secondary
    // for one that can take over (the way the BEGIN's answer once did: see sync above).
    if (request.seq - 1 >= contact.syncPoint) contact.copying = false;
    const refuse = (status: number, reason: string) => {
      contact.refused = reason;
      done({ status, reason });
    };
    const held = request.seq - 1;
    const durable = store.durable;
    if (held > durable.seq) {
      return refuse(Errno.ESTALE, `diverged at seq ${durable.seq + 1}: the secondary holds seq ${held}, beyond the primary's log (durable through seq ${durable.seq}, generation ${store.generation})`);
    }
    if (held === durable.seq && held > 0 && durable.chain !== request.prevChain) {
      return refuse(Errno.ESTALE, `diverged at seq ${held}: the secondary's record ends 0x${hex64(request.prevChain)}, the primary's 0x${hex64(durable.chain)}`);
    }
    if (request.seq < store.first) {
      return refuse(Errno.ENODATA, `released: seq ${request.seq} is no longer in the primary's log (it starts at seq ${store.first}); a full sync is needed`);
    }
    // Its registration is being made durable: FETCHes that follow it wait, so answers begin in
    // the order the FETCHes came (a FOLLOWS must not overtake the FETCH it follows).
    const waiting = this.registering.get(secondary);
    if (waiting !== undefined) return void waiting.push(() => this.fetch(request, secondary, done));
    const registered = primary.status().secondaries[secondary];
    if (registered === undefined || this.unrecorded.has(secondary)) {
      // Durable before it gets a record: a primary that crashed after answering a secondary it
      // had not yet recorded forgot it, released the log it still needed, and left it stranded
      // ("released", waiting for an operator's full sync: cluster sim seed 35542).
      const queue: Array<() => void> = [];
      this.registering.set(secondary, queue);
      const why = primary.addSecondary(secondary, request.applied, (errno) => {
        this.registering.delete(secondary);
        if (errno !== 0) this.unrecorded.add(secondary);
        else this.unrecorded.delete(secondary);
        if (errno !== 0) refuse(Errno.EIO, `secondary ${secondary} could not be recorded (${errnoMessage(errno)}); ask again`);
        else this.fetchRegistered(request, secondary, contact, done);
        for (const next of queue) next();
      });
      if (why !== null) {
        this.registering.delete(secondary);
        refuse(Errno.ENODATA, why);
        for (const next of queue) next();
      }
      return;
    }
    const why = primary.secondaryApplied(secondary, Math.min(request.applied, durable.seq));
    if (why !== null) return refuse(Errno.ENODATA, why);
    this.fetchRegistered(request, secondary, contact, done);
  }

  /** A FETCH from a registered secondary: answer from its position, or where the FETCH it follows ended. */
  private fetchRegistered(request: FetchRequest, secondary: string, contact: SecondaryContact, done: (answer: FetchAnswer) => void): void {
    const held = request.seq - 1;
    contact.applied = Math.max(contact.applied, request.applied);
    contact.refused = null;
    const after: ChainPoint = { seq: held, chain: request.prevChain, lamport: request.prevLamport, generation: request.prevGeneration };
    const from = { seq: request.seq, segment: request.segment, offset: request.offset };
    if (request.follows !== true) return this.answer(contact, secondary, from, after, request.maxBytes, done);
    // FOLLOWS (docs/protocol.md §11.2): start where the answer to the named FETCH ended.
    this.answerEnd(secondary, request.seq, (end) => {
      if (end === null) {
        // Not a failure of the log: the secondary drops this answer and asks by position.
        return done({ status: Errno.EAGAIN, reason: `FETCH follows the answer from seq ${request.seq}, which this primary has not answered (or no longer remembers); fetch by position` });
      }
      contact.wanted = end.next.seq;
      this.answer(contact, secondary, end.next, end.point, request.maxBytes, done);
    });
  }

  /** Answers from `from` (its record must continue `after`), remembering where the answer ends for a FOLLOWS. */
  private answer(contact: SecondaryContact, secondary: string, from: Required<LogPosition>, after: ChainPoint, maxBytes: number, done: (answer: FetchAnswer) => void): void {
    const primary = this.primary;
    const store = primary.store;
    const held = from.seq - 1;
    const ends = this.ends(secondary);
    const end = ends.begin(from.seq);
    const reader = primary.reader(from.segment > 0 ? from : { seq: from.seq }, null);
    this.active++;
    let finished = false;
    let cancelWait = () => {};
    let unsubscribe = () => {};
    const finish = (answer: FetchAnswer, next: AnswerEnd | null) => {
      if (finished) return;
      finished = true;
      this.active--;
      cancelWait();
      unsubscribe();
      void reader.close();
      ends.settle(end, next);
      if ("reason" in answer) contact.refused = answer.reason;
      done(answer);
    };
    const answer = (chunk: ReadChunk) => {
      const first = chunk.records[0];
      if (first !== undefined && held > 0) {
        const fork = invalidSuccessor(after, first);
        if (fork !== null) return finish({ status: Errno.ESTALE, reason: `diverged at seq ${held}: ${fork}` }, null);
      }
      // A secondary whose log continues ours replaces the placeholder (not one that forked:
      // the log stays kept from the placeholder's seq for its repair, §11).
      if (AWAITING_FIRST_SECONDARY in primary.status().secondaries) primary.removeSecondary(AWAITING_FIRST_SECONDARY);
      const payload = encodeFetchReply(
        { nextSeq: chunk.next.seq, nextSegment: chunk.next.segment, nextOffset: chunk.next.offset, durable: store.durable.seq, generation: store.generation, behind: bytesAfter(primary, chunk.next) },
        chunk.bytes,
      );
      const last = chunk.records[chunk.records.length - 1];
      finish({ status: 0, payload }, { next: chunk.next, point: last !== undefined ? chainPointOf(last) : after });
    };
    const read = (last: boolean) => {
      reader.read(maxBytes, (error, chunk) => {
        if (finished) return;
        if (error !== null) {
          const released = from.seq < store.first;
          return finish(
            released
              ? { status: Errno.ENODATA, reason: `released: ${error}; a full sync is needed` }
              : { status: Errno.EIO, reason: `the primary's log cannot be shipped: ${error}` },
            null,
          );
        }
        if (chunk!.records.length > 0 || last) return answer(chunk!);
        // Nothing new yet: wait for the next durable record, or answer empty after waitMs.
        let woken = false;
        const wake = () => {
          if (woken || finished) return;
          woken = true;
          read(true);
        };
        unsubscribe = reader.onAvailable(wake);
        cancelWait = this.clock.after(this.options.waitMs ?? 250, wake);
      });
    };
    read(false);
  }

  /** Where the answers to `secondary`'s recent FETCHes ended (created on first use). */
  private ends(secondary: string): AnswerEnds {
    let ends = this.answerEnds.get(secondary);
    if (ends === undefined) {
      ends = new AnswerEnds();
      this.answerEnds.set(secondary, ends);
    }
    return ends;
  }

  /**
   * `done` with where the answer to `secondary`'s FETCH from `seq` ended, once it has; null
   * when it failed, or when no FETCH from `seq` began within the long-poll wait (a FOLLOWS
   * that overtook its predecessor waits for it that long).
   */
  private answerEnd(secondary: string, seq: number, done: (end: AnswerEnd | null) => void): void {
    this.ends(secondary).when(seq, done, (run) => this.clock.after(this.options.waitMs ?? 250, run));
  }
}

/** Where one answer ended: the next position and the chain point its last record left. */
export interface AnswerEnd {
  next: Required<LogPosition>;
  point: ChainPoint;
}

interface EndEntry {
  seq: number;
  /** undefined: still being answered; null: the answer failed. */
  end: AnswerEnd | null | undefined;
  waiters: ((end: AnswerEnd | null) => void)[];
}

/**
 * The ends of one secondary's most recent answers, by the seq each started at, for FOLLOWS
 * (docs/protocol.md §11.2). Bounded: ANSWER_ENDS entries; the oldest is dropped, and a FOLLOWS
 * naming it (or one this process never answered: a restart) is told to fetch by position. A
 * FOLLOWS naming an answer still being read waits for it; a FOLLOWS' own waiters are bounded by
 * the FETCHes the export lets be in flight.
 */
export class AnswerEnds {
  private readonly entries: EndEntry[] = [];
  /** FOLLOWS naming a FETCH that has not begun (overtaken on the way): each until it begins or its wait ends. */
  private readonly early: { seq: number; done: (end: AnswerEnd | null) => void; cancel: () => void }[] = [];

  begin(seq: number): EndEntry {
    const entry: EndEntry = { seq, end: undefined, waiters: [] };
    this.entries.push(entry);
    while (this.entries.length > ANSWER_ENDS) this.settleDropped(this.entries.shift()!);
    for (let i = 0; i < this.early.length; ) {
      const waiter = this.early[i]!;
      if (waiter.seq !== seq) i++;
      else {
        this.early.splice(i, 1);
        waiter.cancel();
        entry.waiters.push(waiter.done);
      }
    }
    return entry;
  }

  settle(entry: EndEntry, end: AnswerEnd | null): void {
    entry.end = end;
    const waiters = entry.waiters;
    entry.waiters = [];
    for (const waiter of waiters) waiter(end);
  }

  /**
   * The newest entry for `seq` (a FETCH asked again replaces the earlier answer). None yet:
   * with `wait`, the FETCH from `seq` may still be on its way — wait for it to begin until
   * `wait` runs its callback (at most ANSWER_ENDS such waits; the oldest gives up first).
   */
  when(seq: number, done: (end: AnswerEnd | null) => void, wait?: (run: () => void) => () => void): void {
    for (let i = this.entries.length - 1; i >= 0; i--) {
      const entry = this.entries[i]!;
      if (entry.seq !== seq) continue;
      if (entry.end === undefined) entry.waiters.push(done);
      else done(entry.end);
      return;
    }
    if (wait === undefined) return done(null);
    const waiter = { seq, done, cancel: () => {} };
    this.early.push(waiter);
    waiter.cancel = wait(() => {
      const at = this.early.indexOf(waiter);
      if (at < 0) return;
      this.early.splice(at, 1);
      done(null);
    });
    while (this.early.length > ANSWER_ENDS) {
      const oldest = this.early.shift()!;
      oldest.cancel();
      oldest.done(null);
    }
  }

  private settleDropped(entry: EndEntry): void {
    if (entry.end === undefined) this.settle(entry, null);
  }
}

/** Answer ends kept per secondary: a pipelined secondary needs two; a few more absorb resends. */
export const ANSWER_ENDS = 4;

/** Durable log bytes after a position (the secondary's lag in bytes once it has `next`). */
function bytesAfter(primary: ReplicationPrimary, next: { seq: number; segment: number; offset: number }): number {
  let bytes = 0;
  for (const s of primary.store.segmentTable()) {
    if (s.durableLast < next.seq) continue;
    bytes += s.firstSeq === next.segment ? Math.max(0, s.durableSize - next.offset) : s.firstSeq > next.segment ? s.durableSize : 0;
  }
  return bytes;
}
