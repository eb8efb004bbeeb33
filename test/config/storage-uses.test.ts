/**
 * One storage named twice in a configuration (config/storage-uses.ts): a file, device, RBD
 * image or remote export used twice, at least once for writing — two exports, two legs of one
 * tree, an export and a leg of another — is refused when the config is read, naming both
 * places; read-only uses may share, and so may an RBD snapshot with its image.
 */
import { describe, expect, test } from "bun:test";
import { Issues } from "../../src/config/fields.ts";
import { checkStorageAliases } from "../../src/config/storage-uses.ts";
import { validateConfig } from "../../src/config/validate.ts";

function check(toml: string): string[] {
  const result = validateConfig(Bun.TOML.parse(toml), { baseDir: "/srv" });
  return "issues" in result ? result.issues.map((i) => `${i.path}: ${i.message}`) : [];
}

/** checkStorageAliases with what each path is on a made-up machine (`same`: path → what it is). */
function aliases(toml: string, same: Record<string, string>): string[] {
  const result = validateConfig(Bun.TOML.parse(toml), { baseDir: "/srv" });
  if (!("config" in result)) throw new Error(JSON.stringify(result.issues));
  const issues = new Issues(null);
  checkStorageAliases(result.config.exports, (path) => same[path] ?? null, issues);
  return issues.list.map((i) => `${i.path}: ${i.message}`);
}

const exp = (name: string, body: string) => `[[export]]\nname = "${name}"\nallow = ["127.0.0.1/32:rw"]\n${body}\n`;
const WHY = "one storage used twice, at least once for writing, would be corrupted (or the second use refused at start); give each use its own";

describe("one storage used twice", () => {
  test("two legs of one mirror on one file (relative and absolute names of it)", () => {
    expect(check(exp("m", `[export.tree]\nmirror = ["a.img", { file = "/srv/a.img", size = "1GiB" }]`))).toEqual([
      `export[0].tree.mirror[1].file: /srv/a.img is also used at export[0].tree.mirror[0].file: ${WHY}`,
    ]);
  });

  test("a leg deep in one export's tree and another export's file", () => {
    const issues = check(exp("t", `[export.tree]\nmirror = [{ stripe = ["/srv/s0.img", "/srv/s1.img"] }, "/srv/m1.img"]`) + exp("f", `file = "/srv/s1.img"`));
    expect(issues).toEqual([`export[1].file: /srv/s1.img is also used by export 't' at export[0].tree.mirror[0].stripe[1].file: ${WHY}`]);
  });

  test("read-only uses share; a read-only use next to a writing one does not", () => {
    const ro = (name: string) => exp(name, `file = "/srv/a.img"\nread_only = true`);
    expect(check(ro("a") + ro("b"))).toEqual([]);
    expect(check(ro("a") + exp("w", `file = "/srv/a.img"`))).toEqual([`export[1].file: /srv/a.img is also used by export 'a' at export[0].file: ${WHY}`]);
    // A tree opens its legs writable even for a read-only export (a mirror writes its metadata).
    expect(check(ro("a") + exp("t", `read_only = true\n[export.tree]\nmirror = ["/srv/a.img", "/srv/b.img"]`))).toEqual([
      `export[1].tree.mirror[0].file: /srv/a.img is also used by export 'a' at export[0].file: ${WHY}`,
    ]);
  });

  test("devices and remote exports too (host names compare without case); memory disks never collide", () => {
    expect(check(exp("d", `device = "/dev/sdb"`) + exp("e", `[export.tree]\nlinear = ["/dev/sdc", "/dev/sdb"]`))).toEqual([
      `export[1].tree.linear[1].device: /dev/sdb is also used by export 'd' at export[0].device: ${WHY}`,
    ]);
    expect(check(exp("r", `[export.tree]\nmirror = ["dst://Leg.example/d", "dst://leg.example:10810/d"]`))).toEqual([
      `export[0].tree.mirror[1]: remote export dst://leg.example:10810/d is also used at export[0].tree.mirror[0]: ${WHY}`,
    ]);
    expect(check(exp("r", `[export.tree]\nmirror = ["dst://leg.example/d", "dst://leg.example/e", "dst+unix:///d?socket=/run/a.sock"]`))).toEqual([]);
    expect(check(exp("a", `memory = "1GiB"`) + exp("b", `memory = "1GiB"`))).toEqual([]);
  });

  test("one replication log_dir for two exports, even read-only ones (a secondary writes its copy there)", () => {
    const repl = (name: string, dirName: string, more = "") => exp(name, `file = "/srv/${name}.img"\n${more}\n[export.replication]\nlog_dir = "${dirName}"`);
    expect(check(repl("a", "/var/lib/dstd/log") + repl("b", "/var/lib/dstd/log", "read_only = true"))).toEqual([
      `export[1].replication.log_dir: log_dir /var/lib/dstd/log is also used by export 'a' at export[0].replication.log_dir: ${WHY}`,
    ]);
    expect(check(repl("a", "/var/lib/dstd/log-a") + repl("b", "/var/lib/dstd/log-b"))).toEqual([]);
  });

  test("an RBD image twice is refused; its snapshot beside it is not", () => {
    const rbd = (name: string, spec: string) => exp(name, `rbd = "${spec}"`);
    expect(check(rbd("a", "pool/vm1") + rbd("b", "pool/vm1"))).toEqual([`export[1].rbd: rbd image pool/vm1 is also used by export 'a' at export[0].rbd: ${WHY}`]);
    expect(check(rbd("a", "pool/vm1") + rbd("b", "pool/vm1@monday") + rbd("c", "pool/vm1@monday"))).toEqual([]);
  });
});

describe("a leg that is an export of the same configuration", () => {
  const own = (leg: string, listen = "127.0.0.1:10810") => check(exp("m", `listen = "${listen}"\n[export.tree]\nmirror = ["/srv/a.img", ${leg}]`) + exp("d", `listen = "${listen}"\nfile = "/srv/d.img"`));
  const WHY_OWN = "a leg must be storage of its own (a tree reaching its own node would write into itself, or write one disk twice); name the file or device as the leg, or another node's export";

  test("its own export, or another export of the node, by its address or by loopback where it listens on every address", () => {
    expect(own(`{ linear = ["dst://127.0.0.1:10810/m", "/srv/c.img"] }`)).toEqual([
      `export[0].tree.mirror[1].linear[0]: dst://127.0.0.1:10810/m is export 'm' of this configuration (it listens on 127.0.0.1:10810): ${WHY_OWN}`,
    ]);
    expect(own(`"dst://localhost:10810/d"`, "0.0.0.0:10810")).toEqual([
      `export[0].tree.mirror[1]: dst://localhost:10810/d is export 'd' of this configuration (it listens on 0.0.0.0:10810): ${WHY_OWN}`,
    ]);
    expect(own(`"dst+unix:///m?socket=/run/dstd.sock"`, "unix:/run/dstd.sock")).toEqual([
      `export[0].tree.mirror[1]: dst+unix:///m?socket=/run/dstd.sock is export 'm' of this configuration (it listens on unix:/run/dstd.sock): ${WHY_OWN}`,
    ]);
  });

  test("a secondary whose peer is itself", () => {
    const secondary = (peer: string) => exp("a", `listen = "0.0.0.0:10810"\nfile = "/srv/a.img"\n[export.replication]\nlog_dir = "/srv/log"\nrole = "secondary"\npeer = "${peer}"`);
    expect(check(secondary("dst://127.0.0.1:10810/a"))).toEqual(["export[0].replication.peer: dst://127.0.0.1:10810/a is this export itself: a secondary's peer is its primary, on another node"]);
    expect(check(secondary("dst://10.0.0.2:10810/a"))).toEqual([]);
  });

  test("another port, another export name, or another host is another node's export", () => {
    expect(own(`"dst://127.0.0.1:10811/m"`)).toEqual([]);
    expect(own(`"dst://127.0.0.1:10810/other"`)).toEqual([]);
    expect(own(`"dst://10.0.0.2:10810/m"`, "0.0.0.0:10810")).toEqual([]);
  });

  test("one storage under two names (what check-config finds on the machine): refused as one name twice", () => {
    const same = { "/srv/a.img": "inode:1", "/srv/link.img": "inode:1", "/dev/sdb": "block:2064", "/dev/disk/by-id/wwn-1": "block:2064", "/srv/log": "inode:7", "/srv/log-link": "inode:7" };
    expect(aliases(exp("a", `file = "/srv/a.img"`) + exp("b", `[export.tree]\nmirror = ["/srv/b.img", "link.img"]`), same)).toEqual([
      `export[1].tree.mirror[1].file: /srv/link.img (the same as /srv/a.img on this machine) is also used by export 'a' at export[0].file: ${WHY}`,
    ]);
    expect(aliases(exp("d", `device = "/dev/sdb"`) + exp("e", `device = "/dev/disk/by-id/wwn-1"\nread_only = true`), same)).toEqual([
      `export[1].device: /dev/disk/by-id/wwn-1 (the same as /dev/sdb on this machine) is also used by export 'd' at export[0].device: ${WHY}`,
    ]);
    const log = (name: string, dir: string) => exp(name, `memory = "1MiB"\n[export.replication]\nlog_dir = "${dir}"`);
    expect(aliases(log("p", "/srv/log") + log("q", "/srv/log-link"), same)).toEqual([
      `export[1].replication.log_dir: log_dir /srv/log-link (the same as /srv/log on this machine) is also used by export 'p' at export[0].replication.log_dir: ${WHY}`,
    ]);
    // Read-only uses of one file under two names share; nothing there yet is no alias.
    const ro = (name: string, file: string) => exp(name, `file = "${file}"\nread_only = true`);
    expect(aliases(ro("a", "/srv/a.img") + ro("b", "/srv/link.img"), same)).toEqual([]);
    expect(aliases(exp("a", `file = "/srv/new.img"\nsize = "1MiB"`) + exp("b", `file = "/srv/new2.img"\nsize = "1MiB"`), same)).toEqual([]);
  });
});
