/**
 * @module transport/direct-receive — outgoing TCP and Unix-domain connections over node:net
 * with `onread`, so that received bytes land where the handler wants them (issue 10 item 3:
 * READ replies straight into the buffer the NBD front sends) instead of in a fresh buffer
 * Bun makes per read and the protocol then copies (docs/performance.md "Attach chain").
 *
 * Before each read the handler's receiveTarget() may name the rest of a payload's destination;
 * the bytes then go there and onDirect(count) reports them. Otherwise the read lands in a
 * slab: successive reads take successive, never reused, parts of it, and a new slab replaces
 * it when too little is left. So every chunk onData() gets stays valid after the callback (as
 * with Bun's fresh buffers: the decoders hand out views of it), and a slab is freed by the GC
 * once no view of it is alive. Bun calls onread's buffer function right before each read and
 * its callback right after, with nothing in between (measured with Bun 1.4: one call per read).
 *
 * Sending: socket.write() with a callback; the writer's `release` runs when node:net is done
 * with the bytes (never earlier: a pooled buffer must not be refilled while it may still be
 * sent). A destroyed socket may never call it; the buffer is then left to the GC.
 * Only outgoing connections can: Bun's node:net createServer ignores `onread`, and so does
 * net.connect({ fd }) (measured with Bun 1.4), so the NBD front's listener stays on Bun.listen.
 *
 * Not used by any command yet: `dstd attach` dialling its export through it (READ replies
 * straight into the front's frames) was measured slower than Bun.connect in the same run —
 * seq read 1 MiB 116–747 against 196–824 MiB/s per round, rand read 4 KiB 14.6–19.4 against
 * 18.6–25.4 thousand IOPS (docs/performance.md "Attach chain: hand-over and direct receive"): node:net's
 * costs per read and per write (not told apart) outweigh the copy saved. Kept, with its tests, as the measured alternative.
 */
import net from "node:net";
import type { ListenAddress } from "../lib/address.ts";
import { DstdError, errorMessage } from "../lib/errors.ts";
import { noteReceived } from "./receive-garbage.ts";
import type { ConnectionHandler, Sink } from "./types.ts";
import { describeListenAddress } from "./tcp.ts";

/** Receive slab size, and the least room a read is given before a new slab is taken. */
const SLAB_BYTES = 256 * 1024;
const MIN_READ_BYTES = 64 * 1024;

class NetSink implements Sink {
  private ending = false;

  constructor(private readonly socket: net.Socket) {}

  get queuedBytes(): number {
    return this.socket.writableLength;
  }

  write(bytes: Uint8Array, release?: () => void): void {
    if (this.ending || bytes.length === 0 || this.socket.destroyed) {
      release?.();
      return;
    }
    if (release === undefined) this.socket.write(bytes);
    else this.socket.write(bytes, () => release());
  }

  end(): void {
    if (this.ending) return;
    this.ending = true;
    this.socket.end();
  }

  destroy(): void {
    this.ending = true;
    this.socket.destroy();
  }

  pause(): void {
    this.socket.pause();
  }

  resume(): void {
    this.socket.resume();
  }
}

/**
 * Open an outgoing connection reading through onread. Resolves with the Sink once connected;
 * rejects with a DstdError naming the address on refusal / no route / DNS failure.
 */
export function connectDirect(address: ListenAddress, makeHandler: (sink: Sink) => ConnectionHandler): Promise<Sink> {
  return new Promise((resolve, reject) => {
    let handler: ConnectionHandler | null = null;
    let connected = false;
    let closed = false;
    let failure: string | null = null;
    let slab = new Uint8Array(SLAB_BYTES);
    let used = 0;
    /** What the last buffer() call gave: the handler's target, or null for the slab. */
    let direct: Uint8Array | null = null;
    const onread = {
      buffer: (): Uint8Array => {
        direct = closed ? null : (handler?.receiveTarget?.() ?? null);
        if (direct !== null) return direct;
        if (SLAB_BYTES - used < MIN_READ_BYTES) {
          slab = new Uint8Array(SLAB_BYTES);
          used = 0;
        }
        return slab.subarray(used);
      },
      callback: (count: number, _buffer: Uint8Array): boolean => {
        if (count <= 0) return true;
        const target = direct;
        direct = null;
        if (closed || handler === null) return true;
        if (target !== null) {
          handler.onDirect!(count);
          return true;
        }
        const chunk = slab.subarray(used, used + count);
        used += count;
        noteReceived(count);
        handler.onData(chunk);
        return true;
      },
    };
    const options =
      address.transport === "unix" ? { path: address.path, onread } : { host: address.host, port: address.port, onread };
    const socket = net.connect(options as net.NetConnectOpts);
    const sink = new NetSink(socket);
    socket.setNoDelay(true);
    socket.on("connect", () => {
      connected = true;
      handler = makeHandler(sink);
      resolve(sink);
    });
    socket.on("drain", () => {
      if (!closed) handler?.onDrain();
    });
    socket.on("end", () => socket.end()); // the peer shut its side: close ours too
    socket.on("error", (error) => {
      failure ??= errorMessage(error);
    });
    socket.on("close", () => {
      if (closed) return;
      closed = true;
      if (!connected) {
        const reason = failure ?? "connection closed";
        reject(new DstdError("E_CONNECT", `cannot connect to ${describeListenAddress(address)}: ${reason}`));
        return;
      }
      handler?.onClose(failure);
    });
  });
}
