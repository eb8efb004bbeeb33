/**
 * @module transport/fd — a stream socket created outside Bun's networking (one end of a
 * socketpair from sys/libc, whose other end goes to the kernel's NBD driver) driven by Bun's
 * event loop through `Bun.connect({ fd })`, behind the
 * same Sink/ConnectionHandler boundary as transport/tcp.ts.
 *
 * Bun's socket.write() buffers nothing: QueuedSink queues what the kernel
 * does not take and flushes it on `drain`, so protocol code writes whole replies and watches
 * `queuedBytes` for backpressure.
 *
 * Must not: close the fd itself once adopted (Bun owns it and closes it), or do any
 * blocking call: the same loop serves the kernel's requests, and a blocked loop is a hung
 * /dev/nbdN.
 */
import { DstdError, errorMessage } from "../lib/errors.ts";
// Bun.connect({ fd }) is typed by the module augmentation in kernel/genl-socket.ts (part of the program).
import { QueuedSink } from "./queued-sink.ts";
import { noteReceived } from "./receive-garbage.ts";
import type { ConnectionHandler, Sink } from "./types.ts";

/** A socket fd adopted into the event loop, with what its owner needs to watch it. */
export interface AdoptedFd {
  readonly sink: Sink;
  /** Bytes received so far (for a kernel socket: proof that the kernel uses it). */
  readonly bytesIn: number;
  /** Resolves on the first byte received. */
  readonly firstData: Promise<void>;
  /** Resolves once the connection is gone, with the reason (null: orderly close). */
  readonly closed: Promise<string | null>;
  readonly isClosed: boolean;
  /** Our side ended the connection gracefully (the handler called sink.end()). */
  readonly endedLocally: boolean;
  /** Close now, discarding anything queued. */
  terminate(): void;
  /** Read nothing more from the peer, whatever the handler's flow control asks later (replies still go out). */
  stopReading(): void;
  /** Undo stopReading(). */
  resumeReading(): void;
}

/**
 * Hand `fd` (a connected stream socket) to Bun's event loop and attach the handler built by
 * `makeHandler`. On success Bun owns the fd; on failure the caller still does.
 */
export async function adoptFd(fd: number, makeHandler: (sink: Sink) => ConnectionHandler): Promise<AdoptedFd> {
  const sink = new QueuedSink();
  let handler: ConnectionHandler | null = null;
  let early: Uint8Array[] | null = [];
  let bytesIn = 0;
  let isClosed = false;
  let markFirst: () => void = () => {};
  let markClosed: (reason: string | null) => void = () => {};
  const firstData = new Promise<void>((resolve) => (markFirst = resolve));
  const closed = new Promise<string | null>((resolve) => (markClosed = resolve));
  const finish = (reason: string | null): void => {
    if (isClosed) return;
    isClosed = true;
    handler?.onClose(reason);
    sink.discard();
    markClosed(reason);
  };
  try {
    sink.socket = await Bun.connect({
      fd,
      socket: {
        binaryType: "uint8array",
        data(_socket, chunk) {
          if (isClosed) return;
          if (bytesIn === 0) markFirst();
          bytesIn += chunk.length;
          noteReceived(chunk.length);
          if (handler !== null) handler.onData(chunk);
          else early?.push(chunk); // before the handler exists (cannot happen for the kernel, which waits for CONNECT)
        },
        drain() {
          if (!isClosed && sink.flush()) handler?.onDrain();
        },
        close(_socket, error) {
          finish(error ? errorMessage(error) : null);
        },
        error(socket, error) {
          finish(errorMessage(error));
          socket.terminate(); // also called when a handler threw: the socket is still open then
        },
        end(socket) {
          socket.end(); // the peer shut its side: close ours too (a half-open NBD socket is useless)
        },
      },
    });
  } catch (error) {
    throw new DstdError("E_SOCKET", `cannot drive socket fd ${fd}: ${errorMessage(error)}`, { cause: error });
  }
  handler = makeHandler(sink);
  const pending = early;
  early = null;
  for (const chunk of pending) if (!isClosed) handler.onData(chunk);
  return {
    sink,
    get bytesIn() {
      return bytesIn;
    },
    firstData,
    closed,
    get isClosed() {
      return isClosed;
    },
    get endedLocally() {
      return sink.endCalled;
    },
    stopReading() {
      sink.freeze();
    },
    resumeReading() {
      sink.thaw();
    },
    terminate() {
      sink.destroy();
      finish("terminated");
    },
  };
}
