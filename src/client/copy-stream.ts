/**
 * @module client/copy-stream — `dstd copy URL -` and `dstd copy - URL`: an export to stdout
 * and stdin to an export. A stream has no size and no random access, so these are
 * sequential: reads run `inflight` ahead but their data leaves in offset order, and stdin is
 * cut into chunks that are written with `inflight` in flight. All-zero chunks from stdin are
 * sent as WRITE_ZEROES, like client/copy.ts does for files.
 */
import { DstdError } from "../lib/errors.ts";
import { formatSize } from "../lib/size.ts";
import { CopyInterrupted, isAllZero, newCopyState, type CopyEndpoint, type CopyOptions, type CopyResult } from "./copy.ts";

/** Where stdout-bound bytes go: resolves once the bytes were accepted (backpressure). */
export type ByteSink = (bytes: Uint8Array) => Promise<void>;

/** Bytes read so far from a stream, `null` at its end. */
export type ByteSource = () => Promise<Uint8Array | null>;

/**
 * process.stdout (or `out`) as a ByteSink: a write resolves once the stream has handed its
 * bytes on (its callback), so every byte counted as copied was accepted; EPIPE, ENOSPC and the
 * like reject it, named. One "error" listener stays for the whole copy: a stream emits
 * "error" after the failed write's callback has run, and an "error" nobody listens to is an
 * uncaught exception (Node's stream and events documentation), which printed a raw stack trace
 * after dstd's own message. Later writes after a failure reject at once with the same error.
 */
export function stdoutSink(out: NodeJS.WritableStream = process.stdout): ByteSink {
  let failed: DstdError | null = null;
  const waiting = new Set<(error: DstdError) => void>();
  const fail = (error: Error) => {
    failed ??= new DstdError("E_STDOUT", `cannot write to stdout: ${error.message}`);
    for (const reject of waiting) reject(failed);
    waiting.clear();
  };
  out.on("error", fail);
  return (bytes) =>
    new Promise((resolve, reject) => {
      if (failed !== null) return reject(failed);
      waiting.add(reject);
      out.write(bytes, (error) => {
        if (error) return fail(error);
        waiting.delete(reject);
        resolve();
      });
    });
}

/** stdin as a ByteSource. */
export function stdinSource(): ByteSource {
  const reader = Bun.stdin.stream().getReader();
  return async () => {
    const { value, done } = await reader.read();
    return done ? null : value;
  };
}

/** Copy all of `source` to `sink` in offset order, reading up to `inflight` chunks ahead. */
export async function copyToStream(source: CopyEndpoint, sink: ByteSink, options: CopyOptions): Promise<CopyResult> {
  const total = source.size;
  const state = options.state ?? newCopyState();
  state.total = total;
  const chunk = Math.max(4096, Math.min(options.chunk, source.chunkMax));
  const started = performance.now();
  const ahead: Array<Promise<Uint8Array>> = [];
  let next = 0;
  let zeroBytes = 0;
  const fill = () => {
    while (ahead.length < Math.max(1, options.inflight) && next < total && options.signal?.aborted !== true) {
      const offset = next;
      const length = Math.min(chunk, total - offset);
      next += length;
      const read = source.isHole(offset, length) ? Promise.resolve(new Uint8Array(length)) : source.read(offset, length);
      read.catch(() => {}); // awaited in order below; do not report it unhandled meanwhile
      ahead.push(read);
    }
  };
  fill();
  while (ahead.length > 0) {
    const data = await ahead.shift()!;
    if (isAllZero(data)) zeroBytes += data.length;
    await sink(data);
    state.done += data.length;
    state.contiguous = state.done;
    options.progress?.(state.done, total);
    options.memory?.check(data.length);
    fill();
  }
  if (state.done < total) throw new CopyInterrupted(state);
  return { bytes: total, zeroBytes, seconds: (performance.now() - started) / 1000 };
}

/**
 * Copy a stream into `target` from offset 0 until the stream ends. A stream longer than the
 * target is an error naming both sizes (after what fits was written); shorter is fine.
 * The total is unknown until the end, so progress reports (done, 0).
 */
export async function copyFromStream(read: ByteSource, label: string, target: CopyEndpoint, options: CopyOptions): Promise<CopyResult> {
  const total = target.size;
  const state = options.state ?? newCopyState();
  state.total = 0; // unknown: a stream says how long it is only by ending
  const chunk = Math.max(4096, Math.min(options.chunk, target.chunkMax));
  const started = performance.now();
  const inflight = new Set<Promise<void>>();
  let failure: unknown = null;
  let zeroBytes = 0;
  let offset = 0;
  let pending: Uint8Array[] = [];
  let pendingBytes = 0;
  let ended = false;
  const issue = (data: Uint8Array, at: number) => {
    const zero = isAllZero(data);
    if (zero) zeroBytes += data.length;
    const op = (zero ? target.zero(at, data.length) : target.write(at, data)).then(
      () => {
        state.done += data.length;
        state.contiguous = state.done; // approximately: completions may come out of order
        options.progress?.(state.done, 0);
        options.memory?.check(data.length);
      },
      (error) => {
        failure ??= error;
      },
    );
    const tracked = op.finally(() => inflight.delete(tracked));
    inflight.add(tracked);
  };
  const take = (length: number): Uint8Array => {
    const out = new Uint8Array(length);
    let filled = 0;
    while (filled < length) {
      const head = pending[0]!;
      const n = Math.min(head.length, length - filled);
      out.set(head.subarray(0, n), filled);
      filled += n;
      if (n === head.length) pending.shift();
      else pending[0] = head.subarray(n);
    }
    pendingBytes -= length;
    return out;
  };
  // A read from a stream that stays open (a pipe nobody closes) must not outlast Ctrl-C.
  const aborted = new Promise<null>((resolve) => {
    if (options.signal?.aborted) resolve(null);
    options.signal?.addEventListener("abort", () => resolve(null), { once: true });
  });
  const isAborted = () => options.signal?.aborted === true;
  while (failure === null && !isAborted()) {
    if (!ended && pendingBytes < chunk) {
      const bytes = await Promise.race([read(), aborted]);
      if (isAborted()) break;
      if (bytes === null) ended = true;
      else if (bytes.length > 0) {
        pending.push(bytes);
        pendingBytes += bytes.length;
      }
      continue;
    }
    if (pendingBytes === 0) break;
    const length = Math.min(chunk, pendingBytes);
    if (offset + length > total) {
      failure = new DstdError(
        "E_SIZE",
        `${label} is longer than ${target.label} (${formatSize(total)}, ${total} bytes): the first ${total} bytes were written, the rest was not`,
      );
      break;
    }
    issue(take(length), offset);
    offset += length;
    while (inflight.size >= Math.max(1, options.inflight)) await Promise.race(inflight);
  }
  await Promise.all(inflight);
  pending = [];
  if (failure === null && options.signal?.aborted === true && !ended) throw new CopyInterrupted(state);
  if (failure !== null) {
    if (failure instanceof DstdError && failure.code === "E_SIZE") await target.flush().catch(() => {});
    throw failure;
  }
  await target.flush();
  return { bytes: state.done, zeroBytes, seconds: (performance.now() - started) / 1000 };
}
