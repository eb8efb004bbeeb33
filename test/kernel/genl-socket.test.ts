/**
 * @module test/kernel/genl-socket — the event-driven generic netlink socket against this
 * host's real kernel: "nlctrl" resolves, "nbd" does not (no driver here) and must give the
 * clear E_NO_NBD message, kernel errors carry their errno, concurrent requests are matched by
 * sequence number, and close() fails what is pending and releases the fd.
 */
import { describe, expect, test } from "bun:test";
import { existsSync, readlinkSync } from "node:fs";
import { NbdControl, mapNbdError, resolveNbdFamily } from "../../src/kernel/device.ts";
import { GenlSocket, NetlinkError } from "../../src/kernel/genl-socket.ts";
import { buildDisconnect, buildGetFamily, GENL_ID_CTRL } from "../../src/kernel/nbd-genl.ts";
import { NetlinkBuilder, NLM_F_REQUEST } from "../../src/kernel/netlink.ts";
import { DstdError } from "../../src/lib/errors.ts";

const hostHasNbd = existsSync("/sys/module/nbd");

describe("GenlSocket on the host kernel", () => {
  test("resolves nlctrl (id 16) with its notify group", async () => {
    const socket = await GenlSocket.open();
    try {
      const family = await socket.resolveFamily("nlctrl");
      expect(family.id).toBe(GENL_ID_CTRL);
      expect(family.name).toBe("nlctrl");
      expect(family.groups.map((g) => g.name)).toContain("notify");
    } finally {
      socket.close();
    }
  });

  test("a missing family is a NetlinkError with errno ENOENT", async () => {
    const socket = await GenlSocket.open();
    try {
      const error = await socket.resolveFamily("dstd-no-family").catch((e: unknown) => e);
      expect(error).toBeInstanceOf(NetlinkError);
      expect((error as NetlinkError).errno).toBe(2);
      expect((error as NetlinkError).message).toBe(
        'netlink GETFAMILY "dstd-no-family": no such file or directory (ENOENT)',
      );
    } finally {
      socket.close();
    }
  });

  test("concurrent requests are matched to their own replies by sequence number", async () => {
    const socket = await GenlSocket.open();
    try {
      const names = ["nlctrl", "dstd-missing-a", "nlctrl", "dstd-missing-b", "nlctrl"];
      const results = await Promise.allSettled(names.map((n) => socket.resolveFamily(n)));
      expect(results.map((r) => r.status)).toEqual(["fulfilled", "rejected", "fulfilled", "rejected", "fulfilled"]);
      const missing = results[3] as PromiseRejectedResult;
      expect((missing.reason as Error).message).toContain("dstd-missing-b");
    } finally {
      socket.close();
    }
  });

  test("a request to a family id nobody registered fails with the kernel's errno, not E_NO_NBD", async () => {
    const socket = await GenlSocket.open();
    try {
      const error = await socket.request(buildDisconnect(0x7ff0, 0), "DISCONNECT").catch((e: unknown) => e);
      expect(error).toBeInstanceOf(NetlinkError);
      expect((error as NetlinkError).errno).toBe(2);
      const mapped = mapNbdError(error, "detach nbd0");
      expect((mapped as DstdError).code).toBe("E_NETLINK");
      expect(mapped.message).toStartWith("cannot detach nbd0: netlink DISCONNECT: no such file or directory");
    } finally {
      socket.close();
    }
  });

  test("an unsupported controller command carries EOPNOTSUPP", async () => {
    const socket = await GenlSocket.open();
    try {
      const bogus = new NetlinkBuilder(GENL_ID_CTRL, NLM_F_REQUEST, 0).genlHeader(200, 1).finish();
      const error = await socket.request(bogus, "CTRL cmd 200").catch((e: unknown) => e);
      expect(error).toBeInstanceOf(NetlinkError);
      expect((error as NetlinkError).errno).toBe(95);
    } finally {
      socket.close();
    }
  });

  test("close() rejects a pending request, closes the fd and refuses new requests", async () => {
    const socket = await GenlSocket.open();
    const fd = socket.fd;
    const inode = readlinkSync(`/proc/self/fd/${fd}`);
    expect(inode).toStartWith("socket:[");
    const pending = socket.request(buildGetFamily("nlctrl"), "GETFAMILY").catch((e: unknown) => e);
    socket.close();
    socket.close(); // idempotent
    const error = await pending;
    // The kernel answers inside the send, so the reply may already be queued; either way the
    // request settles and never hangs.
    if (error instanceof Error) expect(error.message).toContain("socket closed");
    expect(socket.closed).toBe(true);
    await expect(socket.request(buildGetFamily("nlctrl"))).rejects.toThrow("the socket is closed");
    await Bun.sleep(0);
    let target = "gone";
    try {
      target = readlinkSync(`/proc/self/fd/${fd}`);
    } catch {}
    expect(target).not.toBe(inode); // gone, or the number was reused for something else
  });
});

describe.skipIf(hostHasNbd)("without the nbd driver (this host)", () => {
  test("resolveNbdFamily says to run modprobe nbd", async () => {
    const socket = await GenlSocket.open();
    try {
      const error = await resolveNbdFamily(socket).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(DstdError);
      expect((error as DstdError).code).toBe("E_NO_NBD");
      expect((error as DstdError).message).toBe(
        "the kernel has no nbd driver loaded: run `modprobe nbd` (or build the kernel with CONFIG_BLK_DEV_NBD)",
      );
    } finally {
      socket.close();
    }
  });

  test("NbdControl.open fails the same way and leaves no socket behind", async () => {
    const error = await NbdControl.open().catch((e: unknown) => e);
    expect((error as DstdError).code).toBe("E_NO_NBD");
  });
});
