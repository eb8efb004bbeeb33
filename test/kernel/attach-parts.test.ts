/**
 * @module test/kernel/attach-parts — the kernel-free parts of a kernel attachment: the
 * lifecycle table (attach/phases.ts), the io_timeout policy by socket count
 * (attach/block-device.ts), the multi-conn flag of the port all sockets share
 * (attach/shared-port.ts), the socket count of a device from sysfs (kernel/device.ts), and
 * the `connections` setting ([[attach]] connections, `--connections`). The kernel paths
 * themselves run in the VM (test/vm/guest/attach.sh).
 */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PHASES, PhaseTracker, type Phase } from "../../src/attach/phases.ts";
import { MULTI_SOCKET_TIMEOUT_MARGIN_MS, REQUEUE_CHECK_MS, requeueCheckMs } from "../../src/attach/block-device.ts";
import { SocketsShareOnePort } from "../../src/attach/shared-port.ts";
import { deviceSizeFor } from "../../src/attach/geometry.ts";
import { readSocketCount } from "../../src/kernel/device.ts";
import { transmissionFlags } from "../../src/nbd/handshake.ts";
import { createMemoryBackend } from "../../src/storage/local/memory.ts";
import { createLocalPort } from "../../src/storage/local/port.ts";
import type { StoragePort } from "../../src/storage/port.ts";
import { TxFlag } from "../../src/wire/nbd/constants.ts";
import { validateConfig } from "../../src/config/validate.ts";
import { AssertionError } from "../../src/lib/assert.ts";

describe("the lifecycle table", () => {
  const phases = Object.keys(PHASES) as Phase[];

  test("every phase is reachable from geometry, and every phase but ended can reach ended", () => {
    const reach = (from: Phase): Set<Phase> => {
      const seen = new Set<Phase>([from]);
      const queue = [from];
      while (queue.length > 0) for (const next of PHASES[queue.shift()!].next) if (!seen.has(next)) (seen.add(next), queue.push(next));
      return seen;
    };
    expect([...reach("geometry")].sort()).toEqual([...phases].sort());
    for (const phase of phases) expect(reach(phase).has("ended")).toBe(true);
    expect(PHASES.ended.next).toEqual([]);
  });

  test("moves only along the table; anything else is a bug", () => {
    const tracker = new PhaseTracker();
    expect(tracker.current).toBe("geometry");
    expect(() => tracker.enter("serving")).toThrow(AssertionError);
    tracker.enter("taking-over");
    tracker.enter("serving");
    tracker.enter("reattaching");
    tracker.enter("serving");
    expect(tracker.canEnter("connecting")).toBe(false);
    tracker.enter("handover");
    expect(tracker.canEnter("detaching")).toBe(false);
    tracker.enter("ended");
    expect(tracker.is("ended")).toBe(true);
  });
});

describe("io_timeout by socket count", () => {
  test("one socket: 5 s, the requeue check that bounds a restart's stall", () => {
    expect(requeueCheckMs(1, 120_000)).toBe(REQUEUE_CHECK_MS);
    expect(REQUEUE_CHECK_MS).toBe(5000);
  });

  test("several sockets: longer than any request the engine holds, so the kernel never requeues a live one", () => {
    expect(requeueCheckMs(2, 120_000)).toBe(120_000 + MULTI_SOCKET_TIMEOUT_MARGIN_MS);
    expect(requeueCheckMs(4, 3_600_000)).toBe(3_600_000 + MULTI_SOCKET_TIMEOUT_MARGIN_MS);
    expect(requeueCheckMs(2, 24 * 3_600_000 * 100)).toBe(2 ** 31 - 1); // the sysfs value is an int
  });
});

describe("the port all kernel sockets share", () => {
  const single: StoragePort = { ...createLocalPort(createMemoryBackend(1 << 20)), canMultiConn: false };

  test("advertises CAN_MULTI_CONN (the kernel refuses N > 1 sockets without it) and changes nothing else", () => {
    const shared = new SocketsShareOnePort(single);
    expect(transmissionFlags(single, "rw", false) & TxFlag.CAN_MULTI_CONN).toBe(0);
    const flags = transmissionFlags(shared, "rw", false);
    expect(flags & TxFlag.CAN_MULTI_CONN).toBe(TxFlag.CAN_MULTI_CONN);
    expect(flags & ~TxFlag.CAN_MULTI_CONN).toBe(transmissionFlags(single, "rw", false));
    expect(shared.size).toBe(single.size);
  });

  test("requests pass through unchanged", () => {
    const shared = new SocketsShareOnePort(createLocalPort(createMemoryBackend(1 << 20)));
    let written = -1;
    shared.write(4096, new Uint8Array(4096).fill(7), false, (errno) => (written = errno));
    expect(written).toBe(0);
    const back = new Uint8Array(4096);
    shared.read(4096, back, () => {});
    expect(back.every((b) => b === 7)).toBe(true);
  });
});

describe("device geometry on resize", () => {
  test("whole blocks of the device's block size; the tail is cut", () => {
    expect(deviceSizeFor(320 << 20, 4096)).toBe(320 << 20);
    expect(deviceSizeFor((320 << 20) + 100, 4096)).toBe(320 << 20);
  });
});

describe("socket count of a device (sysfs mq/)", () => {
  const root = mkdtempSync(join(tmpdir(), "dstd-sysfs-mq-"));
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  test("one hardware queue per socket (capped at the CPUs by the kernel); missing or empty reads as null", () => {
    for (const q of ["0", "1", "2"]) mkdirSync(join(root, "block", "nbd3", "mq", q), { recursive: true });
    mkdirSync(join(root, "block", "nbd4", "mq"), { recursive: true });
    expect(readSocketCount(3, root)).toBe(3);
    expect(readSocketCount(4, root)).toBeNull();
    expect(readSocketCount(5, root)).toBeNull();
  });
});

describe("[[attach]] connections", () => {
  test("default 1; an integer 1..16 is taken", () => {
    const result = validateConfig({ attach: [{ url: "dst://h/d" }, { url: "dst://h/e", connections: 4 }] });
    if ("issues" in result) throw new Error(JSON.stringify(result.issues));
    expect(result.config.attaches.map((a) => a.connections)).toEqual([1, 4]);
  });

  test("out of range or not an integer: the path names the key", () => {
    const result = validateConfig({ attach: [{ url: "dst://h/d", connections: 0 }, { url: "dst://h/e", connections: "2" }] });
    expect("issues" in result && result.issues).toEqual([
      { path: "attach[0].connections", message: "0 is out of range; use 1..16" },
      { path: "attach[1].connections", message: 'expected an integer, got string "2"' },
    ]);
  });
});
