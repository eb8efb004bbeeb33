/**
 * @module test/backend/loop — attach/detach loop devices so block-device tests run against a
 * real kernel block device backed by a scratch file. Needs root, losetup and /dev/loop-control.
 */
import { existsSync } from "node:fs";

/** Why loop devices cannot be used here, or null when they can. */
export const loopUnavailable: string | null =
  process.getuid?.() === 0 && existsSync("/dev/loop-control") && Bun.which("losetup") !== null
    ? null
    : "block device test needs losetup and /dev/loop-control (root)";

/** `losetup --find --show FILE`; returns the device path (e.g. /dev/loop3). */
export function attachLoop(file: string): string {
  const result = Bun.spawnSync(["losetup", "--find", "--show", file]);
  const device = result.stdout.toString().trim();
  if (result.exitCode !== 0 || !device.startsWith("/dev/")) {
    throw new Error(`losetup --find --show ${file} failed: ${result.stderr.toString().trim()}`);
  }
  return device;
}

export function detachLoop(device: string): void {
  const result = Bun.spawnSync(["losetup", "--detach", device]);
  if (result.exitCode !== 0) throw new Error(`losetup --detach ${device} failed: ${result.stderr.toString().trim()}`);
}
