/**
 * @module storage/tree/mirror/meta-writer — writes the mirror's metadata pages (superblock,
 * bitmap pages) to the legs that must hold them, one write per page at a time.
 *
 * Two writes of the same page in flight could land in either order, so each page has at most
 * one write in flight; a request that comes while one is in flight is folded into the next
 * write, whose content is built when it starts (so it includes every change made before).
 * `persist(key, waiter)` calls `waiter` after a write of that page that started after the
 * call has completed on every leg it went to. A leg that fails the write is handed to the
 * host (which degrades it); the waiters then complete if the page reached every leg still
 * in sync, or get the errno when the failing leg could not be dropped (the last one).
 *
 * A page whose write failed that way is not on disk as it should be. It is written again
 * before the next write of the commit key (the superblock, which points at the pages) and by
 * the next drain (a FLUSH): otherwise a later superblock that does land would rely on a bitmap
 * page that never did, and a crash would lose what it recorded (tree sim seed 335290).
 *
 * Bounded: one state per page key, and the number of keys is fixed by the layout.
 */
import type { Done, StoragePort } from "../../port.ts";

export interface MetaTarget {
  leg: number;
  port: StoragePort;
}

export interface MetaJob {
  offset: number;
  /** The page as `leg` must get it (built when the write starts). */
  bytesFor(leg: number): Uint8Array;
  /** Completed on every target: ok when it reached every leg still in sync. */
  settled?(ok: boolean): void;
  /** One target finished (0 or an errno). */
  legDone?(leg: number, errno: number): void;
}

export interface MetaHost {
  targets(key: number): MetaTarget[];
  begin(key: number, fua: boolean): MetaJob;
  /**
   * A target failed: true when the leg was dropped (degraded) or `port` is no longer its port
   * (a replaced leg's write finishing late), false when it cannot be dropped.
   */
  failed(leg: number, errno: number, port: StoragePort): boolean;
}

interface PageState {
  inflight: boolean;
  again: boolean;
  fuaNext: boolean;
  waiting: Done[];
  next: Done[];
}

export class MetaWriter {
  private readonly pages = new Map<number, PageState>();
  /** Pages whose last write failed on a leg that could not be dropped: written again first. */
  private readonly failed = new Set<number>();
  /** Writes in flight (status, tests). */
  inflight = 0;

  constructor(
    private readonly host: MetaHost,
    /** Keys that are always written with FUA (superblock, write-intent pages). */
    private readonly alwaysFua: (key: number) => boolean,
    /** The key whose write relies on every other page being on disk (the superblock). */
    private readonly commitKey: number | null = null,
  ) {}

  /** Write page `key` (again); `waiter` after a write that started after this call completed. */
  persist(key: number, waiter?: Done, fua = false): void {
    if (key === this.commitKey && this.failed.size > 0) {
      // The pages it points at first; if one fails again, so does this commit.
      const again = [...this.failed];
      let remaining = again.length;
      let first = 0;
      for (const page of again) {
        this.persistPage(page, (errno) => {
          if (errno !== 0 && first === 0) first = errno;
          if (--remaining > 0) return;
          if (first !== 0) return waiter?.(first);
          this.persistPage(key, waiter, fua);
        });
      }
      return;
    }
    this.persistPage(key, waiter, fua);
  }

  private persistPage(key: number, waiter?: Done, fua = false): void {
    let state = this.pages.get(key);
    if (state === undefined) {
      state = { inflight: false, again: false, fuaNext: false, waiting: [], next: [] };
      this.pages.set(key, state);
    }
    if (waiter !== undefined) state.next.push(waiter);
    if (fua) state.fuaNext = true;
    if (state.inflight) {
      state.again = true;
      return;
    }
    this.start(key, state);
  }

  /** `done` once every page write in flight or requested before this call has completed. */
  drain(done: Done): void {
    const keys = [...this.pages.entries()].filter(([key, s]) => s.inflight || s.again || this.failed.has(key)).map(([key]) => key);
    let remaining = keys.length + 1;
    let errno = 0;
    const one = (e: number) => {
      if (e !== 0 && errno === 0) errno = e;
      if (--remaining === 0) done(errno);
    };
    for (const key of keys) (key === this.commitKey ? this.persist(key, one) : this.persistPage(key, one));
    one(0);
  }

  private start(key: number, state: PageState): void {
    state.inflight = true;
    state.again = false;
    state.waiting = state.next;
    state.next = [];
    const fua = state.fuaNext || this.alwaysFua(key);
    state.fuaNext = false;
    const job = this.host.begin(key, fua);
    const targets = this.host.targets(key);
    const failures: [number, number, StoragePort][] = [];
    let remaining = targets.length + 1;
    this.inflight++;
    const one = (leg: number, errno: number, port: StoragePort | null) => {
      if (leg >= 0) job.legDone?.(leg, errno);
      if (errno !== 0 && port !== null) failures.push([leg, errno, port]);
      if (--remaining > 0) return;
      this.inflight--;
      let unabsorbed = 0;
      for (const [failedLeg, failedErrno, port] of failures) {
        if (!this.host.failed(failedLeg, failedErrno, port) && unabsorbed === 0) unabsorbed = failedErrno;
      }
      job.settled?.(unabsorbed === 0);
      if (unabsorbed === 0) this.failed.delete(key);
      else this.failed.add(key);
      state.inflight = false;
      const waiters = state.waiting;
      state.waiting = [];
      for (const waiter of waiters) waiter(unabsorbed);
      // A waiter may have started the next write itself (persist from inside its callback).
      if (!state.inflight && (state.again || state.next.length > 0)) this.start(key, state);
    };
    for (const target of targets) {
      target.port.write(job.offset, job.bytesFor(target.leg), fua, (errno) => one(target.leg, errno, target.port));
    }
    one(-1, 0, null);
  }
}
