/**
 * Role changes between real processes (issue 11 item 5, docs/replication.md §11). Planned
 * handover: demote drains the primary to its secondary, promote (without --force) checks that
 * the primary stepped down and everything is applied, and the old primary follows the new one
 * with no write lost. Failover: the primary dies
 * with writes its secondary never fetched; `dstd replica promote disk --force` makes the
 * secondary a primary of a new generation that takes writes (and keeps them through a kill -9);
 * the old primary comes back, asks its peer, finds its log forked and serves read-only as
 * "diverged" — never as a second primary.
 */
import { afterAll, afterEach, expect, test } from "bun:test";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { scratchDir, writeRandomFile } from "../helpers/files.ts";
import { copyInto, hashPrefix, MiB, ReplicaPair } from "./pair.ts";

const dir = scratchDir("failover");
afterAll(() => dir.remove());
let pair: ReplicaPair | null = null;
afterEach(async () => {
  await pair?.close();
  pair = null;
});

/** A symmetric pair in a directory of its own (the module's `pair`, for afterEach), both nodes up, 8 MiB copied into the primary. */
async function runningPair(name: string): Promise<{ where: string; first: string; pair: ReplicaPair }> {
  const where = join(dir.path, name);
  mkdirSync(where);
  const made = await ReplicaPair.create(where, { size: 32 * MiB, symmetric: true });
  pair = made; // closed by afterEach
  await made.start(made.a);
  await made.start(made.b);
  const first = join(where, "first.bin");
  writeRandomFile(first, 8 * MiB);
  expect((await copyInto(first, made.a.port)).exitCode).toBe(0);
  return { where, first, pair: made };
}

test(
  "promote --force after the primary dies; the old primary returns diverged and refuses writes",
  async () => {
    const { where, first, pair } = await runningPair("force");
    const synced = await pair.caughtUp(60_000);
    // Writes the secondary never sees: fetching paused, then the primary dies.
    expect((await pair.replica(pair.b, "pause", "disk", "--fetch")).exitCode).toBe(0);
    const lost = join(where, "lost.bin");
    writeRandomFile(lost, 4 * MiB);
    expect((await copyInto(lost, pair.a.port)).exitCode).toBe(0);
    await pair.stop(pair.a, "SIGKILL");

    // A planned promote needs the primary; --force fails over.
    const planned = await pair.replica(pair.b, "promote", "disk");
    expect(planned.exitCode).not.toBe(0);
    expect(planned.stderr).toContain("--force");
    const promoted = await pair.replica(pair.b, "promote", "disk", "--force");
    expect(promoted.exitCode).toBe(0);
    expect(promoted.stdout).toContain(`at seq ${synced.seq}, generation 2`);
    const b = await pair.status(pair.b);
    expect(b.role).toBe("primary");
    expect(b.generation).toBe(2);
    // The new primary has what was synced, and takes writes that survive a kill -9.
    expect(hashPrefix(pair.b.image, 8 * MiB)).toBe(hashPrefix(first, 8 * MiB));
    const fresh = join(where, "fresh.bin");
    writeRandomFile(fresh, 2 * MiB);
    expect((await copyInto(fresh, pair.b.port)).exitCode).toBe(0);
    await pair.stop(pair.b, "SIGKILL");
    await pair.start(pair.b);
    expect((await pair.status(pair.b)).role).toBe("primary");
    expect(hashPrefix(pair.b.image, 2 * MiB)).toBe(hashPrefix(fresh, 2 * MiB));

    // The old primary comes back: its peer is a primary of a forked log.
    await pair.start(pair.a);
    const a = await pair.status(pair.a);
    console.log(`old primary: ${JSON.stringify(a)}`);
    expect(a.role).toBe("diverged");
    expect(a.state).toBe("diverged");
    expect(a.reason).toContain("diverged at seq");
    const refused = await copyInto(fresh, pair.a.port);
    expect(refused.exitCode).not.toBe(0);
    // Its disk still holds its own last writes (nothing was overwritten), served read-only.
    expect(hashPrefix(pair.a.image, 4 * MiB)).toBe(hashPrefix(lost, 4 * MiB));
    // A restart does not forget it.
    await pair.stop(pair.a, "SIGKILL");
    await pair.start(pair.a);
    expect((await pair.status(pair.a)).role).toBe("diverged");
  },
  240_000,
);

test(
  "planned handover: demote drains the primary, promote takes over, the old primary follows the new one, no write lost",
  async () => {
    const { where, first, pair } = await runningPair("handover");
    // While the primary serves, a planned promote is refused.
    const early = await pair.replica(pair.b, "promote", "disk");
    expect(early.exitCode).not.toBe(0);
    expect(early.stderr).toContain("demote");
    const demoted = await pair.replica(pair.a, "demote", "disk");
    if (demoted.exitCode !== 0) console.log(`demote failed: ${demoted.stderr}`);
    expect(demoted.exitCode).toBe(0);
    expect((await pair.status(pair.a)).role).toBe("secondary");
    const promoted = await pair.replica(pair.b, "promote", "disk");
    console.log(`${demoted.stdout.trim()} / ${promoted.stdout.trim()}${promoted.stderr}`);
    expect(promoted.exitCode).toBe(0);
    const b = await pair.status(pair.b);
    expect(b.role).toBe("primary");
    expect(hashPrefix(pair.b.image, 8 * MiB)).toBe(hashPrefix(first, 8 * MiB));
    const second = join(where, "second.bin");
    writeRandomFile(second, 4 * MiB);
    expect((await copyInto(second, pair.b.port)).exitCode).toBe(0);
    // The old primary now replicates the new one.
    const a = await pair.follows(pair.a, pair.b, 60_000);
    console.log(`old primary: ${JSON.stringify(a)}`);
    expect(a.generation).toBe(2);
    expect(hashPrefix(pair.a.image, 32 * MiB)).toBe(hashPrefix(pair.b.image, 32 * MiB));
    expect((await copyInto(second, pair.a.port)).exitCode).not.toBe(0);
  },
  240_000,
);
