/**
 * @module attach/kernel-links — the sockets between the kernel and dstd: for each, one
 * AF_UNIX socketpair whose one end goes to the kernel (NBD_ATTR_SOCKETS) and whose other end
 * is adopted into the event loop (transport/fd.ts) and served by the NBD front in kernel
 * mode (nbd/connection.ts) over the attachment's one StoragePort. A device has N of them
 * (`connections`); the set tracks which are live, reports when one closes, and pauses,
 * drains and closes them together.
 *
 * Memory: each link is one NbdConnection with its own bounds (nbd/transmission.ts), so N
 * links hold up to N times one connection's buffers.
 *
 * Must not: talk netlink (the phases do: attach/connect.ts, attach/takeover.ts), or close a
 * kernel end the caller still has to pass to the kernel (`open` returns them; the caller
 * closes them after CONNECT/RECONFIGURE, when the kernel holds its own reference).
 */
import type { Log } from "../lib/log.ts";
import { NbdConnection } from "../nbd/connection.ts";
import type { StoragePort } from "../storage/port.ts";
import { closeFd, socketPair } from "../sys/libc.ts";
import { adoptFd, type AdoptedFd } from "../transport/fd.ts";

export interface LinkServing {
  port: StoragePort;
  access: "ro" | "rw";
  exportName: string;
  log: Log;
}

/** New pairs, not yet given to the kernel: `kernelFds[i]` belongs with `links[i]`. */
export interface NewLinks {
  kernelFds: number[];
  links: AdoptedFd[];
}

export class KernelLinks {
  private readonly live = new Set<AdoptedFd>();
  private opened = 0;
  private retired = false;

  /** `onClosed` hears about every kept link that closes (not about ones never kept). */
  constructor(
    private readonly serving: LinkServing,
    private readonly onClosed: (link: AdoptedFd, reason: string | null) => void,
  ) {}

  /** Links currently served. */
  get count(): number {
    return this.live.size;
  }

  get all(): AdoptedFd[] {
    return [...this.live];
  }

  /** Bytes the kernel sent on the live links. */
  get bytesIn(): number {
    let total = 0;
    for (const link of this.live) total += link.bytesIn;
    return total;
  }

  /** Bytes waiting to go to the kernel on the live links. */
  get queuedBytes(): number {
    let total = 0;
    for (const link of this.live) total += link.sink.queuedBytes;
    return total;
  }

  /** Make `count` socket pairs for device `label` and serve our ends; on failure nothing is left open. */
  async open(count: number, label: string): Promise<NewLinks> {
    const made: NewLinks = { kernelFds: [], links: [] };
    try {
      for (let i = 0; i < count; i++) {
        const [kernelFd, ours] = socketPair();
        made.kernelFds.push(kernelFd);
        try {
          made.links.push(await this.serve(ours, label));
        } catch (error) {
          closeFd(ours);
          throw error;
        }
      }
      return made;
    } catch (error) {
      for (const fd of made.kernelFds) closeFd(fd);
      for (const link of made.links) link.terminate();
      throw error;
    }
  }

  /** The kernel took `link`: serve it as one of the device's sockets (closed at once after retire()). */
  keep(link: AdoptedFd): void {
    if (this.retired) return link.terminate(); // a takeover that finished after the attachment ended
    this.live.add(link);
    void link.closed.then((reason) => {
      if (!this.live.delete(link)) return;
      this.onClosed(link, reason);
    });
  }

  /**
   * Stop reading the kernel's requests on every live link (replies still go out), for good: a
   * plain pause was undone by the NBD connection's own flow control at its next completion,
   * and a handover under load kept taking requests it then left unanswered.
   */
  pauseAll(): void {
    for (const link of this.live) link.stopReading();
  }

  /** Read the kernel's requests again on every live link (a handover given up). */
  resumeAll(): void {
    for (const link of this.live) link.resumeReading();
  }

  /** Close every live link now, without telling `onClosed`. */
  terminateAll(): void {
    const links = [...this.live];
    this.live.clear();
    for (const link of links) link.terminate();
  }

  /** Close every live link and every link kept from now on: the attachment is over. */
  retire(): void {
    this.retired = true;
    this.terminateAll();
  }

  /** Resolves once every live link has closed (the kernel's DISCONNECT shuts them all). */
  async allClosed(): Promise<void> {
    await Promise.all([...this.live].map((link) => link.closed));
  }

  private serve(fd: number, label: string): Promise<AdoptedFd> {
    const n = ++this.opened;
    const peer = { transport: "unix" as const, address: `kernel:${label}#${n}`, port: 0 };
    const { port, access, exportName, log } = this.serving;
    return adoptFd(fd, (sink) =>
      new NbdConnection(sink, peer, {
        mode: "kernel",
        exportName,
        resolve: () => ({ target: port, access }),
        list: () => [],
        log: { info: (m) => log.debug(m), warn: (m) => log.warn(m) },
      }),
    );
  }
}
