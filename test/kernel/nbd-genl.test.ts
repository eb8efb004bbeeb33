/**
 * @module test/kernel/nbd-genl — nbd family and controller messages against golden bytes laid
 * out from include/uapi/linux/nbd-netlink.h / genetlink.h (docs/kernel.md §1), the 108-byte
 * CONNECT example (two sockets), and canned kernel replies (one captured from this
 * host's nlctrl, the others hand-assembled in the layout nbd.c's reply builders produce).
 */
import { describe, expect, test } from "bun:test";
import {
  NBD_CFLAG_DESTROY_ON_DISCONNECT,
  buildConnect,
  buildDisconnect,
  buildGetFamily,
  buildReconfigure,
  buildResize,
  buildStatus,
  parseConnectReply,
  parseFamilyReply,
  parseLinkDead,
  parseStatusReply,
} from "../../src/kernel/nbd-genl.ts";
import { hexDump, parseMessages, type NetlinkMessage } from "../../src/kernel/netlink.ts";

function unhex(text: string): Uint8Array {
  const clean = text.replace(/\s+/g, "");
  const out = new Uint8Array(clean.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(clean.slice(i * 2, i * 2 + 2), 16);
  return out;
}

function message(text: string): NetlinkMessage {
  const parsed = parseMessages(unhex(text));
  expect(parsed.error).toBeNull();
  return parsed.messages[0]!;
}

// NBD transmission flags: HAS_FLAGS | SEND_FLUSH | SEND_TRIM | SEND_WRITE_ZEROES | CAN_MULTI_CONN.
const FLAGS_0x165 = 0x1 | 0x4 | 0x20 | 0x40 | 0x100;

describe("requests (golden bytes)", () => {
  test("CONNECT: the 108-byte two-socket example (family 0x1234, seq 12, two sockets)", () => {
    const bytes = buildConnect(
      0x1234,
      {
        sizeBytes: 1 << 30,
        blockSizeBytes: 4096,
        timeoutSec: 30,
        serverFlags: FLAGS_0x165,
        clientFlags: NBD_CFLAG_DESTROY_ON_DISCONNECT,
        socketFds: [7, 8],
      },
      12,
    );
    expect(bytes.length).toBe(108);
    expect(hexDump(bytes)).toBe(
      "6c000000 34120500 0c000000 00000000 01010000 0c000200 00000040 00000000 0c000300 00100000 00000000 " +
        "0c000400 1e000000 00000000 0c000500 65010000 00000000 0c000600 01000000 00000000 1c000700 0c000100 " +
        "08000100 07000000 0c000100 08000100 08000000",
    );
  });

  test("CONNECT as dstd sends it: index, timeout 0, dead-conn timeout, backend identifier", () => {
    const bytes = buildConnect(0x20, {
      index: 3,
      sizeBytes: 64 << 20,
      blockSizeBytes: 512,
      timeoutSec: 0,
      serverFlags: 0x1,
      deadConnTimeoutSec: 120,
      backendId: "dstd:x",
      socketFds: [5],
    });
    expect(hexDump(bytes)).toBe(
      "74000000 20000500 00000000 00000000 01010000 " + // len 116
        "08000100 03000000 " + // INDEX u32 3
        "0c000200 00000004 00000000 " + // SIZE_BYTES 64 MiB
        "0c000300 00020000 00000000 " + // BLOCK_SIZE_BYTES 512
        "0c000400 00000000 00000000 " + // TIMEOUT 0
        "0c000500 01000000 00000000 " + // SERVER_FLAGS
        "0c000800 78000000 00000000 " + // DEAD_CONN_TIMEOUT 120
        "0b000a00 64737464 3a780000 " + // BACKEND_IDENTIFIER "dstd:x\0"
        "10000700 0c000100 08000100 05000000", // SOCKETS { SOCK_ITEM { SOCK_FD 5 } }
    );
  });

  test("RECONFIGURE: index, dead-conn timeout, backend, socket", () => {
    const bytes = buildReconfigure(0x1234, { index: 0, backendId: "ab", socketFds: [9], deadConnTimeoutSec: 30 }, 7);
    expect(hexDump(bytes)).toBe(
      "40000000 34120500 07000000 00000000 03010000 08000100 00000000 0c000800 1e000000 00000000 " +
        "07000a00 61620000 10000700 0c000100 08000100 09000000",
    );
  });

  test("RECONFIGURE with two sockets: one SOCK_ITEM per fd (a takeover of a two-socket device)", () => {
    const bytes = buildReconfigure(0x1234, { index: 1, socketFds: [9, 10] }, 7);
    expect(hexDump(bytes)).toBe(
      "38000000 34120500 07000000 00000000 03010000 08000100 01000000 " + // len 56
        "1c000700 0c000100 08000100 09000000 0c000100 08000100 0a000000",
    );
  });

  test("resize: RECONFIGURE with index, SIZE_BYTES and the backend, no sockets", () => {
    const bytes = buildResize(0x1234, { index: 2, sizeBytes: 320 << 20, backendId: "ab" }, 7);
    expect(hexDump(bytes)).toBe(
      "30000000 34120500 07000000 00000000 03010000 08000100 02000000 " +
        "0c000200 00000014 00000000 " + // SIZE_BYTES 320 MiB
        "07000a00 61620000",
    );
    const withBlock = buildResize(0x1234, { index: 2, sizeBytes: 4096, blockSizeBytes: 4096 });
    expect(hexDump(withBlock)).toContain("0c000300 00100000 00000000"); // BLOCK_SIZE_BYTES 4096
  });

  test("DISCONNECT and STATUS", () => {
    expect(hexDump(buildDisconnect(0x1234, 3, 7))).toBe("1c000000 34120500 07000000 00000000 02010000 08000100 03000000");
    expect(hexDump(buildStatus(0x1234))).toBe("14000000 34120500 00000000 00000000 05010000");
    expect(hexDump(buildStatus(0x1234, 15))).toBe("1c000000 34120500 00000000 00000000 05010000 08000100 0f000000");
  });

  test("GETFAMILY asks for an ack", () => {
    expect(hexDump(buildGetFamily("nbd", 2))).toBe("1c000000 10000500 02000000 00000000 03010000 08000200 6e626400");
  });
});

describe("controller replies", () => {
  test("a NEWFAMILY reply captured from this host's kernel for \"nlctrl\"", () => {
    const reply = message(
      "88000000 10000000 01000000 36200000 01020000 0b000200 6e6c6374 726c0000 06000100 10000000 08000300 " +
        "02000000 08000400 00000000 08000500 00000000 2c000600 14000100 08000100 03000000 08000200 0e000000 " +
        "14000200 08000100 0a000000 08000200 0c000000 1c000700 18000100 08000200 10000000 0b000100 6e6f7469 66790000",
    );
    expect(parseFamilyReply(reply)).toEqual({
      ok: true,
      value: { id: 16, name: "nlctrl", version: 2, hdrSize: 0, maxAttr: 0, groups: [{ name: "notify", id: 16 }] },
    });
  });

  test("a NEWFAMILY reply for \"nbd\" as Debian 6.1 reports it (id 32, maxattr 10, nbd_mc_group 9)", () => {
    const reply = message(
      "60000000 10000000 01000000 d2040000 01020000 " +
        "08000200 6e626400 " + // FAMILY_NAME "nbd"
        "06000100 20000000 " + // FAMILY_ID u16 32
        "08000300 01000000 08000400 00000000 08000500 0a000000 " + // VERSION 1, HDRSIZE 0, MAXATTR 10
        "24000700 20000100 08000200 09000000 11000100 6e62645f 6d635f67 726f7570 00000000",
    );
    expect(parseFamilyReply(reply)).toEqual({
      ok: true,
      value: { id: 32, name: "nbd", version: 1, hdrSize: 0, maxAttr: 10, groups: [{ name: "nbd_mc_group", id: 9 }] },
    });
  });

  test("a reply without a family id, or with another command, is a reason", () => {
    expect(parseFamilyReply(message("1c000000 10000000 01000000 00000000 01020000 08000200 6e626400"))).toEqual({
      ok: false,
      reason: "family reply has no CTRL_ATTR_FAMILY_ID (u16)",
    });
    expect(parseFamilyReply(message("14000000 10000000 01000000 00000000 03020000")).ok).toBe(false);
  });
});

describe("nbd replies and notifications", () => {
  test("CONNECT reply → device index", () => {
    expect(parseConnectReply(message("1c000000 20000000 05000000 63000000 01010000 08000100 02000000"))).toEqual({
      ok: true,
      value: 2,
    });
  });

  test("STATUS reply → device list (nested items without NLA_F_NESTED, as nbd.c writes them)", () => {
    const reply = message(
      "40000000 20000000 05000000 63000000 05010000 2c000900 " +
        "14000100 08000100 00000000 05000200 01000000 " +
        "14000100 08000100 01000000 05000200 00000000",
    );
    expect(parseStatusReply(reply)).toEqual({
      ok: true,
      value: [
        { index: 0, connected: true },
        { index: 1, connected: false },
      ],
    });
  });

  test("STATUS reply for an index that does not exist: an empty list", () => {
    expect(parseStatusReply(message("18000000 20000000 05000000 63000000 05010000 04000900"))).toEqual({ ok: true, value: [] });
  });

  test("LINK_DEAD multicast (seq 0, pid 0) → device index", () => {
    expect(parseLinkDead(message("1c000000 20000000 00000000 00000000 04010000 08000100 03000000"))).toEqual({
      ok: true,
      value: 3,
    });
  });

  test("malformed replies are reasons", () => {
    expect(parseLinkDead(message("1c000000 20000000 00000000 00000000 05010000 08000100 03000000"))).toEqual({
      ok: false,
      reason: "LINK_DEAD notification has command 5 (expected 4)",
    });
    expect(parseConnectReply(message("14000000 20000000 05000000 00000000 01010000")).ok).toBe(false);
    expect(parseStatusReply(message("14000000 20000000 05000000 00000000 05010000"))).toEqual({
      ok: false,
      reason: "STATUS reply has no NBD_ATTR_DEVICE_LIST",
    });
    // item lacking CONNECTED
    const partial = parseStatusReply(message("24000000 20000000 05000000 00000000 05010000 10000900 0c000100 08000100 00000000"));
    expect(partial.ok).toBe(false);
  });
});
