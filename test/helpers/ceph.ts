/**
 * @module test/helpers/ceph — a real single-node Ceph cluster for the RBD tests and the RBD
 * benchmark, started by test/helpers/ceph-cluster.sh in a fresh folder under /tmp and removed
 * again by `stop()`. Without the Debian packages the tests skip naming them (and fail under
 * DSTD_REQUIRE_TOOLS=1, as test/helpers/tools.ts does).
 */
import { spawn } from "bun";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { rbdLibraryProblem } from "../../src/sys/librbd.ts";
import { haveTools } from "./tools.ts";

const SCRIPT = join(import.meta.dir, "ceph-cluster.sh");

/** The tools the cluster needs and the Debian package each comes from. */
export const CEPH_TOOLS = { "ceph-mon": "ceph-mon", "ceph-osd": "ceph-osd", monmaptool: "ceph-base", ceph: "ceph-common", rbd: "ceph-common" };

export interface CephCluster {
  dir: string;
  conf: string;
  /** With cephx: a keyring of client.test, restricted to pool rbd; null otherwise. */
  testKeyring: string | null;
  /** Run `rbd -c CONF ARGS`; resolves with its stdout, rejects naming the command on failure. */
  rbd(...args: string[]): Promise<string>;
  /**
   * Stop the OSD (SIGSTOP) for `ms`; a separate process resumes it (SIGCONT), so the resume
   * happens even while this process's event loop is stuck. Resolves once it is resumed.
   */
  pauseOsd(ms: number): Promise<void>;
  stop(): Promise<void>;
}

/** true when a cluster can be started here; otherwise logs (or, in CI, throws) what is missing. */
export function haveCeph(): boolean {
  if (!haveTools(CEPH_TOOLS)) return false;
  const library = rbdLibraryProblem();
  if (library === null) return true;
  if (process.env.DSTD_REQUIRE_TOOLS === "1") throw new Error(`required test library missing: ${library}`);
  console.warn(`skipping: ${library}`);
  return false;
}

async function run(cmd: string[]): Promise<string> {
  const child = spawn(cmd, { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  const [stdout, stderr, code] = await Promise.all([new Response(child.stdout).text(), new Response(child.stderr).text(), child.exited]);
  if (code !== 0) throw new Error(`${cmd.join(" ")} exited ${code}:\n${stderr}${stdout}`);
  return stdout;
}

/**
 * Start a cluster (a few seconds) with pool "rbd" initialised. `memstoreBytes` caps the OSD's
 * RAM for object data; `cephx` turns authentication on and adds a restricted client.test. The folder name stays short: admin-socket paths must be < 108 bytes.
 */
export async function startCephCluster(memstoreBytes = 2 * 1024 ** 3, options: { cephx?: boolean } = {}): Promise<CephCluster> {
  const dir = mkdtempSync("/tmp/dstd-ceph-");
  try {
    await run([SCRIPT, "start", dir, String(memstoreBytes), ...(options.cephx ? ["cephx"] : [])]);
  } catch (error) {
    rmSync(dir, { recursive: true, force: true });
    throw error;
  }
  const conf = join(dir, "ceph.conf");
  return {
    dir,
    conf,
    testKeyring: options.cephx ? join(dir, "client.test.keyring") : null,
    rbd: (...args: string[]) => run(["rbd", "-c", conf, ...args]),
    async pauseOsd(ms: number) {
      const osd = /^osd\.\d+ (\d+)$/m.exec(readFileSync(join(dir, "pids"), "utf8"));
      if (osd === null) throw new Error(`no OSD pid in ${dir}/pids`);
      process.kill(Number(osd[1]), "SIGSTOP");
      await run(["sh", "-c", `sleep ${ms / 1000}; kill -CONT ${osd[1]}`]);
    },
    async stop() {
      if (existsSync(dir)) await run([SCRIPT, "stop", dir]);
    },
  };
}
