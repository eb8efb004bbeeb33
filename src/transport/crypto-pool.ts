/**
 * @module transport/crypto-pool — AES-256-GCM records sealed and opened on worker threads
 * (`crypto_threads`), as DST did ("a configurable pool of threads to perform crypto
 * processing"; docs/performance.md "Crypto off the event loop"). The event loop copies a
 * record into a slot of one SharedArrayBuffer, a worker (sys/crypto-worker.ts) seals or opens
 * it there, and the loop gets back only the job's number: the cipher's pass leaves the loop,
 * the bytes never cross in messages.
 *
 * Bounds: CRYPTO_SLOTS slots of CRYPTO_SLOT_BYTES, fixed at start. A record that finds no free
 * slot (the pool is full, or the record is larger than a slot) is sealed or opened inline by
 * its channel and waits in order behind its lane's records: a full pool puts the work back on
 * the loop (which then produces and reads less), it never queues without bound.
 *
 * Order: one lane per direction of a connection (crypto/record.ts RecordLane). Jobs go to the
 * workers in turn, and a lane hands its records back strictly in submission order, so the
 * counter each record was sealed under matches its place in the byte stream.
 *
 * A worker that dies fails closed: every lane with records in the pool loses them and its
 * connection is closed with the reason (crypto/record.ts onLaneFailure / LateRecords.fail);
 * the pool is stopped, and channels made afterwards seal and open inline. The reason is
 * logged once, at error level.
 */
import { dirname } from "node:path";
import { RECORD_HEADER_SIZE, type RecordLane } from "../crypto/record.ts";

/** Records in the pool at once (slots of the shared memory). */
export const CRYPTO_SLOTS = 16;
/** One slot: the largest record the pool takes (a 1 MiB WRITE frame behind 256 KiB of others fits). */
export const CRYPTO_SLOT_BYTES = 2 * 1024 * 1024 + 4096;
/** Most crypto threads one process may run (`crypto_threads`). */
export const MAX_CRYPTO_THREADS = 16;

/** What the pool asks a worker. */
export type PoolRequest =
  | { t: "init"; shared: SharedArrayBuffer; slotBytes: number; exitAfter: number }
  | { t: "lane"; lane: number; key: Uint8Array; role: "seal" | "open"; direction: 0 | 1 }
  | { t: "drop"; lane: number }
  | { t: "job"; job: number; lane: number; slot: number; size: number; counter: number };

/** What a worker answers. */
export type PoolReply = { t: "ready"; ok: boolean } | { t: "done"; job: number; ok: boolean };

interface Entry {
  done: boolean;
  ok: boolean;
  then: (ok: boolean) => void;
}

function workerUrls(moduleUrl = import.meta.url, modulePath = import.meta.path): string[] {
  // In the compiled executable the worker is an extra entry point of the build (build.ts), at
  // its path relative to the entry points' common root: try both layouts, as sys/librbd-offload.ts does.
  if (!moduleUrl.startsWith("file:///$bunfs/")) return [new URL("../sys/crypto-worker.ts", moduleUrl).href];
  const root = dirname(dirname(modulePath));
  return [`${root}/sys/crypto-worker.ts`, `${root}/src/sys/crypto-worker.ts`, `${dirname(modulePath)}/sys/crypto-worker.ts`];
}

/** One worker, started from the first path that loads and answers `init`. */
async function startWorker(urls: string[], shared: SharedArrayBuffer, slotBytes: number): Promise<Worker> {
  const problems: string[] = [];
  for (const url of urls) {
    const worker = new Worker(url);
    const answer = await new Promise<string | null>((resolve) => {
      worker.onmessage = (event: MessageEvent<PoolReply>) => {
        const reply = event.data;
        resolve(reply.t === "ready" && reply.ok ? null : "libcrypto.so.3 not found (Debian: libssl3)");
      };
      worker.onerror = (event: ErrorEvent) => resolve(event.message);
      // DSTD_CRYPTO_WORKER_EXIT_AFTER=N: tests only, the worker throws after N jobs (sys/crypto-worker.ts).
      const exitAfter = Number(process.env.DSTD_CRYPTO_WORKER_EXIT_AFTER ?? 0) || 0;
      worker.postMessage({ t: "init", shared, slotBytes, exitAfter } satisfies PoolRequest);
    });
    if (answer === null) return worker;
    worker.terminate();
    problems.push(`${url}: ${answer}`);
  }
  throw new Error(`cannot start a crypto worker (${problems.join("; ")})`);
}

/** Bun's worker error message carries a source excerpt before "error: ...": keep the error. */
function lastErrorLine(message: string): string {
  const at = message.lastIndexOf("error: ");
  return (at < 0 ? message : message.slice(at + 7)).split("\n")[0]!.trim();
}

export interface CryptoPoolOptions {
  slots?: number;
  slotBytes?: number;
  /** Told once why the pool stopped (a worker died). */
  onFailure?: (reason: string) => void;
}

export class CryptoPool {
  private readonly shared: SharedArrayBuffer;
  private readonly free: number[] = [];
  private readonly used: Uint8Array;
  private readonly jobs = new Map<number, { lane: PoolLane; entry: Entry }>();
  /**
   * Lanes by id, held weakly: a lane belongs to its channel (which its failure callback points
   * back to), so a strong map here would keep every closed connection's channel alive.
   */
  private readonly lanes = new Map<number, WeakRef<PoolLane>>();
  private nextWorker = 0;
  private nextJob = 1;
  private nextLane = 1;
  private refd = false;
  failure: string | null = null;
  /** Lanes of channels nobody holds any more: their workers' contexts are freed. */
  private readonly collected = new FinalizationRegistry<number>((lane) => this.dropLane(lane));

  private constructor(
    private readonly workers: Worker[],
    shared: SharedArrayBuffer,
    readonly slots: number,
    readonly slotBytes: number,
    private readonly onFailure: ((reason: string) => void) | null,
  ) {
    this.shared = shared;
    this.used = new Uint8Array(slots);
    for (let i = slots - 1; i >= 0; i--) this.free.push(i);
    workers.forEach((worker, index) => {
      worker.onmessage = (event: MessageEvent<PoolReply>) => this.answer(event.data);
      worker.onerror = (event: ErrorEvent) => {
        event.preventDefault?.();
        this.fail(`crypto worker ${index + 1} of ${workers.length} died: ${lastErrorLine(event.message)}`);
      };
      worker.addEventListener("close", () => this.fail(`crypto worker ${index + 1} of ${workers.length} exited`));
      worker.unref();
    });
  }

  /** Start `threads` workers (≥ 1) sharing `slots` slots; rejects with the reason when one cannot start. */
  static async start(threads: number, options: CryptoPoolOptions = {}): Promise<CryptoPool> {
    if (!Number.isInteger(threads) || threads < 1 || threads > MAX_CRYPTO_THREADS) throw new Error(`crypto threads ${threads}: 1..${MAX_CRYPTO_THREADS}`);
    const slots = options.slots ?? CRYPTO_SLOTS;
    const slotBytes = options.slotBytes ?? CRYPTO_SLOT_BYTES;
    const shared = new SharedArrayBuffer(slots * slotBytes);
    const urls = workerUrls();
    const workers: Worker[] = [];
    try {
      for (let i = 0; i < threads; i++) workers.push(await startWorker(urls, shared, slotBytes));
    } catch (error) {
      for (const worker of workers) worker.terminate();
      throw error;
    }
    return new CryptoPool(workers, shared, slots, slotBytes, options.onFailure ?? null);
  }

  get threads(): number {
    return this.workers.length;
  }

  /** Slots free now (for tests and status). */
  get freeSlots(): number {
    return this.free.length;
  }

  /** A lane for one direction of a channel (crypto/record.ts RecordLaneFactory); null once the pool failed. */
  lane(key: Uint8Array, role: "seal" | "open", direction: 0 | 1, owner: object): RecordLane | null {
    if (this.failure !== null) return null;
    const id = this.nextLane++;
    for (const worker of this.workers) worker.postMessage({ t: "lane", lane: id, key: new Uint8Array(key), role, direction } satisfies PoolRequest);
    const lane = new PoolLane(this, id);
    this.lanes.set(id, new WeakRef(lane));
    this.collected.register(owner, id);
    return lane;
  }

  /** Stop the workers (process exit, tests). Lanes still holding records fail. */
  close(): void {
    this.fail("crypto pool closed");
  }

  // ---- for PoolLane ----------------------------------------------------------------------

  reserve(size: number): Uint8Array | null {
    if (this.failure !== null || size > this.slotBytes) return null;
    const slot = this.free.pop();
    if (slot === undefined) return null;
    this.used[slot] = 1;
    return new Uint8Array(this.shared, slot * this.slotBytes, size);
  }

  release(buffer: Uint8Array): void {
    const slot = buffer.byteOffset / this.slotBytes;
    if (buffer.buffer !== this.shared || !Number.isInteger(slot) || this.used[slot] !== 1) throw new Error("crypto pool: released a buffer that is not a slot in use");
    this.used[slot] = 0;
    this.free.push(slot);
  }

  dispatch(lane: PoolLane, entry: Entry, buffer: Uint8Array, counter: number): void {
    const job = this.nextJob++;
    this.jobs.set(job, { lane, entry });
    const worker = this.workers[this.nextWorker]!;
    this.nextWorker = (this.nextWorker + 1) % this.workers.length;
    if (!this.refd) {
      // Records in the pool keep the process alive (their connection waits for them); idle workers do not.
      this.refd = true;
      for (const w of this.workers) w.ref();
    }
    const slot = buffer.byteOffset / this.slotBytes;
    worker.postMessage({ t: "job", job, lane: lane.id, slot, size: buffer.length, counter } satisfies PoolRequest);
  }

  private answer(reply: PoolReply): void {
    if (reply.t !== "done") return;
    const job = this.jobs.get(reply.job);
    if (job === undefined) return;
    this.jobs.delete(reply.job);
    if (this.jobs.size === 0 && this.refd) {
      this.refd = false;
      for (const w of this.workers) w.unref();
    }
    job.lane.complete(job.entry, reply.ok);
  }

  private dropLane(id: number): void {
    if (!this.lanes.delete(id) || this.failure !== null) return;
    for (const worker of this.workers) worker.postMessage({ t: "drop", lane: id } satisfies PoolRequest);
  }

  private fail(reason: string): void {
    if (this.failure !== null) return;
    this.failure = reason;
    for (const worker of this.workers) worker.terminate();
    this.jobs.clear();
    const lanes = [...this.lanes.values()];
    this.lanes.clear();
    if (reason !== "crypto pool closed") this.onFailure?.(reason);
    for (const lane of lanes) lane.deref()?.lost(reason);
  }
}

class PoolLane implements RecordLane {
  private entries: Entry[] = [];
  private head = 0;
  onFailure: ((reason: string) => void) | null = null;

  constructor(
    private readonly pool: CryptoPool,
    readonly id: number,
  ) {}

  get pending(): number {
    return this.entries.length - this.head;
  }

  get failure(): string | null {
    return this.pool.failure;
  }

  reserve(size: number): Uint8Array | null {
    return this.pool.reserve(size);
  }

  release(buffer: Uint8Array): void {
    if (this.pool.failure === null) this.pool.release(buffer);
  }

  submit(buffer: Uint8Array, counter: number, done: (ok: boolean) => void): void {
    // The pool died after this record took its slot (an opener gathering a record's body):
    // no worker will ever answer, so fail the channel instead of waiting for ever behind it.
    const failure = this.pool.failure;
    if (failure !== null) return void queueMicrotask(() => this.onFailure?.(failure));
    const entry: Entry = { done: false, ok: false, then: done };
    this.entries.push(entry);
    this.pool.dispatch(this, entry, buffer, counter);
  }

  after(then: () => void): void {
    if (this.pending === 0) return then();
    this.entries.push({ done: true, ok: true, then: () => then() });
  }

  complete(entry: Entry, ok: boolean): void {
    entry.done = true;
    entry.ok = ok;
    // Deliver the finished head of the line, in order; a callback may submit more.
    while (this.head < this.entries.length && this.entries[this.head]!.done) {
      const next = this.entries[this.head++]!;
      if (this.head === this.entries.length) {
        this.entries = [];
        this.head = 0;
      }
      next.then(next.ok);
    }
    if (this.head > 1024) {
      this.entries = this.entries.slice(this.head);
      this.head = 0;
    }
  }

  /**
   * The pool failed: records still here are gone; tell the channel when there were any. What
   * waits behind them through after() runs then, with the channel failed: it lets go of what
   * it holds (an opener's plaintext owns counted receive memory) instead of being dropped.
   */
  lost(reason: string): void {
    const waiting = this.entries.slice(this.head);
    this.entries = [];
    this.head = 0;
    if (waiting.length > 0) this.onFailure?.(reason);
    for (const entry of waiting) if (entry.done) entry.then(entry.ok);
  }
}
