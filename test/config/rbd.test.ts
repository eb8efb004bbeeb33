/**
 * The Ceph RBD keys of an [[export]] (config/rbd.ts): the image spec, the ceph_* keys,
 * snapshot → read-only, and the mistakes reported with their path.
 */
import { describe, expect, test } from "bun:test";
import { formatIssues } from "../../src/config/load.ts";
import { parseRbdImageSpec } from "../../src/config/rbd.ts";
import { validateConfig } from "../../src/config/validate.ts";

function check(exportTable: Record<string, unknown>) {
  return validateConfig({ export: [{ allow: ["127.0.0.1/32:rw"], ...exportTable }] }, { baseDir: "/etc/dstd" });
}

function issues(exportTable: Record<string, unknown>): string {
  const result = check(exportTable);
  return "issues" in result ? formatIssues(result.issues, "t.toml") : "";
}

describe("parseRbdImageSpec", () => {
  test("POOL/IMAGE, POOL/NAMESPACE/IMAGE, with or without @SNAP", () => {
    expect(parseRbdImageSpec("rbd/vm1")).toEqual({ pool: "rbd", namespace: null, image: "vm1", snapshot: null });
    expect(parseRbdImageSpec("rbd/ns/vm1@daily")).toEqual({ pool: "rbd", namespace: "ns", image: "vm1", snapshot: "daily" });
  });

  test("malformed specs are refused naming the forms", () => {
    for (const bad of ["vm1", "rbd/", "/vm1", "a/b/c/d", "rbd/vm1@", "rbd/vm1@a@b", "rbd//vm1"]) {
      expect(parseRbdImageSpec(bad)).toMatch(/is not an RBD image: write POOL\/IMAGE/);
    }
    expect(parseRbdImageSpec("rbd/v\u0001")).toMatch(/control characters/);
    expect(parseRbdImageSpec(`rbd/${"x".repeat(300)}`)).toMatch(/longer than 255 bytes/);
  });
});

describe("[[export]] rbd", () => {
  test("resolves the image and the ceph keys; relative paths against the config folder", () => {
    const result = check({ rbd: "rbd/vm1", ceph_conf: "ceph.conf", ceph_id: "dstd", ceph_keyring: "/etc/ceph/k" });
    if ("issues" in result) throw new Error(formatIssues(result.issues, "t.toml"));
    const e = result.config.exports[0]!;
    expect(e.backend).toEqual({ kind: "rbd", rbd: { pool: "rbd", namespace: null, image: "vm1", snapshot: null, conf: "/etc/dstd/ceph.conf", id: "dstd", keyring: "/etc/ceph/k" } });
    expect(e.readOnly).toBe(false);
  });

  test("a snapshot export is read-only; an explicit read_only = false on it is refused, not overridden", () => {
    for (const readOnly of [undefined, true]) {
      const result = check({ rbd: "rbd/vm1@s1", read_only: readOnly });
      if ("issues" in result) throw new Error(formatIssues(result.issues, "t.toml"));
      expect(result.config.exports[0]!.readOnly).toBe(true);
    }
    expect(issues({ rbd: "rbd/vm1@s1", read_only: false })).toBe(
      "t.toml: export[0].read_only: read_only = false, but the RBD snapshot rbd/vm1@s1 cannot be written: leave read_only out or set it to true (a snapshot export is read-only; docs/rbd.md)",
    );
    expect(issues({ rbd: "rbd/vm1", read_only: false })).toBe("");
  });

  test("mistakes are reported with their key path", () => {
    expect(issues({ rbd: "vm1" })).toContain('export[0].rbd: "vm1" is not an RBD image');
    expect(issues({ rbd: "rbd/vm1", size: "1GiB" })).toContain("export[0].size: size is only for file exports; an RBD image has its own size");
    expect(issues({ rbd: "rbd/vm1", file: "/x" })).toContain("set exactly one of file, device, memory or rbd (got file and rbd)");
    expect(issues({ rbd: "rbd/vm1", ceph_id: "client.admin" })).toContain('export[0].ceph_id: "client.admin": give the client id without "client."');
    expect(issues({ memory: "1MiB", ceph_conf: "/etc/ceph/ceph.conf" })).toContain("export[0].ceph_conf: ceph_conf is only for rbd exports");
    expect(issues({ rbd: 5 })).toContain("export[0].rbd:");
  });
});

describe("rbd legs of a tree", () => {
  const conf = { conf: "/etc/dstd/ceph.conf", id: "dstd", keyring: null };

  test("`rbd:POOL/IMAGE` strings and rbd tables are legs; they inherit the export's ceph_* keys unless they set their own", () => {
    const result = check({
      ceph_conf: "ceph.conf",
      ceph_id: "dstd",
      tree: { mirror: ["rbd:rbd/vm1", { rbd: "rbd/ns/vm2@s1", ceph_conf: "/other/ceph.conf" }, "/data/leg.img"] },
    });
    if ("issues" in result) throw new Error(formatIssues(result.issues, "t.toml"));
    const backend = result.config.exports[0]!.backend;
    if (backend.kind !== "tree" || backend.root.kind !== "mirror") throw new Error(`not a mirror: ${JSON.stringify(backend)}`);
    const [a, b, c] = backend.root.legs;
    expect(a!.node).toEqual({ kind: "rbd", rbd: { pool: "rbd", namespace: null, image: "vm1", snapshot: null, ...conf } });
    expect(a!.label).toBe("rbd:rbd/vm1");
    expect(b!.node).toEqual({ kind: "rbd", rbd: { pool: "rbd", namespace: "ns", image: "vm2", snapshot: "s1", ...conf, conf: "/other/ceph.conf" } });
    expect(b!.label).toBe("rbd:rbd/ns/vm2@s1");
    expect(c!.node).toEqual({ kind: "file", path: "/data/leg.img", sizeBytes: null });
  });

  test("mistakes in rbd legs are reported with their path", () => {
    expect(issues({ tree: { mirror: ["rbd:vm1", "/x"] } })).toContain('export[0].tree.mirror[0]: "vm1" is not an RBD image');
    expect(issues({ tree: { stripe: [{ rbd: "rbd/a", chunk: "1MiB" }, "/x"] } })).toContain("export[0].tree.stripe[0].chunk: chunk is only for stripe nodes, not rbd");
    expect(issues({ tree: { linear: [{ file: "/x", ceph_id: "a" }, "/y"] } })).toContain("export[0].tree.linear[0].ceph_id: ceph_id is only for rbd nodes, not file");
    expect(issues({ ceph_id: "client.x", tree: { mirror: ["rbd:rbd/a", "/y"] } })).toContain('export[0].ceph_id: "client.x": give the client id without "client."');
  });
});
