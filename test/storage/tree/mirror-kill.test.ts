/**
 * Real processes (issue 12, tests): a mirror export over two `dstd export` legs, built with
 * the command-line flags (`dstd export --mirror URL --mirror URL`). `kill -9` one leg in the
 * middle of a 256 MiB `dstd copy` into the mirror: the copy completes without an error (the
 * leg is degraded once its budget — deadline 10 s here — is spent). Restart the leg on the
 * same file and port: the mirror's probe finds it, resyncs only what it missed, and both
 * legs' images equal the source. The resync must move about the dirty amount, not the disk.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import type { Subprocess } from "bun";
import { closeSync, mkdtempSync, openSync, readSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createHash } from "node:crypto";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ensureBinary } from "../../helpers/binary.ts";
import { writeRandomFile } from "../../helpers/files.ts";
import { until } from "../../helpers/wait.ts";

const MiB = 1024 * 1024;
const COPY = 256 * MiB;
const LEG = 512 * MiB; // the mirror is larger than what is written: "not the whole disk"
const META = MiB; // the mirror's metadata area at the start of each leg (docs/tree.md)
const dir = mkdtempSync(join(tmpdir(), "dstd-mirror-kill-"));
const children = new Set<Subprocess>();
let binary = "";

interface Proc {
  proc: Subprocess<"ignore", "pipe", "pipe">;
  output(): string;
}

function spawn(args: string[]): Proc {
  const proc = Bun.spawn([binary, ...args], { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  children.add(proc);
  let text = "";
  const decoder = new TextDecoder();
  for (const stream of [proc.stdout, proc.stderr]) {
    void (async () => {
      for await (const chunk of stream) text += decoder.decode(chunk, { stream: true });
    })();
  }
  return { proc, output: () => text };
}

async function startExport(args: string[]): Promise<Proc & { port: number }> {
  const p = spawn(["export", ...args, "--allow", "127.0.0.1/32:rw", "--log-level", "info"]);
  await until(() => /listening for DST on 127\.0\.0\.1:\d+/.test(p.output()) || p.proc.exitCode !== null, "the export to listen", 30_000);
  const match = /listening for DST on 127\.0\.0\.1:(\d+)/.exec(p.output());
  if (match === null) throw new Error(`dstd export did not start:\n${p.output()}`);
  return { ...p, port: Number(match[1]) };
}

function allocated(path: string): number {
  return statSync(path).blocks * 512;
}

/** sha256 of each 1 MiB block of `length` bytes of `path` starting at `offset`. */
function hashes(path: string, offset: number, length: number): string[] {
  const fd = openSync(path, "r");
  const block = Buffer.alloc(MiB);
  const out: string[] = [];
  try {
    for (let at = 0; at < length; at += MiB) {
      block.fill(0);
      let got = 0;
      while (got < MiB) {
        const n = readSync(fd, block, got, MiB - got, offset + at + got);
        if (n === 0) break;
        got += n;
      }
      out.push(createHash("sha256").update(block).digest("hex"));
    }
  } finally {
    closeSync(fd);
  }
  return out;
}

const source = join(dir, "source.img");

beforeAll(() => {
  binary = ensureBinary();
  writeRandomFile(source, COPY);
}, 180_000);

afterAll(async () => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  await Promise.all([...children].map((c) => c.exited));
  rmSync(dir, { recursive: true, force: true });
});

test("kill -9 of a mirror leg mid-write: the write completes; after restart only the dirty regions are resynced and both legs equal the source", async () => {
  const started = performance.now();
  const [aImg, bImg] = [join(dir, "a.img"), join(dir, "b.img")];
  const a = await startExport(["--file", aImg, "--size", String(LEG), "--listen", "127.0.0.1:0"]);
  const b = await startExport(["--file", bImg, "--size", String(LEG), "--listen", "127.0.0.1:0"]);
  // The legs' budget: a request fails (and the mirror degrades the leg) after 10 s. Long
  // enough that the surviving leg never spends it on a busy machine; keepalives as default.
  const config = join(dir, "mirror.toml");
  writeFileSync(config, `[client]\ndeadline = "10s"\nreconnect_min = "50ms"\nreconnect_max = "500ms"\n`);
  const mirror = await startExport([
    "--config", config,
    "--mirror", `dst://127.0.0.1:${a.port}/disk`,
    "--mirror", `dst://127.0.0.1:${b.port}/disk`,
    "--assume-clean", // two blank sparse files are identical
    "--listen", "127.0.0.1:0",
  ]);
  expect(mirror.output()).toMatch(/mirror [0-9a-f]{8} created at generation 1, 511 MiB, region 64 KiB/);

  const copy = spawn(["copy", source, `dst://127.0.0.1:${mirror.port}/disk`, "--log-level", "info"]);
  // Kill leg B once 40% of the copy has landed on it.
  await until(() => copy.proc.exitCode !== null || allocated(bImg) >= META + 0.4 * COPY, "40% of the copy on leg B", 240_000);
  if (copy.proc.exitCode !== null) console.log(`the copy ended early:\n${copy.output()}\n---- mirror:\n${mirror.output()}`);
  expect(copy.proc.exitCode).toBeNull();
  b.proc.kill("SIGKILL");
  await b.proc.exited;
  const landed = allocated(bImg);
  console.log(`kill -9 of leg B at ${((performance.now() - started) / 1000).toFixed(1)} s, ${(landed / MiB).toFixed(0)} MiB on it`);

  const exit = await copy.proc.exited;
  if (exit !== 0) console.log(`${copy.output()}\n---- mirror:\n${mirror.output()}`);
  expect(exit).toBe(0);
  expect(mirror.output()).toMatch(/mirror leg dst:\/\/127\.0\.0\.1:\d+\/disk degraded \(in-sync, write failed: timed out/);
  console.log(`copy done at ${((performance.now() - started) / 1000).toFixed(1)} s`);

  // Restart leg B on the same file and port; the mirror's probe finds it and resyncs.
  const b2 = await startExport(["--file", bImg, "--listen", `127.0.0.1:${b.port}`]);
  expect(b2.port).toBe(b.port);
  await until(() => /in sync at generation \d+; resync moved \d+ bytes/.test(mirror.output()), "leg B back in sync", 240_000);
  const line = /mirror leg (\S+) in sync at generation (\d+); resync moved (\d+) bytes \(([^)]*)\) in ([\d.]+) s/.exec(mirror.output())!;
  const rounds = mirror.output().split("\n").filter((l) => /resync stopped|in sync at generation \d+; resync moved/.test(l));
  // One resync may be stopped and resumed (the leg failing again): count every round.
  const all = /; (\d+) bytes by all resyncs since it left/.exec(mirror.output());
  const moved = all !== null ? Number(all[1]) : Number(line[3]);
  if (process.env.SHOW_MIRROR_LOG) console.log(mirror.output(), "\n---- leg B after restart:\n", b2.output());
  const dirtyAtKill = COPY + META - landed; // what B had not received when it died (plus what was in flight)
  console.log(`resync moved ${moved} bytes (${(moved / MiB).toFixed(1)} MiB) in ${rounds.length} round(s), the last ${line[5]} s; leg B missed ~${(dirtyAtKill / MiB).toFixed(0)} MiB of the 256 MiB copy; the mirror is 511 MiB`);
  if (rounds.length > 1) for (const round of rounds) console.log(`  ${round.replace(/^\S+ \S+\s+\[export\] /, "")}`);
  expect(line[1]).toBe(`dst://127.0.0.1:${b.port}/disk`);
  expect(moved).toBeGreaterThan(0);
  expect(moved).toBeLessThan(COPY); // not the whole copy, let alone the whole 511 MiB disk
  expect(moved).toBeLessThanOrEqual(dirtyAtKill + 64 * MiB); // about the dirty amount (+ writes in flight at the kill, region rounding)

  // Stop the mirror cleanly (it flushes both legs), then compare the images with the source.
  mirror.proc.kill("SIGTERM");
  expect(await mirror.proc.exited).toBe(0);
  a.proc.kill("SIGTERM");
  b2.proc.kill("SIGTERM");
  await Promise.all([a.proc.exited, b2.proc.exited]);
  const expected = hashes(source, 0, COPY);
  const differing = (path: string) => hashes(path, META, COPY).flatMap((h, i) => (h === expected[i] ? [] : [i]));
  expect(differing(aImg)).toEqual([]);
  expect(differing(bImg)).toEqual([]);
  console.log(`both legs equal the source (256 blocks of 1 MiB each); total ${((performance.now() - started) / 1000).toFixed(1)} s`);
}, 600_000);
