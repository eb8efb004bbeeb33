/**
 * @module cli/detach — `dstd detach DEVICE`: ask the attachment's daemon to flush and stop
 * (SIGTERM; for /dev/nbdN it then disconnects the device, which goes away), and wait for it.
 * Idempotent: detaching what is not attached says so and succeeds. `--force` handles an
 * attachment whose daemon is gone: for a kernel device it sends NBD_CMD_DISCONNECT itself
 * (the kernel fails the I/O it was holding for a restarted daemon), then clears the record.
 */
import { daemonAlive, defaultStateDir, listStates, parseBackendId, removeState, type AttachmentState } from "../attach/state.ts";
import { ControlClient } from "../control/client.ts";
import { controlSocketPath } from "../control/server.ts";
import { NbdControl, parseDevicePath, readDeviceSysfs } from "../kernel/device.ts";
import { DstdError } from "../lib/errors.ts";
import { commonArgs, readRawConfig, validateMerged } from "./args.ts";
import { defineDstdCommand } from "./command.ts";

/** The daemon flushes the device (≤ 60 s), disconnects and flushes the export (≤ 30 s). */
const DAEMON_STOP_WAIT_MS = 120_000;

export default defineDstdCommand({
  meta: { name: "detach", description: "Detach an attachment: flush, then stop its daemon (a /dev/nbdN device goes away). Detaching what is not attached says so and succeeds; a record whose daemon is gone says how to resume it, or is cleared with --force." },
  examples: ["dstd detach /dev/nbd0", "dstd detach unix:/run/dstd-disk.sock"],
  args: {
    ...commonArgs,
    device: { type: "positional", description: "/dev/nbdN or the NBD endpoint shown by dstd list", required: true },
    force: { type: "boolean", alias: "f", description: "the daemon is gone: disconnect the device anyway and clear the record" },
    "state-dir": { type: "string", description: "attachment state directory", valueHint: "DIR" },
  },
  async run({ args }) {
    const { raw, source, baseDir } = readRawConfig(args.config);
    const config = validateMerged(raw, source, baseDir);
    const stateDir = args["state-dir"] ?? defaultStateDir(config.stateDir);
    const device = normaliseDevice(args.device);
    const state = listStates(stateDir).find((s) => s.device === device);
    if (state === undefined) return detachUnrecorded(device, args.force === true);
    if (!daemonAlive(state.pid)) return detachOrphan(stateDir, state, args.force === true);
    // An [[attach]] of a dstd up node runs in the node's own process: its SIGTERM would stop the
    // whole node, every export with it.
    if (await isNodeOf(stateDir, state.pid)) {
      throw new DstdError("E_DETACH", `${device} is an [[attach]] of the dstd up node (pid ${state.pid}) on state directory ${stateDir}; stopping that process would stop the whole node: remove the [[attach]] from its config and run dstd reload`);
    }
    process.kill(state.pid, "SIGTERM");
    for (let waited = 0; waited < DAEMON_STOP_WAIT_MS && daemonAlive(state.pid); waited += 50) await Bun.sleep(50);
    if (daemonAlive(state.pid)) {
      throw new DstdError("E_DETACH", `the daemon of ${device} (pid ${state.pid}) did not stop within ${DAEMON_STOP_WAIT_MS / 1000} s (is the export unreachable? its log says)`);
    }
    process.stdout.write(`detached ${device}\n`);
  },
});

/** Whether `pid` is the dstd up node answering on the state directory's control socket. */
async function isNodeOf(stateDir: string, pid: number): Promise<boolean> {
  const client = await ControlClient.connect(controlSocketPath(stateDir)).catch(() => null);
  if (client === null) return false;
  try {
    const hello = (await client.request("hello")) as { pid?: unknown };
    return hello.pid === pid;
  } catch {
    return false;
  } finally {
    client.close();
  }
}

/** "nbd0" → "/dev/nbd0"; anything else (an NBD endpoint) unchanged. */
function normaliseDevice(text: string): string {
  return /^nbd\d+$/.test(text) ? `/dev/${text}` : text;
}

function kernelIndex(device: string): number | null {
  return device.startsWith("/dev/nbd") ? parseDevicePath(device) : null;
}

/** No record: say so, unless the kernel still has a dstd device there (state directory lost). */
async function detachUnrecorded(device: string, force: boolean): Promise<void> {
  const index = kernelIndex(device);
  const sysfs = index === null ? null : readDeviceSysfs(index);
  if (index === null || sysfs === null || sysfs.pid === null) {
    process.stdout.write(`${device} is not attached; nothing to do\n`);
    return;
  }
  const ours = sysfs.backend === null ? null : parseBackendId(sysfs.backend);
  if (ours === null) {
    throw new DstdError("E_DETACH", `${device} is attached by another program (backend ${JSON.stringify(sysfs.backend)}), not by dstd: detach it with that program`);
  }
  if (!force) {
    throw new DstdError("E_DETACH", `${device} is attached to ${ours.url} by dstd, but this state directory has no record of it: use --force to disconnect it`);
  }
  await disconnect(index);
  process.stdout.write(`disconnected ${device} (${ours.url}; no record of its daemon)\n`);
}

async function detachOrphan(stateDir: string, state: AttachmentState, force: boolean): Promise<void> {
  const index = state.mode === "kernel" ? kernelIndex(state.device) : null;
  const sysfs = index === null ? null : readDeviceSysfs(index);
  const stillAttached = sysfs !== null && sysfs.pid !== null && sysfs.backend === state.backendId;
  if (!force) {
    const resume = stillAttached
      ? `; the device is still attached and its I/O waits for a new daemon: run dstd attach ${state.url} --device ${state.device} to resume it, or`
      : ";";
    throw new DstdError("E_DETACH", `the daemon of ${state.device} (pid ${state.pid}) is gone${resume} use --force to clear it`);
  }
  if (stillAttached) {
    await disconnect(index!);
    removeState(stateDir, state.device);
    process.stdout.write(`disconnected ${state.device} (its daemon was gone)\n`);
    return;
  }
  removeState(stateDir, state.device);
  process.stdout.write(`cleared ${state.device} (its daemon was gone${index !== null ? " and the device was already detached" : ""})\n`);
}

async function disconnect(index: number): Promise<void> {
  const control = await NbdControl.open();
  try {
    await control.disconnectDevice(index);
  } finally {
    control.close();
  }
  for (let i = 0; i < 100 && readDeviceSysfs(index).pid !== null; i++) await Bun.sleep(50);
}
