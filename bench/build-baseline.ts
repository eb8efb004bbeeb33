/**
 * @module bench/build-baseline — builds the comparison binary for bench/resend-overhead.ts:
 * this commit's dstd with the reliability bookkeeping of the client engine switched off
 * (no replay log of unflushed writes, no resend/deadline scans, no keepalive pings). The
 * engine was written with that bookkeeping from its first commit, so "the build before the
 * reliability work" is reconstructed this way rather than taken from history.
 *
 *   bun bench/build-baseline.ts            # → prints the path of the baseline binary
 *   BASELINE_BIN=$(bun bench/build-baseline.ts) bun bench/resend-overhead.ts
 */
import { $ } from "bun";
import { mkdtempSync, readFileSync, writeFileSync, cpSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const root = resolve(import.meta.dir, "..");
const work = mkdtempSync(join(tmpdir(), "dstd-baseline-"));
for (const entry of ["src", "package.json", "build.ts", "tsconfig.json", "node_modules"]) {
  cpSync(join(root, entry), join(work, entry), { recursive: true, dereference: false });
}
const enginePath = join(work, "src/engine/client-engine.ts");
let engine = readFileSync(enginePath, "utf8");
const cuts: Array<[string, string]> = [
  // Each anchor must exist exactly once, so the baseline cannot silently drift from the engine.
  ["  private recordDurability(txn: Txn): void {\n", "  private recordDurability(txn: Txn): void {\n    if (txn) return; // baseline: no replay log\n"],
  ["  private tickReady(now: number): void {\n", "  private tickReady(now: number): void {\n    if (now >= 0) return; // baseline: no keepalive, no resend scan\n"],
  ["  private expireDeadlines(now: number): void {\n", "  private expireDeadlines(now: number): void {\n    if (now >= 0) return; // baseline: no deadline scan\n"],
];
for (const [anchor, replacement] of cuts) {
  if (engine.split(anchor).length !== 2) throw new Error(`baseline patch anchor not found once: ${anchor.trim()}`);
  engine = engine.replace(anchor, replacement);
}
writeFileSync(enginePath, engine);
await $`${process.execPath} build.ts`.cwd(work).quiet();
process.stdout.write(`${join(work, "dist", "dstd")}\n`);
