/**
 * @module bench/crypto-threads — would a pool of crypto workers (issue 10 item 4: records
 * sealed off the event loop, `crypto_threads`) pay on this machine? Seals BENCH_MIB MiB of
 * 1 MiB AES-256-GCM records (the system's OpenSSL, src/sys/libcrypto.ts, as `dstd copy`
 * does) with 0 workers (inline on the event loop, today's path), 1 and 2 workers. The records
 * live in SharedArrayBuffer slots (no copy to or from a worker), a worker seals a slot in
 * place and answers with its index, the main thread consumes completions in order (what a
 * connection needs) with `inflight` records outstanding, like the copy's 32.
 *
 * Printed per row: wall time, MiB/s, the process's CPU seconds (all threads) and the CPU the
 * event loop itself spent (what the offload would free for socket and file work). Run it
 * with and without other load on the machine: on 2 cores a worker only helps when a core is
 * idle, and `dstd copy` shares the 2 cores with the export it copies to.
 *
 *   bun bench/crypto-threads.ts            # 1024 MiB, inflight 32
 *   BENCH_MIB=256 bun bench/crypto-threads.ts
 */
import { cpus, loadavg } from "node:os";
import { loadNativeGcm } from "../src/sys/libcrypto.ts";

const MiB = 1024 * 1024;
const RECORD = MiB;
const TAG = 16;
const total = Number(process.env.BENCH_MIB ?? 1024);
const inflight = Number(process.env.BENCH_INFLIGHT ?? 32);
const key = crypto.getRandomValues(new Uint8Array(32));

/** One shared slot per record in flight: [record bytes | tag]. */
const shared = new SharedArrayBuffer(inflight * (RECORD + TAG));
const slot = (i: number) => new Uint8Array(shared, i * (RECORD + TAG), RECORD + TAG);
for (let i = 0; i < inflight; i++) crypto.getRandomValues(slot(i).subarray(0, 65536));

const workerSource = `
  import { loadNativeGcm } from ${JSON.stringify(new URL("../src/sys/libcrypto.ts", import.meta.url).pathname)};
  let gcm = null, shared = null;
  const nonce = new Uint8Array(12);
  const aad = new Uint8Array(16);
  self.onmessage = (event) => {
    const m = event.data;
    if (m.init) { gcm = loadNativeGcm(m.key, "seal"); shared = m.shared; return; }
    const bytes = new Uint8Array(shared, m.slot * ${RECORD + TAG}, ${RECORD + TAG});
    new DataView(nonce.buffer).setUint32(8, m.seq);
    gcm.begin(nonce, aad);
    gcm.update(bytes.subarray(0, ${RECORD}), bytes.subarray(0, ${RECORD}));
    gcm.finishSeal(bytes.subarray(${RECORD}));
    self.postMessage(m.slot);
  };
`;
const workerUrl = URL.createObjectURL(new Blob([workerSource], { type: "application/typescript" }));

function threadCpuSeconds(): number {
  // utime + stime of the main thread only (the event loop), from /proc/thread-self/stat.
  const fields = require("node:fs").readFileSync("/proc/thread-self/stat", "utf8").split(") ")[1].split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

function processCpuSeconds(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

async function inline(): Promise<void> {
  const gcm = loadNativeGcm(key, "seal");
  if (gcm === null) throw new Error("no libcrypto.so.3 (Debian: libssl3)");
  const nonce = new Uint8Array(12);
  const aad = new Uint8Array(16);
  for (let seq = 0; seq < total; seq++) {
    const bytes = slot(seq % inflight);
    new DataView(nonce.buffer).setUint32(8, seq);
    gcm.begin(nonce, aad);
    gcm.update(bytes.subarray(0, RECORD), bytes.subarray(0, RECORD));
    gcm.finishSeal(bytes.subarray(RECORD));
    // Yield like an event loop that also serves sockets: one macrotask per record.
    if (seq % inflight === inflight - 1) await new Promise((r) => setImmediate(r));
  }
  gcm.destroy();
}

async function pooled(workers: number): Promise<void> {
  const pool = Array.from({ length: workers }, () => new Worker(workerUrl));
  for (const w of pool) w.postMessage({ init: true, key, shared });
  // Completions are consumed in issue order (a connection's records go out in order).
  const done = new Array<boolean>(inflight).fill(false);
  let issued = 0;
  let consumed = 0;
  await new Promise<void>((resolve) => {
    const issue = () => {
      while (issued < total && issued - consumed < inflight) {
        const s = issued % inflight;
        done[s] = false;
        pool[issued % workers]!.postMessage({ slot: s, seq: issued });
        issued++;
      }
    };
    for (const w of pool) {
      w.onmessage = (event: MessageEvent<number>) => {
        done[event.data] = true;
        while (consumed < issued && done[consumed % inflight]) {
          done[consumed % inflight] = false;
          consumed++;
        }
        if (consumed === total) resolve();
        else issue();
      };
    }
    issue();
  });
  for (const w of pool) w.terminate();
}

const rows: string[] = [];
for (const workers of [0, 1, 2, 0, 1, 2]) {
  const cpu0 = processCpuSeconds();
  const loop0 = threadCpuSeconds();
  const start = performance.now();
  if (workers === 0) await inline();
  else await pooled(workers);
  const seconds = (performance.now() - start) / 1000;
  const cpu = processCpuSeconds() - cpu0;
  const loop = threadCpuSeconds() - loop0;
  rows.push(`| ${workers} | ${seconds.toFixed(2)} | ${(total / seconds).toFixed(0)} | ${cpu.toFixed(2)} | ${loop.toFixed(2)} |`);
}
console.log(`\nAES-256-GCM seal of ${total} MiB in 1 MiB records, ${inflight} in flight, ${cpus().length} CPUs, load average ${loadavg()[0]!.toFixed(1)} at the end\n`);
console.log("| crypto workers | wall s | MiB/s | process CPU s | event-loop CPU s |");
console.log("|--:|--:|--:|--:|--:|");
for (const row of rows) console.log(row);
