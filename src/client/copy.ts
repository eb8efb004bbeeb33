/**
 * @module client/copy — `dstd copy SRC DST`: move bytes between a local file/device and an
 * export (either direction, or export to export) with many requests in flight.
 *
 * Both ends are CopyEndpoints. All-zero chunks are not written as data: a remote target gets
 * WRITE_ZEROES (the export may punch a hole), a local file target gets a punched hole, so a
 * sparse source stays sparse. The copy ends with a FLUSH of the target; only then is it done.
 */
import { openBackend } from "../storage/open.ts";
import type { Backend } from "../storage/local/backend.ts";
import type { ExportUrl } from "../lib/address.ts";
import { DstdError } from "../lib/errors.ts";
import type { EngineLog } from "../engine/client-engine.ts";
import type { EngineCounters } from "../engine/counters.ts";
import type { EngineOptions } from "../engine/options.ts";
import { DstClient } from "./dst-client.ts";
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
  write(offset: number, data: Uint8Array): Promise<void>;
  /** Make the range read as zeroes, preferably without allocating. */
  zero(offset: number, length: number): Promise<void>;
  /** true when the range is known to read as zeroes (a hole): no need to read it. */
  isHole(offset: number, length: number): boolean;
  flush(): Promise<void>;
  close(): Promise<void>;
  /** Reliability counters of a remote endpoint's engine (resends, reconnects, replays, ...). */
  counters?: () => EngineCounters;
}

export function backendEndpoint(label: string, backend: Backend): CopyEndpoint {
  return {
    label,
    size: backend.size,
    chunkMax: 4 * 1024 * 1024,
    async read(offset, length) {
      const target = new Uint8Array(length);
      backend.read(offset, target);
      return target;
    },
    async readInto(offset, into) {
      backend.read(offset, into);
    },
    async write(offset, data) {
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
      backend.flush();
    },
    async close() {
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
    write: (offset, data) => client.write(offset, data),
    zero: (offset, length) => client.zero(offset, length),
    isHole: () => false,
    flush: () => client.flush(),
    close: () => client.close(),
    counters: () => client.engine.counters,
  };
}

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
  };
}

export interface OpenEndpointOptions {
  log: EngineLog;
  engine?: Partial<EngineOptions>;
  /** Local target: create it with this size when it does not exist. */
  createSize?: number;
  writable: boolean;
}

export async function openEndpoint(spec: { url: ExportUrl } | { path: string }, options: OpenEndpointOptions): Promise<CopyEndpoint> {
  if ("path" in spec) {
    const isDevice = spec.path.startsWith("/dev/");
    const backend = isDevice
      ? openBackend({ kind: "device", path: spec.path }, !options.writable)
      : openBackend({ kind: "file", path: spec.path, size: options.createSize }, !options.writable);
    return backendEndpoint(spec.path, backend);
  }
  const url = spec.url;
  const address =
    url.transport === "unix" ? { transport: "unix" as const, path: url.path } : { transport: "tcp" as const, host: url.host, port: url.port };
  if (url.protocol === "nbd") {
    const client = await NbdClient.open({ address, exportName: url.exportName, log: options.log });
    if (options.writable && client.readOnly) {
      await client.close();
      throw new DstdError("E_READ_ONLY", `${client.where} is read-only (the server set NBD_FLAG_READ_ONLY)`);
    }
    return nbdEndpoint(client.where, client);
  }
  // A copy flushes as it goes (FLUSH_EVERY), so it never needs the full replay bound: keeping
  // it to COPY_REPLAY_MAX holds the copy's memory flat whatever its size.
  const replayBufferBytes = Math.min(options.engine?.replayBufferBytes ?? COPY_REPLAY_MAX, COPY_REPLAY_MAX);
  const client = await DstClient.open({ ...options.engine, replayBufferBytes, address, exportName: url.exportName, log: options.log });
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

function isAllZero(data: Uint8Array): boolean {
  if (data.byteOffset % 8 === 0 && data.length % 8 === 0) {
    const words = new BigUint64Array(data.buffer, data.byteOffset, data.length / 8);
    for (let i = 0; i < words.length; i++) if (words[i] !== 0n) return false;
    return true;
  }
  for (let i = 0; i < data.length; i++) if (data[i] !== 0) return false;
  return true;
}

/**
 * The target is flushed after about this many bytes, while the copy goes on: a DST client
 * keeps every acknowledged write until a FLUSH covers it (it replays them if the export
 * restarts), so flushing as it goes keeps its memory flat for a copy of any size.
 */
const FLUSH_EVERY = 32 * 1024 * 1024;
/** The replay bound a copy's DST client runs with (past it the engine flushes and waits). */
const COPY_REPLAY_MAX = 64 * 1024 * 1024;

/**
 * Copy `length` bytes (default: all of source) with `inflight` chunks in flight.
 * Each chunk moves once: read straight into the buffer the target will send (its
 * writeBuffer), zero chunks sent as WRITE_ZEROES. Memory: `inflight` chunks plus what the
 * target holds until its next flush (FLUSH_EVERY).
 * Throws DstdError naming the failed range; the copy ends with a flush of the target.
 */
export async function copyData(
  source: CopyEndpoint,
  target: CopyEndpoint,
  options: { chunk: number; inflight: number; progress?: CopyProgress },
): Promise<CopyResult> {
  const total = source.size;
  if (target.size < total) {
    throw new DstdError(
      "E_SIZE",
      `${target.label} (${target.size} bytes) is smaller than ${source.label} (${total} bytes)`,
    );
  }
  const chunk = Math.max(4096, Math.min(options.chunk, source.chunkMax, target.chunkMax));
  const started = performance.now();
  let next = 0;
  let done = 0;
  let zeroBytes = 0;
  let failure: unknown = null;
  let sinceFlush = 0;
  let flushing: Promise<void> | null = null;
  const flushAsWeGo = (length: number) => {
    sinceFlush += length;
    if (sinceFlush < FLUSH_EVERY || flushing !== null) return;
    sinceFlush = 0;
    flushing = target.flush().then(
      () => void (flushing = null),
      (error) => {
        failure ??= error;
        flushing = null;
      },
    );
  };
  const worker = async () => {
    while (failure === null && next < total) {
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
      done += length;
      flushAsWeGo(length);
      options.progress?.(done, total);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, options.inflight) }, worker));
  if (flushing !== null) await flushing;
  if (failure !== null) throw failure;
  await target.flush();
  return { bytes: total, zeroBytes, seconds: (performance.now() - started) / 1000 };
}
