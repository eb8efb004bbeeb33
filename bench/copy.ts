/**
 * `bun run bench` — throughput of the DST data path on loopback against a memory export
 * served by the compiled binary, for each channel suite:
 *   - sequential 1 MiB writes and reads, 32 in flight;
 *   - random 4 KiB writes and reads, 32 in flight.
 * "none" is an anonymous loopback session (no protection); the others authenticate with a
 * generated key. The ratio column compares each suite with "none" from the same run (the
 * issue's target: aes-256-gcm ≥ 0.8×). Also `dstd copy` file → export end to end.
 * Numbers vary a lot on a shared 2-core machine: compare rows of one run, not runs.
 * Env: BENCH_MIB (sequential volume, default 256), BENCH_SECONDS (random phases, default 3),
 *      BENCH_SUITES (comma list, default all).
 */
import { mkdtempSync, rmSync, writeFileSync, openSync, writeSync, closeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { generateKeyFile, parseKeyFile, type KeyMaterial } from "../src/crypto/keys.ts";
import type { SuiteName } from "../src/crypto/suites.ts";
import { DstClient } from "../src/client/dst-client.ts";
import { runDstd, startExport } from "../test/helpers/binary.ts";

const MiB = 1024 * 1024;
const mib = Number(process.env.BENCH_MIB ?? 256);
const seconds = Number(process.env.BENCH_SECONDS ?? 3);
const suites = (process.env.BENCH_SUITES ?? "none,aes-256-gcm,integrity,chacha20-poly1305").split(",");
const dir = mkdtempSync(join(tmpdir(), "dstd-bench-"));
const quiet = { info() {}, warn() {}, debug() {} };

const keyText = generateKeyFile("bench");
const keyPath = join(dir, "bench.key");
writeFileSync(keyPath, keyText, { mode: 0o600 });
const key = parseKeyFile(keyText, keyPath) as KeyMaterial;
const configPath = join(dir, "export.toml");
writeFileSync(
  configPath,
  `[[key]]\nidentity = "bench"\nfile = "${keyPath}"\n\n[[export]]\nname = "disk"\nmemory = "1GiB"\n` +
    `listen = ["127.0.0.1:0"]\nallow = ["bench@127.0.0.1/32:rw", "127.0.0.1/32:rw"]\n` +
    `suites = ["aes-256-gcm", "chacha20-poly1305", "xchacha20-poly1305", "integrity"]\n`,
);

async function connect(port: number, suite: string): Promise<DstClient> {
  return DstClient.open({
    address: { transport: "tcp", host: "127.0.0.1", port },
    exportName: "disk",
    log: quiet,
    inflight: 32,
    auth: suite === "none" ? null : { key, suites: [suite as SuiteName] },
  });
}

async function sequential(client: DstClient, kind: "read" | "write"): Promise<number> {
  const data = new Uint8Array(MiB);
  crypto.getRandomValues(data.subarray(0, 65536));
  const count = mib;
  let next = 0;
  const start = performance.now();
  const worker = async () => {
    while (next < count) {
      const offset = (next++ % 1024) * MiB;
      if (kind === "read") await client.read(offset, MiB);
      else await client.write(offset, data);
    }
  };
  await Promise.all(Array.from({ length: 32 }, worker));
  return count / ((performance.now() - start) / 1000);
}

async function random(client: DstClient, kind: "read" | "write"): Promise<number> {
  const blocks = client.size / 4096;
  const data = new Uint8Array(4096).fill(0x42);
  let ops = 0;
  let state = 12345;
  const until = performance.now() + seconds * 1000;
  const worker = async () => {
    while (performance.now() < until) {
      state = (Math.imul(state, 1103515245) + 12345) >>> 0;
      const offset = (state % blocks) * 4096;
      if (kind === "read") await client.read(offset, 4096);
      else await client.write(offset, data);
      ops++;
    }
  };
  await Promise.all(Array.from({ length: 32 }, worker));
  return ops / seconds;
}

function makeSource(path: string, sizeMiB = mib): void {
  const fd = openSync(path, "w");
  const block = new Uint8Array(MiB);
  crypto.getRandomValues(block.subarray(0, 65536));
  for (let off = 65536; off < MiB; off += 65536) block.copyWithin(off, 0, 65536);
  for (let i = 0; i < sizeMiB; i++) {
    block[0] = i & 0xff;
    block[1] = 1;
    writeSync(fd, block, 0, MiB, i * MiB);
  }
  closeSync(fd);
}

const exp = await startExport(["--config", configPath]);
try {
  // Warm-up: touch the whole memory disk once so no suite pays the first-touch allocation.
  const warm = await connect(exp.port, "none");
  const fill = new Uint8Array(MiB).fill(1);
  for (let i = 0; i < 1024; i += 32) {
    await Promise.all(Array.from({ length: 32 }, (_, j) => warm.write((i + j) * MiB, fill)));
  }
  await warm.close();
  // Two interleaved rounds; keep each suite's best (the machine is shared and noisy).
  const results: Record<string, number[]> = {};
  for (let round = 0; round < 2; round++) {
    for (const suite of suites) {
      const client = await connect(exp.port, suite);
      const row = [
        await sequential(client, "write"),
        await sequential(client, "read"),
        await random(client, "write"),
        await random(client, "read"),
      ];
      await client.close();
      results[suite] = row.map((v, i) => Math.max(v, results[suite]?.[i] ?? 0));
    }
  }
  const source = join(dir, "source.img");
  makeSource(source);
  const small = join(dir, "small.img");
  // `dstd copy` file → export per suite (the issue's measure): 1 MiB chunks and 4 KiB chunks,
  // 32 in flight; interleaved rounds, best of 2.
  const copyRates: Record<string, number[]> = {};
  const smallMiB = Math.min(mib, 32);
  makeSource(small, smallMiB);
  for (let round = 0; round < 2; round++) {
    for (const suite of suites) {
      const config = join(dir, `client-${suite}.toml`);
      writeFileSync(config, suite === "none" ? "" : `[client]\nkey_file = "${keyPath}"\nsuites = ["${suite}"]\n`);
      const row: number[] = [];
      for (const [chunk, volume, file] of [["1MiB", mib, source], ["4KiB", smallMiB, small]] as const) {
        const start = performance.now();
        const copied = await runDstd(["copy", file, `dst://127.0.0.1:${exp.port}/disk`, "--config", config, "--chunk", chunk, "--inflight", "32"]);
        if (copied.exitCode !== 0) throw new Error(copied.stderr);
        row.push(volume / ((performance.now() - start) / 1000));
      }
      copyRates[suite] = row.map((v, i) => Math.max(v, copyRates[suite]?.[i] ?? 0));
    }
  }
  const copyRate = copyRates.none?.[0] ?? 0;
  const rss = (await Bun.file(`/proc/${exp.process.pid}/status`).text()).match(/VmHWM:\s+(\d+) kB/)?.[1];

  const base = results.none ?? results[suites[0]!]!;
  const columns = ["seq write MiB/s", "seq read MiB/s", "rand 4K write IOPS", "rand 4K read IOPS"];
  console.log(`\ndstd DST data path, loopback, memory export, QD32 (${mib} MiB sequential, ${seconds} s random; best of 2)\n`);
  console.log(`  ${"suite".padEnd(20)}${columns.map((c) => c.padStart(22)).join("")}`);
  for (const [suite, row] of Object.entries(results)) {
    const cells = row.map((v, i) => `${v.toFixed(0)} (${(v / base[i]!).toFixed(2)}×)`.padStart(22));
    console.log(`  ${suite.padEnd(20)}${cells.join("")}`);
  }
  const copyBase = copyRates.none ?? copyRates[suites[0]!]!;
  console.log(`\n  dstd copy file → export, QD32 (MiB/s; ratio to none)\n`);
  console.log(`  ${"suite".padEnd(20)}${["1 MiB chunks", "4 KiB chunks"].map((c) => c.padStart(22)).join("")}`);
  for (const [suite, row] of Object.entries(copyRates)) {
    console.log(`  ${suite.padEnd(20)}${row.map((v, i) => `${v.toFixed(0)} (${(v / copyBase[i]!).toFixed(2)}×)`.padStart(22)).join("")}`);
  }
  void copyRate;
  console.log(`  export peak RSS: ${(Number(rss) / 1024).toFixed(0)} MiB (the 1 GiB memory disk is part of it)`);
} finally {
  await exp.stop();
  rmSync(dir, { recursive: true, force: true });
}
