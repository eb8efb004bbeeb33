/**
 * @module bench/copy-crypto-threads — `bun run bench:crypto-threads`: `dstd copy` of a 1 GiB
 * file into `dstd export --file` over an AES-256-GCM session, with `--crypto-threads` 0, 1 and
 * 2 on both sides (transport/crypto-pool.ts), interleaved rounds in one run. Printed per row:
 * wall seconds of the copy (process start to exit), MiB/s, and the CPU seconds (all threads)
 * of the copy and of the export over that copy. Compare rows of one run, never runs: the
 * machine is shared.
 *
 *   bun bench/copy-crypto-threads.ts          # 1024 MiB, 2 rounds
 *   BENCH_MIB=256 BENCH_ROUNDS=3 bun bench/copy-crypto-threads.ts
 */
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, truncateSync, writeFileSync, writeSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { generateKeyFile } from "../src/crypto/keys.ts";
import { ensureBinary, startExport } from "../test/helpers/binary.ts";

const MiB = 1024 * 1024;
const mib = Number(process.env.BENCH_MIB ?? 1024);
const rounds = Number(process.env.BENCH_ROUNDS ?? 2);
const threadsList = (process.env.BENCH_THREADS ?? "0,1,2").split(",").map(Number);
const dir = mkdtempSync(join(tmpdir(), "dstd-bench-crypto-threads-"));
const binary = ensureBinary();

const keyPath = join(dir, "bench.key");
writeFileSync(keyPath, generateKeyFile("bench"), { mode: 0o600 });
const clientConfig = join(dir, "client.toml");
writeFileSync(clientConfig, `[client]\nkey_file = "${keyPath}"\nsuites = ["aes-256-gcm"]\n`);
const disk = join(dir, "disk.img");
const exportConfig = join(dir, "export.toml");
writeFileSync(
  exportConfig,
  `[[key]]\nidentity = "bench"\nfile = "${keyPath}"\n\n[[export]]\nname = "disk"\nfile = "${disk}"\nallow = ["bench@127.0.0.1/32:rw"]\nsuites = ["aes-256-gcm"]\n`,
);

// Source: incompressible-looking data (a random 64 KiB pattern varied per MiB).
const source = join(dir, "source.img");
{
  const fd = openSync(source, "w");
  const block = new Uint8Array(MiB);
  crypto.getRandomValues(block.subarray(0, 65536));
  for (let off = 65536; off < MiB; off += 65536) block.copyWithin(off, 0, 65536);
  for (let i = 0; i < mib; i++) {
    block[0] = i & 0xff;
    block[1] = i >> 8;
    writeSync(fd, block, 0, MiB, i * MiB);
  }
  closeSync(fd);
}

/** utime + stime of a process, all its threads (/proc/PID/stat, clock ticks of 10 ms). */
function cpuOf(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

interface Row {
  threads: number;
  wall: number;
  copyCpu: number;
  exportCpu: number;
}
const rows: Row[] = [];
try {
  for (let round = 0; round < rounds; round++) {
    for (const threads of threadsList) {
      writeFileSync(disk, new Uint8Array(0));
      truncateSync(disk, mib * MiB);
      const exp = await startExport(["--config", exportConfig, "--crypto-threads", String(threads), "--log-level", "info"]);
      try {
        const exportBefore = cpuOf(exp.process.pid);
        const start = performance.now();
        const child = Bun.spawn([binary, "copy", source, `dst://127.0.0.1:${exp.port}/disk`, "--config", clientConfig, "--crypto-threads", String(threads)], {
          stdout: "ignore",
          stderr: "pipe",
        });
        const stderr = await new Response(child.stderr).text();
        const code = await child.exited;
        const wall = (performance.now() - start) / 1000;
        if (code !== 0) throw new Error(`copy failed (${code}): ${stderr}`);
        const usage = child.resourceUsage();
        const copyCpu = usage === undefined ? Number.NaN : Number(usage.cpuTime.user + usage.cpuTime.system) / 1e6;
        rows.push({ threads, wall, copyCpu, exportCpu: cpuOf(exp.process.pid) - exportBefore });
      } finally {
        await exp.stop();
      }
    }
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}

console.log(`\ndstd copy ${mib} MiB → dstd export --file, aes-256-gcm, --crypto-threads on both sides; ${rounds} interleaved rounds; load average ${loadavg()[0]!.toFixed(1)} at the end\n`);
console.log("| crypto threads | copy wall s | MiB/s | copy CPU s | export CPU s | wall vs 0 |");
console.log("|--:|--:|--:|--:|--:|--:|");
const best0 = Math.min(...rows.filter((r) => r.threads === 0).map((r) => r.wall));
for (const threads of threadsList) {
  const mine = rows.filter((r) => r.threads === threads);
  const walls = mine.map((r) => r.wall);
  const range = (values: number[]) => `${Math.min(...values).toFixed(2)}–${Math.max(...values).toFixed(2)}`;
  const best = Math.min(...walls);
  console.log(
    `| ${threads} | ${range(walls)} | ${(mib / best).toFixed(0)} | ${range(mine.map((r) => r.copyCpu))} | ${range(mine.map((r) => r.exportCpu))} | ${(best0 / best).toFixed(2)}× |`,
  );
}
