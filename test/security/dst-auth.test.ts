/**
 * Fail-closed security over real loopback sockets: the real engine (DstClient) against the
 * real export server with pre-shared keys. Each refusal must come with a clear message, write
 * nothing, and leave other clients unaffected. A capturing proxy checks that no written
 * plaintext crosses the wire of an encrypted session, and that a tampered or replayed frame
 * closes the connection.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { createMemoryBackend } from "../../src/storage/local/memory.ts";
import { createLocalPort } from "../../src/storage/local/port.ts";
import type { KeyMaterial } from "../../src/crypto/keys.ts";
import type { ChecksumName } from "../../src/crypto/checksum.ts";
import type { SuiteName } from "../../src/crypto/suites.ts";
import { DstClient } from "../../src/client/dst-client.ts";
import { parseAllowRule, type AllowRule } from "../../src/lib/acl.ts";
import { DstServer } from "../../src/export/server.ts";
import { listen, type Listener } from "../../src/transport/tcp.ts";
import { Flag, HEADER } from "../../src/wire/dst/constants.ts";
import { decodeHeader, encodeHeader } from "../../src/wire/dst/header.ts";
import { recordingLog } from "../helpers/log.ts";
import { until } from "../helpers/wait.ts";

const MiB = 1024 * 1024;
const key = (identity: string): KeyMaterial => ({ identity, secret: new Uint8Array(randomBytes(32)) });
const alice = key("alice");
const bob = key("bob");
const mallory = key("mallory"); // unknown to the export
const carol = key("carol");
const carolNext = key("carol"); // rotation: the export accepts both during the overlap
const aliceWrong: KeyMaterial = { identity: "alice", secret: new Uint8Array(randomBytes(32)) };

function rules(...texts: string[]): AllowRule[] {
  return texts.map((t) => parseAllowRule(t) as AllowRule);
}

const serverLog = recordingLog();
const disk = createMemoryBackend(8 * MiB);
const server = new DstServer({
  log: serverLog,
  keys: new Map([
    ["alice", [alice.secret]],
    ["bob", [bob.secret]],
    ["carol", [carol.secret, carolNext.secret]],
  ]),
  exports: [
    { name: "disk", description: "", port: createLocalPort(disk), readOnly: false, allow: rules("alice@127.0.0.1/32:rw", "bob@127.0.0.1/32:ro", "carol@127.0.0.1/32:rw"), suites: ["aes-256-gcm", "chacha20-poly1305", "xchacha20-poly1305", "integrity"] },
    { name: "elsewhere", description: "", port: createLocalPort(createMemoryBackend(MiB)), readOnly: false, allow: rules("alice@10.0.0.0/8:rw") },
    { name: "anon", description: "", port: createLocalPort(createMemoryBackend(MiB)), readOnly: false, allow: rules("127.0.0.1/32:rw") },
    { name: "gcm-only", description: "", port: createLocalPort(createMemoryBackend(MiB)), readOnly: false, allow: rules("alice@127.0.0.1/32:rw"), suites: ["aes-256-gcm"] },
    { name: "digest-required", description: "", port: createLocalPort(createMemoryBackend(MiB)), readOnly: false, allow: rules("127.0.0.1/32:rw"), checksums: ["sha256"] },
  ],
});

/** A TCP proxy that records both directions and can tamper with / replay client frames. */
let captured: Uint8Array[] = [];
let mangle: ((chunk: Uint8Array) => Uint8Array) | null = null;
let mangleDown: ((chunk: Uint8Array) => Uint8Array) | null = null;
let listener: Listener;
let proxy: import("bun").TCPSocketListener<{ peer: Promise<import("bun").Socket<unknown>> }>;
let port = 0;

beforeAll(async () => {
  listener = await listen([{ transport: "tcp", host: "127.0.0.1", port: 0 }], server.accept);
  const upstream = (listener.bound[0] as { port: number }).port;
  proxy = Bun.listen<{ peer: Promise<import("bun").Socket<unknown>> }>({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      binaryType: "uint8array",
      open(client) {
        client.data = {
          peer: Bun.connect({
            hostname: "127.0.0.1",
            port: upstream,
            socket: {
              binaryType: "uint8array",
              data(_s, chunk: Uint8Array) {
                captured.push(chunk.slice());
                client.write(mangleDown ? mangleDown(chunk) : chunk);
              },
              close() {
                client.end();
              },
            },
          }),
        };
      },
      async data(client, chunk: Uint8Array) {
        captured.push(chunk.slice());
        const out = mangle ? mangle(chunk) : chunk;
        (await client.data.peer).write(out);
      },
      async close(client) {
        (await client.data.peer).end();
      },
    },
  });
  port = proxy.port;
});
afterAll(async () => {
  proxy.stop(true);
  await listener.close();
});

function open(exportName: string, k: KeyMaterial | null, suites: SuiteName[] = ["aes-256-gcm"], checksums?: ChecksumName[]) {
  return DstClient.open({
    address: { transport: "tcp", host: "127.0.0.1", port },
    exportName,
    log: recordingLog(),
    deadlineMs: 3000,
    auth: k ? { key: k, suites } : null,
    ...(checksums === undefined ? {} : { checksums }),
  });
}

describe("mutual authentication and ACLs", () => {
  test("the right key gets in; writes are encrypted on the wire", async () => {
    captured = [];
    const client = await open("disk", alice);
    const marker = new TextEncoder().encode("PLAINTEXT-MARKER-0123456789abcdef".repeat(128));
    await client.write(0, marker);
    expect(Buffer.from(await client.read(0, marker.length)).equals(Buffer.from(marker))).toBe(true);
    await client.close();
    const wire = Buffer.concat(captured);
    expect(wire.length).toBeGreaterThan(marker.length * 2);
    expect(wire.includes(Buffer.from("PLAINTEXT-MARKER"))).toBe(false);
  });

  for (const suite of ["chacha20-poly1305", "xchacha20-poly1305", "integrity"] as const) {
    test(`suite ${suite} round-trips`, async () => {
      captured = [];
      const client = await open("disk", alice, [suite]);
      const data = new Uint8Array(4096).fill(0x33);
      await client.write(4096, data);
      expect((await client.read(4096, 4096)).every((b) => b === 0x33)).toBe(true);
      await client.close();
    });
  }

  test("wrong key and unknown identity fail the same way, nothing written", async () => {
    const before = Buffer.from((await (await open("disk", alice)).read(MiB, 4096)));
    for (const k of [aliceWrong, mallory]) {
      await expect(open("disk", k)).rejects.toThrow("authentication failed (wrong key or unknown identity)");
    }
    await until(() => serverLog.lines.some((l) => l.includes("identity 'mallory': authentication failed (unknown identity or key id)")), "the unknown identity to be logged");
    expect(serverLog.lines.some((l) => l.includes("identity 'alice': authentication failed"))).toBe(true);
    const after = new Uint8Array(4096);
    disk.read(MiB, after);
    expect(Buffer.from(after).equals(before)).toBe(true);
  });

  test("no ACL entry for the identity / address outside the CIDR: access denied", async () => {
    await expect(open("elsewhere", alice)).rejects.toThrow(
      "access denied: identity 'alice' from 127.0.0.1 is not allowed to use export 'elsewhere'",
    );
    const nobody = key("alice");
    nobody.secret = alice.secret;
    await expect(open("elsewhere", nobody)).rejects.toThrow("access denied");
  });

  test("rw request on an ro grant is refused per request", async () => {
    const client = await open("disk", bob);
    expect(client.writable).toBe(false);
    await expect(client.write(0, new Uint8Array(512))).rejects.toThrow(/EPERM/);
    await client.close();
  });

  test("algorithm mismatch is refused with both lists named", async () => {
    await expect(open("gcm-only", alice, ["chacha20-poly1305"])).rejects.toThrow(
      /no common suite \(client offers chacha20-poly1305; export allows aes-256-gcm here\)/,
    );
  });

  test("no common data checksum is refused with both lists named (never a silent `none`); the client refuses a checksum it did not offer", async () => {
    await expect(open("digest-required", null, [], ["xxh3", "none"])).rejects.toThrow(
      /no common data checksum \(client offers 'xxh3', 'none'; export allows sha256\)/,
    );
    const fine = await open("digest-required", null, [], ["xxh3", "sha256"]);
    await fine.write(0, new Uint8Array(4096).fill(7));
    expect((await fine.read(0, 4096)).every((b) => b === 7)).toBe(true);
    await fine.close();
    // On a plain loopback session a meddler turns the WELCOME's xxh3 into none (same length).
    mangleDown = (chunk) => {
      const at = Buffer.from(chunk).indexOf("xxh3");
      if (at >= 0) chunk.set(new TextEncoder().encode("none"), at);
      return chunk;
    };
    try {
      await expect(open("anon", null, [], ["xxh3"])).rejects.toThrow("export chose data checksum none, which this client did not offer (it offers xxh3)");
    } finally {
      mangleDown = null;
    }
  });

  test("an export answering in another protocol version fails the open at once (EPROTONOSUPPORT), without reconnecting", async () => {
    const started = Date.now();
    mangleDown = (chunk) => {
      const copy = chunk.slice();
      copy[HEADER.version] = 9; // the first chunk down is the WELCOME's header
      mangleDown = null;
      return copy;
    };
    try {
      await expect(open("anon", null)).rejects.toThrow(/another protocol version.*unsupported version 9/);
    } finally {
      mangleDown = null;
    }
    // deadlineMs is 3000: a reconnect loop would have run into it.
    expect(Date.now() - started).toBeLessThan(2500);
  });

  test("anonymous clients are refused where an identity is required", async () => {
    await expect(open("disk", null)).rejects.toThrow(/access denied: anonymous clients from 127.0.0.1/);
  });

  test("a tampered record closes the connection and is not applied; others continue", async () => {
    const other = await open("disk", alice);
    const victim = await open("disk", alice);
    await victim.write(2 * MiB, new Uint8Array(4096).fill(1));
    // Flip one payload byte of the next large client frame.
    mangle = (chunk) => {
      if (chunk.length < 4096) return chunk;
      const copy = chunk.slice();
      copy[copy.length - 100]! ^= 0x01;
      mangle = null;
      return copy;
    };
    const failed = victim.write(2 * MiB, new Uint8Array(4096).fill(2));
    await until(() => serverLog.lines.some((l) => l.includes("record authentication failed")), "the tampered frame's refusal");
    const current = new Uint8Array(4096);
    // The tampered write was refused; the engine then reconnects and resends the clean copy.
    await failed;
    disk.read(2 * MiB, current);
    expect(current.every((b) => b === 2)).toBe(true);
    await other.write(3 * MiB, new Uint8Array(4096).fill(9));
    await other.close();
    await victim.close();
  });

  test("a replayed record is rejected", async () => {
    const client = await open("disk", alice);
    let replayed = false;
    mangle = (chunk) => {
      if (chunk.length < 4096 || replayed) return chunk;
      replayed = true;
      mangle = null;
      return Buffer.concat([chunk, chunk]); // the same sealed record twice
    };
    const count = serverLog.lines.filter((l) => l.includes("record authentication failed")).length;
    await client.write(5 * MiB, new Uint8Array(4096).fill(5));
    await until(() => serverLog.lines.filter((l) => l.includes("record authentication failed")).length === count + 1, "the replayed frame's refusal");
    await client.close();
  });

  test("end-to-end data checksum: corruption in flight is caught on both sides and resent", async () => {
    // Anonymous loopback session: no channel protection, so only the data digest (xxh3 by
    // default) stands between a flipped bit and the disk.
    const client = await open("anon", null);
    const before = server.counters.checksumFailures;
    mangle = (chunk) => {
      if (chunk.length < 4096) return chunk;
      const copy = chunk.slice();
      copy[copy.length - 200]! ^= 0x40;
      mangle = null;
      return copy;
    };
    await client.write(0, new Uint8Array(4096).fill(0x61));
    expect(server.counters.checksumFailures).toBe(before + 1);
    expect(client.engine.counters.checksumFailures).toBe(1);
    mangleDown = (chunk) => {
      if (chunk.length < 4096) return chunk;
      const copy = chunk.slice();
      copy[copy.length - 300]! ^= 0x02;
      mangleDown = null;
      return copy;
    };
    const back = await client.read(0, 4096);
    expect(back.every((b) => b === 0x61)).toBe(true);
    expect(client.engine.counters.checksumFailures).toBe(2);
    // A meddler strips a READ reply's digest (flag cleared, its 8 bytes cut): the data is not
    // used unchecked; the client asks again and gets a whole reply.
    mangleDown = (chunk) => {
      const h = decodeHeader(chunk, 0);
      if (chunk.length < 4096 || (h.flags & Flag.DIGEST) === 0) return chunk;
      const copy = chunk.slice(0, chunk.length - 8);
      encodeHeader(copy, 0, { ...h, flags: h.flags & ~Flag.DIGEST, payloadLength: h.payloadLength - 8 });
      mangleDown = null;
      return copy;
    };
    const again = await client.read(0, 4096);
    expect(again.every((b) => b === 0x61)).toBe(true);
    expect(client.engine.counters.checksumFailures).toBe(3);
    await client.close();
  });

  test("key rotation: old and new key both work during the overlap", async () => {
    for (const k of [carol, carolNext]) {
      const client = await open("disk", k);
      await client.write(6 * MiB, new Uint8Array(512).fill(7));
      await client.close();
    }
  });
});
