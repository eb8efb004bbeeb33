/**
 * @module test/helpers/binary — the compiled dstd executable for tests that run real
 * processes. Builds dist/dstd when it is missing or older than any source file, and spawns
 * exports that report their bound port.
 */
import { spawn, spawnSync, type Subprocess } from "bun";
import { existsSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";

const root = join(import.meta.dir, "..", "..");
export const DSTD = join(root, "dist", "dstd");

function newestMtime(path: string): number {
  const info = statSync(path);
  if (!info.isDirectory()) return info.mtimeMs;
  let newest = 0;
  for (const entry of readdirSync(path)) newest = Math.max(newest, newestMtime(join(path, entry)));
  return newest;
}

/** Build dist/dstd when it is missing or older than anything in src/ or the build inputs. */
export function ensureBinary(): string {
  const sourceTime = Math.max(
    newestMtime(join(root, "src")),
    newestMtime(join(root, "build.ts")),
    newestMtime(join(root, "package.json")),
  );
  if (!existsSync(DSTD) || statSync(DSTD).mtimeMs < sourceTime) {
    const result = spawnSync([process.execPath, "build.ts"], { cwd: root, stdout: "pipe", stderr: "pipe" });
    if (result.exitCode !== 0) throw new Error(`build failed (exit ${result.exitCode}):\n${result.stdout.toString()}${result.stderr.toString()}`);
  }
  return DSTD;
}

export interface RunningExport {
  process: Subprocess<"ignore", "pipe", "pipe">;
  port: number;
  /** Everything the export logged so far (all of it after stop()). */
  log(): string;
  stop(): Promise<void>;
}

/** Start `dstd export ARGS --listen 127.0.0.1:0`; resolves once it logs its bound port. */
export async function startExport(args: string[], env: Record<string, string> = {}): Promise<RunningExport> {
  const child = spawn([ensureBinary(), "export", "--listen", "127.0.0.1:0", ...args], {
    env: { ...process.env, ...env },
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  let text = "";
  const decoder = new TextDecoder();
  const reader = child.stderr.getReader();
  let pumped: Promise<void> = Promise.resolve();
  const port = await new Promise<number>((resolve, reject) => {
    const pump = async () => {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return reject(new Error(`export exited before listening:\n${text}`));
        text += decoder.decode(value);
        const match = /listening for DST on 127\.0\.0\.1:(\d+)/.exec(text);
        if (match) {
          resolve(Number(match[1]));
          break;
        }
      }
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        text += decoder.decode(value);
      }
    };
    pumped = pump().catch(reject);
  });
  return {
    process: child,
    port,
    log: () => text,
    async stop() {
      child.kill("SIGTERM");
      await child.exited;
      await pumped; // everything it wrote is in log() once stop() returns
    },
  };
}

/** Run `dstd ARGS` to completion (optionally in `cwd`, with `stdin` piped in). */
export async function runDstd(args: string[], env: Record<string, string> = {}, options: { cwd?: string; stdin?: Uint8Array } = {}) {
  const child = spawn([ensureBinary(), ...args], {
    stdin: options.stdin === undefined ? "ignore" : new Blob([options.stdin]),
    stdout: "pipe",
    stderr: "pipe",
    cwd: options.cwd,
    env: { ...process.env, ...env },
  });
  const [stdout, stderr, exitCode] = await Promise.all([
    new Response(child.stdout).text(),
    new Response(child.stderr).text(),
    child.exited,
  ]);
  return { stdout, stderr, exitCode };
}
