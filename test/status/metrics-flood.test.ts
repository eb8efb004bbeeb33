/**
 * A flood of the metrics port does not take the node's file descriptors (compiled `dstd up`,
 * real sockets): the node runs with a descriptor limit of 256 and the test opens 1024 idle
 * connections to its metrics port. The node holds at most METRICS_MAX_CONNECTIONS of them
 * (status/http.ts), so while the flood is open a `dstd copy` into its export and back
 * still succeeds and a scrape is answered; once the flood ends, a scrape is answered again.
 * With Bun.serve, which held every connection, the same flood used up the node's
 * descriptors and the export's clients failed (its handshake timed out).
 */
import { afterAll, expect, test } from "bun:test";
import type { Socket } from "bun";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { METRICS_MAX_CONNECTIONS } from "../../src/transport/fd-budget.ts";
import { ensureBinary, runDstd } from "../helpers/binary.ts";
import { writeRandomFile } from "../helpers/files.ts";
import { until } from "../helpers/wait.ts";

const FD_LIMIT = 256;
const FLOOD = 4 * FD_LIMIT;
const dir = mkdtempSync(join(tmpdir(), "dstd-metrics-flood-"));
const socket = join(dir, "dst.sock");
const config = join(dir, "dstd.toml");
writeFileSync(config, `state_dir = "${join(dir, "state")}"\n\n[[export]]\nname = "disk"\nmemory = "4MiB"\nlisten = "unix:${socket}"\nallow = ["unix:rw"]\n`);
const node = Bun.spawn(["bash", "-c", `ulimit -n ${FD_LIMIT} && exec "$0" up --config "$1" --metrics-listen 127.0.0.1:0`, ensureBinary(), config], {
  stdin: "ignore",
  stdout: "ignore",
  stderr: "pipe",
  env: { ...process.env, DSTD_STATE_DIR: undefined, NOTIFY_SOCKET: undefined },
});
let log = "";
void (async () => {
  for await (const chunk of node.stderr) log += new TextDecoder().decode(chunk);
})();
afterAll(async () => {
  node.kill("SIGKILL");
  await node.exited;
  rmSync(dir, { recursive: true, force: true });
});

/**
 * Open `count` connections to `port` that send nothing. `open()`: how many are open now (a
 * connection the node closes before its connect completed fails that connect, ECONNRESET,
 * and never counts). Every connect must settle within `ms`: a listener that stopped accepting
 * leaves them pending, and fails the wait.
 */
async function idleFlood(port: number, count: number, ms: number): Promise<{ open(): number; end(): void }> {
  const live = new Set<Socket>();
  let ended = false;
  const handlers = {
    open: (s: Socket) => void (ended ? s.end() : live.add(s)),
    close: (s: Socket) => void live.delete(s),
    data() {},
    error() {},
  };
  let settled = 0;
  for (let i = 0; i < count; i++) void Bun.connect({ hostname: "127.0.0.1", port, socket: handlers }).then(() => settled++, () => settled++);
  await until(() => settled === count, `${count} connects to be accepted or refused`, ms);
  return {
    open: () => live.size,
    end() {
      ended = true;
      for (const s of live) s.end();
    },
  };
}

test(`${FLOOD} idle connections to the metrics port of a node with ${FD_LIMIT} descriptors: the export still serves, scrapes still work`, async () => {
  await until(() => log.includes("ready: ") || node.exitCode !== null, "dstd up ready", 30_000);
  const port = Number(/serving metrics on http:\/\/127\.0\.0\.1:(\d+)\/metrics/.exec(log)?.[1]);
  expect(port).toBeGreaterThan(0);
  const scrape = async () => {
    const response = await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(10_000) });
    return { status: response.status, text: await response.text() };
  };

  const flood = await idleFlood(port, FLOOD, 5_000);
  try {
    const source = join(dir, "source.img");
    const back = join(dir, "back.img");
    writeRandomFile(source, 1024 * 1024);
    const url = `dst+unix:///disk?socket=${socket}`;
    const up = await runDstd(["copy", source, url, "--deadline", "20s"]);
    expect(up.stderr).toBe("");
    expect(up.exitCode).toBe(0);
    const down = await runDstd(["copy", url, back, "--deadline", "20s"]);
    expect(down.exitCode).toBe(0);
    expect(readFileSync(back).subarray(0, 1024 * 1024).equals(readFileSync(source))).toBe(true);

    const during = await scrape();
    expect(during.status).toBe(200);
    expect(during.text).toContain('dstd_service_up{service="export:disk",kind="export"} 1');
    await until(() => flood.open() <= METRICS_MAX_CONNECTIONS, "the node to close the flood past its cap");
    expect(readdirSync(`/proc/${node.pid}/fd`).length).toBeLessThan(FD_LIMIT / 4);
  } finally {
    flood.end();
  }
  const after = await scrape();
  expect(after.status).toBe(200);
  expect(after.text).toContain(`dstd_export_connections_total{service="export:disk"} 2`);
  expect(node.exitCode).toBeNull();
}, 120_000);
