/**
 * daemon/reload-plan: which units a reload keeps, stops and starts; export grouping by
 * shared listeners; refusals that protect memory exports; address conflicts; key material
 * changes reaching the units that use it.
 */
import { describe, expect, test } from "bun:test";
import { parseConfigText } from "../../src/config/load.ts";
import { canonicalJson, conflicts, diffPlans, planNode } from "../../src/daemon/reload-plan.ts";
import { treeChanges, type TreeChange } from "../../src/daemon/tree-changes.ts";
import { groupExports } from "../../src/daemon/services.ts";

const config = (text: string) => parseConfigText(text, "test.toml");
const plan = (text: string, keyDigest = "k", fileDigest = (_: string) => "f") => planNode(config(text), keyDigest, fileDigest);

const base = `
[[export]]
name = "a"
memory = "1MiB"
listen = "127.0.0.1:7001"
allow = ["127.0.0.1/32:rw"]

[[export]]
name = "b"
file = "/tmp/b.img"
listen = "127.0.0.1:7001"
allow = ["127.0.0.1/32:rw"]

[[export]]
name = "c"
file = "/tmp/c.img"
listen = "127.0.0.1:7002"
allow = ["127.0.0.1/32:rw"]

[[attach]]
url = "dst://127.0.0.1:7002/c"
nbd_listen = "unix:/tmp/c.sock"
`;

describe("groups", () => {
  test("exports sharing a listener form one group, transitively", () => {
    const groups = groupExports(
      config(`
[[export]]
name = "x"
memory = "1MiB"
listen = ["127.0.0.1:1", "127.0.0.1:2"]
[[export]]
name = "y"
memory = "1MiB"
listen = "127.0.0.1:3"
nbd_listen = "127.0.0.1:9"
[[export]]
name = "z"
memory = "1MiB"
listen = "127.0.0.1:2"
nbd_listen = "127.0.0.1:9"
[[export]]
name = "w"
memory = "1MiB"
listen = "127.0.0.1:4"
`).exports,
    );
    expect(groups.map((g) => g.map((e) => e.name))).toEqual([["x", "y", "z"], ["w"]]);
  });

  test("names", () => {
    const p = plan(base);
    expect(p.exportGroups.map((g) => g.name)).toEqual(["export:a+b", "export:c"]);
    expect(p.attachments.map((a) => a.name)).toEqual(["attach:unix:/tmp/c.sock"]);
  });
});

describe("diffPlans", () => {
  test("the same config: everything kept", () => {
    const d = diffPlans(plan(base), plan(base));
    expect(d).toEqual({ keep: ["export:a+b", "export:c", "attach:unix:/tmp/c.sock"], update: [], stop: [], start: [], refusals: [] });
  });

  test("a new export on its own port starts; nothing else is touched", () => {
    const d = diffPlans(plan(base), plan(`${base}\n[[export]]\nname = "d"\nmemory = "1MiB"\nlisten = "127.0.0.1:7003"\n`));
    expect(d.start).toEqual(["export:d"]);
    expect(d.stop).toEqual([]);
    expect(d.keep).toHaveLength(3);
  });

  test("an ACL change updates only its group in place (no restart)", () => {
    const changed = base.replace('listen = "127.0.0.1:7002"\nallow = ["127.0.0.1/32:rw"]', 'listen = "127.0.0.1:7002"\nallow = ["127.0.0.1/32:ro"]');
    const d = diffPlans(plan(base), plan(changed));
    expect(d.update).toEqual(["export:c"]);
    expect(d.stop).toEqual([]);
    expect(d.start).toEqual([]);
    expect(d.keep).toEqual(["export:a+b", "attach:unix:/tmp/c.sock"]);
    expect(d.refusals).toEqual([]);
  });

  test("an ACL change next to a memory export is applied in place: nothing to refuse", () => {
    const changed = base.replace('name = "b"\nfile = "/tmp/b.img"\nlisten = "127.0.0.1:7001"\nallow = ["127.0.0.1/32:rw"]', 'name = "b"\nfile = "/tmp/b.img"\nlisten = "127.0.0.1:7001"\nallow = ["127.0.0.1/32:ro"]');
    const d = diffPlans(plan(base), plan(changed));
    expect(d.update).toEqual(["export:a+b"]);
    expect(d.refusals).toEqual([]);
  });

  test("restarting a group would empty a memory export it keeps: refused", () => {
    const changed = base.replace('name = "b"\nfile = "/tmp/b.img"', 'name = "b"\nfile = "/tmp/b2.img"');
    const d = diffPlans(plan(base), plan(changed));
    expect(d.refusals).toHaveLength(1);
    expect(d.refusals[0]).toContain("memory export 'a' would be restarted");
  });

  test("a memory export whose size changes (a new disk on purpose) is not refused", () => {
    const changed = base.replace('memory = "1MiB"', 'memory = "2MiB"');
    expect(diffPlans(plan(base), plan(changed)).refusals).toEqual([]);
  });

  test("removing an export stops its group; removing an attachment stops it", () => {
    const without = base.replace(/\[\[attach\]\][\s\S]*$/, "");
    const d = diffPlans(plan(base), plan(without));
    expect(d.stop).toEqual(["attach:unix:/tmp/c.sock"]);
    expect(d.start).toEqual([]);
  });

  test("a changed kernel attachment is refused (its device would be detached under its users); removing it detaches it", () => {
    const kernel = `${base}\n[[attach]]\nurl = "dst://127.0.0.1:7002/c"\ndevice = "/dev/nbd3"\n`;
    const changed = kernel.replace('device = "/dev/nbd3"', 'device = "/dev/nbd3"\nresend_interval = "2s"');
    const d = diffPlans(plan(kernel), plan(changed));
    expect(d.stop).toEqual(["attach:/dev/nbd3"]);
    expect(d.refusals).toHaveLength(1);
    expect(d.refusals[0]).toContain("kernel attachment attach:/dev/nbd3 would be detached and attached again");
    expect(d.refusals[0]).toContain("SIGUSR2");
    // Its key file's contents changed: the same.
    const keyed = kernel.replace('device = "/dev/nbd3"', 'device = "/dev/nbd3"\nkey_file = "/etc/k"');
    expect(diffPlans(plan(keyed, "k", () => "old"), plan(keyed, "k", () => "new")).refusals).toHaveLength(1);
    // Removed on purpose: detached, not refused. The nbd_listen attachment changes freely.
    expect(diffPlans(plan(kernel), plan(base)).refusals).toEqual([]);
    const listenChanged = kernel.replace('nbd_listen = "unix:/tmp/c.sock"', 'nbd_listen = "unix:/tmp/c.sock"\nresend_interval = "2s"');
    expect(diffPlans(plan(kernel), plan(listenChanged)).refusals).toEqual([]);
  });

  test("new contents of a replication or remote-leg key file restart that export group (nothing running reads them again)", () => {
    const replicated = `${base}\n[[export]]\nname = "s"\nfile = "/tmp/s.img"\nlisten = "127.0.0.1:7005"\nallow = ["127.0.0.1/32:rw"]\n[export.replication]\nrole = "secondary"\nlog_dir = "/tmp/s.log"\npeer = "dst://127.0.0.1:7006/s"\nkey_file = "/etc/site-b.key"\n`;
    const digest = (version: string) => (file: string) => (file === "/etc/site-b.key" ? version : "f");
    const d = diffPlans(plan(replicated, "k", digest("old")), plan(replicated, "k", digest("new")));
    expect(d.stop).toEqual(["export:s"]);
    expect(d.start).toEqual(["export:s"]);
    expect(d.update).toEqual([]);
    expect(d.keep).toHaveLength(3);
    // The same contents: kept.
    expect(diffPlans(plan(replicated, "k", digest("old")), plan(replicated, "k", digest("old"))).keep).toHaveLength(4);
    const remote = base.replace(
      'name = "c"\nfile = "/tmp/c.img"\nlisten = "127.0.0.1:7002"\nallow = ["127.0.0.1/32:rw"]',
      'name = "c"\nlisten = "127.0.0.1:7002"\nallow = ["127.0.0.1/32:rw"]\n[export.tree]\nmirror = [{ file = "/tmp/c.img", size = "4MiB" }, { url = "dst://10.0.0.2/c", key_file = "/etc/leg.key" }]\nassume_clean = true',
    );
    expect(remote).not.toBe(base);
    const legDigest = (version: string) => (file: string) => (file === "/etc/leg.key" ? version : "f");
    expect(diffPlans(plan(remote, "k", legDigest("old")), plan(remote, "k", legDigest("new"))).stop).toEqual(["export:c"]);
  });

  test("new key material updates export groups in place; an attachment's key file restarts only that attachment", () => {
    const d = diffPlans(plan(base, "k1"), plan(base, "k2"));
    expect(d.update).toEqual(["export:a+b", "export:c"]);
    expect(d.stop).toEqual([]);
    expect(d.refusals).toEqual([]);
    const withKey = base.replace('nbd_listen = "unix:/tmp/c.sock"', 'nbd_listen = "unix:/tmp/c.sock"\nkey_file = "/etc/k"');
    const e = diffPlans(plan(withKey, "k", () => "old"), plan(withKey, "k", () => "new"));
    expect(e.stop).toEqual(["attach:unix:/tmp/c.sock"]);
  });
});

describe("conflicts", () => {
  test("two attachments on one device are one attachment (listen addresses: config/listen-uses.ts)", () => {
    const problems = conflicts(
      config(`
[[attach]]
url = "dst://h/b"
device = "/dev/nbd1"
[[attach]]
url = "dst://h/c"
device = "/dev/nbd1"
`),
    );
    expect(problems).toEqual(["2 [[attach]] entries are the same attachment (attach:/dev/nbd1): give each its own device or nbd_listen"]);
  });

  test("canonicalJson ignores key order and shows allow rules as written", () => {
    expect(canonicalJson({ b: 1, a: [{ d: 1, c: new Uint8Array([255]) }] })).toBe('{"a":[{"c":"ff","d":1}],"b":1}');
    expect(canonicalJson(config(base).exports[0]!.allow)).toBe('["127.0.0.1/32:rw"]');
  });
});

/** A tree export "t" with this root (legs as TOML values) in one group with a memory export "m". */
const treeGroup = (root: string, legs: string[], extra = "") => `
[[export]]
name = "t"
listen = "127.0.0.1:7003"
allow = ["127.0.0.1/32:rw"]
[export.tree]
${root} = [${legs.join(", ")}]
${extra}
[[export]]
name = "m"
memory = "1MiB"
listen = "127.0.0.1:7003"
allow = ["127.0.0.1/32:rw"]
`;

describe("legs appended to a linear tree (daemon/tree-changes.ts)", () => {
  const tree = (root: string, legs: string[], extra = "") => treeGroup(root, legs.map((l) => JSON.stringify(l)), extra);
  const group = (text: string) => config(text).exports;

  test("legs appended at the end of a linear root: the group is updated in place, the new legs named", () => {
    const before = tree("linear", ["/tmp/l0.img", "/tmp/l1.img"]);
    const after = tree("linear", ["/tmp/l0.img", "/tmp/l1.img", "/tmp/l2.img", "dst://127.0.0.1:7100/x"]);
    const d = diffPlans(plan(before), plan(after));
    expect(d).toEqual({ keep: [], update: ["export:t+m"], stop: [], start: [], refusals: [] });
    const growth = treeChanges(group(before), group(after))!;
    expect([...growth.keys()]).toEqual(["t"]);
    const change = growth.get("t") as Extract<TreeChange, { kind: "linear" }>;
    expect(change.kind).toBe("linear");
    expect(change.append.map((leg) => leg.label)).toEqual(["/tmp/l2.img", "dst://127.0.0.1:7100/x"]);
    // With an ACL change in the same reload: still in place.
    const both = after.replace('allow = ["127.0.0.1/32:rw"]\n[export.tree]', 'allow = ["127.0.0.1/32:ro"]\n[export.tree]');
    expect(diffPlans(plan(before), plan(both)).update).toEqual(["export:t+m"]);
    // Nothing appended, nothing else changed: an empty growth (policy-only updates use it).
    expect(treeChanges(group(before), group(before))).toEqual(new Map());
  });

  test("anything else restarts the group (and is refused here: it holds a memory export)", () => {
    const before = tree("linear", ["/tmp/l0.img", "/tmp/l1.img"]);
    for (const after of [
      tree("linear", ["/tmp/l0.img"]), // a leg removed: the export would shrink
      tree("linear", ["/tmp/new.img", "/tmp/l0.img", "/tmp/l1.img"]), // inserted in front: every byte moves
      tree("linear", ["/tmp/l0.img", "/tmp/other.img", "/tmp/l2.img"]), // a leg replaced
      tree("stripe", ["/tmp/l0.img", "/tmp/l1.img", "/tmp/l2.img"]), // a stripe's layout depends on its leg count
      tree("mirror", ["/tmp/l0.img", "/tmp/l1.img", "/tmp/l2.img"]), // another kind of root
      tree("linear", ["/tmp/l0.img", "/tmp/l1.img", "/tmp/l2.img"]).replace('name = "t"\n', 'name = "t"\nread_only = true\n'), // appended, and more
    ]) {
      expect(treeChanges(group(before), group(after))).toBeNull();
      const d = diffPlans(plan(before), plan(after));
      expect(d.update).toEqual([]);
      expect(d.stop).toEqual(["export:t+m"]);
      expect(d.refusals[0]).toContain("memory export 'm' would be restarted");
    }
  });

  test("only the root grows: a leg appended to a linear inside a mirror is not a growth (the leg is replaced whole, or the group restarts)", () => {
    const nested = (legs: string[]) => `
[[export]]
name = "t"
listen = "127.0.0.1:7003"
allow = ["127.0.0.1/32:rw"]
[export.tree]
mirror = [{ linear = [${legs.map((l) => JSON.stringify(l)).join(", ")}] }, "/tmp/b.img"]
`;
    const change = treeChanges(group(nested(["/tmp/a0.img"])), group(nested(["/tmp/a0.img", "/tmp/a1.img"])))?.get("t");
    expect(change).toEqual({ kind: "mirror", legs: [{ index: 0, leg: expect.objectContaining({ label: "linear(/tmp/a0.img, /tmp/a1.img)" }), nested: null }] });
    const inLinear = (legs: string[]) => nested(legs).replace("mirror = [{ linear", "linear = [{ linear");
    expect(treeChanges(group(inLinear(["/tmp/a0.img"])), group(inLinear(["/tmp/a0.img", "/tmp/a1.img"])))).toBeNull();
    expect(diffPlans(plan(inLinear(["/tmp/a0.img"])), plan(inLinear(["/tmp/a0.img", "/tmp/a1.img"]))).stop).toEqual(["export:t"]);
  });
});

/** A tree change as lines: "1:/tmp/c.img" (mirror leg 1 replaced or added), "0/1:…" (inside leg 0), "+…" (appended), "1:… | nested 1/0:…" (a subtree leg, both readings). */
function changeLines(change: TreeChange | undefined, prefix = ""): string[] | undefined {
  if (change === undefined) return undefined;
  if (change.kind === "mirror") {
    return change.legs.map(({ index, leg, nested }) => `${prefix}${index}:${leg.label}${nested === null ? "" : ` | nested ${changeLines(nested, `${prefix}${index}/`)!.join(", ")}`}`);
  }
  const inside = change.inside.flatMap(({ index, change: c }) => changeLines(c, `${prefix}${index}/`)!);
  return change.kind === "linear" ? [...inside, ...change.append.map((leg) => `${prefix}+${leg.label}`)] : inside;
}

describe("mirror legs replaced or added at a mirror root (daemon/tree-changes.ts)", () => {
  const mirror = (legs: string[], extra = "") => treeGroup("mirror", legs, extra);
  const group = (text: string) => config(text).exports;
  const changed = (before: string, after: string) => {
    const changes = treeChanges(group(before), group(after));
    return changes === null ? null : changeLines(changes.get("t"));
  };
  const before = mirror(['"/tmp/a.img"', '"/tmp/b.img"']);

  test("a leg replaced by another leaf or a subtree, and legs added at the end: the group is updated in place", () => {
    expect(changed(before, mirror(['"/tmp/a.img"', '"/tmp/c.img"']))).toEqual(["1:/tmp/c.img"]);
    expect(changed(before, mirror(['"/tmp/a.img"', '"/tmp/b.img"', '"dst://127.0.0.1:7100/x"']))).toEqual(["2:dst://127.0.0.1:7100/x"]);
    expect(changed(before, mirror(['"/tmp/a.img"', '{ file = "/tmp/c.img", write_mostly = true }']))).toEqual(["1:/tmp/c.img"]); // a new disk may be write-mostly
    expect(changed(before, mirror(['"/tmp/a.img"', '"/tmp/c.img"', '{ stripe = ["/tmp/d.img", "/tmp/e.img"] }']))).toEqual(["1:/tmp/c.img", "2:stripe(/tmp/d.img, /tmp/e.img)"]);
    // A subtree in place of a disk, even one reusing it: the leg it replaces must be out (then
    // closed), and a disk still open in the running tree is refused at open (its flock).
    expect(changed(before, mirror(['"/tmp/a.img"', '{ linear = ["/tmp/b.img", "/tmp/c.img"] }']))).toEqual(["1:linear(/tmp/b.img, /tmp/c.img)"]);
    expect(diffPlans(plan(before), plan(mirror(['"/tmp/a.img"', '"/tmp/c.img"'])))).toEqual({ keep: [], update: ["export:t+m"], stop: [], start: [], refusals: [] });
    expect(treeChanges(group(before), group(before))).toEqual(new Map());
  });

  test("anything else restarts the group (refused here: it holds a memory export)", () => {
    for (const after of [
      mirror(['"/tmp/a.img"']), // a leg removed
      mirror(['"/tmp/a.img"', '{ file = "/tmp/b.img", write_mostly = true }']), // the same disk, another setting
      mirror(['"/tmp/a.img"', '{ file = "/tmp/b.img", name = "bee" }']), // the same disk, another label
      mirror(['"/tmp/a.img"', '"/tmp/b.img"'], 'read_policy = "least-latency"'), // the mirror's own settings
    ]) {
      expect(treeChanges(group(before), group(after))).toBeNull();
      expect(diffPlans(plan(before), plan(after)).stop).toEqual(["export:t+m"]);
    }
  });
});

describe("mirror legs replaced or added anywhere in the tree (daemon/tree-changes.ts)", () => {
  const group = (text: string) => config(text).exports;
  const changed = (root: string, before: string[], after: string[]) => {
    const changes = treeChanges(group(treeGroup(root, before)), group(treeGroup(root, after)));
    return changes === null ? null : changeLines(changes.get("t"));
  };
  const site = (name: string, legs: string[]) => `{ name = "${name}", mirror = [${legs.map((l) => JSON.stringify(l)).join(", ")}] }`;

  test("inside a mirror under a linear or stripe: the mirror's leg replaced or added, the path named", () => {
    expect(changed("linear", [site("s0", ["/tmp/a.img", "/tmp/b.img"]), site("s1", ["/tmp/c.img", "/tmp/d.img"])], [site("s0", ["/tmp/a.img", "/tmp/b.img"]), site("s1", ["/tmp/c.img", "/tmp/e.img"])])).toEqual(["1/1:/tmp/e.img"]);
    expect(changed("stripe", [site("s0", ["/tmp/a.img", "/tmp/b.img"]), site("s1", ["/tmp/c.img", "/tmp/d.img"])], [site("s0", ["/tmp/a.img", "/tmp/b.img", "/tmp/x.img"]), site("s1", ["/tmp/c.img", "/tmp/e.img"])])).toEqual(["0/2:/tmp/x.img", "1/1:/tmp/e.img"]);
    // Appended to the root linear and changed inside a kept leg, in one reload.
    expect(changed("linear", [site("s0", ["/tmp/a.img", "/tmp/b.img"])], [site("s0", ["/tmp/a.img", "/tmp/e.img"]), '"/tmp/f.img"'])).toEqual(["0/1:/tmp/e.img", "+/tmp/f.img"]);
  });

  test("a mirror inside a mirror: both readings, the leg replaced whole or the change inside it", () => {
    const inner = (legs: string[]) => `{ mirror = [${legs.map((l) => JSON.stringify(l)).join(", ")}] }`;
    expect(changed("mirror", [inner(["/tmp/a.img", "/tmp/b.img"]), '"/tmp/c.img"'], [inner(["/tmp/a.img", "/tmp/d.img"]), '"/tmp/c.img"'])).toEqual(["0:mirror(/tmp/a.img, /tmp/d.img) | nested 0/1:/tmp/d.img"]);
    // A stripe leg cannot change inside (its legs hold data nothing else has): replaced whole only.
    expect(changed("mirror", ['{ stripe = ["/tmp/a.img", "/tmp/b.img"] }', '"/tmp/c.img"'], ['{ stripe = ["/tmp/a.img", "/tmp/d.img"] }', '"/tmp/c.img"'])).toEqual(["0:stripe(/tmp/a.img, /tmp/d.img)"]);
  });

  test("restart: a leg of a nested linear or stripe changed, a nested linear grown, a stripe's shape changed", () => {
    expect(changed("linear", [site("s0", ["/tmp/a.img", "/tmp/b.img"]), '"/tmp/c.img"'], [site("s0", ["/tmp/a.img", "/tmp/b.img"]), '"/tmp/d.img"'])).toBeNull();
    expect(changed("mirror", ['{ linear = ["/tmp/a.img"] }', '"/tmp/c.img"'], ['{ linear = ["/tmp/a.img", "/tmp/b.img"] }', '"/tmp/c.img"'])).toEqual(["0:linear(/tmp/a.img, /tmp/b.img)"]);
    expect(changed("stripe", [site("s0", ["/tmp/a.img", "/tmp/b.img"]), site("s1", ["/tmp/c.img", "/tmp/d.img"])], [site("s0", ["/tmp/a.img", "/tmp/b.img"])])).toBeNull();
    expect(changed("linear", [site("s0", ["/tmp/a.img", "/tmp/b.img"])], [site("s0", ["/tmp/a.img", "/tmp/b.img"]).replace("mirror = ", 'read_policy = "least-latency", mirror = ')])).toBeNull();
    expect(diffPlans(plan(treeGroup("linear", [site("s0", ["/tmp/a.img", "/tmp/b.img"])])), plan(treeGroup("linear", [site("s0", ["/tmp/a.img", "/tmp/e.img"])]))).update).toEqual(["export:t+m"]);
  });
});
