/**
 * @module sys/allocator — keep the memory allocator from handing freed pages back to the
 * kernel at once, for the commands that move data (export, attach, copy, up, demo).
 *
 * Why: Bun gives every socket read to JavaScript in a fresh buffer (up to 512 KiB each), so
 * a process that receives 1 GiB makes a gigabyte of short-lived buffers. Bun's allocator
 * (mimalloc) returns freed pages to the kernel 10 ms after they were freed (its
 * `purge_delay`), which is sooner than the garbage collector frees the next batch: nearly
 * every new buffer then lands on pages the kernel must fault in and zero again. Measured on
 * this machine class (perf, docs/performance.md "Where the time goes"): 58 % of `dstd attach`'s
 * CPU during 1 MiB writes was the copy into those buffers, 24 points of it page faults;
 * fio → `dstd export --nbd-listen` sequential writes went from 470–690 to 790–1,240 MiB/s
 * with freed pages kept.
 *
 * mimalloc reads its options from the environment once, when the process starts, and Bun
 * offers no call to change them later. So a data-path command re-executes itself at once with
 * MIMALLOC_PURGE_DELAY set (execv: same pid, same argv, same descriptors), before it opens
 * anything, like sys/argv0.ts does for '@'. A value the caller already set is kept as it is:
 * that is also the way to choose another one (MIMALLOC_PURGE_DELAY=10 restores mimalloc's
 * default). The value is "never" (-1): with 1000 ms the copies into socket buffers still
 * faulted (the collector frees a batch less often than that), and `dstd attach` sequential
 * reads ran at 88–238 against 374–387 MiB/s with -1, back to back. The price: freed pages
 * stay resident for reuse, so the resident size stays at the process's peak instead of
 * shrinking after a burst; the peak itself is what the memory bounds already cap (measured
 * 185 against 213 MiB peak for the same attach runs).
 */
import { readFileSync } from "node:fs";
import { execv, setenv } from "./libc.ts";

export const PURGE_DELAY_VARIABLE = "MIMALLOC_PURGE_DELAY";
/** Freed pages go back to the kernel after this many ms; -1: never (mimalloc's default is 10 ms). */
export const PURGE_DELAY_MS = -1;

/** The commands that move data through sockets: the ones worth a re-exec at start. */
export const DATA_PATH_COMMANDS: ReadonlySet<string> = new Set(["export", "attach", "copy", "up", "demo"]);

/** This process's argv exactly as it was started (argv[0] included: '@dstd' stays '@dstd'). */
function ownArgv(): string[] | null {
  try {
    const parts = readFileSync("/proc/self/cmdline", "latin1").split("\0");
    if (parts.at(-1) === "") parts.pop();
    return parts.length > 0 ? parts : null;
  } catch {
    return null;
  }
}

/**
 * Re-execute with the allocator option set, unless it is set already (then return). Call
 * first thing: descriptors opened before without close-on-exec would leak into the new image.
 * Returns without re-executing when /proc is not there to say how we were started.
 */
export function keepFreedPages(): void {
  if (process.env[PURGE_DELAY_VARIABLE] !== undefined) return;
  const argv = ownArgv();
  if (argv === null) return;
  setenv(PURGE_DELAY_VARIABLE, String(PURGE_DELAY_MS));
  execv("/proc/self/exe", argv);
}
