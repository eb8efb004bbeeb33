/**
 * @module storage/tree/mirror/flush — FLUSH through the mirror (docs/tree.md "Write intent
 * and unclean stops"): pending metadata first (the bitmap pages the data depends on), then
 * every leg that gets writes; when all succeeded, the write-intent regions the flush made
 * durable are cleared (lazily: the cleared pages are written, not waited for).
 */
import type { Done } from "../../port.ts";
import { joinCompletions } from "../join.ts";
import { pageOf } from "./bitmap.ts";
import { ACTIVE_SLOT } from "./layout.ts";
import { commitRecord } from "./metadata.ts";
import type { MirrorState } from "./state.ts";

/**
 * If a leg was degraded meanwhile, its records were written after the drain: go round again,
 * so they are durable (covered by a leg flush) before write-intent regions are cleared. A record
 * made earlier whose write failed is committed again first.
 */
export function flushLegs(s: MirrorState, done: Done, epoch = ++s.flushEpoch, pinned: ReadonlySet<number> = new Set(s.activeInflight.keys())): void {
  const records = s.recordsMade;
  s.meta.drain((metaErrno) => {
    if (metaErrno !== 0) return done(metaErrno);
    const legs = s.legs.filter((l) => l.writable && l.port!.canFlush);
    let errno = 0;
    const join = joinCompletions(legs.length + 1, () => {
      if (errno !== 0) return done(errno);
      if (s.recordsMade !== records) return flushLegs(s, done, epoch, pinned);
      if (s.recordsDurable < s.recordsMade) {
        // A record that failed earlier (its superblock write spent a leg's budget) is not on
        // disk: the record there may still list a degraded leg in sync, and only the
        // write-intent regions would tell a crash's reopen what that leg may lack. Commit it
        // before clearing them, or fail the flush (tree sim seed 27063).
        return commitRecord(s, (e) => (e !== 0 ? done(e) : flushLegs(s, done, epoch, pinned)));
      }
      clearActive(s, epoch, pinned);
      done(0);
    });
    for (const leg of legs) {
      leg.port!.flush((e) => {
        if (e !== 0 && leg.writable && !s.hooks.legFailed(leg, e, "flush") && errno === 0) errno = e;
        join(0);
      });
    }
    join(0);
  });
}

/** After flush `epoch` succeeded: clear write-intent regions it made durable on every leg. */
function clearActive(s: MirrorState, epoch: number, pinned: ReadonlySet<number>): void {
  const pages = new Set<number>();
  for (const [a, touched] of s.lastTouch) {
    if (touched >= epoch || pinned.has(a) || s.activeInflight.has(a)) continue;
    s.lastTouch.delete(a);
    if (s.active.clear(a)) pages.add(pageOf(a));
    s.activeDurable[a >>> 3] = s.activeDurable[a >>> 3]! & ~(1 << (a & 7));
  }
  for (const page of pages) s.meta.persist(s.pageKey(ACTIVE_SLOT, page));
}
