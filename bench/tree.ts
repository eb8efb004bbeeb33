/**
 * `bun run bench:tree` — what a tree node (docs/tree.md) costs and gains, on loopback, in one
 * run. Every leg is a `dstd export --file` (compiled binary) on its own process; the client
 * is a DstClient in this process, sequential 1 MiB requests, 32 in flight:
 *   - direct:  client → leg                                   (the baseline, 1.00×)
 *   - hop:     client → tree node (--linear of one leg) → leg  (what one hop costs)
 *   - stripe:  client → tree node (--stripe of two legs, 512 KiB chunks) → 2 legs
 *   - mirror:  client → tree node (--mirror of two legs, --assume-clean) → 2 legs
 * Ratios are against "direct" measured in the same run (targets, issue 12: stripe ≥ 1.5×,
 * mirror write ≥ 0.9×, mirror read ≥ 1.0×). For each row the CPU seconds per GiB moved of
 * the tree node, of the legs (summed) and of this client process are printed too (utime +
 * stime from /proc), which says where the time goes when the two cores are the limit.
 * Each row runs one client, which first writes the range once unmeasured (warm-up: the legs'
 * files, the client's and the tree node's buffer pools, up to the replay bounds, are then in
 * memory).
 * Numbers vary a lot on a shared 2-core machine: compare rows of one run, not runs.
 * Env: BENCH_MIB (volume per phase, default 256), BENCH_ROUNDS (interleaved rounds, best
 *      kept, default 2), BENCH_PROFILE=DIR (run the tree nodes from source under
 *      `bun --cpu-prof`, profiles written to DIR), BENCH_DIR (where leg files go, default
 *      /dev/shm when present: the legs' storage must not be the limit), BENCH_ONLY (comma
 *      list of hop, stripe, mirror: only those rows, with direct), BENCH_BEFORE_BIN=PATH (each
 *      tree row again with its tree node from that build: before/after in one run).
 */
import { type Subprocess, spawn } from "bun";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DstClient } from "../src/client/dst-client.ts";
import { ensureBinary } from "../test/helpers/binary.ts";

const MiB = 1024 * 1024;
const mib = Number(process.env.BENCH_MIB ?? 256);
const rounds = Math.max(1, Number(process.env.BENCH_ROUNDS ?? 2));
const profileDir = process.env.BENCH_PROFILE ?? null;
/** Another build of dstd (e.g. an older commit's dist/dstd): adds a hop row with the tree node from it. */
const before = process.env.BENCH_BEFORE_BIN ?? null;
const parent = process.env.BENCH_DIR ?? (existsSync("/dev/shm") ? "/dev/shm" : tmpdir());
const dir = mkdtempSync(join(parent, "dstd-bench-tree-"));
const legBytes = Math.max(2 * mib, 512) * MiB;
const quiet = { info() {}, warn() {}, debug() {} };
const TICK = 100; // USER_HZ: /proc/PID/stat counts CPU time in 1/100 s

interface Node {
  name: string;
  proc: Subprocess<"ignore", "pipe", "pipe">;
  port: number;
  log: () => string;
}
const nodes: Node[] = [];

/** Start `dstd export ARGS` (the compiled binary, or the source under --cpu-prof) and wait for its port. */
async function start(name: string, args: string[], profiled = false, binary: string | null = null): Promise<Node> {
  const cmd = profiled && profileDir !== null
    ? [process.execPath, "--cpu-prof", `--cpu-prof-dir=${profileDir}`, `--cpu-prof-name=${name.replace(/\W+/g, "-")}.cpuprofile`, join(import.meta.dir, "..", "src", "main.ts")]
    : [binary ?? ensureBinary()];
  const proc = spawn([...cmd, "export", "--listen", "127.0.0.1:0", "--allow", "127.0.0.1/32:rw", ...args], { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  let text = "";
  const reader = proc.stderr.getReader();
  const decoder = new TextDecoder();
  const port = await new Promise<number>((resolve, reject) => {
    void (async () => {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return reject(new Error(`${name} exited before listening:\n${text}`));
        text += decoder.decode(value);
        const match = /listening for DST on 127\.0\.0\.1:(\d+)/.exec(text);
        if (match) resolve(Number(match[1]));
      }
    })();
  });
  const node = { name, proc, port, log: () => text };
  nodes.push(node);
  return node;
}

async function stop(node: Node): Promise<void> {
  node.proc.kill("SIGTERM");
  await node.proc.exited;
  nodes.splice(nodes.indexOf(node), 1);
}

function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  return (Number(fields[11]) + Number(fields[12])) / TICK;
}
const selfCpu = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};

async function connect(port: number): Promise<DstClient> {
  return DstClient.open({ address: { transport: "tcp", host: "127.0.0.1", port }, exportName: "disk", log: quiet, inflight: 32 });
}

/** Random content, written by every request and never modified (so handing it over to the engine is safe). */
const pattern = new Uint8Array(MiB);
for (let off = 0; off < MiB; off += 65536) crypto.getRandomValues(pattern.subarray(off, off + 65536));

interface Phase {
  mibs: number;
  /** CPU seconds per GiB: tree node, legs, client. */
  node: number;
  legs: number;
  client: number;
}

async function sequential(client: DstClient, kind: "read" | "write", tree: Node | null, legs: Node[]): Promise<Phase> {
  {
    const span = Math.min(client.size, legBytes) / MiB - 1;
    let next = 0;
    // The client's own costs kept low (it shares the two cores): writes hand the engine a
    // reserved buffer (no copy), reads land in one buffer per worker.
    const payload = client.reserveWrite(MiB);
    payload.set(pattern);
    const before = { node: tree ? cpuSeconds(tree.proc.pid) : 0, legs: legs.reduce((a, l) => a + cpuSeconds(l.proc.pid), 0), client: selfCpu() };
    const began = performance.now();
    const worker = async () => {
      const into = new Uint8Array(MiB);
      while (next < mib) {
        const offset = (next++ % span) * MiB;
        if (kind === "read") await client.readInto(offset, into);
        else await client.write(offset, payload);
      }
    };
    await Promise.all(Array.from({ length: 32 }, worker));
    if (kind === "write") await client.flush();
    const seconds = (performance.now() - began) / 1000;
    const gib = mib / 1024;
    return {
      mibs: mib / seconds,
      node: tree ? (cpuSeconds(tree.proc.pid) - before.node) / gib : 0,
      legs: (legs.reduce((a, l) => a + cpuSeconds(l.proc.pid), 0) - before.legs) / gib,
      client: (selfCpu() - before.client) / gib,
    };
  }
}

type Row = { label: string; write: Phase; read: Phase };

async function measure(label: string, legs: Node[], tree: string[] | null, binary: string | null = null): Promise<Row> {
  const node = tree === null ? null : await start(label, tree, binary === null, binary);
  try {
    // One client for the row: its engine's write-copy pool, filled by the warm-up, is warm
    // when measured (a client per phase made every measured write copy into fresh memory,
    // ~4–5 s of client CPU per GiB, which depressed the direct row most).
    const client = await connect(node?.port ?? legs[0]!.port);
    try {
      // Warm-up (not measured): the same writes once, so the legs' files and every buffer
      // pool on the path are in memory already — long-running processes' steady state.
      await sequential(client, "write", node, legs);
      const write = await sequential(client, "write", node, legs);
      const read = await sequential(client, "read", node, legs);
      return { label, write, read };
    } finally {
      await client.close();
    }
  } finally {
    if (node !== null) await stop(node);
  }
}

const url = (leg: Node) => `dst://127.0.0.1:${leg.port}/disk`;

try {
  const legs: Node[] = [];
  for (let i = 0; i < 4; i++) legs.push(await start(`leg${i}`, ["--file", join(dir, `leg${i}.img`), "--size", `${legBytes}`]));
  const [a, b, c, d] = legs as [Node, Node, Node, Node];
  const best = new Map<string, Row>();
  const keep = (row: Row) => {
    const old = best.get(row.label);
    if (old === undefined) return void best.set(row.label, row);
    if (row.write.mibs > old.write.mibs) old.write = row.write;
    if (row.read.mibs > old.read.mibs) old.read = row.read;
  };
  const only = process.env.BENCH_ONLY?.split(",") ?? null; // e.g. "hop" when profiling
  const configs: [string, string, Node[], string[] | null, string | null][] = [
    ["direct", "direct (one leg)", [a], null, null],
    ["hop", "hop (tree node, linear of one leg)", [a], ["--linear", url(a)], null],
    ["stripe", "stripe of two legs", [a, b], ["--stripe", url(a), "--stripe", url(b)], null],
    ["mirror", "mirror of two legs", [c, d], ["--mirror", url(c), "--mirror", url(d), "--assume-clean"], null],
  ];
  // Before/after in one run: each tree row again with its node from the other build.
  if (before !== null) for (const [key, label, on, tree] of [...configs]) if (tree !== null) configs.push([key, `${label}, node from BENCH_BEFORE_BIN`, on, tree, before]);
  for (let round = 0; round < rounds; round++) {
    for (const [key, label, on, tree, binary] of configs) if (only === null || key === "direct" || only.includes(key)) keep(await measure(label, on, tree, binary));
  }
  const base = best.get("direct (one leg)")!;
  console.log(`\ndstd tree node, loopback, legs = dstd export --file on ${parent}; seq 1 MiB QD32, ${mib} MiB per phase, best of ${rounds}`);
  console.log(`CPU s/GiB: tree node / legs (sum) / client (this process)\n`);
  console.log(`| configuration | write MiB/s | × direct | read MiB/s | × direct | write CPU s/GiB | read CPU s/GiB |`);
  console.log(`| --- | ---: | ---: | ---: | ---: | --- | --- |`);
  const cpu = (p: Phase) => `${p.node.toFixed(1)} / ${p.legs.toFixed(1)} / ${p.client.toFixed(1)}`;
  for (const row of best.values()) {
    console.log(`| ${row.label} | ${row.write.mibs.toFixed(0)} | ${(row.write.mibs / base.write.mibs).toFixed(2)} | ${row.read.mibs.toFixed(0)} | ${(row.read.mibs / base.read.mibs).toFixed(2)} | ${cpu(row.write)} | ${cpu(row.read)} |`);
  }
  const hop = best.get("hop (tree node, linear of one leg)");
  const stripe = best.get("stripe of two legs");
  const mirror = best.get("mirror of two legs");
  if (hop && stripe && mirror) console.log(`\ntargets (issue 12): stripe write ${(stripe.write.mibs / base.write.mibs).toFixed(2)}× / read ${(stripe.read.mibs / base.read.mibs).toFixed(2)}× (≥ 1.5×); mirror write ${(mirror.write.mibs / base.write.mibs).toFixed(2)}× (≥ 0.9×), read ${(mirror.read.mibs / base.read.mibs).toFixed(2)}× (≥ 1.0×)`);
  if (hop && stripe && mirror) console.log(`against the single hop: stripe ${(stripe.write.mibs / hop.write.mibs).toFixed(2)}× / ${(stripe.read.mibs / hop.read.mibs).toFixed(2)}×, mirror ${(mirror.write.mibs / hop.write.mibs).toFixed(2)}× / ${(mirror.read.mibs / hop.read.mibs).toFixed(2)}× (write / read)`);
  if (profileDir !== null) console.log(`CPU profiles of the tree nodes: ${profileDir}`);
} finally {
  for (const node of [...nodes]) await stop(node).catch(() => undefined);
  rmSync(dir, { recursive: true, force: true });
}
