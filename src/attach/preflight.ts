/**
 * @module attach/preflight — what `dstd attach` settles with the kernel before it contacts
 * the export: the nbd netlink family is there (E_NO_NBD), we may use it (E_PERM), and what
 * to do about the device (attach/plan.ts: already attached, refuse, CONNECT anew, or take a
 * dead daemon's device over). Stale records of detached devices are dropped here.
 *
 * Must not: contact the export, or leave the netlink socket open when it says "already" or
 * throws.
 */
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

export async function preflight(o: { url: string; device: string | null; stateDir: string; log: Log }): Promise<Preflight> {
  const wanted = o.device === null ? null : parseDevicePath(o.device);
  const watch = new LinkDeadWatch();
  const control = await NbdControl.open({ onLinkDead: (index) => watch.push(index) }); // E_NO_NBD
  try {
    await control.deviceStatus(wanted ?? undefined); // E_PERM now, before we bother the export
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
