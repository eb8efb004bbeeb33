/**
 * FOLLOWS (docs/protocol.md §11.2), against a real `dstd export --log-dir` primary over a real
 * socket: a client that does not ask for FETCH_FOLLOWS in HELLO is not granted it; one that
 * asks is, and a FETCH carrying Flag.FOLLOWS sent right behind the FETCH it names (before that
 * one is answered) gets the records after that answer — the two answers back to back are the
 * primary's log, the same bytes one larger FETCH returns. A FOLLOWS naming a FETCH the primary
 * never answered is refused with EAGAIN and a reason, nothing else.
 */
import { afterAll, expect, test } from "bun:test";
import { join } from "node:path";
import { startExport, type RunningExport } from "../helpers/binary.ts";
import { RAW_FEATURES, RawDst } from "../helpers/dst-raw.ts";
import { scratchDir, writeRandomFile } from "../helpers/files.ts";
import { copyInto, MiB } from "./pair.ts";
import { Errno } from "../../src/lib/errno.ts";
import { encodeFrame } from "../../src/wire/dst/header.ts";
import { Feature, Flag, Op, REPLY_BIT } from "../../src/wire/dst/constants.ts";
import { decodeFetchReason, decodeFetchReply, encodeFetchRequest, type FetchReply } from "../../src/wire/dst/fetch.ts";
import { CHAIN_ORIGIN, chainPointOf, RecordDecoder, type ChainPoint, type LogRecord } from "../../src/replication/record.ts";

const dir = scratchDir("replication-follows");
let primary: RunningExport | null = null;
afterAll(async () => {
  await primary?.stop();
  dir.remove();
});

const FROM_START = encodeFetchRequest({ segment: 0, offset: 0, applied: 0, prevChain: 0n, prevLamport: 0, prevGeneration: 0 });

function records(reply: FetchReply | string): FetchReply {
  if (typeof reply === "string") throw new Error(reply);
  return reply;
}

/** The records back to back in `bytes`, verified, each continuing `after` and the one before. */
function decodeAll(bytes: Uint8Array, after: ChainPoint = CHAIN_ORIGIN): LogRecord[] {
  const out: LogRecord[] = [];
  const decoder = new RecordDecoder(after);
  const failure = decoder.push(bytes, (record) => out.push(record));
  if (failure !== null) throw new Error(failure);
  expect(decoder.bufferedBytes).toBe(0); // whole records only
  return out;
}

test("FOLLOWS is granted on request; a second FETCH in flight gets the records after the first answer; an unknown predecessor is EAGAIN", async () => {
  const image = join(dir.path, "a.img");
  primary = await startExport(["--file", image, "--size", "8MiB", "--allow", "127.0.0.1:rw", "--allow", "127.0.0.1:replica", "--log-dir", join(dir.path, "a.log")]);
  const data = join(dir.path, "data.bin");
  writeRandomFile(data, 6 * MiB);
  expect((await copyInto(data, primary.port)).exitCode).toBe(0);

  const old = await RawDst.connect(primary.port);
  const oldHello = await old.handshake({ exportName: "disk", features: RAW_FEATURES });
  old.close();
  if (!oldHello.ok) throw new Error(oldHello.message);
  expect(oldHello.welcome.features & Feature.FETCH_FOLLOWS).toBe(0);

  const raw = await RawDst.connect(primary.port);
  try {
    const hello = await raw.handshake({ exportName: "disk", features: RAW_FEATURES | Feature.FETCH_FOLLOWS });
    if (!hello.ok) throw new Error(hello.message);
    expect(hello.welcome.features & Feature.FETCH_FOLLOWS).toBe(Feature.FETCH_FOLLOWS);
    const span = 2 * MiB;
    // A from seq 1, B follows it (sent before A is answered); C names seq 4, where none of these FETCHes starts: it waits a long poll for one, then EAGAIN.
    await raw.sendFrames(
      encodeFrame({ opcode: Op.FETCH, txid: 1, offset: 1, length: span }, FROM_START),
      encodeFrame({ opcode: Op.FETCH, txid: 2, flags: Flag.FOLLOWS, offset: 1, length: span }, FROM_START),
      encodeFrame({ opcode: Op.FETCH, txid: 3, flags: Flag.FOLLOWS, offset: 4, length: span }, FROM_START),
      encodeFrame({ opcode: Op.FETCH, txid: 4, offset: 1, length: 6 * MiB }, FROM_START),
    );
    const replies = new Map<number, { status: number; payload: Uint8Array }>();
    for (let i = 0; i < 4; i++) {
      const reply = await raw.next();
      expect(reply.header.opcode).toBe(Op.FETCH | REPLY_BIT);
      replies.set(reply.header.txid, { status: reply.header.status, payload: reply.payload });
    }
    const a = records(decodeFetchReply(replies.get(1)!.payload));
    const b = records(decodeFetchReply(replies.get(2)!.payload));
    const whole = records(decodeFetchReply(replies.get(4)!.payload));
    expect(replies.get(1)!.status).toBe(0);
    expect(replies.get(2)!.status).toBe(0);
    expect(a.records.length).toBeGreaterThan(0);
    expect(b.records.length).toBeGreaterThan(0);
    // B's records continue A's chain (the decoder refuses anything else).
    const fromB = decodeAll(b.records, chainPointOf(decodeAll(a.records).at(-1)!));
    const first = fromB[0]!;
    expect(first.seq).toBe(a.nextSeq);
    // Back to back they are the log: the same bytes as the start of one larger answer.
    const joined = Buffer.concat([a.records, b.records]);
    expect(whole.records.length).toBeGreaterThanOrEqual(joined.length);
    expect(Buffer.compare(joined, whole.records.subarray(0, joined.length))).toBe(0);
    expect(b.nextSeq).toBe(first.seq + fromB.length);

    expect(a.nextSeq).not.toBe(4); // B starts at A's end: no FETCH here starts at seq 4
    const unknown = replies.get(3)!;
    expect(unknown.status).toBe(Errno.EAGAIN);
    expect(decodeFetchReason(unknown.payload)).toContain("from seq 4,");
  } finally {
    raw.close();
  }
}, 60_000);
