/**
 * @module attach/block-device — what an attachment asks of /dev/nbdN and /sys/block/nbdN
 * itself, outside netlink: the logical block size, where it is mounted, fsync of the device,
 * a probe read that makes the kernel send a request, and the queue settings dstd writes
 * (max_sectors_kb, io_timeout) with the policy that picks io_timeout.
 *
 * Must not: do device I/O on the event loop. The daemon's own reads, fsyncs and queue writes
 * go through the fs thread pool (node:fs/promises): the event loop serves the device, and a
 * synchronous read of it, or a queue-limit write that freezes its queue, would deadlock.
 * The synchronous reads here are of small sysfs/procfs files only.
 */
import { constants, readFileSync } from "node:fs";
import { open, readFile, writeFile } from "node:fs/promises";
import { errorMessage } from "../lib/errors.ts";
import type { Log } from "../lib/log.ts";

/** io_timeout with one socket (ms): how soon requests stranded on a dead socket move on. */
export const REQUEUE_CHECK_MS = 5000;
/** With several sockets: margin over the engine's deadline before the kernel's timer fires. */
export const MULTI_SOCKET_TIMEOUT_MARGIN_MS = 30_000;

/**
 * The block-layer timer (/sys/block/nbdN/queue/io_timeout) for a device with `sockets`
 * sockets whose requests the engine answers within `deadlineMs` (success or an error).
 *
 * The kernel's timer does different things by socket count (nbd_xmit_timeout,
 * docs/kernel.md §5): with one socket and NBD_ATTR_TIMEOUT 0 it only re-arms, and at each expiry moves a
 * request stranded on a replaced (dead) socket to the new one, so a short timer bounds the
 * stall of a daemon restart; with several sockets every expiry marks the request's socket
 * dead (LINK_DEAD, shutdown) and requeues the request on another socket while dstd's engine
 * still holds the first copy: a stale duplicate that could land after a newer write to the
 * same blocks. So several sockets get a timer longer than any request the engine keeps; the
 * price is that requests stranded by a daemon restart wait that long to move (1 socket: 5 s).
 */
export function requeueCheckMs(sockets: number, deadlineMs: number): number {
  if (sockets <= 1) return REQUEUE_CHECK_MS;
  return Math.min(2 ** 31 - 1, deadlineMs + MULTI_SOCKET_TIMEOUT_MARGIN_MS);
}

/**
 * Queue settings, written through the fs thread pool (on newer kernels a queue-limit write
 * freezes the queue, which must not happen on the thread serving it):
 * - max_sectors_kb: the kernel sends requests up to it (1280 KiB by default, up to 32 MiB);
 *   the export may grant less.
 * - io_timeout: see requeueCheckMs. With one socket the default 30 s made a restart with
 *   requests in flight stall 30–37 s in the VM test; 5 s bounds that stall. Cost: a
 *   "Possible stuck request" info line in dmesg per request slower than 5 s.
 */
export async function tuneQueue(index: number, o: { maxPayload: number; ioTimeoutMs: number; log: Log }): Promise<void> {
  const device = `/dev/nbd${index}`;
  const queue = `/sys/block/nbd${index}/queue`;
  const limitKb = Math.floor(o.maxPayload / 1024);
  try {
    const current = Number((await readFile(`${queue}/max_sectors_kb`, "utf8")).trim());
    if (Number.isFinite(current) && current > limitKb) {
      await writeFile(`${queue}/max_sectors_kb`, `${limitKb}\n`);
      o.log.info(`${device}: requests limited to ${limitKb} KiB (the export's maximum payload)`);
    }
  } catch (error) {
    if (limitKb < 32 * 1024) o.log.warn(`cannot limit ${device}'s request size to ${limitKb} KiB: ${errorMessage(error)}`);
  }
  try {
    await writeFile(`${queue}/io_timeout`, `${o.ioTimeoutMs}\n`);
  } catch (error) {
    o.log.warn(`cannot set ${queue}/io_timeout to ${o.ioTimeoutMs} ms (requests stranded by a daemon restart then wait up to 30 s): ${errorMessage(error)}`);
  }
}

/** Read the first block with O_DIRECT (past the page cache, so the kernel must ask us). */
export async function probeRead(device: string, blockSize: number): Promise<void> {
  const handle = await open(device, constants.O_RDONLY | constants.O_DIRECT);
  try {
    await handle.read(new Uint8Array(Math.max(4096, blockSize)), 0, blockSize, 0);
  } finally {
    await handle.close();
  }
}

/** fsync the block device: its dirty pages reach us, then a FLUSH. Runs on the fs thread pool. */
export async function syncDevice(device: string): Promise<true | string> {
  try {
    const handle = await open(device, constants.O_RDONLY);
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
    return true;
  } catch (error) {
    return errorMessage(error);
  }
}

/** The device's logical block size as the kernel has it (what O_DIRECT must be aligned to). */
export function logicalBlockSize(index: number): number | null {
  try {
    const value = Number(readFileSync(`/sys/block/nbd${index}/queue/logical_block_size`, "utf8").trim());
    return Number.isInteger(value) && value >= 512 ? value : null;
  } catch {
    return null;
  }
}

/** Where the device (or a partition of it) is mounted, from /proc/self/mounts. */
export function mountPointsOf(device: string): string[] {
  try {
    return readFileSync("/proc/self/mounts", "utf8")
      .split("\n")
      .map((line) => line.split(" "))
      .filter((fields) => fields[0] === device || fields[0]?.startsWith(`${device}p`))
      .map((fields) => fields[1] ?? "?");
  } catch {
    return [];
  }
}
