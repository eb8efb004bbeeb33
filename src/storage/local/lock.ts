/**
 * @module storage/local/lock — one export per backing file or device (issue 9 item 9), and one
 * replicated export per replication log directory (`lockLogDirectory`). An
 * export takes flock(2) on its open descriptor: exclusive when it may write, shared when it is
 * read-only, so any number of read-only exports of one file may coexist but a read-write
 * export excludes every other export of it. A conflicting lock is refused at start with a
 * message naming the holder's pid (and command line) when /proc/locks shows it.
 *
 * Why flock and not an OFD lock: both belong to the open file description and vanish with it,
 * but /proc/locks lists an OFD lock's owner as pid -1, while a flock names the process that
 * took it. flock locks do not conflict with fcntl locks, so this guards against other dstd
 * exports (and tools that use flock, such as util-linux flock(1)), not against every writer:
 * locks on Linux are advisory.
 *
 * Must not: block (LOCK_NB), or keep a descriptor: the caller owns it and closing it releases
 * the lock.
 */
import fs from "node:fs";
import { Errno } from "../../lib/errno.ts";
import { DstdError } from "../../lib/errors.ts";
import { escapePeer } from "../../lib/peer-text.ts";
import { LOCK_EX, LOCK_SH, processId, tryFlock } from "../../sys/libc.ts";

export type LockMode = "exclusive" | "shared";

/** A lock someone holds on the same file, as /proc/locks lists it. */
export interface LockHolder {
  /** Process id, or null when unknown (another pid namespace, an OFD lock). */
  pid: number | null;
  kind: string;
  /** WRITE (exclusive) or READ (shared). */
  access: "WRITE" | "READ";
}

/**
 * Take the export lock on `fd` (open on `path`); throws DstdError("E_LOCKED") naming the
 * holder when another export holds a conflicting one.
 */
export function lockBacking(fd: number, path: string, mode: LockMode): void {
  let taken: boolean;
  try {
    taken = tryFlock(fd, mode === "exclusive" ? LOCK_EX : LOCK_SH);
  } catch {
    // A filesystem without flock support (ENOLCK, EINVAL): nothing to coordinate with.
    return;
  }
  if (taken) return;
  throw new DstdError("E_LOCKED", lockedMessage(path, mode, lockHolders(fd)), { errno: Errno.EBUSY });
}

/**
 * Take an exclusive lock on a replication log directory (`log_dir`, docs/replication.md) for as
 * long as the export using it runs: two replicated exports appending to one log — two in one
 * configuration, or two processes — would interleave their records and lose acknowledged
 * writes. Returns the release (closing the descriptor); throws DstdError("E_LOCKED") naming
 * the holder.
 */
export function lockLogDirectory(path: string): () => void {
  const fd = fs.openSync(path, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  let taken: boolean;
  try {
    taken = tryFlock(fd, LOCK_EX);
  } catch {
    taken = true; // a filesystem without flock: nothing to coordinate with
  }
  if (!taken) {
    const who = describeHolder(lockHolders(fd)[0], "the same log_dir is configured twice");
    fs.closeSync(fd);
    throw new DstdError("E_LOCKED", `cannot use log_dir ${path}: it is already in use by ${who}; two replicated exports on one log would interleave their records and lose acknowledged writes. Give each export its own log_dir`, { errno: Errno.EBUSY });
  }
  return () => fs.closeSync(fd);
}

function describeHolder(holder: LockHolder | undefined, twice: string): string {
  if (holder?.pid == null) return "another process";
  if (holder.pid === processId()) return `this process (${twice})`;
  const command = commandLine(holder.pid);
  return command === null ? `pid ${holder.pid}` : `pid ${holder.pid} (${command})`;
}

function lockedMessage(path: string, mode: LockMode, holders: LockHolder[]): string {
  // The holder that conflicts: any writer; for an exclusive request, any lock at all.
  const holder = holders.find((h) => h.access === "WRITE") ?? holders[0];
  const how = holder === undefined ? "" : holder.access === "WRITE" ? " read-write" : " read-only";
  const who = describeHolder(holder, "the same file is configured twice");
  const why =
    mode === "exclusive"
      ? "two exports of one file, at least one writing, would corrupt it or change data under the other's clients"
      : "a read-only export next to a read-write one would serve data that changes under its clients";
  return `cannot export ${path}: it is already exported${how} by ${who}; ${why}. Stop the other export first`;
}

/** /proc/locks entries (not waiters) on the file `fd` is open on. */
export function lockHolders(fd: number): LockHolder[] {
  let text: string;
  let stats: fs.BigIntStats;
  try {
    text = fs.readFileSync("/proc/locks", "utf8");
    stats = fs.fstatSync(fd, { bigint: true });
  } catch {
    return [];
  }
  const dev = stats.dev;
  // glibc gnu_dev_major / gnu_dev_minor; /proc/locks prints them in hex, the inode in decimal.
  const major = ((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn);
  const minor = (dev & 0xffn) | ((dev >> 12n) & ~0xffn);
  const holders: LockHolder[] = [];
  for (const line of text.split("\n")) {
    const match = /^\d+:\s+(\S+)\s+\S+\s+(WRITE|READ)\s+(-?\d+)\s+([0-9a-f]+):([0-9a-f]+):(\d+)\s/.exec(line);
    if (match === null) continue; // includes "N: -> ..." lines: waiters, not holders
    const [, kind, access, pid, maj, min, inode] = match;
    if (BigInt(`0x${maj}`) !== major || BigInt(`0x${min}`) !== minor || BigInt(inode!) !== stats.ino) continue;
    const n = Number(pid);
    holders.push({ pid: n > 0 ? n : null, kind: kind!, access: access as "WRITE" | "READ" });
  }
  return holders;
}

/** The holder's command line, printable and short; null when unreadable. */
function commandLine(pid: number): string | null {
  try {
    const raw = fs.readFileSync(`/proc/${pid}/cmdline`);
    const text = raw.toString("utf8").replace(/\0+$/, "").replaceAll("\0", " ");
    return text === "" ? null : escapePeer(text, 120);
  } catch {
    return null;
  }
}
