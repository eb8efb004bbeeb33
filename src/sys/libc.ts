/**
 * @module sys/libc — the libc side of bun:ffi (sys/librbd.ts and sys/libcrypto.ts hold the others). Typed wrappers over the few libc
 * calls Bun has no API for: fallocate (punch hole / zero range), lseek SEEK_DATA/SEEK_HOLE,
 * ioctl BLKGETSIZE64/BLKSSZGET/BLKDISCARD, flock (one export per backing file),
 * getrlimit/setrlimit RLIMIT_NOFILE (the connection budget, transport/fd-budget.ts),
 * socketpair, and the generic netlink socket calls the kernel attach path needs.
 * ioctl BLKGETSIZE64/BLKSSZGET/BLKDISCARD, socketpair, the generic netlink socket calls
 * the kernel attach path needs, and what systemd integration needs: Unix datagrams (Bun has
 * none: Bun.udpSocket is UDP only, see docs/status.md "systemd"), CLOCK_MONOTONIC, execv and
 * execve (sys/allocator.ts).
 *
 * Each wrapper returns a result or throws SysError carrying the errno; none of them blocks
 * for long (netlink receives are only done on sockets driven by Bun's event loop).
 */
import { dlopen, FFIType as T, ptr, read, type Pointer } from "bun:ffi";
import { Errno, errnoMessage } from "../lib/errno.ts";

const lib = dlopen("libc.so.6", {
  __errno_location: { args: [], returns: T.ptr },
  fallocate: { args: [T.i32, T.i32, T.i64, T.i64], returns: T.i32 },
  lseek: { args: [T.i32, T.i64, T.i32], returns: T.i64 },
  ioctl: { args: [T.i32, T.u64, T.ptr], returns: T.i32 },
  socketpair: { args: [T.i32, T.i32, T.i32, T.ptr], returns: T.i32 },
  socket: { args: [T.i32, T.i32, T.i32], returns: T.i32 },
  bind: { args: [T.i32, T.ptr, T.u32], returns: T.i32 },
  connect: { args: [T.i32, T.ptr, T.u32], returns: T.i32 },
  setsockopt: { args: [T.i32, T.i32, T.i32, T.ptr, T.u32], returns: T.i32 },
  getsockopt: { args: [T.i32, T.i32, T.i32, T.ptr, T.ptr], returns: T.i32 },
  sendto: { args: [T.i32, T.ptr, T.u64, T.i32, T.ptr, T.u32], returns: T.i64 },
  recv: { args: [T.i32, T.ptr, T.u64, T.i32], returns: T.i64 },
  close: { args: [T.i32], returns: T.i32 },
  fcntl: { args: [T.i32, T.i32, T.i64], returns: T.i32 },
  getpid: { args: [], returns: T.i32 },
  flock: { args: [T.i32, T.i32], returns: T.i32 },
  getrlimit: { args: [T.i32, T.ptr], returns: T.i32 },
  setrlimit: { args: [T.i32, T.ptr], returns: T.i32 },
  clock_gettime: { args: [T.i32, T.ptr], returns: T.i32 },
  execv: { args: [T.ptr, T.ptr], returns: T.i32 },
  execve: { args: [T.ptr, T.ptr, T.ptr], returns: T.i32 },
  geteuid: { args: [], returns: T.u32 },
});

const c = lib.symbols;

export class SysError extends Error {
  readonly errno: number;
  readonly syscall: string;
  constructor(syscall: string, errno: number) {
    super(`${syscall}: ${errnoMessage(errno)}`);
    this.name = "SysError";
    this.errno = errno;
    this.syscall = syscall;
  }
}

function lastErrno(): number {
  return read.i32(c.__errno_location() as Pointer, 0);
}

function check(syscall: string, result: number | bigint): number {
  const value = Number(result);
  if (value < 0) throw new SysError(syscall, lastErrno());
  return value;
}

// ---- files and block devices -------------------------------------------------------------

/** linux/falloc.h */
export const FALLOC_FL_KEEP_SIZE = 0x01;
export const FALLOC_FL_PUNCH_HOLE = 0x02;
export const FALLOC_FL_ZERO_RANGE = 0x10;

export function fallocate(fd: number, mode: number, offset: number, length: number): void {
  check("fallocate", c.fallocate(fd, mode, offset, length));
}

/** unistd.h: SEEK_DATA 3, SEEK_HOLE 4 (glibc, _GNU_SOURCE). */
export const SEEK_END = 2;
export const SEEK_DATA = 3;
export const SEEK_HOLE = 4;

/** lseek; returns -1 (instead of throwing) for ENXIO, which SEEK_DATA uses for "no more data". */
export function lseek(fd: number, offset: number, whence: number): number {
  const result = Number(c.lseek(fd, offset, whence));
  if (result >= 0) return result;
  const errno = lastErrno();
  if (errno === 6 /* ENXIO */) return -1;
  throw new SysError("lseek", errno);
}

/** linux/fs.h: _IOR(0x12, 114, size_t), _IO(0x12, 104), _IO(0x12, 119). */
export const BLKGETSIZE64 = 0x80081272;
export const BLKSSZGET = 0x1268;
export const BLKDISCARD = 0x1277;

export function blockDeviceSize(fd: number): number {
  const out = new BigUint64Array(1);
  check("ioctl(BLKGETSIZE64)", c.ioctl(fd, BLKGETSIZE64, ptr(out)));
  return Number(out[0]);
}

export function blockDeviceSectorSize(fd: number): number {
  const out = new Int32Array(1);
  check("ioctl(BLKSSZGET)", c.ioctl(fd, BLKSSZGET, ptr(out)));
  return out[0]!;
}

export function blockDiscard(fd: number, offset: number, length: number): void {
  const range = new BigUint64Array([BigInt(offset), BigInt(length)]);
  check("ioctl(BLKDISCARD)", c.ioctl(fd, BLKDISCARD, ptr(range)));
}

/** sys/file.h */
export const LOCK_SH = 1;
export const LOCK_EX = 2;
export const LOCK_NB = 4;
export const LOCK_UN = 8;

/**
 * flock(fd, op | LOCK_NB): true when the lock was taken, false when another open file
 * description holds a conflicting one (EWOULDBLOCK). The lock belongs to the open file
 * description and goes away with its last descriptor (flock(2)).
 */
export function tryFlock(fd: number, operation: number): boolean {
  if (c.flock(fd, operation | LOCK_NB) === 0) return true;
  const errno = lastErrno();
  if (errno === Errno.EAGAIN) return false; // EWOULDBLOCK
  throw new SysError("flock", errno);
}

// ---- process limits ------------------------------------------------------------------------

/** sys/resource.h: RLIMIT_NOFILE on Linux (x86_64, aarch64). */
export const RLIMIT_NOFILE = 7;
/** RLIM_INFINITY, as a double (2^64 - 1 rounds up; anything this large means "no limit"). */
const RLIM_INFINITY = 2 ** 64 - 1;

export interface ResourceLimit {
  /** Soft limit (what is enforced); Infinity for RLIM_INFINITY. */
  soft: number;
  /** Hard limit (how far the soft limit may be raised without privilege); Infinity for none. */
  hard: number;
}

function limitValue(value: bigint): number {
  const n = Number(value);
  return n >= RLIM_INFINITY ? Number.POSITIVE_INFINITY : n;
}

export function getResourceLimit(resource: number): ResourceLimit {
  const box = new BigUint64Array(2);
  check("getrlimit", c.getrlimit(resource, ptr(box)));
  return { soft: limitValue(box[0]!), hard: limitValue(box[1]!) };
}

/** setrlimit with both values; Infinity means RLIM_INFINITY. */
export function setResourceLimit(resource: number, limit: ResourceLimit): void {
  const raw = (n: number) => (n === Number.POSITIVE_INFINITY ? 0xffffffffffffffffn : BigInt(n));
  const box = new BigUint64Array([raw(limit.soft), raw(limit.hard)]);
  check("setrlimit", c.setrlimit(resource, ptr(box)));
}

// ---- sockets -------------------------------------------------------------------------------

export const AF_UNIX = 1;
export const AF_NETLINK = 16;
export const SOCK_STREAM = 1;
export const SOCK_RAW = 3;
export const SOCK_CLOEXEC = 0o2000000;
export const NETLINK_GENERIC = 16;
export const SOL_SOCKET = 1;
export const SOL_NETLINK = 270;
export const NETLINK_ADD_MEMBERSHIP = 1;
export const NETLINK_EXT_ACK = 11;
export const SO_RCVBUF = 8;
export const MSG_DONTWAIT = 0x40;

/** socketpair(AF_UNIX, SOCK_STREAM|SOCK_CLOEXEC): two blocking ends. */
export function socketPair(): [number, number] {
  const fds = new Int32Array(2);
  check("socketpair", c.socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ptr(fds)));
  return [fds[0]!, fds[1]!];
}

export function socket(domain: number, type: number, protocol: number): number {
  return check("socket", c.socket(domain, type, protocol));
}

/** bind an AF_NETLINK socket with nl_pid 0 (kernel assigns) and the given groups. */
export function bindNetlink(fd: number, groups = 0): void {
  const address = new Uint8Array(12);
  const view = new DataView(address.buffer);
  view.setUint16(0, AF_NETLINK, true);
  view.setUint32(8, groups, true);
  check("bind(AF_NETLINK)", c.bind(fd, ptr(address), address.length));
}

export function setSocketOptionInt(fd: number, level: number, name: number, value: number): void {
  const box = new Int32Array([value]);
  check("setsockopt", c.setsockopt(fd, level, name, ptr(box), 4));
}

/** Blocking recv into `target`; returns bytes received. Only for sockets with a timeout set. */
export function receive(fd: number, target: Uint8Array, flags = 0): number {
  return check("recv", c.recv(fd, ptr(target), target.length, flags));
}

export function closeFd(fd: number): void {
  check("close", c.close(fd));
}

export function processId(): number {
  return c.getpid();
}

export function effectiveUserId(): number {
  return c.geteuid();
}

// ---- systemd: notify datagrams, the monotonic clock, re-exec ---------------------------------

export const SOCK_DGRAM = 2;
export const SOCK_NONBLOCK = 0o4000;
const MSG_NOSIGNAL = 0x4000;
const EAGAIN = 11;
const SUN_PATH_MAX = 108;

/**
 * sockaddr_un for a path, or for an abstract name when `address` starts with '@' (the
 * NOTIFY_SOCKET convention: '@' stands for the leading NUL; the length then covers the name
 * exactly, with no terminating NUL — unix(7) "abstract").
 */
export function unixSockaddr(address: string): Uint8Array {
  const abstract = address.startsWith("@");
  const name = new TextEncoder().encode(abstract ? address.slice(1) : address);
  const pathBytes = abstract ? 1 + name.length : name.length + 1;
  if (name.length === 0 || pathBytes > SUN_PATH_MAX) {
    throw new SysError(`unix socket address '${address}'`, 36 /* ENAMETOOLONG */);
  }
  const out = new Uint8Array(2 + pathBytes);
  new DataView(out.buffer).setUint16(0, AF_UNIX, true);
  out.set(name, abstract ? 3 : 2);
  return out;
}

/**
 * Send one datagram to a Unix datagram socket (path or '@abstract'). Non-blocking: a receiver
 * whose queue is full gives false instead of stalling the event loop; other failures throw.
 */
export function sendUnixDatagram(address: string, message: Uint8Array): boolean {
  const sockaddr = unixSockaddr(address);
  const fd = check("socket(AF_UNIX, SOCK_DGRAM)", c.socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  try {
    const sent = Number(c.sendto(fd, ptr(message), message.length, MSG_NOSIGNAL, ptr(sockaddr), sockaddr.length));
    if (sent >= 0) return sent === message.length;
    const errno = lastErrno();
    if (errno === EAGAIN) return false;
    throw new SysError(`sendto(${address})`, errno);
  } finally {
    c.close(fd);
  }
}

/** A bound, non-blocking Unix datagram socket (a NOTIFY_SOCKET receiver, for tests and tools). */
export function bindUnixDatagram(address: string): number {
  const sockaddr = unixSockaddr(address);
  const fd = check("socket(AF_UNIX, SOCK_DGRAM)", c.socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (Number(c.bind(fd, ptr(sockaddr), sockaddr.length)) < 0) {
    const errno = lastErrno();
    c.close(fd);
    throw new SysError(`bind(${address})`, errno);
  }
  return fd;
}

/** recv without waiting: bytes received, or -1 when nothing is queued. */
export function receiveNow(fd: number, target: Uint8Array): number {
  const got = Number(c.recv(fd, ptr(target), target.length, MSG_DONTWAIT));
  if (got >= 0) return got;
  const errno = lastErrno();
  if (errno === EAGAIN) return -1;
  throw new SysError("recv", errno);
}

/** CLOCK_MONOTONIC in microseconds (what systemd compares MONOTONIC_USEC= with). */
export function monotonicMicroseconds(): bigint {
  const timespec = new BigInt64Array(2);
  check("clock_gettime(CLOCK_MONOTONIC)", c.clock_gettime(1, ptr(timespec)));
  return timespec[0]! * 1_000_000n + timespec[1]! / 1000n;
}

/**
 * Replace this process (same pid, same environment) with `path` run as `argv`. argv[0] may
 * differ from the path: that is how a storage daemon marks itself with '@'. Returns only by
 * throwing.
 */
export function execv(path: string, argv: readonly string[]): never {
  const encoder = new TextEncoder();
  const strings = [path, ...argv].map((s) => encoder.encode(`${s}\0`));
  const vector = new BigUint64Array(argv.length + 1);
  for (let i = 0; i < argv.length; i++) vector[i] = BigInt(ptr(strings[i + 1]!));
  c.execv(ptr(strings[0]!), ptr(vector));
  throw new SysError(`execv(${path})`, lastErrno());
}

/** execve(2): like execv, with `env` ("NAME=value" strings) as the new image's environment. */
export function execve(path: string, argv: readonly string[], env: readonly string[]): never {
  const encoder = new TextEncoder();
  const cstring = (text: string) => encoder.encode(`${text}\0`);
  const vectorOf = (strings: Uint8Array[]) => {
    const vector = new BigUint64Array(strings.length + 1);
    for (let i = 0; i < strings.length; i++) vector[i] = BigInt(ptr(strings[i]!));
    return vector;
  };
  const file = cstring(path);
  const args = argv.map(cstring);
  const environment = env.map(cstring);
  const argVector = vectorOf(args);
  const envVector = vectorOf(environment);
  c.execve(ptr(file), ptr(argVector), ptr(envVector));
  throw new SysError(`execve(${path})`, lastErrno());
}
