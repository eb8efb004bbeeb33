/**
 * @module sys/argv0 — systemd's convention for storage daemons that serve the root file
 * system: a process whose argv[0] starts with '@' is left running by the shutdown killing
 * spree, so the disk under `/` stays served until it is unmounted (docs/status.md "systemd").
 *
 * JavaScript cannot rewrite its own argv in place, so dstd re-executes itself with execv:
 * the same pid (systemd's MAINPID stays right), the same environment (NOTIFY_SOCKET too),
 * the same binary (/proc/self/exe, even if the file was replaced by an upgrade meanwhile),
 * argv[0] = "@dstd". Bun.spawn's argv0 option gives the same cmdline but a new pid, which a
 * Type=notify service would not accept as its main process.
 */
import { readFileSync } from "node:fs";
import { execv } from "./libc.ts";

/** Does /proc/self/cmdline start with '@'? */
export function markedAsStorageDaemon(): boolean {
  try {
    return readFileSync("/proc/self/cmdline", "latin1").startsWith("@");
  } catch {
    return false;
  }
}

/**
 * The argv to exec: a compiled dstd sees ["bun", "/$bunfs/root/dstd", ...args] in
 * process.argv; `bun src/main.ts` sees [bun, script, ...args] and needs the script again.
 */
export function storageDaemonArgv(argv: readonly string[] = process.argv): string[] {
  const compiled = (argv[1] ?? "").startsWith("/$bunfs/");
  return compiled ? ["@dstd", ...argv.slice(2)] : ["@dstd", ...argv.slice(1)];
}

/**
 * Re-execute as "@dstd …" unless already marked. Call before opening anything: descriptors
 * without close-on-exec would leak into the new image. Returns only when already marked.
 */
export function becomeStorageDaemon(): void {
  if (markedAsStorageDaemon()) return;
  execv("/proc/self/exe", storageDaemonArgv());
}
