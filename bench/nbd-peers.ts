/**
 * @module bench/nbd-peers — issue 6's benchmark: fio's `nbd` engine against `dstd export`,
 * `nbdkit file`, `nbd-server` and `qemu-nbd`, all serving the same backing file from page
 * cache, same client, same run. Prints a table with each server's result, dstd's ratio to
 * each peer, and dstd's peak RSS (VmHWM).
 *
 *   bun bench/nbd-peers.ts
 *   BENCH_RUNTIME=3 BENCH_SERVERS=dstd,nbdkit bun bench/nbd-peers.ts     # quick
 *
 * Environment: BENCH_RUNTIME seconds per run (10), BENCH_SIZE file size in MiB (2048),
 * BENCH_DIR (/tmp/dstd-bench), BENCH_SERVERS (dstd,nbdkit,nbd-server,qemu-nbd),
 * BENCH_WORKLOADS (seq-read,seq-write,rand-read,rand-write), BENCH_ROUNDS (1; the median is
 * reported), DSTD_CMD (how to run dstd; default `bun src/main.ts`, or dist/dstd if built).
 * Peers missing from PATH are skipped with the Debian package to install.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Subprocess } from "bun";

const MiB = 1 << 20;
const runtime = Number(process.env.BENCH_RUNTIME ?? 10);
const sizeMiB = Number(process.env.BENCH_SIZE ?? 2048);
const dir = process.env.BENCH_DIR ?? "/tmp/dstd-bench";
const rounds = Number(process.env.BENCH_ROUNDS ?? 1);
const root = join(import.meta.dir, "..");
const file = join(dir, `disk-${sizeMiB}M.img`);

interface Workload {
  name: string;
  rw: string;
  bs: string;
  iodepth: number;
  unit: "MiB/s" | "IOPS";
}

const allWorkloads: Workload[] = [
  { name: "seq-read", rw: "read", bs: "1m", iodepth: 16, unit: "MiB/s" },
  { name: "seq-write", rw: "write", bs: "1m", iodepth: 16, unit: "MiB/s" },
  { name: "rand-read", rw: "randread", bs: "4k", iodepth: 32, unit: "IOPS" },
  { name: "rand-write", rw: "randwrite", bs: "4k", iodepth: 32, unit: "IOPS" },
];
const workloads = allWorkloads.filter((w) => (process.env.BENCH_WORKLOADS ?? w.name).split(",").includes(w.name));

interface Server {
  name: string;
  tool: string;
  pkg: string;
  uri: string;
  proc?: Subprocess;
  pid?: number;
  start(port: number): Promise<void>;
  stop(): Promise<void>;
}

function dstdCommand(): string[] {
  if (process.env.DSTD_CMD) return process.env.DSTD_CMD.split(" ");
  const binary = join(root, "dist", "dstd");
  if (existsSync(binary)) return [binary];
  return [process.execPath, join(root, "src", "main.ts")];
}

async function waitForPort(port: number, what: string, proc?: Subprocess): Promise<void> {
  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline) {
    if (proc && proc.exitCode !== null) throw new Error(`${what} exited with ${proc.exitCode} before listening`);
    const ok = await Bun.connect({ hostname: "127.0.0.1", port, socket: { data() {}, open(s) { s.end(); } } }).then(
      () => true,
      () => false,
    );
    if (ok) return;
    await Bun.sleep(100);
  }
  throw new Error(`${what} did not listen on 127.0.0.1:${port} within 15 s`);
}

function spawnServer(server: Server, cmd: string[], port: number): Promise<void> {
  server.proc = Bun.spawn(cmd, { stdout: "ignore", stderr: "pipe", cwd: root });
  server.pid = server.proc.pid;
  return waitForPort(port, server.name, server.proc);
}

async function killServer(server: Server): Promise<void> {
  if (!server.proc) return;
  server.proc.kill("SIGTERM");
  await Promise.race([server.proc.exited, Bun.sleep(3000)]);
  if (server.proc.exitCode === null) server.proc.kill("SIGKILL");
}

function servers(): Server[] {
  const all: Server[] = [
    {
      name: "dstd", tool: dstdCommand()[0]!, pkg: "(this repository)", uri: "",
      async start(port) {
        this.uri = `nbd://127.0.0.1:${port}/disk`;
        await spawnServer(this, [
          ...dstdCommand(), "export", "--name", "disk", "--file", file,
          "--nbd-listen", `127.0.0.1:${port}`, "--listen", `127.0.0.1:${port + 1}`, "--allow", "127.0.0.1/32:rw",
        ], port);
      },
      stop() { return killServer(this); },
    },
    {
      name: "nbdkit", tool: "nbdkit", pkg: "nbdkit", uri: "",
      async start(port) {
        this.uri = `nbd://127.0.0.1:${port}/disk`;
        await spawnServer(this, ["nbdkit", "-f", "-i", "127.0.0.1", "-p", String(port), "file", file], port);
      },
      stop() { return killServer(this); },
    },
    {
      name: "nbd-server", tool: "nbd-server", pkg: "nbd-server", uri: "",
      async start(port) {
        this.uri = `nbd://127.0.0.1:${port}/disk`;
        const conf = join(dir, "nbd-server.conf");
        const pidFile = join(dir, "nbd-server.pid");
        writeFileSync(conf, `[generic]\nport = ${port}\nlistenaddr = 127.0.0.1\nallowlist = true\n[disk]\nexportname = ${file}\n`);
        // nbd-server daemonizes and forks per connection; its pid file names the parent.
        const proc = Bun.spawn(["nbd-server", "-C", conf, "-p", pidFile], { stdout: "ignore", stderr: "pipe" });
        await proc.exited;
        await waitForPort(port, "nbd-server");
        this.pid = Number(readFileSync(pidFile, "utf8").trim());
      },
      async stop() {
        if (this.pid) process.kill(this.pid, "SIGTERM");
      },
    },
    {
      name: "qemu-nbd", tool: "qemu-nbd", pkg: "qemu-utils", uri: "",
      async start(port) {
        this.uri = `nbd://127.0.0.1:${port}/disk`;
        await spawnServer(this, ["qemu-nbd", "-f", "raw", "-t", "-e", "4", "-b", "127.0.0.1", "-p", String(port), "-x", "disk", file], port);
      },
      stop() { return killServer(this); },
    },
  ];
  const wanted = (process.env.BENCH_SERVERS ?? "dstd,nbdkit,nbd-server,qemu-nbd").split(",");
  return all.filter((s) => {
    if (!wanted.includes(s.name)) return false;
    if (s.name !== "dstd" && Bun.which(s.tool) === null) {
      console.log(`skipping ${s.name}: not installed (Debian package ${s.pkg})`);
      return false;
    }
    return true;
  });
}

/** A non-sparse backing file (so reads hit real data), then read once so it sits in page cache. */
async function prepareFile(): Promise<void> {
  mkdirSync(dir, { recursive: true });
  if (!existsSync(file) || Bun.file(file).size !== sizeMiB * MiB) {
    console.log(`writing ${sizeMiB} MiB backing file ${file}`);
    const block = new Uint8Array(MiB);
    for (let i = 0; i < block.length; i++) block[i] = (i * 2654435761) >>> 24;
    const writer = Bun.file(file).writer();
    for (let i = 0; i < sizeMiB; i++) {
      block[0] = i & 0xff;
      writer.write(block);
      if (i % 64 === 63) await writer.flush();
    }
    await writer.end();
  }
  const reader = Bun.spawn(["cat", file], { stdout: "ignore" });
  await reader.exited;
}

async function fio(uri: string, w: Workload): Promise<number> {
  const proc = Bun.spawn(
    [
      "fio", "--name=b", "--ioengine=nbd", `--uri=${uri}`, "--time_based", `--runtime=${runtime}`,
      `--size=${sizeMiB}M`, `--rw=${w.rw}`, `--bs=${w.bs}`, `--iodepth=${w.iodepth}`, "--output-format=json",
    ],
    { stdout: "pipe", stderr: "pipe" },
  );
  const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  if (code !== 0) throw new Error(`fio ${w.name} against ${uri} failed (${code}): ${err.trim()}`);
  // fio prints a banner before the JSON: skip to the first "{".
  const job = JSON.parse(out.slice(out.indexOf("{"))).jobs[0];
  const side = w.rw.includes("read") ? job.read : job.write;
  return w.unit === "IOPS" ? side.iops : side.bw_bytes / MiB;
}

function peakRss(pid: number | undefined): number | null {
  if (!pid) return null;
  try {
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    const match = /VmHWM:\s+(\d+) kB/.exec(status);
    return match ? Number(match[1]) / 1024 : null;
  } catch {
    return null;
  }
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

async function main(): Promise<void> {
  if (Bun.which("fio") === null) throw new Error("fio is not installed (Debian package fio)");
  const list = servers();
  await prepareFile();
  let port = 20000 + Math.floor(Math.random() * 20000);
  for (const server of list) {
    await server.start(port);
    console.log(`${server.name} listening at ${server.uri}`);
    port += 2;
  }
  const results = new Map<string, Map<string, number>>();
  const dstd = list.find((s) => s.name === "dstd");
  let rssSeq: number | null = null;
  try {
    for (const w of workloads) {
      const row = new Map<string, number[]>();
      // Servers interleaved within each round so that machine noise hits all of them alike.
      for (let round = 0; round < rounds; round++) {
        for (const server of list) {
          const value = await fio(server.uri, w);
          row.set(server.name, [...(row.get(server.name) ?? []), value]);
          console.log(`  ${w.name.padEnd(10)} ${server.name.padEnd(10)} ${value.toFixed(0)} ${w.unit}`);
        }
      }
      results.set(w.name, new Map([...row].map(([name, values]) => [name, median(values)])));
      if (w.bs === "1m") rssSeq = peakRss(dstd?.pid);
    }
  } finally {
    for (const server of list) await server.stop().catch(() => {});
  }
  printTable(list.map((s) => s.name), results, rssSeq ?? peakRss(dstd?.pid));
}

function printTable(names: string[], results: Map<string, Map<string, number>>, rss: number | null): void {
  const peers = names.filter((n) => n !== "dstd");
  const header = ["workload", ...names, ...peers.map((p) => `dstd/${p}`)];
  const rows = workloads.map((w) => {
    const r = results.get(w.name)!;
    const dstd = r.get("dstd");
    return [
      `${w.name} ${w.bs} QD${w.iodepth} (${w.unit})`,
      ...names.map((n) => (r.get(n) ?? 0).toFixed(0)),
      ...peers.map((p) => (dstd !== undefined && r.get(p) ? `${(dstd / r.get(p)!).toFixed(2)}×` : "-")),
    ];
  });
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(" | ")} |`;
  console.log();
  console.log(line(header));
  console.log(`|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`);
  for (const row of rows) console.log(line(row));
  console.log();
  console.log(`dstd peak RSS (VmHWM): ${rss === null ? "unknown" : `${rss.toFixed(0)} MiB`}; ${runtime} s per run, ${sizeMiB} MiB file, fio --ioengine=nbd`);
}

await main();
