/**
 * @module bench/harness — plumbing for benchmarks that run real processes (bench/peers.ts):
 * a registry that owns every child process and the run's temporary directory and tears both
 * down on success, failure, Ctrl-C or SIGTERM; servers started with their output in a log
 * file and awaited on their TCP port or Unix socket; fio runs with the JSON banner stripped;
 * timed one-shot commands with their own peak RSS (VmHWM sampled while they run) and CPU
 * (wait4 rusage); VmHWM reading and resetting; data files with a fixed, incompressible pattern; medians; a Markdown table.
 */
import type { Subprocess } from "bun";
import { closeSync, existsSync, fdatasyncSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from "node:fs";
import { join } from "node:path";

export const MiB = 1 << 20;

/** Thrown by `Run.spawn` once cleanup has begun (Ctrl-C): measures must not swallow it. */
export class Stopping extends Error {
  constructor() {
    super("run is being cleaned up");
  }
}

/** A server the run started and keeps until the end. */
export interface Server {
  name: string;
  proc: Subprocess;
  log: string;
}

/** Tool → Debian package, for the "not installed" messages. */
export const PACKAGES: Record<string, string> = { fio: "fio", nbdkit: "nbdkit", nbdcopy: "libnbd-bin", git: "git" };

export function missingTool(tool: string): string | null {
  return Bun.which(tool) === null ? `${tool} is not installed (Debian package ${PACKAGES[tool] ?? tool})` : null;
}

/**
 * Owns every process and file a run makes. `cleanup()` is idempotent and runs from the
 * caller's `finally` as well as from the signal handlers installed here.
 */
export class Run {
  readonly dir: string;
  private readonly children = new Set<Subprocess>();
  private readonly usedPorts = new Set<number>();
  private cleaned = false;

  constructor(parent: string, prefix: string) {
    this.dir = mkdtempSync(join(parent, prefix));
    const onSignal = (signal: NodeJS.Signals) => {
      console.error(`\n${signal}: stopping every process this run started and removing ${this.dir}`);
      void this.cleanup().finally(() => process.exit(signal === "SIGINT" ? 130 : 143));
    };
    process.on("SIGINT", onSignal);
    process.on("SIGTERM", onSignal);
    process.on("SIGHUP", onSignal);
  }

  path(name: string): string {
    return join(this.dir, name);
  }

  /** Spawn a child the run owns; its output goes to `log` (a file in the run's directory) or is piped. */
  spawn(cmd: string[], options: { log?: string; pipe?: boolean; env?: Record<string, string>; cwd?: string } = {}): Subprocess {
    if (this.cleaned) throw new Stopping();
    let fd: number | undefined;
    if (options.log) fd = openSync(options.log, "a");
    const proc = Bun.spawn(cmd, {
      stdin: "ignore",
      stdout: options.pipe ? "pipe" : (fd ?? "ignore"),
      stderr: options.pipe ? "pipe" : (fd ?? "ignore"),
      env: options.env ? { ...process.env, ...options.env } : undefined,
      cwd: options.cwd,
    });
    if (fd !== undefined) closeSync(fd);
    this.children.add(proc);
    void proc.exited.then(() => this.children.delete(proc));
    return proc;
  }

  /** Start a long-lived server and wait until `ready` accepts connections. */
  async server(name: string, cmd: string[], ready: Endpoint, env?: Record<string, string>): Promise<Server> {
    const log = this.path(`${name.replace(/[^A-Za-z0-9_.-]+/g, "_")}.log`);
    writeFileSync(log, `$ ${cmd.join(" ")}\n`);
    const proc = this.spawn(cmd, { log, env });
    try {
      await waitReady(ready, name, proc);
    } catch (error) {
      await stop(proc);
      throw new Error(`${(error as Error).message}\n--- ${log} ---\n${tail(log)}`);
    }
    return { name, proc, log };
  }

  /** A loopback TCP port nothing listens on right now (and that this run has not handed out). */
  freePort(): number {
    for (;;) {
      const listener = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
      const port = listener.port;
      listener.stop(true);
      if (!this.usedPorts.has(port)) {
        this.usedPorts.add(port);
        return port;
      }
    }
  }

  async cleanup(): Promise<void> {
    if (this.cleaned) return;
    this.cleaned = true;
    await Promise.all([...this.children].map((proc) => stop(proc)));
    rmSync(this.dir, { recursive: true, force: true });
  }
}

export type Endpoint = { tcp: number } | { unix: string };

/** SIGTERM, then SIGKILL after 5 s. */
export async function stop(proc: Subprocess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  proc.kill("SIGTERM");
  await Promise.race([proc.exited, Bun.sleep(5000)]);
  if (proc.exitCode === null && proc.signalCode === null) {
    proc.kill("SIGKILL");
    await proc.exited;
  }
}

function tail(path: string, lines = 15): string {
  try {
    return readFileSync(path, "utf8").trimEnd().split("\n").slice(-lines).join("\n");
  } catch {
    return "(no log)";
  }
}

async function waitReady(endpoint: Endpoint, what: string, proc: Subprocess): Promise<void> {
  const deadline = Date.now() + 20_000;
  const where = "tcp" in endpoint ? `127.0.0.1:${endpoint.tcp}` : endpoint.unix;
  while (Date.now() < deadline) {
    if (proc.exitCode !== null || proc.signalCode !== null) throw new Error(`${what} exited (${proc.exitCode ?? proc.signalCode}) before listening on ${where}`);
    if ("unix" in endpoint && !existsSync(endpoint.unix)) {
      await Bun.sleep(50);
      continue;
    }
    const socket = { data() {}, open(s: { end(): void }) { s.end(); } };
    const connecting = "tcp" in endpoint ? Bun.connect({ hostname: "127.0.0.1", port: endpoint.tcp, socket }) : Bun.connect({ unix: endpoint.unix, socket });
    const ok = await connecting.then(
      () => true,
      () => false,
    );
    if (ok) return;
    await Bun.sleep(50);
  }
  throw new Error(`${what} did not listen on ${where} within 20 s`);
}

/** Peak resident set (VmHWM) of a live process, MiB; null when it is gone. */
export function vmHwm(pid: number): number | null {
  try {
    const match = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return match ? Number(match[1]) / 1024 : null;
  } catch {
    return null;
  }
}

/** Reset VmHWM to the current RSS (Linux ≥ 4.0, `echo 5 > /proc/PID/clear_refs`); false if refused. */
export function resetHwm(pid: number): boolean {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, "5");
    return true;
  } catch {
    return false;
  }
}

/** User + system CPU seconds a live process has used so far (0 when it is gone). */
export function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (USER_HZ = 100)
  } catch {
    return 0;
  }
}

export interface Timed {
  seconds: number;
  /** The child's own peak resident set (VmHWM, MiB); null if it exited before one sample. */
  maxRssMiB: number | null;
  cpuSeconds: number;
}

/** How often `timed` reads a running child's VmHWM. */
const HWM_SAMPLE_MS = 10;

/**
 * Follow a child's own peak resident set while it runs: VmHWM from /proc/PID/status, read
 * right after the spawn (Bun.spawn returns once the vfork child has exec'd, so this is the
 * child's new address space) and every HWM_SAMPLE_MS until it exits. Not its wait4 rusage:
 * Bun.spawn starts children with vfork, and Linux carries the parent's peak into the child's
 * ru_maxrss at exec, so every command run from a large bench process "peaked" at the bench's
 * size (src/cli/copy.ts ownPeakRss). VmHWM only grows, so the last reading is the peak up to
 * HWM_SAMPLE_MS before the exit; a growth in that last moment is missed.
 */
function followHwm(pid: number): () => number | null {
  let peak: number | null = null;
  const sample = () => {
    const hwm = vmHwm(pid);
    if (hwm !== null) peak = Math.max(peak ?? 0, hwm);
  };
  sample();
  const timer = setInterval(sample, HWM_SAMPLE_MS);
  return () => {
    clearInterval(timer);
    return peak;
  };
}

/** Run a child to completion with its output collected; SIGKILL and an error after `timeoutSeconds`. */
async function collect(run: Run, cmd: string[], timeoutSeconds: number, env?: Record<string, string>) {
  const proc = run.spawn(cmd, { pipe: true, env });
  const peak = followHwm(proc.pid);
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    proc.kill("SIGKILL");
  }, timeoutSeconds * 1000);
  const [out, err, code] = await Promise.all([new Response(proc.stdout as ReadableStream).text(), new Response(proc.stderr as ReadableStream).text(), proc.exited]);
  clearTimeout(timer);
  const maxRssMiB = peak();
  if (timedOut) throw new Error(`${cmd[0]} did not finish within ${timeoutSeconds} s (killed): ${cmd.join(" ")}`);
  return { proc, out, err, code, maxRssMiB };
}

/** Run a one-shot command to completion; wall time, its own peak RSS (followHwm) and CPU from its rusage. */
export async function timed(run: Run, cmd: string[], timeoutSeconds: number, env?: Record<string, string>): Promise<Timed> {
  const start = performance.now();
  const { proc, out, err, code, maxRssMiB } = await collect(run, cmd, timeoutSeconds, env);
  const seconds = (performance.now() - start) / 1000;
  if (code !== 0) throw new Error(`${cmd.join(" ")} failed (${code ?? proc.signalCode}): ${(err || out).trim().split("\n").slice(-5).join(" / ")}`);
  const usage = proc.resourceUsage();
  return { seconds, maxRssMiB, cpuSeconds: Number(usage?.cpuTime.total ?? 0n) / 1e6 };
}

export interface FioJob {
  name: string;
  rw: "read" | "write" | "randread" | "randwrite";
  bs: "1m" | "4k";
  iodepth: number;
  unit: "MiB/s" | "IOPS";
}

export const FIO_JOBS: FioJob[] = [
  { name: "seq write 1 MiB QD16", rw: "write", bs: "1m", iodepth: 16, unit: "MiB/s" },
  { name: "seq read 1 MiB QD16", rw: "read", bs: "1m", iodepth: 16, unit: "MiB/s" },
  { name: "rand write 4 KiB QD32", rw: "randwrite", bs: "4k", iodepth: 32, unit: "IOPS" },
  { name: "rand read 4 KiB QD32", rw: "randread", bs: "4k", iodepth: 32, unit: "IOPS" },
];

/** fio's nbd ioengine against `uri` (the job parameters of the peer measurements in issue 10). */
export async function fio(run: Run, uri: string, job: FioJob, runtime: number, sizeMiB: number): Promise<number> {
  const cmd = [
    "fio", "--name=b", "--ioengine=nbd", `--uri=${uri}`, "--time_based", `--runtime=${runtime}`,
    `--size=${sizeMiB}M`, `--rw=${job.rw}`, `--bs=${job.bs}`, `--iodepth=${job.iodepth}`, "--output-format=json",
  ];
  const { proc, out, err, code } = await collect(run, cmd, runtime + 60);
  if (code !== 0) throw new Error(`fio ${job.name} against ${uri} failed (${code ?? proc.signalCode}): ${err.trim().split("\n")[0]}`);
  // fio prints a banner line before the JSON: skip to the first "{".
  const result = JSON.parse(out.slice(out.indexOf("{"))).jobs[0];
  if (result.error) throw new Error(`fio ${job.name} against ${uri}: error ${result.error}: ${err.trim()}`);
  const side = job.rw.includes("read") ? result.read : result.write;
  return job.unit === "IOPS" ? side.iops : side.bw_bytes / MiB;
}

/**
 * Write `sizeMiB` MiB of incompressible data without zero blocks (so no tool can skip or
 * sparsify anything). `seed` makes different files differ in every block; the file is
 * fdatasync'ed so the measurements do not start with writeback of the preparation.
 */
export function writePattern(path: string, sizeMiB: number, seed: number): void {
  const block = new Uint8Array(MiB);
  let state = (seed * 2654435761 + 1) >>> 0;
  const words = new Uint32Array(block.buffer);
  const fd = openSync(path, "w");
  try {
    for (let i = 0; i < sizeMiB; i++) {
      for (let w = 0; w < words.length; w++) {
        state ^= state << 13;
        state ^= state >>> 17;
        state ^= state << 5;
        words[w] = state >>> 0;
      }
      let off = 0;
      while (off < MiB) off += writeSync(fd, block, off, MiB - off, i * MiB + off);
    }
    fdatasyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Read a file once so that it sits in the page cache. */
export async function warm(path: string): Promise<void> {
  const reader = Bun.file(path).stream().getReader();
  for (;;) if ((await reader.read()).done) break;
}

/** Whether two files have the same bytes (used once per tool to prove a copy really happened). */
export async function sameContent(a: string, b: string): Promise<boolean> {
  const proc = Bun.spawn(["cmp", "-s", a, b], { stdout: "ignore", stderr: "ignore" });
  return (await proc.exited) === 0;
}

export function median(values: number[]): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((x, y) => x - y);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** A Markdown table with padded columns. */
export function table(header: string[], rows: string[][], rightAligned: Set<number> = new Set()): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const cell = (c: string, i: number) => (rightAligned.has(i) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!));
  const line = (cells: string[]) => `| ${cells.map(cell).join(" | ")} |`;
  return [line(header), `|${widths.map((w, i) => (rightAligned.has(i) ? `${"-".repeat(w + 1)}:` : "-".repeat(w + 2))).join("|")}|`, ...rows.map(line)].join("\n");
}
