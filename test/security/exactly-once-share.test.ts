/**
 * The exactly-once table is shared by every client of an export process (export/sessions.ts):
 * one owner — an identity, or the anonymous clients of one peer class — that opens many
 * sessions and never lets their txid floors advance fills only its own share
 * (`ownerEntries`), refused with the reason, while another identity's mutations go on; a
 * floor that advances gives the share back.
 */
import { expect, test } from "bun:test";
import { EXPORT_LIMITS } from "../../src/export/limits.ts";
import { SessionTable, type SessionOwner } from "../../src/export/sessions.ts";

const limits = { ...EXPORT_LIMITS, sessionEntries: 8, ownerEntries: 20, totalEntries: 30 };
const owner = (identity: string | null): SessionOwner => ({ exportName: "disk", identity, peerClass: identity === null ? "loopback" : "network" });
const connected = { fence() {} };

function fill(table: SessionTable, who: SessionOwner, sessions: number, perSession: number): string[] {
  const refusals: string[] = [];
  for (let s = 0; s < sessions; s++) {
    const session = table.create(who);
    session.connection = connected;
    for (let txid = 1; txid <= perSession; txid++) {
      const begun = table.begin(session, txid, 2, 0, txid * 4096, 4096, BigInt(txid));
      if (begun.kind === "full") refusals.push(begun.reason);
    }
  }
  return refusals;
}

test("one identity's sessions fill its share, not the table: another identity and the anonymous clients still write", () => {
  const table = new SessionTable(limits);
  const hog = fill(table, owner("mallory"), 5, 8);
  expect(hog.length).toBe(20); // 40 asked, 20 held
  expect(hog[0]).toBe("the sessions of identity mallory hold 20 unacknowledged results (at most 20 for one owner): their txid floors do not advance");
  expect(table.entries).toBe(20);
  expect(fill(table, owner("alice"), 1, 8)).toEqual([]);
  expect(fill(table, owner(null), 1, 2)).toEqual([]);
  expect(table.entries).toBe(30);
  // The whole table is full now: the next owner is refused by the total, as before.
  expect(fill(table, owner("bob"), 1, 1)).toEqual(["the export holds 30 results across all sessions"]);
});

test("a floor that advances gives the owner's share back; a forgotten session does too", () => {
  const table = new SessionTable({ ...limits, totalEntries: 1000 });
  const first = table.create(owner("carol"));
  first.connection = connected;
  for (let txid = 1; txid <= 8; txid++) table.begin(first, txid, 2, 0, 0, 4096, 1n);
  expect(fill(table, owner("carol"), 2, 8)).toHaveLength(4); // 8 + 8 + 4 of 20
  table.prune(first, 9); // the client acknowledged everything below txid 9
  expect(fill(table, owner("carol"), 1, 8)).toEqual([]);
  expect(table.entries).toBe(20);
});
