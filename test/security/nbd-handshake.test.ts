/**
 * The NBD handshake against a hostile client, through the real export wiring
 * (daemon/nbd-front.ts → nbd/connection.ts) on a FakeSink whose "kernel" takes only what the
 * test lets it (issue 9):
 *   item 7 — a client that sends options and never reads the replies gets at most one
 *            option's replies queued; the rest waits, unread, until it reads;
 *   item 8 — a name that exists but is not the client's gets the very answer of a name that
 *            does not exist (INFO, GO, EXPORT_NAME), and LIST shows only the client's exports;
 *   item 6 — export names reach the log escaped and truncated.
 */
import { describe, expect, test } from "bun:test";
import { acceptNbdForExports } from "../../src/daemon/nbd-front.ts";
import type { Export } from "../../src/export/exports.ts";
import { parseAllowRule, type AllowRule } from "../../src/lib/acl.ts";
import { createMemoryBackend } from "../../src/storage/local/memory.ts";
import { createLocalPort } from "../../src/storage/local/port.ts";
import type { ConnectionHandler, Peer } from "../../src/transport/types.ts";
import { Cmd, Info, Opt, Rep, ReplyType } from "../../src/wire/nbd/constants.ts";
import { encodeRequest } from "../../src/wire/nbd/transmission.ts";
import { FakeSink } from "../helpers/fake-sink.ts";
import { concat, infoData, metaData, option, parseOptionReplies, parseReplies, u32, view } from "../nbd/harness.ts";

const PEER: Peer = { transport: "tcp", address: "192.0.2.7", port: 40000 };
const utf8 = new TextEncoder();

function exportNamed(name: string, ...rules: string[]): Export {
  return {
    name,
    description: `the ${name} disk`,
    port: createLocalPort(createMemoryBackend(1 << 20)),
    readOnly: false,
    allow: rules.map((r) => parseAllowRule(r) as AllowRule),
  };
}

// "mine" is the peer's; "ours1" is someone else's (same name length as the unknown "ours2").
const EXPORTS = [exportNamed("mine", "192.0.2.0/24:rw"), exportNamed("ours1", "10.0.0.0/8:rw"), exportNamed("public", "0.0.0.0/0:ro")];

function connect(room = Number.POSITIVE_INFINITY) {
  const lines: string[] = [];
  const log = {
    error: (m: string) => lines.push(`error: ${m}`),
    warn: (m: string) => lines.push(`warn: ${m}`),
    info: (m: string) => lines.push(`info: ${m}`),
    debug: () => {},
  };
  const sink = new FakeSink();
  const handler: ConnectionHandler = acceptNbdForExports(EXPORTS, log)(sink, PEER, {
    admitted: () => lines.push("admitted"),
    refused: (line) => lines.push(`refused: ${line}`),
  });
  sink.handler = handler;
  sink.read(); // greeting
  sink.room = room;
  return { sink, handler, lines, send: (bytes: Uint8Array) => handler.onData(bytes) };
}

const FLAGS = u32(3); // FIXED_NEWSTYLE | NO_ZEROES

describe("item 7: option replies are bounded by the client's reading", () => {
  test("1000 LISTs in one send queue at most one LIST's replies; all are answered, in order, as the client reads", () => {
    const reference = connect();
    reference.send(concat(FLAGS, option(Opt.LIST)));
    const oneList = reference.sink.read().length; // 2 SERVER replies and an ACK
    const c = connect(0); // the client reads nothing
    const lists = Array.from({ length: 1000 }, () => option(Opt.LIST));
    c.send(concat(FLAGS, ...lists));
    expect(c.sink.queuedBytes).toBe(oneList);
    expect(c.sink.paused).toBe(true); // reading stopped
    // The client now reads 200 bytes at a time: the queue never grows past one option's replies.
    let peak = 0;
    let acks = 0;
    let servers = 0;
    for (let round = 0; round < 100_000 && acks < 1000; round++) {
      c.sink.drain(200);
      peak = Math.max(peak, c.sink.queuedBytes);
      if (c.sink.queuedBytes === 0) c.sink.drain(200); // room without a queue: the handler hears onDrain
      for (const reply of parseOptionRepliesLoose(c)) {
        if (reply.type === Rep.ACK) acks++;
        else if (reply.type === Rep.SERVER) servers++;
      }
    }
    expect(acks).toBe(1000);
    expect(servers).toBe(2000); // "mine" and "public" each time: see item 8
    expect(peak).toBeLessThanOrEqual(oneList);
    expect(c.sink.paused).toBe(false);
  });
});

/** Replies received so far, keeping a partial one for the next call. */
const pendingBytes = new WeakMap<object, Uint8Array>();
function parseOptionRepliesLoose(c: { sink: FakeSink }) {
  const bytes = concat(pendingBytes.get(c) ?? new Uint8Array(0), c.sink.read());
  let at = 0;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  while (at + 20 <= bytes.length && at + 20 + view.getUint32(at + 16) <= bytes.length) at += 20 + view.getUint32(at + 16);
  pendingBytes.set(c, bytes.slice(at));
  return parseOptionReplies(bytes.subarray(0, at));
}

describe("item 8: export names cannot be probed", () => {
  const answer = (opt: number, name: string) => {
    const c = connect();
    c.send(concat(FLAGS, option(opt, infoData(name))));
    const replies = parseOptionReplies(c.sink.read());
    return { replies, c };
  };

  for (const [label, opt] of [["INFO", Opt.INFO], ["GO", Opt.GO]] as const) {
    test(`${label}: someone else's export and a missing one get the same reply`, () => {
      const forbidden = answer(opt, "ours1");
      const missing = answer(opt, "ours2");
      expect(forbidden.replies).toHaveLength(1);
      expect(forbidden.replies[0]!.type).toBe(Rep.ERR_UNKNOWN);
      const text = (r: typeof forbidden) => new TextDecoder().decode(r.replies[0]!.data);
      expect(text(forbidden).replace("ours1", "NAME")).toBe(text(missing).replace("ours2", "NAME"));
      expect(forbidden.replies[0]!.type).toBe(missing.replies[0]!.type);
      // The export's own log still tells them apart.
      expect(forbidden.c.lines.some((l) => l.includes("not allowed to use export 'ours1'"))).toBe(true);
      expect(missing.c.lines.some((l) => l.includes("not allowed"))).toBe(false);
      // The client's own export works.
      const mine = answer(opt, "mine");
      expect(mine.replies.at(-1)!.type).toBe(Rep.ACK);
    });
  }

  test("EXPORT_NAME: both end the session the same way", () => {
    const ends = ["ours1", "ours2"].map((name) => {
      const c = connect();
      c.send(concat(FLAGS, option(Opt.EXPORT_NAME, utf8.encode(name))));
      return { destroyed: c.sink.destroyed, ended: c.sink.ended, sent: c.sink.read().length };
    });
    expect(ends[0]).toEqual(ends[1]!);
    expect(ends[0]!.destroyed).toBe(true);
  });

  test("LIST shows only the exports this client may use", () => {
    const c = connect();
    c.send(concat(FLAGS, option(Opt.LIST)));
    const names = parseOptionReplies(c.sink.read())
      .filter((r) => r.type === Rep.SERVER)
      .map((r) => new TextDecoder().decode(r.data.subarray(4, 4 + new DataView(r.data.buffer, r.data.byteOffset).getUint32(0))));
    expect(names).toEqual(["mine", "public"]);
  });
});

describe("item 6: export names in the log", () => {
  test("control characters are escaped and long names truncated; the refusal goes through the guard's rate limit", () => {
    const c = connect();
    const forged = "x\n[export] ℹ NBD 10.0.0.1:1: serving 'mine' rw\u001b[2J\u2028";
    c.send(concat(FLAGS, option(Opt.INFO, infoData(forged)), option(Opt.INFO, infoData("n".repeat(4000)))));
    const refusals = c.lines.filter((l) => l.startsWith("refused: "));
    expect(refusals).toHaveLength(2);
    for (const line of refusals) {
      expect(line).not.toMatch(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/);
      expect(line.length).toBeLessThan(300);
    }
    expect(refusals[0]).toContain("'x\\n[export] ℹ NBD 10.0.0.1:1: serving \\x27mine\\x27 rw\\x1b[2J\\u2028'");
    expect(refusals[1]).toContain("…(4000 chars in all)");
  });
});

describe("the default export (the name \"\") on a listener with one export", () => {
  function single() {
    const lines: string[] = [];
    const log = { error: (m: string) => lines.push(m), warn: (m: string) => lines.push(m), info: (m: string) => lines.push(m), debug: () => {} };
    const front = acceptNbdForExports([exportNamed("mine", "192.0.2.0/24:rw")], log);
    const sink = new FakeSink();
    sink.handler = front(sink, PEER, { admitted: () => {}, refused: (line) => lines.push(line) });
    sink.read(); // greeting
    return { front, sink, lines };
  }

  test("the connection is known by the export's real name: NBD_INFO_NAME says it and a reload's re-check keeps it", () => {
    const c = single();
    c.sink.handler!.onData(concat(FLAGS, option(Opt.STRUCTURED_REPLY), option(Opt.SET_META_CONTEXT, metaData("", ["base:allocation"])), option(Opt.GO, infoData("", [Info.NAME]))));
    const replies = parseOptionReplies(c.sink.read());
    expect(replies.some((r) => r.option === Opt.SET_META_CONTEXT && r.type === Rep.META_CONTEXT)).toBe(true);
    const name = replies.find((r) => r.option === Opt.GO && r.type === Rep.INFO && view(r.data).getUint16(0) === Info.NAME)!;
    expect(new TextDecoder().decode(name.data.subarray(2))).toBe("mine");
    expect(replies.at(-1)!.type).toBe(Rep.ACK);
    // A reload that changed nothing re-checks live connections: this one stays (it was closed
    // as "no longer allowed to use export ''").
    expect(c.front.recheck()).toEqual([]);
    expect(c.sink.closed).toBe(false);
    // BLOCK_STATUS works: the meta context chosen for "" is the one of the export GO opened.
    c.sink.handler!.onData(encodeRequest({ type: Cmd.BLOCK_STATUS, cookie: 9n, offset: 0, length: 4096 }));
    const [reply] = parseReplies(c.sink.read());
    expect(reply).toMatchObject({ kind: "chunk", cookie: 9n, type: ReplyType.BLOCK_STATUS });
  });
});

describe("a replica role change reaches NBD connections already open (daemon/nbd-front.ts rebind)", () => {
  function opened() {
    const e = exportNamed("mine", "192.0.2.0/24:rw");
    const log = { error: () => {}, warn: () => {}, info: () => {}, debug: () => {} };
    const front = acceptNbdForExports([e], log);
    const sink = new FakeSink();
    sink.handler = front(sink, PEER, { admitted: () => {}, refused: () => {} });
    sink.read(); // greeting
    sink.handler.onData(concat(FLAGS, option(Opt.GO, infoData("mine"))));
    expect(parseOptionReplies(sink.read()).at(-1)!.type).toBe(Rep.ACK);
    let cookie = 0n;
    const write = (): number => {
      sink.handler!.onData(encodeRequest({ type: Cmd.WRITE, cookie: ++cookie, offset: 0, data: new Uint8Array(512).fill(1) }));
      const [reply] = parseReplies(sink.read());
      return (reply as { error: number }).error;
    };
    return { e, front, sink, write };
  }

  test("same port: writes are refused while the export is read-only (a demote under way) and taken again once it is writable (the demote failed)", () => {
    const { e, front, write } = opened();
    expect(write()).toBe(0);
    e.readOnly = true;
    expect(front.rebind("mine")).toEqual(["NBD 192.0.2.7:40000 read-only now on export 'mine'"]);
    expect(write()).toBe(1); // EPERM
    e.readOnly = false;
    expect(front.rebind("mine")).toEqual(["NBD 192.0.2.7:40000 writable again on export 'mine'"]);
    expect(write()).toBe(0);
    expect(front.rebind("mine")).toEqual([]); // nothing changed: nothing done
    // A reload that took the write grant away is not undone by a role change.
    e.allow = [parseAllowRule("192.0.2.0/24:ro") as AllowRule];
    expect(front.recheck()).toHaveLength(1);
    expect(front.rebind("mine")).toEqual([]);
    expect(write()).toBe(1);
  });

  test("another port (a secondary promoted, a primary demoted): the connection is closed, the client reconnects to what the export serves now", () => {
    const { e, front, sink } = opened();
    e.port = createLocalPort(createMemoryBackend(1 << 20));
    expect(front.rebind("mine")).toEqual(["closed NBD 192.0.2.7:40000: export 'mine' changed role"]);
    expect(sink.closed).toBe(true);
  });
});
