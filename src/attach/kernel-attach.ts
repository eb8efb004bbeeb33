/**
 * @module attach/kernel-attach — `dstd attach URL [--device /dev/nbdN]`: the remote export as
 * a real Linux block device. A DST client (resend, reconnect, keepalive, replay) talks to the
 * export; one end of a socketpair is served with the kernel-mode NBD server
 * (nbd/connection.ts) over an engine-backed target; the other end goes to the kernel
 * with NBD_CMD_CONNECT (generic netlink, kernel/device.ts) and is closed here after the ack.
 *
 * Verbs and signals (landscape P13: say what each one does to the device):
 * - detach (SIGTERM/SIGINT, `dstd detach`): flush the device, NBD_CMD_DISCONNECT, exit. The
 *   device goes away.
 * - handover (SIGUSR2) and SIGKILL: the daemon goes, the device stays; I/O waits up to the
 *   dead-connection timeout for the next `dstd attach` of the same device/URL, which takes it
 *   over with NBD_CMD_RECONFIGURE and the same backend identifier (restart, upgrade).
 *
 * Takeover (landscape P6): the kernel accepts a RECONFIGURE socket only in place of a DEAD
 * one and otherwise drops it while still acking. A killed daemon's socket end dies with its
 * process, so the kernel has marked it dead by the time a new daemon asks; if not, our new
 * socket is closed at once, and we wait for LINK_DEAD and retry. Success is verified by the
 * kernel's requests arriving on the new socket (a probe read of the first block guarantees one
 * arrives); sysfs `backend` confirms identity; sysfs `pid` proves nothing (it keeps the first
 * attacher's pid).
 *
 * Must not: block the event loop (it serves the kernel's I/O; our own device I/O — probe read,
 * fsync, queue limits — goes through the fs thread pool), or send a size-changing RECONFIGURE
 * (it freezes the queue inside the netlink send: landscape P8).
 */
import { randomBytes } from "node:crypto";
import { constants, readFileSync } from "node:fs";
import { open, readFile, writeFile } from "node:fs/promises";
import { formatExportUrl, type ExportUrl, type ListenAddress } from "../lib/address.ts";
import { Errno } from "../lib/errno.ts";
import { DstdError, errorMessage } from "../lib/errors.ts";
import type { Log } from "../lib/log.ts";
import type { EngineState } from "../engine/client-engine.ts";
import type { EngineOptions } from "../engine/options.ts";
import { NbdControl, devicePath, parseDevicePath, readDeviceSysfs } from "../kernel/device.ts";
import { transmissionFlags } from "../nbd/handshake.ts";
import { NbdConnection } from "../nbd/connection.ts";
import type { StoragePort } from "../storage/port.ts";
import { closeFd, socketPair } from "../sys/libc.ts";
import { adoptFd, type AdoptedFd } from "../transport/fd.ts";
import { daemonAlive, listStates, makeBackendId, planKernelAttach, removeState, writeState, type AttachmentState, type KernelPlan } from "./state.ts";
import { DstClient } from "../client/dst-client.ts";
import { createEnginePort } from "../storage/remote/engine-port.ts";

/** Block-layer timer of the device (ms): how soon requests stranded on a dead socket move on. */
const REQUEUE_CHECK_MS = 5000;

export interface KernelAttachOptions {
  url: ExportUrl;
  /** "/dev/nbdN", or null: the kernel picks a free device. */
  device: string | null;
  stateDir: string;
  engine: Partial<EngineOptions>;
  /** How long the kernel holds I/O for a new daemon after ours dies (NBD_ATTR_DEAD_CONN_TIMEOUT). */
  deadConnTimeoutSec: number;
  log: Log;
}

export type KernelAttachResult = { kind: "already"; message: string } | { kind: "attached"; attachment: KernelAttachment };

/** Why a running attachment ended by itself (the device was disconnected, or lost for good). */
export interface AttachmentEnd {
  error: DstdError | null;
  reason: string;
}

/** Device size and logical block size for an export: block = preferred clamped to 512..4096. */
export function deviceGeometry(exportSize: number, preferred: number, minimum: number): { size: number; blockSize: number } {
  if (minimum > 4096) {
    throw new DstdError("E_CONFIG", `the export needs requests of at least ${minimum} bytes; a kernel NBD device can promise at most 4096`);
  }
  const clamped = Math.min(4096, Math.max(512, minimum, preferred));
  let blockSize = 2 ** Math.floor(Math.log2(clamped));
  // The kernel's capacity is whole blocks: prefer a block size that loses no tail.
  while (blockSize > Math.max(512, minimum) && exportSize % blockSize !== 0) blockSize /= 2;
  const size = exportSize - (exportSize % blockSize);
  if (size < blockSize) throw new DstdError("E_CONFIG", `the export (${exportSize} bytes) is smaller than one ${blockSize}-byte block`);
  return { size, blockSize };
}

/** Connect to the export and attach it to a kernel NBD device (or resume a dead daemon's). */
export async function attachKernel(o: KernelAttachOptions): Promise<KernelAttachResult> {
  if (o.url.protocol !== "dst") throw new DstdError("E_USAGE", "dstd attach connects to dst:// or dst+unix:// exports");
  const url = formatExportUrl(o.url);
  const wanted = o.device === null ? null : parseDevicePath(o.device);
  const watch = new LinkDeadWatch();
  const control = await NbdControl.open({ onLinkDead: (index) => watch.push(index) }); // E_NO_NBD
  try {
    await control.deviceStatus(wanted ?? undefined); // E_PERM now, before we bother the export
    const plan = planKernelAttach({ url, index: wanted, records: listStates(o.stateDir), alive: daemonAlive, sysfs: (i) => readDeviceSysfs(i) });
    if (plan.action === "already") {
      control.close();
      return { kind: "already", message: plan.message };
    }
    if (plan.action === "refuse") throw new DstdError(plan.code, plan.message, { errno: Errno.EBUSY });
    if (plan.action === "connect") for (const stale of plan.stale) removeState(o.stateDir, stale.device);
    else o.log.info(plan.message);
    const client = await DstClient.open({
      ...o.engine,
      address: connectAddress(o.url),
      exportName: o.url.exportName,
      log: o.log,
      onStateChange: exportLinkLogger(o.log),
    });
    try {
      const attachment = new KernelAttachment(o, url, control, client, watch);
      await attachment.start(plan);
      return { kind: "attached", attachment };
    } catch (error) {
      client.abort();
      throw error;
    }
  } catch (error) {
    control.close();
    throw error;
  }
}

/** Link changes that matter at info/warn (ready, lost, failed); each reconnect attempt at debug. */
function exportLinkLogger(log: Log): (state: EngineState, detail: string) => void {
  let previous: EngineState = "idle";
  return (state, detail) => {
    const line = `export link ${state}: ${detail}`;
    if (state === "ready" || (state === "closed" && previous !== "failed")) log.info(line);
    else if (state === "failed" || previous === "ready") log.warn(line);
    else log.debug(line);
    previous = state;
  };
}

function connectAddress(url: ExportUrl): ListenAddress {
  return url.transport === "unix" ? { transport: "unix", path: url.path } : { transport: "tcp", host: url.host, port: url.port };
}

/** LINK_DEAD notifications (nbd_mc_group), counted per device, awaitable. */
class LinkDeadWatch {
  private waiters: Array<{ index: number; wake: () => void }> = [];
  listener: ((index: number) => void) | null = null;

  push(index: number): void {
    this.listener?.(index);
    const woken = this.waiters.filter((w) => w.index === index);
    this.waiters = this.waiters.filter((w) => w.index !== index);
    for (const w of woken) w.wake();
  }

  /** True when LINK_DEAD for `index` arrives within `ms`. */
  next(index: number, ms: number): Promise<boolean> {
    return new Promise((resolve) => {
      const waiter = { index, wake: () => (clearTimeout(timer), resolve(true)) };
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        resolve(false);
      }, ms);
      this.waiters.push(waiter);
    });
  }
}

type Phase = "starting" | "serving" | "reattaching" | "detaching" | "handover" | "ended";

export class KernelAttachment {
  index = -1;
  backendId = "";
  /** Resolves when the attachment ends without detach()/handover(). */
  readonly ended: Promise<AttachmentEnd>;
  private markEnded: (end: AttachmentEnd) => void = () => {};
  private attachId = "";
  private size = 0;
  private blockSize = 512;
  private restarts = 0;
  private linkDead = 0;
  private phase: Phase = "starting";
  private link: AdoptedFd | null = null;
  private reporter: ReturnType<typeof setInterval> | null = null;
  private readonly target: StoragePort;
  private readonly access: "ro" | "rw";
  private readonly serverFlags: number;
  private readonly startedAt = new Date().toISOString();

  constructor(
    private readonly o: KernelAttachOptions,
    readonly url: string,
    private readonly control: NbdControl,
    readonly client: DstClient,
    private readonly watch: LinkDeadWatch,
  ) {
    this.ended = new Promise((resolve) => (this.markEnded = resolve));
    this.target = createEnginePort(client, `dstd attach of ${url}`);
    this.access = this.target.readOnly ? "ro" : "rw";
    this.serverFlags = transmissionFlags(this.target, this.access, false);
    watch.listener = (index) => this.onLinkDead(index);
  }

  get device(): string {
    return devicePath(this.index);
  }

  async start(plan: Exclude<KernelPlan, { action: "already" | "refuse" }>): Promise<void> {
    if (plan.action === "reattach") await this.resume(plan);
    else await this.connect(plan.index);
    this.phase = "serving";
    this.report();
    this.reporter = setInterval(() => this.report(), 1000);
    void this.tuneQueue();
  }

  // ---- attach: CONNECT, or RECONFIGURE after a restart ----------------------------------------

  private async connect(index: number | null): Promise<void> {
    const welcome = this.client.engine.welcome!;
    ({ size: this.size, blockSize: this.blockSize } = deviceGeometry(welcome.size, welcome.blockPreferred, welcome.blockMin));
    if (this.size !== welcome.size) this.o.log.warn(`the export's last ${welcome.size - this.size} bytes are not a whole ${this.blockSize}-byte block: the device is ${this.size} bytes`);
    this.attachId = randomBytes(8).toString("hex");
    this.backendId = makeBackendId(this.url, this.attachId);
    for (let attempt = 1; ; attempt++) {
      const { kernelFd, link } = await this.openLink(index);
      try {
        this.index = await this.control.connectDevice({
          socketFd: kernelFd,
          index: index ?? undefined,
          size: this.size,
          blockSize: this.blockSize,
          serverFlags: this.serverFlags,
          deadConnTimeoutSec: this.o.deadConnTimeoutSec,
          backendId: this.backendId,
        });
      } catch (error) {
        link.terminate();
        // EBUSY on an unconfigured device: someone (udev's blkid, a closing mkfs) holds it open for a moment.
        const transient = error instanceof DstdError && error.code === "E_BUSY" && index !== null && readDeviceSysfs(index).pid === null;
        if (transient && attempt < 10) {
          await Bun.sleep(200);
          continue;
        }
        throw error;
      } finally {
        closeFd(kernelFd); // the kernel holds its own reference now (or never took one)
      }
      this.adopt(link);
      break;
    }
    const rw = this.access === "rw" ? "read-write" : "read-only";
    this.o.log.info(`attached ${this.url} as ${this.device}: ${this.size} bytes, ${this.blockSize}-byte blocks, ${rw}, server flags 0x${this.serverFlags.toString(16)}, dead-connection timeout ${this.o.deadConnTimeoutSec} s, backend "${this.backendId}"`);
  }

  private async resume(plan: Extract<KernelPlan, { action: "reattach" }>): Promise<void> {
    this.index = plan.index;
    this.backendId = plan.backendId;
    this.attachId = plan.attachId;
    this.restarts = (plan.previous?.kernel?.restarts ?? 0) + 1;
    const welcome = this.client.engine.welcome!;
    const fresh = deviceGeometry(welcome.size, welcome.blockPreferred, welcome.blockMin);
    this.blockSize = logicalBlockSize(this.index) ?? plan.previous?.kernel?.blockSize ?? fresh.blockSize;
    this.size = readDeviceSysfs(this.index).sizeBytes ?? fresh.size;
    if (this.size !== fresh.size) {
      // A live resize needs a size-changing RECONFIGURE, which freezes the queue (P8): not from here.
      this.o.log.warn(`${this.device} is ${this.size} bytes but the export now has ${fresh.size}: the device keeps its size until it is attached anew`);
    }
    const previousFlags = plan.previous?.kernel?.serverFlags;
    if (previousFlags !== undefined && previousFlags !== this.serverFlags) {
      this.o.log.warn(`the export's capabilities changed since ${this.device} was attached (flags 0x${previousFlags.toString(16)} → 0x${this.serverFlags.toString(16)}): requests it no longer supports will fail`);
    }
    await this.takeOver("daemon restart");
  }

  /**
   * RECONFIGURE the device onto a new socket and verify that the kernel uses it. Retries while
   * the kernel drops our socket (its old one is not marked dead yet), for up to 10 s.
   */
  private async takeOver(why: string): Promise<void> {
    const started = performance.now();
    for (let attempt = 1; ; attempt++) {
      const { kernelFd, link } = await this.openLink(this.index);
      try {
        await this.control.reconfigureDevice({ index: this.index, socketFd: kernelFd, backendId: this.backendId, deadConnTimeoutSec: this.o.deadConnTimeoutSec });
      } catch (error) {
        link.terminate();
        throw error;
      } finally {
        closeFd(kernelFd);
      }
      const verdict = await verifyTakeover(link, this.device, this.blockSize);
      const ms = (performance.now() - started).toFixed(0);
      if (verdict !== "dropped") {
        this.adopt(link);
        const sysfs = readDeviceSysfs(this.index);
        const how = verdict === "served" ? "the kernel's requests arrive on the new socket" : "not confirmed yet: no request within 10 s, but the kernel kept the socket";
        this.o.log.info(`took ${this.device} over (${why}) in ${ms} ms: ${how}; sysfs backend "${sysfs.backend}" (sysfs pid ${sysfs.pid} still names the first attacher)`);
        return;
      }
      link.terminate();
      if (performance.now() - started > 10_000) {
        throw new DstdError(
          "E_BUSY",
          `${this.device}: the kernel acknowledged RECONFIGURE but dropped our socket ${attempt} times: its current socket is alive, so another process still serves the device. Stop that process first (or dstd detach ${this.device})`,
          { errno: Errno.EBUSY },
        );
      }
      this.o.log.info(`${this.device}: the kernel kept its old socket (not marked dead yet); waiting for LINK_DEAD and trying again`);
      await this.watch.next(this.index, 1000);
    }
  }

  private async openLink(index: number | null): Promise<{ kernelFd: number; link: AdoptedFd }> {
    const [kernelFd, ours] = socketPair();
    const peer = { transport: "unix" as const, address: `kernel:nbd${index ?? "?"}`, port: 0 };
    try {
      const link = await adoptFd(ours, (sink) =>
        new NbdConnection(sink, peer, {
          mode: "kernel",
          exportName: this.o.url.exportName,
          resolve: () => ({ target: this.target, access: this.access }),
          list: () => [],
          log: { info: (m) => this.o.log.debug(m), warn: (m) => this.o.log.warn(m) },
        }),
      );
      return { kernelFd, link };
    } catch (error) {
      closeFd(kernelFd);
      closeFd(ours);
      throw error;
    }
  }

  private adopt(link: AdoptedFd): void {
    this.link = link;
    void link.closed.then((reason) => this.onLinkClosed(link, reason));
  }

  // ---- while serving ---------------------------------------------------------------------------

  private onLinkDead(index: number): void {
    if (index !== this.index) return this.o.log.debug(`LINK_DEAD for nbd${index} (not ours)`);
    this.linkDead++;
    if (this.phase === "serving") this.o.log.warn(`the kernel reports ${this.device}'s socket dead (LINK_DEAD)`);
    else this.o.log.info(`LINK_DEAD for ${this.device} (${this.phase})`);
  }

  private onLinkClosed(link: AdoptedFd, reason: string | null): void {
    if (link !== this.link || this.phase !== "serving") return;
    this.link = null;
    if (link.endedLocally) {
      return this.end(null, `${this.device} was disconnected by another process (the kernel sent NBD_CMD_DISC)`);
    }
    this.o.log.warn(`${this.device}: the kernel closed our socket (${reason ?? "no reason given"}); taking the device over again`);
    void this.recover();
  }

  private async recover(): Promise<void> {
    this.phase = "reattaching";
    await Bun.sleep(100); // a DISCONNECT in progress clears the device meanwhile
    const sysfs = readDeviceSysfs(this.index);
    if (sysfs.pid === null || sysfs.backend !== this.backendId) {
      return this.end(null, `${this.device} is no longer attached (disconnected by another process)`);
    }
    try {
      await this.takeOver("the kernel closed our socket");
      this.phase = "serving";
    } catch (error) {
      const failure = error instanceof DstdError ? error : new DstdError("E_ATTACH", errorMessage(error));
      this.end(failure, `cannot take ${this.device} over again: ${failure.message}`);
    }
  }

  private end(error: DstdError | null, reason: string): void {
    if (this.phase === "ended") return;
    this.phase = "ended";
    // Gone for good: forget it. Failed to take it back: keep the record (dstd detach --force, a new attach).
    void this.shutdown(error === null).then(() => this.markEnded({ error, reason }));
  }

  /** Rewrite the state file: what `dstd list` shows and what the next daemon resumes from. */
  private report(): void {
    const c = this.client.engine.counters;
    const state: AttachmentState = {
      device: this.device,
      url: this.url,
      mode: "kernel",
      backendId: this.backendId,
      pid: process.pid,
      state: this.phase === "serving" ? this.client.engine.state : this.phase,
      startedAt: this.startedAt,
      updatedAt: new Date().toISOString(),
      counters: { inflight: c.inflight, resends: c.resends, reconnects: c.reconnects, replays: c.replays, keepaliveFailures: c.keepaliveFailures, timeouts: c.timeouts },
      kernel: {
        index: this.index,
        attachId: this.attachId,
        sizeBytes: this.size,
        blockSize: this.blockSize,
        serverFlags: this.serverFlags,
        deadConnTimeoutSec: this.o.deadConnTimeoutSec,
        restarts: this.restarts,
        linkDead: this.linkDead,
        kernelBytesIn: this.link?.bytesIn ?? 0,
      },
    };
    try {
      writeState(this.o.stateDir, state);
    } catch (error) {
      this.o.log.warn(`cannot write the state file in ${this.o.stateDir}: ${errorMessage(error)}`);
    }
  }

  /**
   * Queue settings, written through the fs thread pool (on newer kernels a queue-limit write
   * freezes the queue, which must not happen on the thread serving it):
   * - max_sectors_kb: the kernel sends requests up to it (1280 KiB by default, up to 32 MiB);
   *   the export may grant less.
   * - io_timeout: with NBD_ATTR_TIMEOUT 0 the kernel never fails a slow request nor kills the
   *   socket (P7); its block-layer timer only re-arms, and at each expiry moves a request
   *   stranded on a replaced (dead) socket to the new one (nbd_xmit_timeout). The default 30 s
   *   made a restart with requests in flight stall 30–37 s in the VM test; 5 s bounds that
   *   stall. Cost: a "Possible stuck request" info line in dmesg per request slower than 5 s.
   */
  private async tuneQueue(): Promise<void> {
    const queue = `/sys/block/nbd${this.index}/queue`;
    const limitKb = Math.floor(this.client.maxPayload / 1024);
    try {
      const current = Number((await readFile(`${queue}/max_sectors_kb`, "utf8")).trim());
      if (Number.isFinite(current) && current > limitKb) {
        await writeFile(`${queue}/max_sectors_kb`, `${limitKb}\n`);
        this.o.log.info(`${this.device}: requests limited to ${limitKb} KiB (the export's maximum payload)`);
      }
    } catch (error) {
      if (limitKb < 32 * 1024) this.o.log.warn(`cannot limit ${this.device}'s request size to ${limitKb} KiB: ${errorMessage(error)}`);
    }
    try {
      await writeFile(`${queue}/io_timeout`, `${REQUEUE_CHECK_MS}\n`);
    } catch (error) {
      this.o.log.warn(`cannot set ${queue}/io_timeout (requests stranded by a daemon restart then wait up to 30 s): ${errorMessage(error)}`);
    }
  }

  // ---- leaving: detach (device goes away) or handover (device stays) ---------------------------

  /** SIGTERM: flush the device through us, NBD_CMD_DISCONNECT, flush the export, forget the state. */
  async detach(): Promise<void> {
    if (this.phase === "detaching" || this.phase === "handover" || this.phase === "ended") return;
    this.phase = "detaching";
    this.report();
    const mounts = mountPointsOf(this.device);
    if (mounts.length > 0) this.o.log.warn(`${this.device} is still mounted on ${mounts.join(", ")}: its I/O fails once the device is gone`);
    this.o.log.info(`detaching ${this.device}: flushing it, then NBD_CMD_DISCONNECT`);
    const synced = await within(syncDevice(this.device), 60_000);
    if (synced !== true) this.o.log.warn(`flushing ${this.device} before the detach: ${synced === "timeout" ? "no answer within 60 s" : synced}`);
    try {
      await this.control.disconnectDevice(this.index);
    } catch (error) {
      this.o.log.warn(`DISCONNECT ${this.device}: ${errorMessage(error)}`);
    }
    if (this.link !== null) await within(this.link.closed, 10_000);
    await within(this.client.flush(), 30_000).catch((error: unknown) => this.o.log.warn(`final flush to the export failed: ${errorMessage(error)}`));
    await this.shutdown(true);
    this.o.log.info(`detached ${this.device}`);
  }

  /**
   * SIGUSR2: stop taking the kernel's requests, finish those we hold, flush the export, and exit
   * leaving the device attached; the next `dstd attach` takes it over (upgrade path).
   */
  async handover(): Promise<void> {
    if (this.phase === "detaching" || this.phase === "handover" || this.phase === "ended") return;
    this.phase = "handover";
    const link = this.link;
    link?.sink.pause();
    const deadline = performance.now() + 30_000;
    while ((this.client.engine.outstanding > 0 || (link?.sink.queuedBytes ?? 0) > 0) && performance.now() < deadline) await Bun.sleep(10);
    await within(this.client.flush(), 30_000).catch((error: unknown) => this.o.log.warn(`flush to the export failed: ${errorMessage(error)}`));
    link?.terminate();
    this.report();
    await this.shutdown(false);
    this.o.log.info(`left ${this.device} attached for the next daemon: I/O waits up to ${this.o.deadConnTimeoutSec} s for \`dstd attach\` to take it over`);
  }

  /** Stop reporting, close netlink and the export link; drop the state file if the device is gone. */
  private async shutdown(deviceGone: boolean): Promise<void> {
    if (this.reporter !== null) clearInterval(this.reporter);
    this.reporter = null;
    this.watch.listener = null;
    if (deviceGone) removeState(this.o.stateDir, this.device);
    this.control.close();
    if ((await within(this.client.close(), 10_000)) === "timeout") this.client.abort();
  }
}

type Verdict = "served" | "dropped" | "unconfirmed";

/** After RECONFIGURE: does the kernel use `link`? A probe read makes sure a request comes. */
async function verifyTakeover(link: AdoptedFd, device: string, blockSize: number): Promise<Verdict> {
  void probeRead(device, blockSize).catch(() => {}); // its outcome is not the verdict: the socket is
  const verdict = await within(
    Promise.race([link.firstData.then(() => "served" as const), link.closed.then(() => "dropped" as const)]),
    10_000,
  );
  return verdict === "timeout" ? "unconfirmed" : verdict;
}

/** Read the first block with O_DIRECT (past the page cache, so the kernel must ask us). */
async function probeRead(device: string, blockSize: number): Promise<void> {
  const handle = await open(device, constants.O_RDONLY | constants.O_DIRECT);
  try {
    await handle.read(new Uint8Array(Math.max(4096, blockSize)), 0, blockSize, 0);
  } finally {
    await handle.close();
  }
}

/** fsync the block device: its dirty pages reach us, then a FLUSH. Runs on the fs thread pool. */
async function syncDevice(device: string): Promise<true | string> {
  try {
    const handle = await open(device, constants.O_RDONLY);
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
    return true;
  } catch (error) {
    return errorMessage(error);
  }
}

/** The device's logical block size as the kernel has it (what O_DIRECT must be aligned to). */
function logicalBlockSize(index: number): number | null {
  try {
    const value = Number(readFileSync(`/sys/block/nbd${index}/queue/logical_block_size`, "utf8").trim());
    return Number.isInteger(value) && value >= 512 ? value : null;
  } catch {
    return null;
  }
}

function mountPointsOf(device: string): string[] {
  try {
    return readFileSync("/proc/self/mounts", "utf8")
      .split("\n")
      .map((line) => line.split(" "))
      .filter((fields) => fields[0] === device || fields[0]?.startsWith(`${device}p`))
      .map((fields) => fields[1] ?? "?");
  } catch {
    return [];
  }
}

/** `promise`, or "timeout" after `ms` (the promise keeps running). */
async function within<T>(promise: Promise<T>, ms: number): Promise<T | "timeout"> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<"timeout">((resolve) => (timer = setTimeout(() => resolve("timeout"), ms)));
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
