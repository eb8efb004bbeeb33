/**
 * @module attach/state — what survives the attach daemon: one JSON file per
 * attachment in the state directory (`<state_dir>/attach/<name>.json`). The daemon rewrites
 * its file every second with its live counters (write to a temporary file, then rename, so a
 * reader never sees half a file); `dstd list`, `status` and `detach` read them. A restarted
 * daemon for the same device finds its backend identifier here to reattach
 * (`planKernelAttach`: what `dstd attach` must do given the records and what the kernel says).
 *
 * Must not: touch the kernel. The planner is pure: sysfs and liveness come in as functions.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { DeviceSysfs } from "../kernel/device.ts";

export interface AttachmentState {
  /** "/dev/nbd3" for kernel attachments; the NBD endpoint for --nbd-listen ones. */
  device: string;
  url: string;
  mode: "kernel" | "nbd-listen";
  /** Kernel attachments: NBD_ATTR_BACKEND_IDENTIFIER, kept across daemon restarts. */
  backendId: string | null;
  pid: number;
  state: string;
  startedAt: string;
  updatedAt: string;
  counters: { inflight: number; resends: number; reconnects: number; replays: number; keepaliveFailures: number; timeouts: number };
  /** Kernel attachments only (absent for --nbd-listen): */
  kernel?: KernelFacts;
}

export interface KernelFacts {
  index: number;
  /** Random id of this attachment (part of backendId); survives daemon restarts. */
  attachId: string;
  sizeBytes: number;
  blockSize: number;
  /** NBD transmission flags given to the kernel. */
  serverFlags: number;
  deadConnTimeoutSec: number;
  /** Times a restarted daemon took the device over with RECONFIGURE. */
  restarts: number;
  /** LINK_DEAD notifications for this device seen by the running daemon. */
  linkDead: number;
  /** Bytes the kernel sent on the running daemon's current socket. */
  kernelBytesIn: number;
}

export function defaultStateDir(configured: string): string {
  return process.env.DSTD_STATE_DIR ?? configured;
}

function attachDir(stateDir: string): string {
  return join(stateDir, "attach");
}

/** File name for a device or endpoint: "/dev/nbd3" → "nbd3", "unix:/run/x.sock" → "unix_run_x.sock". */
export function stateName(device: string): string {
  return device.replace(/^\/dev\//, "").replace(/[^A-Za-z0-9._-]+/g, "_").replace(/^_+/, "");
}

export function writeState(stateDir: string, state: AttachmentState): void {
  const dir = attachDir(stateDir);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const path = join(dir, `${stateName(state.device)}.json`);
  const temporary = `${path}.${process.pid}.tmp`;
  writeFileSync(temporary, `${JSON.stringify(state, null, 2)}\n`, { mode: 0o600 });
  renameSync(temporary, path);
}

export function readState(stateDir: string, device: string): AttachmentState | null {
  const path = join(attachDir(stateDir), `${stateName(device)}.json`);
  return existsSync(path) ? parseState(path) : null;
}

export function removeState(stateDir: string, device: string): void {
  rmSync(join(attachDir(stateDir), `${stateName(device)}.json`), { force: true });
}

export function listStates(stateDir: string): AttachmentState[] {
  const dir = attachDir(stateDir);
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((name) => name.endsWith(".json"))
    .map((name) => parseState(join(dir, name)))
    .filter((s): s is AttachmentState => s !== null);
}

function parseState(path: string): AttachmentState | null {
  try {
    const value = JSON.parse(readFileSync(path, "utf8")) as AttachmentState;
    return typeof value.device === "string" && typeof value.pid === "number" ? value : null;
  } catch {
    return null; // a file being replaced or damaged: not an attachment we can describe
  }
}

/**
 * Is the daemon that wrote this state still running? Signal 0 probes without killing; a zombie
 * (exited, not yet reaped by its parent, e.g. a shell that started it with `&`) counts as gone.
 */
export function daemonAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    // /proc/PID/stat: "PID (comm) S ..."; comm may hold spaces and parentheses, so look after the last ')'.
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return true; // no procfs: trust the signal probe
  }
}

// ---- what `dstd attach` does about an existing record (kernel mode) ------------------------

/** "dstd:URL#ATTACHID": names the export and this attachment, so a reattach never binds another export to the device (ceph/ceph#41323). */
export function makeBackendId(url: string, attachId: string): string {
  return `dstd:${url}#${attachId}`;
}

/** The URL and attachment id inside a backend identifier dstd made, or null. */
export function parseBackendId(backendId: string): { url: string; attachId: string } | null {
  const hash = backendId.lastIndexOf("#");
  if (!backendId.startsWith("dstd:") || hash < 0) return null;
  const attachId = backendId.slice(hash + 1);
  return /^[0-9a-f]{8,64}$/.test(attachId) ? { url: backendId.slice(5, hash), attachId } : null;
}

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
