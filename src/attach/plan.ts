/**
 * @module attach/plan — what `dstd attach` must do about a kernel device, given the state
 * records (attach/state.ts) and what the kernel says (sysfs): say it is already attached,
 * refuse, CONNECT anew, or take a dead daemon's device over with RECONFIGURE.
 *
 * Must not: touch the kernel or the disk. The planner is pure: records, sysfs and liveness
 * come in as values and functions (test/kernel/attach-plan.test.ts runs every case).
 */
import type { DeviceSysfs } from "../kernel/device.ts";
import { parseBackendId, type AttachmentState } from "./state.ts";

export type KernelPlan =
  /** A live daemon already serves this URL on this device: say so, exit 0. */
  | { action: "already"; device: string; pid: number; message: string }
  | { action: "refuse"; code: string; message: string }
  /** A fresh NBD_CMD_CONNECT (index null: the kernel picks). `stale`: records to drop first. */
  | { action: "connect"; index: number | null; stale: AttachmentState[] }
  /** The device is still configured with our backend id but nobody serves it: RECONFIGURE. */
  | { action: "reattach"; index: number; backendId: string; attachId: string; previous: AttachmentState | null; message: string };

export interface PlanInput {
  /** The export URL, formatted (formatExportUrl). */
  url: string;
  /** The wanted /dev/nbdN, or null for "any". */
  index: number | null;
  records: readonly AttachmentState[];
  alive: (pid: number) => boolean;
  sysfs: (index: number) => DeviceSysfs;
}

const devicePathOf = (index: number): string => `/dev/nbd${index}`;
/** Configured = the kernel holds a config for it (sysfs pid exists while it does). */
const configured = (s: DeviceSysfs): boolean => s.pid !== null;

/**
 * Decide what attaching `url` means now. The kernel is the authority on whether a device is
 * configured and with which backend id; the record tells whose it was and whether its daemon
 * lives. A live pid alone is not trusted (pids are reused): the device must also still carry
 * the record's backend id.
 */
export function planKernelAttach(input: PlanInput): KernelPlan {
  const kernelRecords = input.records.filter((r) => r.mode === "kernel" && r.kernel !== undefined);
  if (input.index === null) {
    const mine = kernelRecords.filter((r) => r.url === input.url);
    for (const r of mine) {
      const s = input.sysfs(r.kernel!.index);
      if (configured(s) && s.backend === r.backendId && input.alive(r.pid)) {
        return { action: "already", device: r.device, pid: r.pid, message: `${input.url} is already attached at ${r.device} by dstd (pid ${r.pid}); nothing to do` };
      }
    }
    for (const r of mine) {
      const s = input.sysfs(r.kernel!.index);
      if (configured(s) && s.backend === r.backendId) return reattach(r.kernel!.index, r.backendId!, r);
    }
    return { action: "connect", index: null, stale: [] };
  }
  const device = devicePathOf(input.index);
  const s = input.sysfs(input.index);
  const record = kernelRecords.find((r) => r.device === device) ?? null;
  if (record !== null && configured(s) && s.backend === record.backendId) {
    if (input.alive(record.pid)) {
      if (record.url === input.url) {
        return { action: "already", device, pid: record.pid, message: `${device} is already attached to ${input.url} by dstd (pid ${record.pid}); nothing to do` };
      }
      return { action: "refuse", code: "E_BUSY", message: `${device} is attached to ${record.url} by dstd (pid ${record.pid}), not to ${input.url}: detach it first (dstd detach ${device})` };
    }
    if (record.url !== input.url) {
      return { action: "refuse", code: "E_BUSY", message: `${device} still holds ${record.url} (its daemon, pid ${record.pid}, is gone): attach that URL again to resume it, or run dstd detach --force ${device}` };
    }
    return reattach(input.index, record.backendId!, record);
  }
  const stale = record === null ? [] : [record]; // its device was detached (or re-attached by someone else)
  if (!configured(s)) return { action: "connect", index: input.index, stale };
  const ours = s.backend === null ? null : parseBackendId(s.backend);
  if (ours !== null && ours.url === input.url) {
    // No record (state directory lost), but the kernel names this URL: resume it. If a live
    // process still serves it, the kernel drops our socket and the takeover reports E_BUSY.
    return reattach(input.index, s.backend!, null); // (a stale record for the device is overwritten)
  }
  const holder = ours !== null ? `to ${ours.url} by another dstd` : s.backend !== null ? `to backend "${s.backend}"` : "by another program";
  return { action: "refuse", code: "E_BUSY", message: `${device} is already attached ${holder}: choose another device (or omit --device)` };
}

function reattach(index: number, backendId: string, previous: AttachmentState | null): KernelPlan {
  const attachId = parseBackendId(backendId)?.attachId ?? "";
  const who = previous === null ? "no record of its daemon" : `its daemon, pid ${previous.pid}, is gone`;
  return {
    action: "reattach",
    index,
    backendId,
    attachId,
    previous,
    message: `${devicePathOf(index)} is still attached as "${backendId}" (${who}): taking it over without unmapping`,
  };
}
