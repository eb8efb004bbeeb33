/**
 * @module bench/peers — issue 10's targets in one run (`npm run bench:peers`): dstd against
 * the standard NBD tools doing the same job on the same data, same sizes, same run,
 * interleaved round by round, medians reported; prints ONE table with dstd's value, the
 * peer's, the ratio, the target and pass/fail.
 *
 *   copy    `dstd copy FILE dst://…` into `dstd export --file` (no keys; aes-256-gcm with a
 *           `dstd keygen` key on both sides) vs `nbdcopy --flush FILE nbd://…` into
 *           `nbdkit file` (plain; TLS-PSK with nbdkit --tls=require). Peak RSS of each copy.
 *   attach  fio (nbd engine) → `dstd attach dst://… --nbd-listen unix:SOCK` → DST over TCP →
 *           `dstd export --file`, vs fio → `nbdkit -U SOCK nbd` (relay) → TCP → `nbdkit file`;
 *           no keys, and aes-256-gcm vs TLS-PSK on the inner hop.
 *   direct  fio → `dstd export --nbd-listen` vs fio → `nbdkit file`.
 *   and the export's peak RSS (VmHWM, reset between sections) under each of them.
 *
 * Every tool runs with its defaults (dstd copy: 32 × 1 MiB in flight; nbdcopy: its own
 * connections/requests); the only option added is `nbdcopy --flush`, because `dstd copy`
 * always ends with a FLUSH (fdatasync on the export) and the two must promise the same.
 * Sources and targets are written once with incompressible, zero-free data, fdatasync'ed,
 * then read so that they sit in page cache (warm) for every run.
 *
 * Options and environment:
 *   --baseline COMMIT | BENCH_BASELINE=COMMIT   build dstd at COMMIT (git archive + bun build.ts,
 *                                               into the run's temp dir) and add "before" columns
 *   BASELINE_BIN=PATH                           use this binary as "before" instead
 *   DSTD_BIN=PATH                               the "dstd" binary (default: dist/dstd, rebuilt if stale)
 *   BENCH_SIZE=MiB (1024)   source/target/export size;  BENCH_RUNTIME=s (5) per fio run
 *   BENCH_ROUNDS=N (3)      rounds, medians reported;   BENCH_ONLY=copy,attach,direct
 *   BENCH_DIR=DIR (tmpdir)  where the run's temp directory goes (removed at the end)
 *   BENCH_COPY_TIMEOUT=s (600) a copy that takes longer is killed and reported as an error
 * Missing peers skip their section, naming the Debian package. Every process and file the
 * run makes is removed at the end, on failure, and on Ctrl-C/SIGTERM (bench/harness.ts).
 */
import { cpus, loadavg, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { mkdirSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { ensureBinary } from "../test/helpers/binary.ts";
import {
  cpuSeconds, FIO_JOBS, fio, median, missingTool, MiB, resetHwm, Run, sameContent, Stopping, stop, table, timed, vmHwm, warm, writePattern,
  type FioJob, type Server,
} from "./harness.ts";

const root = resolve(import.meta.dir, "..");
const runtime = Number(process.env.BENCH_RUNTIME ?? 5);
const sizeMiB = Number(process.env.BENCH_SIZE ?? 1024);
const rounds = Math.max(1, Number(process.env.BENCH_ROUNDS ?? 3));
const only = new Set((process.env.BENCH_ONLY ?? "copy,attach,direct").split(",").map((s) => s.trim()).filter(Boolean));
const argv = process.argv.slice(2);
const baselineArg = argv.includes("--baseline") ? argv[argv.indexOf("--baseline") + 1] : undefined;
const baselineCommit = baselineArg ?? process.env.BENCH_BASELINE;
const sizeText = sizeMiB % 1024 === 0 ? `${sizeMiB / 1024} GiB` : `${sizeMiB} MiB`;
const IDENTITY = "bench";
/** Longest a single copy may take before it counts as a failure (a hung client must not hang the run). */
const copyTimeout = Number(process.env.BENCH_COPY_TIMEOUT ?? 600);

/** One dstd build under test: "dstd" (this tree) or "before" (the baseline). */
interface Dstd {
  label: "dstd" | "before";
  bin: string;
  help: Map<string, Set<string>>;
  key: string | null;
  target: string;
  dstPort: number;
  nbdPort: number;
  export: Server | null;
  env: Record<string, string>;
}

/** Samples per key, e.g. "copy/plain/dstd"; notes explain why a key has none. */
const samples = new Map<string, number[]>();
const notes = new Map<string, string>();
const record = (key: string, value: number) => samples.set(key, [...(samples.get(key) ?? []), value]);
const note = (key: string, text: string) => {
  if (!notes.has(key)) notes.set(key, text);
};
const value = (key: string) => median(samples.get(key) ?? []);

function supports(d: Dstd, command: string, flag: string): boolean {
  let flags = d.help.get(command);
  if (!flags) {
    const out = Bun.spawnSync([d.bin, command, "--help"], { stdout: "pipe", stderr: "pipe" });
    const text = (out.stdout.toString() + out.stderr.toString()).replace(/\x1b\[[0-9;]*m/g, "");
    flags = new Set([...text.matchAll(/--([a-z][a-z0-9-]*)/g)].map((m) => m[1]!));
    d.help.set(command, flags);
  }
  return flags.has(flag);
}

/** Run a measure; a failure becomes a note on its key and the run goes on. */
async function attempt(key: string, fn: () => Promise<void>): Promise<void> {
  try {
    await fn();
  } catch (error) {
    if (error instanceof Stopping) throw error;
    const message = (error as Error).message.split("\n")[0]!;
    note(key, `error: ${message}`);
    console.log(`  ${key}: ${message}`);
  }
}

/** Items in a different order each round, so that no tool always runs first or last. */
function rotate<T>(items: T[], round: number): T[] {
  const k = round % items.length;
  return [...items.slice(k), ...items.slice(0, k)];
}

function fmt(n: number): string {
  if (!Number.isFinite(n)) return "n/a";
  return n >= 100 ? n.toFixed(0) : n >= 10 ? n.toFixed(1) : n.toFixed(2);
}

async function buildBaseline(run: Run, commit: string): Promise<string> {
  const missing = missingTool("git");
  if (missing) throw new Error(`--baseline needs git: ${missing}`);
  const src = run.path("baseline-src");
  mkdirSync(src);
  console.log(`building the baseline dstd at ${commit} in ${src}`);
  const archive = run.spawn(["sh", "-c", `git -C "$0" archive "$1" | tar -x -C "$2"`, root, commit, src], { pipe: true });
  const [err, code] = await Promise.all([new Response(archive.stderr as ReadableStream).text(), archive.exited]);
  if (code !== 0) throw new Error(`git archive ${commit} failed: ${err.trim()}`);
  const deps = (text: string) => JSON.stringify({ ...JSON.parse(text).dependencies, ...JSON.parse(text).devDependencies });
  if (deps(readFileSync(join(src, "package.json"), "utf8")) !== deps(readFileSync(join(root, "package.json"), "utf8"))) {
    console.log(`  note: ${commit}'s package.json dependencies differ from this tree's; building it with this tree's node_modules`);
  }
  symlinkSync(join(root, "node_modules"), join(src, "node_modules"));
  const build = run.spawn([process.execPath, "build.ts"], { pipe: true, cwd: src });
  const [out, berr, bcode] = await Promise.all([new Response(build.stdout as ReadableStream).text(), new Response(build.stderr as ReadableStream).text(), build.exited]);
  if (bcode !== 0) throw new Error(`building ${commit} failed: ${(berr || out).trim()}`);
  return join(src, "dist", "dstd");
}

async function setupDstd(run: Run, label: Dstd["label"], bin: string): Promise<Dstd> {
  const state = run.path(`state-${label}`);
  mkdirSync(state);
  const d: Dstd = {
    label, bin, help: new Map(), key: null, target: run.path(`target-${label}.img`),
    dstPort: run.freePort(), nbdPort: run.freePort(), export: null, env: { DSTD_STATE_DIR: state },
  };
  if (supports(d, "keygen", "identity") && supports(d, "export", "key-file")) {
    const key = run.path(`${label}.key`);
    const made = Bun.spawnSync([bin, "keygen", "--identity", IDENTITY, "--out", key], { stdout: "pipe", stderr: "pipe", env: { ...process.env, ...d.env } });
    if (made.exitCode === 0) d.key = key;
    else console.log(`  ${label}: dstd keygen failed (${made.stderr.toString().trim()}); keyed measures skipped`);
  }
  return d;
}

async function startExport(run: Run, d: Dstd): Promise<void> {
  const needed = ["name", "file", "listen", "nbd-listen", "allow"].filter((f) => !supports(d, "export", f));
  if (needed.length) {
    note(`export/${d.label}`, `${d.label}: dstd export has no --${needed.join(", --")}`);
    return;
  }
  const cmd = [
    d.bin, "export", "--name", "disk", "--file", d.target,
    "--listen", `127.0.0.1:${d.dstPort}`, "--nbd-listen", `127.0.0.1:${d.nbdPort}`, "--allow", "127.0.0.1/32:rw",
    ...(d.key ? ["--key-file", d.key, "--allow", `${IDENTITY}@127.0.0.1/32:rw`] : []),
  ];
  try {
    d.export = await run.server(`export-${d.label}`, cmd, { tcp: d.dstPort }, d.env);
  } catch (error) {
    note(`export/${d.label}`, `${d.label}: export did not start: ${(error as Error).message.split("\n")[0]}`);
    console.log((error as Error).message);
  }
}

interface Peers {
  psk: string;
  plainPort: number;
  tlsPort: number;
  plain: Server | null;
  tls: Server | null;
  target: string;
}

/** Every process serving the export side, for VmHWM: dstd exports and the nbdkit file servers. */
function exportProcs(dstds: Dstd[], peers: Peers): Array<{ key: string; pid: number }> {
  const list: Array<{ key: string; pid: number }> = [];
  for (const d of dstds) if (d.export) list.push({ key: d.label, pid: d.export.proc.pid });
  if (peers.plain) list.push({ key: "peer", pid: peers.plain.proc.pid });
  if (peers.tls) list.push({ key: "peer", pid: peers.tls.proc.pid });
  return list;
}

let hwmResetWorks = true;
function resetExportHwm(dstds: Dstd[], peers: Peers): void {
  for (const p of exportProcs(dstds, peers)) if (!resetHwm(p.pid)) hwmResetWorks = false;
}
function recordExportHwm(section: string, dstds: Dstd[], peers: Peers): void {
  const peak = new Map<string, number>();
  for (const p of exportProcs(dstds, peers)) {
    const hwm = vmHwm(p.pid);
    if (hwm !== null) peak.set(p.key, Math.max(peak.get(p.key) ?? 0, hwm));
  }
  for (const [who, hwm] of peak) {
    record(`rss/export/${section}/${who}`, hwm);
    const all = samples.get(`rss/export/all/${who}`);
    samples.set(`rss/export/all/${who}`, [Math.max(hwm, all?.[0] ?? 0)]);
  }
}

// ───────────────────────────── copy ─────────────────────────────

async function copySection(run: Run, dstds: Dstd[], peers: Peers, sources: Record<"plain" | "aes", string>): Promise<void> {
  console.log(`\n== copy: ${sizeText} file → export (source and target in page cache), ${rounds} round(s)`);
  const verified = new Set<string>();
  const check = async (key: string, source: string, target: string) => {
    // The first copy of each kind replaces different data: prove it arrived, once.
    if (verified.has(key)) return;
    verified.add(key);
    if (!(await sameContent(source, target))) throw new Error(`target differs from the source after the copy`);
  };
  for (let round = 0; round < rounds; round++) {
    for (const mode of ["plain", "aes"] as const) {
      const source = sources[mode];
      const items: Array<() => Promise<void>> = [];
      for (const d of dstds) {
        const key = `copy/${mode}/${d.label}`;
        items.push(() => attempt(key, async () => {
          if (!d.export) throw new Error(notes.get(`export/${d.label}`) ?? "no export");
          if (mode === "aes" && (!d.key || !supports(d, "copy", "key-file"))) {
            note(key, `${d.label}: no keys (dstd keygen / copy --key-file)`);
            return;
          }
          const server0 = cpuSeconds(d.export.proc.pid);
          const t = await timed(run, [d.bin, "copy", source, `dst://127.0.0.1:${d.dstPort}/disk`, ...(mode === "aes" ? ["--key-file", d.key!] : [])], copyTimeout, d.env);
          const serverCpu = cpuSeconds(d.export.proc.pid) - server0;
          await check(key, source, d.target);
          record(key, sizeMiB / t.seconds);
          if (t.maxRssMiB !== null) record(`rss/copy/${d.label}`, t.maxRssMiB);
          console.log(`  ${mode.padEnd(5)} ${`dstd copy (${d.label})`.padEnd(22)} ${fmt(sizeMiB / t.seconds).padStart(6)} MiB/s  ${t.seconds.toFixed(2)} s, client CPU ${t.cpuSeconds.toFixed(2)} s, export CPU ${serverCpu.toFixed(2)} s, peak RSS ${t.maxRssMiB?.toFixed(0) ?? "?"} MiB`);
        }));
      }
      const peerMode = mode === "plain" ? "plain" : "tls";
      const peerKey = `copy/${peerMode}/peer`;
      items.push(() => attempt(peerKey, async () => {
        const server = mode === "plain" ? peers.plain : peers.tls;
        if (!server) throw new Error("nbdkit did not start");
        const uri = mode === "plain"
          ? `nbd://127.0.0.1:${peers.plainPort}/disk`
          : `nbds://${IDENTITY}@127.0.0.1:${peers.tlsPort}/disk?tls-psk-file=${peers.psk}`;
        const server0 = cpuSeconds(server.proc.pid);
        const t = await timed(run, ["nbdcopy", "--flush", source, uri], copyTimeout);
        const serverCpu = cpuSeconds(server.proc.pid) - server0;
        await check(peerKey, source, peers.target);
        record(peerKey, sizeMiB / t.seconds);
        if (t.maxRssMiB !== null) record("rss/copy/peer", t.maxRssMiB);
        console.log(`  ${mode.padEnd(5)} ${`nbdcopy${mode === "aes" ? " (TLS-PSK)" : ""}`.padEnd(22)} ${fmt(sizeMiB / t.seconds).padStart(6)} MiB/s  ${t.seconds.toFixed(2)} s, client CPU ${t.cpuSeconds.toFixed(2)} s, nbdkit CPU ${serverCpu.toFixed(2)} s, peak RSS ${t.maxRssMiB?.toFixed(0) ?? "?"} MiB`);
      }));
      for (const item of rotate(items, round)) await item();
    }
  }
}

// ───────────────────────────── fio sections ─────────────────────────────

interface Endpoint {
  key: string;
  who: string;
  uri: string;
  pids: () => number[];
}

async function fioRounds(run: Run, section: string, groups: Array<{ mode: string; endpoints: Endpoint[] }>): Promise<void> {
  // Warm-up: one short write and read run per endpoint (JIT, connection setup, page cache).
  for (const group of groups) {
    for (const e of group.endpoints) {
      for (const job of [FIO_JOBS[0]!, FIO_JOBS[3]!]) {
        await fio(run, e.uri, job, 1, sizeMiB).catch(() => {});
      }
    }
  }
  for (let round = 0; round < rounds; round++) {
    for (const job of FIO_JOBS) {
      for (const group of groups) {
        for (const e of rotate(group.endpoints, round)) {
          const key = `${section}/${group.mode}/${job.name}/${e.who}`;
          await attempt(key, async () => {
            const pids = e.pids();
            const cpu0 = pids.reduce((s, p) => s + cpuSeconds(p), 0);
            const v = await fio(run, e.uri, job, runtime, sizeMiB);
            const cpu = pids.reduce((s, p) => s + cpuSeconds(p), 0) - cpu0;
            record(key, v);
            const ops = job.unit === "IOPS" ? v * runtime : (v * runtime * MiB) / (job.bs === "1m" ? MiB : 4096);
            console.log(`  ${section} ${group.mode.padEnd(5)} ${job.name.padEnd(22)} ${e.key.padEnd(30)} ${fmt(v).padStart(7)} ${job.unit}  server CPU ${cpu.toFixed(1)} s (${((cpu / ops) * 1e6).toFixed(1)} µs/request)`);
          });
        }
      }
    }
  }
}

async function attachSection(run: Run, dstds: Dstd[], peers: Peers): Promise<void> {
  console.log(`\n== attach chain: fio → dstd attach --nbd-listen unix: → DST/TCP → dstd export, vs fio → nbdkit nbd → TCP → nbdkit file; ${runtime} s per run, ${rounds} round(s)`);
  const started: Server[] = [];
  const attaches = new Map<string, Server>();
  const relays = new Map<string, Server>();
  try {
    for (const d of dstds) {
      for (const mode of ["plain", "aes"] as const) {
        const key = `attach/${mode}/${d.label}`;
        if (!d.export) {
          note(key, notes.get(`export/${d.label}`) ?? "no export");
          continue;
        }
        const missing = ["nbd-listen", ...(mode === "aes" ? ["key-file"] : [])].filter((f) => !supports(d, "attach", f));
        if (missing.length || (mode === "aes" && !d.key)) {
          note(key, `${d.label}: dstd attach has no --${missing.join(", --") || "key-file (no key)"}`);
          continue;
        }
        const sock = run.path(`attach-${d.label}-${mode}.sock`);
        const cmd = [
          d.bin, "attach", `dst://127.0.0.1:${d.dstPort}/disk`, "--nbd-listen", `unix:${sock}`,
          ...(mode === "aes" ? ["--key-file", d.key!] : []),
          ...(supports(d, "attach", "state-dir") ? ["--state-dir", d.env.DSTD_STATE_DIR!] : []),
        ];
        await attempt(key, async () => {
          const s = await run.server(`attach-${d.label}-${mode}`, cmd, { unix: sock }, d.env);
          started.push(s);
          attaches.set(key, s);
        });
      }
    }
    for (const mode of ["plain", "tls"] as const) {
      const key = `attach/${mode}/peer`;
      const backend = mode === "plain" ? peers.plain : peers.tls;
      if (!backend) {
        note(key, "nbdkit file did not start");
        continue;
      }
      const sock = run.path(`relay-${mode}.sock`);
      const cmd = [
        "nbdkit", "-f", "-U", sock, "nbd", "hostname=127.0.0.1", `port=${mode === "plain" ? peers.plainPort : peers.tlsPort}`,
        ...(mode === "tls" ? ["tls=require", `tls-psk=${peers.psk}`, `tls-username=${IDENTITY}`] : []),
      ];
      await attempt(key, async () => {
        const s = await run.server(`relay-${mode}`, cmd, { unix: sock });
        started.push(s);
        relays.set(key, s);
      });
    }
    resetExportHwm(dstds, peers);
    const groups = (["plain", "aes"] as const).map((mode) => {
      const endpoints: Endpoint[] = [];
      for (const d of dstds) {
        const s = attaches.get(`attach/${mode}/${d.label}`);
        if (s) endpoints.push({
          key: `dstd attach (${d.label})`, who: d.label, uri: `nbd+unix:///disk?socket=${run.path(`attach-${d.label}-${mode}.sock`)}`,
          pids: () => [s.proc.pid, d.export!.proc.pid],
        });
      }
      const peerMode = mode === "plain" ? "plain" : "tls";
      const relay = relays.get(`attach/${peerMode}/peer`);
      const backend = mode === "plain" ? peers.plain : peers.tls;
      if (relay && backend) endpoints.push({
        key: `nbdkit nbd → nbdkit file${mode === "aes" ? " (TLS)" : ""}`, who: "peer", uri: `nbd+unix:///disk?socket=${run.path(`relay-${peerMode}.sock`)}`,
        pids: () => [relay.proc.pid, backend.proc.pid],
      });
      return { mode, endpoints };
    });
    await fioRounds(run, "attach", groups);
    recordExportHwm("attach", dstds, peers);
    for (const [key, s] of [...attaches, ...relays]) {
      const hwm = vmHwm(s.proc.pid);
      const who = key.split("/")[2]!;
      if (hwm !== null) record(`rss/attach/${who}`, hwm);
    }
  } finally {
    for (const s of started) await stop(s.proc);
  }
}

async function directSection(run: Run, dstds: Dstd[], peers: Peers): Promise<void> {
  console.log(`\n== direct: fio → dstd export --nbd-listen vs fio → nbdkit file; ${runtime} s per run, ${rounds} round(s)`);
  resetExportHwm(dstds, peers);
  const endpoints: Endpoint[] = [];
  for (const d of dstds) {
    if (d.export) endpoints.push({ key: `dstd export (${d.label})`, who: d.label, uri: `nbd://127.0.0.1:${d.nbdPort}/disk`, pids: () => [d.export!.proc.pid] });
  }
  if (peers.plain) {
    const plain = peers.plain;
    endpoints.push({ key: "nbdkit file", who: "peer", uri: `nbd://127.0.0.1:${peers.plainPort}/disk`, pids: () => [plain.proc.pid] });
  }
  await fioRounds(run, "direct", [{ mode: "plain", endpoints }]);
  recordExportHwm("direct", dstds, peers);
}

// ───────────────────────────── table ─────────────────────────────

interface Row {
  measure: string;
  dstd: (label: string) => string;
  peer: string;
  /** "ratio ≥ x" on dstd/peer, or "value ≤ x" on dstd's own value. */
  target?: { on: "ratio" | "value"; op: ">=" | "<="; x: number };
}

function rows(): Row[] {
  const out: Row[] = [];
  if (only.has("copy")) {
    out.push(
      { measure: `copy ${sizeText}, no keys, vs nbdcopy → nbdkit file (MiB/s)`, dstd: (l) => `copy/plain/${l}`, peer: "copy/plain/peer", target: { on: "ratio", op: ">=", x: 1.0 } },
      { measure: `copy ${sizeText}, aes-256-gcm vs nbdcopy TLS-PSK (MiB/s)`, dstd: (l) => `copy/aes/${l}`, peer: "copy/tls/peer" },
      { measure: `copy ${sizeText}, aes-256-gcm vs plain nbdcopy (MiB/s)`, dstd: (l) => `copy/aes/${l}`, peer: "copy/plain/peer", target: { on: "ratio", op: ">=", x: 0.6 } },
      { measure: "copy peak RSS, any run, vs nbdcopy (MiB)", dstd: (l) => `rss/copy/${l}:max`, peer: "rss/copy/peer:max", target: { on: "value", op: "<=", x: 256 } },
      { measure: "export peak RSS during copy, vs nbdkit file (MiB)", dstd: (l) => `rss/export/copy/${l}`, peer: "rss/export/copy/peer", target: { on: "value", op: "<=", x: 256 } },
    );
  }
  if (only.has("attach")) {
    for (const [mode, text] of [["plain", "no keys"], ["aes", "aes-256-gcm vs TLS-PSK"]] as const) {
      for (const job of FIO_JOBS) {
        out.push({ measure: `attach ${job.name}, ${text} (${job.unit})`, dstd: (l) => `attach/${mode}/${job.name}/${l}`, peer: `attach/${mode}/${job.name}/peer`, target: { on: "ratio", op: ">=", x: 1.0 } });
      }
    }
    out.push(
      { measure: "attach daemon peak RSS, vs nbdkit nbd relay (MiB)", dstd: (l) => `rss/attach/${l}:max`, peer: "rss/attach/peer:max" },
      { measure: "export peak RSS during attach, vs nbdkit file (MiB)", dstd: (l) => `rss/export/attach/${l}`, peer: "rss/export/attach/peer", target: { on: "value", op: "<=", x: 256 } },
    );
  }
  if (only.has("direct")) {
    for (const job of FIO_JOBS) {
      out.push({ measure: `direct ${job.name}, vs nbdkit file (${job.unit})`, dstd: (l) => `direct/plain/${job.name}/${l}`, peer: `direct/plain/${job.name}/peer`, target: { on: "ratio", op: ">=", x: job.bs === "1m" ? 1.0 : 1.2 } });
    }
    out.push({ measure: "export peak RSS during direct, vs nbdkit file (MiB)", dstd: (l) => `rss/export/direct/${l}`, peer: "rss/export/direct/peer", target: { on: "value", op: "<=", x: 256 } });
  }
  out.push({ measure: "export peak RSS, whole run, vs nbdkit file (MiB)", dstd: (l) => `rss/export/all/${l}`, peer: "rss/export/all/peer", target: { on: "value", op: "<=", x: 256 } });
  return out;
}

/** `key:max` is the largest sample, anything else the median. */
function lookup(key: string): number {
  if (key.endsWith(":max")) {
    const all = samples.get(key.slice(0, -4)) ?? [];
    return all.length ? Math.max(...all) : Number.NaN;
  }
  return value(key);
}

function printTable(withBefore: boolean): boolean {
  const header = ["measure", "dstd", ...(withBefore ? ["before"] : []), "peer", "ratio", ...(withBefore ? ["before ratio"] : []), "target", "result"];
  let allPass = true;
  const body = rows().map((row) => {
    const now = lookup(row.dstd("dstd"));
    const before = lookup(row.dstd("before"));
    const peer = lookup(row.peer);
    const ratio = now / peer;
    const beforeRatio = before / peer;
    let target = "—";
    let result = "info";
    if (row.target) {
      const { on, op, x } = row.target;
      target = on === "ratio" ? `${op === ">=" ? "≥" : "≤"} ${x.toFixed(1)}×` : `${op === ">=" ? "≥" : "≤"} ${x} MiB`;
      const v = on === "ratio" ? ratio : now;
      if (!Number.isFinite(v)) result = "n/a";
      else {
        const pass = op === ">=" ? v >= x : v <= x;
        result = pass ? "pass" : "FAIL";
        if (!pass) allPass = false;
      }
    }
    const r = (x: number) => (Number.isFinite(x) ? `${x.toFixed(2)}×` : "n/a");
    return [row.measure, fmt(now), ...(withBefore ? [fmt(before)] : []), fmt(peer), r(ratio), ...(withBefore ? [r(beforeRatio)] : []), target, result];
  });
  const right = new Set(header.map((_, i) => i).filter((i) => i > 0 && i < header.length - 2));
  console.log(`\n${table(header, body, right)}\n`);
  return allPass;
}

// ───────────────────────────── main ─────────────────────────────

/** /proc/pressure/cpu "some avg60": how contended the machine is (numbers are noisy above a few %). */
function cpuPressure(): string {
  try {
    const match = /some avg10=[\d.]+ avg60=([\d.]+)/.exec(readFileSync("/proc/pressure/cpu", "utf8"));
    return match ? `${match[1]}%` : "unknown";
  } catch {
    return "unknown";
  }
}

async function main(): Promise<number> {
  const run = new Run(process.env.BENCH_DIR ?? tmpdir(), "dstd-peers-");
  const load0 = loadavg()[0]!;
  const psi0 = cpuPressure();
  try {
    const skip = (section: string, tools: string[]) => {
      for (const tool of tools) {
        const missing = missingTool(tool);
        if (missing && only.has(section)) {
          console.log(`skipping ${section}: ${missing}`);
          only.delete(section);
        }
      }
    };
    skip("copy", ["nbdkit", "nbdcopy"]);
    skip("attach", ["nbdkit", "fio"]);
    skip("direct", ["nbdkit", "fio"]);
    if (only.size === 0) {
      console.log("nothing to run");
      return 0;
    }

    const dstds: Dstd[] = [await setupDstd(run, "dstd", process.env.DSTD_BIN ?? ensureBinary())];
    const baselineBin = process.env.BASELINE_BIN ?? (baselineCommit ? await buildBaseline(run, baselineCommit) : undefined);
    if (baselineBin) dstds.push(await setupDstd(run, "before", baselineBin));

    console.log(`writing data: 2 sources + ${dstds.length + 1} targets of ${sizeText} in ${run.dir}`);
    const sources = { plain: run.path("source-a.img"), aes: run.path("source-b.img") };
    writePattern(sources.plain, sizeMiB, 1);
    writePattern(sources.aes, sizeMiB, 2);
    const peerTarget = run.path("target-peer.img");
    for (const [i, target] of [...dstds.map((d) => d.target), peerTarget].entries()) writePattern(target, sizeMiB, 100 + i);
    for (const file of [sources.plain, sources.aes, peerTarget, ...dstds.map((d) => d.target)]) await warm(file);

    const psk = run.path("bench.psk");
    writeFileSync(psk, `${IDENTITY}:${randomBytes(32).toString("hex")}\n`, { mode: 0o600 }); // psktool's format
    const peers: Peers = { psk, plainPort: run.freePort(), tlsPort: run.freePort(), plain: null, tls: null, target: peerTarget };
    for (const d of dstds) await startExport(run, d);
    try {
      peers.plain = await run.server("nbdkit-file", ["nbdkit", "-f", "-i", "127.0.0.1", "-p", String(peers.plainPort), "file", peerTarget], { tcp: peers.plainPort });
    } catch (error) {
      console.log((error as Error).message);
    }
    try {
      peers.tls = await run.server("nbdkit-file-tls", ["nbdkit", "-f", "-i", "127.0.0.1", "-p", String(peers.tlsPort), "--tls=require", `--tls-psk=${psk}`, "file", peerTarget], { tcp: peers.tlsPort });
    } catch (error) {
      console.log((error as Error).message);
    }

    resetExportHwm(dstds, peers);
    if (only.has("copy")) {
      await copySection(run, dstds, peers, sources);
      recordExportHwm("copy", dstds, peers);
    }
    if (only.has("attach")) await attachSection(run, dstds, peers);
    if (only.has("direct")) await directSection(run, dstds, peers);

    const allPass = printTable(dstds.length > 1);
    const version = (bin: string) => Bun.spawnSync([bin, "--version"], { stdout: "pipe" }).stdout.toString().trim().split("\n")[0];
    const head = Bun.spawnSync(["git", "-C", root, "log", "-1", "--format=%h %s"], { stdout: "pipe" }).stdout.toString().trim();
    console.log(`dstd: ${dstds[0]!.bin} (${version(dstds[0]!.bin)}; tree at ${head.slice(0, 70)}${Bun.spawnSync(["git", "-C", root, "diff", "--quiet", "HEAD"]).exitCode ? ", with uncommitted changes" : ""})`);
    if (dstds[1]) console.log(`before: ${baselineCommit ?? dstds[1].bin} (${version(dstds[1].bin)})`);
    console.log(
      `${sizeText} sources/targets/exports, all in page cache (written, fdatasync'ed, read before measuring); ` +
      `fio --ioengine=nbd ${runtime} s per run, median of ${rounds} interleaved round(s), tool order rotated per round; ` +
      `copy = wall time of the whole command (process start to exit), nbdcopy with --flush because dstd copy ends with a FLUSH; ` +
      `ratio = dstd / peer (for RSS rows: value target on dstd). ${cpus().length} CPUs, load average ${load0.toFixed(1)} at start, ${loadavg()[0]!.toFixed(1)} at end; ` +
      `CPU pressure (PSI "some", share of time something waited for a CPU, last 60 s) ${psi0} at start, ${cpuPressure()} at end.`,
    );
    if (!hwmResetWorks) console.log("note: /proc/PID/clear_refs refused; per-section export RSS is cumulative");
    for (const [key, text] of notes) console.log(`note: ${key}: ${text}`);
    console.log(allPass ? "every target met" : "some targets not met (benchmarks, not tests: the exit status stays 0)");
    return 0;
  } finally {
    await run.cleanup();
  }
}

process.exitCode = await main();
