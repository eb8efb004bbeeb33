/**
 * A reload's in-place changes to mirrors anywhere in a running tree (daemon/tree-changes.ts
 * decides, daemon/export-tree-changes.ts applies; docs/tree.md "Replacing and adding mirror
 * legs"), on real files opened as `dstd up` opens them (flock, mirror legs at their size): a
 * disk replaced inside a mirror under a linear node, the changes inside an open mirror leg
 * that is itself a mirror (only the inner disk is resynced), a suspended subtree leg replaced
 * whole, and the refusals (an in-sync leg, a disk the running tree still holds) that change
 * nothing; a new subtree leg's layout record written only after the mirror's record of it.
 */
import { afterAll, expect, test } from "bun:test";
import { readFileSync, symlinkSync } from "node:fs";
import { join } from "node:path";
import { parseConfigText } from "../../src/config/load.ts";
import type { ExportConfig } from "../../src/config/types.ts";
import { reloadOpener } from "../../src/daemon/export-node.ts";
import { type OpenNode, prepareTreeChanges } from "../../src/daemon/export-tree-changes.ts";
import { HeldRecords, LayoutBook, type LayoutRecords } from "../../src/storage/tree/layout-book.ts";
import { PassThrough } from "../../src/storage/layers/pass-through.ts";
import { openMirror } from "../../src/storage/tree/mirror/mirror.ts";
import { systemClock } from "../../src/storage/tree/system-clock.ts";
import { treeChanges } from "../../src/daemon/tree-changes.ts";
import { call, type Done, type StoragePort } from "../../src/storage/port.ts";
import { findMirrorLeg, mirrorLegsOf } from "../../src/storage/tree/mirror-legs.ts";
import { openTree } from "../../src/storage/tree/open.ts";
import { readFileAt, scratchDir } from "../helpers/files.ts";
import { until } from "../helpers/wait.ts";

const MiB = 1024 * 1024;
const META = MiB; // a mirror leg's metadata area (docs/tree.md "On-leg metadata")
const scratch = scratchDir("export-tree-changes");
afterAll(() => scratch.remove());
const quiet = { info() {}, warn() {}, debug() {} };
const img = (name: string) => join(scratch.path, `${name}.img`);
const disk = (name: string) => `{ file = "${img(name)}", size = "4MiB" }`;

/** One export "t" whose tree is `tree` (the TOML under [export.tree]). */
function exportWith(tree: string): ExportConfig {
  return parseConfigText(`[[export]]\nname = "t"\nlisten = "127.0.0.1:7003"\nallow = ["127.0.0.1/32:rw"]\n[export.tree]\n${tree}\n`, "test.toml").exports[0]!;
}

function open(e: ExportConfig): Promise<StoragePort> {
  if (e.backend.kind !== "tree") throw new Error("not a tree");
  return openTree(e.backend.root, { log: quiet, lock: true });
}

/** Apply the reload from `before` to `after` on `port`: the lines it prints, or the refusal. */
async function reload(port: StoragePort, before: ExportConfig, after: ExportConfig): Promise<string[]> {
  const change = treeChanges([before], [after])?.get("t");
  if (change === undefined) throw new Error("not a change made in place");
  const prepared = await prepareTreeChanges([{ name: "t", port, change }], (_name, node, grown, at) => openTree(node, { log: quiet, lock: true, grown, at }), () => {});
  return prepared.commit();
}

function hold(port: StoragePort, label: string, action: "suspend" | "resume"): Promise<number> {
  const found = findMirrorLeg(port, label);
  if (typeof found === "string") throw new Error(found);
  return new Promise((resolve) => found.mirror.setLegHeld(found.index, action, resolve));
}

const states = (port: StoragePort) => mirrorLegsOf(port).map((leg) => `${leg.label}=${leg.mirror.legs[leg.index]!.state}`);
const allInSync = (port: StoragePort) => mirrorLegsOf(port).every((leg) => leg.mirror.legs[leg.index]!.state === "in-sync");
const pattern = (length: number, seed: number) => new Uint8Array(length).map((_, i) => (i * 7 + seed) & 0xff);

test("a disk replaced inside a mirror under a linear node: refused while in sync, then replaced and resynced whole; the next open has it", async () => {
  const tree = (d: string) => `linear = [{ name = "s0", assume_clean = true, mirror = [${disk("a1")}, ${disk("b1")}] }, { name = "s1", assume_clean = true, mirror = [${disk("c1")}, ${disk(d)}] }]`;
  const before = exportWith(tree("d1"));
  const after = exportWith(tree("e1"));
  const port = await open(before);
  try {
    expect(port.size).toBe(6 * MiB);
    await call.write(port, 0, pattern(6 * MiB, 1));
    await call.flush(port);
    // d1 is in sync: replacing it would drop a copy before the new one exists. Nothing changes.
    await expect(reload(port, before, after)).rejects.toThrow(`export 't', in leg s1: leg ${img("d1")} is in-sync: suspend it first (dstd leg suspend), then replace it`);
    expect(states(port)).toEqual([`${img("a1")}=in-sync`, `${img("b1")}=in-sync`, `${img("c1")}=in-sync`, `${img("d1")}=in-sync`]);

    expect(await hold(port, img("d1"), "suspend")).toBe(0);
    expect(await reload(port, before, after)).toEqual([`export 't', in leg s1: mirror leg 1 ${img("d1")} replaced by ${img("e1")}; resynced whole while I/O goes on`]);
    await call.write(port, 3 * MiB, pattern(MiB, 2)); // the first MiB of s1, while e1 resyncs
    await until(() => allInSync(port), "e1 in sync", 20_000);
    await call.flush(port);
    expect(Buffer.compare(readFileAt(img("e1"), META, 3 * MiB), readFileAt(img("c1"), META, 3 * MiB))).toBe(0);
    expect(Buffer.compare(readFileAt(img("e1"), META, MiB), Buffer.from(pattern(MiB, 2)))).toBe(0);
  } finally {
    await port.close();
  }
  const again = await open(after);
  try {
    expect(states(again)).toEqual([`${img("a1")}=in-sync`, `${img("b1")}=in-sync`, `${img("c1")}=in-sync`, `${img("e1")}=in-sync`]);
    const read = new Uint8Array(MiB);
    await call.read(again, 4 * MiB, read);
    expect(Buffer.compare(read, Buffer.from(pattern(6 * MiB, 1).subarray(4 * MiB, 5 * MiB)))).toBe(0);
  } finally {
    await again.close();
  }
}, 60_000);

test("a mirror of mirrors: the change inside an open leg resyncs only its disk, the leg is relabelled and reopens as configured now; a suspended subtree leg is replaced whole", async () => {
  const tree = (inner: string, extra = "") => `mirror = [{ mirror = [${inner}] }, ${disk("c2")}${extra}]\nassume_clean = true`;
  const v1 = exportWith(tree(`${disk("a2")}, ${disk("b2")}`));
  const v2 = exportWith(tree(`${disk("a2")}, ${disk("d2")}`));
  const port = await open(v1);
  const innerV1 = `mirror(${img("a2")}, ${img("b2")})`;
  const innerV2 = `mirror(${img("a2")}, ${img("d2")})`;
  try {
    await until(() => allInSync(port), "the new mirrors in sync", 20_000);
    await call.write(port, 0, pattern(2 * MiB, 3));
    await call.flush(port);
    expect(await hold(port, img("b2"), "suspend")).toBe(0);
    // The outer leg is open: the change is made inside it. The outer mirror resyncs nothing.
    const outer = findMirrorLeg(port, innerV1);
    if (typeof outer === "string") throw new Error(outer);
    const outerMoved = outer.mirror.resyncedBytes;
    expect(await reload(port, v1, v2)).toEqual([`export 't', in leg ${innerV1}: mirror leg 1 ${img("b2")} replaced by ${img("d2")}; resynced whole while I/O goes on`]);
    await until(() => allInSync(port), "d2 in sync", 20_000);
    expect(outer.mirror.resyncedBytes).toBe(outerMoved);
    expect(outer.mirror.legs[0]!.label).toBe(innerV2);
    expect(Buffer.compare(readFileAt(img("d2"), 2 * META, 2 * MiB), Buffer.from(pattern(2 * MiB, 3)))).toBe(0);

    // Suspend and resume the outer leg: it is reopened from the configuration as it is now
    // (a2 and d2; b2 is not opened, so another holder can lock it).
    expect(await hold(port, innerV2, "suspend")).toBe(0);
    expect(await hold(port, innerV2, "resume")).toBe(0);
    await until(() => allInSync(port), "the outer leg back in sync", 20_000);
    expect(states(port)).toEqual([`${innerV2}=in-sync`, `${img("a2")}=in-sync`, `${img("d2")}=in-sync`, `${img("c2")}=in-sync`]);

    // Replace the outer leg whole while it is suspended (closed): the new subtree may reuse its disks.
    const v3 = exportWith(tree(`${disk("a2")}, ${disk("e2")}`, `, ${disk("f2")}`));
    expect(await hold(port, innerV2, "suspend")).toBe(0);
    await call.write(port, MiB, pattern(MiB, 4));
    // v2 → v3 reads as a change inside leg 0 too; its port is closed, so it is replaced whole.
    expect(await reload(port, v2, v3)).toEqual([
      `export 't': mirror leg 0 ${innerV2} replaced by mirror(${img("a2")}, ${img("e2")}); resynced whole while I/O goes on`,
      `export 't': mirror leg 2 added: ${img("f2")}; resynced whole while I/O goes on`,
    ]);
    await until(() => allInSync(port), "the replaced and the added leg in sync", 30_000);
    await call.flush(port);
    for (const name of ["f2"]) expect(Buffer.compare(readFileAt(img(name), META, 2 * MiB), readFileAt(img("c2"), META, 2 * MiB))).toBe(0);
    expect(Buffer.compare(readFileAt(img("e2"), 2 * META + MiB, MiB), Buffer.from(pattern(MiB, 4)))).toBe(0);
  } finally {
    await port.close();
  }
}, 90_000);

test("a new leg that is a disk the running tree still holds is refused at open (its flock) and nothing changes", async () => {
  const tree = (b: string) => `mirror = [${disk("a3")}, ${b}]\nassume_clean = true`;
  const before = exportWith(tree(disk("b3")));
  const port = await open(before);
  try {
    expect(await hold(port, img("b3"), "suspend")).toBe(0);
    // a3 is in sync and open: a linear reusing it is refused when the config is read, and,
    // named another way (a symlink, which the config check cannot tell), cannot be opened.
    expect(() => exportWith(tree(`{ linear = [${disk("a3")}, ${disk("x3")}] }`))).toThrow(/mirror\[1\]\.linear\[0\]\.file: .*a3\.img is also used at export\[0\]\.tree\.mirror\[0\]\.file/);
    const link = join(scratch.path, "a3-link.img");
    symlinkSync(img("a3"), link);
    const after = exportWith(tree(`{ linear = [{ file = "${link}", size = "4MiB" }, ${disk("x3")}] }`));
    await expect(reload(port, before, after)).rejects.toThrow(/export 't': new leg linear\(.*a3-link\.img, .*x3\.img\) cannot be opened: .*a3-link\.img/);
    expect(states(port)).toEqual([`${img("a3")}=in-sync`, `${img("b3")}=suspended`]);
    // The suspended b3 was closed: a subtree reusing it opens.
    const reuse = exportWith(tree(`{ linear = [${disk("b3")}, ${disk("x3")}] }`));
    expect(await reload(port, before, reuse)).toEqual([`export 't': mirror leg 1 ${img("b3")} replaced by linear(${img("b3")}, ${img("x3")}); resynced whole while I/O goes on`]);
    await until(() => allInSync(port), "the linear leg in sync", 20_000);
  } finally {
    await port.close();
  }
}, 60_000);

/** Holds every write to the leg below while `holding` (the mirror's metadata writes to an in-sync leg), until `release`. */
class HoldWrites extends PassThrough {
  holding = false;
  private readonly held: Array<() => void> = [];
  override write(offset: number, data: Uint8Array, fua: boolean, done: Done): void {
    if (!this.holding) return super.write(offset, data, fua, done);
    this.held.push(() => super.write(offset, data, fua, done));
  }
  get heldCount(): number {
    return this.held.length;
  }
  release(): void {
    this.holding = false;
    for (const run of this.held.splice(0)) run();
  }
}

test("a mirror leg replaced by a subtree: its layout record is written only once the mirror's record of the new leg is durable, and the old leg's layout does not bind it", async () => {
  const stateDir = join(scratch.path, "held-state");
  const books = new Map<string, LayoutBook>();
  const bookOf = (name: string) => books.get(name) ?? books.set(name, LayoutBook.open(stateDir, name)).get(name)!;
  const tree = (second: string, size: string) => `mirror = [{ name = "site", linear = [${disk("h1")}, { file = "${img(second)}", size = "${size}" }] }, { file = "${img("h3")}", size = "8MiB" }]\nassume_clean = true`;
  const before = exportWith(tree("h2", "5MiB"));
  // The new subtree reuses h1 (its first disk, holding the slot's metadata) and a smaller new disk.
  const after = exportWith(tree("h4", "4MiB"));
  if (before.backend.kind !== "tree" || before.backend.root.kind !== "mirror") throw new Error("not a mirror");
  const [site, other] = before.backend.root.legs;
  // The running mirror as openTree builds it, with the in-sync leg's writes under our control.
  const h3 = new HoldWrites(await openTree(other!.node, { log: quiet, lock: true, grown: true }));
  const siteOpen = () => openTree(site!.node, { log: quiet, lock: true, grown: true, layout: bookOf("t"), at: "0", mirrorLeg: "site" });
  const port = await openMirror(
    [
      { label: "site", port: await siteOpen(), open: siteOpen },
      { label: other!.label, port: h3 },
    ],
    { clock: systemClock, randomId: () => new Uint8Array(16).fill(5), log: quiet, assumeClean: true },
  );
  const recordPath = join(stateDir, "layout", "t.json");
  const recorded = () => JSON.parse(readFileSync(recordPath, "utf8")).nodes["0"].legs.map((e: { label: string }) => e.label);
  try {
    expect(recorded()).toEqual([img("h1"), img("h2")]);
    expect(await new Promise<number>((resolve) => port.setLegHeld(0, "suspend", resolve))).toBe(0);
    const change = treeChanges([before], [after])?.get("t");
    if (change === undefined) throw new Error("not a change made in place");
    const warned: string[] = [];
    // An aborted reload writes nothing.
    const aborted = await prepareTreeChanges([{ name: "t", port, change }], reloadOpener(quiet, bookOf), () => {}, (m) => warned.push(m));
    await aborted.abort();
    expect(recorded()).toEqual([img("h1"), img("h2")]);
    // The reload opens the new leg as an export does (locked); the leg's later reopens (a probe,
    // a resume) are made here without locks, since the running leg holds them.
    const reopened: boolean[] = [];
    let first = true;
    const opener: OpenNode = (name, node, grown, at, held) => {
      if (first) {
        first = false;
        return reloadOpener(quiet, bookOf)(name, node, grown, at, held);
      }
      reopened.push(held !== undefined);
      let layout: LayoutRecords = bookOf(name);
      if (held !== undefined) {
        const records = new HeldRecords(layout);
        held.push(() => records.release());
        layout = records;
      }
      return openTree(node, { log: quiet, lock: false, grown, layout, at });
    };
    const prepared = await prepareTreeChanges([{ name: "t", port, change }], opener, () => {}, (m) => warned.push(m));
    // Opened (h4 is smaller than h2's recorded 5 MiB: the old layout does not bind a leg resynced whole), not written.
    expect(recorded()).toEqual([img("h1"), img("h2")]);
    h3.holding = true;
    expect(prepared.commit()).toEqual([expect.stringContaining("mirror leg 0 site replaced by site; resynced whole")]);
    await until(() => h3.heldCount > 0, "the mirror's record of the new leg to be on its way to the in-sync leg", 5_000);
    expect(recorded()).toEqual([img("h1"), img("h2")]); // not before that record is on disk
    // A reopen of the new leg meanwhile (a probe after a failure) holds its record back too.
    await (await port.legs[0]!.open!()).close();
    expect(reopened).toEqual([true]);
    expect(recorded()).toEqual([img("h1"), img("h2")]);
    h3.release();
    await until(() => JSON.stringify(recorded()) === JSON.stringify([img("h1"), img("h4")]), "the new leg's layout to be recorded", 5_000);
    await (await port.legs[0]!.open!()).close(); // once it is, reopens write it as they open
    expect(reopened).toEqual([true, false]);
    await until(() => port.legs.every((leg) => leg.state === "in-sync"), "the new leg to be resynced", 10_000);
    expect(warned).toEqual([]);
  } finally {
    await port.close();
  }
});

test("a step that cannot be applied any more at commit (its leg resumed since prepare) is reported as a failure, not as a change", async () => {
  const tree = (d: string) => `mirror = [${disk("m1")}, ${disk(d)}]\nassume_clean = true`;
  const before = exportWith(tree("m2"));
  const after = exportWith(tree("m3"));
  const port = await open(before);
  try {
    expect(await hold(port, img("m2"), "suspend")).toBe(0);
    const change = treeChanges([before], [after])!.get("t")!;
    const prepared = await prepareTreeChanges([{ name: "t", port, change }], (_name, node, grown, at) => openTree(node, { log: quiet, lock: true, grown, at }), () => {});
    // Between prepare and commit the leg comes back (resumed): replacing it would drop a copy.
    expect(await hold(port, img("m2"), "resume")).toBe(0);
    const failures: string[] = [];
    expect(prepared.commit(failures)).toEqual([]);
    expect(failures).toEqual([expect.stringContaining("not changed")]);
    expect(states(port)[1]).not.toContain(img("m3"));
  } finally {
    await port.close();
  }
}, 60_000);
