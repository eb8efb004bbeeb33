/**
 * ReplayLog against a naive model (a list of entry objects holding their own copies), over
 * seeded random appends of small (slab-copied) and large (by-reference) writes, trims,
 * supersedes and releases. After every step the log's pending() — ranges, kinds, seqs and
 * bytes — and its byte count must equal the model's.
 */
import { expect, test } from "bun:test";
import { Lease } from "../../src/engine/lease.ts";
import { newestPieces, ReplayLog, replayData, replayPieces, ZEROES_AS_WRITES_MAX, type ReplayEntry } from "../../src/engine/replay-log.ts";
import { Feature } from "../../src/wire/dst/constants.ts";
import { Prng } from "../../src/lib/prng.ts";

type Model = { seq: number; kind: ReplayEntry["kind"]; offset: number; length: number; data: Uint8Array | null };

function supersedeModel(model: Model[], offset: number, length: number): Model[] {
  const end = offset + length;
  const out: Model[] = [];
  for (const e of model) {
    const eEnd = e.offset + e.length;
    if (eEnd <= offset || e.offset >= end) out.push(e);
    else {
      const cut = (from: number, to: number): Model => ({
        ...e,
        offset: from,
        length: to - from,
        data: e.data ? e.data.subarray(from - e.offset, to - e.offset) : null,
      });
      if (e.offset < offset) out.push(cut(e.offset, offset));
      if (eEnd > end) out.push(cut(end, eEnd));
    }
  }
  return out;
}

for (const seed of [1, 2, 3, 4, 5]) {
  test(`matches the model (seed ${seed})`, () => {
    const prng = new Prng(seed);
    const log = new ReplayLog();
    let model: Model[] = [];
    let seq = 0;
    for (let step = 0; step < 400; step++) {
      const roll = prng.float();
      if (roll < 0.6) {
        const big = prng.chance(0.3);
        const length = big ? 65536 + prng.int(200_000) : 1 + prng.int(8192);
        const offset = prng.int(1 << 22);
        const data = prng.bytes(length);
        const kind: ReplayEntry["kind"] = prng.chance(0.1) ? "trim" : "write";
        log.append(kind, offset, length, kind === "write" ? data : null, false);
        model.push({ seq: seq++, kind, offset, length, data: kind === "write" ? data.slice() : null });
        data.fill(0xee); // the log must not depend on the caller's buffer staying intact... for small writes
        if (big && kind === "write") model[model.length - 1]!.data!.fill(0xee); // large ones are by reference
      } else if (roll < 0.75) {
        const offset = prng.int(1 << 22);
        const length = 1 + prng.int(300_000);
        log.supersede(offset, length);
        model = supersedeModel(model, offset, length);
      } else {
        const mark = prng.int(seq + 1);
        log.release(mark);
        model = model.filter((e) => e.seq >= mark);
      }
      const got = log.pending().map((e) => ({ seq: e.seq, kind: e.kind, offset: e.offset, length: e.length, data: e.data }));
      expect(got.length).toBe(model.length);
      for (let i = 0; i < got.length; i++) {
        const g = got[i]!;
        const m = model[i]!;
        expect([g.seq, g.kind, g.offset, g.length]).toEqual([m.seq, m.kind, m.offset, m.length]);
        if (m.data === null) expect(g.data).toBeNull();
        else expect(Buffer.from(g.data!).equals(Buffer.from(m.data))).toBe(true);
      }
      expect(log.bytes).toBe(model.reduce((n, e) => n + (e.data ? e.length : 0), 0));
    }
  });
}

test("newestPieces: disjoint replays that leave the same image as applying the log in order", () => {
  const prng = new Prng(7);
  const size = 256;
  for (let round = 0; round < 500; round++) {
    const entries: ReplayEntry[] = [];
    const count = 1 + prng.int(12);
    for (let i = 0; i < count; i++) {
      const offset = prng.int(size - 1);
      const length = prng.int(Math.min(64, size - offset) + 1);
      const kind = prng.pick(["write", "trim", "zero"] as const);
      const data = kind === "write" ? new Uint8Array(length).fill(i + 1) : null;
      entries.push({ seq: i, kind, offset, length, data, noHole: prng.chance(0.5) });
    }
    const apply = (list: ReplayEntry[], image: Uint8Array) => {
      for (const e of list) {
        if (e.data === null) image.fill(0, e.offset, e.offset + e.length);
        else image.set(e.data, e.offset);
      }
      return image;
    };
    const pieces = newestPieces(entries);
    // Same result as the log applied in order, from any starting image.
    expect(apply(pieces, new Uint8Array(size).fill(0xee))).toEqual(apply(entries, new Uint8Array(size).fill(0xee)));
    // No two pieces overlap, and none is empty: they may be applied in any order.
    const sorted = [...pieces].sort((a, b) => a.offset - b.offset);
    for (let i = 0; i < sorted.length; i++) {
      expect(sorted[i]!.length).toBeGreaterThan(0);
      if (i > 0) expect(sorted[i]!.offset).toBeGreaterThanOrEqual(sorted[i - 1]!.offset + sorted[i - 1]!.length);
    }
    // Oldest first, each keeping its entry's kind, seq and noHole.
    for (let i = 1; i < pieces.length; i++) expect(pieces[i]!.seq).toBeGreaterThanOrEqual(pieces[i - 1]!.seq);
    const reversed = [...pieces].reverse();
    expect(apply(reversed, new Uint8Array(size))).toEqual(apply(pieces, new Uint8Array(size)));
  }
});

/**
 * Leases (engine/lease.ts): a large write handed over with a way back is held by each log
 * entry (and each piece a supersede leaves) and comes back exactly when no entry refers to it
 * any more — never while one does (its bytes would be replayed as another request's), and
 * never twice.
 */
for (const seed of [11, 12, 13]) {
  test(`a handed-over buffer comes back once no entry refers to it (seed ${seed})`, () => {
    const prng = new Prng(seed);
    const log = new ReplayLog();
    type Held = { id: number; seq: number; offset: number; length: number };
    let model: Held[] = [];
    const recycled = new Map<number, number>();
    let seq = 0;
    for (let step = 0; step < 600; step++) {
      const roll = prng.float();
      if (roll < 0.55) {
        const id = seq;
        const length = 65536 + prng.int(200_000);
        const offset = prng.int(1 << 21);
        const data = prng.bytes(length);
        const lease = new Lease(data, () => recycled.set(id, (recycled.get(id) ?? 0) + 1));
        log.append("write", offset, length, data, false, lease);
        lease.drop(); // the txn completed: only the log holds it now
        model.push({ id, seq: seq++, offset, length });
      } else if (roll < 0.8) {
        const offset = prng.int(1 << 21);
        const length = 1 + prng.int(300_000);
        log.supersede(offset, length);
        const end = offset + length;
        const next: Held[] = [];
        for (const e of model) {
          const eEnd = e.offset + e.length;
          if (eEnd <= offset || e.offset >= end) next.push(e);
          else {
            if (e.offset < offset) next.push({ ...e, length: offset - e.offset });
            if (eEnd > end) next.push({ ...e, offset: end, length: eEnd - end });
          }
        }
        model = next;
      } else {
        const mark = prng.int(seq + 1);
        log.release(mark);
        model = model.filter((e) => e.seq >= mark);
      }
      for (let id = 0; id < seq; id++) {
        const referenced = model.some((e) => e.id === id);
        expect(recycled.get(id) ?? 0).toBe(referenced ? 0 : 1);
      }
    }
  });
}

test("replayPieces: a TRIM the export no longer grants is left out and WRITE_ZEROES become WRITEs of zeros, each change logged once; writes are cut to the payload", () => {
  const entry = (seq: number, kind: ReplayEntry["kind"], offset: number, length: number): ReplayEntry => ({
    seq, kind, offset, length, data: kind === "write" ? new Uint8Array(length).fill(seq) : null, noHole: false,
  });
  const entries = [entry(1, "write", 0, 8192), entry(2, "trim", 8192, 4096), entry(3, "zero", 16384, 6144), entry(4, "trim", 32768, 4096)];
  const lines: string[] = [];
  const log = { warn: (line: string) => lines.push(line) };
  const all = replayPieces(entries, { size: 1 << 20, features: Feature.TRIM | Feature.WRITE_ZEROES }, 4096, log);
  expect(all.map((p) => `${p.kind}@${p.offset}+${p.length}`)).toEqual(["write@0+4096", "write@4096+4096", "trim@8192+4096", "zero@16384+6144", "trim@32768+4096"]);
  expect(lines).toEqual([]);
  const some = replayPieces(entries, { size: 1 << 20, features: 0 }, 4096, log);
  expect(some.map((p) => `${p.kind}@${p.offset}+${p.length}`)).toEqual(["write@0+4096", "write@4096+4096", "write@16384+4096", "write@20480+2048"]);
  for (const piece of some.slice(2)) {
    expect(piece.data!.length).toBe(piece.length);
    expect(piece.data!.every((b) => b === 0)).toBe(true);
    expect(replayData(piece)).toBe(piece.data); // shared, not copied per piece
  }
  expect(replayData(some[0]!)).not.toBe(some[0]!.data); // a logged write is copied
  expect(lines.length).toBe(2);
  expect(lines[0]).toContain("no longer offers TRIM: 8192 bytes");
  expect(lines[1]).toContain("no longer offers WRITE_ZEROES: 6144 bytes of acknowledged, unflushed write-zeroes are replayed as writes of zeros");
});

test("replayPieces: past ZEROES_AS_WRITES_MAX the write-zeroes are not turned into writes, and the loss is logged", () => {
  const lines: string[] = [];
  const log = { warn: (line: string) => lines.push(line) };
  const huge: ReplayEntry = { seq: 1, kind: "zero", offset: 0, length: ZEROES_AS_WRITES_MAX + 4096, data: null, noHole: false };
  const write: ReplayEntry = { seq: 2, kind: "write", offset: ZEROES_AS_WRITES_MAX + 4096, length: 4096, data: new Uint8Array(4096).fill(9), noHole: false };
  const pieces = replayPieces([huge, write], { size: 2 * ZEROES_AS_WRITES_MAX, features: Feature.TRIM }, 1 << 20, log);
  expect(pieces.map((p) => `${p.kind}@${p.offset}+${p.length}`)).toEqual([`write@${ZEROES_AS_WRITES_MAX + 4096}+4096`]);
  expect(lines.length).toBe(1);
  expect(lines[0]).toContain(`${ZEROES_AS_WRITES_MAX + 4096} bytes of acknowledged, unflushed write-zeroes are more than`);
  expect(lines[0]).toContain("are lost");
});
