/**
 * A session key is renewed before it has sealed all it may (crypto/record.ts: 2^46 bytes per
 * AES-GCM key and direction, about 6 hours at 3 GB/s): at half of it, the side whose sealer
 * is due ends the connection and the client reconnects with a fresh handshake, new keys, and
 * resends what is unanswered. Before, nothing acted on `rekeyDue`: the export's sealer threw
 * from a deferred path and took the whole process down. Real sockets, an in-process export;
 * the keys' counters are moved forward instead of sealing 32 TiB.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { DstClient } from "../../src/client/dst-client.ts";
import { AES_GCM_MAX_BYTES } from "../../src/crypto/record.ts";
import { DstServer } from "../../src/export/server.ts";
import { parseAllowRule, type AllowRule } from "../../src/lib/acl.ts";
import { createMemoryBackend } from "../../src/storage/local/memory.ts";
import { createLocalPort } from "../../src/storage/local/port.ts";
import { listen, type Listener } from "../../src/transport/tcp.ts";
import { recordingLog, type RecordingLog } from "../helpers/log.ts";

const key = { identity: "alice", secret: new Uint8Array(randomBytes(32)) };
let server: DstServer;
let listener: Listener;
let log: RecordingLog;

beforeAll(async () => {
  log = recordingLog();
  server = new DstServer({
    log,
    keys: new Map([["alice", [key.secret]]]),
    exports: [{ name: "disk", description: "", port: createLocalPort(createMemoryBackend(8 << 20)), readOnly: false, allow: [parseAllowRule("alice@127.0.0.1/32:rw") as AllowRule] }],
  });
  listener = await listen([{ transport: "tcp", host: "127.0.0.1", port: 0 }], server.accept);
});

afterAll(() => listener.close());

function open(): Promise<DstClient> {
  return DstClient.open({
    address: { transport: "tcp", host: "127.0.0.1", port: (listener.bound[0] as { port: number }).port },
    exportName: "disk",
    log: recordingLog(),
    auth: { key: { identity: key.identity, secret: key.secret.slice() }, suites: ["aes-256-gcm"] },
    reconnectMinMs: 10,
  });
}

/** Internals reached on purpose: the sealers whose byte counts stand in for 32 TiB of traffic. */
type Sealed = { bytes: number };
const exportSealer = (): Sealed => ([...server.connections][0] as unknown as { replies: { sealer: Sealed } }).replies.sealer;
const clientSealer = (client: DstClient): Sealed => (client.engine as unknown as { outbox: { sealer: Sealed } }).outbox.sealer;

describe("session keys are renewed before their limit", () => {
  test("the export's key near its limit: the connection ends after its replies, the client reconnects, reads go on", async () => {
    const client = await open();
    const data = new Uint8Array(4096).fill(7);
    await client.write(0, data);
    // 1 MiB short of the hard limit: a burst of replies beyond that would throw while sealing.
    exportSealer().bytes = AES_GCM_MAX_BYTES - (1 << 20);
    const reads = await Promise.all(Array.from({ length: 400 }, () => client.read(0, 4096)));
    expect(reads.every((r) => r[0] === 7)).toBe(true);
    expect(client.counters.reconnects).toBeGreaterThanOrEqual(1);
    expect(log.lines.some((l) => /session key has protected half of what it may; closing so the client reconnects/.test(l))).toBe(true);
    expect(exportSealer().bytes).toBeLessThan(AES_GCM_MAX_BYTES / 2); // the new connection's key
    expect((await client.read(0, 4096))[0]).toBe(7);
    await client.close();
  });

  test("the client's key at half its limit: it reconnects on its own and its write lands", async () => {
    const client = await open();
    clientSealer(client).bytes = AES_GCM_MAX_BYTES / 2;
    await client.write(8192, new Uint8Array(4096).fill(9));
    await client.flush();
    expect(client.counters.reconnects).toBe(1);
    expect(clientSealer(client).bytes).toBeLessThan(AES_GCM_MAX_BYTES / 2);
    expect((await client.read(8192, 4096)).every((b) => b === 9)).toBe(true);
    await client.close();
  });
});
