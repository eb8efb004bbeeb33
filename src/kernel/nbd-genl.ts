/**
 * @module kernel/nbd-genl — message builders and reply parsers for the generic netlink
 * controller (family lookup) and the kernel's `nbd` family. Constants from
 * include/uapi/linux/genetlink.h and include/uapi/linux/nbd-netlink.h; per-command rules from
 * drivers/block/nbd.c (docs/kernel.md §1–§3).
 *
 * Must not: do I/O, or throw on a reply (parsers return a reason). Builders are fed by dstd
 * only: their numeric ranges are asserted by the netlink builder.
 *
 * Nests are written without NLA_F_NESTED, like classic libnl (nbd-client, rbd-nbd): the nbd
 * ops are GENL_DONT_VALIDATE_STRICT and parse nests with nla_parse_nested_deprecated, so the
 * flag is optional; parsers accept it either way.
 */
import {
  NLM_F_ACK,
  NLM_F_REQUEST,
  NetlinkBuilder,
  attributeString,
  attributeU16,
  attributeU32,
  attributeU8,
  findAttribute,
  parseAttributes,
  parseGenl,
  type Attribute,
  type NetlinkMessage,
  type Parsed,
} from "./netlink.ts";

// ---- generic netlink controller (genetlink.h) ----------------------------------------------

export const GENL_ID_CTRL = 0x10;
export const CTRL_CMD_NEWFAMILY = 1;
export const CTRL_CMD_GETFAMILY = 3;
/** nlctrl accepts version 1 requests although it reports version 2 (libnl sends 1 too). */
export const CTRL_VERSION = 1;
export const CtrlAttr = {
  FAMILY_ID: 1,
  FAMILY_NAME: 2,
  VERSION: 3,
  HDRSIZE: 4,
  MAXATTR: 5,
  OPS: 6,
  MCAST_GROUPS: 7,
} as const;
export const CTRL_ATTR_MCAST_GRP_NAME = 1;
export const CTRL_ATTR_MCAST_GRP_ID = 2;

// ---- nbd family (nbd-netlink.h) -------------------------------------------------------------

export const NBD_GENL_FAMILY_NAME = "nbd";
export const NBD_GENL_VERSION = 1;
export const NBD_GENL_MCAST_GROUP_NAME = "nbd_mc_group";

export const NbdCmd = {
  CONNECT: 1,
  DISCONNECT: 2,
  RECONFIGURE: 3,
  LINK_DEAD: 4,
  STATUS: 5,
} as const;

export const NbdAttr = {
  INDEX: 1,
  SIZE_BYTES: 2,
  BLOCK_SIZE_BYTES: 3,
  TIMEOUT: 4,
  SERVER_FLAGS: 5,
  CLIENT_FLAGS: 6,
  SOCKETS: 7,
  DEAD_CONN_TIMEOUT: 8,
  DEVICE_LIST: 9,
  BACKEND_IDENTIFIER: 10,
} as const;

/** Inside NBD_ATTR_SOCKETS: NBD_SOCK_ITEM { NBD_SOCK_FD u32 }. */
export const NBD_SOCK_ITEM = 1;
export const NBD_SOCK_FD = 1;
/** Inside NBD_ATTR_DEVICE_LIST: NBD_DEVICE_ITEM { NBD_DEVICE_INDEX u32, NBD_DEVICE_CONNECTED u8 }. */
export const NBD_DEVICE_ITEM = 1;
export const NBD_DEVICE_INDEX = 1;
export const NBD_DEVICE_CONNECTED = 2;

/** NBD_ATTR_CLIENT_FLAGS bits (include/uapi/linux/nbd.h). */
export const NBD_CFLAG_DESTROY_ON_DISCONNECT = 1 << 0;
export const NBD_CFLAG_DISCONNECT_ON_CLOSE = 1 << 1;

const REQUEST_FLAGS = NLM_F_REQUEST | NLM_F_ACK;

// ---- family lookup ------------------------------------------------------------------------

/** CTRL_CMD_GETFAMILY for `name`. The socket layer overwrites `seq` when it sends. */
export function buildGetFamily(name: string, seq = 0): Uint8Array {
  return new NetlinkBuilder(GENL_ID_CTRL, REQUEST_FLAGS, seq)
    .genlHeader(CTRL_CMD_GETFAMILY, CTRL_VERSION)
    .string(CtrlAttr.FAMILY_NAME, name)
    .finish();
}

export interface McastGroup {
  name: string;
  id: number;
}

export interface FamilyInfo {
  id: number;
  name: string;
  version: number;
  hdrSize: number;
  maxAttr: number;
  groups: McastGroup[];
}

/** Parse a CTRL_CMD_NEWFAMILY reply. Multicast entries lacking a name or id are skipped. */
export function parseFamilyReply(message: NetlinkMessage): Parsed<FamilyInfo> {
  const genl = parseGenl(message);
  if (!genl.ok) return genl;
  if (genl.value.cmd !== CTRL_CMD_NEWFAMILY) {
    return { ok: false, reason: `unexpected controller reply command ${genl.value.cmd} (expected NEWFAMILY ${CTRL_CMD_NEWFAMILY})` };
  }
  const { attributes, error } = parseAttributes(genl.value.attributes);
  if (error !== null) return { ok: false, reason: `family reply: ${error}` };
  const id = optional(attributes, CtrlAttr.FAMILY_ID, attributeU16);
  if (id === undefined) return { ok: false, reason: "family reply has no CTRL_ATTR_FAMILY_ID (u16)" };
  const groups: McastGroup[] = [];
  const groupList = findAttribute(attributes, CtrlAttr.MCAST_GROUPS);
  if (groupList !== undefined) {
    // An indexed array: each entry's type is its position (1, 2, …), its payload a nest.
    for (const entry of parseAttributes(groupList.payload).attributes) {
      const fields = parseAttributes(entry.payload).attributes;
      const name = optional(fields, CTRL_ATTR_MCAST_GRP_NAME, attributeString);
      const groupId = optional(fields, CTRL_ATTR_MCAST_GRP_ID, attributeU32);
      if (name !== undefined && groupId !== undefined) groups.push({ name, id: groupId });
    }
  }
  return {
    ok: true,
    value: {
      id,
      name: optional(attributes, CtrlAttr.FAMILY_NAME, attributeString) ?? "",
      version: optional(attributes, CtrlAttr.VERSION, attributeU32) ?? 0,
      hdrSize: optional(attributes, CtrlAttr.HDRSIZE, attributeU32) ?? 0,
      maxAttr: optional(attributes, CtrlAttr.MAXATTR, attributeU32) ?? 0,
      groups,
    },
  };
}

// ---- nbd requests ---------------------------------------------------------------------------

export interface ConnectMessage {
  /** Device index; omitted → the kernel picks a free device (or creates one). */
  index?: number;
  sizeBytes: number;
  /** 512..PAGE_SIZE, power of two; the kernel defaults to 1024 when absent. */
  blockSizeBytes?: number;
  /** Kernel I/O timeout in seconds; dstd sends 0 (it owns deadlines; docs/kernel.md §5). */
  timeoutSec?: number;
  /** NBD transmission flags (HAS_FLAGS | READ_ONLY | SEND_FLUSH | …). */
  serverFlags: number;
  /** NBD_CFLAG_* bits. */
  clientFlags?: number;
  deadConnTimeoutSec?: number;
  /** Shown in /sys/block/nbdN/backend and required to match on RECONFIGURE. */
  backendId?: string;
  /** File descriptors in this process; the kernel takes its own reference to each. */
  socketFds: readonly number[];
}

/** NBD_CMD_CONNECT; attribute order follows nbd-client's netlink_configure. */
export function buildConnect(family: number, m: ConnectMessage, seq = 0): Uint8Array {
  const b = new NetlinkBuilder(family, REQUEST_FLAGS, seq).genlHeader(NbdCmd.CONNECT, NBD_GENL_VERSION);
  if (m.index !== undefined) b.u32(NbdAttr.INDEX, m.index);
  b.u64(NbdAttr.SIZE_BYTES, m.sizeBytes);
  if (m.blockSizeBytes !== undefined) b.u64(NbdAttr.BLOCK_SIZE_BYTES, m.blockSizeBytes);
  if (m.timeoutSec !== undefined) b.u64(NbdAttr.TIMEOUT, m.timeoutSec);
  b.u64(NbdAttr.SERVER_FLAGS, m.serverFlags);
  if (m.clientFlags !== undefined) b.u64(NbdAttr.CLIENT_FLAGS, m.clientFlags);
  if (m.deadConnTimeoutSec !== undefined) b.u64(NbdAttr.DEAD_CONN_TIMEOUT, m.deadConnTimeoutSec);
  if (m.backendId !== undefined) b.string(NbdAttr.BACKEND_IDENTIFIER, m.backendId);
  putSockets(b, m.socketFds);
  return b.finish();
}

export interface ReconfigureMessage {
  index: number;
  /** Must equal the identifier given at CONNECT (the kernel answers -EINVAL otherwise). */
  backendId?: string;
  /** Each fd replaces the first DEAD socket; with none dead the kernel silently drops it (P6). */
  socketFds?: readonly number[];
  deadConnTimeoutSec?: number;
  timeoutSec?: number;
}

/**
 * NBD_CMD_RECONFIGURE. Deliberately no SIZE_BYTES/BLOCK_SIZE_BYTES: a resize freezes the
 * device queue inside the netlink send, which deadlocks a sender that also serves the device
 * (docs/kernel.md §4). A resize has its own builder (buildResize), sent from a worker.
 */
export function buildReconfigure(family: number, m: ReconfigureMessage, seq = 0): Uint8Array {
  const b = new NetlinkBuilder(family, REQUEST_FLAGS, seq)
    .genlHeader(NbdCmd.RECONFIGURE, NBD_GENL_VERSION)
    .u32(NbdAttr.INDEX, m.index);
  if (m.timeoutSec !== undefined) b.u64(NbdAttr.TIMEOUT, m.timeoutSec);
  if (m.deadConnTimeoutSec !== undefined) b.u64(NbdAttr.DEAD_CONN_TIMEOUT, m.deadConnTimeoutSec);
  if (m.backendId !== undefined) b.string(NbdAttr.BACKEND_IDENTIFIER, m.backendId);
  if (m.socketFds !== undefined && m.socketFds.length > 0) putSockets(b, m.socketFds);
  return b.finish();
}

export interface ResizeMessage {
  index: number;
  /** Must equal the identifier given at CONNECT (the kernel answers -EINVAL otherwise). */
  backendId?: string;
  sizeBytes: number;
  /** Omitted: the device keeps its logical block size. */
  blockSizeBytes?: number;
}

/**
 * NBD_CMD_RECONFIGURE with NBD_ATTR_SIZE_BYTES: a new capacity for a running device. The
 * kernel applies it inside the send (nbd_genl_reconfigure → nbd_set_size), and on kernels
 * that freeze the queue for it the send waits for the device's in-flight I/O (docs/kernel.md
 * §4). Only a thread that does not serve the device may send it: kernel/resize.ts runs it in
 * a Worker.
 */
export function buildResize(family: number, m: ResizeMessage, seq = 0): Uint8Array {
  const b = new NetlinkBuilder(family, REQUEST_FLAGS, seq)
    .genlHeader(NbdCmd.RECONFIGURE, NBD_GENL_VERSION)
    .u32(NbdAttr.INDEX, m.index)
    .u64(NbdAttr.SIZE_BYTES, m.sizeBytes);
  if (m.blockSizeBytes !== undefined) b.u64(NbdAttr.BLOCK_SIZE_BYTES, m.blockSizeBytes);
  if (m.backendId !== undefined) b.string(NbdAttr.BACKEND_IDENTIFIER, m.backendId);
  return b.finish();
}

export function buildDisconnect(family: number, index: number, seq = 0): Uint8Array {
  return new NetlinkBuilder(family, REQUEST_FLAGS, seq)
    .genlHeader(NbdCmd.DISCONNECT, NBD_GENL_VERSION)
    .u32(NbdAttr.INDEX, index)
    .finish();
}

/** NBD_CMD_STATUS for one device, or for all devices when `index` is omitted. */
export function buildStatus(family: number, index?: number, seq = 0): Uint8Array {
  const b = new NetlinkBuilder(family, REQUEST_FLAGS, seq).genlHeader(NbdCmd.STATUS, NBD_GENL_VERSION);
  if (index !== undefined) b.u32(NbdAttr.INDEX, index);
  return b.finish();
}

function putSockets(b: NetlinkBuilder, fds: readonly number[]): void {
  b.beginNested(NbdAttr.SOCKETS);
  for (const fd of fds) b.beginNested(NBD_SOCK_ITEM).u32(NBD_SOCK_FD, fd).endNested();
  b.endNested();
}

// ---- nbd replies and notifications ---------------------------------------------------------

/** The CONNECT reply (cmd CONNECT, NBD_ATTR_INDEX u32) → the device index. */
export function parseConnectReply(message: NetlinkMessage): Parsed<number> {
  return parseIndexMessage(message, NbdCmd.CONNECT, "CONNECT reply");
}

/** A LINK_DEAD multicast notification → the index of the device whose socket died. */
export function parseLinkDead(message: NetlinkMessage): Parsed<number> {
  return parseIndexMessage(message, NbdCmd.LINK_DEAD, "LINK_DEAD notification");
}

export interface DeviceStatus {
  index: number;
  /** The kernel's "connected": the device is configured (config_refs != 0), not that its link is alive. */
  connected: boolean;
}

/** A STATUS reply: NBD_ATTR_DEVICE_LIST { NBD_DEVICE_ITEM { INDEX, CONNECTED } }*. */
export function parseStatusReply(message: NetlinkMessage): Parsed<DeviceStatus[]> {
  const genl = parseGenl(message);
  if (!genl.ok) return genl;
  if (genl.value.cmd !== NbdCmd.STATUS) {
    return { ok: false, reason: `STATUS reply has command ${genl.value.cmd} (expected ${NbdCmd.STATUS})` };
  }
  const top = parseAttributes(genl.value.attributes);
  if (top.error !== null) return { ok: false, reason: `STATUS reply: ${top.error}` };
  const list = findAttribute(top.attributes, NbdAttr.DEVICE_LIST);
  if (list === undefined) return { ok: false, reason: "STATUS reply has no NBD_ATTR_DEVICE_LIST" };
  const items = parseAttributes(list.payload);
  if (items.error !== null) return { ok: false, reason: `STATUS device list: ${items.error}` };
  const devices: DeviceStatus[] = [];
  for (const item of items.attributes) {
    if (item.type !== NBD_DEVICE_ITEM) continue;
    const fields = parseAttributes(item.payload);
    if (fields.error !== null) return { ok: false, reason: `STATUS device item: ${fields.error}` };
    const index = optional(fields.attributes, NBD_DEVICE_INDEX, attributeU32);
    const connected = optional(fields.attributes, NBD_DEVICE_CONNECTED, attributeU8);
    if (index === undefined || connected === undefined) {
      return { ok: false, reason: "STATUS device item lacks NBD_DEVICE_INDEX (u32) or NBD_DEVICE_CONNECTED (u8)" };
    }
    devices.push({ index, connected: connected !== 0 });
  }
  return { ok: true, value: devices };
}

function parseIndexMessage(message: NetlinkMessage, cmd: number, what: string): Parsed<number> {
  const genl = parseGenl(message);
  if (!genl.ok) return genl;
  if (genl.value.cmd !== cmd) return { ok: false, reason: `${what} has command ${genl.value.cmd} (expected ${cmd})` };
  const { attributes, error } = parseAttributes(genl.value.attributes);
  if (error !== null) return { ok: false, reason: `${what}: ${error}` };
  const index = optional(attributes, NbdAttr.INDEX, attributeU32);
  if (index === undefined) return { ok: false, reason: `${what} has no NBD_ATTR_INDEX (u32)` };
  return { ok: true, value: index };
}

function optional<T>(attributes: readonly Attribute[], type: number, read: (a: Attribute) => T | undefined): T | undefined {
  const found = findAttribute(attributes, type);
  return found === undefined ? undefined : read(found);
}
