/**
 * @module attach/preflight — what `dstd attach` settles with the kernel before it contacts
 * the export: the nbd netlink family is there (E_NO_NBD), we may attach (E_PERM: CAP_SYS_ADMIN), and what
 * to do about the device (attach/plan.ts: already attached, refuse, CONNECT anew, or take a
 * dead daemon's device over). Stale records of detached devices are dropped here.
 *
 * Must not: contact the export, or leave the netlink socket open when it says "already" or
 * throws.
 */
import { readFileSync } from "node:fs";
import { Errno } from "../lib/errno.ts";
import { DstdError } from "../lib/errors.ts";
import type { Log } from "../lib/log.ts";
import { NbdControl, parseDevicePath, readDeviceSysfs } from "../kernel/device.ts";
import { LinkDeadWatch } from "./link-dead.ts";
import { planKernelAttach } from "./plan.ts";
import type { StartPlan } from "./attachment.ts";
import { daemonAlive, listStates, removeState } from "./state.ts";

export type Preflight =
  | { kind: "already"; message: string }
  | { kind: "go"; control: NbdControl; watch: LinkDeadWatch; plan: StartPlan };

/** CAP_SYS_ADMIN (capability 21) in this process's effective set (/proc/self/status CapEff; capabilities(7)). */
function hasCapSysAdmin(): boolean {
  try {
    const hex = /^CapEff:\s*([0-9a-f]+)$/m.exec(readFileSync("/proc/self/status", "utf8"))?.[1];
    return hex === undefined || (BigInt(`0x${hex}`) & (1n << 21n)) !== 0n;
  } catch {
    return true; // cannot tell: the kernel's EPERM at CONNECT says it then
  }
}

export async function preflight(o: { url: string; device: string | null; stateDir: string; log: Log }): Promise<Preflight> {
  const wanted = o.device === null ? null : parseDevicePath(o.device);
  const watch = new LinkDeadWatch();
  const control = await NbdControl.open({ onLinkDead: (index) => watch.push(index) }); // E_NO_NBD
  try {
    await control.deviceStatus(wanted ?? undefined);
    // The kernel lets anyone ask STATUS; CONNECT and RECONFIGURE need CAP_SYS_ADMIN (docs/kernel.md §1).
    // Say so now, before we bother the export.
    if (!hasCapSysAdmin()) throw new DstdError("E_PERM", "cannot attach a new nbd device: attaching needs CAP_SYS_ADMIN (run as root)", { errno: Errno.EPERM });
    const plan = planKernelAttach({ url: o.url, index: wanted, records: listStates(o.stateDir), alive: daemonAlive, sysfs: (i) => readDeviceSysfs(i) });
    if (plan.action === "already") {
      control.close();
      return { kind: "already", message: plan.message };
    }
    if (plan.action === "refuse") throw new DstdError(plan.code, plan.message, { errno: Errno.EBUSY });
    if (plan.action === "connect") for (const stale of plan.stale) removeState(o.stateDir, stale.device);
    else o.log.info(plan.message);
    return { kind: "go", control, watch, plan };
  } catch (error) {
    control.close();
    throw error;
  }
}
