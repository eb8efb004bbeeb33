/**
 * The secondary's pipelining (src/replication/shipper.ts, docs/protocol.md §11.2): two FETCHes
 * in flight, the second FOLLOWS the first; answers are used in the order the FETCHes were sent
 * whatever order they come back in; a FOLLOWS answer that does not start where the copy ends,
 * or that the primary could not place (EAGAIN with a reason), is dropped and the position
 * fetched again; a link that does not grant FOLLOWS (ENOTSUP, no reason) gets one FETCH at a
 * time. The real Shipper against a hand-driven transport; records are bare 88-byte headers
 * naming their seq (the fake copy takes any).
 */
import { expect, test } from "bun:test";
import { Shipper, type FetchTransport } from "../../src/replication/shipper.ts";
import type { Secondary } from "../../src/replication/secondary.ts";
import { Errno } from "../../src/lib/errno.ts";
import { encodeFetchReason, encodeFetchReply, type FetchRequest } from "../../src/wire/dst/fetch.ts";
import { FIELD, RECORD_HEADER_SIZE } from "../../src/replication/record.ts";
import { SimClock } from "../sim/sim-clock.ts";

/** Records `from`..`to` (bare headers naming only their seq). */
function records(from: number, to: number): Uint8Array {
  const out = new Uint8Array((to - from + 1) * RECORD_HEADER_SIZE);
  for (let seq = from; seq <= to; seq++) new DataView(out.buffer).setBigUint64((seq - from) * RECORD_HEADER_SIZE + FIELD.seq, BigInt(seq));
  return out;
}

function reply(from: number, to: number): Uint8Array {
  return encodeFetchReply({ nextSeq: to + 1, nextSegment: 1, nextOffset: to * RECORD_HEADER_SIZE, durable: 1000, generation: 1, behind: 1 << 20 }, records(from, to));
}

/** A copy that keeps what it is given: the seqs in the order received. */
function fakeSecondary() {
  const received: number[] = [];
  let last = 0;
  const secondary = {
    wanted: () => ({ seq: last, chain: 0n, lamport: 0, generation: 1 }),
    applier: { status: () => ({ applied: { seq: 0 } }) },
    receive: (bytes: Uint8Array, done: (errno: number) => void) => {
      for (let at = 0; at < bytes.length; at += RECORD_HEADER_SIZE) {
        last = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(at + FIELD.seq));
        received.push(last);
      }
      done(0);
      return null;
    },
  } as unknown as Secondary;
  return { secondary, received };
}

interface Sent {
  request: FetchRequest;
  done: (status: number, payload: Uint8Array | null, flags?: number) => void;
}

function setup() {
  const clock = new SimClock();
  const sent: Sent[] = [];
  const transport: FetchTransport = (request, done) => sent.push({ request, done });
  const { secondary, received } = fakeSecondary();
  const shipper = new Shipper(secondary, transport, { now: () => clock.now, after: (ms, fn) => (clock.after(ms, fn), () => {}) }, { retryMs: 1000 });
  const what = () => sent.map((s) => `${s.request.follows === true ? "follows " : ""}${s.request.seq}`);
  return { clock, sent, shipper, received, what };
}

test("two in flight, the second follows the first; answers that come back in reverse are used in send order", () => {
  const { sent, shipper, received, what } = setup();
  shipper.start();
  expect(what()).toEqual(["1", "follows 1"]);
  sent[1]!.done(0, reply(4, 6)); // the FOLLOWS answer overtakes the first
  expect(received).toEqual([]);
  sent[0]!.done(0, reply(1, 3));
  expect(received).toEqual([1, 2, 3, 4, 5, 6]);
  // Both used: the next two go out from the copy's end.
  expect(what().slice(2)).toEqual(["7", "follows 7"]);
  expect(shipper.status()).toMatchObject({ state: "fetching", follows: 2, followsDropped: 0, receivedBytes: 6 * RECORD_HEADER_SIZE });
});

test("a FOLLOWS answer that does not start where the copy ends is dropped, and the position fetched again", () => {
  const { sent, shipper, received, what } = setup();
  shipper.start();
  sent[0]!.done(0, reply(1, 3));
  expect(what()).toEqual(["1", "follows 1", "follows 4"]);
  sent[1]!.done(0, reply(5, 6)); // the primary answered the first FETCH twice: this one skips seq 4
  expect(received).toEqual([1, 2, 3]);
  expect(shipper.status().followsDropped).toBe(1);
  // What followed the dropped answer is dropped with it; the copy's end is asked for by position.
  // The dropped FOLLOWS still counts against the two in flight until its answer is back.
  expect(what().slice(3)).toEqual(["4"]);
  sent[2]!.done(0, reply(7, 8)); // the answer to the dropped FOLLOWS: ignored
  expect(what().slice(4)).toEqual(["follows 4"]);
  sent[3]!.done(0, reply(4, 5));
  expect(received).toEqual([1, 2, 3, 4, 5]);
  expect(shipper.status().state).toBe("fetching");
});

test("EAGAIN with a reason (the primary does not know the FETCH it follows): dropped, fetched by position, no retry wait", () => {
  const { sent, shipper, received, what } = setup();
  shipper.start();
  sent[1]!.done(Errno.EAGAIN, encodeFetchReason("FETCH follows the answer from seq 1, which this primary has not answered"));
  sent[0]!.done(0, reply(1, 2));
  expect(received).toEqual([1, 2]);
  expect(what().slice(2)).toEqual(["3", "follows 3"]);
  expect(shipper.status()).toMatchObject({ state: "fetching", retries: 0, followsDropped: 1 });
});

test("a link that does not grant FOLLOWS (ENOTSUP, no reason): one FETCH at a time for a minute, then it tries again", () => {
  const { clock, sent, shipper, received, what } = setup();
  shipper.start();
  sent[1]!.done(Errno.ENOTSUP, null);
  sent[0]!.done(0, reply(1, 2));
  expect(what().slice(2)).toEqual(["3"]);
  sent[2]!.done(0, reply(3, 3));
  expect(what().slice(3)).toEqual(["4"]);
  clock.runUntil(61_000);
  sent[3]!.done(0, reply(4, 4));
  expect(received).toEqual([1, 2, 3, 4]);
  expect(what().slice(4)).toEqual(["5", "follows 5"]);
});

test("a failed first FETCH drops the one following it; fetching resumes after the retry wait", () => {
  const { clock, sent, shipper, received, what } = setup();
  shipper.start();
  sent[0]!.done(Errno.ETIMEDOUT, null);
  expect(shipper.status().state).toBe("retrying");
  sent[1]!.done(0, reply(3, 4)); // dropped with the pipeline
  expect(received).toEqual([]);
  clock.runUntil(1_001);
  expect(what().slice(2)).toEqual(["1", "follows 1"]);
  sent[2]!.done(0, reply(1, 2));
  expect(received).toEqual([1, 2]);
  expect(shipper.status().state).toBe("fetching");
});
