/**
 * @module test/vm/guest-probe — the smoke test's program inside the VM, compiled with
 * `bun build --compile` into the payload by test/vm/vm.test.ts. It drives the kernel NBD
 * driver through src/kernel (netlink) and serves the device with the real kernel-mode NBD
 * server over an in-memory export, printing one `PASS: …` / `FAIL: …` line per check and
 * `INFO: …` lines with timings (guest/lib.sh counts them).
 *
 * Steps: resolve the family; CONNECT /dev/nbd0 with one end of a socket pair; sysfs and
 * STATUS; EBUSY, backend-mismatch and EPERM (unprivileged user) messages; dd a pattern through
 * the device and back (and compare with the server's memory); RECONFIGURE while the socket is
 * alive (docs/kernel.md §3: acked, socket dropped); kill the serving end → LINK_DEAD → RECONFIGURE
 * with a new pair → I/O continues on the new socket; a NEW process takes over the same way
 * (a daemon restart) and dies → LINK_DEAD → DISCONNECT of the orphaned device cleans up.
 * Resize (kernel/resize.ts): grow nbd0 through netlink from a Worker while a reader runs on
 * the device (docs/kernel.md §4), and `blockdev --getsize64` shows it. Two sockets (nbd1): refused
 * without CAN_MULTI_CONN; with it, I/O flows, one socket dies → I/O falls back to the other →
 * RECONFIGURE puts a new socket in the dead one's place; an extra socket is dropped (P6).
 *
 * Usage: guest-probe [--eperm-child | --takeover-child]
 */
import { createMemoryBackend } from "../../src/storage/local/memory.ts";
import { NbdControl, readDeviceSysfs, readSocketCount } from "../../src/kernel/device.ts";
import { resizeDevice } from "../../src/kernel/resize.ts";
import { AssertionError } from "../../src/lib/assert.ts";
import { TxFlag } from "../../src/wire/nbd/constants.ts";
import { DstdError } from "../../src/lib/errors.ts";
import { createLocalPort } from "../../src/storage/local/port.ts";
import { transmissionFlags } from "../../src/nbd/handshake.ts";
import { closeFd, socketPair } from "../../src/sys/libc.ts";
import { run, serveKernelEnd, waitFor, within } from "./probe-serve.ts";

const MiB = 1 << 20;
const SIZE = 64 * MiB;
/** nbd0 after the resize (the memory export has this much from the start). */
const GROWN = 96 * MiB;
const BACKEND_ID = "dstd-probe:smoke";
const DEVICE = "/dev/nbd0";

let failures = 0;
function check(name: string, ok: boolean, detail = ""): boolean {
  console.log(`${ok ? "PASS" : "FAIL"}: ${name}${detail ? ` — ${detail}` : ""}`);
  if (!ok) failures++;
  return ok;
}
const info = (text: string): void => console.log(`INFO: ${text}`);
const describe = (error: unknown): string => (error instanceof DstdError ? `${error.code}: ${error.message}` : String(error));

/** Child mode: as an unprivileged user, CONNECT must fail with the clear E_PERM message. */
async function epermChild(): Promise<void> {
  const [kernelEnd] = socketPair();
  try {
    const control = await NbdControl.open();
    await control.connectDevice({ socketFds: [kernelEnd], size: SIZE, blockSize: 4096, serverFlags: 1, deadConnTimeoutSec: 0, backendId: "x" });
    console.log("unexpectedly attached");
  } catch (error) {
    console.log(describe(error));
  }
}

/** Child mode: a second process (a restarted daemon) takes nbd0 over, serves a read, exits. */
async function takeoverChild(): Promise<void> {
  const control = await NbdControl.open();
  const target = createLocalPort(createMemoryBackend(SIZE));
  const [kernelEnd, ourEnd] = socketPair();
  const served = await serveKernelEnd(ourEnd, target, "child");
  const taken = await control.reconfigureDevice({ index: 0, socketFds: [kernelEnd], backendId: BACKEND_ID }).then(() => true, (e: unknown) => describe(e));
  closeFd(kernelEnd);
  check("a new process RECONFIGUREs nbd0 onto its own socket", taken === true, String(taken));
  const read = await run(["dd", `if=${DEVICE}`, "of=/dev/null", "bs=4k", "count=1", "iflag=direct"]);
  check("…and the kernel's requests reach the new process", read.code === 0 && served.bytesIn > 0, `${served.bytesIn} B`);
  info(`sysfs pid after a takeover by another process: ${readDeviceSysfs(0).pid} (new process ${process.pid}, parent ${process.ppid})`);
  // Exit without DISCONNECT, like a daemon killed with SIGKILL: the device stays, its socket dies.
}

function pattern(bytes: number): Uint8Array {
  const out = new Uint8Array(bytes);
  let x = 0x9e3779b9;
  for (let i = 0; i < bytes; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

const mbps = (bytes: number, ms: number): string => `${((bytes / MiB) * 1000 / ms).toFixed(1)} MiB/s`;

async function main(): Promise<void> {
  if (process.argv.includes("--eperm-child")) return epermChild();
  if (process.argv.includes("--takeover-child")) return takeoverChild();
  const backend = createMemoryBackend(GROWN);
  const target = createLocalPort(backend);
  const deadEvents: number[] = [];
  const linkDead = (index: number): void => void deadEvents.push(index);
  /** The next LINK_DEAD index, or "timeout". */
  const nextLinkDead = async (ms: number): Promise<number | "timeout"> =>
    (await waitFor(() => deadEvents.length > 0, ms)) ? deadEvents.shift()! : "timeout";

  let started = performance.now();
  const control = await NbdControl.open({ onLinkDead: (index) => linkDead(index) });
  info(`family lookup + subscribe took ${(performance.now() - started).toFixed(1)} ms`);
  check("resolve the nbd family", control.family.id >= 0x10, `id=${control.family.id} version=${control.family.version} nbd_mc_group=${control.family.linkDeadGroup}`);
  check("nbd_mc_group is listed", control.family.linkDeadGroup !== null);

  // ---- CONNECT ----
  const [kernelEnd1, ourEnd1] = socketPair();
  const first = await serveKernelEnd(ourEnd1, target, "first");
  const flags = transmissionFlags(target, "rw", false);
  started = performance.now();
  const index = await control.connectDevice({ socketFds: [kernelEnd1], index: 0, size: SIZE, blockSize: 4096, serverFlags: flags, deadConnTimeoutSec: 30, backendId: BACKEND_ID });
  info(`CONNECT took ${(performance.now() - started).toFixed(1)} ms (server flags 0x${flags.toString(16)})`);
  closeFd(kernelEnd1); // the kernel holds its own reference now
  check("CONNECT /dev/nbd0", index === 0, `index ${index}`);

  const sysfs = readDeviceSysfs(0);
  check("sysfs pid is this process", sysfs.pid === process.pid, `pid=${sysfs.pid} self=${process.pid}`);
  check("sysfs backend is ours", sysfs.backend === BACKEND_ID, `backend=${sysfs.backend}`);
  check("sysfs size is the export size", sysfs.sizeBytes === SIZE, `size=${sysfs.sizeBytes}`);
  const one = await control.deviceStatus(0);
  check("STATUS nbd0 → connected", one.length === 1 && one[0]!.index === 0 && one[0]!.connected, JSON.stringify(one));
  const all = await control.deviceStatus();
  check("STATUS (all) lists nbd0 connected and nbd1 free", all.some((d) => d.index === 0 && d.connected) && all.some((d) => d.index === 1 && !d.connected), `${all.length} devices`);

  // ---- clear errors ----
  const [spareKernel, spareOurs] = socketPair();
  const busy = await control
    .connectDevice({ socketFds: [spareKernel], index: 0, size: SIZE, blockSize: 4096, serverFlags: flags, deadConnTimeoutSec: 30, backendId: BACKEND_ID })
    .then(() => null, (e: unknown) => e);
  check("CONNECT on a busy device says so", busy instanceof DstdError && busy.code === "E_BUSY" && busy.message.startsWith("nbd0 is already in use"), describe(busy));
  const mismatch = await control.reconfigureDevice({ index: 0, socketFds: [spareKernel], backendId: "someone-else" }).then(() => null, (e: unknown) => e);
  check("RECONFIGURE with another backend id names both", mismatch instanceof DstdError && mismatch.code === "E_BACKEND_MISMATCH" && mismatch.message.includes(`"${BACKEND_ID}"`), describe(mismatch));
  closeFd(spareKernel);
  closeFd(spareOurs);
  const eperm = await run([process.execPath, "--eperm-child"], { uid: 65534, gid: 65534 });
  check("CONNECT without CAP_SYS_ADMIN says to run as root", eperm.output.includes("E_PERM: cannot attach a new nbd device: attaching needs CAP_SYS_ADMIN (run as root)"), eperm.output);

  // ---- data through the device ----
  const data = pattern(8 * MiB);
  await Bun.write("/tmp/pattern", data);
  const write = await run(["dd", "if=/tmp/pattern", `of=${DEVICE}`, "bs=1M", "seek=4", "oflag=direct", "conv=fsync"]);
  check("dd 8 MiB onto /dev/nbd0 (O_DIRECT)", write.code === 0, write.code === 0 ? mbps(data.length, write.ms) : write.output);
  const stored = new Uint8Array(data.length);
  backend.read(4 * MiB, stored);
  check("the server's memory holds exactly the pattern", Buffer.from(stored).equals(data));
  const read = await run(["dd", `if=${DEVICE}`, "of=/tmp/readback", "bs=1M", "skip=4", "count=8", "iflag=direct"]);
  const back = new Uint8Array(await Bun.file("/tmp/readback").arrayBuffer());
  check("dd it back: identical bytes", read.code === 0 && Buffer.from(back).equals(data), read.code === 0 ? mbps(data.length, read.ms) : read.output);

  // ---- resize from a worker while the device is busy (docs/kernel.md §4) ----
  const onMain = await control.resizeDevice({ index: 0, sizeBytes: GROWN, blockSize: 4096, backendId: BACKEND_ID }).then(() => null, (e: unknown) => e);
  check("a size change from the thread that serves the device is refused (an assertion, P8)", onMain instanceof AssertionError, String(onMain));
  const wrong = await resizeDevice({ index: 0, sizeBytes: GROWN, blockSize: 4096, backendId: "someone-else" }).then(() => null, (e: unknown) => e);
  check("resize with another backend id: the worker's error names both", wrong instanceof DstdError && wrong.code === "E_BACKEND_MISMATCH", describe(wrong));
  const reader = run(["dd", `if=${DEVICE}`, "of=/dev/null", "bs=64k", "count=512", "iflag=direct"]); // I/O in flight during the change
  started = performance.now();
  const grown = await resizeDevice({ index: 0, sizeBytes: GROWN, blockSize: 4096, backendId: BACKEND_ID }).then((size) => size, (e: unknown) => describe(e));
  info(`resize 64 → 96 MiB from a worker took ${(performance.now() - started).toFixed(0)} ms`);
  check("resize through netlink from a worker: sysfs reports 96 MiB", grown === GROWN, String(grown));
  const readerDone = await reader;
  check("…while a reader kept going on the device (this thread served it)", readerDone.code === 0, readerDone.output);
  const size64 = await run(["blockdev", "--getsize64", DEVICE]);
  check("blockdev --getsize64 shows the new size", size64.output.trim() === String(GROWN), size64.output);
  const tail = await run(["dd", `if=${DEVICE}`, "of=/dev/null", "bs=1M", "skip=90", "count=6", "iflag=direct"]);
  check("the grown tail reads (MiB 90..96)", tail.code === 0, tail.output);

  // ---- RECONFIGURE while the socket is alive: acked, but the kernel drops the socket (P6) ----
  const [kernelEnd2, ourEnd2] = socketPair();
  const second = await serveKernelEnd(ourEnd2, target, "second");
  const acked = await control.reconfigureDevice({ index: 0, socketFds: [kernelEnd2], backendId: BACKEND_ID }).then(() => true, (e: unknown) => describe(e));
  closeFd(kernelEnd2);
  check("RECONFIGURE with a live socket is acknowledged", acked === true, String(acked));
  const dropped = await within(second.closed, 5000);
  check("…and the kernel silently released the new socket (docs/kernel.md §3)", dropped !== "timeout", String(dropped));
  const firstBefore = first.bytesIn;
  const probeRead = await run(["dd", `if=${DEVICE}`, "of=/dev/null", "bs=1M", "count=1", "iflag=direct"]);
  check("I/O still flows through the first socket", probeRead.code === 0 && first.bytesIn > firstBefore && second.bytesIn === 0, `first +${first.bytesIn - firstBefore} B, second ${second.bytesIn} B`);

  // ---- the serving end dies → LINK_DEAD → RECONFIGURE takes over ----
  const pidBefore = readDeviceSysfs(0).pid;
  started = performance.now();
  first.kill();
  const dead = await nextLinkDead(10_000);
  check("LINK_DEAD multicast for nbd0 after the serving end closed", dead === 0, `${dead} after ${(performance.now() - started).toFixed(0)} ms`);
  const [kernelEnd3, ourEnd3] = socketPair();
  const third = await serveKernelEnd(ourEnd3, target, "third");
  started = performance.now();
  const retaken = await control.reconfigureDevice({ index: 0, socketFds: [kernelEnd3], backendId: BACKEND_ID, deadConnTimeoutSec: 30 }).then(() => true, (e: unknown) => describe(e));
  closeFd(kernelEnd3);
  check("RECONFIGURE onto the dead socket", retaken === true, `${String(retaken)} in ${(performance.now() - started).toFixed(1)} ms`);
  const after = await run(["dd", `if=${DEVICE}`, "of=/tmp/readback2", "bs=1M", "skip=4", "count=8", "iflag=direct"]);
  const back2 = new Uint8Array(await Bun.file("/tmp/readback2").arrayBuffer());
  check("reads after the takeover return the pattern, over the new socket", after.code === 0 && Buffer.from(back2).equals(data) && third.bytesIn > 0, `${after.output.split("\n").pop()}; third ${third.bytesIn} B`);
  const state = readDeviceSysfs(0);
  info(`sysfs after takeover: pid ${pidBefore} → ${state.pid} (same process here), backend ${state.backend}`);
  check("backend identifier unchanged after RECONFIGURE", state.backend === BACKEND_ID);

  // ---- a new process takes over (daemon restarted), then dies (killed again) ----
  third.kill();
  check("LINK_DEAD when the second serving end closed", (await nextLinkDead(10_000)) === 0);
  const child = await run([process.execPath, "--takeover-child"]);
  console.log(child.output);
  check("the takeover child exited cleanly", child.code === 0, `exit ${child.code}`);
  check("LINK_DEAD when the new process died", (await nextLinkDead(10_000)) === 0);

  // ---- this process reattaches the orphan; the data is intact; DISCONNECT while served ----
  const [kernelEnd4, ourEnd4] = socketPair();
  const fourth = await serveKernelEnd(ourEnd4, target, "fourth");
  await control.reconfigureDevice({ index: 0, socketFds: [kernelEnd4], backendId: BACKEND_ID });
  closeFd(kernelEnd4);
  const again = await run(["dd", `if=${DEVICE}`, "of=/tmp/readback3", "bs=1M", "skip=4", "count=8", "iflag=direct"]);
  const back3 = new Uint8Array(await Bun.file("/tmp/readback3").arrayBuffer());
  check("reattached by the first process: the pattern reads back", again.code === 0 && Buffer.from(back3).equals(data) && fourth.bytesIn > 0);
  started = performance.now();
  await control.disconnectDevice(0);
  const closed = await within(fourth.closed, 5000);
  check("DISCONNECT: the kernel closes the serving socket", closed !== "timeout", `${String(closed)} after ${(performance.now() - started).toFixed(0)} ms`);
  const cleared = await waitFor(() => readDeviceSysfs(0).pid === null, 5000);
  check("sysfs: no pid, no backend, size 0 after DISCONNECT", cleared && readDeviceSysfs(0).sizeBytes === 0 && readDeviceSysfs(0).backend === null, JSON.stringify(readDeviceSysfs(0)));
  const status = await control.deviceStatus(0);
  check("STATUS nbd0 → not connected", status.length === 1 && !status[0]!.connected, JSON.stringify(status));

  // ---- DISCONNECT of a device whose server is gone (what `detach --force` does) ----
  const [kernelEnd5, ourEnd5] = socketPair();
  const fifth = await serveKernelEnd(ourEnd5, target, "fifth");
  await control.connectDevice({ socketFds: [kernelEnd5], index: 0, size: SIZE, blockSize: 4096, serverFlags: flags, deadConnTimeoutSec: 30, backendId: BACKEND_ID });
  closeFd(kernelEnd5);
  fifth.kill();
  check("LINK_DEAD for the orphan", (await nextLinkDead(10_000)) === 0);
  started = performance.now();
  await control.disconnectDevice(0);
  const orphanCleared = await waitFor(() => readDeviceSysfs(0).pid === null, 5000);
  check("DISCONNECT of an orphaned device clears it", orphanCleared, `${(performance.now() - started).toFixed(0)} ms; ${JSON.stringify(readDeviceSysfs(0))}`);
  const idle = await control.disconnectDevice(0).then(() => "ok", (e: unknown) => describe(e));
  info(`DISCONNECT of an idle nbd0: ${idle}`);
  await twoSockets(control, nextLinkDead);
  control.close();
}

/** nbd1 with two sockets: the kernel's rules that `dstd attach --connections 2` builds on. */
async function twoSockets(control: NbdControl, nextLinkDead: (ms: number) => Promise<number | "timeout">): Promise<void> {
  const target = createLocalPort(createMemoryBackend(SIZE)); // a local port: canMultiConn true
  const flags = transmissionFlags(target, "rw", false);
  const pairs = [socketPair(), socketPair()];
  const refused = await control
    .connectDevice({ socketFds: pairs.map(([k]) => k), index: 1, size: SIZE, blockSize: 4096, serverFlags: flags & ~TxFlag.CAN_MULTI_CONN, deadConnTimeoutSec: 30, backendId: "multi" })
    .then(() => "attached", (e: unknown) => describe(e));
  check("two sockets without CAN_MULTI_CONN: the kernel refuses", refused !== "attached", refused);
  for (const [k, o] of pairs) (closeFd(k), closeFd(o));
  const [[k1, o1], [k2, o2]] = [socketPair(), socketPair()];
  const a = await serveKernelEnd(o1, target, "multi-a");
  const b = await serveKernelEnd(o2, target, "multi-b");
  const index = await control.connectDevice({ socketFds: [k1, k2], index: 1, size: SIZE, blockSize: 4096, serverFlags: flags, deadConnTimeoutSec: 30, backendId: "multi" });
  closeFd(k1);
  closeFd(k2);
  check("CONNECT nbd1 with two sockets (CAN_MULTI_CONN)", index === 1, `index ${index}`);
  check("sysfs mq/: one hardware queue per socket (2 sockets, 2 vCPUs)", readSocketCount(1) === 2, String(readSocketCount(1)));
  const writes = await Promise.all([0, 1].map((i) => run(["dd", "if=/tmp/pattern", "of=/dev/nbd1", "bs=1M", `seek=${i * 8}`, "oflag=direct", "conv=fsync"])));
  const reads = await Promise.all([0, 1].map((i) => run(["dd", "if=/dev/nbd1", `of=/tmp/multi${i}`, "bs=1M", `skip=${i * 8}`, "count=8", "iflag=direct"])));
  const pattern8 = new Uint8Array(await Bun.file("/tmp/pattern").arrayBuffer());
  const same = await Promise.all([0, 1].map(async (i) => Buffer.from(new Uint8Array(await Bun.file(`/tmp/multi${i}`).arrayBuffer())).equals(pattern8)));
  info(`two sockets: the kernel sent ${a.bytesIn} B on the first, ${b.bytesIn} B on the second (one hardware queue per socket, CPUs map to queues)`);
  check("two writers and two readers in parallel: identical bytes", writes.every((w) => w.code === 0) && reads.every((r) => r.code === 0) && same.every(Boolean), [...writes, ...reads].map((r) => r.output.split("\n").pop()).join(" | "));
  const busier = a.bytesIn >= b.bytesIn ? a : b;
  const other = busier === a ? b : a;
  busier.kill();
  check("one of the two sockets dies → LINK_DEAD for nbd1", (await nextLinkDead(10_000)) === 1);
  const fallback = await run(["dd", "if=/dev/nbd1", "of=/dev/null", "bs=1M", "count=4", "iflag=direct"]);
  const otherBefore = other.bytesIn;
  const again = await run(["dd", "if=/dev/nbd1", "of=/dev/null", "bs=1M", "count=4", "skip=4", "iflag=direct"]);
  check("I/O goes on over the live socket meanwhile (the kernel's fallback)", fallback.code === 0 && again.code === 0 && other.bytesIn > otherBefore, `${fallback.output} | ${again.output}`);
  const [k3, o3] = socketPair();
  const c = await serveKernelEnd(o3, target, "multi-c");
  await control.reconfigureDevice({ index: 1, socketFds: [k3], backendId: "multi" });
  closeFd(k3);
  const dropped = await within(c.closed, 1000);
  check("RECONFIGURE with one socket takes the dead one's place (kept)", dropped === "timeout", String(dropped));
  const [k4, o4] = socketPair();
  const d = await serveKernelEnd(o4, target, "multi-d");
  await control.reconfigureDevice({ index: 1, socketFds: [k4], backendId: "multi" });
  closeFd(k4);
  check("a further socket while none is dead is dropped (P6, per socket)", (await within(d.closed, 5000)) !== "timeout");
  await control.disconnectDevice(1);
  const closed = await within(Promise.all([other.closed, c.closed]), 5000);
  check("DISCONNECT closes both serving sockets", closed !== "timeout");
  check("nbd1 is free again", await waitFor(() => readDeviceSysfs(1).pid === null, 5000));
}

try {
  await main();
} catch (error) {
  check("probe ran to the end", false, error instanceof Error ? (error.stack ?? error.message) : String(error));
}
process.exit(failures === 0 ? 0 : 1);
