/**
 * What `dstd attach` decides before touching the kernel (attach/plan.ts
 * planKernelAttach), and the device geometry it asks for (attach/geometry.ts
 * deviceGeometry): idempotent attach, refusals naming the holder, resume after a killed
 * daemon (with and without its record), stale records. The kernel's word (sysfs) is faked.
 */
import { describe, expect, test } from "bun:test";
import { daemonAlive, makeBackendId, parseBackendId, type AttachmentState } from "../../src/attach/state.ts";
import { planKernelAttach, type PlanInput } from "../../src/attach/plan.ts";
import { deviceGeometry } from "../../src/attach/geometry.ts";
import type { DeviceSysfs } from "../../src/kernel/device.ts";

const URL_A = "dst://10.0.0.1:10810/disk";
const URL_B = "dst://10.0.0.2:10810/other";
const ID_A = makeBackendId(URL_A, "0123456789abcdef");

function record(index: number, url: string, backendId: string, pid: number): AttachmentState {
  return {
    device: `/dev/nbd${index}`,
    url,
    mode: "kernel",
    backendId,
    pid,
    state: "ready",
    startedAt: "",
    updatedAt: "",
    counters: { inflight: 0, resends: 0, reconnects: 0, replays: 0, keepaliveFailures: 0, timeouts: 0 },
    kernel: { index, attachId: parseBackendId(backendId)?.attachId ?? "", sizeBytes: 1 << 20, blockSize: 4096, serverFlags: 0x4ed, deadConnTimeoutSec: 120, restarts: 0, linkDead: 0, kernelBytesIn: 0 },
  };
}

const attached = (backend: string | null, pid = 4242): DeviceSysfs => ({ exists: true, pid, backend, sizeBytes: 1 << 20 });
const free: DeviceSysfs = { exists: true, pid: null, backend: null, sizeBytes: 0 };

function plan(over: Partial<PlanInput> & { devices?: Record<number, DeviceSysfs>; live?: number[] }) {
  const devices = over.devices ?? {};
  return planKernelAttach({
    url: over.url ?? URL_A,
    index: over.index === undefined ? 0 : over.index,
    records: over.records ?? [],
    alive: (pid) => (over.live ?? []).includes(pid),
    sysfs: (i) => devices[i] ?? free,
  });
}

describe("planKernelAttach", () => {
  test("a free device and no record: CONNECT it", () => {
    expect(plan({})).toEqual({ action: "connect", index: 0, stale: [] });
    expect(plan({ index: null })).toEqual({ action: "connect", index: null, stale: [] });
  });

  test("attached by a live daemon for the same URL: say so (exit 0), by device and by URL alone", () => {
    const records = [record(0, URL_A, ID_A, 100)];
    const byDevice = plan({ records, live: [100], devices: { 0: attached(ID_A) } });
    expect(byDevice).toMatchObject({ action: "already", device: "/dev/nbd0", pid: 100 });
    expect((byDevice as { message: string }).message).toBe(`/dev/nbd0 is already attached to ${URL_A} by dstd (pid 100); nothing to do`);
    expect(plan({ index: null, records, live: [100], devices: { 0: attached(ID_A) } })).toMatchObject({ action: "already", device: "/dev/nbd0" });
  });

  test("attached by a live daemon for another URL: a clear refusal naming both", () => {
    const result = plan({ url: URL_B, records: [record(0, URL_A, ID_A, 100)], live: [100], devices: { 0: attached(ID_A) } });
    expect(result).toEqual({
      action: "refuse",
      code: "E_BUSY",
      message: `/dev/nbd0 is attached to ${URL_A} by dstd (pid 100), not to ${URL_B}: detach it first (dstd detach /dev/nbd0)`,
    });
  });

  test("daemon killed, device still configured with its backend id: RECONFIGURE with that id", () => {
    const previous = record(3, URL_A, ID_A, 100);
    const result = plan({ index: 3, records: [previous], live: [], devices: { 3: attached(ID_A) } });
    expect(result).toMatchObject({ action: "reattach", index: 3, backendId: ID_A, attachId: "0123456789abcdef", previous });
    // Without --device: the URL finds its device.
    expect(plan({ index: null, records: [previous], devices: { 3: attached(ID_A) } })).toMatchObject({ action: "reattach", index: 3, backendId: ID_A });
  });

  test("daemon killed, another URL asked for the device: refuse, saying how to resume or clear it", () => {
    const result = plan({ url: URL_B, records: [record(0, URL_A, ID_A, 100)], devices: { 0: attached(ID_A) } });
    expect(result).toMatchObject({ action: "refuse", code: "E_BUSY" });
    expect((result as { message: string }).message).toContain(`still holds ${URL_A} (its daemon, pid 100, is gone)`);
    expect((result as { message: string }).message).toContain("dstd detach --force /dev/nbd0");
  });

  test("a live pid whose device is no longer ours (pid reused, device detached) is a stale record: CONNECT", () => {
    const stale = record(0, URL_A, ID_A, 100);
    expect(plan({ records: [stale], live: [100] })).toEqual({ action: "connect", index: 0, stale: [stale] });
    expect(plan({ index: null, records: [stale], live: [100] })).toEqual({ action: "connect", index: null, stale: [] });
  });

  test("no record (state directory lost) but the kernel names our URL: resume it", () => {
    expect(plan({ devices: { 0: attached(ID_A) } })).toMatchObject({ action: "reattach", index: 0, backendId: ID_A, previous: null });
  });

  test("attached by someone else: refuse and name the holder", () => {
    expect(plan({ devices: { 0: attached("rbd:pool/image") } })).toEqual({
      action: "refuse",
      code: "E_BUSY",
      message: '/dev/nbd0 is already attached to backend "rbd:pool/image": choose another device (or omit --device)',
    });
    expect((plan({ devices: { 0: attached(null) } }) as { message: string }).message).toBe("/dev/nbd0 is already attached by another program: choose another device (or omit --device)");
    expect((plan({ url: URL_B, devices: { 0: attached(ID_A) } }) as { message: string }).message).toBe(`/dev/nbd0 is already attached to ${URL_A} by another dstd: choose another device (or omit --device)`);
  });

  test("backend ids: dstd's own round-trip, others are not ours", () => {
    expect(parseBackendId(ID_A)).toEqual({ url: URL_A, attachId: "0123456789abcdef" });
    expect(parseBackendId("dstd:dst://h/a#b#0123456789abcdef")).toEqual({ url: "dst://h/a#b", attachId: "0123456789abcdef" });
    expect(parseBackendId("rbd:pool/image")).toBeNull();
    expect(parseBackendId("dstd:dst://h/disk#nothex")).toBeNull();
  });
});

describe("deviceGeometry", () => {
  test("the export's preferred block size, clamped to 512..4096", () => {
    expect(deviceGeometry(1 << 30, 4096, 512)).toEqual({ size: 1 << 30, blockSize: 4096 });
    expect(deviceGeometry(1 << 30, 65536, 512)).toEqual({ size: 1 << 30, blockSize: 4096 });
    expect(deviceGeometry(1 << 30, 256, 1)).toEqual({ size: 1 << 30, blockSize: 512 });
    expect(deviceGeometry(1 << 30, 3000, 512)).toEqual({ size: 1 << 30, blockSize: 2048 }); // a power of two
  });

  test("a size that is not a whole number of blocks: a smaller block first, then the tail is cut", () => {
    expect(deviceGeometry(1024 * 1024 + 512, 4096, 512)).toEqual({ size: 1024 * 1024 + 512, blockSize: 512 });
    expect(deviceGeometry(1024 * 1024 + 100, 4096, 512)).toEqual({ size: 1024 * 1024, blockSize: 512 });
    expect(deviceGeometry(8192 + 512, 4096, 4096)).toEqual({ size: 8192, blockSize: 4096 }); // the export's minimum wins
  });

  test("impossible geometry is a clear error", () => {
    expect(() => deviceGeometry(100, 4096, 512)).toThrow("the export (100 bytes) is smaller than one 512-byte block");
    expect(() => deviceGeometry(1 << 30, 65536, 65536)).toThrow("at least 65536 bytes; a kernel NBD device can promise at most 4096");
  });
});

describe("daemonAlive", () => {
  test("a running process is alive; an exited one that its parent has not reaped (a zombie) is not", async () => {
    // sh starts a short sleep in the background, prints its pid, then becomes `sleep 5`, which
    // never reaps it (the child outlives the exec, so sh cannot reap it first).
    const parent = Bun.spawn(["sh", "-c", "sleep 0.2 & echo $!; exec sleep 5"], { stdout: "pipe" });
    const reader = parent.stdout.getReader();
    const zombie = Number(new TextDecoder().decode((await reader.read()).value).trim());
    try {
      expect(daemonAlive(parent.pid)).toBe(true);
      let zombieSeen = false;
      for (let i = 0; i < 300 && !zombieSeen; i++) {
        zombieSeen = (await Bun.file(`/proc/${zombie}/stat`).text().catch(() => "")).includes(") Z ");
        if (!zombieSeen) await Bun.sleep(10);
      }
      expect(zombieSeen).toBe(true);
      expect(() => process.kill(zombie, 0)).not.toThrow(); // the signal probe alone would say "alive"
      expect(daemonAlive(zombie)).toBe(false);
    } finally {
      parent.kill();
      await parent.exited;
    }
    expect(daemonAlive(parent.pid)).toBe(false);
  });

  test("a record naming this very process is not a live daemon (a reused pid, or an earlier run of this unit)", () => {
    // Before, a daemon whose pid matched a dead one's record said "already attached" and exited 0.
    expect(daemonAlive(process.pid)).toBe(false);
    expect(daemonAlive(process.ppid)).toBe(true);
  });
});
