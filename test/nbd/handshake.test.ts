import { describe, expect, test } from "bun:test";
import { createMemoryBackend } from "../../src/storage/local/memory.ts";
import { createLocalPort } from "../../src/storage/local/port.ts";
import { Info, Opt, Rep, TxFlag } from "../../src/wire/nbd/constants.ts";
import { Cmd } from "../../src/wire/nbd/constants.ts";
import { encodeRequest } from "../../src/wire/nbd/transmission.ts";
import {
  concat,
  harness,
  infoData,
  metaData,
  negotiate,
  option,
  parseOptionReplies,
  parseReplies,
  u32,
  view,
  type Harness,
  type OptionReply,
} from "./harness.ts";

const text = (b: Uint8Array) => new TextDecoder().decode(b);
const WRITABLE_FLAGS =
  TxFlag.HAS_FLAGS | TxFlag.SEND_FLUSH | TxFlag.SEND_FUA | TxFlag.SEND_TRIM | TxFlag.SEND_WRITE_ZEROES |
  TxFlag.SEND_FAST_ZERO | TxFlag.CAN_MULTI_CONN | TxFlag.SEND_CACHE;

/** Start a connection and send client flags; returns the harness with the greeting consumed. */
function started(options: Parameters<typeof harness>[0] = {}, clientFlags = 3): Harness {
  const h = harness(options);
  h.sink.read();
  h.send(u32(clientFlags));
  return h;
}

function ask(h: Harness, ...options: Uint8Array[]): OptionReply[] {
  h.send(concat(...options));
  return parseOptionReplies(h.sink.read());
}

function infoExportOf(replies: OptionReply[]): { size: bigint; flags: number } {
  const info = replies.find((r) => r.type === Rep.INFO && view(r.data).getUint16(0) === Info.EXPORT);
  if (!info) throw new Error("no NBD_INFO_EXPORT");
  return { size: view(info.data).getBigUint64(2), flags: view(info.data).getUint16(10) };
}

describe("greeting and client flags", () => {
  test("the server speaks first: NBDMAGIC IHAVEOPT with FIXED_NEWSTYLE|NO_ZEROES", () => {
    const h = harness();
    expect(Buffer.from(h.sink.read()).toString("hex")).toBe("4e42444d41474943" + "49484156454f5054" + "0003");
  });

  test("unknown client flags drop the connection (proto.md 'Client flags')", () => {
    const h = started({}, 0x7);
    expect(h.sink.destroyed).toBe(true);
    expect(h.sink.read().length).toBe(0);
    expect(h.logs.join("\n")).toContain("unknown bits");
  });

  test("bad option magic drops the connection with a logged reason", () => {
    const h = started();
    h.send(new Uint8Array(16).fill(0x20));
    expect(h.sink.destroyed).toBe(true);
    expect(h.logs.join("\n")).toContain("IHAVEOPT");
  });
});

describe("OPT_GO / OPT_INFO", () => {
  test("GO answers INFO_EXPORT and BLOCK_SIZE then ACK, and transmission starts", () => {
    const h = started({ size: 1 << 20 });
    const replies = ask(h, option(Opt.GO, infoData("disk")));
    expect(replies.map((r) => r.type)).toEqual([Rep.INFO, Rep.INFO, Rep.ACK]);
    expect(replies.every((r) => r.option === Opt.GO)).toBe(true);
    expect(infoExportOf(replies)).toEqual({ size: 1n << 20n, flags: WRITABLE_FLAGS });
    const block = replies.find((r) => view(r.data).getUint16(0) === Info.BLOCK_SIZE)!;
    expect([view(block.data).getUint32(2), view(block.data).getUint32(6), view(block.data).getUint32(10)]).toEqual([1, 4096, 32 << 20]);
    h.send(encodeRequest({ type: Cmd.FLUSH, cookie: 9n }));
    expect(parseReplies(h.sink.read())).toEqual([{ kind: "simple", error: 0, cookie: 9n, data: null }]);
  });

  test("GO with NAME and DESCRIPTION requests answers them too", () => {
    const h = started();
    const replies = ask(h, option(Opt.GO, infoData("disk", [Info.NAME, Info.DESCRIPTION, 999])));
    const infos = new Map(replies.filter((r) => r.type === Rep.INFO).map((r) => [view(r.data).getUint16(0), r.data.subarray(2)]));
    expect(text(infos.get(Info.NAME)!)).toBe("disk");
    expect(text(infos.get(Info.DESCRIPTION)!)).toBe("test export");
    expect(replies.at(-1)!.type).toBe(Rep.ACK);
  });

  test("INFO does not end negotiation; a later GO does", () => {
    const h = started();
    expect(ask(h, option(Opt.INFO, infoData("disk"))).at(-1)!.type).toBe(Rep.ACK);
    expect(ask(h, option(Opt.LIST)).map((r) => r.type)).toEqual([Rep.SERVER, Rep.ACK]);
    expect(ask(h, option(Opt.GO, infoData("disk"))).at(-1)!.type).toBe(Rep.ACK);
  });

  test("unknown export: ERR_UNKNOWN with a message, and haggling continues", () => {
    const h = started();
    const [reply] = ask(h, option(Opt.GO, infoData("nope")));
    expect(reply!.type).toBe(Rep.ERR_UNKNOWN);
    expect(text(reply!.data)).toContain("no export named");
    expect(h.sink.closed).toBe(false);
    expect(ask(h, option(Opt.GO, infoData("disk"))).at(-1)!.type).toBe(Rep.ACK);
  });

  test("ACL refusal: ERR_POLICY with the reason", () => {
    const h = started();
    const [reply] = ask(h, option(Opt.INFO, infoData("secret")));
    expect(reply!.type).toBe(Rep.ERR_POLICY);
    expect(text(reply!.data)).toContain("allow list");
  });

  test("malformed GO data: ERR_INVALID, not a disconnect", () => {
    const h = started();
    const [reply] = ask(h, option(Opt.GO, concat(u32(50), new Uint8Array(2))));
    expect(reply!.type).toBe(Rep.ERR_INVALID);
    expect(h.sink.closed).toBe(false);
  });

  test("read-only access: READ_ONLY set, write-side flags withheld", () => {
    const h = started({ access: "ro" });
    const { flags } = infoExportOf(ask(h, option(Opt.GO, infoData("disk"))));
    expect(flags & TxFlag.READ_ONLY).toBe(TxFlag.READ_ONLY);
    expect(flags & (TxFlag.SEND_TRIM | TxFlag.SEND_WRITE_ZEROES | TxFlag.SEND_FUA | TxFlag.SEND_FAST_ZERO)).toBe(0);
  });

  test("an export-level read-only target is read-only even for an rw grant, and writes get EPERM", () => {
    const backend = createMemoryBackend(1 << 20);
    const h = started({ target: createLocalPort(backend, { readOnly: true }), access: "rw" });
    const { flags } = infoExportOf(ask(h, option(Opt.GO, infoData("disk"))));
    expect(flags & TxFlag.READ_ONLY).toBe(TxFlag.READ_ONLY);
    h.send(encodeRequest({ type: Cmd.WRITE, cookie: 1n, data: new Uint8Array(8).fill(1) }));
    expect(parseReplies(h.sink.read())).toEqual([{ kind: "simple", error: 1, cookie: 1n, data: null }]);
  });

  test("CAN_MULTI_CONN is offered only when the target says its cache is shared", () => {
    const inner = createLocalPort(createMemoryBackend(1 << 20));
    const unshared = Object.assign(Object.create(Object.getPrototypeOf(inner)), inner, { canMultiConn: false });
    expect(infoExportOf(ask(started({ target: inner }), option(Opt.INFO, infoData("disk")))).flags & TxFlag.CAN_MULTI_CONN).toBe(TxFlag.CAN_MULTI_CONN);
    expect(infoExportOf(ask(started({ target: unshared }), option(Opt.INFO, infoData("disk")))).flags & TxFlag.CAN_MULTI_CONN).toBe(0);
  });

  test("SEND_DF is set only after STRUCTURED_REPLY", () => {
    const plain = infoExportOf(ask(started(), option(Opt.INFO, infoData("disk")))).flags;
    const structured = infoExportOf(ask(started(), option(Opt.STRUCTURED_REPLY), option(Opt.INFO, infoData("disk")))).flags;
    expect(plain & TxFlag.SEND_DF).toBe(0);
    expect(structured & TxFlag.SEND_DF).toBe(TxFlag.SEND_DF);
  });
});

describe("OPT_EXPORT_NAME fallback", () => {
  test("reply is size, flags and 124 zeroes without NO_ZEROES", () => {
    const h = started({ size: 8192 }, 1);
    h.send(option(Opt.EXPORT_NAME, new TextEncoder().encode("disk")));
    const reply = h.sink.read();
    expect(reply.length).toBe(134);
    expect(view(reply).getBigUint64(0)).toBe(8192n);
    expect(view(reply).getUint16(8)).toBe(WRITABLE_FLAGS);
    expect(reply.subarray(10).every((b) => b === 0)).toBe(true);
  });

  test("with NO_ZEROES the reply is 10 bytes, then transmission", () => {
    const h = started({}, 3);
    h.send(concat(option(Opt.EXPORT_NAME, new Uint8Array(0)), encodeRequest({ type: Cmd.FLUSH, cookie: 1n })));
    const bytes = h.sink.read();
    expect(bytes.length).toBe(10 + 16);
    expect(parseReplies(bytes.subarray(10))).toEqual([{ kind: "simple", error: 0, cookie: 1n, data: null }]);
  });

  test("an unknown export name terminates the session (no reply is possible)", () => {
    const h = started();
    h.send(option(Opt.EXPORT_NAME, new TextEncoder().encode("nope")));
    expect(h.sink.destroyed).toBe(true);
    expect(h.sink.read().length).toBe(0);
    expect(h.logs.join("\n")).toContain("nope");
  });
});

describe("other options", () => {
  test("LIST gives one SERVER per export then ACK; data makes it ERR_INVALID", () => {
    const h = started();
    const replies = ask(h, option(Opt.LIST));
    expect(replies.map((r) => r.type)).toEqual([Rep.SERVER, Rep.ACK]);
    const data = replies[0]!.data;
    expect(view(data).getUint32(0)).toBe(4);
    expect(text(data.subarray(4, 8))).toBe("disk");
    expect(text(data.subarray(8))).toBe("the test disk");
    expect(ask(h, option(Opt.LIST, new Uint8Array(1)))[0]!.type).toBe(Rep.ERR_INVALID);
  });

  test("ABORT is acknowledged and the connection ends gracefully", () => {
    const h = started();
    expect(ask(h, option(Opt.ABORT)).map((r) => r.type)).toEqual([Rep.ACK]);
    expect(h.sink.ended).toBe(true);
    expect(h.sink.destroyed).toBe(false);
  });

  test("unknown options, STARTTLS and EXTENDED_HEADERS get ERR_UNSUP and the next option still parses", () => {
    const h = started();
    const replies = ask(h, option(42, new Uint8Array(7)), option(Opt.STARTTLS), option(Opt.EXTENDED_HEADERS), option(Opt.LIST));
    expect(replies.map((r) => [r.option, r.type])).toEqual([
      [42, Rep.ERR_UNSUP],
      [Opt.STARTTLS, Rep.ERR_UNSUP],
      [Opt.EXTENDED_HEADERS, Rep.ERR_UNSUP],
      [Opt.LIST, Rep.SERVER],
      [Opt.LIST, Rep.ACK],
    ]);
  });

  test("oversized option data is skipped and answered ERR_TOO_BIG", () => {
    const h = started();
    const replies = ask(h, option(Opt.GO, new Uint8Array(70000)), option(Opt.LIST));
    expect(replies.map((r) => r.type)).toEqual([Rep.ERR_TOO_BIG, Rep.SERVER, Rep.ACK]);
  });

  test("STRUCTURED_REPLY: ACK once; with data or repeated it is ERR_INVALID", () => {
    const h = started();
    expect(ask(h, option(Opt.STRUCTURED_REPLY, new Uint8Array(1)))[0]!.type).toBe(Rep.ERR_INVALID);
    expect(ask(h, option(Opt.STRUCTURED_REPLY))[0]!.type).toBe(Rep.ACK);
    expect(ask(h, option(Opt.STRUCTURED_REPLY))[0]!.type).toBe(Rep.ERR_INVALID);
  });

  test("more than 1024 options is treated as a denial of service", () => {
    const h = started();
    h.send(concat(...Array.from({ length: 1025 }, () => option(99))));
    expect(h.sink.destroyed).toBe(true);
  });
});

describe("meta contexts (base:allocation)", () => {
  test("SET_META_CONTEXT needs structured replies first", () => {
    const h = started();
    expect(ask(h, option(Opt.SET_META_CONTEXT, metaData("disk", ["base:allocation"])))[0]!.type).toBe(Rep.ERR_INVALID);
  });

  test("SET selects base:allocation with a context id; unknown namespaces and 'base:' select nothing", () => {
    const h = started();
    ask(h, option(Opt.STRUCTURED_REPLY));
    const replies = ask(h, option(Opt.SET_META_CONTEXT, metaData("disk", ["qemu:dirty-bitmap:x", "base:", "base:allocation"])));
    expect(replies.map((r) => r.type)).toEqual([Rep.META_CONTEXT, Rep.ACK]);
    expect(view(replies[0]!.data).getUint32(0)).toBe(1);
    expect(text(replies[0]!.data.subarray(4))).toBe("base:allocation");
    expect(ask(h, option(Opt.SET_META_CONTEXT, metaData("disk", ["base:"]))).map((r) => r.type)).toEqual([Rep.ACK]);
  });

  test("LIST_META_CONTEXT: no query or 'base:' lists base:allocation; other namespaces list nothing", () => {
    const h = started();
    ask(h, option(Opt.STRUCTURED_REPLY));
    for (const queries of [[], ["base:"], ["base:allocation"]]) {
      const replies = ask(h, option(Opt.LIST_META_CONTEXT, metaData("disk", queries)));
      expect(replies.map((r) => r.type)).toEqual([Rep.META_CONTEXT, Rep.ACK]);
      expect(text(replies[0]!.data.subarray(4))).toBe("base:allocation");
    }
    expect(ask(h, option(Opt.LIST_META_CONTEXT, metaData("disk", ["qemu:"]))).map((r) => r.type)).toEqual([Rep.ACK]);
  });

  test("meta context for an unknown export: ERR_UNKNOWN; malformed: ERR_INVALID", () => {
    const h = started();
    ask(h, option(Opt.STRUCTURED_REPLY));
    expect(ask(h, option(Opt.SET_META_CONTEXT, metaData("nope", ["base:allocation"])))[0]!.type).toBe(Rep.ERR_UNKNOWN);
    expect(ask(h, option(Opt.SET_META_CONTEXT, concat(u32(0), u32(3))))[0]!.type).toBe(Rep.ERR_INVALID);
  });

  test("contexts set for another export name do not enable BLOCK_STATUS", () => {
    const h = harness({ names: ["disk", "other"] });
    h.sink.read();
    h.send(concat(u32(3), option(Opt.STRUCTURED_REPLY), option(Opt.SET_META_CONTEXT, metaData("other", ["base:allocation"])), option(Opt.GO, infoData("disk"))));
    h.sink.read();
    h.send(encodeRequest({ type: Cmd.BLOCK_STATUS, cookie: 5n, offset: 0, length: 4096 }));
    const [reply] = parseReplies(h.sink.read());
    expect(reply!.kind === "chunk" && view(reply!.payload).getUint32(0)).toBe(22);
  });

  test("negotiate() helper reaches transmission with structured replies and contexts", () => {
    const h = harness();
    const replies = negotiate(h, { structured: true, meta: true });
    expect(replies.map((r) => r.type)).toEqual([Rep.ACK, Rep.META_CONTEXT, Rep.ACK, Rep.INFO, Rep.INFO, Rep.ACK]);
  });
});
