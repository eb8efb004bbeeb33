/**
 * @module kernel/genl-socket — an event-driven generic netlink socket. The fd comes from
 * sys/libc (socket(AF_NETLINK, SOCK_RAW|SOCK_CLOEXEC, NETLINK_GENERIC) + bind), then Bun's
 * event loop drives it through `Bun.connect({ fd })` (the fd is adopted like transport/fd.ts does with socket pairs): requests are
 * awaited, replies are matched by sequence number, multicast notifications go to a callback.
 *
 * Must not: block the event loop waiting for the kernel (no blocking recv), or know anything
 * about a particular family beyond the controller's GETFAMILY.
 *
 * Caveat every caller must respect: sending a generic netlink request runs the family's
 * handler synchronously inside the send syscall. A handler that waits for in-flight block I/O
 * (nbd RECONFIGURE with a new size freezes the queue) therefore blocks this thread even on a
 * non-blocking socket, and deadlocks if this thread also serves that device (docs/kernel.md §4).
 * Such requests belong on a worker; CONNECT, RECONFIGURE without a size, DISCONNECT and STATUS
 * do not wait for the device's I/O.
 */
import type { Socket } from "bun";
import { assert } from "../lib/assert.ts";
import { errnoMessage } from "../lib/errno.ts";
import { DstdError } from "../lib/errors.ts";
import * as libc from "../sys/libc.ts";
import { buildGetFamily, parseFamilyReply, type FamilyInfo } from "./nbd-genl.ts";
import {
  NLMSG_DONE,
  NLMSG_ERROR,
  NLMSG_HDRLEN,
  NLMSG_MIN_TYPE,
  NLM_F_ACK,
  parseAck,
  parseMessages,
  type NetlinkMessage,
} from "./netlink.ts";

// bun-types defines FdSocketOptions but does not wire it to connect(); the runtime accepts it.
declare module "bun" {
  function connect<Data = undefined>(options: FdSocketOptions<Data>): Promise<Socket<Data>>;
}

/** setsockopt(SOL_NETLINK, NETLINK_NO_ENOBUFS): a multicast overflow must not error the socket. */
const NETLINK_NO_ENOBUFS = 5;
const DEFAULT_TIMEOUT_MS = 10_000;

/** The kernel answered a request with NLMSG_ERROR. `errno` is positive (ENOENT = 2). */
export class NetlinkError extends DstdError {
  readonly request: string;
  /** NETLINK_EXT_ACK text, when the kernel gave one. */
  readonly extack: string | null;
  constructor(request: string, errno: number, extack: string | null) {
    super("E_NETLINK", `netlink ${request}: ${errnoMessage(errno)}${extack ? `: ${extack}` : ""}`, { errno });
    this.name = "NetlinkError";
    this.request = request;
    this.extack = extack;
  }
}

export interface GenlSocketOptions {
  /** Messages that answer no pending request (multicast notifications carry seq 0). */
  onMulticast?: (message: NetlinkMessage) => void;
  /** A datagram that did not parse; the socket keeps running. */
  onMalformed?: (reason: string) => void;
  /** The socket closed (after close(), or on a socket error). */
  onClose?: (reason: string | null) => void;
  /** How long a request may wait for its ack before it fails (default 10 s). */
  timeoutMs?: number;
}

interface Pending {
  what: string;
  replies: NetlinkMessage[];
  resolve: (replies: NetlinkMessage[]) => void;
  reject: (error: Error) => void;
  timer: ReturnType<typeof setTimeout>;
}

export class GenlSocket {
  private readonly pending = new Map<number, Pending>();
  private nextSeq = 1;
  private closedReason: string | null | undefined = undefined;
  private socket!: Socket<undefined>;

  private constructor(
    readonly fd: number,
    private readonly options: GenlSocketOptions,
  ) {}

  /** Open, bind and hand the fd to Bun's event loop (which then owns and closes it). */
  static async open(options: GenlSocketOptions = {}): Promise<GenlSocket> {
    const fd = libc.socket(libc.AF_NETLINK, libc.SOCK_RAW | libc.SOCK_CLOEXEC, libc.NETLINK_GENERIC);
    let owner: GenlSocket;
    try {
      libc.bindNetlink(fd);
      try {
        libc.setSocketOptionInt(fd, libc.SOL_NETLINK, libc.NETLINK_EXT_ACK, 1); // textual errors
      } catch {
        // Older kernels lack extended acks; errors then carry only the errno.
      }
      owner = new GenlSocket(fd, options);
    } catch (error) {
      libc.closeFd(fd);
      throw error;
    }
    try {
      owner.socket = await Bun.connect({
        fd,
        socket: {
          binaryType: "uint8array",
          data: (_s, chunk) => owner.onDatagram(chunk),
          close: (_s, error) => owner.onClosed(error ? String(error) : null),
          error: (_s, error) => owner.onClosed(`netlink socket error: ${error.message}`),
        },
      });
    } catch (error) {
      libc.closeFd(fd); // Bun did not adopt it
      throw error;
    }
    return owner;
  }

  get closed(): boolean {
    return this.closedReason !== undefined;
  }

  /**
   * Send one request (built with seq 0; this sets its seq and NLM_F_ACK in place) and resolve
   * with the messages answering it, once its ack (or NLMSG_DONE, for dumps) arrives. A kernel
   * error rejects with NetlinkError carrying the errno.
   */
  request(message: Uint8Array, what = "request"): Promise<NetlinkMessage[]> {
    if (this.closedReason !== undefined) {
      return Promise.reject(new DstdError("E_NETLINK", `netlink ${what}: the socket is closed`));
    }
    assert(message.length >= NLMSG_HDRLEN, "request(): not a netlink message");
    const view = new DataView(message.buffer, message.byteOffset, message.byteLength);
    const seq = this.takeSeq();
    view.setUint16(6, view.getUint16(6, true) | NLM_F_ACK, true);
    view.setUint32(8, seq, true);
    return new Promise<NetlinkMessage[]>((resolve, reject) => {
      const timeoutMs = this.options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
      const timer = setTimeout(() => {
        this.pending.delete(seq);
        reject(new DstdError("E_TIMEOUT", `netlink ${what}: no answer from the kernel within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(seq, { what, replies: [], resolve, reject, timer });
      const written = this.socket.write(message);
      if (written !== message.length) {
        this.settle(seq, new DstdError("E_NETLINK", `netlink ${what}: send to the kernel failed (${written} of ${message.length} bytes)`));
      }
    });
  }

  /** Resolve a generic netlink family by name (CTRL_CMD_GETFAMILY). ENOENT → NetlinkError errno 2. */
  async resolveFamily(name: string): Promise<FamilyInfo> {
    const replies = await this.request(buildGetFamily(name), `GETFAMILY "${name}"`);
    const reasons: string[] = [];
    for (const reply of replies) {
      const parsed = parseFamilyReply(reply);
      if (parsed.ok) return parsed.value;
      reasons.push(parsed.reason);
    }
    throw new DstdError("E_NETLINK", `netlink GETFAMILY "${name}": no usable reply (${reasons.join("; ") || "empty"})`);
  }

  /** Join a multicast group (NETLINK_ADD_MEMBERSHIP); notifications go to onMulticast. */
  subscribe(groupId: number): void {
    libc.setSocketOptionInt(this.fd, libc.SOL_NETLINK, libc.NETLINK_ADD_MEMBERSHIP, groupId);
    try {
      libc.setSocketOptionInt(this.fd, libc.SOL_NETLINK, NETLINK_NO_ENOBUFS, 1);
    } catch {
      // Best effort: without it a receive-queue overflow surfaces as a socket error.
    }
  }

  /** Close the socket; pending requests fail. Idempotent. */
  close(): void {
    if (this.closedReason !== undefined) return;
    this.socket.terminate();
    this.onClosed(null); // in case Bun reports the close later (or not at all)
  }

  private takeSeq(): number {
    const seq = this.nextSeq;
    this.nextSeq = seq >= 0xffffffff ? 1 : seq + 1; // 0 is what multicast uses: never ours
    return seq;
  }

  private onDatagram(chunk: Uint8Array): void {
    const { messages, error } = parseMessages(chunk);
    if (error !== null) this.options.onMalformed?.(error);
    for (const message of messages) this.onMessage(message);
  }

  private onMessage(message: NetlinkMessage): void {
    const pending = message.seq === 0 ? undefined : this.pending.get(message.seq);
    if (pending === undefined) {
      // seq 0 from the kernel = a notification; other unknown seqs are late answers to
      // requests that already timed out, and are dropped.
      if (message.seq === 0 && message.type >= NLMSG_MIN_TYPE) this.options.onMulticast?.(message);
      return;
    }
    if (message.type === NLMSG_DONE) return this.settle(message.seq, null);
    if (message.type !== NLMSG_ERROR) {
      pending.replies.push(message);
      return;
    }
    const ack = parseAck(message);
    if (!ack.ok) {
      this.settle(message.seq, new DstdError("E_NETLINK", `netlink ${pending.what}: malformed acknowledgement (${ack.reason})`));
    } else if (ack.value.errno === 0) {
      this.settle(message.seq, null);
    } else {
      this.settle(message.seq, new NetlinkError(pending.what, ack.value.errno, ack.value.extackMessage));
    }
  }

  private settle(seq: number, error: Error | null): void {
    const pending = this.pending.get(seq);
    if (pending === undefined) return;
    this.pending.delete(seq);
    clearTimeout(pending.timer);
    if (error === null) pending.resolve(pending.replies);
    else pending.reject(error);
  }

  private onClosed(reason: string | null): void {
    if (this.closedReason !== undefined) return;
    this.closedReason = reason;
    for (const seq of [...this.pending.keys()]) {
      this.settle(seq, new DstdError("E_NETLINK", `netlink ${this.pending.get(seq)?.what}: socket closed${reason ? ` (${reason})` : ""}`));
    }
    this.options.onClose?.(reason);
  }
}
