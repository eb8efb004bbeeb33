/**
 * `[export.tree]` (config/tree.ts): a readable tree validates into a TreeNodeSpec, remote legs
 * inherit [client], and every mistake is reported with the path of the leg it is in.
 */
import { describe, expect, test } from "bun:test";
import { validateConfig } from "../../../src/config/validate.ts";
import type { TreeNodeSpec } from "../../../src/config/types.ts";

function tree(toml: string, extra = ""): { root?: TreeNodeSpec; issues?: string[] } {
  const raw = Bun.TOML.parse(`${extra}\n[[export]]\nname = "t"\nallow = ["127.0.0.1/32:rw"]\n[export.tree]\n${toml}\n`);
  const result = validateConfig(raw, { baseDir: "/etc/dstd" });
  if ("issues" in result) return { issues: result.issues.map((i) => `${i.path}: ${i.message}`) };
  const backend = result.config.exports[0]!.backend;
  if (backend.kind !== "tree") throw new Error("not a tree");
  return { root: backend.root };
}

describe("[export.tree]", () => {
  test("a mirror of a stripe of remote exports and a write-mostly WAN leg", () => {
    const { root, issues } = tree(
      `read_policy = "least-latency"
mirror = [
  { stripe = ["dst://10.0.0.1/d", "dst+unix:///d?socket=/run/b.sock"], chunk = "256KiB" },
  { url = "dst://wan.example:10810/d", write_mostly = true, deadline = "10m", key_file = "wan.key", name = "wan" },
]`,
      `[client]\nkey_file = "/etc/dstd/node.key"\ndeadline = "30s"`,
    );
    expect(issues).toBeUndefined();
    if (root?.kind !== "mirror") throw new Error("expected a mirror");
    expect(root.readPolicy).toBe("least-latency");
    expect(root.assumeClean).toBe(false);
    const [stripe, wan] = root.legs;
    expect(stripe!.node.kind).toBe("stripe");
    if (stripe!.node.kind !== "stripe") return;
    expect(stripe!.node.chunkBytes).toBe(256 * 1024);
    expect(stripe!.label).toBe("stripe(dst://10.0.0.1:10810/d, dst+unix:///d?socket=/run/b.sock)");
    const first = stripe!.node.legs[0]!.node;
    expect(first.kind === "remote" && [first.keyFile, first.reliability.deadlineMs]).toEqual(["/etc/dstd/node.key", 30_000]); // from [client]
    expect(wan!.writeMostly).toBe(true);
    expect(wan!.label).toBe("wan");
    expect(wan!.node.kind === "remote" && [wan!.node.keyFile, wan!.node.reliability.deadlineMs]).toEqual(["/etc/dstd/wan.key", 600_000]);
  });

  test("string legs: URLs, files (relative to the config), devices; linear and the default stripe chunk", () => {
    const { root } = tree(`linear = ["a.img", "/dev/sdb", { stripe = ["x.img", "y.img"] }, { memory = "1GiB" }, { file = "new.img", size = "10GiB" }]`);
    if (root?.kind !== "linear") throw new Error("expected linear");
    expect(root.legs.map((l) => l.node)).toEqual([
      { kind: "file", path: "/etc/dstd/a.img", sizeBytes: null },
      { kind: "device", path: "/dev/sdb" },
      { kind: "stripe", chunkBytes: 512 * 1024, legs: expect.any(Array) },
      { kind: "memory", sizeBytes: 1024 ** 3 },
      { kind: "file", path: "/etc/dstd/new.img", sizeBytes: 10 * 1024 ** 3 },
    ]);
  });

  test("every mistake is reported with the path of its leg", () => {
    const { issues } = tree(`mirror = [
  "nbd://host/x",
  { linear = [] },
  { stripe = ["a.img"], chunk = "1000" },
  { url = "dst://h/d", size = "1G", chunk = "4KiB", bogus = 1 },
  { file = "a.img", url = "dst://h/d" },
  { linear = ["b.img"], write_mostly = true, read_policy = "fastest" },
  { mirror = [{ file = "c.img", write_mostly = true }] },
]`);
    expect(issues).toEqual([
      `export[0].tree.mirror[0]: "nbd://host/x": a leg is a DST export (dst:// or dst+unix://); NBD servers are not supported as legs`,
      "export[0].tree.mirror[1].linear: expected a non-empty list of legs (URLs, paths or tables), got an empty list",
      `export[0].tree.mirror[2].chunk: "1000" is too small; the minimum is 4 KiB`,
      "export[0].tree.mirror[3].bogus: unknown key 'bogus'",
      "export[0].tree.mirror[3].size: size is only for file nodes, not url",
      "export[0].tree.mirror[3].chunk: chunk is only for stripe nodes, not url",
      "export[0].tree.mirror[4]: set exactly one of url, file, device, memory, rbd, mirror, linear, stripe (got url and file)",
      "export[0].tree.mirror[5].read_policy: read_policy is only for mirror nodes, not linear",
      "export[0].tree.mirror[6].mirror: every leg is write_mostly: at least one must serve reads",
    ]);
  });

  test("the root must be a mapping node; a tree excludes file/device/memory; write_mostly only in a mirror", () => {
    expect(tree(`url = "dst://h/d"`).issues).toEqual([
      "export[0].tree: a tree's root is a mirror, linear or stripe (a single url is an ordinary export: set it in [[export]])",
    ]);
    expect(tree(`linear = [{ file = "a.img", write_mostly = true }]`).issues).toEqual(["export[0].tree.linear[0].write_mostly: write_mostly is only for legs of a mirror"]);
    const raw = Bun.TOML.parse(`[[export]]\nfile = "x.img"\n[export.tree]\nlinear = ["a.img"]\n`);
    const result = validateConfig(raw);
    expect("issues" in result && result.issues.map((i) => i.message)).toEqual(["set exactly one of file, device, memory or tree (got file and tree)"]);
  });

  test("a mirror has at most 8 legs; nesting is bounded", () => {
    const nine = Array.from({ length: 9 }, (_, i) => `"l${i}.img"`).join(", ");
    expect(tree(`mirror = [${nine}]`).issues).toEqual(["export[0].tree.mirror: a mirror has at most 8 legs (got 9)"]);
    let deep = `"leaf.img"`;
    for (let i = 0; i < 9; i++) deep = `{ linear = [${deep}] }`;
    expect(tree(`linear = [${deep}]`).issues?.[0]).toContain("nested more than 8 levels deep");
  });
});
