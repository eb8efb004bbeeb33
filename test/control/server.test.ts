/**
 * control/server over a real Unix socket: owner-only permissions, one node per state
 * directory, in-order answers, and every hostile-client bound — too many clients, an
 * over-long line, too many pending requests, an idle connection, an event follower that
 * does not read — each ending in a clear error line and a close while other clients carry on.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { chownSync, mkdirSync, mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ControlClient } from "../../src/control/client.ts";
import { startControlServer, type ControlLimits, type ControlServer } from "../../src/control/server.ts";
import { DstdError } from "../../src/lib/errors.ts";
import { EventBus } from "../../src/status/events.ts";
import { effectiveUserId } from "../../src/sys/libc.ts";
import { connect } from "../../src/transport/tcp.ts";
import type { Sink } from "../../src/transport/types.ts";
import { recordingLog } from "../helpers/log.ts";
import { until } from "../helpers/wait.ts";

const root = mkdtempSync(join(tmpdir(), "dstd-control-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));
let counter = 0;
const log = () => ({ ...recordingLog(), error() {} });

async function server(limits: Partial<ControlLimits> = {}, reload: () => Promise<unknown> = async () => ({ ok: true })) {
  const stateDir = join(root, `s${++counter}`);
  const events = new EventBus();
  const rejects: string[] = [];
  const control = await startControlServer({
    stateDir,
    log: log(),
    limits,
    observer: { reject: (r) => rejects.push(r) },
    handlers: {
      hello: () => ({ hello: true }),
      status: () => ({ services: [] }),
      reload,
      resize: async () => ({}),
      leg: async () => ({}),
      replica: async () => ({}),
      events,
    },
  });
  return { control, events, stateDir, rejects };
}

/** A raw connection: every byte the server sends, and whether it closed. */
async function raw(control: ControlServer) {
  const state = { text: "", closed: false, sink: null as Sink | null };
  state.sink = await connect({ transport: "unix", path: control.path }, () => ({
    onData: (chunk) => (state.text += new TextDecoder().decode(chunk)),
    onDrain: () => {},
    onClose: () => (state.closed = true),
  }));
  return state;
}

describe("permissions and ownership", () => {
  test("state directory 0700 (tightened if looser), socket 0600", async () => {
    const stateDir = join(root, "loose");
    mkdirSync(stateDir, { mode: 0o755 });
    const control = await startControlServer({ stateDir, log: log(), handlers: { hello: () => 1, status: () => 1, reload: async () => 1, resize: async () => 1, leg: async () => 1, replica: async () => 1, events: new EventBus() } });
    try {
      expect(statSync(stateDir).mode & 0o777).toBe(0o700);
      expect(statSync(control.path).mode & 0o777).toBe(0o600);
      expect(statSync(control.path).isSocket()).toBe(true);
    } finally {
      await control.close();
    }
  });

  test.skipIf(effectiveUserId() !== 0)("a state directory owned by someone else is refused", async () => {
    const stateDir = join(root, "foreign");
    mkdirSync(stateDir, { mode: 0o700 });
    chownSync(stateDir, 65534, 65534);
    await expect(startControlServer({ stateDir, log: log(), handlers: { hello: () => 1, status: () => 1, reload: async () => 1, resize: async () => 1, leg: async () => 1, replica: async () => 1, events: new EventBus() } })).rejects.toThrow(
      /belongs to uid 65534/,
    );
  });

  test("a second node on the same state directory is refused, naming it", async () => {
    const { control, stateDir } = await server();
    try {
      await expect(startControlServer({ stateDir, log: log(), handlers: { hello: () => 1, status: () => 1, reload: async () => 1, resize: async () => 1, leg: async () => 1, replica: async () => 1, events: new EventBus() } })).rejects.toThrow(
        /another dstd node is running with state directory/,
      );
    } finally {
      await control.close();
    }
  });
});

describe("requests", () => {
  test("pipelined requests are answered in order, with their ids", async () => {
    const { control } = await server();
    const c = await raw(control);
    try {
      c.sink!.write(new TextEncoder().encode('{"v":1,"id":1,"method":"hello"}\n{"v":1,"id":2,"method":"status"}\n{"v":1,"id":3,"method":"nope"}\n{"v":2,"id":4,"method":"status"}\n'));
      await until(() => c.text.split("\n").length > 4, "four answers");
      const answers = c.text.trim().split("\n").map((l) => JSON.parse(l));
      expect(answers.map((a) => [a.id, a.ok, a.error?.code ?? null])).toEqual([
        [1, true, null],
        [2, true, null],
        [3, false, "E_METHOD"],
        [4, false, "E_VERSION"],
      ]);
      expect(answers.every((a) => a.v === 1)).toBe(true);
      expect(c.closed).toBe(false); // bad requests are answered, not punished
    } finally {
      c.sink!.end();
      await control.close();
    }
  });

  test("handler errors: a DstdError keeps its code; anything else is E_INTERNAL", async () => {
    let fail: Error = new DstdError("E_CONFIG", "x.toml: bad");
    const { control } = await server({}, async () => {
      throw fail;
    });
    const client = (await ControlClient.connect(control.path))!;
    try {
      await expect(client.request("reload")).rejects.toMatchObject({ code: "E_CONFIG", message: "x.toml: bad" });
      fail = new TypeError("oops");
      await expect(client.request("reload")).rejects.toMatchObject({ code: "E_INTERNAL" });
      expect(await client.request("hello")).toEqual({ hello: true }); // still usable
    } finally {
      client.close();
      await control.close();
    }
  });

  test("reloads from several clients run one at a time", async () => {
    let running = 0;
    let most = 0;
    const gates: Array<() => void> = [];
    const { control } = await server({}, async () => {
      running++;
      most = Math.max(most, running);
      await new Promise<void>((resolve) => gates.push(resolve));
      running--;
      return { ok: true };
    });
    const a = (await ControlClient.connect(control.path))!;
    const b = (await ControlClient.connect(control.path))!;
    try {
      const both = Promise.all([a.request("reload"), b.request("reload")]);
      await until(() => gates.length === 1, "the first reload to start");
      gates.shift()!();
      await until(() => gates.length === 1, "the second reload to start after the first");
      gates.shift()!();
      await both;
      expect(most).toBe(1);
    } finally {
      a.close();
      b.close();
      await control.close();
    }
  });
});

describe("hostile clients", () => {
  test("one client too many: E_BUSY and a close; the others keep working", async () => {
    const { control, rejects } = await server({ maxClients: 2 });
    const a = (await ControlClient.connect(control.path))!;
    const b = (await ControlClient.connect(control.path))!;
    const c = await raw(control);
    try {
      await until(() => c.closed, "the third client to be closed");
      expect(JSON.parse(c.text).error.code).toBe("E_BUSY");
      expect(await a.request("hello")).toEqual({ hello: true });
      expect(await b.request("hello")).toEqual({ hello: true });
      expect(rejects).toEqual(["too_many_clients"]);
    } finally {
      a.close();
      b.close();
      await control.close();
    }
  });

  test("a line longer than 64 KiB: E_TOO_LARGE and a close", async () => {
    const { control, rejects } = await server();
    const c = await raw(control);
    try {
      c.sink!.write(new Uint8Array(70_000).fill(0x61));
      await until(() => c.closed, "the close");
      expect(JSON.parse(c.text.trim()).error.code).toBe("E_TOO_LARGE");
      expect(rejects).toEqual(["too_large"]);
      await until(() => control.clients === 0, "the connection to be forgotten");
    } finally {
      await control.close();
    }
  });

  test("too many requests waiting on one connection: E_BUSY and a close", async () => {
    const { control, rejects } = await server({ maxPending: 2 });
    const c = await raw(control);
    try {
      c.sink!.write(new TextEncoder().encode('{"v":1,"id":1,"method":"hello"}\n'.repeat(50)));
      await until(() => c.closed, "the close");
      expect(c.text).toContain('"E_BUSY"');
      expect(rejects).toContain("too_many_pending");
    } finally {
      await control.close();
    }
  });

  test("an idle connection is closed with E_IDLE; a follower is not", async () => {
    const { control, rejects } = await server({ idleMs: 100 });
    const idle = await raw(control);
    const follower = (await ControlClient.connect(control.path))!;
    let followerClosed = false;
    follower.onClose = () => (followerClosed = true);
    try {
      await follower.request("events", { follow: true });
      await until(() => idle.closed, "the idle connection to be closed");
      expect(JSON.parse(idle.text.trim()).error.code).toBe("E_IDLE");
      expect(rejects).toEqual(["idle"]);
      expect(followerClosed).toBe(false);
      expect(control.followers).toBe(1);
    } finally {
      follower.close();
      await control.close();
    }
  });

  test("events: history since a sequence number, then live events in order", async () => {
    const { control, events } = await server();
    events.emit("node.starting", { pid: 1 });
    events.emit("node.ready", { summary: "x" });
    const client = (await ControlClient.connect(control.path))!;
    const seen: string[] = [];
    client.onEvent = (e) => seen.push(`${e.seq}:${e.type}`);
    try {
      const answer = (await client.request("events", { follow: true, since: 1 })) as { events: Array<{ seq: number }>; lastSeq: number };
      expect(answer.lastSeq).toBe(2);
      expect(answer.events.map((e) => e.seq)).toEqual([2]);
      events.emit("node.reloading", {});
      events.emit("node.reloaded", { generation: 2 });
      await until(() => seen.length === 2, "two live events");
      expect(seen).toEqual(["3:node.reloading", "4:node.reloaded"]);
      await expect(client.request("events", { since: -1 })).rejects.toMatchObject({ code: "E_REQUEST" });
    } finally {
      client.close();
      await control.close();
    }
  });

  test("a follower that stops reading is sent 'overflow' and closed; nothing else is held", async () => {
    const { control, events, rejects } = await server({ maxQueuedBytes: 64 * 1024 });
    const c = await raw(control);
    try {
      c.sink!.write(new TextEncoder().encode('{"v":1,"id":1,"method":"events","params":{"follow":true}}\n'));
      await until(() => c.text.includes('"following":true'), "the subscription");
      c.sink!.pause(); // stop reading: the kernel buffers fill, then the server's queue
      const filler = "x".repeat(1024);
      for (let i = 0; i < 20_000 && control.followers > 0; i++) events.emit("service.state", { filler });
      expect(control.followers).toBe(0);
      expect(events.subscribers).toBe(0);
      expect(rejects).toEqual(["overflow"]);
      c.sink!.resume();
      await until(() => c.closed, "the close after the overflow line");
      const last = JSON.parse(c.text.trim().split("\n").at(-1)!);
      expect(last.overflow.message).toContain("reconnect with since");
      expect(typeof last.overflow.lastSeq).toBe("number");
    } finally {
      await control.close();
    }
  });

  test("a follower that overflows and never reads again is cut after the close grace: its socket is not kept", async () => {
    const { control, events } = await server({ maxQueuedBytes: 64 * 1024, closeGraceMs: 200 });
    const c = await raw(control);
    try {
      c.sink!.write(new TextEncoder().encode('{"v":1,"id":1,"method":"events","params":{"follow":true}}\n'));
      await until(() => c.text.includes('"following":true'), "the subscription");
      c.sink!.pause(); // and never resumes
      const filler = "x".repeat(1024);
      for (let i = 0; i < 20_000 && control.followers > 0; i++) events.emit("service.state", { filler });
      expect(control.followers).toBe(0);
      expect(control.clients).toBe(0);
      expect(control.lingering).toBe(1);
      // Before, end() waited for the unread queue for ever while the slot was free again.
      await until(() => control.lingering === 0, "the cut after the grace", 3000);
      c.sink!.resume();
      await until(() => c.closed, "the client to see its socket gone");
      expect(c.text).not.toContain('"overflow"'); // what it did not read was dropped with it
    } finally {
      await control.close();
    }
  });

  test("a request that runs longer than the idle time is answered, not cut with E_IDLE; so is one waiting behind it", async () => {
    const { control } = await server({ idleMs: 100 }, async () => {
      await Bun.sleep(400);
      return { reloaded: true };
    });
    const first = (await ControlClient.connect(control.path))!;
    const second = (await ControlClient.connect(control.path))!;
    try {
      const answers = await Promise.all([first.request("reload", {}), second.request("reload", {})]);
      // Before, both were cut with E_IDLE 100 ms in, while their reloads ran on.
      expect(answers).toEqual([{ reloaded: true }, { reloaded: true }]);
    } finally {
      first.close();
      second.close();
      await control.close();
    }
  });
});
