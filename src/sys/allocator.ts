/**
 * @module sys/allocator — a serving process keeps the pages its allocator freed instead of
 * handing them back to the kernel at once.
 *
 * Why: Bun gives every socket `data` callback a fresh buffer (up to 512 KiB), so an export
 * receiving a 1 GiB copy allocates and frees a gigabyte; the runtime's allocator (mimalloc)
 * returns freed pages to the kernel soon after (madvise MADV_DONTNEED: ~350 calls, 87 MiB in
 * one copy) and faults them in again for the next buffers. Page faults are dear on this kind
 * of virtual machine: measured on one 1 GiB `dstd copy` into `dstd export --file`, the
 * export took 22–43 thousand faults and 1.3–1.9 s of CPU; with mimalloc's purge delay
 * disabled (MIMALLOC_PURGE_DELAY=-1) 14–16 thousand faults and 1.2 s, for 8–18 MiB more peak
 * RSS (docs/performance.md "Where the time goes"). mimalloc reads its options from the
 * environment when the process starts, so the export re-executes itself once with the
 * option set: same pid, same argv (/proc/self/cmdline), same binary (/proc/self/exe).
 * A value the user set (any, even empty) is kept as it is and nothing is re-executed.
 */
import { readFileSync } from "node:fs";
import { execve } from "./libc.ts";

/** mimalloc's option: milliseconds before freed memory is purged; -1: never. */
export const PURGE_DELAY_ENV = "MIMALLOC_PURGE_DELAY";

/** The environment and argv to re-execute with, or null when there is nothing to do. */
export function keepFreedPagesPlan(env: Readonly<Record<string, string | undefined>>, cmdline: string): { argv: string[]; env: string[] } | null {
  if (env[PURGE_DELAY_ENV] !== undefined) return null;
  const argv = cmdline.split("\0");
  if (argv[argv.length - 1] === "") argv.pop();
  if (argv.length === 0) return null;
  const entries = Object.entries(env).filter((entry): entry is [string, string] => entry[1] !== undefined);
  return { argv, env: [...entries.map(([name, value]) => `${name}=${value}`), `${PURGE_DELAY_ENV}=-1`] };
}

/**
 * Re-execute with MIMALLOC_PURGE_DELAY=-1 unless it is set. Call before opening anything:
 * descriptors without close-on-exec would leak into the new image. Returns when there was
 * nothing to do (or /proc/self/cmdline cannot be read).
 */
export function keepFreedPages(): void {
  let cmdline: string;
  try {
    cmdline = readFileSync("/proc/self/cmdline", "utf8");
  } catch {
    return;
  }
  const plan = keepFreedPagesPlan(process.env, cmdline);
  if (plan === null) return;
  execve("/proc/self/exe", plan.argv, plan.env);
}
