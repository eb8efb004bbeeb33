/**
 * status/notify over a real Unix datagram socket (what systemd listens on): path and
 * abstract addresses, the message of each step, STATUS= kept to one line and sent only on
 * change, the watchdog from an event-loop timer, and the environment rules (WATCHDOG_PID,
 * variables removed so children do not inherit them).
 */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SystemdNotifier, datagramSender, readNotifyEnvironment, statusLine } from "../../src/status/notify.ts";
import { monotonicMicroseconds, sendUnixDatagram } from "../../src/sys/libc.ts";
import { recordingLog } from "../helpers/log.ts";
import { listenNotify } from "../helpers/notify-listener.ts";

const dir = mkdtempSync(join(tmpdir(), "dstd-notify-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const log = () => ({ ...recordingLog(), error() {} });

describe("datagrams", () => {
  test("to a socket path", async () => {
    const listener = listenNotify(join(dir, "notify.sock"));
    try {
      expect(sendUnixDatagram(listener.address, new TextEncoder().encode("READY=1"))).toBe(true);
      await listener.waitFor((m) => m === "READY=1", "READY=1");
    } finally {
      listener.close();
    }
  });

  test("to an abstract socket (@name)", async () => {
    const name = `@dstd-test-${process.pid}-${Date.now()}`;
    const listener = listenNotify(name);
    try {
      datagramSender(name)("STATUS=abstract");
      await listener.waitFor((m) => m === "STATUS=abstract", "STATUS over the abstract socket");
    } finally {
      listener.close();
    }
  });

  test("nobody listening: a clear error, not a hang", () => {
    expect(() => sendUnixDatagram(join(dir, "absent.sock"), new Uint8Array([1]))).toThrow(/sendto/);
    expect(() => datagramSender("vsock:2:1")).toThrow(/only socket paths and @abstract names/);
  });
});

describe("SystemdNotifier", () => {
  test("READY, STATUS on change only, RELOADING with MONOTONIC_USEC, EXTEND_TIMEOUT, STOPPING", async () => {
    const listener = listenNotify(join(dir, "seq.sock"));
    try {
      const notifier = new SystemdNotifier(datagramSender(listener.address), log());
      notifier.status("starting");
      notifier.extendTimeout(20_000);
      notifier.ready("2 exports serving");
      notifier.status("2 exports serving"); // unchanged: not sent
      notifier.status("2 exports serving; 1 client");
      const before = monotonicMicroseconds();
      notifier.reloading();
      notifier.ready("reloaded");
      notifier.stopping();
      await listener.waitFor((m) => m.startsWith("STOPPING=1"), "STOPPING=1");
      const m = listener.messages;
      expect(m).toHaveLength(7);
      expect(m[0]).toBe("STATUS=starting");
      expect(m[1]).toBe("EXTEND_TIMEOUT_USEC=20000000");
      expect(m[2]).toBe("READY=1\nSTATUS=2 exports serving");
      expect(m[3]).toBe("STATUS=2 exports serving; 1 client");
      const reloading = /^RELOADING=1\nMONOTONIC_USEC=(\d+)\nSTATUS=reloading configuration$/.exec(m[4]!);
      expect(reloading).not.toBeNull();
      const stamp = BigInt(reloading![1]!);
      expect(stamp >= before && stamp <= monotonicMicroseconds()).toBe(true);
      expect(m[5]).toBe("READY=1\nSTATUS=reloaded");
      expect(m[6]).toBe("STOPPING=1\nSTATUS=stopping");
      expect(notifier.sent).toBe(7);
    } finally {
      listener.close();
    }
  });

  test("watchdog pings from the event loop once READY, every WATCHDOG_USEC/2, until STOPPING", async () => {
    const listener = listenNotify(join(dir, "wd.sock"));
    const env: Record<string, string | undefined> = { NOTIFY_SOCKET: listener.address, WATCHDOG_USEC: "40000", WATCHDOG_PID: String(process.pid) };
    const notifier = SystemdNotifier.fromEnvironment(log(), env);
    try {
      expect(env.NOTIFY_SOCKET).toBeUndefined(); // consumed: children do not inherit it
      expect(env.WATCHDOG_USEC).toBeUndefined();
      notifier.ready("up");
      let pings = 0;
      await listener.waitFor(() => (pings = listener.messages.filter((x) => x === "WATCHDOG=1").length) >= 3, "three WATCHDOG=1");
      notifier.stopping();
      await listener.waitFor((m) => m.startsWith("STOPPING=1"), "STOPPING=1");
      const after = listener.messages.slice(listener.messages.findIndex((x) => x.startsWith("STOPPING=1")));
      expect(after.filter((x) => x === "WATCHDOG=1")).toHaveLength(0);
      expect(pings).toBeGreaterThanOrEqual(3);
    } finally {
      notifier.stopWatchdog();
      listener.close();
    }
  });

  test("environment: WATCHDOG_PID for another process disables the watchdog; no socket, no-op", () => {
    expect(readNotifyEnvironment({ NOTIFY_SOCKET: "/x", WATCHDOG_USEC: "1000", WATCHDOG_PID: "1" }, 4242, false)).toEqual({ socket: "/x", watchdogUsec: null });
    expect(readNotifyEnvironment({ NOTIFY_SOCKET: "/x", WATCHDOG_USEC: "1000" }, 4242, false)).toEqual({ socket: "/x", watchdogUsec: 1000 });
    expect(readNotifyEnvironment({ WATCHDOG_USEC: "junk" }, 1, false)).toEqual({ socket: null, watchdogUsec: null });
    const silent = SystemdNotifier.fromEnvironment(log(), {});
    expect(silent.enabled).toBe(false);
    silent.ready("nothing happens");
    expect(silent.sent).toBe(0);
  });

  test("a manager that went away: a warning, never an exception into the daemon", () => {
    const recorded = log();
    const notifier = new SystemdNotifier(datagramSender(join(dir, "gone.sock")), recorded);
    notifier.ready("x");
    expect(recorded.lines.some((l) => l.startsWith("warn: systemd notification failed"))).toBe(true);
  });

  test("STATUS= is one bounded line", () => {
    expect(statusLine("a\nb\r\nc")).toBe("a; b; c");
    expect(statusLine("x".repeat(1000)).length).toBe(400);
  });
});
