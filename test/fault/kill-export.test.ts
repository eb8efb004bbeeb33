/**
 * Fault test (issue 3 item 7c, "Done means"): `kill -9` of `dstd export` in the middle of
 * writing 256 MiB, restart on the same file and port ~1.5 s later. The copy must exit 0 with
 * every 1 MiB block identical.
 *
 * Two variants, because a plain kill -9 proves less than it seems:
 * 1. "page cache survives": on Linux the killed process's writes are already in the page
 *    cache, so the file keeps every acknowledged write; the client's replay (it sees a new
 *    epoch) rewrites the same bytes. This checks reconnect to a restarted export, the new
 *    session, and resending what was in flight — but it would pass without any replay.
 * 2. "page cache lost": what a crash of the export's machine would do. Between the kill and
 *    the restart the test puts the file back into its last DURABLE state, i.e. the state as
 *    of the last FLUSH the export completed. That state is known exactly here: with
 *    `--flush-every 0` `dstd copy` sends its only FLUSH after the last write, and with
 *    replay_buffer (512 MiB) above the copy size the engine never issues a flush of its own
 *    — so nothing written by this copy
 *    was ever flushed, and the durable state is the freshly created (all-zero, sparse) file.
 *    Reverting to it is the worst case a crash may legally produce (it may lose any subset
 *    of unflushed writes; this loses all of them) and nothing more: reverting blocks that a
 *    completed FLUSH covered would test a promise nobody made. A memory export restarted
 *    empty would NOT be fair — it loses flushed data too. Only replaying the client's log
 *    of acknowledged-unflushed writes can make this copy come out identical.
 */
import { afterEach, beforeAll, expect, test } from "bun:test";
import { truncateSync } from "node:fs";
import { join } from "node:path";
import {
  MiB,
  allocatedBytes,
  blockHashes,
  compareBlocks,
  connectionLostLines,
  faultSuite,
  reportedCounter,
  seconds,
  watchedCopy,
  writeClientConfig,
  writeRandomFile,
} from "./harness.ts";
import { until } from "../helpers/wait.ts";

const SIZE = 256 * MiB;
const RESTART_AFTER_MS = 1_500;
const suite = faultSuite("kill");
const dir = suite.dir;
const source = join(dir.path, "source.img");
let expected: string[] = [];

beforeAll(() => {
  writeRandomFile(source, SIZE);
  expected = blockHashes(source, SIZE);
}, 120_000);
afterEach(() => suite.stopAll());

async function killAndRestart(variant: string, losePageCache: boolean): Promise<void> {
  const started = performance.now();
  const disk = join(dir.path, `${variant}.img`);
  const first = await suite.startExport({ file: disk, size: SIZE });
  const config = writeClientConfig(join(dir.path, `${variant}.toml`), {
    keepalive_interval: "1s",
    keepalive_timeout: "3s",
    deadline: "120s",
    reconnect_min: "50ms",
    reconnect_max: "500ms",
    replay_buffer: "512MiB", // above the copy size: the engine never flushes on its own (see top)
  });
  // One FLUSH at the end (see top): the copy's default flushes every 32 MiB as it goes.
  const copy = watchedCopy(source, `dst://127.0.0.1:${first.port}/disk`, config, ["--flush-every", "0"]);
  // The export's file grows (st_blocks) as writes land: kill once 40% has landed.
  await until(() => copy.exited() || allocatedBytes(disk) >= 0.4 * SIZE, "40% of the copy to land", 60_000);
  expect(copy.exited()).toBe(false);
  await first.kill("SIGKILL");
  const landed = allocatedBytes(disk);
  console.log(`${variant}: kill -9 at ${seconds(copy.startedAt)} s into the copy, ${(landed / MiB).toFixed(0)} MiB landed`);
  if (losePageCache) {
    truncateSync(disk, 0); // back to the last durable state: the fresh sparse file (see top)
    truncateSync(disk, SIZE);
    expect(allocatedBytes(disk)).toBe(0);
  }
  await Bun.sleep(RESTART_AFTER_MS); // the outage itself, not a wait for a condition
  const second = await suite.startExport({ file: disk, port: first.port });
  console.log(`${variant}: export restarted on port ${second.port} at ${seconds(copy.startedAt)} s`);

  const result = await copy.result;
  console.log(`${variant}: copy exit ${result.exitCode} after ${result.seconds.toFixed(1)} s`);
  const lost = connectionLostLines(result.output);
  for (const line of lost) console.log(`  ${line.trim()}`);
  const replays = reportedCounter(result.output, "replays");
  console.log(`${variant}: replays reported: ${replays ?? "n/a (copy prints no counters)"}`);
  if (result.exitCode !== 0) console.log(result.output);
  expect(result.exitCode).toBe(0);
  expect(second.port).toBe(first.port);
  expect(lost.length).toBeGreaterThanOrEqual(1);
  // The restarted export served the copy: a new session (the old one died with the process).
  const handshakes = second.output().split("\n").filter((line) => line.includes("handshake ok"));
  expect(handshakes.length).toBeGreaterThanOrEqual(1);
  expect(handshakes[0]).toMatch(/ rw, .*session [0-9a-f]{8}, /);
  expect(handshakes[0]).not.toContain("(resumed)");
  if (replays !== null) expect(replays).toBeGreaterThan(0);

  const comparison = compareBlocks(expected, disk, SIZE);
  console.log(`${variant}: verified ${comparison.blocks} blocks of 1 MiB: ${comparison.differing} differ; total ${seconds(started)} s`);
  expect(comparison).toEqual({ blocks: 256, differing: 0, examples: [] });
}

test("kill -9 of the export mid-copy, restart after 1.5 s (page cache survives): exit 0, identical", async () => {
  await killAndRestart("cache-survives", false);
}, 120_000);

test("kill -9 of the export mid-copy, unflushed writes lost, restart: replay makes it identical", async () => {
  await killAndRestart("cache-lost", true);
}, 120_000);
