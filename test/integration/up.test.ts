/**
 * `dstd up` as systemd runs it, with the compiled binary: a config with two exports (one
 * listener) and one `nbd_listen` attachment of the first, NOTIFY_SOCKET and WATCHDOG_USEC
 * pointing at a real datagram listener, JSON logs. Checks the notify sequence (READY only
 * once everything serves; watchdog pings; RELOADING/READY; STOPPING), `dstd status --json`,
 * data through the attachment, a metrics scrape through promtool (Debian package
 * prometheus), `dstd events --follow`, a refused reload that changes nothing, an applied
 * reload (SIGHUP) that starts an export and a failing attachment which is retried with
 * backoff while everything else keeps serving, and a clean stop.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { spawn } from "bun";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ensureBinary, runDstd } from "../helpers/binary.ts";
import { listenNotify, type NotifyListener } from "../helpers/notify-listener.ts";
import { startNode, type NodeProcess } from "../helpers/node-process.ts";
import { haveTools } from "../helpers/tools.ts";
import { until } from "../helpers/wait.ts";

const MiB = 1024 * 1024;
const dir = mkdtempSync(join(tmpdir(), "dstd-up-"));
const stateDir = join(dir, "state");
const configPath = join(dir, "dstd.toml");
const dstSocket = join(dir, "dst.sock");
const attachSocket = join(dir, "a.sock");
const ATTACH = `attach:unix:${attachSocket}`;

const baseConfig = `
state_dir = "${stateDir}"
log_level = "info"

[[export]]
name = "a"
memory = "32MiB"
listen = "unix:${dstSocket}"
allow = ["unix:rw"]

[[export]]
name = "b"
file = "${join(dir, "b.img")}"
size = "16MiB"
listen = "unix:${dstSocket}"
nbd_listen = "unix:${join(dir, "nbd.sock")}"
allow = ["unix:rw"]

[[attach]]
url = "dst+unix:///a?socket=${dstSocket}"
nbd_listen = "unix:${attachSocket}"
`;

let notify: NotifyListener;
let node: NodeProcess;

interface Status {
  schema: string;
  version: number;
  node: { pid: number; generation: number; ready: boolean; metricsListen: string; summary: string; lastReload: { ok: boolean; messages: string[] } | null };
  services: Array<{
    name: string;
    kind: string;
    state: string;
    since: string;
    restarts: number;
    lastError: string | null;
    export?: { exports: Array<{ name: string; backend: { kind: string; sizeBytes: number } }>; connections: { current: number } };
    attach?: { link: string; device: string; sizeBytes: number };
    counters: Record<string, number>;
  }>;
  attachments: unknown[];
}

async function status(): Promise<Status> {
  const r = await runDstd(["status", "--json", "--state-dir", stateDir]);
  expect(r.stderr).toBe("");
  expect(r.exitCode).toBe(0);
  return JSON.parse(r.stdout) as Status;
}

const service = (s: Status, name: string) => s.services.find((x) => x.name === name);

beforeAll(async () => {
  ensureBinary();
  writeFileSync(configPath, baseConfig);
  notify = listenNotify(join(dir, "notify.sock"));
  node = startNode(["--config", configPath, "--metrics-listen", "127.0.0.1:0", "--log-format", "json"], {
    NOTIFY_SOCKET: notify.address,
    WATCHDOG_USEC: "200000",
    WATCHDOG_PID: undefined,
    DSTD_STATE_DIR: undefined,
  });
  await notify.waitFor((m) => m.startsWith("READY=1"), "READY=1", 30_000);
}, 60_000);

afterAll(async () => {
  await node?.stop("SIGKILL");
  notify?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe("dstd up", () => {
  test("READY=1 comes after every listener, export and attachment is up; then watchdog pings", async () => {
    expect(existsSync(attachSocket)).toBe(true); // bound before READY was sent
    expect(existsSync(join(stateDir, "control.sock"))).toBe(true);
    const ready = notify.messages.findIndex((m) => m.startsWith("READY=1"));
    expect(notify.messages.slice(0, ready)).toEqual(expect.arrayContaining(["STATUS=starting", "EXTEND_TIMEOUT_USEC=20000000"]));
    expect(notify.messages[ready]).toBe("READY=1\nSTATUS=2 exports in 1/1 groups serving; 1/1 attachments ready; 1 client");
    // The attachment's link (a client of export a) was up before READY: its log line comes first.
    await node.waitForLog('"msg":"ready: ', "the ready log line");
    const lines = node.stderr().trim().split("\n").map((l) => JSON.parse(l) as Record<string, unknown>);
    const attached = lines.findIndex((l) => String(l.msg).startsWith("attached 'a'"));
    const readyLine = lines.findIndex((l) => String(l.msg).startsWith("ready:"));
    expect(attached).toBeGreaterThanOrEqual(0);
    expect(readyLine).toBeGreaterThan(attached);
    await notify.waitFor(() => notify.messages.slice(ready).filter((m) => m === "WATCHDOG=1").length >= 2, "two WATCHDOG=1 after READY");
  });

  test("logs: one JSON object per line, with time, level and message; normal start at info", () => {
    const lines = node.stderr().trim().split("\n");
    expect(lines.length).toBeGreaterThan(5);
    for (const line of lines) {
      const record = JSON.parse(line) as Record<string, unknown>;
      expect(typeof record.time).toBe("string");
      expect(typeof record.msg).toBe("string");
      expect(["info", "debug"]).toContain(record.level as string);
    }
  });

  test("dstd status --json: the versioned schema with both exports and the attachment", async () => {
    const s = await status();
    expect(s.schema).toBe("dstd-status");
    expect(s.version).toBe(1);
    expect(s.node.pid).toBe(node.child.pid);
    expect(s.node.ready).toBe(true);
    expect(s.node.generation).toBe(1);
    expect(s.services.map((x) => [x.name, x.kind, x.state])).toEqual([
      ["export:a+b", "export", "running"],
      [ATTACH, "attach", "running"],
    ]);
    const group = service(s, "export:a+b")!;
    expect(group.export!.exports.map((e) => [e.name, e.backend.kind, e.backend.sizeBytes])).toEqual([
      ["a", "memory", 32 * MiB],
      ["b", "file", 16 * MiB],
    ]);
    expect(group.export!.connections.current).toBe(1);
    const attach = service(s, ATTACH)!;
    expect(attach.attach).toMatchObject({ link: "ready", device: `unix:${attachSocket}`, sizeBytes: 32 * MiB });
    expect(s.attachments).toEqual([]); // the node's own attachment is a service, not a standalone record
    const text = await runDstd(["status", "--state-dir", stateDir]);
    expect(text.stdout).toContain(`node: dstd `);
    expect(text.stdout).toMatch(/export:a\+b\s+running/);
    expect(text.stdout).toMatch(/a\s+memory\s+32 MiB\s+rw/);
  });

  test("data written through the attachment lands on export a", async () => {
    const image = join(dir, "image.raw");
    const data = new Uint8Array(4 * MiB);
    for (let off = 0; off < data.length; off += 65536) crypto.getRandomValues(data.subarray(off, off + 65536));
    writeFileSync(image, data);
    const put = await runDstd(["copy", image, `nbd+unix:///a?socket=${attachSocket}`]);
    expect(put.stderr).toBe("");
    expect(put.exitCode).toBe(0);
    const back = join(dir, "back.raw");
    const get = await runDstd(["copy", `dst+unix:///a?socket=${dstSocket}`, back]);
    expect(get.exitCode).toBe(0);
    expect(Buffer.compare(readFileSync(back).subarray(0, data.length), Buffer.from(data))).toBe(0);
  });

  test("dstd detach of the node's own attachment is refused naming the node (its SIGTERM would stop every export); the node serves on", async () => {
    const detach = await runDstd(["detach", `unix:${attachSocket}`, "--state-dir", stateDir]);
    expect(detach.exitCode).not.toBe(0);
    expect(detach.stderr).toContain(`unix:${attachSocket} is an [[attach]] of the dstd up node (pid ${node.child.pid}) on state directory ${stateDir}`);
    expect(node.child.exitCode).toBeNull();
    expect(service(await status(), ATTACH)?.state).toBe("running");
  });

  test.skipIf(!haveTools({ promtool: "prometheus" }))("a metrics scrape passes promtool and shows the work done", async () => {
    const s = await status();
    const response = await fetch(`http://${s.node.metricsListen}/metrics`);
    expect(response.status).toBe(200);
    const text = await response.text();
    const check = Bun.spawnSync(["promtool", "check", "metrics"], { stdin: new TextEncoder().encode(text) });
    expect(check.stdout.toString() + check.stderr.toString()).toBe("");
    expect(check.exitCode).toBe(0);
    expect(text).toContain(`dstd_service_up{service="${ATTACH}",kind="attach"} 1`);
    expect(text).toContain('dstd_service_up{service="export:a+b",kind="export"} 1');
    expect(text).toContain("dstd_node_ready 1");
    const requests = Number(/^dstd_export_requests_total\{service="export:a\+b"\} (\d+)$/m.exec(text)?.[1]);
    expect(requests).toBeGreaterThan(2 * 4); // the copies above: 4 MiB in and out, 1 MiB requests, plus flushes
    expect(text).toMatch(/^dstd_export_received_bytes_total\{service="export:a\+b"\} \d{7,}$/m);
  });

  test("reloads: an invalid file changes nothing; SIGHUP applies a new export and a failing attachment retried with backoff", async () => {
    // --since 0: the kept history comes in the answer to the subscription, so seeing it means subscribed.
    const follower = spawn([ensureBinary(), "events", "--follow", "--since", "0", "--state-dir", stateDir], { stdout: "pipe", stderr: "pipe" });
    let events = "";
    void (async () => {
      for await (const chunk of follower.stdout) events += new TextDecoder().decode(chunk);
    })();
    try {
      await until(() => events.includes('"type":"node.ready"'), "the follower to be subscribed");
      const before = await status();
      const attachSince = service(before, ATTACH)!.since;

      // 1. Invalid: refused whole, with the reason; RELOADING then READY; nothing restarted.
      writeFileSync(configPath, `${baseConfig}\n[[export]]\nname = "c"\nmemory = "1 GB"\nlisten = "unix:${join(dir, "c.sock")}"\n`);
      const reloadsBefore = notify.messages.filter((m) => m.startsWith("RELOADING=1")).length;
      const refused = await runDstd(["reload", "--state-dir", stateDir]);
      expect(refused.exitCode).toBe(2);
      expect(refused.stderr).toContain("reload refused, nothing changed");
      expect(refused.stderr).toContain('export[2].memory: "1 GB" is not a size');
      await notify.waitFor(() => notify.messages.filter((m) => m.startsWith("RELOADING=1")).length > reloadsBefore, "RELOADING=1");
      const afterRefusal = await status();
      expect(afterRefusal.node.generation).toBe(1);
      expect(afterRefusal.node.lastReload!.ok).toBe(false);
      expect(afterRefusal.services.map((x) => x.name)).toEqual(["export:a+b", ATTACH]);
      expect(service(afterRefusal, ATTACH)!.since).toBe(attachSince);

      // 2. Valid, by SIGHUP: export c on its own listener, and an attachment whose export does not exist.
      const badSocket = join(dir, "bad.sock");
      writeFileSync(
        configPath,
        `${baseConfig}
[[export]]
name = "c"
memory = "1MiB"
listen = "unix:${join(dir, "c.sock")}"
allow = ["unix:rw"]

[[attach]]
url = "dst+unix:///nothing?socket=${join(dir, "nobody-listens.sock")}"
nbd_listen = "unix:${badSocket}"
deadline = "1s"
`,
      );
      node.child.kill("SIGHUP");
      await until(() => events.includes('"type":"node.reloaded"'), "node.reloaded on the event stream", 15_000);
      await until(() => (events.match(/"type":"service.restart_scheduled"/g) ?? []).length >= 2, "two scheduled restarts of the failing attachment", 15_000);
      const after = await status();
      expect(after.node.generation).toBe(2);
      expect(after.node.lastReload!.ok).toBe(true);
      expect(service(after, "export:c")!.state).toBe("running");
      const bad = service(after, `attach:unix:${badSocket}`)!;
      expect(["backoff", "starting"]).toContain(bad.state);
      expect(bad.restarts).toBeGreaterThanOrEqual(1);
      expect(bad.lastError).toContain("cannot reach the export");
      // Everyone else was left alone: same attachment, never reconnected, still serving.
      const good = service(after, ATTACH)!;
      expect(good.since).toBe(attachSince);
      expect(good.state).toBe("running");
      expect(good.counters.reconnects).toBe(0);
      expect(service(after, "export:a+b")!.restarts).toBe(0);
      const scheduled = events
        .trim()
        .split("\n")
        .map((l) => JSON.parse(l) as { type: string; delayMs?: number; service?: string })
        .filter((e) => e.type === "service.restart_scheduled");
      expect(scheduled.slice(0, 2).map((e) => [e.service, e.delayMs])).toEqual([
        [`attach:unix:${badSocket}`, 1000],
        [`attach:unix:${badSocket}`, 2000],
      ]);
      const reloads = notify.messages.filter((m) => m.startsWith("RELOADING=1"));
      expect(reloads.length).toBe(reloadsBefore + 2);
      expect(reloads.at(-1)).toMatch(/^RELOADING=1\nMONOTONIC_USEC=\d+\nSTATUS=reloading configuration$/);

      // 3. `dstd reload` with nothing new: nothing changes, exit 0.
      const again = await runDstd(["reload", "--state-dir", stateDir]);
      expect(again.exitCode).toBe(0);
      expect(again.stdout).toContain("nothing changed");

      // 4. [limits] changed: said to take effect at restart (before, units a reload started got
      // the new limits while the running ones kept the old: two sets at once, reported as nothing).
      writeFileSync(configPath, `${readFileSync(configPath, "utf8")}\n[limits]\nframe_timeout = "20s"\n`);
      const limits = await runDstd(["reload", "--state-dir", stateDir]);
      expect(limits.exitCode).toBe(0);
      expect(limits.stderr).toContain("[limits]: takes effect when dstd up restarts");
    } finally {
      follower.kill();
      await follower.exited;
    }
  }, 60_000);

  test("SIGTERM: STOPPING=1, everything stops, exit 0, sockets gone; a SIGHUP during the stop is ignored, not a crash", async () => {
    node.child.kill("SIGTERM");
    await node.waitForLog("SIGTERM: stopping", "the stop to begin");
    // Before, a SIGHUP in the stop window rejected with E_STOPPING unhandled: exit 1 half way.
    node.child.kill("SIGHUP");
    const code = await node.child.exited;
    expect(node.stderr()).not.toContain("the node is stopping");
    expect(code).toBe(0);
    await notify.waitFor((m) => m.startsWith("STOPPING=1"), "STOPPING=1");
    expect(existsSync(join(stateDir, "control.sock"))).toBe(false);
    expect(existsSync(attachSocket)).toBe(false);
    const none = await runDstd(["status", "--state-dir", stateDir]);
    expect(none.stdout).toContain("no dstd up node is running");
  }, 30_000);
});
