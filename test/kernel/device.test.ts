/**
 * @module test/kernel/device — the kernel-free parts of kernel/device: device paths, sysfs
 * reading (against a fake /sys tree), geometry checks and the error messages users see.
 * The netlink calls themselves run against a real nbd driver in test/vm.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { checkGeometry, devicePath, mapNbdError, parseDevicePath, readDeviceSysfs } from "../../src/kernel/device.ts";
import { NetlinkError } from "../../src/kernel/genl-socket.ts";
import { DstdError } from "../../src/lib/errors.ts";

describe("device paths", () => {
  test("parseDevicePath accepts /dev/nbdN and nbdN", () => {
    expect(parseDevicePath("/dev/nbd3")).toBe(3);
    expect(parseDevicePath("nbd0")).toBe(0);
    expect(parseDevicePath(" /dev/nbd15 ")).toBe(15);
    expect(devicePath(7)).toBe("/dev/nbd7");
  });

  test("anything else is a clear E_CONFIG error", () => {
    for (const bad of ["/dev/nbd", "/dev/nbd01", "/dev/nbd3p1", "/dev/sda", "nbd-1", "/dev/nbd99999999", ""]) {
      const error = (() => {
        try {
          parseDevicePath(bad);
        } catch (e) {
          return e;
        }
      })();
      expect(error).toBeInstanceOf(DstdError);
      expect((error as DstdError).code).toBe("E_CONFIG");
      expect((error as DstdError).message).toBe(`"${bad}" is not an NBD device: expected /dev/nbdN (for example /dev/nbd0)`);
    }
  });
});

describe("readDeviceSysfs", () => {
  const root = mkdtempSync(join(tmpdir(), "dstd-sysfs-"));
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  function device(index: number, files: Record<string, string>): void {
    const dir = join(root, "block", `nbd${index}`);
    mkdirSync(dir, { recursive: true });
    for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
  }

  test("an attached device: pid, backend and size in bytes (sysfs size is in 512-byte sectors)", () => {
    device(0, { pid: "1234\n", backend: "dstd:export-1:gen2\n", size: "131072\n", dev: "43:0\n" });
    expect(readDeviceSysfs(0, root)).toEqual({ exists: true, pid: 1234, backend: "dstd:export-1:gen2", sizeBytes: 64 << 20 });
  });

  test("an idle device: no pid file, empty backend, size 0", () => {
    device(1, { backend: "\n", size: "0\n", dev: "43:32\n" });
    expect(readDeviceSysfs(1, root)).toEqual({ exists: true, pid: null, backend: null, sizeBytes: 0 });
  });

  test("a missing device and garbage contents read as null, never throw", () => {
    expect(readDeviceSysfs(9, root)).toEqual({ exists: false, pid: null, backend: null, sizeBytes: null });
    device(2, { pid: "not-a-pid\n", size: "x\n" });
    expect(readDeviceSysfs(2, root)).toEqual({ exists: true, pid: null, backend: null, sizeBytes: null });
  });
});

describe("checkGeometry", () => {
  test("accepts what the kernel accepts", () => {
    expect(() => checkGeometry(64 << 20, 4096)).not.toThrow();
    expect(() => checkGeometry(512, 512)).not.toThrow();
  });

  test("rejects bad block sizes and sizes with a message naming the value", () => {
    expect(() => checkGeometry(1 << 20, 1000)).toThrow("block size 1000 is invalid");
    expect(() => checkGeometry(1 << 20, 256)).toThrow("block size 256 is invalid");
    expect(() => checkGeometry(0, 4096)).toThrow("device size 0 is invalid");
    expect(() => checkGeometry(4096 + 512, 4096)).toThrow("multiple of the block size 4096");
  });
});

describe("mapNbdError", () => {
  test("ENOENT from the family lookup → E_NO_NBD with the modprobe hint", () => {
    const mapped = mapNbdError(new NetlinkError('GETFAMILY "nbd"', 2, null), "resolve the nbd netlink family") as DstdError;
    expect(mapped.code).toBe("E_NO_NBD");
    expect(mapped.message).toContain("run `modprobe nbd`");
  });

  test("EPERM from any command → run as root", () => {
    const mapped = mapNbdError(new NetlinkError("CONNECT", 1, null), "attach nbd0") as DstdError;
    expect(mapped.code).toBe("E_PERM");
    expect(mapped.message).toBe("cannot attach nbd0: attaching needs CAP_SYS_ADMIN (run as root)");
  });

  test("other kernel errors keep the errno and the extended-ack text", () => {
    const mapped = mapNbdError(new NetlinkError("CONNECT", 22, "bad fd"), "attach nbd0") as DstdError;
    expect(mapped.code).toBe("E_NETLINK");
    expect(mapped.errno).toBe(22);
    expect(mapped.message).toBe("cannot attach nbd0: netlink CONNECT: invalid argument (EINVAL): bad fd");
  });

  test("an already clear DstdError passes through unchanged", () => {
    const clear = new DstdError("E_TIMEOUT", "netlink CONNECT: no answer from the kernel within 10 ms");
    expect(mapNbdError(clear, "attach nbd0")).toBe(clear);
  });
});
