/**
 * @module attach/attachment — one kernel attachment: the remote export as /dev/nbdN, with
 * dstd in the data path. It walks the lifecycle of attach/phases.ts; each phase's work is in
 * its own file (geometry.ts, connect.ts, takeover.ts, leave.ts), this file holds the state
 * that lives across them (device, backend identifier, geometry, sockets, counters) and the
 * moves between them.
 *
 * The kernel has N sockets to us (`connections`, NBD_ATTR_SOCKETS; attach/kernel-links.ts),
 * each one end of a socketpair served by the NBD front in kernel mode over ONE engine-backed
 * port (attach/shared-port.ts says why that makes NBD_FLAG_CAN_MULTI_CONN true). The count
 * is fixed at CONNECT; a takeover gives the kernel as many as the device has.
 *
 * Verbs and signals (docs/kernel.md §7 says what each one does to the device):
 * - detach (SIGTERM/SIGINT, `dstd detach`): the device goes away (attach/leave.ts).
 * - handover (SIGUSR2) and SIGKILL: the daemon goes, the device stays; I/O waits up to the
 *   dead-connection timeout for the next `dstd attach` of the same device/URL, which takes it
 *   over with NBD_CMD_RECONFIGURE and the same backend identifier (attach/takeover.ts).
 * - resize (`resize()`, and on a takeover when the export grew): a new device size through
 *   netlink from a worker (kernel/resize.ts), never from this thread (docs/kernel.md §4).
 *
 * Must not: block the event loop (it serves the kernel's I/O; our own device I/O — probe
 * read, fsync, queue limits — goes through the fs thread pool), or send a size-changing
 * RECONFIGURE from this thread.
 */
import { randomBytes } from "node:crypto";
import { DstdError, errorMessage } from "../lib/errors.ts";
import type { Log } from "../lib/log.ts";
import { devicePath, readDeviceSysfs, readSocketCount, type NbdControl } from "../kernel/device.ts";
import { resizeDevice } from "../kernel/resize.ts";
import { transmissionFlags } from "../nbd/handshake.ts";
import type { StoragePort } from "../storage/port.ts";
import type { AdoptedFd } from "../transport/fd.ts";
import { TxFlag } from "../wire/nbd/constants.ts";
import { logicalBlockSize, requeueCheckMs, tuneQueue } from "./block-device.ts";
import { connectDevice } from "./connect.ts";
import { within } from "./deadline.ts";
import type { ExportLink } from "./export-link.ts";
import { deviceGeometry, deviceSizeFor } from "./geometry.ts";
import { KernelLinks } from "./kernel-links.ts";
import { detachDevice, flushExport, handOver, type LeaveStep } from "./leave.ts";
import type { LinkDeadWatch } from "./link-dead.ts";
import { PhaseTracker } from "./phases.ts";
import type { KernelPlan } from "./plan.ts";
import { SocketsShareOnePort } from "./shared-port.ts";
import { linkCounters, makeBackendId, removeState, writeState, type AttachmentState } from "./state.ts";
import { takeOver } from "./takeover.ts";

export interface KernelAttachOptions {
  /** The export URL, formatted (lib/address.ts formatExportUrl). */
  url: string;
  exportName: string;
  stateDir: string;
  /** How long the kernel holds I/O for a new daemon after ours dies (NBD_ATTR_DEAD_CONN_TIMEOUT). */
  deadConnTimeoutSec: number;
  /** Sockets to give the kernel at CONNECT (a takeover uses the count the device has). */
  connections: number;
  log: Log;
}

/** Why a running attachment ended by itself (the device was disconnected, or lost for good). */
export interface AttachmentEnd {
  error: DstdError | null;
  reason: string;
}

export type StartPlan = Exclude<KernelPlan, { action: "already" | "refuse" }>;

export class KernelAttachment {
  index = -1;
  backendId = "";
  /** Resolves when the attachment ends without detach()/handover(). */
  readonly ended: Promise<AttachmentEnd>;
  private markEnded: (end: AttachmentEnd) => void = () => {};
  private attachId = "";
  private size = 0;
  private blockSize = 512;
  /** Sockets the device has (fixed at CONNECT). */
  private sockets = 1;
  private restarts = 0;
  private linkDead = 0;
  private readonly phase = new PhaseTracker();
  private reporter: ReturnType<typeof setInterval> | null = null;
  private resizing = false;
  private readonly links: KernelLinks;
  private readonly port: StoragePort;
  private readonly access: "ro" | "rw";
  private readonly serverFlags: number;
  private readonly startedAt = new Date().toISOString();

  constructor(
    private readonly o: KernelAttachOptions,
    private readonly control: NbdControl,
    private readonly exportLink: ExportLink,
    private readonly watch: LinkDeadWatch,
  ) {
    this.ended = new Promise((resolve) => (this.markEnded = resolve));
    this.port = new SocketsShareOnePort(exportLink.port);
    this.access = this.port.readOnly ? "ro" : "rw";
    this.serverFlags = transmissionFlags(this.port, this.access, false);
    this.links = new KernelLinks({ port: this.port, access: this.access, exportName: o.exportName, log: o.log }, (link, reason) => this.onLinkClosed(link, reason));
    watch.listener = (index) => this.onLinkDead(index);
  }

  get device(): string {
    return devicePath(this.index);
  }

  /** Bytes of the device as the kernel has it. */
  get sizeBytes(): number {
    return this.size;
  }

  async start(plan: StartPlan): Promise<void> {
    if (plan.action === "reattach") await this.resume(plan);
    else await this.connect(plan.index);
    this.phase.enter("serving");
    this.report();
    this.reporter = setInterval(() => this.report(), 1000);
    void tuneQueue(this.index, { maxPayload: this.exportLink.maxPayload, ioTimeoutMs: requeueCheckMs(this.sockets, this.exportLink.deadlineMs), log: this.o.log });
    if (plan.action === "reattach") await this.followExportSize();
  }

  // ---- geometry → connecting | taking-over -----------------------------------------------------

  private async connect(index: number | null): Promise<void> {
    const link = this.exportLink;
    const geometry = deviceGeometry(link.exportSize, link.blockPreferred, link.blockMin);
    ({ size: this.size, blockSize: this.blockSize } = geometry);
    if (this.size !== link.exportSize) this.o.log.warn(`the export's last ${link.exportSize - this.size} bytes are not a whole ${this.blockSize}-byte block: the device is ${this.size} bytes`);
    this.attachId = randomBytes(8).toString("hex");
    this.backendId = makeBackendId(this.o.url, this.attachId);
    this.sockets = this.o.connections;
    this.phase.enter("connecting");
    this.index = await connectDevice({
      control: this.control,
      links: this.links,
      index,
      sockets: this.sockets,
      geometry,
      serverFlags: this.serverFlags,
      deadConnTimeoutSec: this.o.deadConnTimeoutSec,
      backendId: this.backendId,
    });
    const rw = this.access === "rw" ? "read-write" : "read-only";
    const sockets = this.sockets === 1 ? "" : `, ${this.sockets} sockets`;
    this.o.log.info(`attached ${this.o.url} as ${this.device}: ${this.size} bytes, ${this.blockSize}-byte blocks, ${rw}${sockets}, server flags 0x${this.serverFlags.toString(16)}, dead-connection timeout ${this.o.deadConnTimeoutSec} s, backend "${this.backendId}"`);
  }

  private async resume(plan: Extract<StartPlan, { action: "reattach" }>): Promise<void> {
    this.index = plan.index;
    this.backendId = plan.backendId;
    this.attachId = plan.attachId;
    const previous = plan.previous?.kernel;
    this.restarts = (previous?.restarts ?? 0) + 1;
    const link = this.exportLink;
    const fresh = deviceGeometry(link.exportSize, link.blockPreferred, link.blockMin);
    this.blockSize = logicalBlockSize(this.index) ?? previous?.blockSize ?? fresh.blockSize;
    this.size = readDeviceSysfs(this.index).sizeBytes ?? fresh.size;
    // The record knows the count; sysfs mq/ only shows min(sockets, CPUs) (kernel/device.ts).
    this.sockets = previous?.connections ?? readSocketCount(this.index) ?? 1;
    if (this.sockets !== this.o.connections) {
      this.o.log.info(`${this.device} has ${this.sockets} socket${this.sockets === 1 ? "" : "s"} (fixed when it was attached): taking over as many; connections = ${this.o.connections} applies when it is attached anew`);
    }
    const previousFlags = previous?.serverFlags;
    const compared = ~TxFlag.CAN_MULTI_CONN; // the kernel ignores it once attached; older daemons did not send it
    if (previousFlags !== undefined && (previousFlags & compared) !== (this.serverFlags & compared)) {
      this.o.log.warn(`the export's capabilities changed since ${this.device} was attached (flags 0x${previousFlags.toString(16)} → 0x${this.serverFlags.toString(16)}): requests it no longer supports will fail`);
    }
    this.phase.enter("taking-over");
    const taken = await takeOver(this.takeoverStep(this.sockets));
    this.logTakeover("daemon restart", taken);
  }

  private takeoverStep(sockets: number) {
    return {
      control: this.control,
      links: this.links,
      watch: this.watch,
      index: this.index,
      backendId: this.backendId,
      blockSize: this.blockSize,
      deadConnTimeoutSec: this.o.deadConnTimeoutSec,
      sockets,
      log: this.o.log,
    };
  }

  private logTakeover(why: string, taken: { verdict: "served" | "unconfirmed"; ms: number }): void {
    const sysfs = readDeviceSysfs(this.index);
    const sockets = this.links.count === 1 ? "the new socket" : `the new sockets (${this.links.count})`;
    const how = taken.verdict === "served" ? `the kernel's requests arrive on ${sockets}` : "not confirmed yet: no request within 10 s, but the kernel kept the sockets";
    this.o.log.info(`took ${this.device} over (${why}) in ${taken.ms.toFixed(0)} ms: ${how}; sysfs backend "${sysfs.backend}" (sysfs pid ${sysfs.pid} still names the first attacher)`);
  }

  // ---- resize ----------------------------------------------------------------------------------

  /**
   * Give the device the size of an export of `exportSize` bytes (whole logical blocks: the
   * block size cannot change under a filesystem) with NBD_CMD_RECONFIGURE + SIZE_BYTES from a
   * worker (kernel/resize.ts), while this thread keeps serving the device. Growing needs the
   * export to have the bytes already (requests past the port's size are refused); shrinking
   * only with `allowShrink` (what lies past the new end becomes unreachable, and a mounted
   * filesystem larger than the device breaks). Resolves with the device's new size.
   */
  async resize(exportSize: number, options: { allowShrink?: boolean } = {}): Promise<number> {
    if (!this.phase.is("serving")) throw new DstdError("E_BUSY", `${this.device} is ${this.phase.current}: resize it once it serves again`);
    if (this.resizing) throw new DstdError("E_BUSY", `${this.device} is being resized already`);
    const target = deviceSizeFor(exportSize, this.blockSize);
    if (target === this.size) return this.size;
    if (target < this.blockSize) throw new DstdError("E_USAGE", `${exportSize} bytes is less than one ${this.blockSize}-byte block of ${this.device}`);
    const available = deviceSizeFor(this.port.size, this.blockSize);
    if (target > available) {
      throw new DstdError("E_USAGE", `${this.device} cannot grow to ${target} bytes: the export serves ${this.port.size} bytes`);
    }
    if (target < this.size && options.allowShrink !== true) {
      throw new DstdError("E_USAGE", `${this.device} would shrink from ${this.size} to ${target} bytes (data past the new end becomes unreachable): allow shrinking to do it`);
    }
    this.resizing = true;
    const before = this.size;
    try {
      const reported = await resizeDevice({ index: this.index, sizeBytes: target, blockSize: this.blockSize, backendId: this.backendId });
      this.size = reported ?? target;
    } finally {
      this.resizing = false;
    }
    this.report();
    this.o.log.info(`resized ${this.device}: ${before} → ${this.size} bytes (NBD_CMD_RECONFIGURE from a worker; the device kept serving)`);
    return this.size;
  }

  /**
   * The export announced a new size in band (DstClient.onResize: `dstd resize` on the export's
   * node): grow the device to it while it serves; a takeover in progress follows the size
   * when it completes, and a change during a resize is applied after it.
   */
  exportResized(): void {
    if (!this.phase.is("serving")) return;
    if (this.resizing) {
      this.resizeAgain = true;
      return;
    }
    void this.followExportSize().then(() => {
      if (!this.resizeAgain) return;
      this.resizeAgain = false;
      this.exportResized();
    });
  }

  private resizeAgain = false;

  /** After a takeover or a resize notice: grow the device to an export that grew; never shrink on our own. */
  private async followExportSize(): Promise<void> {
    const target = deviceSizeFor(this.port.size, this.blockSize);
    if (target > this.size) {
      this.o.log.info(`the export has ${this.port.size} bytes, ${this.device} ${this.size}: growing the device`);
      await this.resize(this.port.size).catch((error: unknown) => this.o.log.warn(`cannot grow ${this.device}: ${errorMessage(error)}; it keeps ${this.size} bytes`));
    } else if (target < this.size) {
      this.o.log.warn(`${this.device} is ${this.size} bytes but the export now has ${this.port.size}: the device keeps its size (shrinking it is a deliberate resize)`);
    }
  }

  // ---- serving ⇄ reattaching ---------------------------------------------------------------------

  private onLinkDead(index: number): void {
    if (index !== this.index) return this.o.log.debug(`LINK_DEAD for nbd${index} (not ours)`);
    this.linkDead++;
    if (this.phase.is("serving")) this.o.log.warn(`the kernel reports a socket of ${this.device} dead (LINK_DEAD)`);
    else this.o.log.info(`LINK_DEAD for ${this.device} (${this.phase.current})`);
  }

  private onLinkClosed(link: AdoptedFd, reason: string | null): void {
    if (!this.phase.is("serving")) return;
    if (link.endedLocally) {
      return this.end(null, `${this.device} was disconnected by another process (the kernel sent NBD_CMD_DISC)`);
    }
    const which = this.sockets === 1 ? "our socket" : `one of our ${this.sockets} sockets`;
    this.o.log.warn(`${this.device}: the kernel closed ${which} (${reason ?? "no reason given"}); taking the device over again`);
    void this.recover();
  }

  private async recover(): Promise<void> {
    this.phase.enter("reattaching");
    await Bun.sleep(100); // a DISCONNECT in progress clears the device meanwhile
    const sysfs = readDeviceSysfs(this.index);
    if (sysfs.pid === null || sysfs.backend !== this.backendId) {
      return this.end(null, `${this.device} is no longer attached (disconnected by another process)`);
    }
    try {
      while (this.phase.is("reattaching") && this.links.count < this.sockets) {
        const taken = await takeOver(this.takeoverStep(this.sockets - this.links.count));
        this.logTakeover("the kernel closed our socket", taken);
      }
      if (this.phase.is("reattaching")) this.phase.enter("serving");
    } catch (error) {
      const failure = error instanceof DstdError ? error : new DstdError("E_ATTACH", errorMessage(error));
      this.end(failure, `cannot take ${this.device} over again: ${failure.message}`);
    }
  }

  private end(error: DstdError | null, reason: string): void {
    if (!this.phase.is("serving", "reattaching")) return;
    this.phase.enter("ended");
    // Gone for good: forget it. Failed to take it back: keep the record (dstd detach --force, a new attach).
    void this.shutdown(error === null).then(() => this.markEnded({ error, reason }));
  }

  /** Rewrite the state file: what `dstd list` shows and what the next daemon resumes from. */
  private report(): void {
    const state: AttachmentState = {
      device: this.device,
      url: this.o.url,
      mode: "kernel",
      backendId: this.backendId,
      pid: process.pid,
      state: this.phase.is("serving") ? this.exportLink.state : this.phase.current,
      startedAt: this.startedAt,
      updatedAt: new Date().toISOString(),
      counters: linkCounters(this.exportLink.counters),
      kernel: {
        index: this.index,
        attachId: this.attachId,
        sizeBytes: this.size,
        blockSize: this.blockSize,
        serverFlags: this.serverFlags,
        deadConnTimeoutSec: this.o.deadConnTimeoutSec,
        restarts: this.restarts,
        linkDead: this.linkDead,
        kernelBytesIn: this.links.bytesIn,
        connections: this.sockets,
      },
    };
    try {
      writeState(this.o.stateDir, state);
    } catch (error) {
      this.o.log.warn(`cannot write the state file in ${this.o.stateDir}: ${errorMessage(error)}`);
    }
  }

  // ---- leaving: detach (device goes away) or handover (device stays) ---------------------------

  private leaveStep(): LeaveStep {
    return { control: this.control, links: this.links, exportLink: this.exportLink, index: this.index, device: this.device, log: this.o.log };
  }

  /** SIGTERM: flush the device through us, NBD_CMD_DISCONNECT, flush the export, forget the state. */
  async detach(): Promise<void> {
    if (!this.phase.canEnter("detaching")) return;
    this.phase.enter("detaching");
    this.report();
    const failed = await detachDevice(this.leaveStep());
    await this.shutdown(true, true);
    this.phase.enter("ended");
    if (failed !== null) throw this.unconfirmed(`detached ${this.device}`, failed);
    this.o.log.info(`detached ${this.device}`);
  }

  /** The export did not confirm the final flush: writes the kernel was told are done may be missing there. */
  private unconfirmed(what: string, why: string): DstdError {
    const message = `${what}, but the export did not confirm the final flush (${why}): writes acknowledged to the kernel since the last flush may be missing on it`;
    this.o.log.error(message);
    return new DstdError("E_FLUSH", message);
  }

  /**
   * SIGUSR2: stop taking the kernel's requests, finish those we hold, flush the export, and exit
   * leaving the device attached; the next `dstd attach` takes it over (upgrade path).
   */
  async handover(options: { stayOnFailure?: boolean } = {}): Promise<"left" | "serving"> {
    if (!this.phase.canEnter("handover")) return "left";
    this.phase.enter("handover");
    const failed = await handOver(this.leaveStep(), options.stayOnFailure === true);
    if (failed !== null && options.stayOnFailure === true) {
      this.phase.enter("serving");
      this.report();
      this.o.log.error(`handover given up: the export did not confirm the final flush (${failed}); still serving ${this.device} with every unconfirmed write kept for replay — send SIGUSR2 again once the export answers, or SIGTERM to detach`);
      return "serving";
    }
    this.report();
    await this.shutdown(false, true);
    this.phase.enter("ended");
    if (failed !== null) throw this.unconfirmed(`left ${this.device} attached`, failed);
    this.o.log.info(`left ${this.device} attached for the next daemon: I/O waits up to ${this.o.deadConnTimeoutSec} s for \`dstd attach\` to take it over`);
    return "left";
  }

  /** Stop reporting, close our sockets, netlink and the export link; drop the record if the device is gone. */
  private async shutdown(deviceGone: boolean, flushed = false): Promise<void> {
    if (this.reporter !== null) clearInterval(this.reporter);
    this.reporter = null;
    this.watch.listener = null;
    this.links.retire();
    if (deviceGone) removeState(this.o.stateDir, this.device);
    this.control.close();
    // Also when the device went away under us: what the kernel was told is done reaches the export's disk.
    const failed = flushed ? null : await flushExport(this.exportLink);
    if (failed !== null) this.o.log.warn(`final flush to the export: ${failed}`);
    if ((await within(this.exportLink.close(), 10_000)) === "timeout") this.exportLink.abort();
  }
}
