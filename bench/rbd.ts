/**
 * @module bench/rbd — issue 12's RBD benchmark: fio's `nbd` engine against `dstd export --rbd`
 * and against `qemu-nbd` serving the same image through qemu's rbd driver (qemu-block-extra),
 * with `rbd bench` (librbd, no NBD hop) as the ceiling; all on one throw-away single-node
 * cluster (test/helpers/ceph-cluster.sh, memstore OSD) in the same run. Prints each result,
 * dstd's ratio to qemu-nbd (of the medians, and the median of each round's own ratio, which
 * a loaded machine disturbs less) and to the ceiling, and each server's CPU time per workload.
 *
 *   npm run bench:rbd
 *   BENCH_RUNTIME=5 BENCH_ROUNDS=3 npm run bench:rbd
 *
 * Environment: BENCH_RUNTIME seconds per fio run (10), BENCH_SIZE image size in MiB (1024),
 * BENCH_ROUNDS (1; the median is reported; which server goes first rotates between rounds),
 * BENCH_WARMUP seconds of the same job run against each fresh server before it is measured
 * (2; 0: none), BENCH_JOBS
 * (seq-write,seq-read,rand-write,rand-read), DSTD_CMD (how
 * to run dstd; default dist/dstd when built, else `bun src/main.ts`), BASELINE_BIN (another
 * dstd binary, e.g. a build of the commit before a change: measured as "before" in the same
 * rounds, with its own ratio column). One server runs at a time: two writers on one image
 * would pass its exclusive lock back and forth.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { cpuSeconds, FIO_JOBS, fio, median, MiB, missingTool, Run, stop, table, timed, type FioJob } from "./harness.ts";

const runtime = Number(process.env.BENCH_RUNTIME ?? 10);
const sizeMiB = Number(process.env.BENCH_SIZE ?? 1024);
const rounds = Number(process.env.BENCH_ROUNDS ?? 1);
const warmup = Number(process.env.BENCH_WARMUP ?? 2);
const root = join(import.meta.dir, "..");
/** BENCH_JOBS: a comma-separated subset of seq-write, seq-read, rand-write, rand-read. */
const JOB_KEYS = ["seq-write", "seq-read", "rand-write", "rand-read"];
const jobs = FIO_JOBS.filter((_, i) => (process.env.BENCH_JOBS ?? JOB_KEYS.join(",")).split(",").includes(JOB_KEYS[i]!));
const SCRIPT = join(root, "test", "helpers", "ceph-cluster.sh");
const QEMU_RBD = ["/usr/lib/x86_64-linux-gnu/qemu/block-rbd.so", "/usr/lib/aarch64-linux-gnu/qemu/block-rbd.so", "/usr/lib64/qemu/block-rbd.so"];

function dstdCommand(): string[] {
  if (process.env.DSTD_CMD) return process.env.DSTD_CMD.split(" ");
  const binary = join(root, "dist", "dstd");
  return existsSync(binary) ? [binary] : [process.execPath, join(root, "src", "main.ts")];
}

function checkTools(): void {
  const missing = [
    missingTool("fio"),
    ...[["qemu-nbd", "qemu-utils"], ["ceph-mon", "ceph-mon"], ["ceph-osd", "ceph-osd"], ["rbd", "ceph-common"], ["monmaptool", "ceph-base"]].map(([tool, pkg]) =>
      Bun.which(tool!) === null ? `${tool} is not installed (Debian package ${pkg})` : null,
    ),
    QEMU_RBD.some(existsSync) ? null : "qemu's rbd driver (block-rbd.so) is not installed (Debian package qemu-block-extra)",
  ].filter((m) => m !== null);
  if (missing.length > 0) throw new Error(missing.join("\n"));
}

interface Peer {
  name: string;
  command(conf: string, port: number): string[];
}

const dstdExport = (bin: string[], conf: string, port: number) => [...bin, "export", "--name", "disk", "--rbd", "rbd/bench", "--ceph-conf", conf, "--nbd-listen", `127.0.0.1:${port}`, "--listen", "unix:" + join(conf, "..", "run", `dstd-${port}.sock`), "--allow", "127.0.0.1/32:rw"];
const baselineBin = process.env.BASELINE_BIN;

const PEERS: Peer[] = [
  { name: "dstd", command: (conf, port) => dstdExport(dstdCommand(), conf, port) },
  ...(baselineBin ? [{ name: "before", command: (conf: string, port: number) => dstdExport([baselineBin], conf, port) }] : []),
  {
    name: "qemu-nbd",
    // -t: keep serving after a client leaves; -e 4: as many clients as the other peers allow.
    command: (conf, port) => ["qemu-nbd", "-f", "raw", "-t", "-e", "4", "-b", "127.0.0.1", "-p", String(port), "-x", "disk", `rbd:rbd/bench:conf=${conf}`],
  },
];

/** `rbd bench` with the fio job's pattern, size and depth: MiB/s or IOPS straight from librbd. */
async function rbdBench(run: Run, conf: string, job: FioJob): Promise<number> {
  const random = job.rw.startsWith("rand");
  const total = job.bs === "1m" ? `${Math.min(sizeMiB, 1024)}M` : "64M";
  const cmd = [
    "rbd", "-c", conf, "bench", "--io-type", job.rw.includes("read") ? "read" : "write", "--io-size", job.bs === "1m" ? "1M" : "4K",
    "--io-threads", String(job.iodepth), "--io-total", total, "--io-pattern", random ? "rand" : "seq", "rbd/bench",
  ];
  const proc = run.spawn(cmd, { pipe: true });
  const [out, err, code] = await Promise.all([new Response(proc.stdout as ReadableStream).text(), new Response(proc.stderr as ReadableStream).text(), proc.exited]);
  if (code !== 0) throw new Error(`${cmd.join(" ")} failed (${code}): ${err.trim()}`);
  // The summary line: "elapsed: 3   ops: 1024   ops/sec: 301.2   bytes/sec: 301 MiB/s".
  const match = /elapsed:\s*[\d.]+\s+ops:\s*\d+\s+ops\/sec:\s*([\d.]+)/.exec(out);
  if (match === null) throw new Error(`rbd bench printed no summary:\n${out}`);
  const ops = Number(match[1]);
  return job.unit === "IOPS" ? ops : job.bs === "1m" ? ops : (ops * 4096) / MiB;
}

async function main(): Promise<void> {
  checkTools();
  const run = new Run("/tmp", "dstd-rbdb-");
  const clusterDir = run.path("c");
  const results = new Map<string, Map<string, number[]>>();
  const cpu = new Map<string, Map<string, number[]>>();
  const add = (into: Map<string, Map<string, number[]>>, job: string, peer: string, value: number) => {
    const row = into.get(job) ?? new Map<string, number[]>();
    row.set(peer, [...(row.get(peer) ?? []), value]);
    into.set(job, row);
  };
  try {
    console.log(`starting a single-node Ceph cluster in ${clusterDir}`);
    await timed(run, [SCRIPT, "start", clusterDir, String(Math.max(2 * sizeMiB, 1024) * MiB + 512 * MiB)], 180);
    const conf = join(clusterDir, "ceph.conf");
    await timed(run, ["rbd", "-c", conf, "create", "rbd/bench", "--size", `${sizeMiB}M`], 60);
    // Fill the image once so that reads find data in every object.
    console.log(`filling the ${sizeMiB} MiB image (rbd bench, 4 MiB writes)`);
    await timed(run, ["rbd", "-c", conf, "bench", "--io-type", "write", "--io-size", "4M", "--io-threads", "8", "--io-total", `${sizeMiB}M`, "--io-pattern", "seq", "rbd/bench"], 600);
    for (const job of jobs) {
      for (let round = 0; round < rounds; round++) {
        // Rotate who goes first (with three servers each is first once in three rounds): the
        // first server after the fill or after `rbd bench` measured markedly slower whoever it
        // was. Each server is warmed up with the same job before it is measured: a fresh
        // process's first 256 MiB of 1 MiB writes cost dstd and qemu-nbd alike about 2.5×
        // the CPU of the next ones (librbd's connections and exclusive lock, dstd's JIT,
        // fresh memory), which a 5 s run would otherwise count as the server's cost.
        const first = round % PEERS.length;
        for (const peer of [...PEERS.slice(first), ...PEERS.slice(0, first)]) {
          const port = run.freePort();
          const server = await run.server(peer.name, peer.command(conf, port), { tcp: port });
          if (warmup > 0) await fio(run, `nbd://127.0.0.1:${port}/disk`, job, warmup, sizeMiB);
          const before = cpuSeconds(server.proc.pid);
          const value = await fio(run, `nbd://127.0.0.1:${port}/disk`, job, runtime, sizeMiB);
          const used = cpuSeconds(server.proc.pid) - before;
          await stop(server.proc);
          add(results, job.name, peer.name, value);
          // CPU per unit of work, so that a server that moved more is not charged for it:
          // seconds per GiB, or microseconds per operation.
          add(cpu, job.name, peer.name, job.unit === "IOPS" ? (used * 1e6) / (value * runtime) : (used * 1024) / (value * runtime));
          console.log(`  ${job.name.padEnd(22)} ${peer.name.padEnd(9)} ${value.toFixed(0)} ${job.unit}, CPU ${used.toFixed(2)} s`);
        }
        const ceiling = await rbdBench(run, conf, job);
        add(results, job.name, "rbd bench", ceiling);
        console.log(`  ${job.name.padEnd(22)} ${"rbd bench".padEnd(9)} ${ceiling.toFixed(0)} ${job.unit}`);
      }
    }
  } finally {
    await timed(run, [SCRIPT, "stop", clusterDir], 120).catch((error) => console.error(`stopping the cluster: ${(error as Error).message}`));
    await run.cleanup();
  }
  const rows = jobs.map((job) => {
    const r = results.get(job.name)!;
    const m = (peer: string) => median(r.get(peer) ?? []);
    const c = (peer: string) => median(cpu.get(job.name)?.get(peer) ?? []);
    return [
      `${job.name} (${job.unit})`,
      m("dstd").toFixed(0),
      m("qemu-nbd").toFixed(0),
      m("rbd bench").toFixed(0),
      `${(m("dstd") / m("qemu-nbd")).toFixed(2)}×`,
      // Same-round pairs: both servers saw about the same load from the rest of the machine.
      `${median((r.get("dstd") ?? []).map((v, i) => v / (r.get("qemu-nbd") ?? [])[i]!)).toFixed(2)}×`,
      `${(m("dstd") / m("rbd bench")).toFixed(2)}×`,
      `${c("dstd").toFixed(job.unit === "IOPS" ? 0 : 2)} / ${c("qemu-nbd").toFixed(job.unit === "IOPS" ? 0 : 2)}`,
      ...(baselineBin ? [m("before").toFixed(0), `${median((r.get("dstd") ?? []).map((v, i) => v / (r.get("before") ?? [])[i]!)).toFixed(2)}×`, c("before").toFixed(job.unit === "IOPS" ? 0 : 2)] : []),
    ];
  });
  console.log();
  const beforeColumns = baselineBin ? ["before", "dstd/before (round ratios)", "CPU before"] : [];
  console.log(table(["workload", "dstd", "qemu-nbd", "rbd bench", "dstd/qemu-nbd", "median of round ratios", "dstd/rbd bench", "CPU dstd / qemu-nbd", ...beforeColumns], rows, new Set([1, 2, 3, 4, 5, 6, 7, 8, 9])));
  if (baselineBin) console.log(`before: ${baselineBin}`);
  console.log();
  console.log(`${runtime} s per fio run (--ioengine=nbd) after ${warmup} s of warm-up, ${rounds} round(s), median; ${sizeMiB} MiB image on a memstore OSD; rbd bench: same size, pattern and depth`);
  console.log("CPU: the server process's, per GiB moved (MiB/s rows, seconds) or per operation (IOPS rows, microseconds); median over rounds");
}

await main();
