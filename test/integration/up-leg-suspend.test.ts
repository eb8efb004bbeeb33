/**
 * `dstd leg suspend|resume` on real processes (docs/tree.md "Suspending a leg for
 * maintenance"): a `dstd up` node serves a mirror over two `dstd export` legs. Leg b is
 * suspended, then its export is killed (the maintenance); the client's writes go on without
 * waiting for b's budget and without a degrade; the restarted b is not probed or written,
 * nor after a restart of the mirror node (the hold is on the legs' metadata); `dstd leg
 * resume` reopens it and resyncs only what it missed, after which both legs hold the same
 * data. Refusals (the only in-sync leg, an unknown leg) name their reason. The same with a
 * mirror run with flags (`dstd export --mirror … --state-dir`). A reload replaces the suspended
 * leg and adds a third (docs/tree.md "Replacing and adding mirror legs") while a client writes
 * and stays connected; one that would replace an in-sync leg is refused. Compiled binary, real
 * sockets and files.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import type { Subprocess } from "bun";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DstClient } from "../../src/client/dst-client.ts";
import { ensureBinary, runDstd } from "../helpers/binary.ts";
import { startNode, type NodeProcess } from "../helpers/node-process.ts";
import { haveTools } from "../helpers/tools.ts";
import { until } from "../helpers/wait.ts";
import { readFileAt } from "../helpers/files.ts";
import { freeLoopbackPort } from "../helpers/ports.ts";

const MiB = 1024 * 1024;
const LEG = 64 * MiB;
const META = MiB; // the mirror's metadata area at the start of each leg (docs/tree.md "On-leg metadata")
const dir = mkdtempSync(join(tmpdir(), "dstd-leg-hold-"));
const stateDir = join(dir, "state");
const configPath = join(dir, "dstd.toml");
const images = { a: join(dir, "a.img"), b: join(dir, "b.img") };
const legs = new Set<Subprocess>();
let node: NodeProcess;


const ports = { a: 0, b: 0, mirror: 0, metrics: 0 };

/** The node's Prometheus scrape, checked by promtool where it is installed (Debian package prometheus). */
async function scrape(): Promise<string> {
  const text = await (await fetch(`http://127.0.0.1:${ports.metrics}/metrics`)).text();
  if (haveTools({ promtool: "prometheus" })) {
    const check = Bun.spawnSync(["promtool", "check", "metrics"], { stdin: new TextEncoder().encode(text) });
    expect(check.stdout.toString() + check.stderr.toString()).toBe("");
  }
  return text;
}

/** A `dstd export` leg on a fixed port; resolves once it listens. */
async function startLeg(which: "a" | "b"): Promise<Subprocess> {
  const proc = Bun.spawn([ensureBinary(), "export", "--file", images[which], "--size", String(LEG), "--listen", `127.0.0.1:${ports[which]}`, "--allow", "127.0.0.1/32:rw"], {
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  legs.add(proc);
  let text = "";
  void (async () => {
    for await (const chunk of proc.stderr) text += new TextDecoder().decode(chunk);
  })();
  await until(() => text.includes("listening for DST") || proc.exitCode !== null, `leg ${which} to listen`, 30_000);
  if (proc.exitCode !== null) throw new Error(`leg ${which} did not start:\n${text}`);
  return proc;
}


async function legStates(): Promise<Array<{ label: string; state: string; dirtyBytes: number; degradations: number }>> {
  const status = JSON.parse((await runDstd(["status", "--json", "--state-dir", stateDir])).stdout);
  return status.services.find((s: { name: string }) => s.name === "export:m").export.exports[0].tree.legs;
}

function openClient(): Promise<DstClient> {
  return DstClient.open({ address: { transport: "tcp", host: "127.0.0.1", port: ports.mirror }, exportName: "m", log: { info() {}, warn() {} }, keepaliveTimeoutMs: 30_000 });
}

/** The node's config with these mirror legs (TOML inline tables). Budget 20 s: a suspended leg that was still written would stall the writes that long. */
function nodeConfig(mirrorLegs: string[]): string {
  return `state_dir = "${stateDir}"
log_level = "info"
metrics_listen = "127.0.0.1:${ports.metrics}"

[[export]]
name = "m"
listen = "127.0.0.1:${ports.mirror}"
allow = ["127.0.0.1/32:rw"]
[export.tree]
assume_clean = true
mirror = [
  ${mirrorLegs.join(",\n  ")},
]
`;
}

const pattern = (length: number, seed: number) => new Uint8Array(length).map((_, i) => (i * 31 + seed) & 0xff);

beforeAll(async () => {
  ensureBinary();
  ports.a = freeLoopbackPort();
  ports.b = freeLoopbackPort();
  ports.mirror = freeLoopbackPort();
  ports.metrics = freeLoopbackPort();
  await Promise.all([startLeg("a"), startLeg("b")]);
  writeFileSync(configPath, nodeConfig([`{ url = "dst://127.0.0.1:${ports.a}/disk", name = "a", deadline = "20s" }`, `{ url = "dst://127.0.0.1:${ports.b}/disk", name = "b", deadline = "20s" }`]));
  node = startNode(["--config", configPath, "--log-format", "json"], { DSTD_STATE_DIR: undefined, NOTIFY_SOCKET: undefined });
  await node.waitForLog("ready:", "the node to be ready", 30_000);
}, 60_000);

afterAll(async () => {
  await node?.stop("SIGKILL");
  for (const leg of legs) if (leg.exitCode === null) leg.kill("SIGKILL");
  await Promise.all([...legs].map((l) => l.exited));
  rmSync(dir, { recursive: true, force: true });
});

test("a suspended leg is left alone through its node's restart and the mirror's; resume resyncs only what it missed", async () => {
  let client = await openClient();
  await client.write(0, pattern(MiB, 1));
  await client.flush();

  const unknown = await runDstd(["leg", "suspend", "m", "c", "--state-dir", stateDir]);
  expect(unknown.exitCode).not.toBe(0);
  expect(unknown.stderr).toContain("no mirror leg 'c'; the mirror legs are 0 (a), 1 (b)");
  const suspended = await runDstd(["leg", "suspend", "m", "b", "--state-dir", stateDir]);
  expect(suspended.stderr).toBe("");
  expect(suspended.exitCode).toBe(0);
  expect(suspended.stdout).toContain("export 'm': leg b suspended (was in-sync)");
  const only = await runDstd(["leg", "suspend", "m", "a", "--state-dir", stateDir]);
  expect(only.exitCode).not.toBe(0);
  expect(only.stderr).toContain("leg a is the only in-sync leg");
  expect((await legStates()).map((l) => l.state)).toEqual(["in-sync", "suspended"]);

  // The maintenance: leg b's export goes away while the mirror's client writes.
  const [, b] = [...legs];
  b!.kill("SIGKILL");
  await b!.exited;
  legs.delete(b!);
  const writes = [
    [8 * MiB, pattern(2 * MiB, 2)],
    [40 * MiB, pattern(4096, 3)],
  ] as const;
  for (const [at, data] of writes) await client.write(at, data);
  await client.flush();
  await startLeg("b");
  // Restart the mirror node too: the hold is in the legs' metadata, not in its memory.
  await client.close();
  expect(await node.stop("SIGTERM")).toBe(0);
  node = startNode(["--config", configPath, "--log-format", "json"], { DSTD_STATE_DIR: undefined, NOTIFY_SOCKET: undefined });
  await node.waitForLog("ready:", "the node to be ready again", 30_000);
  client = await openClient();
  await client.write(20 * MiB, pattern(MiB, 4));
  await client.flush();
  const held = await legStates();
  expect(held.map((l) => [l.label, l.state, l.degradations])).toEqual([["a", "in-sync", 0], ["b", "suspended", 0]]);
  const table = (await runDstd(["status", "--state-dir", stateDir])).stdout;
  expect(table).toMatch(/EXPORT +MIRROR LEG +STATE +GENERATION +MISSING +NOTE/);
  expect(table).toMatch(/m +b +suspended +\d+ +[\d.]+ [KM]iB +suspended by the operator/);
  const metrics = await scrape();
  expect(metrics).toContain('dstd_mirror_leg_state{export="m",mirror="root",leg="b",state="suspended"} 1');
  expect(metrics).toContain('dstd_mirror_leg_state{export="m",mirror="root",leg="b",state="in-sync"} 0');
  expect(metrics).toContain('dstd_mirror_leg_missing_bytes{export="m",mirror="root",leg="a"} 0');
  expect(Number(/^dstd_mirror_leg_missing_bytes\{export="m",mirror="root",leg="b"\} (\d+)$/m.exec(metrics)?.[1])).toBeGreaterThanOrEqual(3 * MiB);
  expect(metrics).toMatch(/^dstd_mirror_generation\{export="m",mirror="root"\} \d+$/m);
  // Its image never saw what was written after the suspend.
  for (const [at, length] of [[8 * MiB, 2 * MiB], [40 * MiB, 4096], [20 * MiB, MiB]]) expect(readFileAt(images.b, META + at!, length!).every((x) => x === 0)).toBe(true);

  const resumed = await runDstd(["leg", "resume", "m", "1", "--state-dir", stateDir]);
  expect(resumed.exitCode).toBe(0);
  expect(resumed.stdout).toContain("export 'm': leg b resumed");
  await node.waitForLog(/leg b in sync at generation \d+; resync moved \d+ bytes/, "leg b back in sync", 30_000);
  expect((await legStates()).map((l) => [l.state, l.dirtyBytes])).toEqual([["in-sync", 0], ["in-sync", 0]]);
  const after = await scrape();
  expect(after).toContain('dstd_mirror_leg_state{export="m",mirror="root",leg="b",state="in-sync"} 1');
  expect(after).toContain('dstd_mirror_leg_missing_bytes{export="m",mirror="root",leg="b"} 0');
  expect(after).toContain('dstd_mirror_leg_degradations_total{export="m",mirror="root",leg="b"} 0');
  const moved = /leg b in sync at generation \d+; resync moved (\d+) bytes/.exec(node.stderr());
  expect(moved).not.toBeNull();
  // About what it missed (2 MiB + 4 KiB + 1 MiB, in 64 KiB regions), not the 63 MiB disk.
  const bytes = Number(moved![1]);
  console.log(`resume: resync moved ${bytes} bytes (${(bytes / MiB).toFixed(2)} MiB) of a ${LEG / MiB - 1} MiB mirror`);
  expect(bytes).toBeGreaterThanOrEqual(3 * MiB);
  expect(bytes).toBeLessThan(8 * MiB);
  await client.flush();
  for (const [at, length] of [[0, MiB], [8 * MiB, 2 * MiB], [20 * MiB, MiB], [40 * MiB, 4096]]) {
    expect(Buffer.compare(readFileAt(images.b, META + at!, length!), readFileAt(images.a, META + at!, length!))).toBe(0);
  }
  expect(Buffer.compare(readFileAt(images.b, META + 8 * MiB, 2 * MiB), pattern(2 * MiB, 2))).toBe(0);
  expect(node.stderr()).not.toContain("degraded");
  await client.close();
}, 120_000);

test("a mirror run with flags (dstd export --mirror … --state-dir) answers dstd leg on its control socket", async () => {
  const flagState = join(dir, "flag-state");
  const [x, y] = [join(dir, "x.img"), join(dir, "y.img")];
  const proc = Bun.spawn(
    [ensureBinary(), "export", "--mirror", x, "--mirror", y, "--size", String(16 * MiB), "--assume-clean", "--listen", "127.0.0.1:0", "--allow", "127.0.0.1/32:rw", "--state-dir", flagState, "--log-level", "info"],
    { stdin: "ignore", stdout: "pipe", stderr: "pipe" },
  );
  legs.add(proc);
  let text = "";
  void (async () => {
    for await (const chunk of proc.stderr) text += new TextDecoder().decode(chunk);
  })();
  await until(() => text.includes("listening for DST") || proc.exitCode !== null, "the flag-run mirror to listen", 30_000);
  const suspended = await runDstd(["leg", "suspend", "disk", "1", "--state-dir", flagState]);
  expect(suspended.stderr).toBe("");
  expect(suspended.stdout).toContain(`export 'disk': leg ${y} suspended (was in-sync)`);
  const refused = await runDstd(["leg", "suspend", "disk", "0", "--state-dir", flagState]);
  expect(refused.exitCode).not.toBe(0);
  expect(refused.stderr).toContain("is the only in-sync leg");
  const resumed = await runDstd(["leg", "resume", "disk", y, "--state-dir", flagState]);
  expect(resumed.exitCode).toBe(0);
  await until(() => /mirror leg \S+y\.img in sync at generation/.test(text), "leg y back in sync", 30_000);
  const status = await runDstd(["status", "--state-dir", flagState]);
  expect(status.stderr).toContain("dstd status needs a dstd up node; this dstd export answers only dstd replica and dstd leg");
  proc.kill("SIGTERM");
  expect(await proc.exited).toBe(0);
}, 60_000);

test("a reload replaces a suspended leg and adds a third; both are resynced whole while the client stays connected; replacing an in-sync leg is refused", async () => {
  const legA = `{ url = "dst://127.0.0.1:${ports.a}/disk", name = "a", deadline = "20s" }`;
  const legB = `{ url = "dst://127.0.0.1:${ports.b}/disk", name = "b", deadline = "20s" }`;
  const [c, d] = [join(dir, "c.img"), join(dir, "d.img")];
  const legC = `{ file = "${c}", size = "${LEG}", name = "c" }`;
  const legD = `{ file = "${d}", size = "${LEG}", name = "d" }`;
  const client = await openClient();
  await client.write(30 * MiB, pattern(MiB, 5));
  // b is in sync: replacing it would drop a copy of the data before the new one exists.
  writeFileSync(configPath, nodeConfig([legA, legC]));
  const refused = await runDstd(["reload", "--state-dir", stateDir]);
  expect(refused.exitCode).not.toBe(0);
  expect(refused.stderr).toContain("leg b is in-sync: suspend it first (dstd leg suspend), then replace it");
  expect((await legStates()).map((l) => [l.label, l.state])).toEqual([["a", "in-sync"], ["b", "in-sync"]]);

  expect((await runDstd(["leg", "suspend", "m", "b", "--state-dir", stateDir])).exitCode).toBe(0);
  writeFileSync(configPath, nodeConfig([legA, legC, legD]));
  const reload = await runDstd(["reload", "--state-dir", stateDir]);
  expect(reload.stderr).toBe("");
  expect(reload.exitCode).toBe(0);
  expect(reload.stdout).toContain("updated export:m in place");
  expect(reload.stdout).toContain("export 'm': mirror leg 1 b replaced by c; resynced whole while I/O goes on");
  expect(reload.stdout).toContain("export 'm': mirror leg 2 added: d; resynced whole while I/O goes on");
  await client.write(31 * MiB, pattern(MiB, 6)); // while they resync
  await node.waitForLog(/leg c in sync at generation/, "leg c resynced", 60_000);
  await node.waitForLog(/leg d in sync at generation/, "leg d resynced", 60_000);
  await client.flush();
  expect((await legStates()).map((l) => [l.label, l.state])).toEqual([["a", "in-sync"], ["c", "in-sync"], ["d", "in-sync"]]);
  expect(client.engine.counters.reconnects).toBe(0);
  for (const image of [c, d]) {
    expect(Buffer.compare(readFileAt(image, META + 30 * MiB, 2 * MiB), readFileAt(images.a, META + 30 * MiB, 2 * MiB))).toBe(0);
    expect(Buffer.compare(readFileAt(image, META + 31 * MiB, MiB), pattern(MiB, 6))).toBe(0);
  }
  await client.close();
}, 120_000);

