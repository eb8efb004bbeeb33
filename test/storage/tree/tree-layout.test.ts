/**
 * The layout record (docs/tree.md "The layout record"): a linear node keeps where it placed
 * each leg across restarts, so a leg that grew while the export was stopped (a device
 * extended, a remote export resized, a file truncated larger) does not move the data of the
 * legs after it; a leg that shrank, legs dropped or reordered, a stripe whose chunk or leg
 * count changed, and legs laid out by another kind of node are refused naming the leg and the
 * record. `dstd resize` grows a linear node by its last leg. The rules (pure), then real files
 * through openTree, LinearPort.resize and a mirror of linear nodes growing.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { readFileSync, truncateSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { TreeLegSpec, TreeNodeSpec } from "../../../src/config/types.ts";
import { Errno } from "../../../src/lib/errno.ts";
import { createMemoryBackend } from "../../../src/storage/local/memory.ts";
import { createLocalPort } from "../../../src/storage/local/port.ts";
import { call, type StoragePort } from "../../../src/storage/port.ts";
import { LayoutBook } from "../../../src/storage/tree/layout-book.ts";
import { checkStripe, layoutProblems, placeLegs, type NodeLayout } from "../../../src/storage/tree/tree-layout.ts";
import { LinearPort } from "../../../src/storage/tree/linear.ts";
import { openTree } from "../../../src/storage/tree/open.ts";
import { scratchDir } from "../../helpers/files.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
const scratch = scratchDir("linear-layout");
afterAll(() => scratch.remove());

function quietLog() {
  const lines: string[] = [];
  return { lines, log: { info: (m: string) => lines.push(`info ${m}`), warn: (m: string) => lines.push(`warn ${m}`), debug() {} } };
}

describe("placeLegs", () => {
  const legs = (...sizes: number[]) => sizes.map((size, i) => ({ label: `leg${i}`, size }));
  const rec = (...bytes: number[]) => bytes.map((b, i) => ({ label: `leg${i}`, bytes: b }));

  test("without a record each leg gives its size in whole blocks", () => {
    expect(placeLegs(legs(4 * MiB + 100, 2 * MiB), 4096, null)).toEqual({ lengths: [4 * MiB, 2 * MiB], notes: [], replaced: [] });
  });

  test("a recorded leg other than the last keeps its place when it grew; the last grows the node", () => {
    const placed = placeLegs(legs(8 * MiB, 2 * MiB, 6 * MiB), 4096, rec(4 * MiB, 2 * MiB, 4 * MiB));
    if ("problem" in placed) throw new Error(placed.problem);
    expect(placed.lengths).toEqual([4 * MiB, 2 * MiB, 6 * MiB]);
    expect(placed.notes).toEqual([
      "leg 0 leg0 is 8 MiB; it keeps its place of 4 MiB so that the legs after it do not move",
      "leg 2 leg2 is the last and grew from 4 MiB to 6 MiB: the node grows with it",
    ]);
  });

  test("legs appended while stopped follow the recorded ones; a recorded last leg that is no longer last keeps what it held", () => {
    expect(placeLegs(legs(4 * MiB, 3 * MiB, 1 * MiB), 4096, rec(4 * MiB, 2 * MiB))).toEqual({
      lengths: [4 * MiB, 2 * MiB, 1 * MiB],
      notes: ["leg 1 leg1 is 3 MiB; it keeps its place of 2 MiB so that the legs after it do not move"],
      replaced: [],
    });
  });

  test("a leg smaller than its place, a dropped leg, a place not in whole blocks are refused", () => {
    expect(placeLegs(legs(3 * MiB, 2 * MiB), 4096, rec(4 * MiB, 2 * MiB))).toEqual({
      problem: "leg 0 leg0 is 3 MiB and the node placed 4 MiB of data on it: it shrank or is not the same storage (every byte after it would move)",
    });
    expect(placeLegs([{ label: "/new.img", size: 3 * MiB }, ...legs(2 * MiB).map((l) => ({ ...l, label: "leg1" }))], 4096, rec(4 * MiB, 2 * MiB))).toEqual({
      problem: "leg 0 /new.img (recorded as leg0) is 3 MiB and the node placed 4 MiB of data on it: it shrank or is not the same storage (every byte after it would move)",
    });
    expect(placeLegs(legs(4 * MiB), 4096, rec(4 * MiB, 2 * MiB))).toEqual({
      problem: "the layout record places 2 legs and the configuration names 1: leg1 (2 MiB) would be dropped with the data placed there",
    });
    expect(placeLegs(legs(4 * MiB, 4 * MiB), 4096, rec(2 * MiB + 512, 4 * MiB))).toEqual({ problem: "leg 0 leg0: its recorded 2097664 bytes are not whole 4096-byte blocks of the node" });
  });

  test("legs reordered are refused; a leg with a new name at its position is a replacement", () => {
    const swapped = [
      { label: "leg1", size: 4 * MiB },
      { label: "leg0", size: 4 * MiB },
    ];
    expect(placeLegs(swapped, 4096, rec(4 * MiB, 4 * MiB))).toEqual({ problem: "leg leg1 is named at position 0 and its data was placed as leg 1: reordering legs moves their data" });
    const replaced = [
      { label: "/copy.img", size: 4 * MiB },
      { label: "leg1", size: 4 * MiB },
    ];
    expect(placeLegs(replaced, 4096, rec(4 * MiB, 4 * MiB))).toEqual({ lengths: [4 * MiB, 4 * MiB], notes: [], replaced: ["leg 0 is /copy.img (recorded as leg0)"] });
    // Two legs of one name (memory disks of one size) say nothing about order.
    const twins = [
      { label: "memory:4194304", size: 4 * MiB },
      { label: "memory:4194304", size: 4 * MiB },
    ];
    expect(placeLegs(twins, 4096, twins.map((l) => ({ label: l.label, bytes: 4 * MiB })))).toEqual({ lengths: [4 * MiB, 4 * MiB], notes: [], replaced: [] });
  });
});

describe("checkStripe", () => {
  const recorded = { chunkBytes: 512 * KiB, legs: ["a", "b"] };
  test("the same chunk and legs fit; a changed chunk, leg count or order is refused; a renamed leg is a replacement", () => {
    expect(checkStripe(["a", "b"], 512 * KiB, recorded)).toEqual({ replaced: [] });
    expect(checkStripe(["a", "b"], 512 * KiB, null)).toEqual({ replaced: [] });
    expect(checkStripe(["a", "b"], 256 * KiB, recorded)).toEqual({ problem: "its chunk is 256 KiB and its data was striped in 512 KiB chunks: every chunk would be read from the wrong place" });
    expect(checkStripe(["a", "b", "c"], 512 * KiB, recorded)).toEqual({
      problem: "it names 3 legs and its data was striped over 2: a stripe's mapping depends on its leg count (make a new stripe and copy)",
    });
    expect(checkStripe(["b", "a"], 512 * KiB, recorded)).toEqual({ problem: "leg b is named at position 0 and its data was placed as leg 1: reordering legs moves their data" });
    expect(checkStripe(["a", "b2"], 512 * KiB, recorded)).toEqual({ replaced: ["leg 1 is b2 (recorded as b)"] });
  });
});

describe("layoutProblems (a configured tree against its record, before anything opens)", () => {
  const leaf = (label: string): TreeLegSpec => ({ node: { kind: "memory", sizeBytes: MiB }, writeMostly: false, label });
  const records = new Map<string, NodeLayout>([
    ["0", { kind: "stripe", chunkBytes: 64 * KiB, legs: ["a", "b"] }],
    ["1", { kind: "linear", legs: [{ label: "c", bytes: MiB }, { label: "d", bytes: MiB }] }],
  ]);
  const tree = (stripeLegs: string[], chunkBytes: number, linearLegs: string[], linearKind: "linear" | "stripe" = "linear"): TreeNodeSpec => ({
    kind: "mirror",
    readPolicy: "round-robin",
    assumeClean: false,
    legs: [
      { node: { kind: "stripe", chunkBytes, legs: stripeLegs.map(leaf) }, writeMostly: false, label: "s" },
      { node: linearKind === "linear" ? { kind: "linear", legs: linearLegs.map(leaf) } : { kind: "stripe", chunkBytes, legs: linearLegs.map(leaf) }, writeMostly: false, label: "l" },
    ],
  });
  const problems = (root: TreeNodeSpec) => layoutProblems(root, (at) => records.get(at) ?? null);

  test("the recorded tree and a leg appended to the linear node pass; the rest is named", () => {
    expect(problems(tree(["a", "b"], 64 * KiB, ["c", "d"]))).toEqual([]);
    expect(problems(tree(["a", "b"], 64 * KiB, ["c", "d", "e"]))).toEqual([]);
    expect(problems(tree(["a", "b"], 128 * KiB, ["d", "c"]))).toEqual([
      "the stripe node at 0: its chunk is 128 KiB and its data was striped in 64 KiB chunks: every chunk would be read from the wrong place",
      "the linear node at 1: leg d is named at position 0 and its data was placed as leg 1: reordering legs moves their data",
    ]);
    expect(problems(tree(["a", "b", "x"], 64 * KiB, ["c"]))).toEqual([
      "the stripe node at 0: it names 3 legs and its data was striped over 2: a stripe's mapping depends on its leg count (make a new stripe and copy)",
      "the linear node at 1: the layout record places 2 legs and the configuration names 1: d (1 MiB) would be dropped with the data placed there",
    ]);
    expect(problems(tree(["a", "b"], 64 * KiB, ["c", "d"], "stripe"))).toEqual(["the stripe node at 1: its legs' data was laid out by a linear node, and a stripe would place it elsewhere"]);
    // New disks where the nodes were: laid out anew, nothing to refuse.
    expect(problems(tree(["n1", "n2", "n3"], 128 * KiB, ["n4"], "stripe"))).toEqual([]);
    // These nodes are mirror legs: a disk renamed there is a replacement the mirror would trust.
    expect(problems(tree(["a", "b2"], 64 * KiB, ["c", "d"]))).toEqual([expect.stringContaining("the stripe node at 0, in mirror leg s: leg 1 is b2 (recorded as b): a disk replaced while the export was stopped")]);
    // Outside a mirror a renamed disk is taken as a copy (logged when it opens).
    expect(layoutProblems({ kind: "linear", legs: [leaf("c2"), leaf("d")] }, (at) => (at === "" ? records.get("1")! : null))).toEqual([]);
  });
});

/** A file leg without `size` (as `--linear PATH` gives), created at `bytes`. */
function fileLeg(name: string, bytes: number): TreeLegSpec {
  const path = join(scratch.path, `${name}.img`);
  writeFileSync(path, new Uint8Array(0));
  truncateSync(path, bytes);
  return { node: { kind: "file", path, sizeBytes: null }, writeMostly: false, label: path };
}

async function readAt(port: StoragePort, offset: number, length: number): Promise<Uint8Array> {
  const into = new Uint8Array(length);
  await call.read(port, offset, into);
  return into;
}

const pattern = (bytes: number, seed: number) => new Uint8Array(bytes).map((_, i) => (i * 31 + seed) & 0xff);

describe("a linear node over files, reopened", () => {
  test("a first leg that grew while stopped keeps its place with the record (and would move the second leg's data without it)", async () => {
    const dir = join(scratch.path, "grow-state");
    const tree: TreeNodeSpec = { kind: "linear", legs: [fileLeg("g0", 4 * MiB), fileLeg("g1", 4 * MiB)] };
    const first = await openTree(tree, { log: quietLog().log, lock: true, layout: LayoutBook.open(dir, "disk") });
    const data = pattern(64 * KiB, 7);
    try {
      expect(first.size).toBe(8 * MiB);
      await call.write(first, 4 * MiB, data); // the start of leg 1
      await call.flush(first);
    } finally {
      await first.close();
    }
    const record = JSON.parse(readFileSync(join(dir, "layout", "disk.json"), "utf8"));
    expect(record.nodes[""].legs).toEqual([
      { label: tree.legs[0]!.label, bytes: 4 * MiB },
      { label: tree.legs[1]!.label, bytes: 4 * MiB },
    ]);

    truncateSync((tree.legs[0]!.node as { path: string }).path, 6 * MiB); // lvextend, truncate, a remote resize
    const { lines, log } = quietLog();
    const again = await openTree(tree, { log, lock: true, layout: LayoutBook.open(dir, "disk") });
    try {
      expect(again.size).toBe(8 * MiB);
      expect(Buffer.compare(await readAt(again, 4 * MiB, data.length), data)).toBe(0);
      expect(lines).toContain(`info the linear root: leg 0 ${tree.legs[0]!.label} is 6 MiB; it keeps its place of 4 MiB so that the legs after it do not move`);
    } finally {
      await again.close();
    }
    // What the record prevents: placed by the sizes now, leg 1's data is no longer where it was written.
    const { lines: warned, log: unrecorded } = quietLog();
    const moved = await openTree(tree, { log: unrecorded, lock: true });
    try {
      expect(moved.size).toBe(10 * MiB);
      expect(Buffer.compare(await readAt(moved, 4 * MiB, data.length), data)).not.toBe(0);
      expect(warned.some((l) => l.startsWith("warn the linear root: its layout is not recorded (no state directory)"))).toBe(true);
    } finally {
      await moved.close();
    }
  });

  test("a leg that shrank, a leg dropped from the configuration and an unreadable record refuse the open", async () => {
    const dir = join(scratch.path, "refuse-state");
    const legs = [fileLeg("r0", 4 * MiB), fileLeg("r1", 4 * MiB), fileLeg("r2", 2 * MiB)];
    const port = await openTree({ kind: "linear", legs }, { log: quietLog().log, lock: true, layout: LayoutBook.open(dir, "disk") });
    await port.close();
    const path = join(dir, "layout", "disk.json");
    truncateSync((legs[1]!.node as { path: string }).path, 3 * MiB);
    await expect(openTree({ kind: "linear", legs }, { log: quietLog().log, lock: true, layout: LayoutBook.open(dir, "disk") })).rejects.toThrow(
      `the linear root: leg 1 ${legs[1]!.label} is 3 MiB and the node placed 4 MiB of data on it: it shrank or is not the same storage (every byte after it would move) (layout record ${path})`,
    );
    truncateSync((legs[1]!.node as { path: string }).path, 4 * MiB);
    await expect(openTree({ kind: "linear", legs: legs.slice(0, 2) }, { log: quietLog().log, lock: true, layout: LayoutBook.open(dir, "disk") })).rejects.toThrow(
      "the layout record places 3 legs and the configuration names 2",
    );
    writeFileSync(path, "{ not json");
    expect(() => LayoutBook.open(dir, "disk")).toThrow(`layout record ${path} cannot be read`);
    writeFileSync(path, JSON.stringify({ format: "something else" }));
    expect(() => LayoutBook.open(dir, "disk")).toThrow("is not a dstd tree layout record");
  });

  test("a nested linear node is recorded by where it sits; export names become safe file names", async () => {
    const dir = join(scratch.path, "nested-state");
    const tree: TreeNodeSpec = {
      kind: "mirror",
      readPolicy: "round-robin",
      assumeClean: true,
      legs: [
        { node: { kind: "linear", legs: [fileLeg("n0", 3 * MiB), fileLeg("n1", 2 * MiB)] }, writeMostly: false, label: "linear(n0, n1)" },
        fileLeg("n2", 5 * MiB),
      ],
    };
    const port = await openTree(tree, { log: quietLog().log, lock: true, layout: LayoutBook.open(dir, "a/b c") });
    await port.close();
    const record = JSON.parse(readFileSync(join(dir, "layout", "a%002fb%0020c.json"), "utf8"));
    expect(record.export).toBe("a/b c");
    expect(Object.keys(record.nodes)).toEqual(["0"]);
    expect(record.nodes["0"].legs.map((e: { bytes: number }) => e.bytes)).toEqual([3 * MiB, 2 * MiB]);
  });
});

describe("a stripe and a restructured tree, reopened", () => {
  test("a stripe's leg added, its chunk changed or the same legs under a linear node refuse the open; a subtree of new disks is laid out anew", async () => {
    const dir = join(scratch.path, "stripe-state");
    const legs = [fileLeg("s0", 4 * MiB), fileLeg("s1", 4 * MiB)];
    const book = () => LayoutBook.open(dir, "disk");
    const stripe = (chunkBytes: number, over = legs): TreeNodeSpec => ({ kind: "stripe", legs: over, chunkBytes });
    const { lines: unrecorded, log: bare } = quietLog();
    await (await openTree(stripe(64 * KiB), { log: bare, lock: true })).close();
    expect(unrecorded.some((l) => l.startsWith("warn the stripe root: its layout is not recorded (no state directory)"))).toBe(true);
    const port = await openTree(stripe(64 * KiB), { log: quietLog().log, lock: true, layout: book() });
    await port.close();
    expect(JSON.parse(readFileSync(join(dir, "layout", "disk.json"), "utf8")).nodes[""]).toEqual({ kind: "stripe", chunkBytes: 64 * KiB, legs: legs.map((l) => l.label), bytes: 8 * MiB });
    const record = join(dir, "layout", "disk.json");
    await expect(openTree(stripe(128 * KiB), { log: quietLog().log, lock: true, layout: book() })).rejects.toThrow(
      `the stripe root: its chunk is 128 KiB and its data was striped in 64 KiB chunks: every chunk would be read from the wrong place (layout record ${record})`,
    );
    await expect(openTree(stripe(64 * KiB, [...legs, fileLeg("s2", 4 * MiB)]), { log: quietLog().log, lock: true, layout: book() })).rejects.toThrow(
      "the stripe root: it names 3 legs and its data was striped over 2",
    );
    await expect(openTree({ kind: "linear", legs }, { log: quietLog().log, lock: true, layout: book() })).rejects.toThrow(
      `the linear root: its legs' data was laid out by a stripe node, and a linear would place it elsewhere (layout record ${record})`,
    );
    // A leg that shrank would cut rows off the stripe: refused, not served smaller.
    truncateSync((legs[1]!.node as { path: string }).path, 3 * MiB);
    await expect(openTree(stripe(64 * KiB), { log: quietLog().log, lock: true, layout: book() })).rejects.toThrow(
      `the stripe root: it served 8 MiB and can serve 6 MiB now: leg ${legs[1]!.label} is 3 MiB, and each leg holds 4 MiB of its data (it shrank or is not the same storage) (layout record ${record})`,
    );
    truncateSync((legs[1]!.node as { path: string }).path, 4 * MiB);
    // Grown by dstd resize: the record follows before the new size is served.
    const grown = await openTree(stripe(64 * KiB), { log: quietLog().log, lock: true, layout: book() });
    expect(await new Promise<number>((resolve) => grown.resize!(10 * MiB, resolve))).toBe(0);
    await grown.close();
    expect(JSON.parse(readFileSync(record, "utf8")).nodes[""].bytes).toBe(10 * MiB);
    // None of the recorded legs: another node sits here now (a mirror leg replaced by new disks).
    const { lines, log } = quietLog();
    const fresh = await openTree({ kind: "linear", legs: [fileLeg("f0", 2 * MiB), fileLeg("f1", 2 * MiB)] }, { log, lock: true, layout: book() });
    await fresh.close();
    expect(lines).toContain(`info the linear root: none of the legs recorded here (${legs.map((l) => l.label).join(", ")}) is in the configuration: a new node, laid out anew`);
    expect(JSON.parse(readFileSync(record, "utf8")).nodes[""].kind).toBe("linear");
  });
});

describe("a disk replaced inside a mirror leg while the export was stopped", () => {
  test("is refused at the mirror's open (it would take the blank disk as holding the leg's data); a copy named as the old disk opens; a reload's whole replacement is not refused", async () => {
    const dir = join(scratch.path, "mirror-leg-state");
    const book = () => LayoutBook.open(dir, "m");
    const [a, b, c] = [fileLeg("mla", 2 * MiB), fileLeg("mlb", 2 * MiB), fileLeg("mlc", 4 * MiB)];
    const tree = (inner: TreeLegSpec[]): TreeNodeSpec => ({
      kind: "mirror",
      readPolicy: "round-robin",
      assumeClean: true,
      legs: [{ node: { kind: "linear", legs: inner }, writeMostly: false, label: "site-a" }, c],
    });
    const first = await openTree(tree([a, b]), { log: quietLog().log, lock: true, layout: book() });
    const data = pattern(64 * KiB, 9);
    try {
      await call.write(first, 3 * MiB - 512 * KiB, data); // on leg 0's second disk (past the 1 MiB metadata area and disk a)
      await call.flush(first);
    } finally {
      await first.close();
    }
    // Disk b fails; a blank b2 takes its place in the configuration while the export is stopped.
    const b2 = fileLeg("mlb2", 2 * MiB);
    const { lines, log } = quietLog();
    await expect(openTree(tree([a, b2]), { log, lock: true, layout: book() })).rejects.toThrow(/leg 0 is unreachable and the mirror's last record lists it in sync/);
    expect(lines).toContain(
      `warn mirror leg site-a cannot be opened (the linear node at 0, in mirror leg site-a: leg 1 is ${b2.label} (recorded as ${b.label}): a disk replaced while the export was stopped, which the mirror would take as holding the leg's data; ` +
        `replace it while the export runs (dstd leg suspend, then a reload: the leg is resynced whole), or, if it is a copy of the disk it replaces, give it that disk's name (name = "…")); the mirror will keep trying`,
    );
    // A copy of b under b's name: the same data, nothing refused.
    writeFileSync((b2.node as { path: string }).path, readFileSync((b.node as { path: string }).path));
    const copy = await openTree(tree([a, { ...b2, label: b.label }]), { log: quietLog().log, lock: true, layout: book() });
    try {
      expect(Buffer.compare(await readAt(copy, 3 * MiB - 512 * KiB, data.length), data)).toBe(0);
    } finally {
      await copy.close();
    }
    // A reload replacing the leg whole (no mirrorLeg: mirror/leg-change.ts resyncs it) opens the subtree.
    const whole = await openTree({ kind: "linear", legs: [a, b2] }, { log: quietLog().log, lock: true, layout: book(), at: "0", grown: true });
    await whole.close();
  });
});

describe("resize grows a linear node by its last leg", () => {
  const memory = (size: number) => createLocalPort(createMemoryBackend(size));
  const resize = (port: StoragePort, size: number) => new Promise<number>((resolve) => port.resize!(size, resolve));

  test("the last leg grows, the new range follows the old end, the layout is recorded before it is served", async () => {
    const recorded: number[][] = [];
    const legs = [memory(2 * MiB), memory(MiB)];
    const linear = new LinearPort(
      legs.map((port, i) => ({ port, label: `m${i}` })),
      { record: (layout) => recorded.push(layout.map((e) => e.bytes)) },
    );
    await call.write(linear, 2 * MiB, pattern(MiB, 3));
    expect(linear.resizeProblem(5 * MiB)).toBeNull();
    expect(await resize(linear, 5 * MiB)).toBe(0);
    expect(linear.size).toBe(5 * MiB);
    expect(legs[1]!.size).toBe(3 * MiB);
    expect(recorded).toEqual([[2 * MiB, 3 * MiB]]);
    await call.write(linear, 4 * MiB, pattern(MiB, 9));
    expect(Buffer.compare(await readAt(legs[1]!, 2 * MiB, MiB), pattern(MiB, 9))).toBe(0);
    expect(Buffer.compare(await readAt(linear, 2 * MiB, MiB), pattern(MiB, 3))).toBe(0);
  });

  test("shrinking, a size not in whole blocks and a last leg that cannot grow are refused with the reason", async () => {
    const linear = new LinearPort([
      { port: memory(MiB), label: "m0" },
      { port: memory(MiB), label: "m1" },
    ]);
    expect(linear.resizeProblem(MiB)).toBe("a linear node does not shrink (it is 2 MiB; 1 MiB asked)");
    expect(linear.resizeProblem(2 * MiB + 100)).toBe("a linear node grows by whole 4096-byte blocks: 2097252 bytes is not a multiple");
    expect(await resize(linear, MiB)).toBe(Errno.ENOTSUP);
    const fixed = memory(MiB);
    const noGrow: StoragePort = Object.assign(Object.create(fixed) as StoragePort, { resize: undefined });
    const stuck = new LinearPort([
      { port: memory(MiB), label: "m0" },
      { port: noGrow, label: "dst://b/disk" },
    ]);
    expect(stuck.resizeProblem(3 * MiB)).toBe('its last leg dst://b/disk is 1 MiB and cannot grow to 2 MiB; append a leg instead (docs/tree.md "Growing a linear export")');
    expect(await resize(stuck, 3 * MiB)).toBe(Errno.ENOSPC);
    expect(stuck.size).toBe(2 * MiB);
  });

  test("a record that cannot be written refuses the resize and the old size is served", async () => {
    const linear = new LinearPort([{ port: memory(MiB), label: "m0" }], {
      record: () => {
        throw new Error("read-only file system");
      },
    });
    expect(await resize(linear, 2 * MiB)).toBe(Errno.EIO);
    expect(linear.size).toBe(MiB);
  });

  test("a mirror of linear nodes over files grows through their last legs; reopened with the record, it keeps the size", async () => {
    const dir = join(scratch.path, "mirror-state");
    const tree: TreeNodeSpec = {
      kind: "mirror",
      readPolicy: "round-robin",
      assumeClean: true,
      legs: [0, 1].map((side) => ({
        node: { kind: "linear", legs: [fileLeg(`ml${side}a`, 3 * MiB), fileLeg(`ml${side}b`, 2 * MiB)] } as TreeNodeSpec,
        writeMostly: false,
        label: `linear ${side}`,
      })),
    };
    const port = await openTree(tree, { log: quietLog().log, lock: true, layout: LayoutBook.open(dir, "m") });
    try {
      expect(port.size).toBe(4 * MiB); // 5 MiB less the mirror's 1 MiB metadata area
      expect(port.resizeProblem?.(6 * MiB)).toBeNull();
      expect(await resize(port, 6 * MiB)).toBe(0);
      expect(port.size).toBe(6 * MiB);
      await call.write(port, 5 * MiB, pattern(MiB, 5));
      await call.flush(port);
    } finally {
      await port.close();
    }
    const record = JSON.parse(readFileSync(join(dir, "layout", "m.json"), "utf8"));
    expect(record.nodes["0"].legs.map((e: { bytes: number }) => e.bytes)).toEqual([3 * MiB, 4 * MiB]);
    expect(record.nodes["1"].legs.map((e: { bytes: number }) => e.bytes)).toEqual([3 * MiB, 4 * MiB]);
    const again = await openTree(tree, { log: quietLog().log, lock: true, layout: LayoutBook.open(dir, "m") });
    try {
      expect(again.size).toBe(6 * MiB);
      expect(Buffer.compare(await readAt(again, 5 * MiB, MiB), pattern(MiB, 5))).toBe(0);
    } finally {
      await again.close();
    }
  });
});
