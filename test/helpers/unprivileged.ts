/**
 * @module test/helpers/unprivileged — run a snippet of dstd code as an ordinary user.
 * Tests of permission errors cannot fail as root (root bypasses mode bits), and CI runs as
 * root; so as root the snippet runs under `setpriv` as nobody (util-linux, on every Debian),
 * and as an ordinary user it runs as that user. Returns what the snippet printed; the
 * snippet's folder is removed afterwards (tests leave nothing in the temporary directory).
 */
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const root = resolve(import.meta.dir, "..", "..");

/** `body` is the inside of an async function; `src(path)` gives an import URL for a source file. */
export function runUnprivileged(body: (src: (path: string) => string) => string): { stdout: string; stderr: string; exitCode: number } {
  const dir = mkdtempSync(join(tmpdir(), "dstd-unpriv-"));
  chmodSync(dir, 0o755);
  const script = join(dir, "snippet.ts");
  writeFileSync(script, `await (async () => {\n${body((p) => JSON.stringify(join(root, p)))}\n})();\n`, { mode: 0o644 });
  const asRoot = process.getuid?.() === 0;
  const cmd = asRoot ? ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", process.execPath, script] : [process.execPath, script];
  try {
    const result = Bun.spawnSync(cmd, { stdout: "pipe", stderr: "pipe" });
    return { stdout: result.stdout.toString(), stderr: result.stderr.toString(), exitCode: result.exitCode ?? -1 };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
