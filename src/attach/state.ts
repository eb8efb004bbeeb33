/**
 * @module attach/state — what survives the attach daemon: one JSON file per
 * attachment in the state directory (`<state_dir>/attach/<name>.json`). The daemon rewrites
 * its file every second with its live counters (write to a temporary file, then rename, so a
 * reader never sees half a file); `dstd list`, `status` and `detach` read them. A restarted
 * daemon for the same device finds its backend identifier here to reattach (attach/plan.ts
 * decides what to do with the records). The backend identifier's format lives here too: it
 * is what a record and the kernel's sysfs `backend` have in common.
 *
 * Must not: touch the kernel.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";

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
  counters: LinkCounters;
  /** Kernel attachments only (absent for --nbd-listen): */
  kernel?: KernelFacts;
}

/** The export link's counters a record shows (a subset of engine/counters.ts). */
export interface LinkCounters {
  inflight: number;
  resends: number;
  reconnects: number;
  replays: number;
  keepaliveFailures: number;
  timeouts: number;
}

/** The record's copy of `counters` (only the fields it keeps). */
export function linkCounters(c: Readonly<LinkCounters>): LinkCounters {
  return { inflight: c.inflight, resends: c.resends, reconnects: c.reconnects, replays: c.replays, keepaliveFailures: c.keepaliveFailures, timeouts: c.timeouts };
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
  /** Bytes the kernel sent on the running daemon's current sockets. */
  kernelBytesIn: number;
  /** Sockets the device has (NBD_ATTR_SOCKETS at CONNECT); absent in records of older daemons: 1. */
  connections?: number;
}

export function defaultStateDir(configured: string): string {
  return process.env.DSTD_STATE_DIR || configured; // an empty variable counts as unset, as for dstd up
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
  // A record naming this very process is from an earlier life of its pid (a container restart
  // hands out the same pids) or from an earlier run of this unit in `dstd up`: nobody serves it
  // now. It said "already attached" and exited 0 while the device waited for a daemon.
  if (pid === process.pid) return false;
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

// ---- the backend identifier (NBD_ATTR_BACKEND_IDENTIFIER) ---------------------------------

/** "dstd:URL#ATTACHID": names the export and this attachment (docs/kernel.md §7). */
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
