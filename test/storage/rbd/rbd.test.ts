/**
 * @module test/storage/rbd/rbd.test — the Ceph RBD port (src/storage/rbd) against a real
 * single-node cluster (test/helpers/ceph.ts): the asynchronous port contract, snapshots served
 * read-only, write-zeroes that really zero where a discard does not, and errors that name the
 * problem. Skips naming the Debian packages when Ceph is not installed.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { call, type StoragePort } from "../../../src/storage/port.ts";
import { openRbdPort } from "../../../src/storage/rbd/open.ts";
import { rbdRequestsInFlight } from "../../../src/sys/librbd.ts";
import type { RbdSpec } from "../../../src/config/types.ts";
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

  test("nothing stays in flight after the ports close", () => {
    expect(rbdRequestsInFlight()).toBe(0);
  });
});
