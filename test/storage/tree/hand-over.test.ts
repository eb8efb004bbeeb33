/**
 * Handed-over WRITE buffers (storage/port.ts BufferHold, `writeHandedOver`): the DST export
 * gives a port that keeps buffers (a tree node's remote leg) the payload where it was
 * received, and linear, stripe and mirror pass it on to their legs, so a tree node copies
 * no WRITE data (docs/tree.md "Performance"). What must hold: a buffer a port still holds
 * is never handed out again (later writes would overwrite what the port keeps for replay),
 * it goes back to the pool once the last hold is dropped, and ports that do not keep
 * buffers still get plain writes.
 */
import { afterAll, beforeAll, describe, expect, spyOn, test } from "bun:test";
import { DstClient } from "../../../src/client/dst-client.ts";
import { DstServer } from "../../../src/export/server.ts";
import { parseAllowRule, type AllowRule } from "../../../src/lib/acl.ts";
import { pooledBufferBytes } from "../../../src/lib/buffer-pool.ts";
import { createMemoryBackend } from "../../../src/storage/local/memory.ts";
import { createLocalPort } from "../../../src/storage/local/port.ts";
import { PassThrough } from "../../../src/storage/layers/pass-through.ts";
import { call, type BufferHold, type Done, type StoragePort } from "../../../src/storage/port.ts";
import { LinearPort } from "../../../src/storage/tree/linear.ts";
import { StripePort } from "../../../src/storage/tree/stripe.ts";
import { listen, type Listener } from "../../../src/transport/tcp.ts";
import { WriteCopies } from "../../../src/engine/write-copies.ts";
import { parseExportUrl, type ExportUrl } from "../../../src/lib/address.ts";
import { openRemotePort } from "../../../src/storage/remote/remote-port.ts";
import { recordingLog } from "../../helpers/log.ts";
import { acceptNbdForExports } from "../../../src/daemon/nbd-front.ts";
import { NbdClient } from "../../../src/client/nbd-client.ts";
import type { GuardedAcceptHandler } from "../../../src/transport/guard.ts";

const KiB = 1024;
const MiB = 1024 * KiB;

/**
 * A leg that keeps every handed-over buffer like a remote engine keeps it for replay: it
 * holds it, writes it below, completes, and lets go only when told (a FLUSH, for the engine).
 */
class KeepingLeg extends PassThrough {
  readonly kept: Array<{ offset: number; data: Uint8Array; expected: Uint8Array; hold: BufferHold }> = [];
  plainWrites = 0;
  /** Not synchronous: a port that keeps buffers completes later (and the export then owns every payload it hands over). */
  override get synchronous(): boolean {
    return false;
  }
  override write(offset: number, data: Uint8Array, fua: boolean, done: Done): void {
    this.plainWrites++;
    super.write(offset, data, fua, done);
  }
  override get writeHandedOver() {
    return (offset: number, data: Uint8Array, fua: boolean, hold: BufferHold, done: Done) => {
      hold.hold();
      this.kept.push({ offset, data, expected: data.slice(), hold });
      this.next.write(offset, data, fua, done);
    };
  }
  /** Every kept buffer still holds what was written into it. */
  intact(): boolean {
    return this.kept.every((k) => Buffer.from(k.data).equals(Buffer.from(k.expected)));
  }
  letGo(): void {
    for (const k of this.kept.splice(0)) k.hold.drop();
  }
}

const memory = (size: number) => createLocalPort(createMemoryBackend(size));

/** A hold that counts, for the layers' own tests. */
function countingHold() {
  const hold = {
    holds: 0,
    drops: 0,
    hold() {
      hold.holds++;
    },
    drop() {
      hold.drops++;
    },
  };
  return hold;
}

describe("a DST export in front of a port that keeps buffers", () => {
  const leg = new KeepingLeg(memory(256 * MiB));
  const server = new DstServer({
    log: recordingLog(),
    exports: [{ name: "disk", description: "", port: leg, readOnly: false, allow: [parseAllowRule("127.0.0.1/32:rw") as AllowRule] }],
  });
  let listener: Listener;
  let client: DstClient;
  beforeAll(async () => {
    listener = await listen([{ transport: "tcp", host: "127.0.0.1", port: 0 }], server.accept);
    const port = (listener.bound[0] as { port: number }).port;
    client = await DstClient.open({ address: { transport: "tcp", host: "127.0.0.1", port }, exportName: "disk", log: recordingLog(), inflight: 32 });
  });
  afterAll(async () => {
    await client.close();
    await listener.close();
  });

  test("hands over every WRITE payload where it was received, and never reuses a buffer the port still holds", async () => {
    // 48 MiB of 1 MiB writes (each spans socket reads: gathered into receive memory) and
    // small ones (inside one socket read: copied once into receive memory), all different,
    // 32 at a time: far more than the pool keeps, so a buffer given back while held would
    // be handed out again and overwritten by a later write.
    const sizes = [...Array.from({ length: 48 }, () => MiB), ...Array.from({ length: 64 }, () => 4 * KiB)];
    let next = 0;
    const worker = async () => {
      while (next < sizes.length) {
        const i = next++;
        const data = new Uint8Array(sizes[i]!);
        crypto.getRandomValues(data.subarray(0, Math.min(data.length, 65536)));
        data[data.length - 1] = i;
        await client.write(i * MiB, data);
      }
    };
    await Promise.all(Array.from({ length: 32 }, worker));
    expect(leg.kept.length).toBe(sizes.length);
    expect(leg.plainWrites).toBe(0);
    expect(leg.intact()).toBe(true);
    // Completed (the budget has them back), still held: none of them is in the pool.
    const pooled = pooledBufferBytes();
    leg.letGo();
    expect(pooledBufferBytes()).toBeGreaterThan(pooled);
    // And the data is on the disk below.
    const into = new Uint8Array(MiB);
    await client.readInto(47 * MiB, into);
    expect(into[MiB - 1]).toBe(47);
  }, 60_000);
});

describe("layers pass a handed-over buffer on", () => {
  test("linear: each piece goes to its leg as a subarray, under the caller's hold", async () => {
    const a = new KeepingLeg(memory(64 * KiB));
    const b = new KeepingLeg(memory(64 * KiB));
    const node = new LinearPort([
      { port: a, label: "a" },
      { port: b, label: "b" },
    ]);
    const data = new Uint8Array(32 * KiB).map((_, i) => i % 251);
    const hold = countingHold();
    await new Promise<void>((resolve, reject) => node.writeHandedOver(48 * KiB, data, false, hold, (e) => (e === 0 ? resolve() : reject(e))));
    expect(a.kept.map((k) => [k.offset, k.data.length, k.data.buffer === data.buffer])).toEqual([[48 * KiB, 16 * KiB, true]]);
    expect(b.kept.map((k) => [k.offset, k.data.length, k.data.buffer === data.buffer])).toEqual([[0, 16 * KiB, true]]);
    expect(hold.holds).toBe(2);
    a.letGo();
    b.letGo();
    expect(hold.drops).toBe(2);
    const back = new Uint8Array(32 * KiB);
    await call.read(node, 48 * KiB, back);
    expect(Buffer.from(back).equals(Buffer.from(data))).toBe(true);
  });

  test("stripe: a share that is one piece is handed over, a gathered share is a plain write of the node's own buffer", async () => {
    const a = new KeepingLeg(memory(MiB));
    const b = new KeepingLeg(memory(MiB));
    const node = new StripePort(
      [
        { port: a, label: "a" },
        { port: b, label: "b" },
      ],
      64 * KiB,
    );
    const hold = countingHold();
    const one = new Uint8Array(128 * KiB).fill(1);
    await new Promise<void>((resolve) => node.writeHandedOver(0, one, false, hold, () => resolve()));
    expect([a.kept.length, b.kept.length, a.plainWrites, b.plainWrites, hold.holds]).toEqual([1, 1, 0, 0, 2]);
    // 256 KiB over two legs of 64 KiB chunks: each leg gets two chunks, gathered.
    const two = new Uint8Array(256 * KiB).fill(2);
    await new Promise<void>((resolve) => node.writeHandedOver(0, two, false, hold, () => resolve()));
    expect([a.kept.length, b.kept.length, a.plainWrites, b.plainWrites, hold.holds]).toEqual([1, 1, 1, 1, 2]);
    const back = new Uint8Array(256 * KiB);
    await call.read(node, 0, back);
    expect(back.every((x) => x === 2)).toBe(true);
  });

  test("a layer that overrides write does not pass writeHandedOver through; one that does not, does", () => {
    const keeping = new KeepingLeg(memory(MiB));
    expect(new PassThrough(keeping).writeHandedOver).toBeDefined();
    expect(new PassThrough(memory(MiB)).writeHandedOver).toBeUndefined();
    class Overrides extends PassThrough {
      override write(offset: number, data: Uint8Array, fua: boolean, done: Done): void {
        this.next.write(offset, data, fua, done);
      }
    }
    expect(new Overrides(keeping).writeHandedOver).toBeUndefined();
    const plain: StoragePort = memory(MiB);
    expect(plain.writeHandedOver).toBeUndefined();
  });
});

describe("a tree node over a remote leg (real sockets, real engine)", () => {
  test("the leg's engine sends and keeps the export's receive buffers: no copy of any WRITE payload", async () => {
    const legDisk = memory(64 * MiB);
    const allow = [parseAllowRule("127.0.0.1/32:rw") as AllowRule];
    const legServer = new DstServer({ log: recordingLog(), exports: [{ name: "disk", description: "", port: legDisk, readOnly: false, allow }] });
    const legListener = await listen([{ transport: "tcp", host: "127.0.0.1", port: 0 }], legServer.accept);
    const legPort = (legListener.bound[0] as { port: number }).port;
    const remote = await openRemotePort({ url: parseExportUrl(`dst://127.0.0.1:${legPort}/disk`) as ExportUrl, engine: {}, log: recordingLog() });
    const node = new LinearPort([{ port: remote, label: "remote" }]);
    const nodeServer = new DstServer({ log: recordingLog(), exports: [{ name: "disk", description: "", port: node, readOnly: false, allow }] });
    const nodeListener = await listen([{ transport: "tcp", host: "127.0.0.1", port: 0 }], nodeServer.accept);
    const nodePort = (nodeListener.bound[0] as { port: number }).port;
    const client = await DstClient.open({ address: { transport: "tcp", host: "127.0.0.1", port: nodePort }, exportName: "disk", log: recordingLog() });
    const copies = spyOn(WriteCopies.prototype, "copy");
    try {
      // The client hands its buffers over too (reserveWrite), so any engine copy is the leg's.
      await Promise.all(
        Array.from({ length: 16 }, (_, i) => {
          const data = client.reserveWrite(MiB);
          data.fill(i + 1);
          return client.write(i * MiB, data);
        }),
      );
      await client.flush();
      expect(copies).toHaveBeenCalledTimes(0);
      const into = new Uint8Array(MiB);
      for (const i of [0, 7, 15]) {
        await call.read(legDisk, i * MiB, into);
        expect(into.every((x) => x === i + 1)).toBe(true);
      }
    } finally {
      copies.mockRestore();
      await client.close();
      await nodeListener.close();
      await node.close();
      await legListener.close();
    }
  }, 30_000);
});

describe("the export node's NBD front hands WRITE payloads over", () => {
  /** 24 different 1 MiB writes (each gathered from several socket reads into a pooled buffer), 8 at a time, by NBD. */
  async function writeThrough(accept: GuardedAcceptHandler) {
    const hooks = { admitted() {}, refused() {} };
    const listener = await listen([{ transport: "tcp", host: "127.0.0.1", port: 0 }], (sink, peer) => accept(sink, peer, hooks));
    const port = (listener.bound[0] as { port: number }).port;
    const client = await NbdClient.open({ address: { transport: "tcp", host: "127.0.0.1", port }, exportName: "disk", log: recordingLog() });
    try {
      let next = 0;
      const worker = async () => {
        while (next < 24) {
          const i = next++;
          const data = new Uint8Array(MiB);
          crypto.getRandomValues(data.subarray(0, 65536));
          data[MiB - 1] = i;
          await client.write(i * MiB, data);
        }
      };
      await Promise.all(Array.from({ length: 8 }, worker));
    } finally {
      await client.close();
      await listener.close();
    }
  }

  test("to a port that keeps buffers: no copy, and no buffer reused while held", async () => {
    const leg = new KeepingLeg(memory(32 * MiB));
    const exports = [{ name: "disk", description: "", port: leg, readOnly: false, allow: [parseAllowRule("127.0.0.1/32:rw") as AllowRule] }];
    await writeThrough(acceptNbdForExports(exports, { ...recordingLog(), error() {} }));
    expect(leg.kept.length).toBe(24);
    expect(leg.plainWrites).toBe(0);
    expect(leg.intact()).toBe(true);
    const pooled = pooledBufferBytes();
    leg.letGo();
    expect(pooledBufferBytes()).toBeGreaterThan(pooled);
    const into = new Uint8Array(MiB);
    await call.read(leg, 23 * MiB, into);
    expect(into[MiB - 1]).toBe(23);
  }, 30_000);
});
