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
const FLUSH_MS = 30_000;
const DRAIN_MS = 30_000;

export async function detachDevice(s: LeaveStep): Promise<void> {
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
  await within(s.exportLink.flush(), FLUSH_MS).catch((error: unknown) => s.log.warn(`final flush to the export failed: ${errorMessage(error)}`));
}

export async function handOver(s: LeaveStep): Promise<void> {
  s.links.pauseAll();
  const deadline = performance.now() + DRAIN_MS;
  while ((s.exportLink.outstanding > 0 || s.links.queuedBytes > 0) && performance.now() < deadline) await Bun.sleep(10);
  await within(s.exportLink.flush(), FLUSH_MS).catch((error: unknown) => s.log.warn(`flush to the export failed: ${errorMessage(error)}`));
  s.links.terminateAll();
}
