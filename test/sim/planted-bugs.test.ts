/**
 * The simulator must catch real bugs, not just pass (TigerBeetle keeps a `canary` fuzzer for
 * the same reason). Three bugs are planted in the export through DstServerOptions.unsafe:
 * - noFencing: a reconnecting session no longer closes its old connection, so a delayed copy
 *   of an old write can land on top of newer data;
 * - noDedupe: a resent mutation is applied again instead of answered from the session.
 * - staleResumes: a late handshake of a connection the client gave up on takes the session
 *   over from the newer, live one.
 * For each, the swarm runs until a seed fails (for noFencing also with the data checkers
 * alone, exactly-once off), and the same seed must pass without the bug: the failure is the
 * bug's doing. The seeds that caught them are printed (docs/simulation.md records them).
 */
import { describe, expect, test } from "bun:test";
import type { ServerUnsafe } from "./harness.ts";
import { world } from "./scenario.ts";
import { runSeed } from "./swarm.ts";

async function firstCatch(unsafe: ServerUnsafe, limit: number, checkExactlyOnce: boolean, anonymous: boolean) {
  for (let seed = 1; seed <= limit; seed++) {
    const result = await runSeed(seed, { unsafe, checkExactlyOnce, anonymous });
    if (result.ok) continue;
    if (result.violation === undefined) throw result.error;
    return { seed, invariant: result.violation.invariant, message: result.violation.message };
  }
  return null;
}

const cases: { name: string; unsafe: ServerUnsafe; limit: number; dataLimit: number | null; anonymous?: boolean }[] = [
  { name: "noFencing", unsafe: { noFencing: true }, limit: 1_000, dataLimit: 3_000 },
  // Without dedupe, single-client runs rarely corrupt data (block writes are idempotent and the
  // workload never overlaps in-flight mutations; only overlapping replays resent on timeout
  // can): the double application itself is the bug, and the exactly-once checker sees it.
  { name: "noDedupe", unsafe: { noDedupe: true }, limit: 200, dataLimit: null },
  // A late handshake admitted cuts the client's live connection: a disturbance, not data loss
  // (the client reconnects and resends), so only the stale-takeover checker sees it.
  // Anonymous seeds only: on a keyed session a late HELLO is never answered (the client closed
  // that connection, so its CHALLENGE gets no AUTH) and cannot reach the stale-resume check.
  { name: "staleResumes", unsafe: { staleResumes: true }, limit: 1_000, dataLimit: null, anonymous: true },
  // A resumption accepted without its proof (keyed) or token (anonymous): an intruder who read
  // the session id off the wire takes the session over; only the session-hijack checker sees it.
  { name: "resumeWithoutProof", unsafe: { resumeWithoutProof: true }, limit: 300, dataLimit: null },
];

describe("planted bugs are caught", () => {
  for (const { name, unsafe, limit, dataLimit, anonymous = false } of cases) {
    test(`${name}: caught within ${limit} seeds by the full checker set`, async () => {
      const caught = await firstCatch(unsafe, limit, true, anonymous);
      expect(caught).not.toBeNull();
      console.log(`${name}: caught by seed ${caught!.seed} (${caught!.message})`);
      expect((await runSeed(caught!.seed, { anonymous })).ok).toBe(true);
    }, 600_000);

    if (dataLimit === null) continue;
    test(`${name}: caught within ${dataLimit} seeds by the data checkers alone`, async () => {
      const caught = await firstCatch(unsafe, dataLimit, false, anonymous);
      expect(caught).not.toBeNull();
      console.log(`${name} (data checkers only): caught by seed ${caught!.seed} (${caught!.message})`);
      expect(["stale read", "stale overwrite", "flushed write lost"]).toContain(caught!.invariant);
      expect((await runSeed(caught!.seed, { anonymous })).ok).toBe(true);
    }, 600_000);
  }

  test("noDedupe breaks the ack-lost scenario: the resent write is applied again", async () => {
    const t = await world({ unsafe: { noDedupe: true }, checkExactlyOnce: false });
    t.network.stall(t.currentConnection, "toClient", "vanish");
    const w = t.write(3);
    t.settle(5_000);
    expect(w.status).toBe(0);
    expect(t.backend.counters.writes).toBeGreaterThan(1); // with dedupe: exactly 1 (scenarios.test.ts)
  });
});
