/**
 * @module kernel/device — the Linux NBD device as dstd drives it: resolve the `nbd` generic
 * netlink family, CONNECT sockets to /dev/nbdN, RECONFIGURE (take over after a restart, or a
 * new size from a worker: kernel/resize.ts), DISCONNECT, STATUS, LINK_DEAD notifications, and
 * the sysfs files that tell the truth about a device (pid, backend, size, socket count).
 * Kernel errors become DstdErrors that name the device and the fix. Semantics from
 * drivers/block/nbd.c (docs/kernel.md).
 *
 * Must not: serve NBD requests (the kernel-facing NBD server does that), or block the event
 * loop (netlink goes through GenlSocket; sysfs reads are small synchronous file reads), or
 * send a size change from the main thread (resizeDevice asserts it runs in a worker: §4).
 *
 * Several sockets (NBD_ATTR_SOCKETS with N items): the kernel makes one hardware queue per
 * socket and refuses N > 1 unless the server flags carry NBD_FLAG_CAN_MULTI_CONN. The count
 * is fixed at CONNECT: RECONFIGURE only replaces dead sockets, one per fd, in order.
 *
 * RECONFIGURE trap (docs/kernel.md §3): each new socket replaces the first DEAD socket of the
 * device. When no socket is dead the kernel drops the new socket and still reports success.
 * Callers taking over a device must make sure the old socket end is closed first (the daemon
 * that held it exited, or the kernel sent LINK_DEAD), and afterwards verify that the kernel's
 * requests arrive on the new socket — never trust the ack alone. A dropped socket shows up as
 * the peer closing our end of the new pair right after the ack. sysfs `pid` is NOT a takeover
 * signal: RECONFIGURE leaves it at the pid of the process that did CONNECT (seen on Debian's
 * 6.1.192 in test/vm), so after a daemon restart it names a dead (or reused) pid; `backend`
 * confirms identity only. (Verified in the VM smoke test: guest-probe.ts.)
 */
import { readFileSync, readdirSync } from "node:fs";
import { isMainThread } from "node:worker_threads";
import { assert } from "../lib/assert.ts";
import { Errno } from "../lib/errno.ts";
import { DstdError } from "../lib/errors.ts";
import { GenlSocket, NetlinkError } from "./genl-socket.ts";
import {
  NBD_GENL_FAMILY_NAME,
  NBD_GENL_MCAST_GROUP_NAME,
  buildConnect,
  buildDisconnect,
  buildReconfigure,
  buildResize,
  buildStatus,
  parseConnectReply,
  parseLinkDead,
  parseStatusReply,
  type DeviceStatus,
} from "./nbd-genl.ts";
import type { NetlinkMessage } from "./netlink.ts";

export type { DeviceStatus } from "./nbd-genl.ts";

export interface NbdFamily {
  id: number;
  version: number;
  /** Multicast group id of "nbd_mc_group" (LINK_DEAD), null if the kernel lists none. */
  linkDeadGroup: number | null;
}

/** Resolve the `nbd` family on `socket`; ENOENT and EPERM become clear DstdErrors. */
export async function resolveNbdFamily(socket: GenlSocket): Promise<NbdFamily> {
  try {
    const info = await socket.resolveFamily(NBD_GENL_FAMILY_NAME);
    const group = info.groups.find((g) => g.name === NBD_GENL_MCAST_GROUP_NAME);
    return { id: info.id, version: info.version, linkDeadGroup: group?.id ?? null };
  } catch (error) {
    throw mapNbdError(error, "resolve the nbd netlink family");
  }
}

export interface ConnectOptions {
  /**
   * The kernel's ends of the socket pairs (fds in this process; the kernel takes a reference
   * to each). More than one needs NBD_FLAG_CAN_MULTI_CONN in `serverFlags`.
   */
  socketFds: readonly number[];
  /** Wanted device index (/dev/nbdN); omitted → the kernel picks a free one. */
  index?: number;
  size: number;
  blockSize: number;
  /** NBD transmission flags as negotiated with the export (HAS_FLAGS | …). */
  serverFlags: number;
  /** How long the kernel holds I/O for a RECONFIGURE after the socket dies. */
  deadConnTimeoutSec: number;
  /** Names the export and this attachment; shown in sysfs, required again on RECONFIGURE. */
  backendId: string;
  clientFlags?: number;
}

export interface ReconfigureOptions {
  index: number;
  /** Each replaces the first dead socket of the device; extra ones are dropped (P6). */
  socketFds: readonly number[];
  backendId: string;
  deadConnTimeoutSec?: number;
}

export interface ResizeOptions {
  index: number;
  sizeBytes: number;
  /** The device's logical block size (the size must be a multiple of it). */
  blockSize: number;
  backendId: string;
}

export interface NbdControlOptions {
  /** Called with the device index when the kernel reports a dead socket (nbd_mc_group). */
  onLinkDead?: (index: number) => void;
  timeoutMs?: number;
}

/** One netlink socket bound to the nbd family; optionally subscribed to LINK_DEAD. */
export class NbdControl {
  private constructor(
    private readonly socket: GenlSocket,
    readonly family: NbdFamily,
  ) {}

  static async open(options: NbdControlOptions = {}): Promise<NbdControl> {
    const onLinkDead = options.onLinkDead;
    const socket = await GenlSocket.open({
      timeoutMs: options.timeoutMs,
      onMulticast: (message: NetlinkMessage) => {
        const index = parseLinkDead(message);
        if (index.ok) onLinkDead?.(index.value);
      },
    });
    try {
      const family = await resolveNbdFamily(socket);
      if (onLinkDead !== undefined && family.linkDeadGroup !== null) socket.subscribe(family.linkDeadGroup);
      return new NbdControl(socket, family);
    } catch (error) {
      socket.close();
      throw error;
    }
  }

  /** NBD_CMD_CONNECT → the device index. The I/O timeout is sent as 0: dstd owns deadlines (P7, P14). */
  async connectDevice(o: ConnectOptions): Promise<number> {
    checkGeometry(o.size, o.blockSize);
    assert(o.socketFds.length >= 1, "connectDevice(): no socket");
    const message = buildConnect(this.family.id, {
      index: o.index,
      sizeBytes: o.size,
      blockSizeBytes: o.blockSize,
      timeoutSec: 0,
      serverFlags: o.serverFlags,
      clientFlags: o.clientFlags,
      deadConnTimeoutSec: o.deadConnTimeoutSec,
      backendId: o.backendId,
      socketFds: o.socketFds,
    });
    const what = o.index === undefined ? "attach a new nbd device" : `attach ${deviceName(o.index)}`;
    let replies: NetlinkMessage[];
    try {
      replies = await this.socket.request(message, "CONNECT");
    } catch (error) {
      if (o.index !== undefined && errnoOf(error) === Errno.EBUSY) {
        throw new DstdError("E_BUSY", `${deviceName(o.index)} is already in use (attached, or being set up or held open by another process)`, { errno: Errno.EBUSY, cause: error });
      }
      throw mapNbdError(error, what);
    }
    for (const reply of replies) {
      const index = parseConnectReply(reply);
      if (index.ok) return index.value;
    }
    if (o.index !== undefined) return o.index; // acked without an index reply: it is the one we asked for
    throw new DstdError("E_NETLINK", `${what}: the kernel acknowledged CONNECT but named no device`);
  }

  /**
   * NBD_CMD_RECONFIGURE with a new socket (and the same backend identifier). Success only
   * means the kernel accepted the message: see the module comment (P6) for why callers verify.
   */
  async reconfigureDevice(o: ReconfigureOptions): Promise<void> {
    const message = buildReconfigure(this.family.id, {
      index: o.index,
      backendId: o.backendId,
      socketFds: o.socketFds,
      deadConnTimeoutSec: o.deadConnTimeoutSec,
    });
    try {
      await this.socket.request(message, "RECONFIGURE");
    } catch (error) {
      if (errnoOf(error) === Errno.EINVAL) throw explainReconfigureEinval(o.index, o.backendId, error);
      throw mapNbdError(error, `reattach ${deviceName(o.index)}`);
    }
  }

  /**
   * NBD_CMD_RECONFIGURE with a new size (same backend identifier). The kernel may freeze the
   * device's queue inside this call until in-flight I/O completes (docs/kernel.md §4), so it runs
   * only off the main thread: kernel/resize.ts sends it from a Worker while the main thread
   * keeps serving the device.
   */
  async resizeDevice(o: ResizeOptions): Promise<void> {
    assert(!isMainThread, "resizeDevice() must run in a worker: a size change may wait for the I/O this thread serves (P8)");
    checkGeometry(o.sizeBytes, o.blockSize);
    const message = buildResize(this.family.id, { index: o.index, sizeBytes: o.sizeBytes, backendId: o.backendId });
    try {
      await this.socket.request(message, "RECONFIGURE (size)");
    } catch (error) {
      if (errnoOf(error) === Errno.EINVAL) throw explainReconfigureEinval(o.index, o.backendId, error);
      throw mapNbdError(error, `resize ${deviceName(o.index)}`);
    }
  }

  /** NBD_CMD_DISCONNECT: the kernel sends NBD_CMD_DISC, shuts the sockets and fails queued I/O. */
  async disconnectDevice(index: number): Promise<void> {
    try {
      await this.socket.request(buildDisconnect(this.family.id, index), "DISCONNECT");
    } catch (error) {
      if (errnoOf(error) === Errno.EINVAL) {
        throw new DstdError("E_NO_DEVICE", `${deviceName(index)} does not exist (the nbd module has fewer devices)`, { errno: Errno.ENODEV, cause: error });
      }
      throw mapNbdError(error, `detach ${deviceName(index)}`);
    }
  }

  /** NBD_CMD_STATUS for one device or all. "connected" = configured, not "link alive". */
  async deviceStatus(index?: number): Promise<DeviceStatus[]> {
    let replies: NetlinkMessage[];
    try {
      replies = await this.socket.request(buildStatus(this.family.id, index), "STATUS");
    } catch (error) {
      throw mapNbdError(error, index === undefined ? "list nbd devices" : `query ${deviceName(index)}`);
    }
    const reasons: string[] = [];
    for (const reply of replies) {
      const parsed = parseStatusReply(reply);
      if (parsed.ok) return parsed.value;
      reasons.push(parsed.reason);
    }
    throw new DstdError("E_NETLINK", `nbd STATUS: no usable reply (${reasons.join("; ") || "empty"})`);
  }

  close(): void {
    this.socket.close();
  }
}

/**
 * Turn a netlink failure into the message a user can act on. `doing` completes
 * "cannot <doing>: …".
 */
export function mapNbdError(error: unknown, doing: string): Error {
  const errno = errnoOf(error);
  if (errno === Errno.ENOENT && error instanceof NetlinkError && error.request.startsWith("GETFAMILY")) {
    return new DstdError(
      "E_NO_NBD",
      "the kernel has no nbd driver loaded: run `modprobe nbd` (or build the kernel with CONFIG_BLK_DEV_NBD)",
      { errno: Errno.ENODEV, cause: error },
    );
  }
  if (errno === Errno.EPERM) {
    return new DstdError("E_PERM", `cannot ${doing}: attaching needs CAP_SYS_ADMIN (run as root)`, { errno, cause: error });
  }
  if (error instanceof DstdError && !(error instanceof NetlinkError)) return error; // already clear
  const detail = error instanceof Error ? error.message : String(error);
  return new DstdError("E_NETLINK", `cannot ${doing}: ${detail}`, { errno: errno ?? Errno.EIO, cause: error });
}

function explainReconfigureEinval(index: number, backendId: string, error: unknown): DstdError {
  const name = deviceName(index);
  const state = readDeviceSysfs(index);
  if (state.backend !== null && state.backend !== backendId) {
    return new DstdError(
      "E_BACKEND_MISMATCH",
      `${name} is attached to a different backend (kernel has "${state.backend}", this attachment is "${backendId}")`,
      { errno: Errno.EINVAL, cause: error },
    );
  }
  if (!state.exists) return new DstdError("E_NO_DEVICE", `${name} does not exist`, { errno: Errno.ENODEV, cause: error });
  if (state.pid === null) {
    return new DstdError("E_NOT_ATTACHED", `${name} is not attached: there is nothing to reattach (attach it anew)`, { errno: Errno.EINVAL, cause: error });
  }
  return new DstdError("E_NETLINK", `cannot reattach ${name}: the kernel refused RECONFIGURE (${error instanceof Error ? error.message : String(error)})`, { errno: Errno.EINVAL, cause: error });
}

/** Reject geometry the kernel would refuse with a bare EINVAL, with a message naming the value. */
export function checkGeometry(size: number, blockSize: number): void {
  // The kernel accepts 512..PAGE_SIZE, power of two (nbd_is_valid_blksize); 64 KiB bounds any page size in use.
  if (!Number.isInteger(blockSize) || blockSize < 512 || blockSize > 65536 || (blockSize & (blockSize - 1)) !== 0) {
    throw new DstdError("E_CONFIG", `block size ${blockSize} is invalid: it must be a power of two from 512 to the page size`);
  }
  if (!Number.isSafeInteger(size) || size < blockSize || size % blockSize !== 0) {
    throw new DstdError("E_CONFIG", `device size ${size} is invalid: it must be a positive multiple of the block size ${blockSize}`);
  }
}

function errnoOf(error: unknown): number | undefined {
  return error instanceof DstdError || error instanceof NetlinkError ? error.errno : undefined;
}

// ---- device names and sysfs -----------------------------------------------------------------

export function deviceName(index: number): string {
  return `nbd${index}`;
}

export function devicePath(index: number): string {
  return `/dev/nbd${index}`;
}

/** "/dev/nbd3" (or "nbd3") → 3; anything else is a DstdError naming the expected form. */
export function parseDevicePath(path: string): number {
  const match = /^(?:\/dev\/)?nbd(0|[1-9][0-9]{0,6})$/.exec(path.trim());
  if (match === null) {
    throw new DstdError("E_CONFIG", `"${path}" is not an NBD device: expected /dev/nbdN (for example /dev/nbd0)`);
  }
  return Number(match[1]);
}

export interface DeviceSysfs {
  /** /sys/block/nbdN exists. */
  exists: boolean;
  /** /sys/block/nbdN/pid: present only while the device is running. It stays the pid of the
   * process that did CONNECT, even after another process RECONFIGUREs the device. */
  pid: number | null;
  /** /sys/block/nbdN/backend: the backend identifier, null when absent or empty. */
  backend: string | null;
  /** /sys/block/nbdN/size is in 512-byte sectors; converted to bytes. 0 when not attached. */
  sizeBytes: number | null;
}

/** Read what the kernel says about nbdN. Never throws: missing files read as null. */
export function readDeviceSysfs(index: number, sysRoot = "/sys"): DeviceSysfs {
  const dir = `${sysRoot}/block/${deviceName(index)}`;
  const pid = readSmall(`${dir}/pid`);
  const backend = readSmall(`${dir}/backend`);
  const sectors = readSmall(`${dir}/size`);
  const pidNumber = pid === null ? NaN : Number(pid);
  const sectorCount = sectors === null ? NaN : Number(sectors);
  return {
    exists: sectors !== null || readSmall(`${dir}/dev`) !== null,
    pid: Number.isSafeInteger(pidNumber) && pid !== "" ? pidNumber : null,
    backend: backend === null || backend === "" ? null : backend,
    sizeBytes: Number.isSafeInteger(sectorCount) && sectors !== "" ? sectorCount * 512 : null,
  };
}

/**
 * The hardware queues of the running device nbdN (/sys/block/nbdN/mq/): the kernel asks for
 * one per socket at CONNECT (nbd_start_device → blk_mq_update_nr_hw_queues), but the block
 * layer caps the count at the number of CPUs, so this is min(sockets, CPUs): the sockets in
 * use, a lower bound of the sockets the device has. Null when the directory is missing or empty.
 */
export function readSocketCount(index: number, sysRoot = "/sys"): number | null {
  try {
    const queues = readdirSync(`${sysRoot}/block/${deviceName(index)}/mq`).filter((name) => /^[0-9]+$/.test(name));
    return queues.length > 0 ? queues.length : null;
  } catch {
    return null;
  }
}

function readSmall(path: string): string | null {
  try {
    return readFileSync(path, "utf8").trim();
  } catch {
    return null;
  }
}
