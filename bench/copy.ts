/**
 * `bun run bench` — throughput of the DST data path on loopback against a memory export
 * served by the compiled binary:
 *   - `dstd copy` sequential, 1 MiB requests, 32 in flight, file → export and export → file;
 *   - random 4 KiB reads and writes, 32 in flight (DstClient in this process).
 * Numbers vary a lot on a shared 2-core machine: compare rows of one run, not runs.
 * Env: BENCH_MIB (default 512), BENCH_SECONDS (random phase, default 5).
 */
import { mkdtempSync, rmSync, openSync, writeSync, closeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DstClient } from "../src/daemon/dst-client.ts";
import { runDstd, startExport } from "../test/helpers/binary.ts";

const MiB = 1024 * 1024;
const mib = Number(process.env.BENCH_MIB ?? 512);
const seconds = Number(process.env.BENCH_SECONDS ?? 5);
const dir = mkdtempSync(join(tmpdir(), "dstd-bench-"));
const quiet = { info() {}, warn() {}, debug() {} };

function makeRandomFile(path: string, size: number): void {
  const fd = openSync(path, "w");
  const block = new Uint8Array(MiB);
  for (let off = 0; off < MiB; off += 65536) crypto.getRandomValues(block.subarray(off, off + 65536));
  for (let i = 0; i < size / MiB; i++) {
    block[0] = i & 0xff; // keep blocks distinct without regenerating
    block[1] = 1;
    writeSync(fd, block, 0, MiB, i * MiB);
  }
  closeSync(fd);
}

async function timed(fn: () => Promise<void>): Promise<number> {
  const start = performance.now();
  await fn();
  return (performance.now() - start) / 1000;
}

async function randomIo(port: number, kind: "read" | "write"): Promise<number> {
  const client = await DstClient.open({
    address: { transport: "tcp", host: "127.0.0.1", port },
    exportName: "disk",
    log: quiet,
  });
  const blocks = client.size / 4096;
  const data = new Uint8Array(4096).fill(0x42);
  let ops = 0;
  const until = performance.now() + seconds * 1000;
  let state = 12345;
  const nextBlock = () => {
    state = (Math.imul(state, 1103515245) + 12345) >>> 0;
    return state % blocks;
  };
  const worker = async () => {
    while (performance.now() < until) {
      const offset = nextBlock() * 4096;
      if (kind === "read") await client.read(offset, 4096);
      else await client.write(offset, data);
      ops++;
    }
  };
  await Promise.all(Array.from({ length: 32 }, worker));
  await client.close();
  return ops / seconds;
}

const exp = await startExport(["--memory", "1GiB", "--allow", "127.0.0.1/32:rw"]);
try {
  const source = join(dir, "source.img");
  makeRandomFile(source, mib * MiB);
  const url = `dst://127.0.0.1:${exp.port}/disk`;
  const upSeconds = await timed(async () => {
    const r = await runDstd(["copy", source, url, "--inflight", "32", "--chunk", "1MiB"]);
    if (r.exitCode !== 0) throw new Error(r.stderr);
  });
  const downSeconds = await timed(async () => {
    const r = await runDstd(["copy", url, join(dir, "back.img"), "--inflight", "32", "--chunk", "1MiB"]);
    if (r.exitCode !== 0) throw new Error(r.stderr);
  });
  const writeIops = await randomIo(exp.port, "write");
  const readIops = await randomIo(exp.port, "read");
  const rss = (await Bun.file(`/proc/${exp.process.pid}/status`).text()).match(/VmHWM:\s+(\d+) kB/)?.[1];
  const rows = [
    ["dstd copy file → export, 1 MiB, QD32", `${((mib) / upSeconds).toFixed(0)} MiB/s`],
    ["dstd copy export → file, 1 MiB, QD32", `${(1024 / downSeconds).toFixed(0)} MiB/s (1 GiB export)`],
    ["random 4 KiB write, QD32", `${writeIops.toFixed(0)} IOPS`],
    ["random 4 KiB read, QD32", `${readIops.toFixed(0)} IOPS`],
    ["export peak RSS", `${(Number(rss) / 1024).toFixed(0)} MiB`],
  ];
  const width = Math.max(...rows.map((r) => r[0]!.length));
  console.log(`\ndstd DST data path on loopback (memory export, ${mib} MiB source)\n`);
  for (const [name, value] of rows) console.log(`  ${name!.padEnd(width)}  ${value}`);
} finally {
  await exp.stop();
  rmSync(dir, { recursive: true, force: true });
}
