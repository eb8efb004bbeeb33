/**
 * Bind errors say why and what to do (issue 14 item 4), through the compiled `dstd export`:
 * address in use, address not on this machine, missing socket folder, and (as an ordinary
 * user) a privileged port. A start that fails leaves nothing behind: the sparse file it had
 * just created is removed again.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { chmodSync, existsSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { ensureBinary, runDstd } from "../helpers/binary.ts";
import { scratchDir } from "../helpers/files.ts";

const scratch = scratchDir("cli-listen");
afterAll(() => scratch.remove());

describe("dstd export: listen errors", () => {
  test("address in use: names EADDRINUSE and the fix; the new sparse file is removed", async () => {
    const taken = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    try {
      const file = join(scratch.path, "new.img");
      const r = await runDstd(["export", "--file", file, "--size", "64MiB", "--listen", `127.0.0.1:${taken.port}`, "--allow", "127.0.0.1/32:rw"]);
      expect(r.exitCode).toBe(1);
      expect(r.stderr).toBe(
        `dstd export: cannot listen on 127.0.0.1:${taken.port}: address already in use (EADDRINUSE): another process (another dstd?) listens on this port; stop it or choose another port\n`,
      );
      expect(existsSync(file)).toBe(false);
    } finally {
      taken.stop(true);
    }
  });

  test("an address this machine does not have: EADDRNOTAVAIL", async () => {
    // 192.0.2.0/24 is TEST-NET-1 (RFC 5737): never assigned to a real host.
    const r = await runDstd(["export", "--memory", "1MiB", "--listen", "192.0.2.1:10810", "--allow", "192.0.2.0/24:rw"]);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain("cannot listen on 192.0.2.1:10810: address not available (EADDRNOTAVAIL): this machine has no such address");
  });

  test("a Unix socket in a folder that does not exist: ENOENT naming the folder", async () => {
    const folder = join(scratch.path, "missing");
    const r = await runDstd(["export", "--memory", "1MiB", "--listen", `unix:${folder}/dstd.sock`, "--allow", "unix:rw"]);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain(`cannot listen on unix:${folder}/dstd.sock: no such directory (ENOENT): ${folder} does not exist; create it first`);
  });

  test("as an ordinary user: a privileged port and a folder it may not write say so", async () => {
    const dstd = ensureBinary();
    const asUser = (args: string[]) => {
      const root = process.getuid?.() === 0;
      const cmd = root ? ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", dstd, ...args] : [dstd, ...args];
      const r = Bun.spawnSync(cmd, { stdout: "pipe", stderr: "pipe" });
      return { exitCode: r.exitCode, stderr: r.stderr.toString() };
    };
    // Privileged ports start where the kernel says (ip_unprivileged_port_start, 1024 by default).
    const start = Number(readFileSync("/proc/sys/net/ipv4/ip_unprivileged_port_start", "utf8"));
    if (start > 1) {
      const low = asUser(["export", "--memory", "1MiB", "--listen", "127.0.0.1:1", "--allow", "127.0.0.1/32:rw"]);
      expect(low.exitCode).toBe(1);
      expect(low.stderr).toContain("cannot listen on 127.0.0.1:1: permission denied (EACCES): ports below 1024 need root or CAP_NET_BIND_SERVICE");
    }
    // The user may reach the folder (scratch is 0700 for root) but not write in it.
    chmodSync(scratch.path, 0o755);
    const closed = join(scratch.path, "closed");
    mkdirSync(closed, { mode: 0o755 });
    const unix = asUser(["export", "--memory", "1MiB", "--listen", `unix:${closed}/dstd.sock`, "--allow", "unix:rw"]);
    expect(unix.exitCode).toBe(1);
    expect(unix.stderr).toContain(`permission denied (EACCES): this user cannot create a socket in ${closed}`);
  });
});
