/**
 * `dstd up` growing storage trees online. A linear export (docs/tree.md "Growing a linear
 * export"): a reload that appends legs to an export whose tree root is `linear` keeps the
 * export group running, a connected DST client hears the new size in band and writes into the
 * new leg without reconnecting, a new NBD client sees the new size; a new leg that cannot be
 * opened refuses the whole reload and nothing changes. A mirror (docs/tree.md "Growing a
 * mirror"): `dstd resize` grows its file legs and the mirror, the client writes past the old
 * end, both legs hold it, a grow past what its bitmaps describe (60 GiB, sparse) doubles its
 * regions, and a restarted node serves the new size and regions — as it does for a plain
 * file export that `dstd resize` grew past the `size` its config names, and for a stripe
 * (docs/tree.md "Growing a stripe") grown by whole rows, and for the linear export grown by
 * its last leg; a leg of that linear export that grows while the node is stopped does not
 * move the data after it (docs/tree.md "The layout record"). Compiled binary, real
 * sockets and files.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, symlinkSync, truncateSync, writeFileSync } from "node:fs";
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
const GiB = 1024 * MiB;
const dir = mkdtempSync(join(tmpdir(), "dstd-grow-"));
const stateDir = join(dir, "state");
const configPath = join(dir, "dstd.toml");
const leg = (name: string) => join(dir, `${name}.img`);

let dstPort = 0;
let nbdPort = 0;
let mirrorPort = 0;
let filePort = 0;
let stripePort = 0;
/** The config with these linear legs, each a file of `size` (created when missing), and a mirror export. */
function config(legs: Array<{ path: string; size: string }>, stripe = { chunk: "64KiB", legs: ["s0", "s1"] }): string {
  return `
state_dir = "${stateDir}"
log_level = "info"

[[export]]
name = "g"
listen = "127.0.0.1:${dstPort}"
nbd_listen = "127.0.0.1:${nbdPort}"
allow = ["127.0.0.1/32:rw"]
[export.tree]
linear = [${legs.map((l) => `{ file = "${l.path}", size = "${l.size}" }`).join(", ")}]

[[export]]
name = "m"
listen = "127.0.0.1:${mirrorPort}"
allow = ["127.0.0.1/32:rw"]
[export.tree]
assume_clean = true
mirror = [{ file = "${leg("m0")}", size = "16MiB" }, { file = "${leg("m1")}", size = "16MiB" }]

[[export]]
name = "s"
listen = "127.0.0.1:${stripePort}"
allow = ["127.0.0.1/32:rw"]
[export.tree]
chunk = "${stripe.chunk}"
stripe = [${stripe.legs.map((name) => `{ file = "${leg(name)}", size = "8MiB" }`).join(", ")}]

[[export]]
name = "f"
file = "${leg("f-plain")}"
size = "16MiB"
listen = "127.0.0.1:${filePort}"
allow = ["127.0.0.1/32:rw"]
`;
}



const twoLegs = [
  { path: leg("a"), size: "16MiB" },
  { path: leg("b"), size: "16MiB" },
];
let node: NodeProcess;
let client: DstClient;

function openClient(port: number, exportName: string): Promise<DstClient> {
  return DstClient.open({
    address: { transport: "tcp", host: "127.0.0.1", port },
    exportName,
    log: { info() {}, warn() {} },
    // Reconnects are what the tests count; an idle connection on a loaded CI host must not
    // miss its PONGs for that reason.
    keepaliveTimeoutMs: 30_000,
  });
}

beforeAll(async () => {
  ensureBinary();
  dstPort = freeLoopbackPort();
  nbdPort = freeLoopbackPort();
  mirrorPort = freeLoopbackPort();
  filePort = freeLoopbackPort();
  stripePort = freeLoopbackPort();
  writeFileSync(configPath, config(twoLegs));
  node = startNode(["--config", configPath, "--log-format", "json"], { DSTD_STATE_DIR: undefined, NOTIFY_SOCKET: undefined });
  await node.waitForLog("ready:", "the node to be ready", 30_000);
  client = await openClient(dstPort, "g");
}, 60_000);

afterAll(async () => {
  await client?.close();
  await node?.stop("SIGKILL");
  rmSync(dir, { recursive: true, force: true });
});

describe("dstd up: storage trees grow online", () => {
  test("appended legs grow the export in place; a connected client writes into the new leg", async () => {
    expect(client.size).toBe(32 * MiB);
    const announced: number[] = [];
    client.onResize = (size) => announced.push(size);
    await client.write(20 * MiB, new Uint8Array(4096).fill(0x5a)); // in leg b

    writeFileSync(configPath, config([...twoLegs, { path: leg("c"), size: "8MiB" }, { path: leg("d"), size: "4MiB" }]));
    const reload = await runDstd(["reload", "--state-dir", stateDir]);
    expect(reload.stderr).toBe("");
    expect(reload.exitCode).toBe(0);
    expect(reload.stdout).toContain("updated export:g in place");
    expect(reload.stdout).toContain(`export 'g' grown from 32 MiB to 44 MiB: appended leg ${leg("c")}, leg ${leg("d")}`);

    await until(() => client.size === 44 * MiB, "the client to learn the new size", 5_000);
    expect(announced).toEqual([44 * MiB]);
    expect(client.engine.counters.reconnects).toBe(0);
    // The same session writes across the boundary of the old end and into the last leg.
    const pattern = new Uint8Array(2 * MiB).map((_, i) => (i * 7 + 3) & 0xff);
    await client.write(31 * MiB, pattern); // 1 MiB in leg b, 1 MiB in leg c
    await client.write(42 * MiB, pattern); // the last 2 MiB of leg d
    await client.flush();
    expect(Buffer.compare(await client.read(31 * MiB, 2 * MiB), pattern)).toBe(0);
    expect((await client.read(20 * MiB, 4096))[0]).toBe(0x5a);
    // The bytes are where the concatenation puts them.
    expect(Buffer.compare(readFileAt(leg("c"), 0, MiB), pattern.subarray(MiB))).toBe(0);
    expect(Buffer.compare(readFileAt(leg("d"), 2 * MiB, 2 * MiB), pattern)).toBe(0);
    await expect(client.write(44 * MiB, new Uint8Array(4096))).rejects.toThrow();

    const status = await runDstd(["status", "--json", "--state-dir", stateDir]);
    expect(status.exitCode).toBe(0);
    const service = JSON.parse(status.stdout).services.find((s: { name: string }) => s.name === "export:g");
    expect(service.export.exports[0].backend.sizeBytes).toBe(44 * MiB);
    expect(JSON.stringify(service.export.exports[0].tree)).toContain(leg("d"));

    if (haveTools({ nbdinfo: "libnbd-bin" })) {
      // A new NBD connection is told the new size in its handshake.
      const info = Bun.spawnSync(["nbdinfo", "--size", `nbd://127.0.0.1:${nbdPort}/g`]);
      expect(info.stderr.toString()).toBe("");
      expect(info.stdout.toString().trim()).toBe(String(44 * MiB));
    }
  }, 60_000);

  test("a new leg that cannot be opened refuses the reload: nothing changes, nobody is dropped", async () => {
    const grown = [...twoLegs, { path: leg("c"), size: "8MiB" }, { path: leg("d"), size: "4MiB" }];
    symlinkSync(leg("a"), join(dir, "a-link.img"));
    for (const [bad, why] of [
      [{ path: join(dir, "missing-dir", "e.img"), size: "8MiB" }, `export 'g': new leg ${join(dir, "missing-dir", "e.img")} cannot be opened`],
      // The same file twice: refused when the config is read, naming both places ...
      [{ path: leg("a"), size: "16MiB" }, `export[0].tree.linear[5].file: ${leg("a")} is also used at export[0].tree.linear[0].file`],
      // ... or, under another name, by the export lock it holds on leg a.
      [{ path: join(dir, "a-link.img"), size: "16MiB" }, `export 'g': new leg ${join(dir, "a-link.img")} cannot be opened`],
    ] as const) {
      writeFileSync(configPath, config([...grown, { path: join(dir, "f.img"), size: "4MiB" }, bad]));
      const reload = await runDstd(["reload", "--state-dir", stateDir]);
      expect(reload.exitCode).toBe(2);
      expect(reload.stderr).toContain(why);
      expect(client.size).toBe(44 * MiB);
    }
    expect(client.engine.counters.reconnects).toBe(0);
    await client.write(43 * MiB, new Uint8Array(4096).fill(9));
    expect((await client.read(43 * MiB, 4096))[0]).toBe(9);
    // The leg opened before the failing one was closed again: a later reload can take it.
    writeFileSync(configPath, config([...grown, { path: join(dir, "f.img"), size: "4MiB" }]));
    const reload = await runDstd(["reload", "--state-dir", stateDir]);
    expect(reload.stderr).toBe("");
    expect(reload.exitCode).toBe(0);
    expect(reload.stdout).toContain("grown from 44 MiB to 48 MiB");
    await until(() => client.size === 48 * MiB, "the client to learn the new size", 5_000);
  }, 60_000);

  test("dstd resize grows a mirror and a stripe: their file legs grow, the new range is on the legs, a restart keeps the size", async () => {
    const MIRROR_META = MiB; // docs/tree.md "On-leg metadata": the data starts 1 MiB into each leg
    const m = await openClient(mirrorPort, "m");
    try {
      expect(m.size).toBe(15 * MiB);
      await m.write(14 * MiB, new Uint8Array(4096).fill(0x33));
      const shrink = await runDstd(["resize", "m", "8MiB", "--allow-shrink", "--force", "--state-dir", stateDir]);
      expect(shrink.exitCode).not.toBe(0);
      expect(shrink.stderr).toContain("a mirror does not shrink");
      const resized = await runDstd(["resize", "m", "31MiB", "--state-dir", stateDir]);
      expect(resized.stderr).toBe("");
      expect(resized.exitCode).toBe(0);
      expect(resized.stdout).toContain("resized from 15 MiB to 31 MiB");
      await until(() => m.size === 31 * MiB, "the client to learn the new size", 5_000);
      expect(m.engine.counters.reconnects).toBe(0);
      const pattern = new Uint8Array(MiB).map((_, i) => (i * 13 + 1) & 0xff);
      await m.write(30 * MiB, pattern);
      await m.flush();
      for (const file of [leg("m0"), leg("m1")]) {
        expect(Bun.file(file).size).toBe(MIRROR_META + 31 * MiB);
        expect(Buffer.compare(readFileAt(file, MIRROR_META + 30 * MiB, MiB), pattern)).toBe(0);
        expect(readFileAt(file, MIRROR_META + 20 * MiB, 4096).every((b) => b === 0)).toBe(true); // the new range, never written
      }
      // Past the 56 GiB its bitmaps describe with 64 KiB regions (docs/tree.md "Growing a
      // mirror"): the regions double; sparse legs, zeroed by punching holes.
      const far = await runDstd(["resize", "m", "60GiB", "--state-dir", stateDir]);
      expect(far.stderr).toBe("");
      expect(far.stdout).toContain("resized from 31 MiB to 60 GiB");
      await until(() => m.size === 60 * GiB, "the client to learn the size past the bitmaps", 5_000);
      await node.waitForLog("mirror: regions of 128 KiB from now on", "the regions to double", 5_000);
      await m.write(60 * GiB - MiB, pattern);
      await m.flush();
      for (const file of [leg("m0"), leg("m1")]) {
        expect(Bun.file(file).size).toBe(MIRROR_META + 60 * GiB);
        expect(Buffer.compare(readFileAt(file, MIRROR_META + 60 * GiB - MiB, MiB), pattern)).toBe(0);
      }
    } finally {
      await m.close();
    }
    // A stripe grows by whole rows, every leg by the same amount; a connected client hears it.
    const s = await openClient(stripePort, "s");
    try {
      expect(s.size).toBe(16 * MiB);
      const rows = await runDstd(["resize", "s", "24MiB", "--state-dir", stateDir]);
      expect(rows.exitCode).toBe(0);
      const odd = await runDstd(["resize", "s", String(32 * MiB + 64 * 1024), "--state-dir", stateDir]);
      expect(odd.exitCode).not.toBe(0);
      expect(odd.stderr).toContain("a stripe grows by whole rows: 33619968 bytes is not a multiple of 128 KiB (2 legs × 64 KiB chunk)");
      const resized = await runDstd(["resize", "s", "32MiB", "--state-dir", stateDir]);
      expect(resized.stderr).toBe("");
      expect(resized.stdout).toContain("resized from 24 MiB to 32 MiB");
      await until(() => s.size === 32 * MiB, "the stripe client to learn the new size", 5_000);
      await s.write(31 * MiB, new Uint8Array(MiB).fill(0x4d));
      await s.flush();
      expect(s.engine.counters.reconnects).toBe(0);
      for (const file of [leg("s0"), leg("s1")]) expect(Bun.file(file).size).toBe(16 * MiB);
      // The last row's chunks alternate between the legs: each holds half of that MiB at its end.
      expect(readFileAt(leg("s1"), 16 * MiB - 64 * 1024, 64 * 1024).every((b) => b === 0x4d)).toBe(true);
    } finally {
      await s.close();
    }
    // A plain file export grown the same way keeps its size too, though its config says 16MiB.
    const grown = await runDstd(["resize", "f", "32MiB", "--state-dir", stateDir]);
    expect(grown.exitCode).toBe(0);
    // The linear export grows by its last leg (f.img, 4 MiB → 8 MiB); nothing before it moves.
    const linearGrown = await runDstd(["resize", "g", "52MiB", "--state-dir", stateDir]);
    expect(linearGrown.stderr).toBe("");
    expect(linearGrown.stdout).toContain("resized from 48 MiB to 52 MiB");
    await until(() => client.size === 52 * MiB, "the linear client to learn the new size", 5_000);
    await client.write(50 * MiB, new Uint8Array(4096).fill(0x6c));
    await client.flush();
    expect(Bun.file(join(dir, "f.img")).size).toBe(8 * MiB);
    expect(readFileAt(join(dir, "f.img"), 6 * MiB, 4096).every((b) => b === 0x6c)).toBe(true);
    // Where each leg's data lies is recorded in the state directory (docs/tree.md "The layout record").
    const record = JSON.parse(readFileSync(join(stateDir, "layout", "g.json"), "utf8"));
    expect(record.nodes[""].legs.map((e: { bytes: number }) => e.bytes / MiB)).toEqual([16, 16, 8, 4, 8]);
    expect(JSON.parse(readFileSync(join(stateDir, "layout", "s.json"), "utf8")).nodes[""].bytes).toBe(32 * MiB); // the stripe's grown size
    // A restarted node opens the mirror at its new size, both legs in sync.
    await client.close();
    await node.stop("SIGTERM");
    // While it is stopped, leg a grows (as a device extended or a remote export resized would):
    // the record keeps leg b's data where it was written instead of 4 MiB further on.
    truncateSync(leg("a"), 20 * MiB);
    node = startNode(["--config", configPath, "--log-format", "json"], { DSTD_STATE_DIR: undefined, NOTIFY_SOCKET: undefined });
    await node.waitForLog("ready:", "the node to be ready again", 30_000);
    client = await openClient(dstPort, "g");
    const again = await openClient(mirrorPort, "m");
    try {
      expect(again.size).toBe(60 * GiB);
      expect(Buffer.compare(await again.read(60 * GiB - MiB, MiB), new Uint8Array(MiB).map((_, i) => (i * 13 + 1) & 0xff))).toBe(0);
      expect(Buffer.compare(await again.read(30 * MiB, MiB), new Uint8Array(MiB).map((_, i) => (i * 13 + 1) & 0xff))).toBe(0);
      expect((await again.read(14 * MiB, 4096))[0]).toBe(0x33);
      const status = JSON.parse((await runDstd(["status", "--json", "--state-dir", stateDir])).stdout);
      const tree = status.services.find((s: { name: string }) => s.name === "export:m").export.exports[0].tree;
      expect(tree.legs.map((l: { state: string }) => l.state)).toEqual(["in-sync", "in-sync"]);
      expect(tree.regionBytes).toBe(128 * 1024); // the doubled regions, as recorded
      const plain = await openClient(filePort, "f");
      expect(plain.size).toBe(32 * MiB);
      await plain.close();
      expect(client.size).toBe(52 * MiB);
      expect((await client.read(20 * MiB, 4096))[0]).toBe(0x5a); // in leg b
      expect((await client.read(50 * MiB, 4096))[0]).toBe(0x6c); // in leg f
      expect(Buffer.compare(await client.read(31 * MiB, 2 * MiB), new Uint8Array(2 * MiB).map((_, i) => (i * 7 + 3) & 0xff))).toBe(0);
      const striped = await openClient(stripePort, "s");
      expect(striped.size).toBe(32 * MiB);
      expect((await striped.read(31 * MiB, MiB)).every((b) => b === 0x4d)).toBe(true);
      await striped.close();
    } finally {
      await again.close();
    }
  }, 90_000);

  test("a reload that would restart a stripe over a changed layout is refused while the stripe keeps serving", async () => {
    const legs = [...twoLegs, { path: leg("c"), size: "8MiB" }, { path: leg("d"), size: "4MiB" }, { path: join(dir, "f.img"), size: "4MiB" }];
    const s = await openClient(stripePort, "s");
    try {
      const record = join(stateDir, "layout", "s.json");
      for (const [stripe, why] of [
        [{ chunk: "128KiB", legs: ["s0", "s1"] }, "the stripe root: its chunk is 128 KiB and its data was striped in 64 KiB chunks: every chunk would be read from the wrong place"],
        [{ chunk: "64KiB", legs: ["s0", "s1", "s2"] }, "the stripe root: it names 3 legs and its data was striped over 2"],
        [{ chunk: "64KiB", legs: ["s1", "s0"] }, `the stripe root: leg ${leg("s1")} is named at position 0 and its data was placed as leg 1: reordering legs moves their data`],
      ] as const) {
        writeFileSync(configPath, config(legs, { chunk: stripe.chunk, legs: [...stripe.legs] }));
        const reload = await runDstd(["reload", "--state-dir", stateDir]);
        expect(reload.exitCode).toBe(2);
        expect(reload.stderr).toContain(`export 's': ${why}`);
        expect(reload.stderr).toContain(record);
      }
      expect(s.engine.counters.reconnects).toBe(0);
      expect((await s.read(31 * MiB, MiB)).every((b) => b === 0x4d)).toBe(true);
      writeFileSync(configPath, config(legs));
      const unchanged = await runDstd(["reload", "--state-dir", stateDir]);
      expect(unchanged.exitCode).toBe(0);
    } finally {
      await s.close();
    }
  }, 60_000);
});
