/**
 * @module test/fault/harness — real processes for the fault tests: make sure dist/dstd is
 * built from the current source, run `dstd export` and `dstd copy` as child processes, make
 * random source files, and compare files block by block with sha256.
 * Test tooling only; never imported by src/.
 */
import type { Subprocess } from "bun";
import { closeSync, mkdtempSync, openSync, readSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createHash } from "node:crypto";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll } from "bun:test";
import { ensureBinary as ensureDstd } from "../helpers/binary.ts";
import { FaultProxy } from "./proxy.ts";

export const ROOT = resolve(import.meta.dir, "../..");
/** The binary under test; DSTD_FAULT_BIN runs the tests against another build (e.g. a planted bug). */
export const BINARY = process.env.DSTD_FAULT_BIN ? resolve(process.env.DSTD_FAULT_BIN) : join(ROOT, "dist/dstd");
export const MiB = 1024 * 1024;

/** Build dist/dstd from the current source (test/helpers/binary.ts), unless DSTD_FAULT_BIN names another build. */
export function ensureBinary(): void {
  if (process.env.DSTD_FAULT_BIN) return; // somebody else's build: use it as it is
  ensureDstd();
}

export function tempDir(tag: string): { path: string; remove(): void } {
  const path = mkdtempSync(join(tmpdir(), `dstd-fault-${tag}-`));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

export { writeRandomFile } from "../helpers/files.ts";

/** sha256 of every `blockSize` block of the first `length` bytes of `path` (short file: zeros). */
export function blockHashes(path: string, length: number, blockSize = MiB): string[] {
  const fd = openSync(path, "r");
  const block = Buffer.alloc(blockSize);
  const hashes: string[] = [];
  try {
    for (let at = 0; at < length; at += blockSize) {
      const n = Math.min(blockSize, length - at);
      block.fill(0);
      let got = 0;
      while (got < n) {
        const r = readSync(fd, block, got, n - got, at + got);
        if (r === 0) break;
        got += r;
      }
      hashes.push(createHash("sha256").update(block.subarray(0, n)).digest("hex"));
    }
  } finally {
    closeSync(fd);
  }
  return hashes;
}

export interface Comparison {
  blocks: number;
  differing: number;
  /** First few differing block indexes, for the failure message. */
  examples: number[];
}

export function compareBlocks(expected: string[], actualPath: string, length: number, blockSize = MiB): Comparison {
  const actual = blockHashes(actualPath, length, blockSize);
  const differingIndexes = expected.flatMap((hash, i) => (actual[i] === hash ? [] : [i]));
  return { blocks: expected.length, differing: differingIndexes.length, examples: differingIndexes.slice(0, 8) };
}

const children = new Set<Subprocess>();

/** SIGKILL every export and copy this harness started that is still running (for afterAll). */
export async function killChildren(): Promise<void> {
  const running = [...children];
  children.clear();
  for (const child of running) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  await Promise.all(running.map((child) => child.exited));
}

function track<T extends Subprocess>(child: T): T {
  children.add(child);
  void child.exited.then(() => children.delete(child));
  return child;
}

export interface RunningExport {
  proc: Subprocess<"ignore", "pipe", "pipe">;
  port: number;
  /** Everything the export printed so far. */
  output(): string;
  kill(signal?: NodeJS.Signals): Promise<void>;
}

/** Collect a child's stream as text while it runs. */
function collect(stream: ReadableStream<Uint8Array>): { text(): string; done: Promise<void> } {
  const decoder = new TextDecoder();
  let text = "";
  const done = (async () => {
    for await (const chunk of stream) text += decoder.decode(chunk, { stream: true });
  })();
  return { text: () => text, done };
}

/**
 * Start `dstd export` on a file (created with `size` when missing) listening on
 * 127.0.0.1:`port` (0 = any); resolves once it reports the port it listens on.
 */
export async function startExport(options: { file?: string; memory?: string; size?: number; port?: number }): Promise<RunningExport> {
  const backend = options.file
    ? ["--file", options.file, ...(options.size ? ["--size", String(options.size)] : [])]
    : ["--memory", options.memory ?? "64MiB"];
  const argv = [BINARY, "export", ...backend, "--listen", `127.0.0.1:${options.port ?? 0}`, "--allow", "127.0.0.1/32:rw", "--log-level", "info"];
  const proc = track(Bun.spawn(argv, { stdin: "ignore", stdout: "pipe", stderr: "pipe" }));
  const out = collect(proc.stdout);
  const err = collect(proc.stderr);
  const output = () => out.text() + err.text();
  const deadline = performance.now() + 10_000;
  let port = 0;
  while (port === 0) {
    const match = /listening for DST on 127\.0\.0\.1:(\d+)/.exec(output());
    if (match) port = Number(match[1]);
    else if (proc.exitCode !== null || performance.now() > deadline) {
      proc.kill("SIGKILL");
      throw new Error(`dstd export did not start (exit ${proc.exitCode}):\n${output()}`);
    } else await Bun.sleep(10);
  }
  return {
    proc,
    port,
    output,
    async kill(signal = "SIGTERM") {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      await proc.exited;
    },
  };
}

/** Client reliability keys for a [client] table, e.g. { deadline: "120s" }. */
export function writeClientConfig(path: string, keys: Record<string, string | number>): string {
  const lines = Object.entries(keys).map(([k, v]) => `${k} = ${typeof v === "number" ? v : JSON.stringify(v)}`);
  writeFileSync(path, `[client]\n${lines.join("\n")}\n`);
  return path;
}

export interface CopyRun {
  proc: Subprocess<"ignore", "pipe", "pipe">;
  startedAt: number;
  /** Resolves when the copy exits: exit code, seconds, and everything it printed. */
  result: Promise<{ exitCode: number; seconds: number; output: string }>;
  output(): string;
}

/** Run `dstd copy SOURCE TARGET [--config FILE]` with info logging (reconnects are logged). */
export function startCopy(source: string, target: string, config?: string, extra: string[] = []): CopyRun {
  const startedAt = performance.now();
  const level = extra.includes("--log-level") ? [] : ["--log-level", "info"]; // extra may name its own
  const argv = [BINARY, "copy", source, target, ...(config ? ["--config", config] : []), ...level, ...extra];
  const proc = track(Bun.spawn(argv, { stdin: "ignore", stdout: "pipe", stderr: "pipe" }));
  const out = collect(proc.stdout);
  const err = collect(proc.stderr);
  const output = () => out.text() + err.text();
  const result = (async () => {
    const exitCode = await proc.exited;
    await Promise.all([out.done, err.done]);
    return { exitCode, seconds: (performance.now() - startedAt) / 1000, output: output() };
  })();
  return { proc, startedAt, result, output };
}

/** Bytes allocated to a (sparse) file: grows as the export writes into it. */
export function allocatedBytes(path: string): number {
  try {
    return statSync(path).blocks * 512;
  } catch {
    return 0;
  }
}

/** Lines of a copy's output that report a lost connection (the engine logs each one). */
export function connectionLostLines(output: string): string[] {
  return output.split("\n").filter((line) => line.includes("connection lost"));
}

/**
 * Engine counters, when the copy prints them (`reconnects=N replays=N ...` or
 * `reconnects N`); null when this build of `dstd copy` does not report them.
 */
export function reportedCounter(output: string, name: string): number | null {
  const match = new RegExp(`\\b${name}[=: ]\\s*(\\d+)`).exec(output);
  return match ? Number(match[1]) : null;
}

export function seconds(since: number): string {
  return ((performance.now() - since) / 1000).toFixed(1);
}

/**
 * The lifecycle every fault-test file shares: build the binary once, one temp dir, and every
 * export and proxy started through the suite is stopped at the end (or by `stopAll`, e.g. in
 * an afterEach), along with any stray child process.
 */
export function faultSuite(tag: string) {
  const dir = tempDir(tag);
  const exporters: RunningExport[] = [];
  const proxies: FaultProxy[] = [];
  const stopAll = async () => {
    for (const proxy of proxies.splice(0)) proxy.close();
    for (const exporter of exporters.splice(0)) await exporter.kill("SIGKILL");
  };
  beforeAll(() => ensureBinary(), 120_000);
  afterAll(async () => {
    await stopAll();
    await killChildren();
    dir.remove();
  });
  return {
    dir,
    stopAll,
    async startExport(options: Parameters<typeof startExport>[0]): Promise<RunningExport> {
      const exporter = await startExport(options);
      exporters.push(exporter);
      return exporter;
    },
    /** An export with a fault proxy in front; `url` goes through the proxy. */
    async exportBehindProxy(options: Parameters<typeof startExport>[0]) {
      const exporter = await this.startExport(options);
      const proxy = FaultProxy.start({ upstream: { host: "127.0.0.1", port: exporter.port } });
      proxies.push(proxy);
      return { exporter, proxy, url: `dst://127.0.0.1:${proxy.port}/disk` };
    },
  };
}

/** `dstd copy` plus whether it has exited yet (a fault must land while it is running). */
export function watchedCopy(source: string, target: string, config?: string, extra: string[] = []): CopyRun & { exited(): boolean } {
  const copy = startCopy(source, target, config, extra);
  let exited = false;
  void copy.result.then(() => (exited = true));
  return { ...copy, exited: () => exited };
}
