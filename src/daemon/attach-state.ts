/**
 * @module daemon/attach-state — what survives the attach daemon: one JSON file per
 * attachment in the state directory (`<state_dir>/attach/<name>.json`). The daemon rewrites
 * its file every second with its live counters (write to a temporary file, then rename, so a
 * reader never sees half a file); `dstd list`, `status` and `detach` read them. A restarted
 * daemon for the same device finds its backend identifier here to reattach.
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
  counters: { inflight: number; resends: number; reconnects: number; replays: number; keepaliveFailures: number; timeouts: number };
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

/** Is the daemon that wrote this state still running? (signal 0 probes without killing) */
export function daemonAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
