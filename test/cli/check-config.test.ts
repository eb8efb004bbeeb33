/**
 * `dstd check-config` checks what `dstd export` and `dstd attach` would refuse (issue 14
 * item 9) and warns about what cannot work (item 10's allow rule that can never match):
 * the compiled binary on config files written here. Problems exit 2 with one line each;
 * warnings keep exit 0. examples/dstd.toml, the repository's example, must pass (item 10).
 */
import { afterAll, describe, expect, test } from "bun:test";
import { chmodSync, linkSync, mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ensureBinary, runDstd, startExport } from "../helpers/binary.ts";
import { scratchDir } from "../helpers/files.ts";
import { startNode } from "../helpers/node-process.ts";

/** A TCP port free on 127.0.0.1 now (bound, then released). */
async function freeTcpPort(): Promise<number> {
  const probe = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = probe.port;
  probe.stop(true);
  return port;
}

const scratch = scratchDir("cli-check");
afterAll(() => scratch.remove());

function config(name: string, text: string): string {
  const path = join(scratch.path, name);
  writeFileSync(path, text);
  return path;
}

describe("dstd check-config", () => {
  test("examples/dstd.toml passes", async () => {
    const example = join(import.meta.dir, "../../examples/dstd.toml");
    const r = await runDstd(["check-config", example]);
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toBe(`${example}: ok (2 export(s): disk, scratch; 0 attachment(s); 0 key(s))\n`);
  });

  test("key files: missing, readable by others, for another identity", async () => {
    const keyed = join(scratch.path, "bob.key");
    const keygen = await runDstd(["keygen", "--identity", "bob", "--out", keyed]);
    expect(keygen.exitCode).toBe(0);
    const loose = join(scratch.path, "loose.key");
    await runDstd(["keygen", "--identity", "carol", "--out", loose]);
    chmodSync(loose, 0o644);
    const path = config(
      "keys.toml",
      `[[key]]\nidentity = "alice"\nfile = "absent.key"\n\n[[key]]\nidentity = "carol"\nfile = "loose.key"\n\n[[key]]\nidentity = "dave"\nfile = "bob.key"\n\n[[export]]\nmemory = "1MiB"\nallow = ["127.0.0.1/32:rw"]\n`,
    );
    const r = await runDstd(["check-config", path]);
    expect(r.exitCode).toBe(2);
    const lines = r.stderr.trimEnd().split("\n");
    expect(lines[0]).toBe(`dstd check-config: ${path}: key[0]: key file ${join(scratch.path, "absent.key")} does not exist (create one with: dstd keygen --identity NAME --out ${join(scratch.path, "absent.key")})`);
    expect(lines[1]).toBe(`${path}: key[1]: key file ${loose} is readable by others (mode 0644); run: chmod 600 ${loose}`);
    expect(lines[2]).toBe(`${path}: key[2]: key file ${keyed} is for identity 'bob', not 'dave'`);
    expect(lines[3]).toBe(`${path}: 3 problem(s): export or attach would refuse to start`);
  });

  test("a tree its layout record under state_dir refuses (a stripe's chunk changed) is a problem; an unreadable record a warning", async () => {
    const state = join(scratch.path, "layout-state");
    mkdirSync(join(state, "layout"), { recursive: true });
    const [a, b] = [join(scratch.path, "sa.img"), join(scratch.path, "sb.img")];
    const record = join(state, "layout", "s.json");
    writeFileSync(record, JSON.stringify({ format: "dstd tree layout", version: 1, export: "s", nodes: { "": { kind: "stripe", chunkBytes: 65536, legs: [a, b] } } }));
    const tree = (chunk: string) =>
      `state_dir = "${state}"\n\n[[export]]\nname = "s"\nallow = ["127.0.0.1/32:rw"]\n[export.tree]\nchunk = "${chunk}"\nstripe = [{ file = "${a}", size = "1MiB" }, { file = "${b}", size = "1MiB" }]\n`;
    const same = await runDstd(["check-config", config("stripe-same.toml", tree("64KiB"))], { DSTD_STATE_DIR: "" });
    expect(same.stderr).toBe("");
    expect(same.exitCode).toBe(0);
    const path = config("stripe-chunk.toml", tree("128KiB"));
    const r = await runDstd(["check-config", path], { DSTD_STATE_DIR: "" });
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain(
      `${path}: export 's': the stripe root: its chunk is 128 KiB and its data was striped in 64 KiB chunks: every chunk would be read from the wrong place (layout record ${record})`,
    );
    writeFileSync(record, "{");
    const unreadable = await runDstd(["check-config", path], { DSTD_STATE_DIR: "" });
    expect(unreadable.exitCode).toBe(0);
    expect(unreadable.stderr).toContain(`${path}: warning: export 's': layout record ${record} cannot be read`);
  });

  test("an attach URL with a scheme attach refuses, and export files that cannot be opened", async () => {
    const path = config(
      "attach.toml",
      `[[attach]]\nurl = "nbd://storage-1/disk"\n\n[[export]]\nfile = "nowhere/disk.img"\nsize = "1GiB"\nallow = ["127.0.0.1/32:rw"]\n`,
    );
    const r = await runDstd(["check-config", path]);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain(`${path}: attach[0].url: attach connects to dst:// or dst+unix:// exports`);
    const files = config("files.toml", `[[export]]\nfile = "absent.img"\nallow = ["127.0.0.1/32:rw"]\n`);
    const f = await runDstd(["check-config", files]);
    expect(f.exitCode).toBe(2);
    expect(f.stderr).toContain(`export[0].file: ${join(scratch.path, "absent.img")} does not exist; give size to create it`);
    // An existing file larger than size is served at its own size (a file dstd resize grew), as dstd export opens it; a smaller one is refused.
    writeFileSync(join(scratch.path, "grown.img"), new Uint8Array(2 << 20));
    const sized = (size: string) => config(`sized-${size}.toml`, `[[export]]\nfile = "grown.img"\nsize = "${size}"\nallow = ["127.0.0.1/32:rw"]\n`);
    const grown = await runDstd(["check-config", sized("1MiB")]);
    expect(grown.stderr).toBe("");
    expect(grown.exitCode).toBe(0);
    const small = await runDstd(["check-config", sized("4MiB")]);
    expect(small.exitCode).toBe(2);
    expect(small.stderr).toContain(`export[0].size: ${join(scratch.path, "grown.img")} exists with 2097152 bytes, less than 4194304; an existing file is never resized`);
    const served = await startExport(["--config", sized("1MiB")]);
    await served.stop();
  });

  test("an rbd leg of a tree whose ceph.conf is missing is named with its leg", async () => {
    const leg = join(scratch.path, "leg.img");
    writeFileSync(leg, new Uint8Array(4096));
    const path = config(
      "rbd-leg.toml",
      `[[export]]\nceph_conf = "/nonexistent/ceph.conf"\nallow = ["127.0.0.1/32:rw"]\n[export.tree]\nmirror = ["rbd:rbd/vm1", "leg.img"]\n`,
    );
    const r = await runDstd(["check-config", path]);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain(`${path}: export[0].tree.mirror[0]: ceph_conf: /nonexistent/ceph.conf does not exist`);
  });

  test("an rbd export's ceph_conf this user cannot read, and a ceph_keyring that is a folder, are problems (checked as an ordinary user: root reads anything)", () => {
    const conf = join(scratch.path, "unreadable-ceph.conf");
    writeFileSync(conf, "[global]\nmon_host = 192.0.2.1\n", { mode: 0o600 }); // owner root (or us): unreadable to others
    if (process.getuid?.() !== 0) chmodSync(conf, 0o000);
    const keyring = join(scratch.path, "keyring-folder");
    mkdirSync(keyring);
    const path = config("rbd-unreadable.toml", `[[export]]\nrbd = "rbd/vm1"\nceph_conf = "${conf}"\nceph_keyring = "${keyring}"\nallow = ["127.0.0.1/32:rw"]\n`);
    chmodSync(scratch.path, 0o755);
    chmodSync(path, 0o644);
    // As root, drop to nobody (util-linux setpriv); as an ordinary user, run as that user.
    const asNobody = process.getuid?.() === 0 ? ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] : [];
    const r = Bun.spawnSync([...asNobody, ensureBinary(), "check-config", path], { stdout: "pipe", stderr: "pipe" });
    expect(r.exitCode).toBe(2);
    expect(r.stderr.toString()).toContain(`${path}: export[0].rbd: ceph_conf: ${conf} is not readable by this user (EACCES)`);
    expect(r.stderr.toString()).toContain(`${path}: export[0].rbd: ceph_keyring: ${keyring} is not a regular file`);
  });

  test("warnings: an address in use or not on this machine, an allow rule that can never match", async () => {
    const running = await startExport(["--memory", "1MiB", "--allow", "127.0.0.1/32:rw"]);
    try {
      const path = config(
        "warn.toml",
        `[[export]]\nname = "busy"\nmemory = "1MiB"\nlisten = ["127.0.0.1:${running.port}"]\nallow = ["127.0.0.1/32:rw", "10.0.0.0/8:rw"]\n\n` +
          `[[export]]\nname = "elsewhere"\nmemory = "1MiB"\nlisten = ["192.0.2.1:10810"]\nallow = ["192.0.2.0/24:rw"]\n`,
      );
      const r = await runDstd(["check-config", path]);
      expect(r.exitCode).toBe(0);
      const warnings = r.stderr.trimEnd().split("\n");
      expect(warnings).toEqual([
        `${path}: warning: export[0].listen: cannot listen on 127.0.0.1:${running.port}: address already in use (EADDRINUSE): another process (another dstd?) listens on this port; stop it or choose another port (as this user, now)`,
        `${path}: warning: export 'busy': allow rule '10.0.0.0/8:rw' can never match: the export listens only on loopback (127.0.0.1:${running.port}), where every client is local; to admit that network listen on an address it can reach, e.g. --listen 0.0.0.0:${running.port}`,
        `${path}: warning: export[1].listen: cannot listen on 192.0.2.1:10810: address not available (EADDRNOTAVAIL): this machine has no such address; use one of its addresses, or 0.0.0.0 (all IPv4) or [::] (all IPv6) (as this user, now)`,
      ]);
      expect(r.stdout).toBe(`${path}: ok (2 export(s): busy, elsewhere; 0 attachment(s); 0 key(s); 3 warning(s) above)\n`);
    } finally {
      await running.stop();
    }
  });

  test("warnings: a state_dir or a replication log_dir that cannot be created (tried for real, nothing left behind)", async () => {
    const file = join(scratch.path, "a-file");
    writeFileSync(file, "");
    const path = config(
      "dirs.toml",
      `state_dir = "/proc/dstd-nope"\n[[export]]\nname = "r"\nfile = "${join(scratch.path, "r.img")}"\nsize = "1MiB"\nlisten = ["127.0.0.1:0"]\nallow = ["127.0.0.1/32:rw"]\n[export.replication]\nlog_dir = "${join(file, "log")}"\n`,
    );
    const r = await runDstd(["check-config", path], { DSTD_STATE_DIR: "" });
    expect(r.exitCode).toBe(0);
    expect(r.stderr.trimEnd().split("\n")).toEqual([
      `${path}: warning: state_dir: /proc/dstd-nope cannot be created: /proc takes no new entry (ENOENT) (as this user, now)`,
      `${path}: warning: export[0].replication.log_dir: ${join(file, "log")} cannot be created: ${file} is not a folder (as this user, now)`,
      `${path}: warning: export 'r': a replication primary without a peer: after a failover to its secondary (promote --force) this node, restarted, cannot tell it was replaced and serves writes as a second primary; name its secondary as peer (--peer URL, or peer in [export.replication]) so it asks first`,
    ]);
    const fine = config("dirs-ok.toml", `state_dir = "${join(scratch.path, "state", "deeper")}"\n[[export]]\nname = "m"\nmemory = "1MiB"\nlisten = ["127.0.0.1:0"]\nallow = ["127.0.0.1/32:rw"]\n`);
    const ok = await runDstd(["check-config", fine], { DSTD_STATE_DIR: "" });
    expect(ok.stderr).toBe("");
    expect(readdirSync(scratch.path).filter((n) => n.startsWith(".dstd-check-"))).toEqual([]);
  });

  test("one file under two names (a symlink, a hard link), or one log_dir through a symlink, is a problem naming both places", async () => {
    const image = join(scratch.path, "alias.img");
    writeFileSync(image, new Uint8Array(1 << 20));
    symlinkSync(image, join(scratch.path, "alias-sym.img"));
    linkSync(image, join(scratch.path, "alias-hard.img"));
    mkdirSync(join(scratch.path, "alias-log"));
    symlinkSync(join(scratch.path, "alias-log"), join(scratch.path, "alias-log-sym"));
    const path = config(
      "aliases.toml",
      `[[export]]\nname = "a"\nfile = "alias.img"\nlisten = ["127.0.0.1:0"]\nallow = ["127.0.0.1/32:rw"]\n[export.replication]\nlog_dir = "alias-log"\n\n` +
        `[[export]]\nname = "b"\nlisten = ["127.0.0.1:0"]\nallow = ["127.0.0.1/32:rw"]\n[export.replication]\nlog_dir = "alias-log-sym"\n[export.tree]\nmirror = ["alias-sym.img", "alias-hard.img"]\n`,
    );
    const r = await runDstd(["check-config", path], { DSTD_STATE_DIR: join(scratch.path, "alias-state") });
    expect(r.exitCode).toBe(2);
    const why = "is also used by export 'a' at export[0]";
    expect(r.stderr.trimEnd().split("\n").filter((line) => !line.includes(": warning: "))).toEqual([
      `dstd check-config: ${path}: export[1].replication.log_dir: log_dir ${join(scratch.path, "alias-log-sym")} (the same as ${join(scratch.path, "alias-log")} on this machine) ${why}.replication.log_dir: one storage used twice, at least once for writing, would be corrupted (or the second use refused at start); give each use its own`,
      `${path}: export[1].tree.mirror[0].file: ${join(scratch.path, "alias-sym.img")} (the same as ${image} on this machine) ${why}.file: one storage used twice, at least once for writing, would be corrupted (or the second use refused at start); give each use its own`,
      `${path}: export[1].tree.mirror[1].file: ${join(scratch.path, "alias-hard.img")} (the same as ${image} on this machine) ${why}.file: one storage used twice, at least once for writing, would be corrupted (or the second use refused at start); give each use its own`,
      `${path}: 3 problem(s): export or attach would refuse to start`,
    ]);
  });

  test("two listen addresses that are one on this machine (localhost and 127.0.0.1) are a problem naming both; dstd up's second bind says it is its own", async () => {
    const port = await freeTcpPort();
    const text =
      `state_dir = "${join(scratch.path, "alias-listen-state")}"\n` +
      `[[export]]\nname = "a"\nmemory = "1MiB"\nlisten = ["localhost:${port}"]\nallow = ["127.0.0.1/32:rw"]\n\n` +
      `[[export]]\nname = "b"\nmemory = "1MiB"\nlisten = ["127.0.0.1:${port}"]\nallow = ["127.0.0.1/32:rw"]\n`;
    const path = config("alias-listen.toml", text);
    const r = await runDstd(["check-config", path]);
    expect(r.exitCode).toBe(2);
    expect(r.stderr.trimEnd().split("\n")).toEqual([
      `dstd check-config: ${path}: export[1].listen: 127.0.0.1:${port} and export[0].listen (localhost:${port}) are one address on this machine and cannot both be listened on; name it once, the same way everywhere`,
      `${path}: 1 problem(s): export or attach would refuse to start`,
    ]);
    // The same config run: the second export's bind names this process, not "another process".
    const node = startNode(["--config", path], { DSTD_STATE_DIR: undefined });
    try {
      await node.waitForLog("restarting in", "the second export's failed start", 30_000);
      // Ready (and READY=1 under systemd) once every unit had its first start; the summary names the one that failed.
      await node.waitForLog("ready:", "the node ready", 30_000);
      expect(node.stderr()).toMatch(/ready: 2 exports in 1\/2 groups serving; .*export:b backoff/);
      expect(node.stderr()).toContain(`[export:b] failed: cannot listen on 127.0.0.1:${port}: address already in use (EADDRINUSE): this process listens on localhost:${port}, which takes this address too`);
    } finally {
      await node.stop();
    }
  });

  test("as an ordinary user: a privileged port is a warning", () => {
    // Privileged ports start where the kernel says (ip_unprivileged_port_start, 1024 by default).
    if (Number(readFileSync("/proc/sys/net/ipv4/ip_unprivileged_port_start", "utf8")) <= 1) return;
    const path = config("low.toml", `[[export]]\nmemory = "1MiB"\nlisten = ["127.0.0.1:1"]\nallow = ["127.0.0.1/32:rw"]\n`);
    chmodSync(scratch.path, 0o755);
    chmodSync(path, 0o644);
    // As root, drop to nobody (util-linux setpriv); as an ordinary user, run as that user.
    const asNobody = process.getuid?.() === 0 ? ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] : [];
    const r = Bun.spawnSync([...asNobody, ensureBinary(), "check-config", path], { stdout: "pipe", stderr: "pipe" });
    expect(r.exitCode).toBe(0);
    expect(r.stderr.toString()).toContain("cannot listen on 127.0.0.1:1: permission denied (EACCES): ports below 1024 need root or CAP_NET_BIND_SERVICE");
  });

  test("dstd export logs the allow rule that can never match, and names its disk once", async () => {
    const exp = await startExport(["--memory", "1MiB", "--allow", "10.0.0.0/8:rw"]);
    await exp.stop();
    expect(exp.log()).toContain("allow rule '10.0.0.0/8:rw' can never match: the export listens only on loopback");
    expect(exp.log()).toContain("export 'disk': 1 MiB memory disk\n");
    expect(exp.log()).not.toMatch(/\b(\w+) \1\b/);
  });
});
