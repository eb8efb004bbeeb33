/**
 * Where a secondary's recent answers ended (src/replication/ship-server.ts AnswerEnds), the
 * primary's memory for FOLLOWS (docs/protocol.md §11.2): a FOLLOWS waits for an answer still
 * being read; one that overtook its predecessor waits for that FETCH to begin, until its wait
 * ends; a failed answer, an unknown or a forgotten one is null; every list is bounded.
 */
import { expect, test } from "bun:test";
import { ANSWER_ENDS, AnswerEnds, type AnswerEnd } from "../../src/replication/ship-server.ts";

const end = (seq: number): AnswerEnd => ({ next: { seq, segment: 1, offset: seq * 100 }, point: { seq: seq - 1, chain: BigInt(seq), lamport: seq, generation: 1 } });

/** A wait the test ends by hand. */
function waits() {
  const pending: (() => void)[] = [];
  let cancelled = 0;
  const wait = (run: () => void) => {
    pending.push(run);
    return () => cancelled++;
  };
  return { wait, pending, cancelled: () => cancelled };
}

test("an answer being read is waited for; a finished one answers at once; a failed one is null", () => {
  const ends = new AnswerEnds();
  const a = ends.begin(1);
  const got: (AnswerEnd | null)[] = [];
  ends.when(1, (e) => got.push(e));
  expect(got).toEqual([]);
  ends.settle(a, end(8));
  expect(got).toEqual([end(8)]);
  ends.when(1, (e) => got.push(e));
  expect(got).toEqual([end(8), end(8)]);
  const b = ends.begin(8);
  ends.when(8, (e) => got.push(e));
  ends.settle(b, null);
  expect(got.at(-1)).toBeNull();
});

test("a FOLLOWS that overtook its predecessor waits for it to begin; without it, null when the wait ends", () => {
  const ends = new AnswerEnds();
  const { wait, pending, cancelled } = waits();
  const got: (AnswerEnd | null)[] = [];
  ends.when(5, (e) => got.push(e), wait);
  ends.when(9, (e) => got.push(e), wait);
  const five = ends.begin(5); // the overtaken FETCH arrives: its wait is cancelled, the FOLLOWS chained
  expect(cancelled()).toBe(1);
  ends.settle(five, end(9));
  expect(got).toEqual([end(9)]);
  pending[1]!(); // nothing began from seq 9 in time
  expect(got).toEqual([end(9), null]);
  pending[0]!(); // a wait that was cancelled does nothing if it still fires
  expect(got).toEqual([end(9), null]);
  // Without a wait (or nothing kept for that secondary): null at once.
  ends.when(42, (e) => got.push(e));
  expect(got.at(-1)).toBeNull();
});

test("bounded: the oldest answer end is forgotten (its waiters get null), and so is the oldest early wait", () => {
  const ends = new AnswerEnds();
  const got: (AnswerEnd | null)[] = [];
  ends.begin(1);
  ends.when(1, (e) => got.push(e)); // still being read when it is pushed out
  for (let seq = 2; seq <= ANSWER_ENDS + 1; seq++) ends.settle(ends.begin(seq), end(seq + 1));
  expect(got).toEqual([null]);
  ends.when(1, (e) => got.push(e));
  expect(got).toEqual([null, null]);
  const { wait, cancelled } = waits();
  const early: number[] = [];
  for (let seq = 100; seq < 100 + ANSWER_ENDS + 2; seq++) ends.when(seq, (e) => e === null && early.push(seq), wait);
  expect(early).toEqual([100, 101]);
  expect(cancelled()).toBe(2);
});
