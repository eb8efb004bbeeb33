/**
 * @module attach/connect — the "connecting" phase (attach/phases.ts): NBD_CMD_CONNECT of a
 * fresh device with N new sockets (attach/kernel-links.ts), the geometry, the server flags,
 * the dead-connection timeout and the backend identifier. After the ack the kernel holds its
 * own reference to each socket, so our copies of the kernel ends are closed here.
 *
 * Must not: retry anything but the transient EBUSY of an unconfigured device (udev's blkid
 * or a closing mkfs holding it open for a moment); every other refusal goes to the user.
 */
import { DstdError } from "../lib/errors.ts";
import type { NbdControl } from "../kernel/device.ts";
import { readDeviceSysfs } from "../kernel/device.ts";
import { closeFd } from "../sys/libc.ts";
import type { Geometry } from "./geometry.ts";
import type { KernelLinks } from "./kernel-links.ts";

export interface ConnectStep {
  control: NbdControl;
  links: KernelLinks;
  /** The wanted device, or null: the kernel picks a free one. */
  index: number | null;
  /** Sockets to give the kernel (NBD_ATTR_SOCKETS entries). */
  sockets: number;
  geometry: Geometry;
  serverFlags: number;
  deadConnTimeoutSec: number;
  backendId: string;
}

const BUSY_RETRIES = 10;
const BUSY_PAUSE_MS = 200;

/** CONNECT; resolves with the device index once the kernel serves it from our links. */
export async function connectDevice(s: ConnectStep): Promise<number> {
  for (let attempt = 1; ; attempt++) {
    const { kernelFds, links } = await s.links.open(s.sockets, s.index === null ? "nbd?" : `nbd${s.index}`);
    let index: number;
    try {
      index = await s.control.connectDevice({
        socketFds: kernelFds,
        index: s.index ?? undefined,
        size: s.geometry.size,
        blockSize: s.geometry.blockSize,
        serverFlags: s.serverFlags,
        deadConnTimeoutSec: s.deadConnTimeoutSec,
        backendId: s.backendId,
      });
    } catch (error) {
      for (const link of links) link.terminate();
      const transient = error instanceof DstdError && error.code === "E_BUSY" && s.index !== null && readDeviceSysfs(s.index).pid === null;
      if (transient && attempt < BUSY_RETRIES) {
        await Bun.sleep(BUSY_PAUSE_MS);
        continue;
      }
      throw error;
    } finally {
      for (const fd of kernelFds) closeFd(fd); // the kernel holds its own references now (or never took any)
    }
    for (const link of links) s.links.keep(link);
    return index;
  }
}
