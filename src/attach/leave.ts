/**
 * @module attach/leave — the two ways a daemon leaves its device (attach/phases.ts):
 * - detach (SIGTERM/SIGINT, `dstd detach`): fsync the device through us, NBD_CMD_DISCONNECT
 *   (the kernel sends NBD_CMD_DISC on every socket and shuts them), flush the export. The
 *   device goes away.
 * - handover (SIGUSR2): stop reading the kernel's requests on every socket, answer those
 *   held, flush the export, close our sockets. The device stays attached; its I/O waits up to
 *   the dead-connection timeout for the next `dstd attach`, which takes it over
 *   (attach/takeover.ts).
 * Closing netlink and the export link afterwards is the attachment's (attach/attachment.ts).
 *
 * Must not: block the event loop (it still serves the requests that come before the end).
 */
import { errorMessage } from "../lib/errors.ts";
import type { Log } from "../lib/log.ts";
import type { NbdControl } from "../kernel/device.ts";
import { mountPointsOf, syncDevice } from "./block-device.ts";
import { within } from "./deadline.ts";
import type { ExportLink } from "./export-link.ts";
import type { KernelLinks } from "./kernel-links.ts";

export interface LeaveStep {
  control: NbdControl;
  links: KernelLinks;
  exportLink: ExportLink;
  index: number;
  device: string;
  log: Log;
}

const SYNC_MS = 60_000;
const CLOSE_MS = 10_000;

/**
 * FLUSH the export, waiting as long as the engine may take (its deadline, with its resends and
 * reconnects inside, and a margin): the writes the kernel was told are done leave our replay
 * log only with it. Returns why it did not succeed, or null. (It waited 30 s and took a
 * timeout for success.)
 */
export async function flushExport(link: ExportLink): Promise<string | null> {
  const limitMs = answerLimitMs(link);
  const flushed = await within(
    link.flush().then(
      () => null,
      (error: unknown) => errorMessage(error),
    ),
    limitMs,
  );
  return flushed === "timeout" ? `no answer within ${limitMs / 1000} s` : flushed;
}

/** The longest the engine may take to answer a request (its deadline), with a margin. */
function answerLimitMs(link: ExportLink): number {
  return link.deadlineMs + Math.min(10_000, link.deadlineMs);
}

/** Detach; returns why the final flush to the export failed (acknowledged writes may be missing there), or null. */
export async function detachDevice(s: LeaveStep): Promise<string | null> {
  const mounts = mountPointsOf(s.device);
  if (mounts.length > 0) s.log.warn(`${s.device} is still mounted on ${mounts.join(", ")}: its I/O fails once the device is gone`);
  s.log.info(`detaching ${s.device}: flushing it, then NBD_CMD_DISCONNECT`);
  const synced = await within(syncDevice(s.device), SYNC_MS);
  if (synced !== true) s.log.warn(`flushing ${s.device} before the detach: ${synced === "timeout" ? `no answer within ${SYNC_MS / 1000} s` : synced}`);
  try {
    await s.control.disconnectDevice(s.index);
  } catch (error) {
    s.log.warn(`DISCONNECT ${s.device}: ${errorMessage(error)}`);
  }
  await within(s.links.allClosed(), CLOSE_MS);
  return await flushExport(s.exportLink);
}

/**
 * Hand over; returns why the export's flush failed (or requests were still held), or null.
 * With `stayOnFailure` the sockets are then not closed but read again: the daemon goes on
 * serving, its replay log intact (leaving would lose the writes the export has not confirmed).
 */
export async function handOver(s: LeaveStep, stayOnFailure = false): Promise<string | null> {
  s.links.pauseAll();
  // Every request taken is answered (the engine answers each within its deadline) before the
  // sockets close: one left would be sent again by the kernel to the next daemon.
  const deadline = performance.now() + answerLimitMs(s.exportLink);
  while ((s.exportLink.outstanding > 0 || s.links.queuedBytes > 0) && performance.now() < deadline) await Bun.sleep(10);
  const held = s.exportLink.outstanding;
  const flushed = await flushExport(s.exportLink);
  const failed = held > 0 ? `${held} requests still unanswered` : flushed;
  if (failed !== null && stayOnFailure) s.links.resumeAll();
  else s.links.terminateAll();
  return failed;
}
