/**
 * @module test/storage/rbd/rbd.test — the Ceph RBD port (src/storage/rbd) against a real
 * single-node cluster (test/helpers/ceph.ts): the asynchronous port contract, snapshots served
 * read-only, write-zeroes that really zero where a discard does not, and errors that name the
 * problem. Skips naming the Debian packages when Ceph is not installed.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { NbdClient } from "../../../src/client/nbd-client.ts";
import { acceptNbd } from "../../../src/nbd/connection.ts";
import { call, type StoragePort } from "../../../src/storage/port.ts";
import { openRbdPort } from "../../../src/storage/rbd/open.ts";
import { rbdObjectsWalked, rbdRequestsInFlight } from "../../../src/sys/librbd.ts";
import { MAX_OFFLOAD_QUEUE } from "../../../src/sys/librbd-offload.ts";
import { Errno } from "../../../src/lib/errno.ts";
import type { RbdSpec } from "../../../src/config/types.ts";
import { listen } from "../../../src/transport/tcp.ts";
import { until } from "../../helpers/wait.ts";
import { haveCeph, startCephCluster, type CephCluster } from "../../helpers/ceph.ts";
import { pattern } from "../contract.ts";
import { portContract } from "../port-contract.ts";

const MiB = 1 << 20;
const enabled = haveCeph();
let cluster: CephCluster | null = null;
let images = 0;

beforeAll(async () => {
  if (enabled) cluster = await startCephCluster(1024 ** 3);
}, 120_000);

afterAll(async () => {
  await cluster?.stop();
}, 60_000);

function spec(image: string, more: Partial<RbdSpec> = {}): RbdSpec {
  return { pool: "rbd", namespace: null, image, snapshot: null, conf: cluster!.conf, id: null, keyring: null, ...more };
}

async function newImage(size = "16M"): Promise<string> {
  const name = `img${++images}`;
  await cluster!.rbd("create", `rbd/${name}`, "--size", size);
  return name;
}

async function fresh(readOnly: boolean): Promise<StoragePort> {
  return openRbdPort(spec(await newImage()), { readOnly });
}

if (enabled) {
  portContract("rbd", { open: ({ readOnly }) => fresh(readOnly), resizes: true, operations: 160 });
}

describe.skipIf(!enabled)("rbd port", () => {
  test("a snapshot is served read-only with the contents it had when taken", async () => {
    const name = await newImage();
    const head = await openRbdPort(spec(name), { readOnly: false });
    const before = pattern(MiB, 1);
    await call.write(head, 0, before);
    await call.flush(head);
    await cluster!.rbd("snap", "create", `rbd/${name}@s1`);
    await call.write(head, 0, pattern(MiB, 2));
    const snap = await openRbdPort(spec(name, { snapshot: "s1" }), { readOnly: false });
    try {
      expect(snap.readOnly).toBe(true);
      expect(snap.description).toBe(`rbd:rbd/${name}@s1`);
      const back = new Uint8Array(MiB);
      await call.read(snap, 0, back);
      expect(back).toEqual(new Uint8Array(before));
      await expect(call.write(snap, 0, new Uint8Array(4096))).rejects.toThrow(/failed/);
      // Block status of the snapshot: its own object map (the head's later writes are not in it).
      await call.write(head, 8 * MiB, pattern(4096, 3));
      expect(await call.extents(snap, 0, 16 * MiB)).toEqual([
        { length: 4 * MiB, hole: false, zero: false },
        { length: 12 * MiB, hole: true, zero: true },
      ]);
    } finally {
      await snap.close();
      await head.close();
    }
  }, 60_000);

  test("write-zeroes zeroes a 4 KiB range inside an object (a trim there is only a hint)", async () => {
    const port = await fresh(false);
    try {
      await call.write(port, 0, pattern(64 * 1024, 4));
      await call.zero(port, 8192, 4096);
      const back = new Uint8Array(64 * 1024);
      await call.read(port, 0, back);
      expect(back.subarray(8192, 12288).every((b) => b === 0)).toBe(true);
      expect(back.subarray(0, 8192)).toEqual(new Uint8Array(pattern(64 * 1024, 4).subarray(0, 8192)));
    } finally {
      await port.close();
    }
  }, 60_000);

  test("fast zero is refused with ENOTSUP (librbd may write zeroes to do it)", async () => {
    const port = await fresh(false);
    try {
      expect(port.canFastZero).toBe(false);
      await expect(call.zero(port, 0, 4096, { fast: true })).rejects.toThrow(/not supported|ENOTSUP|operation/i);
    } finally {
      await port.close();
    }
  }, 60_000);

  test("a missing image, pool or snapshot fails naming it", async () => {
    await expect(openRbdPort(spec("nope"), { readOnly: false })).rejects.toThrow(/rbd:rbd\/nope.*no such file.*rbd create/);
    await expect(openRbdPort(spec("x", { pool: "nopool" }), { readOnly: false })).rejects.toThrow(/cannot open rbd:nopool\/x: opening the pool 'nopool'/);
    const name = await newImage();
    await expect(openRbdPort(spec(name, { snapshot: "missing" }), { readOnly: false })).rejects.toThrow(new RegExp(`rbd:rbd/${name}@missing`));
  }, 60_000);

  test("a missing ceph.conf fails naming the file", async () => {
    await expect(openRbdPort(spec("x", { conf: "/nonexistent/ceph.conf" }), { readOnly: false })).rejects.toThrow(/\/nonexistent\/ceph\.conf/);
  });

  test("block status: written objects are data, the rest holes (fast-diff map); a whole-object discard is a hole again", async () => {
    const port = await openRbdPort(spec(await newImage("64M")), { readOnly: false });
    const data = (length: number) => ({ length, hole: false, zero: false });
    const hole = (length: number) => ({ length, hole: true, zero: true });
    try {
      expect(port.canBlockStatus).toBe(true);
      expect(await call.extents(port, 0, 64 * MiB)).toEqual([hole(64 * MiB)]);
      await call.write(port, 0, pattern(MiB, 1));
      await call.write(port, 32 * MiB + 4096, pattern(8192, 2));
      // Whole objects (4 MiB): a write anywhere in one makes all of it data.
      expect(await call.extents(port, 0, 64 * MiB)).toEqual([data(4 * MiB), hole(28 * MiB), data(4 * MiB), hole(28 * MiB)]);
      // A range inside objects is clipped to the range; the walk stops at maxExtents.
      expect(await call.extents(port, 3 * MiB, 2 * MiB)).toEqual([data(MiB), hole(MiB)]);
      expect(await call.extents(port, 0, 64 * MiB, 1)).toEqual([data(4 * MiB)]);
      await call.trim(port, 32 * MiB, 4 * MiB);
      expect(await call.extents(port, 0, 64 * MiB)).toEqual([data(4 * MiB), hole(60 * MiB)]);
    } finally {
      await port.close();
    }
  }, 60_000);

  test("block status of an image without fast-diff is all data (no cheap map, never a guessed hole)", async () => {
    const name = `img${++images}`;
    await cluster!.rbd("create", `rbd/${name}`, "--size", "16M", "--image-feature", "layering");
    const port = await openRbdPort(spec(name), { readOnly: false });
    try {
      expect(await call.extents(port, 0, 16 * MiB)).toEqual([{ length: 16 * MiB, hole: false, zero: false }]);
    } finally {
      await port.close();
    }
  }, 60_000);

  test("a resize runs on the worker thread: reads on an NBD connection keep being answered while it is under way", async () => {
    // 128 objects with data: shrinking to one object deletes 127 of them, one OSD op each.
    const name = await newImage("512M");
    const port = await openRbdPort(spec(name), { readOnly: false });
    const quiet = { info() {}, warn() {} };
    const listener = await listen([{ transport: "tcp", host: "127.0.0.1", port: 0 }], acceptNbd({ resolve: () => ({ target: port, access: "rw" }), list: () => [], log: quiet }));
    const bound = listener.bound[0]!;
    const client = await NbdClient.open({ address: { transport: "tcp", host: "127.0.0.1", port: bound.transport === "tcp" ? bound.port : 0 }, exportName: "disk", log: quiet });
    try {
      await Promise.all(Array.from({ length: 128 }, (_, i) => call.write(port, i * 4 * MiB, pattern(4096, i + 1))));
      let resized = false;
      // What `dstd resize` does under `dstd up` (daemon/export-node.ts): the port's resize.
      const resize = new Promise<number>((resolve) => port.resize!(4 * MiB, resolve)).then((errno) => {
        resized = true;
        return errno;
      });
      // Observable, not timed: with rbd_resize on this thread no NBD reply could be sent
      // before the resize's completion (the event loop would be stopped inside it).
      let readsDuring = 0;
      let back: Uint8Array = new Uint8Array(0);
      while (!resized) {
        back = await client.read(0, 4096);
        if (!resized) readsDuring++;
      }
      expect(await resize).toBe(0);
      expect(readsDuring).toBeGreaterThan(0);
      expect(back).toEqual(new Uint8Array(pattern(4096, 1)));
      expect(port.size).toBe(4 * MiB);
      expect(JSON.parse(await cluster!.rbd("info", "--format", "json", `rbd/${name}`)).size).toBe(4 * MiB);
    } finally {
      await client.close();
      await listener.close();
      await port.close();
    }
  }, 120_000);

  test("the worker's queue is bounded: past MAX_OFFLOAD_QUEUE block-status walks fail at once with EAGAIN, the rest complete", async () => {
    const port = await openRbdPort(spec(await newImage("16M")), { readOnly: false });
    try {
      await call.write(port, 0, pattern(4096, 5));
      const extra = 8;
      const answers = await Promise.all(
        Array.from({ length: MAX_OFFLOAD_QUEUE + extra }, () => new Promise<number>((resolve) => port.extents(0, 16 * MiB, 16, (errno) => resolve(errno)))),
      );
      expect(answers.filter((errno) => errno === Errno.EAGAIN).length).toBe(extra);
      expect(answers.filter((errno) => errno === 0).length).toBe(MAX_OFFLOAD_QUEUE);
      // And the worker serves the next one as usual.
      expect(await call.extents(port, 0, 16 * MiB)).toEqual([{ length: 4 * MiB, hole: false, zero: false }, { length: 12 * MiB, hole: true, zero: true }]);
    } finally {
      await port.close();
    }
  }, 120_000);

  test("a header change by another client never stops the event loop: a request with the OSD stopped returns at once", async () => {
    const name = await newImage();
    const port = await openRbdPort(spec(name), { readOnly: false });
    try {
      await call.write(port, 0, pattern(4096, 9));
      // Another client changes the header: librbd flags the image for a refresh, which its
      // synchronous calls (rbd_get_size) then wait for, reading the header from the OSD.
      await cluster!.rbd("snap", "create", `rbd/${name}@s1`);
      const resumed = cluster!.pauseOsd(3000);
      const stamps: number[] = [];
      const ticker = setInterval(() => stamps.push(performance.now()), 20);
      const back = new Uint8Array(4096);
      const started = performance.now();
      const read = new Promise<number>((resolve) => port.read(0, back, resolve));
      const returnedAfter = performance.now() - started;
      await resumed;
      clearInterval(ticker);
      expect(await read).toBe(0);
      expect(back).toEqual(new Uint8Array(pattern(4096, 9)));
      // Observed with rbd_get_size per request on this thread: the call returned after the
      // whole pause (~3 s), with no timer tick meanwhile.
      expect(returnedAfter).toBeLessThan(500);
      const gaps = stamps.slice(1).map((t, i) => t - stamps[i]!);
      expect(stamps.length).toBeGreaterThan(30);
      expect(Math.max(...gaps)).toBeLessThan(1000);
    } finally {
      await port.close();
    }
  }, 60_000);

  test("the size follows the image when another client resizes it (update watch, refreshed on the worker)", async () => {
    const name = await newImage("16M");
    const port = await openRbdPort(spec(name), { readOnly: false });
    try {
      expect(port.size).toBe(16 * MiB);
      await cluster!.rbd("resize", "--size", "32M", `rbd/${name}`);
      await until(() => port.size === 32 * MiB, "the grown size", 10_000);
      await call.write(port, 31 * MiB, pattern(4096, 3));
      await cluster!.rbd("resize", "--size", "8M", "--allow-shrink", `rbd/${name}`);
      await until(() => port.size === 8 * MiB, "the shrunk size", 10_000);
      await expect(call.read(port, 8 * MiB, new Uint8Array(4096))).rejects.toThrow();
    } finally {
      await port.close();
    }
  }, 60_000);

  test("opening against an unreachable monitor never stops the event loop (rados_connect runs on the worker)", async () => {
    // A port nothing listens on: librados keeps trying until client_mount_timeout.
    const conf = join(cluster!.dir, "unreachable.conf");
    writeFileSync(conf, ["[global]", "mon host = 127.0.0.1:9", "auth cluster required = none", "auth service required = none", "auth client required = none", "client mount timeout = 2", "log file = /dev/null", ""].join("\n"));
    const stamps: number[] = [];
    const ticker = setInterval(() => stamps.push(performance.now()), 20);
    const started = performance.now();
    const opening = openRbdPort(spec("x", { conf }), { readOnly: false });
    const returnedAfter = performance.now() - started;
    try {
      await expect(opening).rejects.toThrow(/cannot open rbd:rbd\/x: connecting to the Ceph cluster \(rados_connect\)/);
    } finally {
      clearInterval(ticker);
    }
    // Observed with rados_connect on this thread: the call returned after the whole timeout.
    expect(returnedAfter).toBeLessThan(500);
    // ceph.conf's client_mount_timeout (2 s) counts, not dstd's default (30 s): observed 30 s
    // when dstd set its default over the file's value.
    expect(performance.now() - started).toBeGreaterThan(1500);
    expect(performance.now() - started).toBeLessThan(15_000);
    expect(stamps.length).toBeGreaterThan(30);
  }, 60_000);

  test("block status stops walking at maxExtents: a fragmented range is walked a window at a time", async () => {
    // 4 KiB objects, every other one written: 2048 data objects, 4096 runs over 16 MiB.
    const name = `img${++images}`;
    await cluster!.rbd("create", `rbd/${name}`, "--size", "16M", "--object-size", "4K");
    const port = await openRbdPort(spec(name), { readOnly: false });
    try {
      const data = pattern(4096, 6);
      for (let batch = 0; batch < 2048; batch += 64) {
        await Promise.all(Array.from({ length: 64 }, (_, i) => call.write(port, (batch + i) * 8192, data)));
      }
      const before = rbdObjectsWalked();
      expect(await call.extents(port, 0, 16 * MiB, 2)).toEqual([
        { length: 4096, hole: false, zero: false },
        { length: 4096, hole: true, zero: true },
      ]);
      // Observed walking the whole range: all 2048 written objects reported for 2 runs.
      expect(rbdObjectsWalked() - before).toBeLessThanOrEqual(512);
      // The whole map still comes out when asked for: 4096 runs.
      const all = await call.extents(port, 0, 16 * MiB, 4096);
      expect(all.length).toBe(4096);
      expect(all.every((x, i) => x.length === 4096 && x.hole === (i % 2 === 1))).toBe(true);
    } finally {
      await port.close();
    }
  }, 120_000);

  test("nothing stays in flight after the ports close", () => {
    expect(rbdRequestsInFlight()).toBe(0);
  });
});
