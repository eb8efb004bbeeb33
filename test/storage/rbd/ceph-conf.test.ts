/**
 * @module test/storage/rbd/ceph-conf.test — which options a ceph.conf sets for a client
 * (src/sys/ceph-conf.ts), so that dstd's RBD defaults give way to them (docs/rbd.md "What
 * blocks"): the sections a client reads, names compared as librados compares them.
 */
import { describe, expect, test } from "bun:test";
import { cephConfOptions, cephOptionName } from "../../../src/sys/ceph-conf.ts";

describe("ceph.conf options", () => {
  test("option names compare with spaces, dashes and underscores alike", () => {
    expect(cephOptionName(" client mount timeout ")).toBe("client_mount_timeout");
    expect(cephOptionName("rados-osd-op_timeout")).toBe("rados_osd_op_timeout");
  });

  test("only [global], [client] and [client.ID] count; comments and continued values name nothing", () => {
    const text = [
      "[global]",
      "mon host = 127.0.0.1:3300",
      "# rbd cache = true",
      "; rados osd op timeout = 0",
      "[osd]",
      "client mount timeout = 5",
      "[client]",
      "rbd cache = true",
      "keyring = /a \\",
      "  rados_mon_op_timeout = 1",
      "[client.dstd]",
      "rados osd op timeout = 0",
      "[client.other]",
      "rbd-disable-zero-copy-writes = true",
      "",
    ].join("\n");
    expect([...cephConfOptions(text, "dstd")].sort()).toEqual(["keyring", "mon_host", "rados_osd_op_timeout", "rbd_cache"]);
    expect([...cephConfOptions(text, null)].sort()).toEqual(["keyring", "mon_host", "rbd_cache"]);
    expect([...cephConfOptions(text.replace("[client.dstd]", "[ client.admin ]"), null)].sort()).toEqual(["keyring", "mon_host", "rados_osd_op_timeout", "rbd_cache"]);
  });
});
