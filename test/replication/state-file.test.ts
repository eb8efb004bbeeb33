/**
 * @module test/replication/state-file.test — the two-slot state file (replication/state-file.ts)
 * over the simulated log directory (sim-files.ts).
 */
import { expect, test } from "bun:test";
import { Prng } from "../../src/lib/prng.ts";
import { encodeSlot, SLOT_SIZE, StateFile } from "../../src/replication/state-file.ts";
import { SimClock } from "../sim/sim-clock.ts";
import { settle, SimDisk } from "./sim-files.ts";

const KIND = 7;
const validate = (value: unknown): { n: number } | string =>
  typeof value === "object" && value !== null && typeof (value as { n?: unknown }).n === "number" ? (value as { n: number }) : "not a state";

test("a value a killed process saved without its fdatasync is made durable by the next open: what the open read survives a power loss (replication sim seed 31)", async () => {
  const clock = new SimClock();
  const disk = new SimDisk(clock, new Prng(1), { latency: [0, 2] });
  const first = await settle(clock, StateFile.open(disk.directory(), "s.state", KIND, validate));
  await settle(clock, first.saveNow({ n: 1 })); // slot 0, counter 1, durable
  // The next save's write reaches the page cache; the process is killed before its fdatasync.
  await settle(clock, new Promise<number>((resolve) => (first as unknown as { file: { write: (p: number, c: Uint8Array[], d: (e: number) => void) => void } }).file.write(SLOT_SIZE, [encodeSlot(KIND, 2, { n: 2 })], resolve)));
  disk.kill();
  // The restarted process reads the newer value and acts on it (a primary replays nothing below
  // the checkpoint it reads): it must not go back with a power loss.
  const second = await settle(clock, StateFile.open(disk.directory(), "s.state", KIND, validate));
  expect(second.value).toEqual({ n: 2 });
  disk.crash("lose-all");
  const third = await settle(clock, StateFile.open(disk.directory(), "s.state", KIND, validate));
  expect(third.value).toEqual({ n: 2 });
  await settle(clock, third.close());
});
