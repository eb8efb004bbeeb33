/**
 * @module client/copy — `dstd copy SRC DST`: move bytes between a local file/device and an
 * export (either direction, or export to export) with many requests in flight.
 *
 * Both ends are CopyEndpoints. All-zero chunks are not written as data: a remote target gets
 * WRITE_ZEROES (the export may punch a hole), a local file target gets a punched hole, so a
 * sparse source stays sparse. The copy ends with a FLUSH of the target; only then is it done.
 * A local target file is written under a temporary name and renamed into place after that
 * FLUSH (openLocalTarget), so an interrupted copy never leaves a full-size file that looks
 * complete. Reading stdin and writing stdout are client/copy-stream.ts.
 */
import { renameSync, rmSync, statSync, type Stats } from "node:fs";
import { openBackend } from "../storage/open.ts";
import type { Backend } from "../storage/local/backend.ts";
import type { IoDone } from "../storage/local/fd-io.ts";
import { ASYNC_IO_FROM } from "../storage/local/port.ts";
import type { ExportUrl } from "../lib/address.ts";
import { errnoFromError, errnoMessage } from "../lib/errno.ts";
import { DstdError } from "../lib/errors.ts";
import { formatSize } from "../lib/size.ts";
import type { EngineLog, EngineState } from "../engine/client-engine.ts";
import type { EngineCounters } from "../engine/counters.ts";
import type { EngineOptions } from "../engine/options.ts";
import { DstClient } from "./dst-client.ts";
import { MemoryBudget } from "./memory-budget.ts";
import { NbdClient } from "./nbd-client.ts";

export interface CopyEndpoint {
  readonly label: string;
  readonly size: number;
  /** Most bytes per request this endpoint handles well. */
  readonly chunkMax: number;
  read(offset: number, length: number): Promise<Uint8Array>;
  /** Read into `into` (a buffer from the target's writeBuffer, so the data moves once). */
  readInto?(offset: number, into: Uint8Array): Promise<void>;
  /** A buffer for `length` bytes the caller fills and then passes to write() (no copy there). */
  writeBuffer?(length: number): Uint8Array;
  /** A writeBuffer() buffer that will not be written after all (its chunk was all zeroes). */
  unreserve?(buffer: Uint8Array): void;
  write(offset: number, data: Uint8Array): Promise<void>;
  /** Make the range read as zeroes, preferably without allocating. */
  zero(offset: number, length: number): Promise<void>;
  /** true when the range is known to read as zeroes (a hole): no need to read it. */
  isHole(offset: number, length: number): boolean;
  flush(): Promise<void>;
  close(): Promise<void>;
  /** Give up on what is in flight and close now (a second Ctrl-C); absent: close() is prompt. */
  abort?(): void;
  /** Reliability counters of a remote endpoint's engine (resends, reconnects, replays, ...). */
  counters?: () => EngineCounters;
  /** What a remote endpoint's buffers came to (the copy's debug summary). */
  memory?: () => string;
}

export function backendEndpoint(label: string, backend: Backend): CopyEndpoint {
  // Reads and writes of a whole chunk run on Bun's I/O thread pool where the backend can
  // (file, device): the copy's workers then read the next chunks ahead into their reserved
  // frames while the event loop sends the earlier ones (docs/performance.md).
  const pooled = (length: number) => length >= ASYNC_IO_FROM && backend.readAsync !== undefined;
  // close() waits for calls still on the pool (a read-ahead a failed copy left behind): the
  // descriptor must not be closed, and its number reused, under a running pread/pwrite.
  let running = 0;
  let idle: (() => void) | null = null;
  const settle = (start: (done: IoDone) => void) =>
    new Promise<void>((resolve, reject) => {
      running++;
      try {
        start((error) => {
          if (--running === 0) idle?.();
          if (error === null) resolve();
          else reject(error);
        });
      } catch (error) {
        if (--running === 0) idle?.();
        reject(error);
      }
    });
  const readInto = (offset: number, into: Uint8Array): Promise<void> => {
    if (pooled(into.length)) return settle((done) => backend.readAsync!(offset, into, done));
    backend.read(offset, into);
    return Promise.resolve();
  };
  return {
    label,
    size: backend.size,
    chunkMax: 4 * 1024 * 1024,
    async read(offset, length) {
      const target = new Uint8Array(length);
      await readInto(offset, target);
      return target;
    },
    readInto: async (offset, into) => readInto(offset, into),
    async write(offset, data) {
      if (pooled(data.length) && backend.writeAsync !== undefined) return settle((done) => backend.writeAsync!(offset, data, false, done));
      backend.write(offset, data, false);
    },
    async zero(offset, length) {
      backend.zero(offset, length, true);
    },
    isHole(offset, length) {
      if (backend.kind === "device") return false;
      const extents = backend.extents(offset, length);
      return extents.length === 1 && extents[0]!.zero;
    },
    async flush() {
      if (backend.flushAsync !== undefined) return settle((done) => backend.flushAsync!(done));
      backend.flush();
    },
    async close() {
      if (running > 0) await new Promise<void>((resolve) => (idle = resolve));
      backend.close();
    },
  };
}

export function dstEndpoint(label: string, client: DstClient): CopyEndpoint {
  return {
    label,
    size: client.size,
    chunkMax: client.maxPayload,
    read: (offset, length) => client.read(offset, length),
    readInto: (offset, into) => client.readInto(offset, into),
    writeBuffer: (length) => client.reserveWrite(length),
    unreserve: (buffer) => client.unreserveWrite(buffer),
    write: (offset, data) => client.write(offset, data),
    zero: (offset, length) => client.zero(offset, length),
    isHole: () => false,
    flush: () => client.flush(),
    close: () => client.close(),
    abort: () => client.abort(),
    counters: () => client.engine.counters,
    memory: () => `write buffers made ${client.writePool.allocated}, pooled ${(client.writePool.pooledBytes / 2 ** 20).toFixed(0)} MiB`,
  };
}

/** The smallest request a copy makes (a chunk, and the granularity of its zero detection). */
export const COPY_CHUNK_MIN = 4096;

/** proto.md "Block size constraints": requests up to 32 MiB interoperate unless the server says less. */
const NBD_CHUNK_MAX = 32 * 1024 * 1024;

export function nbdEndpoint(label: string, client: NbdClient): CopyEndpoint {
  return {
    label,
    size: client.size,
    chunkMax: Math.min(NBD_CHUNK_MAX, client.maxPayload ?? NBD_CHUNK_MAX),
    read: (offset, length) => client.read(offset, length),
    write: (offset, data) => client.write(offset, data),
    zero: (offset, length) => client.zero(offset, length),
    isHole: () => false,
    flush: () => client.flush(),
    close: () => client.close(),
    abort: () => client.abort(),
  };
}

export interface OpenEndpointOptions {
  log: EngineLog;
  engine?: Partial<EngineOptions>;
  /** Local target: create it with this size when it does not exist. */
  createSize?: number;
  writable: boolean;
  /** DST: fail on the first lost connection before the handshake, or retry until the deadline. */
  firstContact?: "fail" | "retry";
  /** DST: link state changes (attempts while waiting for first contact; lost, reconnecting, ready again). */
  onLinkChange?: (state: EngineState, detail: string) => void;
  /** Local target that exists with another size: replace it (via a temporary file) instead of refusing. */
  overwrite?: boolean;
  /** The copy's flush interval (CopyOptions.flushEvery): it sets how much a DST client must keep for replay. */
  flushEvery?: number;
}

/**
 * A local target is never left looking complete when it is not: a file that does not exist
 * yet (or is replaced with --overwrite) is written under a temporary name next to it and
 * renamed into place only after the final flush (`commit`); on failure or Ctrl-C the
 * temporary file is removed (`abandon`). An existing file of the source's size and a device
 * are written in place (like dd conv=notrunc): `abandon` then only reports what changed.
 */
export interface LocalTarget {
  endpoint: CopyEndpoint;
  /** The file the user named. */
  path: string;
  /** Where the bytes go until commit; equal to `path` when written in place. */
  writingTo: string;
  commit(): void;
  /** Remove the temporary file (if any) and say what became of the target. */
  abandon(copied: number): string;
}

export function openLocalTarget(path: string, size: number, overwrite: boolean): LocalTarget {
  const existing = statOrNull(path);
  // A block device is what stat says, wherever it lies (/dev/shm holds files, a device may be elsewhere).
  if (existing?.isBlockDevice()) return inPlace(path, openBackend({ kind: "device", path }, false));
  if (existing !== null && existing.isFile() && existing.size === size && !overwrite) {
    return inPlace(path, openBackend({ kind: "file", path }, false));
  }
  if (existing !== null && !existing.isFile()) {
    throw new DstdError("E_USAGE", `target ${path} exists and is neither a regular file nor a block device`);
  }
  if (existing !== null && !overwrite) {
    throw new DstdError(
      "E_USAGE",
      `target ${path} exists with ${formatSize(existing.size)} (${existing.size} bytes) but the source has ${formatSize(size)} (${size} bytes): ` +
        "pass --overwrite to replace it, or remove it first",
    );
  }
  const temporary = `${path}.partial-${process.pid}`;
  const backend = openBackend({ kind: "file", path: temporary, size }, false);
  let done = false;
  return {
    endpoint: backendEndpoint(path, backend),
    path,
    writingTo: temporary,
    commit() {
      renameSync(temporary, path);
      done = true;
    },
    abandon(copied) {
      if (done) return `${path} is complete`;
      backend.close();
      rmSync(temporary, { force: true });
      const before = existing === null ? `${path} was not created` : `${path} was left as it was`;
      return `${before}; the partial copy (${formatSize(copied)}) was removed`;
    },
  };
}

function inPlace(path: string, backend: Backend): LocalTarget {
  return {
    endpoint: backendEndpoint(path, backend),
    path,
    writingTo: path,
    commit() {},
    abandon(copied) {
      return copied === 0
        ? `${path} was not changed`
        : `${path} was written in place and is now incomplete: its first ${formatSize(copied)} are the source's, the rest is what it held before`;
    },
  };
}

function statOrNull(path: string): Stats | null {
  try {
    return statSync(path);
  } catch (error) {
    if ((error as { code?: string }).code === "ENOENT") return null;
    throw new DstdError("E_OPEN", `cannot look up ${path}: ${errnoMessage(errnoFromError(error))}`);
  }
}

export async function openEndpoint(spec: { url: ExportUrl } | { path: string }, options: OpenEndpointOptions): Promise<CopyEndpoint> {
  if ("path" in spec) {
    const isDevice = statOrNull(spec.path)?.isBlockDevice() === true;
    const backend = isDevice
      ? openBackend({ kind: "device", path: spec.path }, !options.writable)
      : openBackend({ kind: "file", path: spec.path, size: options.createSize }, !options.writable);
    return backendEndpoint(spec.path, backend);
  }
  const url = spec.url;
  const address =
    url.transport === "unix" ? { transport: "unix" as const, path: url.path } : { transport: "tcp" as const, host: url.host, port: url.port };
  if (url.protocol === "nbd") {
    const client = await NbdClient.open({ address, exportName: url.exportName, log: options.log, requestTimeoutMs: options.engine?.deadlineMs });
    if (options.writable && client.readOnly) {
      await client.close();
      throw new DstdError("E_READ_ONLY", `${client.where} is read-only (the server set NBD_FLAG_READ_ONLY)`);
    }
    if (client.maxPayload !== null && client.maxPayload < COPY_CHUNK_MIN) {
      // The copy's requests are 4 KiB at least: refuse instead of sending what the server said it rejects.
      await client.close();
      throw new DstdError("E_NBD", `${client.where} takes requests of at most ${client.maxPayload} bytes (NBD_INFO_BLOCK_SIZE); dstd copy needs ${COPY_CHUNK_MIN}`);
    }
    return nbdEndpoint(client.where, client);
  }
  // A copy flushes as it goes (FLUSH_EVERY), so it never needs the full replay bound: keeping
  // it to twice the flush interval holds the copy's memory flat whatever its size. With
  // --flush-every 0 (one flush at the end) the configured replay_buffer applies as it is.
  const flushEvery = options.flushEvery ?? FLUSH_EVERY;
  const configured = options.engine?.replayBufferBytes ?? COPY_REPLAY_MAX;
  const replayBufferBytes = flushEvery === 0 ? configured : Math.min(configured, Math.max(COPY_REPLAY_MAX, 2 * flushEvery));
  const client = await DstClient.open({
    ...options.engine,
    replayBufferBytes,
    address,
    exportName: url.exportName,
    log: options.log,
    firstContact: options.firstContact,
    onStateChange: options.onLinkChange,
  });
  if (options.writable && !client.writable) {
    await client.close();
    throw new DstdError("E_READ_ONLY", `export '${url.exportName}' is read-only for this client`);
  }
  return dstEndpoint(`export '${url.exportName}'`, client);
}

export interface CopyProgress {
  (done: number, total: number): void;
}

export interface CopyResult {
  bytes: number;
  zeroBytes: number;
  seconds: number;
}

/** How far a copy got, readable while it runs and after it failed or was interrupted. */
export interface CopyState {
  /** Bytes whose chunk completed (in any order). */
  done: number;
  /** Bytes from offset 0 up to the first chunk not yet completed: what the target surely holds. */
  contiguous: number;
  total: number;
}

export function newCopyState(): CopyState {
  return { done: 0, contiguous: 0, total: 0 };
}

/** Ctrl-C (or another abort): the chunks in flight completed, no new ones were started. */
export class CopyInterrupted extends DstdError {
  constructor(readonly state: Readonly<CopyState>) {
    super("E_INTERRUPTED", `interrupted after ${formatSize(state.contiguous)} of ${formatSize(state.total)}`);
    this.name = "CopyInterrupted";
  }
}

/** True when every byte is zero (such chunks travel as WRITE_ZEROES, not as data). */
export function isAllZero(data: Uint8Array): boolean {
  if (data.byteOffset % 8 === 0 && data.length % 8 === 0) {
    const words = new BigUint64Array(data.buffer, data.byteOffset, data.length / 8);
    for (let i = 0; i < words.length; i++) if (words[i] !== 0n) return false;
    return true;
  }
  for (let i = 0; i < data.length; i++) if (data[i] !== 0) return false;
  return true;
}

export interface CopyOptions {
  chunk: number;
  inflight: number;
  progress?: CopyProgress;
  /** Stop starting chunks when aborted; the copy then ends with CopyInterrupted. */
  signal?: AbortSignal;
  /** Filled in as the copy runs (for the summary after a failure or an interrupt). */
  state?: CopyState;
  /** Flush the target after about this many bytes (default FLUSH_EVERY); 0: only at the end. */
  flushEvery?: number;
  /** Checked after each chunk (client/memory-budget.ts); absent: none. */
  memory?: MemoryBudget;
}

/**
 * The target is flushed after about this many bytes, while the copy goes on: a DST client
 * keeps every acknowledged write until a FLUSH covers it (it replays them if the export
 * restarts), so flushing as it goes keeps its memory flat for a copy of any size.
 */
export const FLUSH_EVERY = 32 * 1024 * 1024;
/** The replay bound a copy's DST client runs with (past it the engine flushes and waits). */
const COPY_REPLAY_MAX = 64 * 1024 * 1024;

/**
 * Copy `length` bytes (default: all of source) with `inflight` chunks in flight.
 * Each chunk moves once: read straight into the buffer the target will send (its
 * writeBuffer), zero chunks sent as WRITE_ZEROES. Memory: `inflight` chunks plus what the
 * target holds until its next flush (FLUSH_EVERY).
 * Throws DstdError naming the failed range; the copy ends with a flush of the target.
 */
export async function copyData(source: CopyEndpoint, target: CopyEndpoint, options: CopyOptions): Promise<CopyResult> {
  const total = source.size;
  const state = options.state ?? newCopyState();
  state.total = total;
  if (target.size < total) {
    throw new DstdError(
      "E_SIZE",
      `${target.label} (${target.size} bytes) is smaller than ${source.label} (${total} bytes)`,
    );
  }
  const chunk = Math.max(COPY_CHUNK_MIN, Math.min(options.chunk, source.chunkMax, target.chunkMax));
  const started = performance.now();
  let next = 0;
  let zeroBytes = 0;
  let failure: unknown = null;
  let sinceFlush = 0;
  const flushEvery = options.flushEvery ?? FLUSH_EVERY;
  let flushing: Promise<void> | null = null;
  const flushAsWeGo = (length: number) => {
    sinceFlush += length;
    if (flushEvery === 0 || sinceFlush < flushEvery || flushing !== null) return;
    sinceFlush = 0;
    flushing = target.flush().then(
      () => void (flushing = null),
      (error) => {
        failure ??= error;
        flushing = null;
      },
    );
  };
  const completed = new Set<number>();
  const finished = (offset: number, length: number) => {
    state.done += length;
    completed.add(offset);
    while (completed.has(state.contiguous)) {
      completed.delete(state.contiguous);
      state.contiguous = Math.min(total, state.contiguous + chunk);
    }
    options.progress?.(state.done, total);
  };
  const worker = async () => {
    while (failure === null && next < total && options.signal?.aborted !== true) {
      const offset = next;
      const length = Math.min(chunk, total - offset);
      next += length;
      try {
        if (source.isHole(offset, length)) {
          await target.zero(offset, length);
          zeroBytes += length;
        } else {
          let data: Uint8Array;
          if (source.readInto !== undefined) {
            data = target.writeBuffer?.(length) ?? new Uint8Array(length);
            await source.readInto(offset, data);
          } else data = await source.read(offset, length);
          if (isAllZero(data)) {
            target.unreserve?.(data);
            await target.zero(offset, length);
            zeroBytes += length;
          } else {
            await target.write(offset, data);
          }
        }
      } catch (error) {
        failure ??= error;
        return;
      }
      finished(offset, length);
      flushAsWeGo(length);
      options.memory?.check(length);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, options.inflight) }, worker));
  if (flushing !== null) await flushing;
  if (failure !== null) throw failure;
  if (options.signal?.aborted === true && state.done < total) throw new CopyInterrupted(state);
  await target.flush();
  return { bytes: total, zeroBytes, seconds: (performance.now() - started) / 1000 };
}
